//! HTTP replies carrying JSON-RPC bodies.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_fleet::Failure;
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

/// An HTTP error whose body is a JSON-RPC error a person can act on.
pub(crate) fn rpc_error(
    status: StatusCode,
    id: Option<&str>,
    code: i64,
    message: impl AsRef<str>,
) -> Response {
    json(
        status,
        berth_wire::error_response(id, code, message.as_ref(), None),
    )
}

/// The JSON-RPC error answering request `id` when the server gave no answer.
pub(crate) fn failure_body(id: Option<&str>, failure: &Failure) -> Bytes {
    berth_wire::error_response(id, failure.code, &failure.message, failure.data.as_ref())
}
