//! What every MCP handler reads from an HTTP request before the message
//! itself: the server name in the path, the caller, the content type and
//! Accept headers, and the body within its limit. Shared by the Streamable
//! HTTP and legacy HTTP+SSE handlers, so neither depends on the other.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Extension, Path};
use axum::http::{HeaderMap, header};
use berth_auth::Principal;
use bytes::Bytes;
use futures::StreamExt;

use crate::error::EdgeError;
use crate::reply::Refusal;

/// The caller, when the gateway authenticates (set by [`crate::authz::authenticate`]).
pub(crate) type Caller = Option<Extension<Arc<Principal>>>;

/// The server name from the path, or a JSON-RPC 400 (axum's own rejection is plain text).
pub(crate) fn server_name(name: Result<Path<String>, PathRejection>) -> Result<String, Refusal> {
    name.map(|Path(name)| name).map_err(|e| {
        EdgeError::InvalidRequest(format!(
            "Bad Request: the server name in the path is not valid ({e})"
        ))
        .refusal(None)
    })
}

pub(crate) fn check_content_type(headers: &HeaderMap) -> Result<(), Refusal> {
    let ok = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if ok {
        Ok(())
    } else {
        Err(EdgeError::UnsupportedMediaType(
            "Unsupported Media Type: the body must be JSON (Content-Type: application/json)".into(),
        )
        .refusal(None))
    }
}

/// Whether the Accept header admits `mime` (exactly, by `type/*`, or `*/*`).
pub(crate) fn accepts(headers: &HeaderMap, mime: &str) -> bool {
    let (kind, _) = mime.split_once('/').unwrap_or((mime, ""));
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let item = item.split(';').next().unwrap_or_default().trim();
            item.eq_ignore_ascii_case(mime)
                || item == "*/*"
                || item
                    .strip_suffix("/*")
                    .is_some_and(|t| t.eq_ignore_ascii_case(kind))
        })
}

/// Reads the body, refusing more than `limit` bytes with 413 before buffering them.
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, Refusal> {
    let too_large = || {
        EdgeError::PayloadTooLarge(format!(
            "Payload Too Large: the body exceeds the {limit}-byte limit (gateway.max_body_bytes)"
        ))
        .refusal(None)
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut stream = body.into_data_stream();
    // A body that arrives in one piece is kept as it is, without a copy.
    let mut first: Option<Bytes> = None;
    let mut rest: Vec<u8> = Vec::new();
    let mut total = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            EdgeError::InvalidRequest(format!("Bad Request: could not read the body ({e})"))
                .refusal(None)
        })?;
        total += chunk.len();
        if total > limit {
            return Err(too_large());
        }
        match first.take() {
            None if rest.is_empty() => first = Some(chunk),
            earlier => {
                if let Some(earlier) = earlier {
                    rest.reserve(
                        declared
                            .unwrap_or(0)
                            .min(limit)
                            .max(earlier.len() + chunk.len()),
                    );
                    rest.extend_from_slice(&earlier);
                }
                rest.extend_from_slice(&chunk);
            }
        }
    }
    crate::observe::note(|n| n.bytes_in = total as u64);
    Ok(first.unwrap_or_else(|| Bytes::from(rest)))
}
