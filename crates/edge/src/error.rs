//! Why the edge refuses a request, as one type, and the one place that turns
//! a JSON-RPC error code into an HTTP status.

use axum::http::StatusCode;
use berth_wire::ErrorCode;
use berth_wire::modern::MODERN_VERSIONS;

use crate::reply::Refusal;

/// A request the edge answers itself, with an error.
#[derive(Debug)]
pub(crate) enum EdgeError {
    /// The body is not JSON (-32700).
    Parse(String),
    /// JSON, but not a request the edge can serve (-32600).
    InvalidRequest(String),
    /// The request's params (its `_meta` envelope included) are wrong (-32602).
    InvalidParams(String),
    /// An HTTP header is missing or disagrees with the body (-32020).
    HeaderMismatch(String),
    /// A protocol version the edge does not serve (-32022).
    UnsupportedVersion { requested: String },
    /// No such method in this era, or not through this route (-32601).
    MethodNotFound(String),
}

impl From<berth_wire::ParseError> for EdgeError {
    fn from(e: berth_wire::ParseError) -> EdgeError {
        match e {
            berth_wire::ParseError::Json(_) => EdgeError::Parse(e.to_string()),
            berth_wire::ParseError::Invalid(_) => EdgeError::InvalidRequest(e.to_string()),
        }
    }
}

impl EdgeError {
    pub(crate) fn code(&self) -> i64 {
        match self {
            EdgeError::Parse(_) => ErrorCode::PARSE_ERROR,
            EdgeError::InvalidRequest(_) => ErrorCode::INVALID_REQUEST,
            EdgeError::InvalidParams(_) => ErrorCode::INVALID_PARAMS,
            EdgeError::HeaderMismatch(_) => ErrorCode::HEADER_MISMATCH,
            EdgeError::UnsupportedVersion { .. } => ErrorCode::UNSUPPORTED_PROTOCOL_VERSION,
            EdgeError::MethodNotFound(_) => ErrorCode::METHOD_NOT_FOUND,
        }
    }

    fn message(&self) -> String {
        match self {
            EdgeError::Parse(m)
            | EdgeError::InvalidRequest(m)
            | EdgeError::InvalidParams(m)
            | EdgeError::HeaderMismatch(m)
            | EdgeError::MethodNotFound(m) => m.clone(),
            EdgeError::UnsupportedVersion { requested } => format!(
                "Unsupported protocol version {requested:?}: this endpoint serves {} statelessly, and 2025-11-25, 2025-06-18 and 2025-03-26 through initialize",
                MODERN_VERSIONS.join(", ")
            ),
        }
    }

    /// The refusal answering the request with id `id` (JSON text, when it
    /// could be read).
    pub(crate) fn refusal(&self, id: Option<&str>) -> Refusal {
        let data = match self {
            EdgeError::UnsupportedVersion { requested } => Some(serde_json::json!({
                "supported": MODERN_VERSIONS,
                "requested": requested,
            })),
            _ => None,
        };
        Refusal::new(
            status_for_code(self.code()),
            berth_wire::error_response(id, self.code(), &self.message(), data.as_ref()),
        )
    }
}

/// The HTTP status of a 2026-07-28 answer carrying JSON-RPC error `code`,
/// whoever wrote it (the spec's table: malformed requests and header or
/// version errors are 400, unknown methods 404; other errors ride a 200).
pub(crate) fn status_for_code(code: i64) -> StatusCode {
    match code {
        ErrorCode::PARSE_ERROR
        | ErrorCode::INVALID_REQUEST
        | ErrorCode::INVALID_PARAMS
        | ErrorCode::HEADER_MISMATCH
        | ErrorCode::MISSING_REQUIRED_CLIENT_CAPABILITY
        | ErrorCode::UNSUPPORTED_PROTOCOL_VERSION => StatusCode::BAD_REQUEST,
        ErrorCode::METHOD_NOT_FOUND => StatusCode::NOT_FOUND,
        _ => StatusCode::OK,
    }
}

/// The HTTP status of an error Berth writes when the server gave no answer.
pub(crate) fn status_for_failure(code: i64) -> StatusCode {
    match code {
        ErrorCode::REQUEST_TIMEOUT => StatusCode::GATEWAY_TIMEOUT,
        ErrorCode::UNAVAILABLE => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::UPSTREAM_CLOSED => StatusCode::BAD_GATEWAY,
        other => status_for_code(other),
    }
}
