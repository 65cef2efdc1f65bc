//! One running server and the requests in flight on it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_wire::{ErrorCode, IdKey, Kind, LineCodec, LineError, Message, ParamHeaders, Stray};
use bytes::Bytes;
use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStderr, ChildStdin, ChildStdout};
use tokio::sync::{mpsc, watch};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use crate::process::{Controls, ExitVerdict, spawn, supervise};
use crate::{LogSource, Roots, ServerLog, ServerSpec};

/// Messages from a server that concern no request in flight (boxed: they
/// are rare, and a small channel slot keeps idle sessions cheap).
/// Messages from a server that concern no request, on their way to whoever
/// holds the process (a session, the pool). Bounded in bytes: past
/// [`UNSOLICITED_BUDGET`] waiting, notifications are dropped (counted and
/// logged) and the server's own requests are answered with an error.
#[derive(Debug)]
pub struct Unsolicited {
    rx: mpsc::UnboundedReceiver<Box<Message>>,
    /// Bytes waiting, shared with the sender (`None`: a fan-out copy, whose
    /// source is budgeted instead).
    queued: Option<Arc<std::sync::atomic::AtomicUsize>>,
}

impl Unsolicited {
    /// A receiver fed by the pool's fan-out of a shared process.
    pub(crate) fn fanned_out(rx: mpsc::UnboundedReceiver<Box<Message>>) -> Unsolicited {
        Unsolicited { rx, queued: None }
    }

    pub async fn recv(&mut self) -> Option<Box<Message>> {
        let msg = self.rx.recv().await?;
        self.settle(&msg);
        Some(msg)
    }

    pub fn try_recv(&mut self) -> Result<Box<Message>, mpsc::error::TryRecvError> {
        let msg = self.rx.try_recv()?;
        self.settle(&msg);
        Ok(msg)
    }

    fn settle(&self, msg: &Message) {
        if let Some(queued) = &self.queued {
            queued.fetch_sub(msg.bytes.len(), Ordering::Relaxed);
        }
    }
}

/// Bytes of unsolicited messages one process may have waiting for a reader.
pub const UNSOLICITED_BUDGET: usize = 64 << 20;

/// The sending side of [`Unsolicited`].
struct UnsolicitedTx {
    tx: mpsc::UnboundedSender<Box<Message>>,
    queued: Arc<std::sync::atomic::AtomicUsize>,
}

fn unsolicited_channel() -> (UnsolicitedTx, Unsolicited) {
    let (tx, rx) = mpsc::unbounded_channel();
    let queued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    (
        UnsolicitedTx {
            tx,
            queued: queued.clone(),
        },
        Unsolicited {
            rx,
            queued: Some(queued),
        },
    )
}

/// Why a request got no answer from the server. Becomes a JSON-RPC error.
#[derive(Debug, Clone)]
pub struct Failure {
    pub code: i64,
    pub message: String,
    pub data: Option<serde_json::Value>,
}

impl Failure {
    pub fn new(code: i64, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
            data: None,
        }
    }
}

/// The server could not be started.
#[derive(Debug, thiserror::Error)]
#[error("could not start server `{server}` (command `{command}`): {source}")]
pub struct SpawnError {
    pub server: String,
    pub command: String,
    #[source]
    pub source: std::io::Error,
}

/// What the server sent that concerns one request.
#[derive(Debug)]
pub enum Delivery {
    /// A notification or request the server sent while working on it
    /// (progress, logging, sampling, elicitation...).
    Message(Message),
    /// The answer; nothing follows.
    Response(Message),
    /// No answer will come; nothing follows.
    Failed(Failure),
}

/// A request in flight: receives what the server sends about it.
///
/// Dropping it before the answer came stops routing for the request (the
/// answer, if it ever comes, is dropped), so an abandoned request does not
/// keep its session busy forever.
pub struct Exchange {
    id: IdKey,
    rx: DeliveryReceiver,
    upstream: std::sync::Weak<Shared>,
    settled: bool,
}

impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchange")
            .field("id", &self.id)
            .field("settled", &self.settled)
            .finish()
    }
}

impl Exchange {
    pub fn id(&self) -> &IdKey {
        &self.id
    }

    /// The next delivery; `None` once the request is settled or was cancelled
    /// by the client (a cancelled request gets no response).
    pub async fn next(&mut self) -> Option<Delivery> {
        let delivery = self.rx.next().await;
        self.settled |= !matches!(delivery, Some(Delivery::Message(_)));
        delivery
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        if !self.settled
            && let Some(shared) = self.upstream.upgrade()
        {
            shared.forget(&self.id);
        }
    }
}

// A request's deliveries: usually just its answer, so a channel that
// allocates per message beats one that allocates a block of slots up front.
type DeliverySender = futures::channel::mpsc::UnboundedSender<Delivery>;
/// The child's stdin. A line is written straight from the caller when
/// nothing is waiting before it and the pipe takes it whole (the common
/// case: no task to wake per message); otherwise it waits, in order, for the
/// writer task. What waits is bounded in bytes: a server that stops reading
/// its input makes new requests fail at once instead of growing the
/// gateway's memory. Dropping it closes stdin once what waits is written.
struct StdinQueue {
    inner: Arc<StdinInner>,
    limit: usize,
}

struct StdinInner {
    state: Mutex<StdinState>,
    /// Wakes the writer task: lines wait, or stdin is to close.
    wake: tokio::sync::Notify,
    /// Bytes accepted and not yet written (read without the lock).
    queued: std::sync::atomic::AtomicUsize,
}

struct StdinState {
    /// A duplicate of the (non-blocking: tokio's) pipe for writes from the
    /// caller; dropped at close, so the child still sees end of input.
    direct: Option<std::fs::File>,
    /// Chunks the writer task has still to write, in order.
    waiting: VecDeque<Bytes>,
    /// The writer task holds chunks it took: new lines go behind them.
    writing: bool,
    /// No more lines: the writer is gone, or stdin is closing.
    closed: bool,
}

impl StdinInner {
    fn state(&self) -> std::sync::MutexGuard<'_, StdinState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops taking lines; the writer writes what waits, then closes stdin.
    fn close(&self) {
        let mut state = self.state();
        state.closed = true;
        state.direct = None;
        drop(state);
        self.wake.notify_one();
    }
}

impl Drop for StdinQueue {
    fn drop(&mut self) {
        self.inner.close();
    }
}

const NEWLINE: Bytes = Bytes::from_static(b"\n");

enum QueueError {
    Closed,
    Full(usize),
}

