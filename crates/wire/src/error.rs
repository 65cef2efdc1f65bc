//! JSON-RPC error objects written by Berth itself.

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

/// Error codes Berth uses. The JSON-RPC ones are standard; the rest sit in the
/// implementation-defined server range (-32000..-32099).
pub struct ErrorCode;

impl ErrorCode {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL_ERROR: i64 = -32603;
    /// The upstream server process is gone (exited, crashed, or was stopped for misbehaving).
    pub const UPSTREAM_CLOSED: i64 = -32000;
    /// Unknown or ended session (same code as the official TypeScript SDK).
    pub const SESSION_NOT_FOUND: i64 = -32001;
    /// The request was refused at the gateway (Origin, Host, headers, auth).
    pub const FORBIDDEN: i64 = -32003;
    /// The upstream did not answer within the request timeout.
    pub const REQUEST_TIMEOUT: i64 = -32004;
    /// No capacity to serve the request right now.
    pub const UNAVAILABLE: i64 = -32005;
    /// Resource not found, as handshake-era servers say it (2026-07-28 uses -32602).
    pub const RESOURCE_NOT_FOUND_LEGACY: i64 = -32002;
    /// 2026-07-28: an HTTP header disagrees with the body, or is missing.
    pub const HEADER_MISMATCH: i64 = -32020;
    /// 2026-07-28: the request needs a client capability it did not declare.
    pub const MISSING_REQUIRED_CLIENT_CAPABILITY: i64 = -32021;
    /// 2026-07-28: the request names a protocol version the server does not speak.
    pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    code: i64,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a serde_json::Value>,
}

#[derive(Serialize)]
struct ErrorResponse<'a> {
    jsonrpc: &'static str,
    id: &'a RawValue,
    error: ErrorObject<'a>,
}

/// A complete JSON-RPC error response. `id` is the request's id as JSON text
/// (`None` writes `null`, for errors that cannot be tied to a request).
pub fn error_response(
    id: Option<&str>,
    code: i64,
    message: &str,
    data: Option<&serde_json::Value>,
) -> Bytes {
    let null = RawValue::NULL;
    let id_raw: Box<RawValue>;
    let id = match id.map(|s| RawValue::from_string(s.to_owned())) {
        Some(Ok(raw)) => {
            id_raw = raw;
            &*id_raw
        }
        _ => null,
    };
    let body = ErrorResponse {
        jsonrpc: "2.0",
        id,
        error: ErrorObject {
            code,
            message,
            data,
        },
    };
    // Serialising these plain types cannot fail.
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_error_objects() {
        let e = error_response(Some("\"a\""), -32600, "bad \"thing\"", None);
        assert_eq!(
            std::str::from_utf8(&e).unwrap(),
            r#"{"jsonrpc":"2.0","id":"a","error":{"code":-32600,"message":"bad \"thing\""}}"#
        );
        let e = error_response(None, -32700, "x", Some(&serde_json::json!({"k":1})));
        assert_eq!(
            std::str::from_utf8(&e).unwrap(),
            r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"x","data":{"k":1}}}"#
        );
    }
}
