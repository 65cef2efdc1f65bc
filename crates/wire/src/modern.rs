//! The 2026-07-28 revision's per-request envelope: the `_meta` fields every
//! stateless request carries, the members every result must carry, and the
//! edits a gateway makes when it relays a handshake-era server to a modern
//! client. Everything here works on raw bytes and keeps every byte it does
//! not have to change.

use std::borrow::Cow;
use std::collections::HashMap;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::Envelope;

/// The stateless revision Berth serves.
pub const MODERN_VERSION: &str = "2026-07-28";
/// Every stateless revision Berth serves, newest first.
pub const MODERN_VERSIONS: &[&str] = &[MODERN_VERSION];

/// Whether `version` names a stateless (2026-07-28 or later) revision Berth serves.
pub fn is_modern_version(version: &str) -> bool {
    MODERN_VERSIONS.contains(&version)
}

/// Whether `version` is a revision date after the handshake era (a modern
/// client's version, supported or not).
pub fn is_after_handshake_era(version: &str) -> bool {
    // Revision ids are dates; compare them as text.
    version.len() == 10 && version > "2025-12-31"
}

/// `_meta` keys of the 2026-07-28 revision.
pub mod meta {
    pub const PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
    pub const CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
    pub const CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
    pub const LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";
    pub const SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
    pub const SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";
}

/// What a request says about itself in `params` that the gateway checks
/// (the `_meta` envelope and the members the `Mcp-Name` header mirrors).
#[derive(Debug, Default)]
pub struct RequestFacts<'a> {
    /// `_meta.protocolVersion`: `Some(Err)` when present but not a string.
    pub protocol_version: Option<Result<Cow<'a, str>, ()>>,
    /// `_meta.clientCapabilities` as written.
    pub client_capabilities: Option<&'a RawValue>,
    /// `_meta.logLevel`, when the client asked for log messages.
    pub log_level: Option<Cow<'a, str>>,
    /// `params.name` (tools/call, prompts/get).
    pub name: Option<Cow<'a, str>>,
    /// `params.uri` (resources/read).
    pub uri: Option<Cow<'a, str>>,
    /// `params.arguments` (tools/call), for `Mcp-Param-*` checks.
    pub arguments: Option<&'a RawValue>,
}