impl StdinQueue {
    fn new(stdin: &ChildStdin, limit: usize) -> StdinQueue {
        use std::os::fd::AsFd;
        // Without a duplicate every line goes through the writer task.
        let direct = stdin
            .as_fd()
            .try_clone_to_owned()
            .ok()
            .map(std::fs::File::from);
        StdinQueue {
            inner: Arc::new(StdinInner {
                state: Mutex::new(StdinState {
                    direct,
                    waiting: VecDeque::new(),
                    writing: false,
                    closed: false,
                }),
                wake: tokio::sync::Notify::new(),
                queued: std::sync::atomic::AtomicUsize::new(0),
            }),
            limit,
        }
    }

    /// Sends a line; refuses when `limit` bytes are already waiting.
    fn push(&self, bytes: Bytes) -> Result<(), QueueError> {
        let waiting = self.inner.queued.load(Ordering::Relaxed);
        if waiting > 0 && waiting + bytes.len() > self.limit {
            return Err(QueueError::Full(waiting));
        }
        self.force(bytes)
    }

    /// Sends a line already accepted (or Berth's own), whatever is waiting.
    fn force(&self, bytes: Bytes) -> Result<(), QueueError> {
        let mut state = self.inner.state();
        if state.closed {
            return Err(QueueError::Closed);
        }
        let mut written = 0;
        if !state.writing
            && state.waiting.is_empty()
            && let Some(pipe) = &state.direct
        {
            use std::io::{IoSlice, Write};
            // Non-blocking: a full pipe takes part or nothing, never waits.
            let mut pipe = pipe;
            match pipe.write_vectored(&[IoSlice::new(&bytes), IoSlice::new(b"\n")]) {
                Ok(n) if n > bytes.len() => return Ok(()),
                Ok(n) => written = n,
                // WouldBlock, or a broken pipe the writer task will report.
                Err(_) => {}
            }
        }
        let rest = bytes.slice(written..);
        let len = rest.len() + 1;
        if !rest.is_empty() {
            state.waiting.push_back(rest);
        }
        state.waiting.push_back(NEWLINE);
        self.inner.queued.fetch_add(len, Ordering::Relaxed);
        drop(state);
        self.inner.wake.notify_one();
        Ok(())
    }
}
/// A connection that is not a child's pipes: it takes each message Berth
/// sends and routes what comes back through the [`Shared`] it was given
/// (see [`Upstream::with_link`]).
pub(crate) trait Link: Send + Sync {
    /// Takes a message for the server (with the `Mcp-Param-*` headers its
    /// client sent, for a link that speaks HTTP); `false` once it takes no more.
    fn hand_over(&self, bytes: Bytes, params: Option<ParamHeaders>) -> bool;

    fn remote_report(&self) -> Option<crate::RemoteReport> {
        None
    }

    fn endpoint_report(&self) -> Option<crate::EndpointReport> {
        None
    }

    /// The principal whose session the connection serves.
    fn bind_owner(&self, _owner: Option<crate::SecretOwner>) {}
}

/// A link has no queue of its own to fill: it takes a message or is closed.
fn handed_over(
    link: &dyn Link,
    bytes: Bytes,
    params: Option<ParamHeaders>,
) -> Result<(), QueueError> {
    if link.hand_over(bytes, params) {
        Ok(())
    } else {
        Err(QueueError::Closed)
    }
}

/// Where messages for the server go: a child's stdin, or a link.
enum Outbound {
    Stdin(StdinQueue),
    Link(Arc<dyn Link>),
}

impl Outbound {
    /// Sends a message; refuses when the server is not taking its input.
    /// (A pipe has no place for `params`.)
    fn push(&self, bytes: Bytes, params: Option<ParamHeaders>) -> Result<(), QueueError> {
        match self {
            Outbound::Stdin(stdin) => stdin.push(bytes),
            Outbound::Link(link) => handed_over(&**link, bytes, params),
        }
    }

    /// Sends a message already accepted (or Berth's own).
    fn force(&self, bytes: Bytes, params: Option<ParamHeaders>) -> Result<(), QueueError> {
        match self {
            Outbound::Stdin(stdin) => stdin.force(bytes),
            Outbound::Link(link) => handed_over(&**link, bytes, params),
        }
    }

    fn link(&self) -> Option<&dyn Link> {
        match self {
            Outbound::Link(link) => Some(&**link),
            Outbound::Stdin(_) => None,
        }
    }
}

type DeliveryReceiver = futures::channel::mpsc::UnboundedReceiver<Delivery>;

struct Pending {
    tx: DeliverySender,
    progress_token: Option<IdKey>,
    /// Order of arrival, to find the most recent request in flight.
    seq: u64,
    /// The session that sent it on a shared process (`None`: the only one).
    tag: Option<SessionTag>,
    /// On a shared process: the client's own id and token (JSON), to put
    /// back into what the server sends about the request.
    restore: Option<Restore>,
    /// The caller's id exactly as it wrote it, for an error the server could
    /// not give an id (attributed to this request) to carry.
    caller_id: Box<str>,
}

/// A session's share of a multiplexed process: its requests' ids and
/// progress tokens are rewritten with it, and put back on the way out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionTag(pub u64);

impl std::fmt::Display for SessionTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

struct Restore {
    id: Box<str>,
    token: Option<Box<str>>,
}

#[derive(Default)]
struct Routes {
    pending: HashMap<IdKey, Pending>,
    /// Progress token → the request that carries it.
    tokens: HashMap<IdKey, IdKey>,
    seq: u64,
    /// Set once the server can answer nothing more.
    closed: Option<Failure>,
    /// Where server messages unrelated to any request go.
    unsolicited: Option<UnsolicitedTx>,
    /// Serial mode (shared processes): one request on the wire at a time,
    /// so whatever the server asks while working belongs to exactly one session.
    serial: bool,
    on_wire: Option<IdKey>,
    queue: VecDeque<(IdKey, Bytes, Option<ParamHeaders>)>,
}

impl Routes {
    /// Serial mode: puts the next queued request still wanted on the wire.
    fn advance(&mut self, stdin: &Outbound) {
        if !self.serial
            || self
                .on_wire
                .as_ref()
                .is_some_and(|id| self.pending.contains_key(id))
        {
            return;
        }
        self.on_wire = None;
        while let Some((id, bytes, params)) = self.queue.pop_front() {
            if self.pending.contains_key(&id) {
                let _ = stdin.force(bytes, params);
                self.on_wire = Some(id);
                return;
            }
        }
    }

