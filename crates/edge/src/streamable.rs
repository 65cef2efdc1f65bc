//! Streamable HTTP: POST, GET and DELETE on `/mcp/<name>`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Extension, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_auth::Principal;
use berth_fleet::Delivery;
use berth_wire::{Kind, Message, ProtocolVersion, to_single_line};
use bytes::Bytes;
use serde_json::value::RawValue;
use tokio::time::Instant;

use crate::authz::ExchangeToken;
use crate::engine::{call, forward, humanize, respond};
use crate::error::EdgeError;
use crate::gateway::Gateway;
use crate::headers::{LAST_EVENT_ID, SESSION_HEADER, VERSION_HEADER};
use crate::inbound::{Caller, accepts, check_content_type, read_body, server_name};
use crate::modern;
use crate::observe;
use crate::reply::{Refusal, Reply, echo_id, json};
use crate::server::Server;
use crate::session::{STANDALONE, Session};
use berth_telemetry::Era;

pub(crate) async fn post(
    State(gw): State<Arc<Gateway>>,
    name: Result<Path<String>, PathRejection>,
    caller: Caller,
    token: Option<Extension<ExchangeToken>>,
    // The request itself rather than `HeaderMap` + `Body`: that extractor
    // copies every header, on every call.
    request: Request,
) -> Response {
    let name = match server_name(name) {
        Ok(name) => name,
        Err(refusal) => return refusal.into_response(),
    };
    let caller = caller.map(|Extension(p)| p);
    let token = token.map(|Extension(t)| t);
    let (parts, body) = request.into_parts();
    post_inner(gw, &name, caller, token, parts.headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn post_inner(
    gw: Arc<Gateway>,
    name: &str,
    caller: Option<Arc<Principal>>,
    token: Option<ExchangeToken>,
    headers: HeaderMap,
    body: Body,
) -> Reply {
    let server = gw.server(name)?.clone();
    if !(accepts(&headers, "application/json") && accepts(&headers, "text/event-stream")) {
        return Err(EdgeError::NotAcceptable("Not Acceptable: the client must accept both application/json and text/event-stream (Accept header)".into()).refusal(None));
    }
    check_content_type(&headers)?;
    let body = to_single_line(read_body(&headers, body, gw.config().max_body_bytes).await?);

    if modern::is_stateless(&headers, &body) {
        let msg = Message::parse(body).map_err(|e| EdgeError::from(e).refusal(None))?;
        observe::note_message(&msg);
        observe::note(|n| n.era = Era::Modern);
        return modern::post(gw, server, caller, &headers, msg).await;
    }
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return post_batch(gw, &server, caller.as_ref(), &headers, body).await;
    }
    let msg = Message::parse(body).map_err(|e| EdgeError::from(e).refusal(None))?;
    observe::note_message(&msg);
    if msg.kind == Kind::Request && msg.method() == Some("initialize") {
        return initialize(gw, &server, caller, token.as_ref(), &headers, msg).await;
    }
    // Refusals from here on answer a parsed request: echo its id as written.
    let refuse = |e: EdgeError| e.refusal(echo_id(&msg).as_deref());
    let session = find_session(&gw, &server, caller.as_deref(), &headers).map_err(refuse)?;
    version_error(&headers).map_or(Ok(()), |e| Err(refuse(e)))?;
    session.touch();
    if let Some(token) = &token {
        session.lease().present_caller_token(&token.0);
    }
    match msg.kind {
        Kind::Request => {
            let call = call(&gw, &session, caller.as_ref(), &msg).await?;
            Ok(respond(gw, session, vec![call], false, Vec::new()).await)
        }
        Kind::Notification | Kind::Response => {
            forward(&gw, &session, &msg).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
    }
}

/// A JSON-RPC batch, accepted from 2025-03-26 sessions only.
async fn post_batch(
    gw: Arc<Gateway>,
    server: &Arc<Server>,
    caller: Option<&Arc<Principal>>,
    headers: &HeaderMap,
    body: Bytes,
) -> Reply {
    let items: Vec<&RawValue> = serde_json::from_slice(&body).map_err(|e| {
        let message = format!("Parse error: the body is not valid JSON ({e})");
        EdgeError::Parse(message).refusal(None)
    })?;
    if items.is_empty() {
        return Err(EdgeError::InvalidRequest("Invalid Request: empty batch".into()).refusal(None));
    }
    let session = session_for(&gw, server, caller.map(|p| &**p), headers)?;
    check_version(headers)?;
    if !session.version().allows_batches() {
        return Err(EdgeError::InvalidRequest(format!(
            "Invalid Request: JSON-RPC batches are not part of MCP {}; send one message per POST",
            session.version()
        ))
        .refusal(None));
    }
    session.touch();
    let (mut calls, mut ready) = (Vec::new(), Vec::new());
    for item in items {
        match Message::parse(Bytes::copy_from_slice(item.get().as_bytes())) {
            Err(e) => ready.push(EdgeError::from(e).body(None)),
            Ok(msg) if msg.method() == Some("initialize") => ready.push(
                EdgeError::InvalidRequest(
                    "Invalid Request: initialize must not be part of a batch".into(),
                )
                .body(echo_id(&msg).as_deref()),
            ),
            Ok(msg) if msg.kind == Kind::Request => match call(&gw, &session, caller, &msg).await {
                Ok(c) => calls.push(c),
                Err(r) => return Err(r),
            },
            Ok(msg) => forward(&gw, &session, &msg).await?,
        }
    }
    if calls.is_empty() && ready.is_empty() {
        return Ok(StatusCode::ACCEPTED.into_response());
    }
    Ok(respond(gw, session, calls, true, ready).await)
}

async fn initialize(
    gw: Arc<Gateway>,
    server: &Arc<Server>,
    caller: Option<Arc<Principal>>,
    token: Option<&ExchangeToken>,
    headers: &HeaderMap,
    msg: Message,
) -> Reply {
    let raw_id = echo_id(&msg);
    if headers.contains_key(SESSION_HEADER) {
        return Err(EdgeError::InvalidRequest("Bad Request: initialize must be sent without an Mcp-Session-Id header; it starts a new session".into()).refusal(raw_id.as_deref()));
    }
    let session = gw.start_session(server, false, caller).await?;
    if let Some(token) = token {
        session.lease().present_caller_token(&token.0);
    }
    // If the client gives up before the answer, the process must not linger.
    let mut abandoned = EndIfAbandoned(Some((gw.clone(), session.clone())));
    let hello = session.set_hello(&msg);
    let lease = session.lease();
    if let Some(init) = &lease.init {
        // A pre-initialized process: answer from its own initialize result,
        // at the version negotiated with this client.
        let version = init.negotiate(hello.protocol_version.as_deref());
        session.set_version(ProtocolVersion::parse(&version).unwrap_or(ProtocolVersion::LATEST));
        let answer = init.response(raw_id.as_deref().unwrap_or("null"), &version);
        lease.mark_healthy();
        gw.register(&session);
        abandoned.0 = None;
        return Ok(with_session_header(json(StatusCode::OK, answer), &session));
    }
    // When tracing, the server's initialize joins the trace too.
    let traced = observe::traced(&msg);
    let mut exchange = match lease.call(traced.as_ref().unwrap_or(&msg)) {
        Ok(exchange) => exchange,
        Err(failure) => {
            gw.end_session(&session, &failure.message).await;
            return Err(EdgeError::Upstream(failure.clone()).refusal(raw_id.as_deref()));
        }
    };
    let timeout = gw.config().request_timeout;
    let deadline = Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, exchange.next()).await {
            // Only ping and logging may precede the answer; keep them for the GET stream.
            Ok(Some(Delivery::Message(m))) => {
                session.push(STANDALONE, &m.bytes, gw.config().replay())
            }
            Ok(Some(Delivery::Response(m))) => {
                let envelope = berth_wire::Envelope::parse(&m.bytes).ok();
                let result = envelope.as_ref().and_then(|e| e.result);
                let Some(result) = result else {
                    // The server refused to initialize: relay its error, keep nothing.
                    gw.end_session(&session, "the server refused initialize")
                        .await;
                    return Ok(json(StatusCode::OK, m.bytes));
                };
                let negotiated = berth_wire::initialize_result_version(result);
                let version = negotiated
                    .as_deref()
                    .and_then(ProtocolVersion::parse)
                    .unwrap_or(ProtocolVersion::LATEST);
                session.set_version(version);
                lease.mark_healthy();
                gw.register(&session);
                abandoned.0 = None;
                return Ok(with_session_header(json(StatusCode::OK, m.bytes), &session));
            }
            Ok(Some(Delivery::Failed(failure))) => {
                gw.end_session(&session, &failure.message).await;
                return Err(EdgeError::Upstream(failure.clone()).refusal(raw_id.as_deref()));
            }
            Ok(None) => {
                gw.end_session(&session, "initialize was cancelled").await;
                return Err(EdgeError::UpstreamFailed("initialize was cancelled".into())
                    .refusal(raw_id.as_deref()));
            }
            Err(_) => {
                let message = format!(
                    "Gateway Timeout: server `{}` did not answer initialize within {} (request_timeout)",
                    server.spec.name,
                    humanize(timeout)
                );
                gw.end_session(&session, &message).await;
                return Err(EdgeError::Timeout(message).refusal(raw_id.as_deref()));
            }
        }
    }
}

