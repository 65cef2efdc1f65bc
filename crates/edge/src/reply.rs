//! HTTP replies carrying JSON-RPC bodies.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

/// A JSON body with a status.
pub(crate) fn json(status: StatusCode, body: Bytes) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// A 200 carrying an SSE body (no caching, no proxy buffering).
pub(crate) fn sse(body: axum::body::Body) -> Response {
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::HeaderName::from_static("x-accel-buffering"),
                HeaderValue::from_static("no"),
            ),
        ],
        body,
    )
        .into_response()
}

/// A request refused before (or instead of) reaching a server: an HTTP status
/// and a JSON-RPC error body a person can act on.
#[derive(Debug)]
pub(crate) struct Refusal {
    status: StatusCode,
    body: Bytes,
    /// The bearer challenge of a 401 or 403.
    challenge: Option<HeaderValue>,
    /// Seconds to wait, on a 429.
    retry_after: Option<HeaderValue>,
}

impl Refusal {
    pub(crate) fn new(status: StatusCode, body: Bytes) -> Refusal {
        Refusal {
            status,
            body,
            challenge: None,
            retry_after: None,
        }
    }

    /// Tells the client to wait `wait` before trying again (`Retry-After`,
    /// whole seconds, at least 1).
    pub(crate) fn with_retry_after(mut self, wait: std::time::Duration) -> Refusal {
        let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
        self.retry_after = HeaderValue::try_from(seconds.to_string()).ok();
        self
    }

    pub(crate) fn with_challenge(mut self, challenge: Option<String>) -> Refusal {
        self.challenge = challenge.and_then(|c| HeaderValue::try_from(c).ok());
        self
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = json(self.status, self.body);
        if let Some(challenge) = self.challenge {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, seconds);
        }
        if self.status.is_client_error() {
            // The request body may be unread (a 413 stops reading it): the
            // connection cannot be reused, so say so rather than drop it.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// What a handler returns: a response, or a refusal.
pub(crate) type Reply = Result<Response, Refusal>;

/// The id of `msg` exactly as the client wrote it (`1.0`, `-0` and integers
/// beyond 64 bits included), for the errors Berth answers itself: the client
/// matches the answer by its own id, so it must not be re-serialised.
/// Read only when an answer needs it (an error): the common path does not
/// parse the request a second time.
pub(crate) fn echo_id(msg: &berth_wire::Message) -> Option<String> {
    written_id(&msg.bytes).or_else(|| msg.id.as_ref().map(|id| id.to_json()))
}

/// The id of the JSON-RPC message `bytes`, as written.
pub(crate) fn written_id(bytes: &[u8]) -> Option<String> {
    berth_wire::Envelope::parse(bytes)
        .ok()
        .and_then(|envelope| envelope.id)
        .map(|id| id.get().to_owned())
}