    fn remove(&mut self, id: &IdKey) -> Option<Pending> {
        let p = self.pending.remove(id)?;
        if let Some(token) = &p.progress_token {
            self.tokens.remove(token);
        }
        Some(p)
    }
}

pub(crate) struct Shared {
    server: String,
    pid: u32,
    log: ServerLog,
    /// Messages from the server that could be routed nowhere, and when one
    /// was last logged (at most one log line a second per process).
    strays: Mutex<Strays>,
    stdin: Outbound,
    routes: Mutex<Routes>,
    /// Why the server closed, once it has (the stderr it left included).
    closed_tx: watch::Sender<Option<Failure>>,
    /// Whose roots the server gets (see `crate::roots`).
    roots: Roots,
}

#[derive(Default)]
struct Strays {
    count: u64,
    last_logged: Option<std::time::Instant>,
    unlogged: u64,
}

impl Shared {
    /// A connection's routing state before anything is on the wire: the
    /// same for a child's pipes and for a link.
    fn new(
        spec: &ServerSpec,
        pid: u32,
        log: &ServerLog,
        stdin: Outbound,
        unsolicited: UnsolicitedTx,
    ) -> Shared {
        Shared {
            server: spec.name.clone(),
            pid,
            log: log.clone(),
            strays: Mutex::default(),
            stdin,
            closed_tx: watch::channel(None).0,
            routes: Mutex::new(Routes {
                unsolicited: Some(unsolicited),
                serial: spec.binding == crate::Binding::Shared,
                ..Routes::default()
            }),
            roots: spec.roots.clone(),
        }
    }

    /// Notes a message from the server that concerns no request Berth can
    /// find: logged (rate-limited) and counted, never a reason to stop a
    /// process that still answers.
    fn stray(&self, what: &str, line: &[u8]) {
        let now = std::time::Instant::now();
        let unlogged = {
            self.log.note_stray();
            let mut strays = self.strays.lock().unwrap_or_else(|e| e.into_inner());
            strays.count += 1;
            if strays
                .last_logged
                .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
            {
                strays.unlogged += 1;
                return;
            }
            strays.last_logged = Some(now);
            std::mem::take(&mut strays.unlogged)
        };
        let snippet = String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned();
        let more = if unlogged > 0 {
            format!(" ({unlogged} more since the last such line)")
        } else {
            String::new()
        };
        self.log.push(
            Some(self.pid),
            LogSource::Lifecycle,
            format!(
                "dropped a message that concerns no request in flight: {what}: {snippet:?}{more}"
            ),
        );
    }

    /// An error response the server could give no usable id (`"id": null`,
    /// none, or one that is not a string or number): it is about a request
    /// it could not read. With exactly one request on the wire (serial mode,
    /// or a single request in flight) that is the one: its caller gets the
    /// server's error under its own id, and nobody else is affected.
    /// Otherwise it cannot be attributed and is dropped.
    fn idless_error(&self, line: &[u8]) {
        let mut routes = self.routes();
        let target = if routes.serial {
            routes
                .on_wire
                .clone()
                .filter(|id| routes.pending.contains_key(id))
        } else if routes.pending.len() == 1 {
            routes.pending.keys().next().cloned()
        } else {
            None
        };
        let attributed = target.and_then(|id| {
            let p = routes.pending.get(&id)?;
            let bytes = berth_wire::error_with_id(line, &p.caller_id)?;
            let msg = Message::parse(bytes).ok()?;
            let p = routes.remove(&id)?;
            Some((p, msg))
        });
        let Some((p, msg)) = attributed else {
            drop(routes);
            self.stray(
                "an error response without a usable id, with no single request to attribute it to",
                line,
            );
            return;
        };
        routes.advance(&self.stdin);
        drop(routes);
        tracing::debug!(server = %self.server, pid = self.pid, "an error without an id attributed to the request on the wire");
        let _ = p.tx.unbounded_send(Delivery::Response(msg));
    }

    /// A lifecycle line in the server's log, about this process or connection.
    pub(crate) fn log_line(&self, line: String) {
        self.log.push(Some(self.pid), LogSource::Lifecycle, line);
    }

