//! The checks a 2026-07-28 request must pass before it reaches a process:
//! its `_meta` envelope, and the HTTP headers that mirror its body. A stdio
//! server never sees the headers, so the gateway is the only place that can
//! hold them to the body.

use axum::http::HeaderMap;
use berth_wire::modern::{RequestFacts, decode_header_value, is_modern_version, meta};

use crate::error::EdgeError;
use crate::headers::VERSION_HEADER;

const METHOD_HEADER: &str = "mcp-method";
const NAME_HEADER: &str = "mcp-name";

/// The `_meta` envelope: a version Berth serves (and the version header, when
/// sent, equal to it), and the client's capabilities. An unsupported version
/// wins over every complaint but a disagreeing header, so a client learns
/// early which version to retry with.
pub(crate) fn envelope(headers: &HeaderMap, facts: &RequestFacts<'_>) -> Result<(), EdgeError> {
    let header = headers
        .get(VERSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    match &facts.protocol_version {
        // The header must say what the body says, whatever that is.
        Some(Ok(version)) if header.is_some_and(|h| h != version) => {
            return Err(EdgeError::HeaderMismatch(format!(
                "Header mismatch: MCP-Protocol-Version is {:?} but _meta[\"{}\"] is {version:?}",
                header.unwrap_or_default(),
                meta::PROTOCOL_VERSION
            )));
        }
        Some(Ok(version)) if !is_modern_version(version) => {
            return Err(EdgeError::UnsupportedVersion {
                requested: version.to_string(),
            });
        }
        Some(Ok(_)) => {}
        Some(Err(())) => {
            return Err(EdgeError::InvalidParams(format!(
                "Invalid params: _meta[\"{}\"] must be a string",
                meta::PROTOCOL_VERSION
            )));
        }
        None => {
            if let Some(version) = header.filter(|v| !is_modern_version(v)) {
                return Err(EdgeError::UnsupportedVersion {
                    requested: version.to_owned(),
                });
            }
            return Err(EdgeError::InvalidParams(format!(
                "Invalid params: a 2026-07-28 request must carry params._meta[\"{}\"] (and \"{}\"); handshake-era clients send initialize first",
                meta::PROTOCOL_VERSION,
                meta::CLIENT_CAPABILITIES
            )));
        }
    }
    if facts.client_capabilities.is_none() {
        return Err(EdgeError::InvalidParams(format!(
            "Invalid params: a 2026-07-28 request must carry params._meta[\"{}\"] (an object; {{}} when the client offers nothing)",
            meta::CLIENT_CAPABILITIES
        )));
    }
    Ok(())
}

/// `MCP-Protocol-Version`, `Mcp-Method` and `Mcp-Name` must be present and
/// equal what the body says (header names are case-insensitive, values
/// exact; `=?base64?…?=` values are decoded first).
pub(crate) fn headers(
    headers: &HeaderMap,
    method: &str,
    facts: &RequestFacts<'_>,
) -> Result<(), EdgeError> {
    let version = facts.version().unwrap_or_default();
    expect(headers, VERSION_HEADER, "MCP-Protocol-Version", version)?;
    expect(headers, METHOD_HEADER, "Mcp-Method", method)?;
    let name = match method {
        "tools/call" | "prompts/get" => Some(("params.name", facts.name.as_deref())),
        "resources/read" => Some(("params.uri", facts.uri.as_deref())),
        _ => None,
    };
    if let Some((member, value)) = name {
        let Some(value) = value else {
            return Err(EdgeError::InvalidParams(format!(
                "Invalid params: `{method}` needs {member}"
            )));
        };
        expect(headers, NAME_HEADER, "Mcp-Name", value)?;
    }
    Ok(())
}

fn expect(headers: &HeaderMap, name: &str, shown: &str, want: &str) -> Result<(), EdgeError> {
    let Some(value) = headers.get(name) else {
        return Err(EdgeError::HeaderMismatch(format!(
            "Header mismatch: the {shown} header is required in MCP 2026-07-28 and must be {want:?}"
        )));
    };
    // The common case, a plain value equal to the body's, costs no allocation.
    let raw = value.as_bytes().trim_ascii();
    if raw == want.as_bytes() && !raw.starts_with(b"=?base64?") {
        return Ok(());
    }
    match decode_header_value(value.as_bytes()).map(|v| v.trim().to_owned()) {
        Some(got) if got == want => Ok(()),
        Some(got) => Err(EdgeError::HeaderMismatch(format!(
            "Header mismatch: {shown} is {got:?} but the body says {want:?}"
        ))),
        None => Err(EdgeError::HeaderMismatch(format!(
            "Header mismatch: {shown} is not valid (plain visible ASCII, or =?base64?...?=)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    fn facts(params: &RawValue) -> RequestFacts<'_> {
        RequestFacts::read(Some(params))
    }

    fn map(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn version_errors_come_first() {
        let p = RawValue::from_string(
            r#"{"_meta":{"io.modelcontextprotocol/protocolVersion":"2099-01-01"}}"#.into(),
        )
        .unwrap();
        let e = envelope(&HeaderMap::new(), &facts(&p)).unwrap_err();
        assert!(matches!(e, EdgeError::UnsupportedVersion { .. }), "{e:?}");
        let p = RawValue::from_string(r#"{}"#.into()).unwrap();
        let e = envelope(&map(&[("mcp-protocol-version", "2026-07-28")]), &facts(&p)).unwrap_err();
        assert!(matches!(e, EdgeError::InvalidParams(_)), "{e:?}");
    }

    #[test]
    fn headers_must_mirror_the_body() {
        let p = RawValue::from_string(
            r#"{"name":"été","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}"#.into(),
        )
        .unwrap();
        let f = facts(&p);
        envelope(&HeaderMap::new(), &f).unwrap();
        let good = map(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "=?base64?w6l0w6k=?="),
        ]);
        headers(&good, "tools/call", &f).unwrap();
        let wrong = map(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/list"),
            ("mcp-name", "x"),
        ]);
        assert!(matches!(
            headers(&wrong, "tools/call", &f),
            Err(EdgeError::HeaderMismatch(_))
        ));
        let missing = map(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
        ]);
        assert!(matches!(
            headers(&missing, "tools/call", &f),
            Err(EdgeError::HeaderMismatch(_))
        ));
    }
}
