//! Why the edge refuses a request, as one type, and the one place that
//! turns each reason into an HTTP status and a JSON-RPC error code: the same
//! for 2026-07-28 stateless requests, Streamable HTTP sessions and the legacy
//! HTTP+SSE transport.

use axum::http::StatusCode;
use berth_fleet::Failure;
use berth_wire::ErrorCode;
use berth_wire::modern::MODERN_VERSIONS;
use bytes::Bytes;

use crate::reply::Refusal;

/// A request the edge answers itself, with an error. Each variant carries
/// the message a person reads; status and code follow from the variant.
#[derive(Debug)]
pub(crate) enum EdgeError {
    /// The body is not JSON (400, -32700).
    Parse(String),
    /// JSON, but not a request the edge can serve (400, -32600).
    InvalidRequest(String),
    /// The request's params (its `_meta` envelope included) are wrong (400, -32602).
    InvalidParams(String),
    /// An HTTP header is missing or disagrees with the body (400, -32020).
    HeaderMismatch(String),
    /// A protocol version the edge does not serve (400, -32022, `data.supported`).
    UnsupportedVersion { requested: String },
    /// No such method in this era, or not through this route (404, -32601).
    MethodNotFound(String),
    /// The `Accept` header rules out every answer (406, -32600).
    NotAcceptable(String),
    /// The body is not JSON by its `Content-Type` (415, -32600).
    UnsupportedMediaType(String),
    /// The body is over the limit (413, -32600).
    PayloadTooLarge(String),
    /// No such server or route (404, -32600).
    NotFound(String),
    /// The route exists but not for this HTTP method (405, -32600).
    MethodNotAllowed(String),
    /// Unknown or ended session (404, -32001): the client starts a new one.
    SessionNotFound(String),
    /// The session ended because its server process died (404, -32001);
    /// the fleet's account of how (exit status or signal, last stderr) is
    /// the message's cause and the error's data.
    ProcessDied(Failure),
    /// A second standalone stream on one session (409, -32600).
    Conflict(String),
    /// No valid credential for this server (401, -32003).
    Unauthorized(String),
    /// Refused: Origin/Host, or a scope the token lacks (403, -32003).
    Forbidden(String),
    /// No capacity now, or a dependency is unreachable (503, -32005).
    Unavailable(String),
    /// This client is over its share: rate or sessions (429, -32005; the
    /// caller adds `Retry-After`).
    TooManyRequests(String),
    /// The server could not be started or failed (502, -32000).
    UpstreamFailed(String),
    /// The server did not answer in time (504, -32004).
    Timeout(String),
    /// The request body did not arrive in time (408, -32600).
    BodyTimeout(String),
    /// The edge itself failed (500, -32603).
    Internal(String),
    /// The fleet's own account of why a server gave no answer; its code
    /// decides the status (502 closed, 503 not reading, 504 timed out).
    Upstream(Failure),
}

impl EdgeError {
    pub(crate) fn code(&self) -> i64 {
        match self {
            EdgeError::Parse(_) => ErrorCode::PARSE_ERROR,
            EdgeError::InvalidRequest(_)
            | EdgeError::NotAcceptable(_)
            | EdgeError::UnsupportedMediaType(_)
            | EdgeError::PayloadTooLarge(_)
            | EdgeError::NotFound(_)
            | EdgeError::MethodNotAllowed(_)
            | EdgeError::Conflict(_)
            | EdgeError::BodyTimeout(_) => ErrorCode::INVALID_REQUEST,
            EdgeError::Internal(_) => ErrorCode::INTERNAL_ERROR,
            EdgeError::InvalidParams(_) => ErrorCode::INVALID_PARAMS,
            EdgeError::HeaderMismatch(_) => ErrorCode::HEADER_MISMATCH,
            EdgeError::UnsupportedVersion { .. } => ErrorCode::UNSUPPORTED_PROTOCOL_VERSION,
            EdgeError::MethodNotFound(_) => ErrorCode::METHOD_NOT_FOUND,
            EdgeError::SessionNotFound(_) | EdgeError::ProcessDied(_) => {
                ErrorCode::SESSION_NOT_FOUND
            }
            EdgeError::Unauthorized(_) | EdgeError::Forbidden(_) => ErrorCode::FORBIDDEN,
            EdgeError::Unavailable(_) | EdgeError::TooManyRequests(_) => ErrorCode::UNAVAILABLE,
            EdgeError::UpstreamFailed(_) => ErrorCode::UPSTREAM_CLOSED,
            EdgeError::Timeout(_) => ErrorCode::REQUEST_TIMEOUT,
            EdgeError::Upstream(failure) => failure.code,
        }
    }

    pub(crate) fn status(&self) -> StatusCode {
        match self {
            EdgeError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            EdgeError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            EdgeError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            EdgeError::NotFound(_) | EdgeError::SessionNotFound(_) | EdgeError::ProcessDied(_) => {
                StatusCode::NOT_FOUND
            }
            EdgeError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            EdgeError::Conflict(_) => StatusCode::CONFLICT,
            EdgeError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            EdgeError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            EdgeError::Forbidden(_) => StatusCode::FORBIDDEN,
            EdgeError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            EdgeError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            EdgeError::UpstreamFailed(_) => StatusCode::BAD_GATEWAY,
            EdgeError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            EdgeError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            EdgeError::Upstream(failure) => status_for_failure(failure.code),
            other => status_for_code(other.code()),
        }
    }