    /// Settles every request in flight with `failure` without closing: a
    /// remote connection lost a stream, not its ability to take requests.
    pub(crate) fn fail_in_flight(&self, failure: Failure) {
        let pending = {
            let mut routes = self.routes();
            routes.tokens.clear();
            std::mem::take(&mut routes.pending)
        };
        for (_, p) in pending {
            let _ = p.tx.unbounded_send(Delivery::Failed(failure.clone()));
        }
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Settles every request in flight with `failure` and refuses new ones.
    /// The first failure wins: it is the cause, later ones are consequences.
    fn close(&self, failure: Failure) {
        let pending = {
            let mut routes = self.routes();
            if routes.closed.is_some() {
                return;
            }
            routes.closed = Some(failure.clone());
            self.closed_tx.send_replace(Some(failure.clone()));
            routes.tokens.clear();
            routes.unsolicited = None;
            std::mem::take(&mut routes.pending)
        };
        for (_, p) in pending {
            let _ = p.tx.unbounded_send(Delivery::Failed(failure.clone()));
        }
    }

    fn closed_failure(&self, what: &str) -> Failure {
        Failure::new(
            ErrorCode::UPSTREAM_CLOSED,
            format!("server `{}` {what}", self.server),
        )
    }

    fn not_reading(&self, waiting: usize) -> Failure {
        Failure::new(
            ErrorCode::UNAVAILABLE,
            format!(
                "server `{}` is not reading its input: {waiting} bytes are already waiting for its stdin; try again later",
                self.server
            ),
        )
    }

    /// Stops routing for request `id`; false if it was not in flight.
    fn forget(&self, id: &IdKey) -> bool {
        let mut routes = self.routes();
        let known = routes.remove(id).is_some();
        routes.advance(&self.stdin);
        known
    }

    /// Sends one message from the server where it belongs.
    fn route(&self, msg: Message) {
        self.route_about(msg, None)
    }

    /// Sends one message from the server where it belongs; `about` is the
    /// request it came with when the transport says so (a remote server's
    /// response stream belongs to one request), which beats any guess.
    pub(crate) fn route_about(&self, msg: Message, about: Option<&IdKey>) {
        // Roots are the operator's unless the client was given them: Berth
        // answers, whoever holds the process (or nobody yet).
        if msg.kind == Kind::Request
            && msg.method() == Some("roots/list")
            && let Some(answer) = crate::roots::answer_list(&self.roots, &self.server, &msg)
        {
            let _ = self.stdin.force(answer, None);
            return;
        }
        let mut routes = self.routes();
        let target = match msg.kind {
            Kind::Response => {
                let Some(id) = &msg.id else {
                    drop(routes);
                    self.idless_error(&msg.bytes);
                    return;
                };
                match routes.remove(id) {
                    Some(p) => {
                        routes.advance(&self.stdin);
                        drop(routes);
                        let msg = match &p.restore {
                            Some(restore) => restored(msg, berth_wire::with_id, &restore.id),
                            None => msg,
                        };
                        let _ = p.tx.unbounded_send(Delivery::Response(msg));
                    }
                    // A request that timed out or was cancelled: its answer is
                    // moot. (Or an id Berth never sent: not worth a process.)
                    None => {
                        drop(routes);
                        self.stray("a response to no request in flight", &msg.bytes);
                    }
                }
                return;
            }
            _ if is_unrelated(msg.method()) => None,
            // Progress names its request by token. (A request from the server
            // may carry a progress token of its own: that one is the server's,
            // in another namespace, and says nothing about where it belongs.)
            Kind::Notification if msg.method() == Some("notifications/progress") => msg
                .progress_token
                .as_ref()
                .and_then(|token| routes.tokens.get(token))
                .and_then(|id| routes.pending.get(id)),
            // Over HTTP the stream it came on says which request it is about.
            _ if about.is_some_and(|id| routes.pending.contains_key(id)) => {
                about.and_then(|id| routes.pending.get(id))
            }
            // stdio carries no link from a message to the request it is about;
            // the most recent request in flight is the best guess.
            // (In serial mode exactly one request is on the wire: it is that one.)
            _ if routes.serial => routes
                .on_wire
                .as_ref()
                .and_then(|id| routes.pending.get(id)),
            _ => routes.pending.values().max_by_key(|p| p.seq),
        };
        match target {
            Some(p) => {
                let msg = match (
                    &p.restore,
                    msg.progress_token.is_some() && msg.kind == Kind::Notification,
                ) {
                    (
                        Some(Restore {
                            token: Some(token), ..
                        }),
                        true,
                    ) => restored(msg, berth_wire::with_progress_token, token),
                    _ => msg,
                };
                if let Err(Delivery::Message(msg)) =
                    p.tx.unbounded_send(Delivery::Message(msg))
                        .map_err(|e| e.into_inner())
                {
                    // The caller stopped listening; the session may still hear it.
                    self.to_holder(&routes, msg);
                }
            }
            None => self.to_holder(&routes, msg),
        }
    }

    /// Hands a message to whoever holds the process, within the budget.
    fn to_holder(&self, routes: &Routes, msg: Message) {
        let Some(holder) = &routes.unsolicited else {
            return;
        };
        let len = msg.bytes.len();
        let waiting = holder.queued.load(Ordering::Relaxed);
        if waiting > 0 && waiting + len > UNSOLICITED_BUDGET {
            if msg.kind == Kind::Request {
                // Nobody will answer it in time: the server must not wait forever.
                let reply = berth_wire::error_response(
                    msg.raw_id().as_deref(),
                    ErrorCode::INTERNAL_ERROR,
                    "Berth could not deliver this request: messages for this process's client were piling up unread",
                    None,
                );
                let _ = self.stdin.force(reply, None);
            }
            self.stray(
                "dropped a message: its reader is not keeping up (64 MiB waiting)",
                &msg.bytes,
            );
            return;
        }
        holder.queued.fetch_add(len, Ordering::Relaxed);
        if holder.tx.send(Box::new(msg)).is_err() {
            holder.queued.fetch_sub(len, Ordering::Relaxed);
        }
    }
}

/// `msg` with one of its parts replaced (a client's own id or token put back).
fn restored(msg: Message, splice: fn(&[u8], &str) -> Option<Bytes>, with: &str) -> Message {
    splice(&msg.bytes, with)
        .and_then(|bytes| Message::parse(bytes).ok())
        .unwrap_or(msg)
}

/// Whether a message's `params` is absent or an object, as MCP requires.
fn params_are_an_object(msg: &Message) -> bool {
    berth_wire::Envelope::parse(&msg.bytes)
        .ok()
        .and_then(|env| env.params)
        .is_none_or(|p| p.get().starts_with('{'))
}

/// Messages about the session as a whole, never about one request.
fn is_unrelated(method: Option<&str>) -> bool {
    matches!(
        method,
        Some(
            "notifications/resources/updated"
                | "notifications/resources/list_changed"
                | "notifications/tools/list_changed"
                | "notifications/prompts/list_changed"
                // 2026-07-28: the answer to Berth's own `subscriptions/listen`.
                | "notifications/subscriptions/acknowledged"
        )
    )
}

/// One running server: a stdio child process, or a connection of another
/// kind behind a [`Link`]. Dropping it stops the process (or closes the
/// connection).
pub struct Upstream {
    shared: Arc<Shared>,
    stop: CancellationToken,
    exited: watch::Receiver<Option<String>>,
    /// Berth asked it to stop (an exit without this is a crash).
    verdict: ExitVerdict,
    /// Frozen (standby): its cgroup, or SIGSTOP to its group without one.
    frozen: AtomicBool,
    sandbox: Option<Arc<berth_sandbox::Instance>>,
    /// A remote connection's caller token, for a token exchange.
    caller: Option<crate::credentials::CallerToken>,
}

/// Remote connections are numbered from here: no Linux pid reaches it
/// (`pid_max` is at most 2^22), so a number never names a process.
const REMOTE_NUMBERS: u32 = 1 << 30;

fn next_connection_number() -> u32 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    REMOTE_NUMBERS + (NEXT.fetch_add(1, Ordering::Relaxed) % (1 << 30)) as u32
}

/// Whether a number the fleet reports (as a pid) is a remote connection's.
pub fn is_remote_number(pid: u32) -> bool {
    pid >= REMOTE_NUMBERS
}

/// Ids of requests Berth itself sends: a prefix no client would pick by
/// chance, a per-gateway random part, and a counter.
pub(crate) fn gateway_request_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    static NONCE: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let nonce = NONCE.get_or_init(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        t.subsec_nanos() ^ std::process::id().rotate_left(16)
    });
    format!("berth:{nonce:08x}:{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("server", &self.shared.server)
            .field("pid", &self.shared.pid)
            .finish()
    }
}

