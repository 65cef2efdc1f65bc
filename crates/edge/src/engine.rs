//! The request engine of the session eras: a request sent to a session's
//! process, what the process says about it merged under one deadline (pushed
//! back by progress), and the answer as JSON or, once anything else comes
//! first, as a resumable SSE stream. Streamable HTTP sessions and the legacy
//! HTTP+SSE transport both run on it; the 2026-07-28 relay shares its
//! [`Deadline`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_auth::Principal;
use berth_fleet::{Delivery, Exchange, Lease, OnCrash};
use berth_wire::{ErrorCode, IdKey, Message};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::{BoxStream, SelectAll};
use tokio::time::Instant;

use crate::authz::{ToolFilter, Verdict, authorize};
use crate::error::EdgeError;
use crate::gateway::Gateway;
use crate::observe;
use crate::reply::{Refusal, echo_id, json, written_id};
use crate::session::Session;

/// A request sent upstream, its bytes (to answer it with its id as written,
/// read only if Berth must answer it itself), and the process it went to.
pub(crate) struct Call {
    exchange: Exchange,
    request: Bytes,
    lease: Arc<Lease>,
    /// Hides tools the caller may not call from a `tools/list` answer.
    filter: Option<ToolFilter>,
    /// A `tools/call` (its first answer is the session's first result).
    tool_call: bool,
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
    observe::note_session(&session.id);
    // When tracing, the server is told this request's span.
    let traced = observe::traced(msg);
    let sent = traced.as_ref().unwrap_or(msg);
    let mut lease = session.lease();
    let mut rebound = false;
    loop {
        match lease.call(sent) {
            Ok(exchange) => {
                return Ok(Call {
                    exchange,
                    request: msg.bytes.clone(),
                    lease,
                    filter,
                    tool_call: msg.method() == Some("tools/call"),
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
                        Err(why) => return Err(session_gone(gw, session, &lease, &why)),
                    }
                }
                return Err(session_gone(gw, session, &lease, &failure.message));
            }
            // A server that stopped reading its input (503: retry later),
            // or a request it cannot take (a duplicate id: 400).
            Err(failure) => {
                return Err(EdgeError::Upstream(failure).refusal(echo_id(msg).as_deref()));
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
    observe::note_session(&session.id);
    let mut lease = session.lease();
    // A pre-initialized process got `initialized` from Berth already.
    if lease.init.is_some() && msg.method() == Some("notifications/initialized") {
        return Ok(());
    }
    if lease.closed().is_some() && replays(session, &lease) {
        gw.replace_crashed(session, &lease)
            .await
            .map_err(|why| session_gone(gw, session, &lease, &why))?;
        lease = session.lease();
    }
    lease.send(msg).map_err(|failure| {
        if failure.code == ErrorCode::UNAVAILABLE {
            EdgeError::Upstream(failure).refusal(None)
        } else {
            session_gone(gw, session, &lease, &failure.message)
        }
    })
}

/// 404 for a session whose process is gone, so the client re-initializes:
/// when the process died, the answer says how (and later requests too).
fn session_gone(gw: &Gateway, session: &Arc<Session>, lease: &Lease, why: &str) -> Refusal {
    let error = match lease.closed() {
        Some(failure) if lease.crashed() => {
            if why != failure.message {
                tracing::warn!(session = %session.id, "ending the session after its process died: {why}");
            }
            tokio::spawn(gw.end_session_died(session, failure.clone()));
            EdgeError::ProcessDied(failure)
        }
        _ => {
            tokio::spawn(gw.end_session(session, why));
            EdgeError::SessionNotFound(format!(
                "Session not found: the session ended ({why}); initialize a new one"
            ))
        }
    };
    error.refusal(None)
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
    let mut calls = Calls::new(calls, gw.config().request_timeout);
    while let Some(out) = calls.next(&session).await {
        match out {
            Out::Final(bytes) => ready.push(bytes),
            Out::Interim(bytes) => {
                let cap = gw.config().replay();
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
    cap: crate::config::Replay,
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
    fn many(exchanges: Vec<Exchange>) -> Merged {
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

/// How long a request may wait for its answer: `request_timeout` after
/// it was sent or after its last progress, and never more than ten times that.
pub(crate) struct Deadline {
    timeout: Duration,
    at: Instant,
    hard: Instant,
}

impl Deadline {
    pub(crate) fn new(timeout: Duration) -> Deadline {
        let now = Instant::now();
        Deadline {
            timeout,
            at: now + timeout,
            hard: now + timeout * 10,
        }
    }

    pub(crate) fn at(&self) -> Instant {
        self.at
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The server reported progress: it gets another `timeout`.
    pub(crate) fn progressed(&mut self) {
        self.at = (Instant::now() + self.timeout).min(self.hard);
    }
}

/// The requests of one POST, merged, under one deadline.
pub(crate) struct Calls {
    merged: Merged,
    /// Per call, in the order of the POST.
    pending: Vec<Pending>,
    started: Instant,
    open: usize,
    deadline: Deadline,
    queue: VecDeque<Out>,
}

/// One call of a POST: its id as matched, the request, the process it went
/// to, the filter for its answer, and whether it has been answered.
struct Pending {
    key: IdKey,
    request: Bytes,
    lease: Arc<Lease>,
    filter: Option<ToolFilter>,
    tool_call: bool,
    settled: bool,
}

impl Calls {
    pub(crate) fn new(calls: Vec<Call>, timeout: Duration) -> Calls {
        let now = Instant::now();
        let open = calls.len();
        let mut pending = Vec::with_capacity(open);
        // The common single call is merged without a vector of exchanges.
        let mut single = None;
        let mut many = Vec::new();
        for call in calls {
            pending.push(Pending {
                key: call.exchange.id().clone(),
                request: call.request,
                lease: call.lease,
                filter: call.filter,
                tool_call: call.tool_call,
                settled: false,
            });
            if open == 1 {
                single = Some(call.exchange);
            } else {
                many.push(call.exchange);
            }
        }
        Calls {
            merged: if open == 1 {
                Merged::One(single)
            } else {
                Merged::many(many)
            },
            pending,
            open,
            deadline: Deadline::new(timeout),
            queue: VecDeque::new(),
            started: now,
        }
    }

    /// The id of call `i` as the client wrote it.
    fn raw_id(&self, i: usize) -> String {
        let call = &self.pending[i];
        written_id(&call.request).unwrap_or_else(|| call.key.to_json())
    }

    fn settle(&mut self, i: usize) -> bool {
        let call = &mut self.pending[i];
        if std::mem::replace(&mut call.settled, true) {
            return false;
        }
        self.open -= 1;
        call.lease.record_latency(self.started.elapsed());
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
            match tokio::time::timeout_at(self.deadline.at(), self.merged.next()).await {
                Ok(Some((i, Some(Delivery::Message(m))))) => {
                    if m.method() == Some("notifications/progress") {
                        self.deadline.progressed();
                    }
                    if let Some(m) = session.screen(&self.pending[i].lease, m) {
                        return Some(Out::Interim(m.bytes));
                    }
                }
                Ok(Some((i, Some(Delivery::Response(m))))) => {
                    self.settle(i);
                    observe::note_answer(&m.bytes, self.started.elapsed());
                    if self.pending[i].tool_call {
                        session.first_tool_result();
                    }
                    return Some(Out::Final(match &self.pending[i].filter {
                        Some(filter) => filter.apply(m.bytes),
                        None => m.bytes,
                    }));
                }
                Ok(Some((i, Some(Delivery::Failed(f))))) => {
                    self.settle(i);
                    let answer = EdgeError::Upstream(f).body(Some(&self.raw_id(i)));
                    observe::note_answer(&answer, self.started.elapsed());
                    return Some(Out::Final(answer));
                }
                Ok(Some((i, None))) => {
                    self.settle(i);
                }
                Ok(None) => self.open = 0,
                Err(_) => {
                    let message = format!(
                        "Request timed out: server `{}` did not answer within {} (request_timeout); the request was cancelled",
                        session.server.spec.name,
                        humanize(self.deadline.timeout())
                    );
                    for i in 0..self.pending.len() {
                        if self.settle(i) {
                            let call = &self.pending[i];
                            call.lease
                                .cancel(&call.key, "request timed out at the gateway");
                            let id = self.raw_id(i);
                            let answer = EdgeError::Timeout(message.clone()).body(Some(&id));
                            observe::note_answer(&answer, self.started.elapsed());
                            self.queue.push_back(Out::Final(answer));
                        }
                    }
                }
            }
        }
    }
}

/// A timeout as operators write it in the configuration ("60s", "1m 30s", "500ms").
pub(crate) fn humanize(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_read_as_configured() {
        assert_eq!(humanize(Duration::from_secs(60)), "1m");
        assert_eq!(humanize(Duration::from_millis(1500)), "1s 500ms");
        assert_eq!(humanize(Duration::from_millis(300)), "300ms");
    }
}
