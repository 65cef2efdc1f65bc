//! Streamable HTTP: POST, GET and DELETE on `/mcp/<name>`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_auth::Principal;
use berth_fleet::{Delivery, Exchange, Lease, OnCrash};
use berth_wire::{
    ErrorCode, IdKey, Kind, Message, ProtocolVersion, error_response, to_single_line,
};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::{BoxStream, SelectAll};
use serde_json::value::RawValue;
use tokio::time::Instant;

use crate::authz::{ToolFilter, Verdict, authorize};
use crate::error::EdgeError;
use crate::gateway::{Gateway, Server};
use crate::modern;
use crate::reply::{Refusal, Reply, failure_body, json};
use crate::session::{SESSION_HEADER, STANDALONE, Session};

use crate::modern::VERSION_HEADER;
const LAST_EVENT_ID: &str = "last-event-id";

/// The caller, when the gateway authenticates (set by [`crate::authz::authenticate`]).
pub(crate) type Caller = Option<Extension<Arc<Principal>>>;

pub(crate) async fn post(
    State(gw): State<Arc<Gateway>>,
    Path(name): Path<String>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let caller = caller.map(|Extension(p)| p);
    post_inner(gw, &name, caller, headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn post_inner(
    gw: Arc<Gateway>,
    name: &str,
    caller: Option<Arc<Principal>>,
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
        return modern::post(gw, server, caller, &headers, msg).await;
    }
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return post_batch(gw, &server, caller.as_ref(), &headers, body).await;
    }
    let msg = Message::parse(body).map_err(|e| EdgeError::from(e).refusal(None))?;
    if msg.kind == Kind::Request && msg.method() == Some("initialize") {
        return initialize(gw, &server, caller, &headers, msg).await;
    }
    let session = session_for(&gw, &server, caller.as_deref(), &headers)?;
    check_version(&headers)?;
    session.touch();
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
            Err(e) => ready.push(error_response(None, e.code(), &e.to_string(), None)),
            Ok(msg) if msg.method() == Some("initialize") => ready.push(error_response(
                msg.raw_id().as_deref(),
                ErrorCode::INVALID_REQUEST,
                "Invalid Request: initialize must not be part of a batch",
                None,
            )),
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
    headers: &HeaderMap,
    msg: Message,
) -> Reply {
    let raw_id = msg.raw_id();
    if headers.contains_key(SESSION_HEADER) {
        return Err(EdgeError::InvalidRequest("Bad Request: initialize must be sent without an Mcp-Session-Id header; it starts a new session".into()).refusal(raw_id.as_deref()));
    }
    let session = gw.start_session(server, false, caller).await?;
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
    let mut exchange = match lease.call(&msg) {
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
                session.push(STANDALONE, &m.bytes, gw.config().replay_buffer)
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
    Path(name): Path<String>,
    caller: Caller,
    headers: HeaderMap,
) -> Response {
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
    Path(name): Path<String>,
    caller: Caller,
    headers: HeaderMap,
) -> Response {
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

/// A request sent upstream, the id to answer it with, and the process it went to.
pub(crate) struct Call {
    exchange: Exchange,
    raw_id: String,
    lease: Arc<Lease>,
    /// Hides tools the caller may not call from a `tools/list` answer.
    filter: Option<ToolFilter>,
}

/// Sends a request to the session's process. If the process crashed and the
/// server replays, the session is re-bound to a fresh one first.
pub(crate) async fn call(
    gw: &Arc<Gateway>,
    session: &Arc<Session>,
    caller: Option<&Arc<Principal>>,
    msg: &Message,
) -> Result<Call, Refusal> {
    // The scopes of this request's token, not the session opener's: a client
    // that stepped up to more scopes uses them at once.
    let filter = match authorize(gw, &session.server.spec.name, caller, msg)? {
        Verdict::Allow => None,
        Verdict::Filter(filter) => Some(filter),
    };
    let mut lease = session.lease();
    let mut rebound = false;
    loop {
        match lease.call(msg) {
            Ok(exchange) => {
                return Ok(Call {
                    exchange,
                    raw_id: msg.raw_id().unwrap_or_else(|| "null".into()),
                    lease,
                    filter,
                });
            }
            Err(failure) if lease.closed().is_some() => {
                if !rebound && replays(session, &lease) {
                    rebound = true;
                    match gw.replace_crashed(session, &lease).await {
                        Ok(()) => {
                            lease = session.lease();
                            continue;
                        }
                        Err(why) => return Err(session_gone(gw, session, &why)),
                    }
                }
                return Err(session_gone(gw, session, &failure.message));
            }
            // A server that stopped reading its input (503: retry later),
            // or a request it cannot take (a duplicate id: 400).
            Err(failure) => {
                return Err(EdgeError::Upstream(failure).refusal(msg.raw_id().as_deref()));
            }
        }
    }
}

fn replays(session: &Session, lease: &Lease) -> bool {
    lease.crashed()
        && session.server.spec.on_crash == OnCrash::Replay
        && !session.ended.is_cancelled()
}

/// Sends a notification or a response to the session's process.
pub(crate) async fn forward(
    gw: &Arc<Gateway>,
    session: &Arc<Session>,
    msg: &Message,
) -> Result<(), Refusal> {
    let mut lease = session.lease();
    // A pre-initialized process got `initialized` from Berth already.
    if lease.init.is_some() && msg.method() == Some("notifications/initialized") {
        return Ok(());
    }
    if lease.closed().is_some() && replays(session, &lease) {
        gw.replace_crashed(session, &lease)
            .await
            .map_err(|why| session_gone(gw, session, &why))?;
        lease = session.lease();
    }
    lease.send(msg).map_err(|failure| {
        if failure.code == ErrorCode::UNAVAILABLE {
            EdgeError::Upstream(failure.clone()).refusal(None)
        } else {
            session_gone(gw, session, &failure.message)
        }
    })
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

/// 404 for a session whose process is gone, so the client re-initializes.
fn session_gone(gw: &Gateway, session: &Arc<Session>, why: &str) -> Refusal {
    tokio::spawn(gw.end_session(session, why));
    EdgeError::SessionNotFound(format!(
        "Session not found: the session ended ({why}); initialize a new one"
    ))
    .refusal(None)
}

/// Waits for the answers to `calls`. Answers as JSON when they come first
/// (the common case); switches to an SSE stream as soon as the server sends
/// anything else first (progress, logging, sampling, elicitation...).
pub(crate) async fn respond(
    gw: Arc<Gateway>,
    session: Arc<Session>,
    calls: Vec<Call>,
    batch: bool,
    mut ready: Vec<Bytes>,
) -> Response {
    let mut calls = Calls::new(&session, calls, gw.config().request_timeout);
    while let Some(out) = calls.next(&session).await {
        match out {
            Out::Final(bytes) => ready.push(bytes),
            Out::Interim(bytes) => {
                let cap = gw.config().replay_buffer;
                let stream = session.open_stream();
                let priming = session.priming(stream, 0, gw.config().sse_retry);
                for answer in &ready {
                    session.push(stream, answer, cap);
                }
                session.push(stream, &bytes, cap);
                tokio::spawn(pump(session.clone(), stream, calls, cap, true));
                return session.sse(stream, 0, priming);
            }
        }
    }
    match (batch, ready.len()) {
        // Every request was cancelled by the client: a request's POST still
        // gets one of the two content types, here a stream with no event.
        (_, 0) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            )],
        )
            .into_response(),
        (false, _) => json(StatusCode::OK, ready.swap_remove(0)),
        (true, _) => {
            let mut body = Vec::with_capacity(ready.iter().map(|b| b.len() + 1).sum::<usize>() + 2);
            body.push(b'[');
            for (i, answer) in ready.iter().enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(answer);
            }
            body.push(b']');
            json(StatusCode::OK, Bytes::from(body))
        }
    }
}