impl Upstream {
    /// Starts the server as a child process speaking stdio (see
    /// [`crate::open`] for any kind of server). Messages it sends that
    /// concern no request in flight arrive on the returned receiver, which
    /// closes when the server is gone.
    pub fn spawn(spec: &ServerSpec, log: ServerLog) -> Result<(Upstream, Unsolicited), SpawnError> {
        let spawned = spawn(spec).map_err(|source| SpawnError {
            server: spec.name.clone(),
            command: spec.command.clone(),
            source,
        })?;
        let (mut child, sandbox) = (spawned.child, spawned.sandbox);
        let pid = child.id().unwrap_or_default();
        let (stdin, stdout, stderr) =
            match (child.stdin.take(), child.stdout.take(), child.stderr.take()) {
                (Some(i), Some(o), Some(e)) => (i, o, e),
                // Cannot happen with piped stdio; the child is killed on drop.
                _ => {
                    return Err(SpawnError {
                        server: spec.name.clone(),
                        command: spec.command.clone(),
                        source: std::io::Error::other("child stdio was not captured"),
                    });
                }
            };
        log.push(
            Some(pid),
            LogSource::Lifecycle,
            format!("started process {pid}: {}", spec.command),
        );

        let stdin_queue = StdinQueue::new(&stdin, spec.max_message_bytes);
        let stdin_inner = stdin_queue.inner.clone();
        let (unsolicited_tx, unsolicited_rx) = unsolicited_channel();
        let (exited_tx, exited_rx) = watch::channel(None);
        let verdict = ExitVerdict::default();
        let stop = CancellationToken::new();
        let close_stdin = CancellationToken::new();
        let shared = Arc::new(Shared::new(
            spec,
            pid,
            &log,
            Outbound::Stdin(stdin_queue),
            unsolicited_tx,
        ));

        tokio::spawn(write_stdin(stdin, stdin_inner, close_stdin.clone()));
        if let Some(sandbox) = &sandbox {
            let log = log.clone();
            sandbox.started(Arc::new(move |line: String| {
                log.push(Some(pid), LogSource::Lifecycle, line)
            }));
        }
        let stderr_done = tokio::spawn(pump_stderr(stderr, log.clone(), pid, sandbox.clone()));
        tokio::spawn(read_stdout(
            stdout,
            spec.max_message_bytes,
            shared.clone(),
            stop.clone(),
            exited_rx.clone(),
            stderr_done,
        ));
        let controls = Controls {
            stop: stop.clone(),
            close_stdin,
            exited: exited_tx,
            verdict: verdict.clone(),
            sandbox: sandbox.clone(),
        };
        tokio::spawn(supervise(child, pid, spec.shutdown, log, controls));

        Ok((
            Upstream {
                shared,
                stop,
                exited: exited_rx,
                verdict: verdict.clone(),
                frozen: AtomicBool::new(false),
                sandbox,
                caller: None,
            },
            unsolicited_rx,
        ))
    }

    /// A connection that is not a child process (a remote server, a
    /// federated endpoint): `link` carries what Berth sends; what comes
    /// back is routed through the [`Shared`] it is given. Numbered as a
    /// process is by its pid, above any pid Linux hands out (see
    /// [`is_remote_number`]). It never exits on its own: it closes when
    /// Berth stops it.
    pub(crate) fn with_link(
        spec: &ServerSpec,
        log: ServerLog,
        caller: Option<crate::credentials::CallerToken>,
        link: impl FnOnce(std::sync::Weak<Shared>, CancellationToken) -> Arc<dyn Link>,
    ) -> (Upstream, Unsolicited) {
        let number = next_connection_number();
        let (unsolicited_tx, unsolicited_rx) = unsolicited_channel();
        let stop = CancellationToken::new();
        let (exited_tx, exited_rx) = watch::channel(None);
        let shared = Arc::new_cyclic(|weak: &std::sync::Weak<Shared>| {
            let link = Outbound::Link(link(weak.clone(), stop.clone()));
            Shared::new(spec, number, &log, link, unsolicited_tx)
        });
        let closing = shared.clone();
        let ended = stop.clone();
        tokio::spawn(async move {
            ended.cancelled().await;
            closing.close(closing.closed_failure("connection was closed by Berth"));
            let _ = exited_tx.send(Some("closed".into()));
        });
        (
            Upstream {
                shared,
                stop,
                exited: exited_rx,
                verdict: ExitVerdict::default(),
                frozen: AtomicBool::new(false),
                sandbox: None,
                caller,
            },
            unsolicited_rx,
        )
    }

    pub fn pid(&self) -> u32 {
        self.shared.pid
    }

    /// For a remote connection: where it goes and how it fares.
    pub fn remote_report(&self) -> Option<crate::RemoteReport> {
        self.shared.stdin.link()?.remote_report()
    }

    /// For a federated endpoint's connection: the principal whose session
    /// it serves (members are opened with that principal's secrets).
    pub fn bind_owner(&self, owner: Option<crate::SecretOwner>) {
        if let Some(link) = self.shared.stdin.link() {
            link.bind_owner(owner);
        }
    }

    /// For a federated endpoint's connection: its members, open or not.
    pub fn endpoint_report(&self) -> Option<crate::EndpointReport> {
        self.shared.stdin.link()?.endpoint_report()
    }

    /// For a remote connection using token exchange: the access token its
    /// session's caller presented with the request at hand.
    pub fn present_caller_token(&self, token: &str) {
        if let Some(caller) = &self.caller {
            caller.set(token);
        }
    }

    /// Why the server can take no more requests, if it cannot.
    pub fn closed(&self) -> Option<Failure> {
        self.shared.routes().closed.clone()
    }

    /// Sends a request; what the server sends about it arrives on the exchange.
    pub fn call(&self, msg: &Message) -> Result<Exchange, Failure> {
        self.call_as(msg, None)
    }

