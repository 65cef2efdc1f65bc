//! One stateless request relayed to a process of the server's stateless
//! pool, and what the process says about it relayed back: a JSON answer, or
//! an SSE stream when progress or log messages come first.
//!
//! The process is shared by many clients at once, so the request's id and
//! progress token are rewritten on the way in and restored on the way out
//! (by the fleet). A client that closes its response stream cancels the
//! request: the process is sent `notifications/cancelled`, and anything it
//! says later about the request is dropped.

use std::sync::Arc;
use std::sync::LazyLock;

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use berth_fleet::{Delivery, Exchange, Lease};
use berth_wire::modern::{error_code, is_cacheable, log_level_rank, message_level};
use berth_wire::{ErrorCode, Kind, Message, SseEvent, error_response};
use bytes::Bytes;
use memchr::memmem::Finder;
use tokio::time::Instant;

use crate::authz::ToolFilter;
use crate::engine::{Deadline, humanize};
use crate::error::EdgeError;
use crate::error::status_for_code;
use crate::gateway::Gateway;
use crate::reply::json;
use crate::server::Server;
use crate::stateless::Ready;

/// Methods a handshake-era server can answer for a stateless client.
pub(crate) fn bridgeable(method: &str) -> bool {
    matches!(
        method,
        "tools/list"
            | "tools/call"
            | "resources/list"
            | "resources/templates/list"
            | "resources/read"
            | "prompts/list"
            | "prompts/get"
            | "completion/complete"
    )
}

/// What the edge knows about the request beyond its bytes.
pub(crate) struct Request {
    pub(crate) method: String,
    /// The lowest log level the client asked to hear (`_meta.logLevel`);
    /// without it, no log message reaches the client.
    pub(crate) log_level: Option<u8>,
    /// Hides tools the caller may not call from a `tools/list` answer.
    pub(crate) filter: Option<ToolFilter>,
    /// Whose secrets the process must hold (a server with per-principal
    /// secrets cannot serve such a caller from shared processes: refused).
    pub(crate) owner: Option<berth_fleet::SecretOwner>,
}

/// A request on a process. Dropped before its answer (the client went
/// away, or the request timed out), it cancels the request on the process.
pub(crate) struct InFlight {
    exchange: Exchange,
    lease: Lease,
    settled: bool,
}

impl InFlight {
    pub(crate) fn new(exchange: Exchange, lease: Lease) -> InFlight {
        InFlight {
            exchange,
            lease,
            settled: false,
        }
    }

    pub(crate) fn id(&self) -> &berth_wire::IdKey {
        self.exchange.id()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.settled {
            self.lease
                .cancel(self.exchange.id(), "the client closed the response stream");
        }
    }
}

/// What goes back to the client next.
enum Out {
    /// A notification about the request (progress, a log message).
    Interim(Bytes),
    /// The answer, and the status it would have as a JSON reply.
    Final(Bytes, StatusCode),
}

/// The relay's state between two deliveries.
struct Relay {
    gw: Arc<Gateway>,
    server: Arc<Server>,
    flight: InFlight,
    request: Request,
    raw_id: String,
    /// Stamped on a bridged server's results.
    bridge: Option<Option<String>>,
    started: Instant,
    deadline: Deadline,
    done: bool,
}

/// Relays `msg` (whose id is written `raw_id`) and answers with what the
/// process says.
pub(crate) async fn relay(
    gw: Arc<Gateway>,
    server: Arc<Server>,
    ready: &Ready,
    msg: Message,
    raw_id: String,
    request: Request,
) -> Response {
    let (lease, _) = match ready.pool.acquire_as(request.owner.as_ref()).await {
        Ok(taken) => taken,
        Err(e) => {
            return EdgeError::acquire(&server.spec.name, e)
                .refusal(Some(&raw_id))
                .into_response();
        }
    };
    // When tracing, the server is told this request's span.
    let traced = crate::observe::traced(&msg);
    let exchange = match lease.call(traced.as_ref().unwrap_or(&msg)) {
        Ok(exchange) => exchange,
        Err(failure) => {
            let error = EdgeError::Upstream(failure);
            return json(error.status(), error.body(Some(&raw_id)));
        }
    };
    let bridge = if ready.bridged() {
        let info = ready
            .discovery()
            .await
            .ok()
            .and_then(|d| d.server_info.clone());
        Some(info)
    } else {
        None
    };
    let deadline = Deadline::new(gw.config().request_timeout);
    let mut relay = Relay {
        gw,
        server,
        flight: InFlight::new(exchange, lease),
        request,
        raw_id,
        bridge,
        started: Instant::now(),
        deadline,
        done: false,
    };
    match relay.next().await {
        Some(Out::Final(bytes, status)) => json(status, bytes),
        Some(Out::Interim(first)) => relay.into_sse(first),
        None => {
            let error = EdgeError::UpstreamFailed("the request ended without an answer".into());
            json(error.status(), error.body(Some(&relay.raw_id)))
        }
    }
}