/// Moves everything the server sends about `calls` into a stream.
pub(crate) async fn pump(
    session: Arc<Session>,
    stream: u64,
    mut calls: Calls,
    cap: usize,
    finish: bool,
) {
    while let Some(out) = calls.next(&session).await {
        session.push(stream, out.bytes(), cap);
    }
    if finish {
        session.finish(stream);
    }
}

pub(crate) enum Out {
    /// A message before the answer.
    Interim(Bytes),
    /// An answer (or an error in its place).
    Final(Bytes),
}

impl Out {
    fn bytes(&self) -> &Bytes {
        match self {
            Out::Interim(b) | Out::Final(b) => b,
        }
    }
}

/// The deliveries of one or more exchanges, tagged by index; `(i, None)`
/// when exchange `i` ended without an answer (cancelled by the client).
pub(crate) enum Merged {
    /// The common case, without boxing or merging.
    One(Option<Exchange>),
    /// A batch.
    Many(SelectAll<BoxStream<'static, (usize, Option<Delivery>)>>),
}

impl Merged {
    fn new(mut exchanges: Vec<Exchange>) -> Merged {
        if exchanges.len() == 1 {
            return Merged::One(exchanges.pop());
        }
        let streams = exchanges.into_iter().enumerate().map(|(i, exchange)| {
            futures::stream::unfold(Some(exchange), move |exchange| async move {
                let mut exchange = exchange?;
                match exchange.next().await {
                    Some(d) => Some(((i, Some(d)), Some(exchange))),
                    None => Some(((i, None), None)),
                }
            })
            .boxed()
        });
        Merged::Many(streams.collect())
    }