pub(crate) async fn get(
    State(gw): State<Arc<Gateway>>,
    name: Result<Path<String>, PathRejection>,
    caller: Caller,
    headers: HeaderMap,
) -> Response {
    let name = match server_name(name) {
        Ok(name) => name,
        Err(refusal) => return refusal.into_response(),
    };
    let caller = caller.map(|Extension(p)| p);
    get_inner(gw, &name, caller.as_deref(), headers).unwrap_or_else(IntoResponse::into_response)
}

fn get_inner(
    gw: Arc<Gateway>,
    name: &str,
    caller: Option<&Principal>,
    headers: HeaderMap,
) -> Reply {
    let server = gw.server(name)?.clone();
    if !headers.contains_key(SESSION_HEADER) && modern::is_stateless_get(&headers) {
        return Ok(modern::method_not_allowed());
    }
    if !accepts(&headers, "text/event-stream") {
        return Err(EdgeError::NotAcceptable(
            "Not Acceptable: a GET opens an SSE stream; the client must accept text/event-stream"
                .into(),
        )
        .refusal(None));
    }
    let session = session_for(&gw, &server, caller, &headers)?;
    check_version(&headers)?;
    session.touch();
    if let Some(last) = headers.get(LAST_EVENT_ID) {
        let parsed =
            last.to_str()
                .ok()
                .and_then(|s| s.split_once('-'))
                .and_then(|(stream, seq)| {
                    Some((stream.parse::<u64>().ok()?, seq.parse::<u64>().ok()?))
                });
        return match parsed {
            Some((stream, seq)) if session.has_stream(stream) => Ok(session.sse(stream, seq, None)),
            _ => Err(EdgeError::InvalidRequest(format!(
                    "Bad Request: Last-Event-ID {last:?} names no stream of this session (it may have expired); open a new stream without it"
                )).refusal(None)),
        };
    }
    let Some(cursor) = session.standalone_cursor() else {
        return Err(EdgeError::Conflict(
            "Conflict: this session already has an open GET stream; only one is allowed".into(),
        )
        .refusal(None));
    };
    let priming = session.priming(STANDALONE, cursor, gw.config().sse_retry);
    Ok(session.sse(STANDALONE, cursor, priming))
}

