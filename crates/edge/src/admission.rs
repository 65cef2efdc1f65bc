//! What every MCP request passes before its handler, in one layer: the
//! Host/Origin and header checks ([`guard`]), authentication ([`authz`]),
//! then the client's request rate ([`fairness`]); on the way back, JSON-RPC
//! bodies for bare errors and CORS headers; and each request's record for
//! the gateway's telemetry ([`crate::observe`]).
//!
//! One layer rather than one per check: each axum layer clones the inner
//! service and boxes a future per request, which showed in the gateway's
//! CPU profile under load.

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use berth_auth::Principal;
use berth_telemetry::{Observer as _, Outcome, RequestRecord, TraceContext};
use http_body::Body as _;

use crate::gateway::Gateway;
use crate::headers::SESSION_HEADER;
use crate::observe::{NOTE, Note};
use crate::reply::Refusal;
use crate::{authz, fairness, guard};

pub(crate) async fn admit(
    State(gw): State<Arc<Gateway>>,
    mut request: Request,
    next: Next,
) -> Response {
    let screened = match guard::screen(gw.origin_policy(), &request) {
        Ok(screened) => screened,
        Err(refusal) => return refusal.into_response(),
    };
    if let Some(preflight) = screened.preflight() {
        return preflight;
    }
    if !gw.telemetry().is_active() {
        let response = match checked(&gw, &mut request).await {
            Ok(client) => fairness::for_client(client, next.run(request)).await,
            Err(refusal) => refusal.into_response(),
        };
        return guard::finish(screened, response).await;
    }
    let started = Instant::now();
    let started_at = SystemTime::now();
    // A Uri clone shares its bytes; the record names the server from it.
    let uri = request.uri().clone();
    let http_method = request.method().clone();
    let mut first = Note::default();
    if gw.config().tracing {
        let header = request
            .headers()
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok());
        let trace = TraceContext::continue_or_start(header, random_id(), random_id());
        first.trace_from_header = trace.parent_span_id.is_some();
        first.trace = Some(trace);
    }
    // A session the request names, in case no handler confirms one.
    let named_session = request.headers().get(SESSION_HEADER).cloned();
    let (response, note, principal) = match checked(&gw, &mut request).await {
        Ok(client) => {
            let principal = request.extensions().get::<Arc<Principal>>().cloned();
            let handled = NOTE.scope(
                RefCell::new(first),
                fairness::for_client(client, next.run(request)),
            );
            tokio::pin!(handled);
            let response = handled.as_mut().await;
            let note = handled.as_mut().take_value().map(RefCell::into_inner);
            (response, note.unwrap_or_default(), principal)
        }
        Err(refusal) => (refusal.into_response(), first, None),
    };
    // A new session's id is in the answer's header; a request in a session
    // that was served (a GET stream, a DELETE) names it in its own.
    let session = note.session.clone().or_else(|| {
        let served = response.status().is_success();
        response
            .headers()
            .get(SESSION_HEADER)
            .or(named_session.as_ref().filter(|_| served))
            .and_then(|v| v.to_str().ok())
            .map(Arc::from)
    });
    report(
        &gw,
        &server_name(uri.path()),
        principal.as_deref(),
        &http_method,
        Noted {
            note,
            session,
            started_at,
        },
        &response,
        started,
    );
    guard::finish(screened, response).await
}

/// W3C Trace Context's request header.
const TRACEPARENT: &str = "traceparent";

/// A random span or trace id; never all zeros (an invalid id).
fn random_id<const N: usize>() -> [u8; N] {
    loop {
        let id: [u8; N] = rand::random();
        if id != [0; N] {
            return id;
        }
    }
}

/// What the request's handling noted, and what the layer adds to it.
struct Noted {
    note: Note,
    session: Option<Arc<str>>,
    started_at: SystemTime,
}

/// Reports the request to the gateway's telemetry. Requests for servers
/// that do not exist are not reported: the name is the client's choice.
fn report(
    gw: &Gateway,
    server: &str,
    principal: Option<&Principal>,
    http_method: &Method,
    noted: Noted,
    response: &Response,
    started: Instant,
) {
    let Noted {
        note,
        session,
        started_at,
    } = noted;
    let Ok(target) = gw.server(server) else {
        return;
    };
    // Through a federated endpoint, a tool call counts for the member's tool.
    let member = target
        .spec
        .federation
        .as_ref()
        .zip(note.tool.as_deref())
        .and_then(|(federation, tool)| federation.member_tool(tool));
    let (server, tool) = match &member {
        Some((member, tool)) => (*member, Some(tool.as_str())),
        None => (server, note.tool.as_deref()),
    };
    let status = response.status();
    let method = note.method.or(match *http_method {
        Method::GET => Some("GET"),
        Method::DELETE => Some("DELETE"),
        _ => None,
    });
    let outcome = note.outcome.unwrap_or(if status.is_success() {
        Outcome::Ok
    } else {
        Outcome::Refused
    });
    gw.telemetry().request(&RequestRecord {
        server,
        principal: principal.map(|p| &*p.id),
        method,
        tool,
        era: note.era,
        status: status.as_u16(),
        outcome,
        total: started.elapsed(),
        upstream: note.upstream,
        bytes_in: note.bytes_in,
        bytes_out: response.body().size_hint().exact().unwrap_or(0),
        started_at,
        trace: note.trace,
        session: session.as_deref(),
        error_code: note.error_code,
    });
}

/// Authentication, then the client's rate; `Ok` with the client to count
/// sessions against.
async fn checked(gw: &Gateway, request: &mut Request) -> Result<Option<Arc<str>>, Refusal> {
    if gw.config().auth.is_some() {
        // A Uri clone shares its bytes; the name borrows from it.
        let uri = request.uri().clone();
        authz::authenticate(gw, &server_name(uri.path()), request).await?;
    }
    fairness::admit(gw.rate_limiter(), request)
}

/// The server a request is for: the segment after `/mcp/` or `/sse/`
/// (percent-decoded, as the router's `{name}` is).
fn server_name(path: &str) -> Cow<'_, str> {
    let rest = path
        .strip_prefix("/mcp/")
        .or_else(|| path.strip_prefix("/sse/"))
        .unwrap_or_default();
    let segment = rest.split('/').next().unwrap_or_default();
    percent_encoding::percent_decode_str(segment).decode_utf8_lossy()
}

#[cfg(test)]
mod tests {
    use super::server_name;

    #[test]
    fn the_server_name_is_the_segment_after_the_endpoint() {
        assert_eq!(server_name("/mcp/echo"), "echo");
        assert_eq!(server_name("/sse/echo"), "echo");
        assert_eq!(server_name("/sse/echo/messages"), "echo");
        assert_eq!(server_name("/mcp/my%2Dserver"), "my-server");
        assert_eq!(server_name("/healthz"), "");
    }
}