    /// Sends a request for session `tag` of a shared process (`None`: an
    /// exclusive one). On a shared process the id and progress token are
    /// rewritten to ones unique to the process, and put back on the way out.
    pub fn call_as(&self, msg: &Message, tag: Option<SessionTag>) -> Result<Exchange, Failure> {
        // The server's roots are as configured, whoever initializes it.
        let screened = crate::roots::request_to_server(&self.shared.roots, msg);
        let msg = screened.as_ref().unwrap_or(msg);
        let Some(client_id) = msg.id.clone() else {
            return Err(Failure::new(
                ErrorCode::INVALID_REQUEST,
                "a request needs an id",
            ));
        };
        // The id as the caller wrote it (a huge integer stays its digits).
        let caller_id: Box<str> = msg.raw_id().unwrap_or_else(|| client_id.to_json()).into();
        if tag.is_some() && !params_are_an_object(msg) {
            // MCP params are an object. A server cannot read anything else,
            // and may answer without an id or not at all, while every other
            // session on the process waits behind the request: refused here.
            return Err(Failure::new(
                ErrorCode::INVALID_PARAMS,
                "Invalid params: MCP request \"params\" must be an object",
            ));
        }
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let id = {
            let mut routes = self.shared.routes();
            if let Some(failure) = &routes.closed {
                return Err(failure.clone());
            }
            routes.seq += 1;
            let seq = routes.seq;
            let (id, token, bytes, restore) = match tag {
                None => (
                    client_id,
                    msg.progress_token.clone(),
                    msg.bytes.clone(),
                    None,
                ),
                Some(tag) => {
                    let id = IdKey::Str(format!("b{tag}.{seq}").into());
                    let mut bytes = berth_wire::with_id(&msg.bytes, &id.to_json())
                        .unwrap_or_else(|| msg.bytes.clone());
                    let mut token = None;
                    let mut client_token = None;
                    if let Some(original) = &msg.progress_token {
                        let rewritten = IdKey::Str(format!("b{tag}.p{seq}").into());
                        if let Some(spliced) =
                            berth_wire::with_progress_token(&bytes, &rewritten.to_json())
                        {
                            bytes = spliced;
                            token = Some(rewritten);
                            client_token = Some(original.to_json().into());
                        }
                    }
                    let restore = Restore {
                        id: caller_id.clone(),
                        token: client_token,
                    };
                    (id, token, bytes, Some(restore))
                }
            };
            if routes.pending.contains_key(&id) {
                return Err(Failure::new(
                    ErrorCode::INVALID_REQUEST,
                    format!(
                        "request id {id} is already in use by a request in flight; ids must be unique"
                    ),
                ));
            }
            if let Some(token) = &token {
                routes.tokens.insert(token.clone(), id.clone());
            }
            routes.pending.insert(
                id.clone(),
                Pending {
                    tx,
                    progress_token: token,
                    seq,
                    tag,
                    restore,
                    caller_id,
                },
            );
            let on_hold = routes.serial && routes.on_wire.is_some();
            if on_hold {
                routes
                    .queue
                    .push_back((id.clone(), bytes, msg.param_headers().cloned()));
            } else {
                if routes.serial {
                    routes.on_wire = Some(id.clone());
                }
                // The line is usually written straight to the pipe, which
                // wakes the server: unless the process is serial (the order
                // on the wire is the routes'), the routes are unlocked
                // first, so the answer's reader never waits for this thread.
                let held = routes.serial.then_some(routes);
                if let Err(error) = self.shared.stdin.push(bytes, msg.param_headers().cloned()) {
                    let mut routes = held.unwrap_or_else(|| self.shared.routes());
                    match error {
                        QueueError::Full(waiting) => {
                            routes.remove(&id);
                            if routes.serial {
                                routes.on_wire = None;
                            }
                            return Err(self.shared.not_reading(waiting));
                        }
                        QueueError::Closed => {
                            drop(routes);
                            self.shared
                                .close(self.shared.closed_failure("is no longer accepting input"));
                            return Err(self
                                .closed()
                                .unwrap_or_else(|| self.shared.closed_failure("is gone")));
                        }
                    }
                }
            }
            id
        };
        Ok(Exchange {
            id,
            rx,
            upstream: Arc::downgrade(&self.shared),
            settled: false,
        })
    }

    /// Cancels the request session `tag` knows as `client_id` (shared process).
    pub fn cancel_for(&self, tag: SessionTag, client_id: &IdKey, reason: &str) -> bool {
        let wanted = client_id.to_json();
        let wire = self
            .shared
            .routes()
            .pending
            .iter()
            .find(|(_, p)| {
                p.tag == Some(tag) && p.restore.as_ref().is_some_and(|r| *r.id == *wanted)
            })
            .map(|(id, _)| id.clone());
        match wire {
            Some(id) => {
                self.cancel(&id, reason);
                true
            }
            None => false,
        }
    }

    /// Settles every request of session `tag` with `failure` (its session ended).
    pub fn forget_session(&self, tag: SessionTag, failure: &Failure) {
        let mut routes = self.shared.routes();
        let ids: Vec<IdKey> = routes
            .pending
            .iter()
            .filter(|(_, p)| p.tag == Some(tag))
            .map(|(id, _)| id.clone())
            .collect();
        let settled: Vec<Pending> = ids.iter().filter_map(|id| routes.remove(id)).collect();
        routes.advance(&self.shared.stdin);
        drop(routes);
        for p in settled {
            let _ = p.tx.unbounded_send(Delivery::Failed(failure.clone()));
        }
    }

    /// Requests of session `tag` waiting for an answer.
    pub fn in_flight_of(&self, tag: SessionTag) -> usize {
        self.shared
            .routes()
            .pending
            .values()
            .filter(|p| p.tag == Some(tag))
            .count()
    }

    /// Sends a notification, or a response to a request the server made.
    pub fn send(&self, msg: &Message) -> Result<(), Failure> {
        if let Some(failure) = self.closed() {
            return Err(failure);
        }
        if crate::roots::drops_from_client(&self.shared.roots, msg) {
            tracing::debug!(server = %self.shared.server, pid = self.shared.pid, "dropped a client's message about its roots: the server's roots are not the client's (roots setting)");
            return Ok(());
        }
        if msg.kind == Kind::Notification && !params_are_an_object(msg) {
            // The server cannot read it (MCP params are an object), and its
            // complaint, an error without an id, would be taken for the
            // answer to the request on the wire, another session's on a
            // shared process. A notification gets no answer: dropped.
            self.shared.log.push(
                Some(self.shared.pid),
                LogSource::Lifecycle,
                format!(
                    "dropped a {} notification whose params are not an object (not sent to the server)",
                    msg.method().unwrap_or_default()
                ),
            );
            return Ok(());
        }
        if msg.method() == Some("notifications/cancelled") {
            // The server should not answer a cancelled request; settle it here.
            if let Ok(env) = berth_wire::Envelope::parse(&msg.bytes)
                && let Some(id) = env.cancelled_request()
            {
                self.forget(&id);
            }
        }
        self.shared
            .stdin
            .push(msg.bytes.clone(), None)
            .map_err(|e| match e {
                QueueError::Full(waiting) => self.shared.not_reading(waiting),
                QueueError::Closed => self
                    .closed()
                    .unwrap_or_else(|| self.shared.closed_failure("is gone")),
            })
    }