    fn message(&self) -> String {
        match self {
            EdgeError::UnsupportedVersion { requested } => format!(
                "Unsupported protocol version {requested:?}: this endpoint serves {} statelessly, and 2025-11-25, 2025-06-18 and 2025-03-26 through initialize",
                MODERN_VERSIONS.join(", ")
            ),
            EdgeError::Upstream(failure) => failure.message.clone(),
            EdgeError::ProcessDied(failure) => format!(
                "Session not found: the session ended because its server process died ({}); initialize a new session",
                failure.message
            ),
            EdgeError::Parse(m)
            | EdgeError::InvalidRequest(m)
            | EdgeError::InvalidParams(m)
            | EdgeError::HeaderMismatch(m)
            | EdgeError::MethodNotFound(m)
            | EdgeError::NotAcceptable(m)
            | EdgeError::UnsupportedMediaType(m)
            | EdgeError::PayloadTooLarge(m)
            | EdgeError::NotFound(m)
            | EdgeError::MethodNotAllowed(m)
            | EdgeError::Internal(m)
            | EdgeError::SessionNotFound(m)
            | EdgeError::Conflict(m)
            | EdgeError::Unauthorized(m)
            | EdgeError::Forbidden(m)
            | EdgeError::Unavailable(m)
            | EdgeError::TooManyRequests(m)
            | EdgeError::UpstreamFailed(m)
            | EdgeError::Timeout(m)
            | EdgeError::BodyTimeout(m) => m.clone(),
        }
    }

    fn data(&self) -> Option<serde_json::Value> {
        match self {
            EdgeError::UnsupportedVersion { requested } => Some(serde_json::json!({
                "supported": MODERN_VERSIONS,
                "requested": requested,
            })),
            EdgeError::Upstream(failure) | EdgeError::ProcessDied(failure) => failure.data.clone(),
            _ => None,
        }
    }

    /// The JSON-RPC error answering the request with id `id` (JSON text,
    /// when it could be read), for a body that carries it in a stream or a batch.
    pub(crate) fn body(&self, id: Option<&str>) -> Bytes {
        berth_wire::error_response(id, self.code(), &self.message(), self.data().as_ref())
    }

    /// The refusal answering the request with id `id` (JSON text, when it
    /// could be read).
    pub(crate) fn refusal(&self, id: Option<&str>) -> Refusal {
        Refusal::new(self.status(), self.body(id))
    }
}

impl EdgeError {
    /// Why a request got no process (or connection) of `server`.
    pub(crate) fn acquire(server: &str, error: berth_fleet::AcquireError) -> EdgeError {
        use berth_fleet::AcquireError;
        match error {
            AcquireError::Failed(failure) => EdgeError::Upstream(failure),
            AcquireError::Spawn(e) => {
                tracing::error!("{e}");
                EdgeError::UpstreamFailed(format!("Bad Gateway: {e}"))
            }
            // The caller lacks a credential only the operator can store.
            AcquireError::Secret(why) => {
                EdgeError::Forbidden(format!("Forbidden: server `{server}`: {why}"))
            }
            other => {
                EdgeError::Unavailable(format!("Service Unavailable: server `{server}`: {other}"))
            }
        }
    }

    /// 429: this client is over its share (rate or sessions); `Retry-After`
    /// says when to try again.
    pub(crate) fn too_many(message: String, wait: std::time::Duration) -> Refusal {
        EdgeError::TooManyRequests(message)
            .refusal(None)
            .with_retry_after(wait)
    }

    /// The refusal standing for an error response written without a JSON-RPC
    /// body (axum's extractor and routing rejections: plain text, or nothing),
    /// with `detail` (that text) as the reason. The status is kept as it was.
    pub(crate) fn from_plain(status: StatusCode, detail: &str) -> EdgeError {
        let reason = status.canonical_reason().unwrap_or("Error");
        let m = if detail.is_empty() {
            reason.to_owned()
        } else {
            format!("{reason}: {detail}")
        };
        match status {
            StatusCode::NOT_FOUND => EdgeError::NotFound(m),
            StatusCode::METHOD_NOT_ALLOWED => EdgeError::MethodNotAllowed(m),
            StatusCode::NOT_ACCEPTABLE => EdgeError::NotAcceptable(m),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => EdgeError::UnsupportedMediaType(m),
            StatusCode::PAYLOAD_TOO_LARGE => EdgeError::PayloadTooLarge(m),
            StatusCode::CONFLICT => EdgeError::Conflict(m),
            StatusCode::UNAUTHORIZED => EdgeError::Unauthorized(m),
            StatusCode::FORBIDDEN => EdgeError::Forbidden(m),
            StatusCode::SERVICE_UNAVAILABLE => EdgeError::Unavailable(m),
            StatusCode::TOO_MANY_REQUESTS => EdgeError::TooManyRequests(m),
            StatusCode::BAD_GATEWAY => EdgeError::UpstreamFailed(m),
            StatusCode::GATEWAY_TIMEOUT => EdgeError::Timeout(m),
            s if s.is_server_error() => EdgeError::Internal(m),
            _ => EdgeError::InvalidRequest(m),
        }
    }
}

impl From<berth_wire::ParseError> for EdgeError {
    fn from(e: berth_wire::ParseError) -> EdgeError {
        match e {
            berth_wire::ParseError::Json(_) => EdgeError::Parse(e.to_string()),
            berth_wire::ParseError::Invalid(_) => EdgeError::InvalidRequest(e.to_string()),
        }
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
        other => match status_for_code(other) {
            StatusCode::OK => StatusCode::BAD_GATEWAY,
            status => status,
        },
    }
}