impl Relay {
    /// The next thing for the client; `None` once the answer was given.
    async fn next(&mut self) -> Option<Out> {
        if self.done {
            return None;
        }
        loop {
            let delivery =
                tokio::time::timeout_at(self.deadline.at(), self.flight.exchange.next()).await;
            match delivery {
                Ok(Some(Delivery::Message(m))) => {
                    if let Some(out) = self.interim(m) {
                        return Some(out);
                    }
                }
                Ok(Some(Delivery::Response(m))) => {
                    self.settle();
                    return Some(self.answer(m.bytes));
                }
                Ok(Some(Delivery::Failed(f))) => {
                    self.settle();
                    let error = EdgeError::Upstream(f);
                    return Some(Out::Final(error.body(Some(&self.raw_id)), error.status()));
                }
                Ok(None) => {
                    self.settle();
                    return None;
                }
                Err(_) => {
                    let message = format!(
                        "Request timed out: server `{}` did not answer within {} (request_timeout); the request was cancelled",
                        self.server.spec.name,
                        humanize(self.deadline.timeout())
                    );
                    // Dropping the flight unsettled cancels it on the process.
                    self.done = true;
                    let error = EdgeError::Timeout(message);
                    return Some(Out::Final(error.body(Some(&self.raw_id)), error.status()));
                }
            }
        }
    }

    fn settle(&mut self) {
        self.done = true;
        self.flight.settled = true;
        self.flight.lease.record_latency(self.started.elapsed());
    }

    /// What a message from the process about the request becomes.
    fn interim(&mut self, m: Message) -> Option<Out> {
        match (m.kind, m.method()) {
            (Kind::Notification, Some("notifications/progress")) => {
                self.deadline.progressed();
                Some(Out::Interim(m.bytes))
            }
            (Kind::Notification, Some("notifications/message")) => {
                let wanted = self.request.log_level?;
                let level = message_level(&m.bytes).and_then(|l| log_level_rank(&l));
                (level.unwrap_or(u8::MAX) >= wanted).then_some(Out::Interim(m.bytes))
            }
            (Kind::Request, method) => {
                // A stateless client is never sent a request: the process
                // must hear at once that nobody will answer.
                let method = method.unwrap_or_default();
                tracing::debug!(server = %self.server.spec.name, method, "refused a server request on a stateless request");
                let reply = error_response(
                    m.raw_id().as_deref(),
                    ErrorCode::METHOD_NOT_FOUND,
                    &format!(
                        "`{method}` cannot reach this client: it speaks MCP 2026-07-28, where servers ask for input with input_required results, and Berth bridges this handshake-era server without a session"
                    ),
                    None,
                );
                if let Ok(reply) = Message::parse(reply) {
                    let _ = self.flight.lease.send(&reply);
                }
                None
            }
            (_, method) => {
                tracing::debug!(server = %self.server.spec.name, method = method.unwrap_or_default(), "dropped a notification that no stateless client asked for");
                None
            }
        }
    }

    /// The process's answer as the client gets it.
    fn answer(&self, bytes: Bytes) -> Out {
        crate::observe::note_answer(&bytes, self.started.elapsed());
        let mut bytes = match &self.request.filter {
            Some(filter) => filter.apply(bytes),
            None => bytes,
        };
        // Most answers are results: read the error code only when there may be one.
        static ERROR: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"error\""));
        let code = ERROR.find(&bytes).and_then(|_| error_code(&bytes));
        if let Some(server_info) = &self.bridge {
            match code {
                None => {
                    if let Some(modern) = berth_wire::modern::modernize_result(
                        &bytes,
                        is_cacheable(&self.request.method),
                        server_info.as_deref(),
                    ) {
                        bytes = modern;
                    }
                }
                // 2026-07-28 says "resource not found" with -32602.
                Some(ErrorCode::RESOURCE_NOT_FOUND_LEGACY)
                    if self.request.method == "resources/read" =>
                {
                    if let Some(fixed) =
                        berth_wire::modern::with_error_code(&bytes, ErrorCode::INVALID_PARAMS)
                    {
                        return Out::Final(fixed, StatusCode::BAD_REQUEST);
                    }
                }
                Some(_) => {}
            }
        }
        let status = code.map_or(StatusCode::OK, status_for_code);
        Out::Final(bytes, status)
    }

    /// Streams the rest of the exchange, `first` first.
    fn into_sse(self, first: Bytes) -> Response {
        let keepalive = self.gw.config().sse_keepalive;
        let state = (
            self,
            Some(first),
            tokio::time::interval_at(Instant::now() + keepalive, keepalive),
        );
        let body = futures::stream::unfold(state, |(mut relay, first, mut tick)| async move {
            if let Some(first) = first {
                let event = SseEvent::frame(None, None, &first);
                return Some((
                    Ok::<_, std::convert::Infallible>(event),
                    (relay, None, tick),
                ));
            }
            if relay.done {
                return None;
            }
            let event = tokio::select! {
                out = relay.next() => match out? {
                    Out::Interim(b) | Out::Final(b, _) => SseEvent::frame(None, None, &b),
                },
                _ = tick.tick() => Bytes::from_static(b": keep-alive\n\n"),
            };
            Some((Ok(event), (relay, None, tick)))
        });
        crate::reply::sse(Body::from_stream(body))
    }
}