    /// Gives up on a request (timed out): the server is told with
    /// `notifications/cancelled` and a late answer will be dropped.
    pub fn cancel(&self, id: &IdKey, reason: &str) {
        if self.forget(id) {
            let note = serde_json::json!({
                "jsonrpc": "2.0",
                "method": "notifications/cancelled",
                "params": { "requestId": serde_json::from_str::<serde_json::Value>(&id.to_json()).unwrap_or_default(), "reason": reason },
            });
            let _ = self.shared.stdin.force(Bytes::from(note.to_string()), None);
        }
    }

    fn forget(&self, id: &IdKey) -> bool {
        self.shared.forget(id)
    }

    /// How many messages from the server could be routed nowhere (answers
    /// to requests no longer in flight, errors without a usable id that
    /// could not be attributed).
    pub fn strays(&self) -> u64 {
        self.shared
            .strays
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .count
    }

    /// How many requests are waiting for an answer.
    pub fn in_flight(&self) -> usize {
        self.shared.routes().pending.len()
    }

    /// Stops the server (close stdin, SIGTERM, SIGKILL) and waits until it
    /// has been reaped. Requests in flight fail with `reason`.
    pub async fn shutdown(&self, reason: &str) {
        self.verdict.stop_requested.store(true, Ordering::Relaxed);
        self.shared
            .close(Failure::new(ErrorCode::UPSTREAM_CLOSED, reason));
        // A stopped process cannot react to stdin closing or to SIGTERM.
        self.thaw();
        self.stop.cancel();
        self.exited().await;
    }

    /// A handle that outlives the upstream and tells how the process ended.
    pub fn watch(&self) -> ProcessWatch {
        ProcessWatch {
            exited: self.exited.clone(),
            closed: self.shared.closed_tx.subscribe(),
            verdict: self.verdict.clone(),
        }
    }

    /// Waits until the process has exited and been reaped.
    pub async fn exited(&self) {
        let mut exited = self.exited.clone();
        let _ = exited.wait_for(Option::is_some).await;
    }

    /// Whether the process ended without Berth asking it to (it exited,
    /// crashed, or misbehaved and was stopped).
    pub fn crashed(&self) -> bool {
        if self.exited.borrow().is_some() {
            return self.verdict.crashed.load(Ordering::Relaxed);
        }
        self.closed().is_some() && !self.verdict.stop_requested.load(Ordering::Relaxed)
    }

    /// Freezes the process group (standby). It holds its memory and state
    /// but uses no CPU until [`Upstream::thaw`].
    pub fn freeze(&self) {
        // A remote connection at standby costs nothing to keep.
        if is_remote_number(self.shared.pid) {
            return;
        }
        if !self.frozen.swap(true, Ordering::Relaxed)
            && !self.sandbox.as_ref().is_some_and(|s| s.freeze())
        {
            crate::process::signal_group(self.shared.pid, nix::sys::signal::Signal::SIGSTOP);
        }
    }

    pub fn thaw(&self) {
        if self.frozen.swap(false, Ordering::Relaxed)
            && !self.sandbox.as_ref().is_some_and(|s| s.thaw())
        {
            crate::process::signal_group(self.shared.pid, nix::sys::signal::Signal::SIGCONT);
        }
    }

    pub fn is_frozen(&self) -> bool {
        self.frozen.load(Ordering::Relaxed)
    }

    /// Sends a request of Berth's own (health ping, pre-initialization) with
    /// an id no client request can collide with, and waits for the answer.
    pub async fn request(
        &self,
        method: &str,
        params: Option<serde_json::Value>,
        timeout: Duration,
    ) -> Result<Message, Failure> {
        let mut body =
            serde_json::json!({ "jsonrpc": "2.0", "id": gateway_request_id(), "method": method });
        if let Some(params) = params {
            body["params"] = params;
        }
        let msg = Message::parse(Bytes::from(body.to_string()))
            .map_err(|e| Failure::new(ErrorCode::INTERNAL_ERROR, e.to_string()))?;
        let mut exchange = self.call(&msg)?;
        let answer = tokio::time::timeout(timeout, async {
            loop {
                match exchange.next().await {
                    // Berth is not a client: nothing the server asks of it
                    // during its own requests can be answered.
                    Some(Delivery::Message(_)) => continue,
                    Some(Delivery::Response(m)) => return Ok(m),
                    Some(Delivery::Failed(f)) => return Err(f),
                    None => {
                        return Err(Failure::new(
                            ErrorCode::UPSTREAM_CLOSED,
                            "request abandoned",
                        ));
                    }
                }
            }
        })
        .await;
        match answer {
            Ok(answer) => answer,
            Err(_) => {
                self.cancel(exchange.id(), "timed out");
                Err(Failure::new(
                    ErrorCode::REQUEST_TIMEOUT,
                    format!(
                        "server `{}` did not answer {method} within {timeout:?}",
                        self.shared.server
                    ),
                ))
            }
        }
    }

    /// Sends a notification of Berth's own.
    pub fn notify(&self, method: &str) -> Result<(), Failure> {
        let body = format!(
            r#"{{"jsonrpc":"2.0","method":{}}}"#,
            serde_json::Value::from(method)
        );
        let msg = Message::parse(Bytes::from(body))
            .map_err(|e| Failure::new(ErrorCode::INTERNAL_ERROR, e.to_string()))?;
        self.send(&msg)
    }
}

/// Watches one process without keeping it alive.
pub struct ProcessWatch {
    exited: watch::Receiver<Option<String>>,
    closed: watch::Receiver<Option<Failure>>,
    verdict: ExitVerdict,
}

impl ProcessWatch {
    /// Waits for the exit; returns how it ended and whether it was a crash
    /// (an exit Berth did not ask for).
    pub async fn ended(&mut self) -> (String, bool) {
        let _ = self.exited.wait_for(Option::is_some).await;
        let how = self.exited.borrow().clone().unwrap_or_default();
        (how, self.verdict.crashed.load(Ordering::Relaxed))
    }

    /// After [`ProcessWatch::ended`]: whether the process was killed for memory.
    pub fn oom_killed(&self) -> bool {
        self.verdict.oom_killed.load(Ordering::Relaxed)
    }

