//! The 2026-07-28 era: stateless requests, each self-contained.
//!
//! A request carrying the `_meta` envelope (or announcing the revision in
//! `MCP-Protocol-Version`) is served here, never with a session. The edge
//! checks what a stdio server cannot see (the HTTP headers against the
//! body), answers `server/discover` from the era probe, keeps
//! `subscriptions/listen` streams itself, and relays everything else to a
//! process of the server's stateless pool.

mod checks;
mod listen;
mod relay;

use std::sync::Arc;
use std::sync::LazyLock;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_auth::Principal;
use berth_wire::modern::{RequestFacts, is_after_handshake_era};
use berth_wire::{Envelope, Kind, Message};
use memchr::memmem::Finder;

use crate::authz::{Verdict, authorize};
use crate::error::EdgeError;
use crate::gateway::Gateway;
use crate::headers::VERSION_HEADER;
use crate::reply::{Reply, json};
use crate::server::Server;

/// Whether a POST belongs to the stateless era: its version header names
/// a revision after the handshake era, or its body carries the `_meta`
/// envelope. (Cheap for handshake-era traffic: the body is searched for the
/// key before anything is parsed.)
pub(crate) fn is_stateless(headers: &HeaderMap, body: &[u8]) -> bool {
    let by_header = headers
        .get(VERSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_after_handshake_era);
    // Built once: `memmem::find` builds its searcher on every call.
    static KEY: LazyLock<Finder<'static>> =
        LazyLock::new(|| Finder::new(b"io.modelcontextprotocol/protocolVersion"));
    by_header
        || (KEY.find(body).is_some()
            && Envelope::parse(body).is_ok_and(|e| berth_wire::modern::has_modern_meta(e.params)))
}

/// Whether a GET or DELETE without a session comes from a stateless client
/// (it gets 405: the era has no standalone stream and nothing to delete).
pub(crate) fn is_stateless_get(headers: &HeaderMap) -> bool {
    headers
        .get(VERSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_after_handshake_era)
}

/// Methods the 2026-07-28 revision removed.
fn removed(method: &str) -> bool {
    matches!(
        method,
        "initialize"
            | "ping"
            | "logging/setLevel"
            | "resources/subscribe"
            | "resources/unsubscribe"
            | "notifications/initialized"
            | "notifications/roots/list_changed"
    )
}

/// Serves one stateless POST (already parsed).
pub(crate) async fn post(
    gw: Arc<Gateway>,
    server: Arc<Server>,
    caller: Option<Arc<Principal>>,
    headers: &HeaderMap,
    msg: Message,
) -> Reply {
    match msg.kind {
        // Nothing of the client's reaches a process outside a request.
        Kind::Notification => return Ok(StatusCode::ACCEPTED.into_response()),
        Kind::Response => {
            return Err(EdgeError::InvalidRequest(
                "Invalid Request: there is no server request to answer in the 2026-07-28 era (servers ask for input with input_required results)".into(),
            )
            .refusal(None));
        }
        Kind::Request => {}
    }
    let method = msg.method().unwrap_or_default().to_owned();
    // Parsed once here: the id as written, the params and their `_meta`
    // facts all come from this envelope (the relay forwards the bytes).
    // (Read from its own handle on the bytes: `msg` moves on below.)
    let bytes = msg.bytes.clone();
    let envelope = Envelope::parse(&bytes)
        .map_err(|e| EdgeError::InvalidRequest(e.to_string()).refusal(None))?;
    let raw_id = msg
        .id
        .as_ref()
        .and(envelope.id)
        .map(|id| id.get().to_owned());
    let id = raw_id.as_deref();
    let facts = RequestFacts::read(envelope.params);
    checks::envelope(headers, &facts).map_err(|e| e.refusal(id))?;
    if removed(&method) {
        return Err(EdgeError::MethodNotFound(format!(
            "Method not found: `{method}` is not part of MCP 2026-07-28 (see server/discover and subscriptions/listen)"
        ))
        .refusal(id));
    }
    checks::headers(headers, &method, &facts).map_err(|e| e.refusal(id))?;
    let filter = match authorize(&gw, &server.spec.name, caller.as_ref(), &msg)? {
        Verdict::Allow => None,
        Verdict::Filter(filter) => Some(filter),
    };
    let ready = server.stateless.ready().await?;
    if method == "tools/call"
        && let Some(tools) = ready.tool_headers(gw.config().request_timeout).await
    {
        tools
            .check(
                headers,
                facts.name.as_deref().unwrap_or_default(),
                facts.arguments,
            )
            .map_err(|e| e.refusal(id))?;
    }
    // An upstream reached over HTTP checks them against the body too.
    let msg = msg.with_param_headers(param_headers(headers));
    match method.as_str() {
        "server/discover" => {
            let discovery = ready.discovery().await?;
            Ok(json(
                StatusCode::OK,
                discovery.response(id.unwrap_or("null")),
            ))
        }
        "subscriptions/listen" => {
            let raw_id = raw_id.clone().unwrap_or_else(|| "null".into());
            listen::open(&gw, &server, ready, raw_id, envelope.params).await
        }
        _ => {
            if ready.bridged() && !relay::bridgeable(&method) {
                return Err(EdgeError::MethodNotFound(format!(
                    "Method not found: server `{}` speaks only the handshake era, and `{method}` cannot be bridged to it; use initialize and a session",
                    server.spec.name
                ))
                .refusal(id));
            }
            let request = relay::Request {
                log_level: facts
                    .log_level
                    .as_deref()
                    .and_then(berth_wire::modern::log_level_rank),
                method,
                filter,
                owner: crate::gateway::secret_owner(caller.as_deref()),
            };
            let raw_id = raw_id.clone().unwrap_or_else(|| "null".into());
            Ok(relay::relay(gw, server.clone(), ready, msg, raw_id, request).await)
        }
    }
}

/// The request's `Mcp-Param-*` headers, as they travel with its message.
fn param_headers(headers: &HeaderMap) -> Option<berth_wire::ParamHeaders> {
    const PREFIX: &str = "mcp-param-";
    berth_wire::ParamHeaders::new(headers.iter().filter_map(|(name, value)| {
        // Header names are lowercase here; values of these are visible ASCII.
        let value = value.to_str().ok()?;
        name.as_str()
            .starts_with(PREFIX)
            .then(|| (name.as_str().into(), value.into()))
    }))
}

/// 405 for a GET or DELETE of the stateless era.
pub(crate) fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(axum::http::header::ALLOW, "POST")],
    )
        .into_response()
}