    async fn next(&mut self) -> Option<(usize, Option<Delivery>)> {
        match self {
            Merged::One(slot) => {
                let exchange = slot.as_mut()?;
                match exchange.next().await {
                    Some(d) => Some((0, Some(d))),
                    None => {
                        *slot = None;
                        Some((0, None))
                    }
                }
            }
            Merged::Many(all) => all.next().await,
        }
    }
}

/// The requests of one POST, merged, under one deadline.
pub(crate) struct Calls {
    merged: Merged,
    /// Per call: the id, as matched and as written, and the process it went to.
    ids: Vec<(IdKey, String, Arc<Lease>)>,
    filters: Vec<Option<ToolFilter>>,
    started: Instant,
    settled: Vec<bool>,
    open: usize,
    server: String,
    timeout: Duration,
    deadline: Instant,
    /// Progress pushes the deadline back, but never past this.
    hard_deadline: Instant,
    queue: VecDeque<Out>,
}

impl Calls {
    pub(crate) fn new(session: &Session, calls: Vec<Call>, timeout: Duration) -> Calls {
        let now = Instant::now();
        let mut ids = Vec::with_capacity(calls.len());
        let mut exchanges = Vec::with_capacity(calls.len());
        let mut filters = Vec::with_capacity(calls.len());
        for call in calls {
            ids.push((call.exchange.id().clone(), call.raw_id, call.lease));
            exchanges.push(call.exchange);
            filters.push(call.filter);
        }
        let merged = Merged::new(exchanges);
        Calls {
            merged,
            settled: vec![false; ids.len()],
            filters,
            open: ids.len(),
            ids,
            server: session.server.spec.name.clone(),
            timeout,
            deadline: now + timeout,
            hard_deadline: now + timeout * 10,
            queue: VecDeque::new(),
            started: now,
        }
    }

    fn settle(&mut self, i: usize) -> bool {
        if std::mem::replace(&mut self.settled[i], true) {
            return false;
        }
        self.open -= 1;
        self.ids[i].2.record_latency(self.started.elapsed());
        true
    }

    pub(crate) async fn next(&mut self, session: &Session) -> Option<Out> {
        loop {
            if let Some(out) = self.queue.pop_front() {
                return Some(out);
            }
            if self.open == 0 {
                return None;
            }
            match tokio::time::timeout_at(self.deadline, self.merged.next()).await {
                Ok(Some((i, Some(Delivery::Message(m))))) => {
                    if m.method() == Some("notifications/progress") {
                        self.deadline = (Instant::now() + self.timeout).min(self.hard_deadline);
                    }
                    if let Some(m) = session.screen(&self.ids[i].2, m) {
                        return Some(Out::Interim(m.bytes));
                    }
                }
                Ok(Some((i, Some(Delivery::Response(m))))) => {
                    self.settle(i);
                    return Some(Out::Final(match &self.filters[i] {
                        Some(filter) => filter.apply(m.bytes),
                        None => m.bytes,
                    }));
                }
                Ok(Some((i, Some(Delivery::Failed(f))))) => {
                    self.settle(i);
                    return Some(Out::Final(failure_body(Some(&self.ids[i].1), &f)));
                }
                Ok(Some((i, None))) => {
                    self.settle(i);
                }
                Ok(None) => self.open = 0,
                Err(_) => {
                    let message = format!(
                        "Request timed out: server `{}` did not answer within {} (request_timeout); the request was cancelled",
                        self.server,
                        humanize(self.timeout)
                    );
                    for i in 0..self.ids.len() {
                        if self.settle(i) {
                            self.ids[i]
                                .2
                                .cancel(&self.ids[i].0, "request timed out at the gateway");
                            self.queue.push_back(Out::Final(error_response(
                                Some(&self.ids[i].1),
                                ErrorCode::REQUEST_TIMEOUT,
                                &message,
                                None,
                            )));
                        }
                    }
                }
            }
        }
    }
}

pub(crate) fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// The session a request names: 400 without the header, 404 when unknown.
pub(crate) fn session_for(
    gw: &Gateway,
    server: &Arc<Server>,
    caller: Option<&Principal>,
    headers: &HeaderMap,
) -> Result<Arc<Session>, Refusal> {
    let Some(id) = headers.get(SESSION_HEADER) else {
        return Err(EdgeError::InvalidRequest("Bad Request: missing Mcp-Session-Id header; send initialize first and echo the session id it returns".into()).refusal(None));
    };
    id.to_str()
        .ok()
        .and_then(|id| gw.session(id))
        // Another principal's session is as unknown as one that never existed.
        .filter(|s| {
            s.server.spec.name == server.spec.name
                && !s.legacy
                && !s.ended.is_cancelled()
                && s.owned_by(caller)
        })
        .ok_or_else(|| {
            EdgeError::SessionNotFound(
                "Session not found: unknown or ended Mcp-Session-Id; initialize a new session"
                    .into(),
            )
            .refusal(None)
        })
}

fn check_version(headers: &HeaderMap) -> Result<(), Refusal> {
    let Some(value) = headers.get(VERSION_HEADER) else {
        return Ok(());
    };
    match value.to_str().ok().and_then(ProtocolVersion::parse) {
        Some(_) => Ok(()),
        None => Err(EdgeError::InvalidRequest(format!(
            "Bad Request: unsupported MCP-Protocol-Version {value:?}; this gateway supports {}",
            ProtocolVersion::supported_list()
        ))
        .refusal(None)),
    }
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
fn accepts(headers: &HeaderMap, mime: &str) -> bool {
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
    Ok(first.unwrap_or_else(|| Bytes::from(rest)))
}