    /// After [`ProcessWatch::ended`]: why the server closed, with the stderr
    /// it left (waits briefly for its output to be drained).
    pub async fn failure(&mut self) -> Option<Failure> {
        let closed = tokio::time::timeout(
            Duration::from_secs(3),
            self.closed.wait_for(Option::is_some),
        )
        .await;
        closed.ok()?.ok().and_then(|failure| failure.clone())
    }
}

async fn write_stdin(stdin: ChildStdin, queue: Arc<StdinInner>, close: CancellationToken) {
    let mut stdin = stdin;
    // Chunks waiting together go out in one write; the scratch buffer is
    // kept small between bursts so an idle session costs little memory.
    let mut batch: Vec<u8> = Vec::new();
    loop {
        let taken = {
            let mut state = queue.state();
            if state.waiting.is_empty() {
                state.writing = false;
                if state.closed {
                    break;
                }
                false
            } else {
                // Lines sent meanwhile go behind these, not straight out.
                state.writing = true;
                while batch.len() < WRITE_BATCH
                    && let Some(chunk) = state.waiting.pop_front()
                {
                    batch.extend_from_slice(&chunk);
                }
                true
            }
        };
        if !taken {
            tokio::select! {
                biased;
                _ = close.cancelled() => break,
                _ = queue.wake.notified() => continue,
            }
        }
        let written = tokio::select! {
            biased;
            _ = close.cancelled() => break,
            written = stdin.write_all(&batch) => written,
        };
        if written.is_err() {
            break;
        }
        queue.queued.fetch_sub(batch.len(), Ordering::Relaxed);
        batch.clear();
        if batch.capacity() > WRITE_BATCH {
            batch = Vec::new();
        }
    }
    // No line may be written straight to a pipe about to close (the
    // duplicate would also keep the child's input open).
    queue.close();
    // Dropping stdin closes the child's end: the first shutdown step.
}

/// Largest write gathered from queued messages.
const WRITE_BATCH: usize = 64 * 1024;

async fn pump_stderr(
    stderr: ChildStderr,
    log: ServerLog,
    pid: u32,
    sandbox: Option<Arc<berth_sandbox::Instance>>,
) {
    let emit = |line: &[u8]| {
        emit_stderr(&log, pid, line);
        // A path the sandbox hides, named in an error, gets a hint once.
        if let Some(hint) = sandbox
            .as_ref()
            .and_then(|s| s.explain(&String::from_utf8_lossy(line)))
        {
            log.push(Some(pid), LogSource::Lifecycle, hint);
        }
    };
    // stderr is a trickle: a small buffer keeps idle sessions cheap.
    let mut reader = BufReader::with_capacity(512, stderr);
    let mut line: Vec<u8> = Vec::new();
    loop {
        let buf = match reader.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(buf) => buf,
        };
        let (chunk, end_of_line) = match memchr_newline(buf) {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        let room = ServerLog::MAX_LINE + 1 - line.len().min(ServerLog::MAX_LINE + 1);
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let consumed = end_of_line.unwrap_or(buf.len());
        reader.consume(consumed);
        if end_of_line.is_some() {
            emit(&line);
            line.clear();
        }
    }
    if !line.is_empty() {
        emit(&line);
    }
}

fn memchr_newline(buf: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', buf)
}

fn emit_stderr(log: &ServerLog, pid: u32, line: &[u8]) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end();
    if !text.is_empty() {
        log.push(Some(pid), LogSource::Stderr, text);
    }
}

async fn read_stdout(
    stdout: ChildStdout,
    max_message_bytes: usize,
    shared: Arc<Shared>,
    stop: CancellationToken,
    mut exited: watch::Receiver<Option<String>>,
    stderr_done: tokio::task::JoinHandle<()>,
) {
    // Starts small and grows with the messages; most answers are short.
    let mut lines = FramedRead::with_capacity(stdout, LineCodec::new(max_message_bytes), 512);
    let mut misbehaved: Option<String> = None;
    while let Some(line) = lines.next().await {
        match line {
            Ok(line) => match Message::parse(line.clone()) {
                Ok(msg) => shared.route(msg),
                // JSON-RPC that cannot be routed costs that message, not the
                // process (nor the other sessions on it).
                Err(_) if Message::stray(&line) == Some(Stray::IdlessError) => {
                    shared.idless_error(&line)
                }
                Err(e) if Message::stray(&line).is_some() => {
                    shared.stray(&format!("not a valid JSON-RPC message ({e})"), &line)
                }
                Err(e) => {
                    let snippet: String =
                        String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned();
                    misbehaved = Some(format!(
                        "wrote output that is not a JSON-RPC message on stdout ({e}): {snippet:?}; a stdio server must write only MCP messages to stdout (logs go to stderr)"
                    ));
                    break;
                }
            },
            Err(LineError::TooLong { max_len }) => {
                misbehaved = Some(format!(
                    "wrote a message larger than the {max_len}-byte limit (max_message_bytes)"
                ));
                break;
            }
            Err(LineError::Io(e)) => {
                misbehaved = Some(format!("could not be read from ({e})"));
                break;
            }
        }
    }
    drop(lines);
    let pid = shared.pid;
    let failure = match misbehaved {
        Some(what) => {
            shared.log.push(
                Some(pid),
                LogSource::Lifecycle,
                format!("stopping process {pid}: it {what}"),
            );
            let failure = shared.closed_failure(&format!("{what}; Berth stopped it"));
            shared.close(failure.clone());
            stop.cancel();
            failure
        }
        None => {
            // stdout closed: the process is exiting. Wait briefly for its status
            // so the error can say how it ended; stop it if it lingers.
            let ended =
                tokio::time::timeout(Duration::from_secs(2), exited.wait_for(Option::is_some))
                    .await
                    .is_ok();
            if !ended {
                stop.cancel();
                let _ = exited.wait_for(Option::is_some).await;
            }
            let how = exited.borrow().clone().unwrap_or_else(|| "exited".into());
            let mut failure =
                shared.closed_failure(&format!("closed its output: the process {how}"));
            // Its last words on stderr may still be in the pipe; a grandchild
            // holding the pipe open must not delay the error for long.
            let _ = tokio::time::timeout(Duration::from_millis(500), stderr_done).await;
            let stderr = shared.log.last_stderr(pid, 10);
            if !stderr.is_empty() {
                failure.message.push_str(&format!(
                    "; last stderr: {}",
                    stderr.last().map(String::as_str).unwrap_or_default()
                ));
                failure.data = Some(serde_json::json!({ "stderr": stderr }));
            }
            shared.close(failure.clone());
            failure
        }
    };
    tracing::debug!(server = %shared.server, pid, "upstream closed: {}", failure.message);
}