impl<'a> RequestFacts<'a> {
    /// Reads `params`; anything absent or malformed is `None`.
    pub fn read(params: Option<&'a RawValue>) -> RequestFacts<'a> {
        #[derive(Deserialize)]
        struct Meta<'a> {
            #[serde(borrow, rename = "io.modelcontextprotocol/protocolVersion")]
            protocol_version: Option<&'a RawValue>,
            #[serde(borrow, rename = "io.modelcontextprotocol/clientCapabilities")]
            client_capabilities: Option<&'a RawValue>,
            #[serde(borrow, rename = "io.modelcontextprotocol/logLevel")]
            log_level: Option<&'a RawValue>,
        }
        #[derive(Deserialize)]
        struct Params<'a> {
            #[serde(borrow, rename = "_meta")]
            meta: Option<&'a RawValue>,
            #[serde(borrow)]
            name: Option<&'a RawValue>,
            #[serde(borrow)]
            uri: Option<&'a RawValue>,
            #[serde(borrow)]
            arguments: Option<&'a RawValue>,
        }
        let Some(params) = params.and_then(|p| serde_json::from_str::<Params<'a>>(p.get()).ok())
        else {
            return RequestFacts::default();
        };
        let text = |raw: Option<&'a RawValue>| -> Option<Cow<'a, str>> {
            raw.and_then(|r| serde_json::from_str::<Cow<'a, str>>(r.get()).ok())
        };
        let meta = params
            .meta
            .and_then(|m| serde_json::from_str::<Meta<'a>>(m.get()).ok());
        let (protocol_version, client_capabilities, log_level) = match meta {
            Some(m) => (
                m.protocol_version
                    .map(|r| serde_json::from_str::<Cow<'a, str>>(r.get()).map_err(|_| ())),
                m.client_capabilities.filter(|c| c.get().starts_with('{')),
                text(m.log_level),
            ),
            None => (None, None, None),
        };
        RequestFacts {
            protocol_version,
            client_capabilities,
            log_level,
            name: text(params.name),
            uri: text(params.uri),
            arguments: params.arguments,
        }
    }

    /// The version the request names, when it names one as a string.
    pub fn version(&self) -> Option<&str> {
        match &self.protocol_version {
            Some(Ok(v)) => Some(v),
            _ => None,
        }
    }
}

/// Whether a request's bytes carry the 2026-07-28 envelope
/// (`params._meta["io.modelcontextprotocol/protocolVersion"]`).
pub fn has_modern_meta(params: Option<&RawValue>) -> bool {
    RequestFacts::read(params).protocol_version.is_some()
}

/// Results that clients may cache: they must say for how long and for whom.
pub fn is_cacheable(method: &str) -> bool {
    matches!(
        method,
        "server/discover"
            | "tools/list"
            | "prompts/list"
            | "resources/list"
            | "resources/templates/list"
            | "resources/read"
    )
}

/// The severity rank of a log level (RFC 5424 order, `debug` lowest).
pub fn log_level_rank(level: &str) -> Option<u8> {
    Some(match level {
        "debug" => 0,
        "info" => 1,
        "notice" => 2,
        "warning" => 3,
        "error" => 4,
        "critical" => 5,
        "alert" => 6,
        "emergency" => 7,
        _ => return None,
    })
}

/// `params.level` of a `notifications/message`.
pub fn message_level(bytes: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Params {
        level: Option<String>,
    }
    crate::envelope::params_as::<Params>(bytes)?.level
}

/// The `error.code` of an error response.
pub fn error_code(bytes: &[u8]) -> Option<i64> {
    #[derive(Deserialize)]
    struct Error {
        code: i64,
    }
    #[derive(Deserialize)]
    struct Response {
        error: Option<Error>,
    }
    serde_json::from_slice::<Response>(bytes)
        .ok()?
        .error
        .map(|e| e.code)
}

/// An error response with its `error.code` replaced (every other byte kept).
pub fn with_error_code(bytes: &[u8], code: i64) -> Option<Bytes> {
    #[derive(Deserialize)]
    struct Error<'a> {
        #[serde(borrow)]
        code: &'a RawValue,
    }
    #[derive(Deserialize)]
    struct Response<'a> {
        #[serde(borrow)]
        error: Option<Error<'a>>,
    }
    let parsed: Response<'_> = serde_json::from_slice(bytes).ok()?;
    let raw = parsed.error?.code;
    crate::envelope::splice_str(bytes, raw.get(), &code.to_string())
}

/// Adds what a 2026-07-28 result must carry to an answer from a
/// handshake-era server: `resultType: "complete"`, for cacheable results
/// `ttlMs: 0` and `cacheScope: "private"` (Berth cannot know how long the
/// server's answer stays true, nor for whom), and the server's identity in
/// `_meta`. Members the result has already are left alone. `None` when the
/// message is not a result (errors pass unchanged).
pub fn modernize_result(bytes: &[u8], cacheable: bool, server_info: Option<&str>) -> Option<Bytes> {
    let env = Envelope::parse(bytes).ok()?;
    let result = env.result?;
    let members: HashMap<Cow<'_, str>, &RawValue> = serde_json::from_str(result.get()).ok()?;
    let mut added: Vec<(&str, Cow<'_, str>)> = Vec::new();
    if !members.contains_key("resultType") {
        added.push(("resultType", Cow::Borrowed(r#""complete""#)));
    }
    if cacheable {
        if !members.contains_key("ttlMs") {
            added.push(("ttlMs", Cow::Borrowed("0")));
        }
        if !members.contains_key("cacheScope") {
            added.push(("cacheScope", Cow::Borrowed(r#""private""#)));
        }
    }
    let mut new_result = Cow::Borrowed(result.get());
    if let Some(info) = server_info {
        match members.get("_meta") {
            None => added.push((
                "_meta",
                Cow::Owned(format!(r#"{{"{}":{info}}}"#, meta::SERVER_INFO)),
            )),
            Some(existing) => {
                let keys: HashMap<Cow<'_, str>, &RawValue> =
                    serde_json::from_str(existing.get()).unwrap_or_default();
                if !keys.contains_key(meta::SERVER_INFO) {
                    let meta_text = insert_members(existing.get(), &[(meta::SERVER_INFO, info)]);
                    let start = existing.get().as_ptr() as usize - result.get().as_ptr() as usize;
                    let end = start + existing.get().len();
                    new_result = Cow::Owned(format!(
                        "{}{meta_text}{}",
                        &result.get()[..start],
                        &result.get()[end..]
                    ));
                }
            }
        }
    }
    let pairs: Vec<(&str, &str)> = added.iter().map(|(k, v)| (*k, v.as_ref())).collect();
    let new_result = insert_members(&new_result, &pairs);
    crate::envelope::splice_str(bytes, result.get(), &new_result)
}

/// A JSON object's text with `members` (key, JSON value) added first.
fn insert_members(object: &str, members: &[(&str, &str)]) -> String {
    let Some(open) = object.find('{') else {
        return object.to_owned();
    };
    if members.is_empty() {
        return object.to_owned();
    }
    let rest = &object[open + 1..];
    let empty = rest.trim_start().starts_with('}');
    let mut out = String::with_capacity(object.len() + 64);
    out.push_str(&object[..=open]);
    for (i, (key, value)) in members.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::Value::from(*key).to_string());
        out.push(':');
        out.push_str(value);
    }
    if !empty {
        out.push(',');
    }
    out.push_str(rest);
    out
}

/// A server notification re-addressed to one `subscriptions/listen` stream:
/// `params._meta.subscriptionId` set to `subscription` (JSON text).
/// Notifications are small and rare, so this one re-serialises.
pub fn tag_subscription(bytes: &[u8], subscription: &str) -> Option<Bytes> {
    let mut value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let id: serde_json::Value = serde_json::from_str(subscription).ok()?;
    let object = value.as_object_mut()?;
    let params = object
        .entry("params")
        .or_insert_with(|| serde_json::json!({}))
        .as_object_mut()?;
    let meta = params
        .entry("_meta")
        .or_insert_with(|| serde_json::json!({}))
        .as_object_mut()?;
    meta.insert(meta::SUBSCRIPTION_ID.to_owned(), id);
    serde_json::to_vec(&value).ok().map(Bytes::from)
}

/// `params._meta["io.modelcontextprotocol/subscriptionId"]` of a notification.
pub fn subscription_id(bytes: &[u8]) -> Option<crate::IdKey> {
    #[derive(Deserialize)]
    struct Meta<'a> {
        #[serde(borrow, rename = "io.modelcontextprotocol/subscriptionId")]
        id: Option<&'a RawValue>,
    }
    #[derive(Deserialize)]
    struct Params<'a> {
        #[serde(borrow, rename = "_meta")]
        meta: Option<Meta<'a>>,
    }
    let params: Params<'_> = crate::envelope::params_as(bytes)?;
    crate::IdKey::from_raw(params.meta?.id?)
}

/// `params.uri` of a `notifications/resources/updated`.
pub fn updated_uri(bytes: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Params {
        uri: Option<String>,
    }
    crate::envelope::params_as::<Params>(bytes)?.uri
}

/// Decodes a header value sent as `=?base64?...?=` (values that are not
/// plain visible ASCII); other values are returned as they are.
pub fn decode_header_value(value: &[u8]) -> Option<String> {
    use base64::Engine as _;
    let text = std::str::from_utf8(value).ok()?;
    match text
        .strip_prefix("=?base64?")
        .and_then(|t| t.strip_suffix("?="))
    {
        Some(encoded) => {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()?;
            String::from_utf8(raw).ok()
        }
        None => Some(text.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[test]
    fn reads_request_facts() {
        let p = raw(
            r#"{"name":"echo","arguments":{"a":1},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},"io.modelcontextprotocol/logLevel":"info"}}"#,
        );
        let f = RequestFacts::read(Some(&p));
        assert_eq!(f.version(), Some("2026-07-28"));
        assert!(f.client_capabilities.is_some());
        assert_eq!(f.log_level.as_deref(), Some("info"));
        assert_eq!(f.name.as_deref(), Some("echo"));
        assert_eq!(f.arguments.unwrap().get(), r#"{"a":1}"#);
        let bad = raw(r#"{"_meta":{"io.modelcontextprotocol/protocolVersion":5}}"#);
        assert!(matches!(
            RequestFacts::read(Some(&bad)).protocol_version,
            Some(Err(()))
        ));
        assert!(!has_modern_meta(Some(&raw(
            r#"{"_meta":{"progressToken":1}}"#
        ))));
    }

    #[test]
    fn modernizes_results_keeping_the_servers_bytes() {
        let answer = br#"{"jsonrpc":"2.0","id":3,"result":{"tools":[ {"name":"x"} ]}}"#;
        let out = modernize_result(answer, true, Some(r#"{"name":"s","version":"1"}"#)).unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"jsonrpc":"2.0","id":3,"result":{"resultType":"complete","ttlMs":0,"cacheScope":"private","_meta":{"io.modelcontextprotocol/serverInfo":{"name":"s","version":"1"}},"tools":[ {"name":"x"} ]}}"#
        );
        let empty = br#"{"jsonrpc":"2.0","id":3,"result":{}}"#;
        let out = modernize_result(empty, false, None).unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"jsonrpc":"2.0","id":3,"result":{"resultType":"complete"}}"#
        );
        let with_meta =
            br#"{"jsonrpc":"2.0","id":3,"result":{"_meta":{"k":1},"resultType":"complete"}}"#;
        let out = modernize_result(with_meta, false, Some("{}")).unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"jsonrpc":"2.0","id":3,"result":{"_meta":{"io.modelcontextprotocol/serverInfo":{},"k":1},"resultType":"complete"}}"#
        );
        assert!(
            modernize_result(
                br#"{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"x"}}"#,
                true,
                None
            )
            .is_none()
        );
    }

    #[test]
    fn rewrites_error_codes_and_tags_subscriptions() {
        let e = br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32002,"message":"nope"}}"#;
        assert_eq!(error_code(e), Some(-32002));
        let out = with_error_code(e, -32602).unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"nope"}}"#
        );
        let n = br#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#;
        let tagged = tag_subscription(n, r#""L1""#).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&tagged).unwrap();
        assert_eq!(v["params"]["_meta"][meta::SUBSCRIPTION_ID], "L1");
    }

    #[test]
    fn decodes_base64_header_values() {
        assert_eq!(decode_header_value(b"plain").as_deref(), Some("plain"));
        assert_eq!(
            decode_header_value(b"=?base64?w6l0w6k=?=").as_deref(),
            Some("été")
        );
        assert_eq!(decode_header_value(b"=?base64?!!?="), None);
        assert!(is_after_handshake_era("2099-01-01"));
        assert!(!is_after_handshake_era("2025-11-25"));
        assert_eq!(log_level_rank("warning"), Some(3));
    }
}