pub(crate) async fn delete(
    State(gw): State<Arc<Gateway>>,
    name: Result<Path<String>, PathRejection>,
    caller: Caller,
    headers: HeaderMap,
) -> Response {
    let name = match server_name(name) {
        Ok(name) => name,
        Err(refusal) => return refusal.into_response(),
    };
    let caller = caller.map(|Extension(p)| p);
    let run = || -> Reply {
        let server = gw.server(&name)?.clone();
        if !headers.contains_key(SESSION_HEADER) && modern::is_stateless_get(&headers) {
            return Ok(modern::method_not_allowed());
        }
        let session = session_for(&gw, &server, caller.as_deref(), &headers)?;
        // Removed now; the process is stopped and reaped in the background.
        tokio::spawn(gw.end_session(&session, "the client ended the session (DELETE)"));
        Ok(StatusCode::OK.into_response())
    };
    run().unwrap_or_else(IntoResponse::into_response)
}

/// Ends a session that was never handed to its client (the request was dropped).
struct EndIfAbandoned(Option<(Arc<Gateway>, Arc<Session>)>);

impl Drop for EndIfAbandoned {
    fn drop(&mut self) {
        if let Some((gw, session)) = self.0.take()
            && !session.ended.is_cancelled()
        {
            tokio::spawn(gw.end_session(&session, "the client went away during initialize"));
        }
    }
}

fn with_session_header(mut response: Response, session: &Session) -> Response {
    if let Ok(id) = HeaderValue::from_str(&session.id) {
        response.headers_mut().insert(SESSION_HEADER, id);
    }
    response
}

/// The session a request names: 400 without the header, 404 when unknown.
pub(crate) fn session_for(
    gw: &Gateway,
    server: &Arc<Server>,
    caller: Option<&Principal>,
    headers: &HeaderMap,
) -> Result<Arc<Session>, Refusal> {
    find_session(gw, server, caller, headers).map_err(|e| e.refusal(None))
}

fn find_session(
    gw: &Gateway,
    server: &Arc<Server>,
    caller: Option<&Principal>,
    headers: &HeaderMap,
) -> Result<Arc<Session>, EdgeError> {
    let Some(id) = headers.get(SESSION_HEADER) else {
        return Err(EdgeError::InvalidRequest("Bad Request: missing Mcp-Session-Id header; send initialize first and echo the session id it returns".into()));
    };
    let id = id.to_str().unwrap_or_default();
    gw.session(id)
        // Another principal's session is as unknown as one that never existed.
        .filter(|s| {
            s.server.spec.name == server.spec.name
                && !s.legacy
                && !s.ended.is_cancelled()
                && s.owned_by(caller)
        })
        .ok_or_else(|| {
            gw.process_death(id, &server.spec.name, false, caller)
                .unwrap_or_else(|| {
                    EdgeError::SessionNotFound(
                        "Session not found: unknown or ended Mcp-Session-Id; initialize a new session"
                            .into(),
                    )
                })
        })
}

fn check_version(headers: &HeaderMap) -> Result<(), Refusal> {
    version_error(headers).map_or(Ok(()), |e| Err(e.refusal(None)))
}

fn version_error(headers: &HeaderMap) -> Option<EdgeError> {
    let value = headers.get(VERSION_HEADER)?;
    match value.to_str().ok().and_then(ProtocolVersion::parse) {
        Some(_) => None,
        None => Some(EdgeError::InvalidRequest(format!(
            "Bad Request: unsupported MCP-Protocol-Version {value:?}; this gateway supports {}",
            ProtocolVersion::supported_list()
        ))),
    }
}
