//! A server's processes: the warm pool, leases to sessions, standby, scale
//! to zero, health checks, and crash accounting.
//!
//! Every process of a server is spawned by its pool and watched until it is
//! reaped, so the pool always knows how many are alive and what each is
//! doing. A session takes a process with [`Pool::acquire`]; a ready one when
//! there is one (thawed if it was frozen), a fresh one otherwise, never more
//! than `max_processes` in all. The maintenance task keeps the ready target
//! (`min_ready` or, while sessions arrive faster than that many can be
//! replaced, arrival rate × the server's own spawn-to-ready time ×
//! `headroom`, up to `max_ready`) ready or starting, freezes idle processes
//! after `standby_after`, retires the ones demand no longer needs, stops them
//! all after `stop_after` without a session, pings idle ones, and backs off
//! (then gives up) when the server keeps crashing.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_wire::{Envelope, ErrorCode, IdKey, Kind, Message, ProtocolVersion, error_response};
use bytes::Bytes;
use hdrhistogram::Histogram;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::{
    Binding, Exchange, Failure, LogSource, SecretOwner, ServerLog, ServerSpec, SessionTag,
    SpawnError, Unsolicited, Upstream,
};

/// What Berth tells a server about itself when it initializes it ahead of any client.
/// (`roots` is declared or not by the server's roots setting, as in every
/// `initialize` the process gets: see `crate::roots`.)
const PREINIT_CAPABILITIES: &str = r#"{"sampling":{},"elicitation":{"form":{},"url":{}}}"#;
/// What a bridge process is told: nothing. A 2026-07-28 client cannot be
/// asked anything mid-request, so no capability is declared on its behalf.
const BRIDGE_CAPABILITIES: &str = "{}";

/// How a pool hands out its processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    /// Handshake era: a session takes a process to itself, or shares one
    /// (`Binding::Shared`) with one request on the wire at a time.
    Sessions,
    /// 2026-07-28 stateless requests: each request takes a share of the least
    /// busy process, many in flight at once, ids rewritten. With `bridge`
    /// the server speaks only the handshake era: Berth initializes its
    /// processes first and relays stateless requests to them.
    Stateless { bridge: bool },
}

/// A server message about no request, from a stateless pool's processes
/// (list changes, resource updates), for `subscriptions/listen` streams.
pub type Announcement = Arc<Message>;
/// How many announcements a slow listener may fall behind before it misses some.
const ANNOUNCEMENTS_KEPT: usize = 256;

/// A process's `initialize` result, kept to answer clients from.
///
/// Split around the `protocolVersion` value so a client's answer is the
/// server's own bytes with only the negotiated version spliced in.
#[derive(Debug)]
pub struct InitCache {
    head: Bytes,
    tail: Bytes,
    /// The version the server answered Berth with.
    pub server_version: String,
}

impl InitCache {
    fn from_result(result: &serde_json::value::RawValue) -> Option<InitCache> {
        #[derive(serde::Deserialize)]
        struct Result<'a> {
            #[serde(borrow, rename = "protocolVersion")]
            protocol_version: &'a serde_json::value::RawValue,
        }
        let text = result.get();
        let parsed: Result<'_> = serde_json::from_str(text).ok()?;
        let value = parsed.protocol_version.get();
        let start = value.as_ptr() as usize - text.as_ptr() as usize;
        let end = start + value.len();
        let server_version: String = serde_json::from_str(value).ok()?;
        Some(InitCache {
            head: Bytes::copy_from_slice(&text.as_bytes()[..start]),
            tail: Bytes::copy_from_slice(&text.as_bytes()[end..]),
            server_version,
        })
    }

    /// The version to answer a client that asked for `requested`: its own
    /// if Berth speaks it and the server is at least that recent, else the server's.
    pub fn negotiate(&self, requested: Option<&str>) -> String {
        let server = ProtocolVersion::parse(&self.server_version);
        match (requested.and_then(ProtocolVersion::parse), server) {
            (Some(client), Some(server)) if client <= server => client.as_str().to_string(),
            _ => self.server_version.clone(),
        }
    }

    /// The server's `initialize` result (JSON text) with `version` in it.
    pub fn result(&self, version: &str) -> String {
        let version = serde_json::Value::from(version).to_string();
        // head and tail were cut from a `str` at value boundaries.
        format!(
            "{}{version}{}",
            String::from_utf8_lossy(&self.head),
            String::from_utf8_lossy(&self.tail)
        )
    }

    /// The full `initialize` response for a client request with id `raw_id`.
    pub fn response(&self, raw_id: &str, version: &str) -> Bytes {
        let version = serde_json::Value::from(version).to_string();
        let mut out = Vec::with_capacity(
            self.head.len() + self.tail.len() + raw_id.len() + version.len() + 40,
        );
        out.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
        out.extend_from_slice(raw_id.as_bytes());
        out.extend_from_slice(br#","result":"#);
        out.extend_from_slice(&self.head);
        out.extend_from_slice(version.as_bytes());
        out.extend_from_slice(&self.tail);
        out.push(b'}');
        Bytes::from(out)
    }
}

/// What a process is doing, as `berth ps` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcState {
    /// Spawned, being initialized by Berth.
    Starting,
    /// Waiting for a session.
    Ready,
    /// Waiting for a session, frozen.
    Standby,
    /// Serving a session.
    Leased,
    /// Being stopped, or serving a session of an older generation (after a restart).
    Draining,
    /// Serving several sessions (shared binding).
    Shared,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessReport {
    pub pid: u32,
    pub state: ProcState,
    /// Sessions on a shared process.
    #[serde(default)]
    pub sessions: usize,
    pub generation: u64,
    pub age_ms: u64,
    /// A remote server's connection: where it goes and how it fares
    /// (`pid` is then the connection's number, not a process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<crate::RemoteReport>,
    /// A federated endpoint's session: its members, open or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<crate::EndpointReport>,
}

/// Whether a server is up, as `berth ps` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolStatus {
    /// At least one process is alive.
    Running,
    /// No process (scaled to zero, or not started yet).
    Idle,
    /// Crashed too often and given up on until `berth restart`.
    Failed,
}

impl ProcState {
    /// The state's name, as `berth ps`, the admin API and metrics write it.
    pub fn as_str(self) -> &'static str {
        match self {
            ProcState::Starting => "starting",
            ProcState::Ready => "ready",
            ProcState::Standby => "standby",
            ProcState::Leased => "leased",
            ProcState::Draining => "draining",
            ProcState::Shared => "shared",
        }
    }
}

impl PoolStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PoolStatus::Running => "running",
            PoolStatus::Idle => "idle",
            PoolStatus::Failed => "failed",
        }
    }
}

impl std::fmt::Display for PoolStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`, so table columns (`{:<8}`) line up.
        f.pad(self.as_str())
    }
}

/// Why a pool keeps the number of processes ready that it does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetReason {
    /// `min_ready`: sessions arrive slowly enough for it.
    #[default]
    Floor,
    /// The arrival rate × spawn-to-ready time × headroom.
    Demand,
    /// Demand asks for more than `max_ready` (or `max_processes` allows).
    MaxReady,
    /// A shared or stateless pool: its size is set by the binding, not by arrivals.
    Fixed,
    /// Scaled to zero, failed or stopping: nothing is kept ready.
    Idle,
}

impl TargetReason {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetReason::Floor => "floor",
            TargetReason::Demand => "demand",
            TargetReason::MaxReady => "max_ready",
            TargetReason::Fixed => "fixed",
            TargetReason::Idle => "idle",
        }
    }
}

impl std::fmt::Display for TargetReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// A snapshot of one server's pool.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PoolReport {
    pub server: String,
    /// `running`, `idle` (scaled to zero), or `failed`.
    pub status: PoolStatus,
    pub failure: Option<String>,
    /// How the last process that crashed ended ("process 12 was killed by
    /// the OOM killer ...").
    #[serde(default)]
    pub last_exit: Option<String>,
    /// Server lines Berth could route nowhere, or dropped for want of a
    /// reader, all processes since start (each is also in the log).
    #[serde(default)]
    pub stray_lines: u64,
    pub processes: Vec<ProcessReport>,
    pub restarts: u64,
    pub crashes: u64,
    /// Processes started since Berth started.
    #[serde(default)]
    pub spawns: u64,
    /// Processes killed for memory (their sandbox's limit) since start.
    #[serde(default)]
    pub oom_kills: u64,
    pub calls: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Processes the pool keeps ready or starting now, and why that many.
    #[serde(default)]
    pub ready_target: usize,
    #[serde(default)]
    pub target_reason: TargetReason,
    /// New sessions per second over the demand window.
    #[serde(default)]
    pub arrival_rate: f64,
    /// The server's measured spawn-to-ready time (a moving average), once known.
    #[serde(default)]
    pub ready_time_ms: Option<f64>,
}

/// Why no process could be had.
#[derive(Debug)]
pub enum AcquireError {
    /// `max_processes` are alive.
    AtCapacity {
        max: usize,
    },
    /// The server crashed too often and was given up on.
    Failed(Failure),
    Spawn(SpawnError),
    /// The pool is shutting down (gateway stopping, or server removed).
    Stopping,
    /// A secret the server needs resolves for nobody, or is the caller's
    /// own on a server whose processes are shared (the message says which).
    Secret(String),
}

impl std::fmt::Display for AcquireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AcquireError::AtCapacity { max } => write!(
                f,
                "all {max} processes of this server are busy (max_processes); retry when a session ends"
            ),
            AcquireError::Failed(failure) => f.write_str(&failure.message),
            AcquireError::Spawn(e) => write!(f, "{e}"),
            AcquireError::Stopping => f.write_str("the server is being stopped"),
            AcquireError::Secret(why) => f.write_str(why),
        }
    }
}

struct Warm {
    upstream: Arc<Upstream>,
    unsolicited: Unsolicited,
    init: Option<Arc<InitCache>>,
    since: Instant,
    last_ping: Instant,
    pinging: bool,
}

/// A process serving several sessions (shared binding).
struct SharedProc {
    upstream: Arc<Upstream>,
    init: Option<Arc<InitCache>>,
    /// Where its messages about no request go (sessions mode only).
    subscribers: Option<Subscribers>,
    /// Leases on it: sessions, or requests in flight (stateless).
    sessions: usize,
    /// Since when it has had no lease (stateless: standby and health checks
    /// apply to idle processes only).
    idle_since: Instant,
    last_ping: Instant,
    pinging: bool,
}

/// Sessions of a shared process, by tag: where its unrelated messages go.
type Subscribers = Arc<Mutex<HashMap<SessionTag, mpsc::UnboundedSender<Box<Message>>>>>;

struct Proc {
    state: ProcState,
    generation: u64,
    since: Instant,
    /// A remote connection, for its report (processes report from /proc).
    remote: Option<std::sync::Weak<Upstream>>,
}

struct State {
    ready: VecDeque<Warm>,
    shared: Vec<SharedProc>,
    next_tag: u64,
    /// Spawned and being pre-initialized.
    starting: usize,
    procs: BTreeMap<u32, Proc>,
    generation: u64,
    crashes: VecDeque<Instant>,
    crash_total: u64,
    /// Processes started, and killed for memory, since start.
    spawn_total: u64,
    oom_total: u64,
    last_crash: Option<String>,
    consecutive_crashes: u32,
    retry_at: Option<Instant>,
    failed: Option<Failure>,
    restarts: u64,
    last_used: Instant,
    scaled_to_zero: bool,
    /// When recent sessions took a process (exclusive binding), within the
    /// demand window: the arrival rate.
    arrivals: VecDeque<Instant>,
    /// Moving average of this server's spawn-to-ready time.
    ready_time: Option<Duration>,
    /// The last ready target and why (for `berth ps`).
    target: usize,
    target_reason: TargetReason,
}

/// At most this many arrival times are kept (a rate of 10k sessions/s over
/// the default 3 s window would need more: the rate then reads low, which
/// `max_ready` caps long before).
const ARRIVALS_KEPT: usize = 8192;
/// The rate is never measured over less than this, so the first two
/// sessions a second apart do not read as a flood.
const RATE_MIN_SPAN: Duration = Duration::from_millis(500);
/// Weight of a new spawn-to-ready sample in the moving average.
const READY_TIME_WEIGHT: f64 = 0.3;
/// How long a process beyond the target waits unused before it is stopped
/// when `stop_after` is not set.
const SURPLUS_IDLE: Duration = Duration::from_secs(60);

impl State {
    /// A pool with nothing spawned yet; `scaled_to_zero` for one that starts cold.
    fn new(now: Instant, scaled_to_zero: bool) -> State {
        State {
            ready: VecDeque::new(),
            shared: Vec::new(),
            next_tag: 1,
            starting: 0,
            procs: BTreeMap::new(),
            generation: 1,
            crashes: VecDeque::new(),
            crash_total: 0,
            spawn_total: 0,
            oom_total: 0,
            last_crash: None,
            consecutive_crashes: 0,
            retry_at: None,
            failed: None,
            restarts: 0,
            last_used: now,
            scaled_to_zero,
            arrivals: VecDeque::new(),
            ready_time: None,
            target: 0,
            target_reason: TargetReason::default(),
        }
    }

    /// Sessions per second over the demand window (older arrivals dropped).
    fn arrival_rate(&mut self, now: Instant, window: Duration) -> f64 {
        while self
            .arrivals
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            self.arrivals.pop_front();
        }
        let Some(first) = self.arrivals.front() else {
            return 0.0;
        };
        let span = now
            .duration_since(*first)
            .max(RATE_MIN_SPAN)
            .min(window.max(RATE_MIN_SPAN));
        self.arrivals.len() as f64 / span.as_secs_f64()
    }

    fn note_arrival(&mut self, now: Instant) {
        if self.arrivals.len() == ARRIVALS_KEPT {
            self.arrivals.pop_front();
        }
        self.arrivals.push_back(now);
    }

    fn note_ready_time(&mut self, took: Duration) {
        self.ready_time = Some(match self.ready_time {
            None => took,
            Some(avg) => avg.mul_f64(1.0 - READY_TIME_WEIGHT) + took.mul_f64(READY_TIME_WEIGHT),
        });
    }
}

/// Recent call latencies (µs) and the number of calls. Two histograms
/// take turns so percentiles cover the last `LATENCY_WINDOW` to twice that
/// many calls, not the whole life of the pool.
struct Latency {
    current: Histogram<u64>,
    previous: Histogram<u64>,
    calls: u64,
}

impl Default for Latency {
    fn default() -> Self {
        // 1 µs to an hour at 2 significant digits; bounds this wide cannot fail.
        let histogram = || {
            Histogram::new_with_bounds(1, 3_600_000_000, 2)
                .unwrap_or_else(|_| Histogram::new(2).unwrap_or_else(|_| unreachable!()))
        };
        Latency {
            current: histogram(),
            previous: histogram(),
            calls: 0,
        }
    }
}

struct Inner {
    spec: ServerSpec,
    kind: PoolKind,
    /// Stateless pools: what their processes announce, for listeners.
    announcements: Option<tokio::sync::broadcast::Sender<Announcement>>,
    log: ServerLog,
    state: Mutex<State>,
    /// Kept apart from `state`: every call records here.
    latency: Mutex<Latency>,
    /// Notified when a process has been reaped and accounted for.
    reaped: Notify,
    /// Notified (all waiters) when a shared process has joined the pool or
    /// the pool can no longer give one: sessions waiting for one look again.
    changed: Notify,
    wake: Notify,
    stopping: CancellationToken,
    /// The spec names a secret somewhere (read once: whose secrets a
    /// process gets is asked on every acquisition, 2026-07-28 requests
    /// included, and most servers name none).
    names_secrets: bool,
}

impl Inner {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether several leases share a process.
    fn multiplexes(&self) -> bool {
        self.spec.binding == Binding::Shared || self.stateless()
    }

    fn stateless(&self) -> bool {
        matches!(self.kind, PoolKind::Stateless { .. })
    }

    /// Whether Berth initializes each process before handing it out.
    fn preinitializes(&self) -> bool {
        self.spec.pool.preinitialize
            || self.spec.binding == Binding::Shared
            || self.kind == PoolKind::Stateless { bridge: true }
    }

    /// Whether the next session would find no process waiting for it.
    fn starved(&self) -> bool {
        let state = self.state();
        if self.multiplexes() {
            state.shared.is_empty()
        } else {
            state.ready.is_empty()
        }
    }

    /// Processes a stateless pool keeps while in use.
    fn stateless_target(&self) -> usize {
        self.spec
            .pool
            .min_ready
            .max(1)
            .min(self.spec.pool.max_processes)
    }
}

/// One server's processes. Cheap to clone.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

/// A process leased to one session (or a session's share of a shared
/// process). Released with [`Lease::release`], or when dropped.
pub struct Lease {
    pool: Arc<Inner>,
    upstream: Arc<Upstream>,
    /// The process was initialized by Berth; this is its answer.
    pub init: Option<Arc<InitCache>>,
    released: AtomicBool,
    /// The session's tag on a shared process (`None`: exclusive).
    tag: Option<SessionTag>,
    subscribers: Option<Subscribers>,
    /// Spawned for this session (no ready process was left): when, so its
    /// first successful initialize measures the server's spawn-to-ready time.
    cold_since: Option<Instant>,
    /// That measurement was taken.
    sampled: AtomicBool,
    /// How the process was had.
    pub start: LeaseStart,
}

/// How a lease's process was had: for time-to-first-result by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseStart {
    /// Started for this lease.
    Cold,
    /// Ready and running.
    Warm,
    /// Ready but frozen at standby: thawed for this lease.
    Standby,
    /// A process shared with other sessions.
    Shared,
}

impl Lease {
    pub fn pid(&self) -> u32 {
        self.upstream.pid()
    }

    /// For a remote server whose credential is an exchange of the caller's
    /// token: the token the session's caller presented with this request.
    pub fn present_caller_token(&self, token: &str) {
        self.upstream.present_caller_token(token);
    }

    /// Tells a federated endpoint's connection whose session it serves.
    pub fn bind_owner(&self, owner: Option<SecretOwner>) {
        self.upstream.bind_owner(owner);
    }

    /// A remote connection's report (`None` for a process).
    pub fn remote_report(&self) -> Option<crate::RemoteReport> {
        self.upstream.remote_report()
    }

    /// Sends a request (ids and tokens rewritten on a shared process).
    pub fn call(&self, msg: &Message) -> Result<Exchange, Failure> {
        self.upstream.call_as(msg, self.tag)
    }

    /// Sends a notification or a response to a server request.
    pub fn send(&self, msg: &Message) -> Result<(), Failure> {
        if let Some(tag) = self.tag
            && msg.method() == Some("notifications/cancelled")
        {
            // The client names its own id; the server knows the rewritten one.
            if let Some(failure) = self.upstream.closed() {
                return Err(failure);
            }
            if let Some(id) = Envelope::parse(&msg.bytes)
                .ok()
                .and_then(|e| e.cancelled_request())
            {
                self.upstream
                    .cancel_for(tag, &id, "cancelled by the client");
            }
            return Ok(());
        }
        self.upstream.send(msg)
    }

    pub fn cancel(&self, id: &IdKey, reason: &str) {
        self.upstream.cancel(id, reason)
    }

    pub fn notify(&self, method: &str) -> Result<(), Failure> {
        self.upstream.notify(method)
    }

    pub fn closed(&self) -> Option<Failure> {
        self.upstream.closed()
    }

    pub fn crashed(&self) -> bool {
        self.upstream.crashed()
    }

    /// This session's requests waiting for an answer.
    pub fn in_flight(&self) -> usize {
        match self.tag {
            None => self.upstream.in_flight(),
            Some(tag) => self.upstream.in_flight_of(tag),
        }
    }

    /// Ends the lease: an exclusive process is stopped and reaped; a shared
    /// one just stops serving this session.
    pub async fn release(&self, reason: &str) {
        if self.tag.is_some() {
            self.unbind(reason);
            return;
        }
        if !self.released.swap(true, Ordering::Relaxed) {
            if let Some(p) = self.pool.state().procs.get_mut(&self.upstream.pid()) {
                p.state = ProcState::Draining;
            }
            self.pool.wake.notify_one();
        }
        self.upstream.shutdown(reason).await;
        // Return once the pool has accounted for the exit (a crash included),
        // so what the caller does next sees the pool as it now is.
        let pid = self.upstream.pid();
        let accounted = async {
            loop {
                let reaped = self.pool.reaped.notified();
                if !self.pool.state().procs.contains_key(&pid) {
                    return;
                }
                reaped.await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), accounted).await;
    }

    fn unbind(&self, reason: &str) {
        if self.released.swap(true, Ordering::Relaxed) {
            return;
        }
        if let (Some(subscribers), Some(tag)) = (&self.subscribers, self.tag) {
            subscribers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&tag);
        }
        let pid = self.upstream.pid();
        if let Some(shared) = self
            .pool
            .state()
            .shared
            .iter_mut()
            .find(|p| p.upstream.pid() == pid)
        {
            shared.sessions = shared.sessions.saturating_sub(1);
            if shared.sessions == 0 {
                shared.idle_since = Instant::now();
            }
        }
        // A stateless lease carries one request, whose exchange (or the
        // edge's cancel-on-drop guard) already stopped routing for it; only
        // a session's share can leave requests behind. (Searching every
        // request in flight here would cost O(in flight) per request.)
        if let Some(tag) = self.tag
            && !self.pool.stateless()
        {
            self.upstream
                .forget_session(tag, &Failure::new(ErrorCode::UPSTREAM_CLOSED, reason));
        }
    }

    /// Records how long one call took, for `berth ps`.
    pub fn record_latency(&self, took: Duration) {
        let mut latency = self.pool.latency.lock().unwrap_or_else(|e| e.into_inner());
        if latency.current.len() >= LATENCY_WINDOW {
            let Latency {
                current, previous, ..
            } = &mut *latency;
            std::mem::swap(current, previous);
            current.reset();
        }
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        latency.current.saturating_record(micros);
        latency.calls += 1;
    }

    /// The session initialized fine: consecutive crashes are forgiven. A
    /// process spawned for this session has now shown how long the server
    /// takes from spawn to ready.
    pub fn mark_healthy(&self) {
        let mut state = self.pool.state();
        state.consecutive_crashes = 0;
        state.retry_at = None;
        if let Some(since) = self.cold_since
            && !self.released.load(Ordering::Relaxed)
            && !self.sampled.swap(true, Ordering::Relaxed)
        {
            state.note_ready_time(since.elapsed());
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.tag.is_some() {
            self.unbind("session dropped");
            return;
        }
        if !self.released.swap(true, Ordering::Relaxed)
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            // Stop the process in the background. (Not through another
            // Lease: if the runtime is shutting down, the task is dropped at
            // once, and a Lease in it would drop and spawn again forever.)
            if let Some(p) = self.pool.state().procs.get_mut(&self.upstream.pid()) {
                p.state = ProcState::Draining;
            }
            let upstream = self.upstream.clone();
            runtime.spawn(async move { upstream.shutdown("session dropped").await });
        }
    }
}

const LATENCY_WINDOW: u64 = 1024;

impl Pool {
    /// Creates the pool and starts its maintenance task.
    pub fn start(spec: ServerSpec, log: ServerLog) -> Pool {
        Pool::start_kind(spec, log, PoolKind::Sessions)
    }

    /// A pool for 2026-07-28 stateless requests (see [`PoolKind::Stateless`]).
    /// It starts with no process and spawns its first on first use, so a
    /// server that only handshake-era clients call never runs twice as many.
    pub fn start_stateless(mut spec: ServerSpec, log: ServerLog, bridge: bool) -> Pool {
        // Its processes are multiplexed without being serialized.
        spec.binding = Binding::Exclusive;
        Pool::start_kind(spec, log, PoolKind::Stateless { bridge })
    }

    fn start_kind(spec: ServerSpec, log: ServerLog, kind: PoolKind) -> Pool {
        let now = Instant::now();
        let stateless = matches!(kind, PoolKind::Stateless { .. });
        let names_secrets = spec.secrets.is_some()
            && spec
                .secret_templates()
                .any(|t| !berth_secrets::references(t).is_empty());
        let inner = Arc::new(Inner {
            names_secrets,
            spec,
            kind,
            announcements: stateless.then(|| tokio::sync::broadcast::channel(ANNOUNCEMENTS_KEPT).0),
            log,
            state: Mutex::new(State::new(now, stateless)),
            latency: Mutex::new(Latency::default()),
            reaped: Notify::new(),
            changed: Notify::new(),
            wake: Notify::new(),
            stopping: CancellationToken::new(),
        });
        tokio::spawn(maintain(inner.clone()));
        Pool { inner }
    }

    pub fn spec(&self) -> &ServerSpec {
        &self.inner.spec
    }

    pub fn kind(&self) -> PoolKind {
        self.inner.kind
    }

    /// Listens to what a stateless pool's processes announce outside any
    /// request (`None` for a sessions pool, whose sessions hear it themselves).
    pub fn announcements(&self) -> Option<tokio::sync::broadcast::Receiver<Announcement>> {
        self.inner.announcements.as_ref().map(|tx| tx.subscribe())
    }

    pub fn log(&self) -> &ServerLog {
        &self.inner.log
    }

    /// A process for a new session: a ready one if any, else a fresh one
    /// (shared binding: the least busy shared process, waiting for one to be
    /// initialized if none is yet). The receiver carries the process's
    /// messages that concern no request.
    pub async fn acquire(&self) -> Result<(Lease, Unsolicited), AcquireError> {
        self.acquire_as(None).await
    }

    /// A process for a session of `owner`: one started with the owner's own
    /// secrets when it has any among those the server names (never a
    /// process started for anyone else), otherwise as [`Pool::acquire`].
    pub async fn acquire_as(
        &self,
        owner: Option<&SecretOwner>,
    ) -> Result<(Lease, Unsolicited), AcquireError> {
        if let Some(owned) = self.owned_spec(owner)? {
            return self.acquire_own(owned);
        }
        let deadline = tokio::time::Instant::now() + self.inner.spec.init_timeout;
        if !self.inner.multiplexes() {
            return self.acquire_exclusive_waiting(deadline).await;
        }
        loop {
            // Registered before looking, so a process that joins between
            // the look and the wait still wakes this session.
            let changed = self.inner.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(taken) = self.try_share()? {
                return Ok(taken);
            }
            self.inner.wake.notify_one();
            tokio::select! {
                _ = changed => {}
                _ = self.inner.stopping.cancelled() => return Err(AcquireError::Stopping),
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(AcquireError::AtCapacity {
                        max: self.inner.spec.pool.max_processes,
                    });
                }
            }
        }
    }

    /// An exclusive process; when all `max_processes` are alive but some are
    /// still starting (a refill after a burst), waits for the first of them
    /// rather than refusing the session.
    async fn acquire_exclusive_waiting(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<(Lease, Unsolicited), AcquireError> {
        loop {
            let changed = self.inner.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match self.acquire_exclusive() {
                Err(AcquireError::AtCapacity { max }) => {
                    if self.inner.state().starting == 0 {
                        return Err(AcquireError::AtCapacity { max });
                    }
                    tokio::select! {
                        _ = changed => {}
                        _ = self.inner.stopping.cancelled() => return Err(AcquireError::Stopping),
                        _ = tokio::time::sleep_until(deadline) => {
                            return Err(AcquireError::AtCapacity { max });
                        }
                    }
                }
                other => return other,
            }
        }
    }

    /// The server's spec bound to `owner`'s secrets, when the owner has
    /// values of its own for secrets the server names.
    fn owned_spec(&self, owner: Option<&SecretOwner>) -> Result<Option<ServerSpec>, AcquireError> {
        let spec = &self.inner.spec;
        let (Some(secrets), Some(owner), true) = (&spec.secrets, owner, self.inner.names_secrets)
        else {
            return Ok(None);
        };
        let owned = secrets.for_owner(Some(owner.clone()));
        let own = match owned.owns_any(spec.secret_templates()) {
            Ok(own) => own,
            // The caller has no value where others have theirs: refused here.
            Err(miss) if miss.caller_lacks => return Err(AcquireError::Secret(miss.message)),
            // Missing for everyone: the spawn says so, as for any process.
            Err(_) => return Ok(None),
        };
        if !own {
            return Ok(None);
        }
        if self.inner.stateless() {
            return Err(AcquireError::Secret(
                "it serves 2026-07-28 requests from processes it shares between callers, so it cannot use the secrets stored for you; open a session (initialize) instead".into(),
            ));
        }
        if self.inner.multiplexes() {
            return Err(AcquireError::Secret(
                "it shares its processes between callers (binding = \"shared\"), so it cannot use secrets stored for one principal; give it shared secrets only, or use binding = \"exclusive\"".into(),
            ));
        }
        let mut spec = spec.clone();
        spec.secrets = Some(owned);
        Ok(Some(spec))
    }

    /// A process of the owner's alone, started now (never from the warm
    /// pool, never back to it).
    fn acquire_own(&self, spec: ServerSpec) -> Result<(Lease, Unsolicited), AcquireError> {
        let inner = &self.inner;
        let mut state = inner.state();
        admit(inner, &mut state)?;
        let now = Instant::now();
        state.note_arrival(now);
        cold_lease(inner, state, &spec, now)
    }

    fn try_share(&self) -> Result<Option<(Lease, Unsolicited)>, AcquireError> {
        let inner = &self.inner;
        let mut guard = inner.state();
        admit(inner, &mut guard)?;
        let state = &mut *guard;
        let tag = SessionTag(state.next_tag);
        let Some(shared) = state
            .shared
            .iter_mut()
            .filter(|p| p.upstream.closed().is_none())
            .min_by_key(|p| p.sessions)
        else {
            return Ok(None);
        };
        shared.sessions += 1;
        if shared.upstream.is_frozen() {
            shared.upstream.thaw();
            if let Some(p) = state.procs.get_mut(&shared.upstream.pid()) {
                p.state = ProcState::Shared;
            }
        }
        // A stateless lease hears nothing outside its request: the pool's
        // announcements carry that (the receiver here just closes).
        let (tx, rx) = mpsc::unbounded_channel();
        if let Some(subscribers) = &shared.subscribers {
            subscribers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(tag, tx);
        }
        let lease = Lease {
            pool: inner.clone(),
            upstream: shared.upstream.clone(),
            init: shared.init.clone(),
            released: AtomicBool::new(false),
            tag: Some(tag),
            subscribers: shared.subscribers.clone(),
            cold_since: None,
            sampled: AtomicBool::new(false),
            start: LeaseStart::Shared,
        };
        state.next_tag += 1;
        Ok(Some((lease, Unsolicited::fanned_out(rx))))
    }

    /// A lease on every live process of a stateless pool, for what must
    /// reach them all (a resource subscription: any process may see the
    /// change). Empty for a sessions pool, or before the first process is up.
    pub fn lease_each(&self) -> Vec<Lease> {
        if !self.inner.stateless() {
            return Vec::new();
        }
        let inner = &self.inner;
        let mut guard = inner.state();
        let state = &mut *guard;
        let mut leases = Vec::new();
        let mut tag = state.next_tag;
        for shared in state
            .shared
            .iter_mut()
            .filter(|p| p.upstream.closed().is_none())
        {
            shared.sessions += 1;
            if shared.upstream.is_frozen() {
                shared.upstream.thaw();
                if let Some(p) = state.procs.get_mut(&shared.upstream.pid()) {
                    p.state = ProcState::Shared;
                }
            }
            leases.push(Lease {
                pool: inner.clone(),
                upstream: shared.upstream.clone(),
                init: shared.init.clone(),
                released: AtomicBool::new(false),
                tag: Some(SessionTag(tag)),
                subscribers: None,
                cold_since: None,
                sampled: AtomicBool::new(false),
                start: LeaseStart::Shared,
            });
            tag += 1;
        }
        state.next_tag = tag;
        leases
    }

    fn acquire_exclusive(&self) -> Result<(Lease, Unsolicited), AcquireError> {
        let inner = &self.inner;
        let mut state = inner.state();
        admit(inner, &mut state)?;
        let now = Instant::now();
        state.note_arrival(now);
        // Most recently readied first: the warmest, least likely frozen.
        while let Some(warm) = state.ready.pop_back() {
            if warm.upstream.closed().is_some() {
                continue;
            }
            if let Some(p) = state.procs.get_mut(&warm.upstream.pid()) {
                p.state = ProcState::Leased;
                p.since = now;
            }
            drop(state);
            let start = if warm.upstream.is_frozen() {
                LeaseStart::Standby
            } else {
                LeaseStart::Warm
            };
            warm.upstream.thaw();
            inner.wake.notify_one();
            let lease = Lease {
                pool: inner.clone(),
                upstream: warm.upstream,
                init: warm.init,
                released: AtomicBool::new(false),
                tag: None,
                subscribers: None,
                cold_since: None,
                sampled: AtomicBool::new(false),
                start,
            };
            return Ok((lease, warm.unsolicited));
        }
        cold_lease(inner, state, &inner.spec, now)
    }

    /// Rolling restart: waiting processes are replaced by new ones, sessions
    /// keep their processes until they end, and a failed server is retried.
    pub fn restart(&self) {
        let drained = {
            let mut state = self.inner.state();
            state.generation += 1;
            state.failed = None;
            state.crashes.clear();
            state.consecutive_crashes = 0;
            state.retry_at = None;
            std::mem::take(&mut state.ready)
        };
        self.inner.log.push(
            None,
            LogSource::Lifecycle,
            "restart requested: replacing waiting processes; sessions drain",
        );
        drain(&self.inner, drained, "restarted");
        self.inner.wake.notify_one();
    }

    /// Stops the pool: no more sessions; waiting processes are stopped and reaped.
    pub async fn stop(&self) {
        self.inner.stopping.cancel();
        let (ready, shared) = {
            let mut state = self.inner.state();
            (
                std::mem::take(&mut state.ready),
                std::mem::take(&mut state.shared),
            )
        };
        let processes = ready
            .iter()
            .map(|w| w.upstream.clone())
            .chain(shared.iter().map(|s| s.upstream.clone()));
        futures::future::join_all(
            processes.map(|p| async move { p.shutdown("the server is being stopped").await }),
        )
        .await;
    }

    pub fn report(&self) -> PoolReport {
        let mut state = self.inner.state();
        let now = Instant::now();
        let arrival_rate = state.arrival_rate(now, self.inner.spec.pool.demand_window);
        let current = state.generation;
        let mut processes: Vec<ProcessReport> = state
            .procs
            .iter()
            .map(|(pid, p)| ProcessReport {
                pid: *pid,
                sessions: state
                    .shared
                    .iter()
                    .find(|s| s.upstream.pid() == *pid)
                    .map_or(0, |s| s.sessions),
                state: if p.state == ProcState::Leased && p.generation < current {
                    ProcState::Draining
                } else {
                    p.state
                },
                generation: p.generation,
                age_ms: now.duration_since(p.since).as_millis() as u64,
                remote: p
                    .remote
                    .as_ref()
                    .and_then(std::sync::Weak::upgrade)
                    .and_then(|u| u.remote_report()),
                endpoint: p
                    .remote
                    .as_ref()
                    .and_then(std::sync::Weak::upgrade)
                    .and_then(|u| u.endpoint_report()),
            })
            .collect();
        processes.sort_by_key(|p| p.pid);
        let (recent, calls) = {
            let latency = self.inner.latency.lock().unwrap_or_else(|e| e.into_inner());
            let mut recent = latency.current.clone();
            // Same bounds: adding cannot fail.
            let _ = recent.add(&latency.previous);
            (recent, latency.calls)
        };
        let pct = |q: f64| -> Option<f64> {
            (!recent.is_empty()).then(|| recent.value_at_quantile(q) as f64 / 1000.0)
        };
        PoolReport {
            server: self.inner.spec.name.clone(),
            status: if state.failed.is_some() {
                PoolStatus::Failed
            } else if state.procs.is_empty() {
                PoolStatus::Idle
            } else {
                PoolStatus::Running
            },
            failure: state.failed.as_ref().map(|f| f.message.clone()),
            last_exit: state.last_crash.clone(),
            stray_lines: self.inner.log.strays(),
            processes,
            restarts: state.restarts,
            crashes: state.crash_total,
            spawns: state.spawn_total,
            oom_kills: state.oom_total,
            calls,
            p50_ms: pct(0.50),
            p99_ms: pct(0.99),
            ready_target: state.target,
            target_reason: state.target_reason,
            arrival_rate,
            ready_time_ms: state.ready_time.map(|t| t.as_secs_f64() * 1000.0),
        }
    }
}

/// Whether the pool takes a new session now; notes the use (for scale to zero).
fn admit(inner: &Inner, state: &mut State) -> Result<(), AcquireError> {
    if inner.stopping.is_cancelled() {
        return Err(AcquireError::Stopping);
    }
    if let Some(failure) = &state.failed {
        return Err(AcquireError::Failed(failure.clone()));
    }
    state.last_used = Instant::now();
    if state.scaled_to_zero {
        state.scaled_to_zero = false;
        inner.wake.notify_one();
    }
    Ok(())
}

/// A process started now for one session (`spec`: the pool's, or bound to
/// an owner's secrets), within `max_processes`; the pool is woken to
/// refill behind it.
fn cold_lease(
    inner: &Arc<Inner>,
    mut state: std::sync::MutexGuard<'_, State>,
    spec: &ServerSpec,
    now: Instant,
) -> Result<(Lease, Unsolicited), AcquireError> {
    if state.procs.len() >= inner.spec.pool.max_processes {
        return Err(AcquireError::AtCapacity {
            max: inner.spec.pool.max_processes,
        });
    }
    let (upstream, unsolicited) = spawn_watched_as(inner, &mut state, ProcState::Leased, spec)
        .map_err(AcquireError::Spawn)?;
    drop(state);
    inner.wake.notify_one();
    let lease = Lease {
        pool: inner.clone(),
        upstream,
        init: None,
        released: AtomicBool::new(false),
        tag: None,
        subscribers: None,
        cold_since: Some(now),
        sampled: AtomicBool::new(false),
        start: LeaseStart::Cold,
    };
    Ok((lease, unsolicited))
}

/// Spawns a process and a task that watches it until it is reaped.
fn spawn_watched(
    inner: &Arc<Inner>,
    state: &mut State,
    as_state: ProcState,
) -> Result<(Arc<Upstream>, Unsolicited), SpawnError> {
    spawn_watched_as(inner, state, as_state, &inner.spec)
}

/// [`spawn_watched`] with a spec of the pool's server bound to one owner.
fn spawn_watched_as(
    inner: &Arc<Inner>,
    state: &mut State,
    as_state: ProcState,
    spec: &ServerSpec,
) -> Result<(Arc<Upstream>, Unsolicited), SpawnError> {
    let (upstream, unsolicited) = match crate::connect::open(spec, inner.log.clone()) {
        Ok(spawned) => spawned,
        Err(e) => {
            inner.log.push(None, LogSource::Lifecycle, e.to_string());
            note_crash(inner, state, &e.to_string(), Vec::new());
            return Err(e);
        }
    };
    let upstream = Arc::new(upstream);
    let pid = upstream.pid();
    state.spawn_total += 1;
    state.procs.insert(
        pid,
        Proc {
            state: as_state,
            generation: state.generation,
            since: Instant::now(),
            remote: crate::is_remote_number(pid).then(|| Arc::downgrade(&upstream)),
        },
    );
    let mut watch = upstream.watch();
    let watched = inner.clone();
    tokio::spawn(async move {
        let (how, crashed) = watch.ended().await;
        // A crash is reported with the stderr the process left behind.
        if crashed {
            let _ = watch.failure().await;
        }
        let mut state = watched.state();
        state.procs.remove(&pid);
        if watch.oom_killed() {
            state.oom_total += 1;
        }
        if crashed {
            let stderr = watched.log.last_stderr(pid, 10);
            note_crash(
                &watched,
                &mut state,
                &format!("process {pid} {how}"),
                stderr,
            );
        }
        drop(state);
        watched.wake.notify_one();
        watched.reaped.notify_waiters();
        watched.changed.notify_waiters();
    });
    Ok((upstream, unsolicited))
}

/// Counts a crash: backs off the next spawn, and gives up on the server after
/// `max_crashes` within `window`.
fn note_crash(inner: &Inner, state: &mut State, what: &str, stderr: Vec<String>) {
    let policy = inner.spec.crash;
    let now = Instant::now();
    state.crash_total += 1;
    state.last_crash = Some(what.to_string());
    state.crashes.push_back(now);
    while state
        .crashes
        .front()
        .is_some_and(|t| now.duration_since(*t) > policy.window)
    {
        state.crashes.pop_front();
    }
    state.consecutive_crashes = state.consecutive_crashes.saturating_add(1);
    let exp = policy
        .backoff_base
        .saturating_mul(1u32 << state.consecutive_crashes.saturating_sub(1).min(16));
    state.retry_at = Some(now + exp.min(policy.backoff_max).mul_f64(backoff_jitter()));
    if state.failed.is_none() && state.crashes.len() >= policy.max_crashes {
        let last = stderr
            .last()
            .map(|l| format!("; last stderr: {l}"))
            .unwrap_or_default();
        let message = format!(
            "server `{}` is failing: it crashed {} times within {:?} ({what}{last}); fix it, then run `berth restart {}`",
            inner.spec.name,
            state.crashes.len(),
            policy.window,
            inner.spec.name
        );
        inner.log.push(None, LogSource::Lifecycle, message.clone());
        let mut failure = Failure::new(ErrorCode::UNAVAILABLE, message);
        failure.data = Some(serde_json::json!({ "server": inner.spec.name, "stderr": stderr }));
        state.failed = Some(failure);
        let ready = std::mem::take(&mut state.ready);
        drain(inner, ready, "the server is failing");
    }
    // Sessions waiting for a shared process see the failure (or retry).
    inner.changed.notify_waiters();
}

/// A factor in [0.5, 1.5) applied to each restart delay, so servers that
/// crashed together (a shared dependency went down) do not restart in lockstep.
fn backoff_jitter() -> f64 {
    rand::rng().random_range(0.5..1.5)
}

fn drain(inner: &Inner, processes: VecDeque<Warm>, reason: &'static str) {
    let _ = inner;
    for warm in processes {
        tokio::spawn(async move { warm.upstream.shutdown(reason).await });
    }
}

/// How long a refill waits after the event that called for it, while a
/// ready process is left for the next session.
const REFILL_DELAY: Duration = Duration::from_millis(20);

/// The pool's background work; runs until the pool stops.
async fn maintain(inner: Arc<Inner>) {
    let pool = &inner.spec.pool;
    let mut tick = Duration::from_secs(1);
    if let Some(standby) = pool.standby_after {
        tick = tick.min(standby / 2);
    }
    if let Some(stop) = pool.stop_after {
        tick = tick.min(stop / 2);
    }
    let tick = tick.max(Duration::from_millis(10));
    loop {
        let woken = tokio::select! {
            _ = inner.stopping.cancelled() => break,
            _ = inner.wake.notified() => true,
            _ = tokio::time::sleep(tick) => false,
        };
        if woken && !inner.starved() {
            // Usually a session just took a process: let its first requests
            // run before a refill's fork/exec competes with them for the CPU.
            // Not when none is left: the next session would wait for a boot.
            tokio::time::sleep(REFILL_DELAY).await;
        }
        maintain_once(&inner);
    }
}

fn maintain_once(inner: &Arc<Inner>) {
    let config = &inner.spec.pool;
    let now = Instant::now();
    let mut state = inner.state();
    let mut stop = VecDeque::new();
    let mut stop_shared = Vec::new();

    // Waiting processes: drop dead ones, answer what they ask, freeze idle ones.
    let mut keep = VecDeque::with_capacity(state.ready.len());
    while let Some(mut warm) = state.ready.pop_front() {
        if warm.upstream.closed().is_some() {
            continue;
        }
        answer_without_client(&mut warm);
        if let Some(after) = config.standby_after
            && !warm.upstream.is_frozen()
            && !warm.pinging
            && now.duration_since(warm.since) >= after
        {
            warm.upstream.freeze();
            if let Some(p) = state.procs.get_mut(&warm.upstream.pid()) {
                p.state = ProcState::Standby;
            }
        }
        if !warm.upstream.is_frozen()
            && !warm.pinging
            && now.duration_since(warm.last_ping) >= config.health_interval
        {
            warm.pinging = true;
            warm.last_ping = now;
            tokio::spawn(health_check(
                inner.clone(),
                warm.upstream.clone(),
                Waiting::Ready,
            ));
        }
        keep.push_back(warm);
    }
    state.ready = keep;

    // Scale to zero after `stop_after` without a session.
    if let Some(after) = config.stop_after
        && !state.scaled_to_zero
        && now.duration_since(state.last_used) >= after
        && !state.procs.values().any(|p| p.state == ProcState::Leased)
        && !(inner.stateless() && state.shared.iter().any(|p| p.sessions > 0))
    {
        state.scaled_to_zero = true;
        stop = std::mem::take(&mut state.ready);
        if inner.stateless() {
            stop_shared = std::mem::take(&mut state.shared);
        }
        if !stop.is_empty() || !stop_shared.is_empty() {
            inner.log.push(
                None,
                LogSource::Lifecycle,
                format!("no session for {after:?}: scaling to zero"),
            );
        }
    }

    // Refill up to `min_ready`, within `max_processes`, unless backing off or failed.
    // (A shared pool keeps `max_processes` processes for all its sessions.)
    state.shared.retain(|p| p.upstream.closed().is_none());
    if inner.stateless() {
        rest_idle_stateless(inner, &mut state, now);
    }
    let (target, reason) = if state.scaled_to_zero || state.failed.is_some() {
        (0, TargetReason::Idle)
    } else if inner.spec.binding == Binding::Shared {
        (config.max_processes, TargetReason::Fixed)
    } else if inner.stateless() {
        (inner.stateless_target(), TargetReason::Fixed)
    } else {
        demand_target(config, &mut state, now)
    };
    state.target = target;
    state.target_reason = reason;
    // Waiting processes demand no longer needs: the longest-waiting first,
    // once unused for `stop_after` (they were frozen at `standby_after`).
    let mut retired = VecDeque::new();
    if !inner.multiplexes() {
        let retire_after = config.stop_after.unwrap_or(SURPLUS_IDLE);
        let mut surplus = (state.ready.len() + state.starting).saturating_sub(target);
        while surplus > 0
            && let Some(warm) = state.ready.front()
            && !warm.pinging
            && now.duration_since(warm.since) >= retire_after
        {
            retired.extend(state.ready.pop_front());
            surplus -= 1;
        }
        if !retired.is_empty() {
            inner.log.push(
                None,
                LogSource::Lifecycle,
                format!(
                    "{} waiting process(es) beyond the ready target ({target}, {reason}) unused for {retire_after:?}: stopping them",
                    retired.len()
                ),
            );
        }
    }
    let backing_off = state.retry_at.is_some_and(|t| now < t);
    while !backing_off
        && !inner.stopping.is_cancelled()
        && state.ready.len() + state.shared.len() + state.starting < target
        && state.procs.len() < config.max_processes
    {
        let Ok((upstream, unsolicited)) = spawn_watched(inner, &mut state, ProcState::Starting)
        else {
            break;
        };
        if state.crash_total > 0 {
            state.restarts += 1;
        }
        state.starting += 1;
        tokio::spawn(warm_up(inner.clone(), upstream, unsolicited, now));
    }
    drop(state);
    drain(inner, stop, "scaled to zero");
    drain(inner, retired, "no longer needed");
    for shared in stop_shared {
        tokio::spawn(async move { shared.upstream.shutdown("scaled to zero").await });
    }
}

/// The ready target of an exclusive pool: enough processes ready or starting
/// to serve the sessions that arrive while one boots (rate × the server's
/// measured spawn-to-ready time × headroom), at least `min_ready`, at most
/// `max_ready` and what `max_processes` leaves beside the leased ones.
/// A pool with `min_ready = 0` is cold by choice (every session spawns its
/// own process, nothing idles): demand does not warm it.
fn demand_target(
    config: &crate::PoolConfig,
    state: &mut State,
    now: Instant,
) -> (usize, TargetReason) {
    let rate = state.arrival_rate(now, config.demand_window);
    if config.min_ready == 0 {
        return (0, TargetReason::Floor);
    }
    let waiting = state.ready.len() + state.starting;
    let busy = state.procs.len().saturating_sub(waiting);
    let cap = config
        .max_ready
        .min(config.max_processes.saturating_sub(busy));
    let demand = match state.ready_time {
        // `as` saturates: a huge or NaN product cannot wrap.
        Some(ready) => (rate * ready.as_secs_f64() * config.headroom).ceil() as usize,
        // Nothing measured yet: the first cold session will tell.
        None => 0,
    };
    // `min_ready` wins over the caps: it is the operator's explicit floor.
    if demand <= config.min_ready || cap <= config.min_ready {
        (config.min_ready, TargetReason::Floor)
    } else if demand > cap {
        (cap, TargetReason::MaxReady)
    } else {
        (demand, TargetReason::Demand)
    }
}

/// Initializes a new process (when configured) and adds it to the ready set.
async fn warm_up(
    inner: Arc<Inner>,
    upstream: Arc<Upstream>,
    mut unsolicited: Unsolicited,
    spawned: Instant,
) {
    let prepared = if inner.preinitializes() {
        let capabilities = if inner.stateless() {
            BRIDGE_CAPABILITIES
        } else {
            PREINIT_CAPABILITIES
        };
        preinitialize(&upstream, inner.spec.init_timeout, capabilities)
            .await
            .map(|init| Some(Arc::new(init)))
    } else if inner.stateless() {
        crate::era::open_listen(&upstream, &mut unsolicited, inner.spec.init_timeout)
            .await
            .map(|()| None)
    } else {
        Ok(None)
    };
    let init = match prepared {
        Ok(init) => init,
        Err(failure) => {
            {
                inner.log.push(
                    Some(upstream.pid()),
                    LogSource::Lifecycle,
                    format!("pre-initialization failed: {}", failure.message),
                );
                let mut state = inner.state();
                state.starting -= 1;
                // An exit is counted by the process watch; a bad answer is a crash too.
                if upstream.closed().is_none() {
                    let stderr = inner.log.last_stderr(upstream.pid(), 10);
                    note_crash(&inner, &mut state, &failure.message, stderr);
                }
            }
            inner.changed.notify_waiters();
            upstream.shutdown("pre-initialization failed").await;
            return;
        }
    };
    let now = Instant::now();
    let stopping = {
        let mut state = inner.state();
        state.starting -= 1;
        state.note_ready_time(now.duration_since(spawned));
        let stopping = inner.stopping.is_cancelled();
        if !stopping && inner.multiplexes() {
            if let Some(p) = state.procs.get_mut(&upstream.pid()) {
                p.state = ProcState::Shared;
                p.since = now;
            }
            let audience = match &inner.announcements {
                Some(tx) => Audience::Listeners(tx.clone()),
                None => Audience::Sessions(Subscribers::default()),
            };
            let subscribers = match &audience {
                Audience::Sessions(s) => Some(s.clone()),
                Audience::Listeners(_) => None,
            };
            tokio::spawn(fan_out(upstream.clone(), unsolicited, audience));
            state.shared.push(SharedProc {
                upstream: upstream.clone(),
                init,
                subscribers,
                sessions: 0,
                idle_since: now,
                last_ping: now,
                pinging: false,
            });
        } else if !stopping {
            if let Some(p) = state.procs.get_mut(&upstream.pid()) {
                p.state = ProcState::Ready;
                p.since = now;
            }
            state.ready.push_back(Warm {
                upstream: upstream.clone(),
                unsolicited,
                init,
                since: now,
                last_ping: now,
                pinging: false,
            });
        }
        stopping
    };
    inner.changed.notify_waiters();
    if stopping {
        upstream.shutdown("the server is being stopped").await;
    }
}

/// Who hears a shared process's messages about no request.
enum Audience {
    /// Every session on it.
    Sessions(Subscribers),
    /// The stateless pool's listeners.
    Listeners(tokio::sync::broadcast::Sender<Announcement>),
}

/// Hands a shared process's messages about no request to its audience;
/// answers its requests itself (none can be tied to one client). When the
/// process is gone, its sessions' channels close.
async fn fan_out(upstream: Arc<Upstream>, mut unsolicited: Unsolicited, audience: Audience) {
    while let Some(msg) = unsolicited.recv().await {
        if msg.kind == Kind::Request {
            answer_as_berth(&upstream, &msg);
            continue;
        }
        match &audience {
            Audience::Sessions(subscribers) => {
                for tx in subscribers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .values()
                {
                    let _ = tx.send(msg.clone());
                }
            }
            // No listener is not an error: the announcement concerns no one.
            Audience::Listeners(tx) => {
                let _ = tx.send(Arc::from(msg));
            }
        }
    }
    if let Audience::Sessions(subscribers) = audience {
        subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// Berth's own `initialize`, on behalf of a client to come.
async fn preinitialize(
    upstream: &Upstream,
    timeout: Duration,
    capabilities: &str,
) -> Result<InitCache, Failure> {
    let params = serde_json::json!({
        "protocolVersion": ProtocolVersion::LATEST.as_str(),
        "capabilities": serde_json::from_str::<serde_json::Value>(capabilities).unwrap_or_default(),
        "clientInfo": { "name": "berth", "version": env!("CARGO_PKG_VERSION") },
    });
    let answer = upstream
        .request("initialize", Some(params), timeout)
        .await?;
    let envelope = Envelope::parse(&answer.bytes)
        .map_err(|e| Failure::new(ErrorCode::UPSTREAM_CLOSED, e.to_string()))?;
    let Some(result) = envelope.result else {
        let text = String::from_utf8_lossy(&answer.bytes).into_owned();
        return Err(Failure::new(
            ErrorCode::UPSTREAM_CLOSED,
            format!("the server refused initialize: {text}"),
        ));
    };
    let cache = InitCache::from_result(result).ok_or_else(|| {
        Failure::new(
            ErrorCode::UPSTREAM_CLOSED,
            "the initialize result has no protocolVersion",
        )
    })?;
    upstream.notify("notifications/initialized")?;
    Ok(cache)
}

/// A waiting process has no client: Berth answers its requests (ping with
/// `{}`, anything else with an error) and drops its notifications.
fn answer_without_client(warm: &mut Warm) {
    while let Ok(msg) = warm.unsolicited.try_recv() {
        if msg.kind == Kind::Request {
            answer_as_berth(&warm.upstream, &msg);
        }
    }
}

/// Answers a server's request when no client can: ping with `{}`, anything
/// else with an error.
fn answer_as_berth(upstream: &Upstream, msg: &Message) {
    {
        let id = msg.raw_id();
        let reply = if msg.method() == Some("ping") {
            Bytes::from(format!(
                r#"{{"jsonrpc":"2.0","id":{},"result":{{}}}}"#,
                id.as_deref().unwrap_or("null")
            ))
        } else {
            error_response(
                id.as_deref(),
                ErrorCode::METHOD_NOT_FOUND,
                "no client is connected to this process yet",
                None,
            )
        };
        if let Ok(reply) = Message::parse(reply) {
            let _ = upstream.send(&reply);
        }
    }
}

/// Stateless processes with no request in flight: frozen after
/// `standby_after` (thawed by the next request), checked every
/// `health_interval` while awake (`server/discover` for a modern process,
/// `ping` for a bridged one) and replaced when they do not answer.
fn rest_idle_stateless(inner: &Arc<Inner>, state: &mut State, now: Instant) {
    let config = &inner.spec.pool;
    let State { shared, procs, .. } = state;
    for p in shared.iter_mut().filter(|p| p.sessions == 0 && !p.pinging) {
        if let Some(after) = config.standby_after
            && !p.upstream.is_frozen()
            && now.duration_since(p.idle_since) >= after
        {
            p.upstream.freeze();
            if let Some(proc) = procs.get_mut(&p.upstream.pid()) {
                proc.state = ProcState::Standby;
            }
        }
        if !p.upstream.is_frozen() && now.duration_since(p.last_ping) >= config.health_interval {
            p.pinging = true;
            p.last_ping = now;
            tokio::spawn(health_check(
                inner.clone(),
                p.upstream.clone(),
                Waiting::Shared,
            ));
        }
    }
}

/// Which of a pool's idle lists a checked process waits in.
#[derive(Clone, Copy)]
enum Waiting {
    /// `ready`: a handshake-era process waiting for a session.
    Ready,
    /// `shared`: a stateless process with no request in flight.
    Shared,
}

/// Checks a waiting process: `ping`, or `server/discover` for a modern
/// stateless process (the 2026-07-28 revision removed `ping`). One that does
/// not answer in `health_timeout` is taken out of the pool and replaced.
async fn health_check(inner: Arc<Inner>, upstream: Arc<Upstream>, waiting: Waiting) {
    let timeout = inner.spec.pool.health_timeout;
    let result = if inner.stateless() && !inner.preinitializes() {
        let params = crate::era::own_params(serde_json::json!({}));
        upstream
            .request("server/discover", Some(params), timeout)
            .await
    } else {
        upstream.request("ping", None, timeout).await
    };
    let pid = upstream.pid();
    let removed = {
        let mut state = inner.state();
        let unresponsive = result.is_err();
        match waiting {
            Waiting::Ready => settle_check(&mut state.ready, pid, unresponsive, |w| {
                (w.upstream.pid(), &mut w.pinging)
            }),
            Waiting::Shared => settle_check(&mut state.shared, pid, unresponsive, |p| {
                (p.upstream.pid(), &mut p.pinging)
            }),
        }
    };
    if let (true, Err(failure)) = (removed, result) {
        inner.log.push(
            Some(pid),
            LogSource::Lifecycle,
            format!("unresponsive ({}); replacing it", failure.message),
        );
        upstream.shutdown("failed its health check").await;
        inner.wake.notify_one();
    }
}

/// Marks process `pid` of `list` as checked; removes it if unresponsive.
/// Whether it was removed.
fn settle_check<T, L>(
    list: &mut L,
    pid: u32,
    unresponsive: bool,
    key: fn(&mut T) -> (u32, &mut bool),
) -> bool
where
    L: Extend<T> + IntoIterator<Item = T> + Default,
    for<'a> &'a mut L: IntoIterator<Item = &'a mut T>,
{
    let mut removed = false;
    for item in &mut *list {
        let (id, pinging) = key(item);
        if id == pid {
            *pinging = false;
        }
    }
    if unresponsive {
        let kept: Vec<T> = std::mem::take(list)
            .into_iter()
            .filter_map(|mut item| {
                if key(&mut item).0 == pid {
                    removed = true;
                    None
                } else {
                    Some(item)
                }
            })
            .collect();
        list.extend(kept);
    }
    removed
}

/// An endpoint opens its members' sessions from their pools.
impl crate::MemberSource for Pool {
    fn open(&self, owner: Option<SecretOwner>) -> crate::OpeningMember {
        let pool = self.clone();
        Box::pin(async move {
            let (lease, unsolicited) = pool
                .acquire_as(owner.as_ref())
                .await
                .map_err(|e| e.to_string())?;
            Ok((Arc::new(lease) as Arc<dyn crate::MemberLink>, unsolicited))
        })
    }
}

impl crate::MemberLink for Lease {
    fn call(&self, msg: &Message) -> Result<Exchange, Failure> {
        Lease::call(self, msg)
    }

    fn send(&self, msg: &Message) -> Result<(), Failure> {
        Lease::send(self, msg)
    }

    fn notify(&self, method: &str) -> Result<(), Failure> {
        Lease::notify(self, method)
    }

    fn closed(&self) -> Option<Failure> {
        Lease::closed(self)
    }

    fn preinitialized(&self) -> bool {
        self.init.is_some()
    }

    fn mark_healthy(&self) {
        Lease::mark_healthy(self)
    }

    fn pid(&self) -> u32 {
        Lease::pid(self)
    }
}

impl crate::PoolLookup {
    /// Members found among these pools (the gateway's servers).
    pub fn pools(find: impl Fn(&str) -> Option<Pool> + Send + Sync + 'static) -> crate::PoolLookup {
        crate::PoolLookup::new(move |name| {
            find(name).map(|pool| Arc::new(pool) as Arc<dyn crate::MemberSource>)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_jitter_spreads_over_its_range() {
        let draws: Vec<f64> = (0..2000).map(|_| backoff_jitter()).collect();
        assert!(draws.iter().all(|j| (0.5..1.5).contains(j)), "{draws:?}");
        // Ten buckets of 0.1 across [0.5, 1.5): a uniform draw fills each
        // with ~200; a constant or a narrow spread leaves most empty.
        let mut buckets = [0usize; 10];
        for j in &draws {
            buckets[(((j - 0.5) * 10.0) as usize).min(9)] += 1;
        }
        assert!(buckets.iter().all(|&n| n >= 100), "{buckets:?}");
        let distinct: std::collections::BTreeSet<u64> = draws.iter().map(|j| j.to_bits()).collect();
        assert!(distinct.len() > 1900, "{} distinct of 2000", distinct.len());
    }

    #[test]
    fn arrival_rate_reads_a_steady_rate_and_forgets_after_the_window() {
        let start = Instant::now();
        let mut state = test_state(start);
        let window = Duration::from_secs(3);
        // 30 per second for 2 s.
        for i in 0..60 {
            state.note_arrival(start + Duration::from_millis(i * 1000 / 30));
        }
        let now = start + Duration::from_secs(2);
        let rate = state.arrival_rate(now, window);
        assert!((27.0..33.0).contains(&rate), "{rate}");
        // A dip of a second does not drop it to zero ...
        let rate = state.arrival_rate(now + Duration::from_secs(1), window);
        assert!(rate > 15.0, "{rate}");
        // ... a whole window without arrivals does.
        assert_eq!(state.arrival_rate(now + window, window), 0.0);
    }

    #[test]
    fn the_demand_target_is_clamped_between_floor_and_caps() {
        let start = Instant::now();
        let mut state = test_state(start);
        let mut config = crate::PoolConfig {
            min_ready: 2,
            ..Default::default()
        };
        // Nothing measured: the floor.
        assert_eq!(
            demand_target(&config, &mut state, start),
            (2, TargetReason::Floor)
        );
        state.ready_time = Some(Duration::from_millis(300));
        for i in 0..30 {
            state.note_arrival(start + Duration::from_millis(i * 33));
        }
        let now = start + Duration::from_secs(1);
        // ~30/s × 0.3 s × 1.5 = 14.
        let (target, reason) = demand_target(&config, &mut state, now);
        assert_eq!(reason, TargetReason::Demand);
        assert!((12..=15).contains(&target), "{target}");
        config.max_ready = 8;
        assert_eq!(
            demand_target(&config, &mut state, now),
            (8, TargetReason::MaxReady)
        );
        // `min_ready` above `max_ready`: the floor wins.
        config.min_ready = 10;
        assert_eq!(
            demand_target(&config, &mut state, now),
            (10, TargetReason::Floor)
        );
        // A cold pool stays cold whatever the demand.
        config.min_ready = 0;
        assert_eq!(
            demand_target(&config, &mut state, now),
            (0, TargetReason::Floor)
        );
    }

    fn test_state(now: Instant) -> State {
        State::new(now, false)
    }

    #[test]
    fn initialize_answers_splice_only_version_and_id() {
        let result = serde_json::value::RawValue::from_string(
            r#"{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"x","version":"1"},"x-extra":1}"#.into(),
        )
        .unwrap();
        let cache = InitCache::from_result(&result).unwrap();
        assert_eq!(cache.negotiate(Some("2025-06-18")), "2025-06-18");
        assert_eq!(cache.negotiate(Some("2026-07-28")), "2025-11-25");
        assert_eq!(cache.negotiate(None), "2025-11-25");
        let answer = cache.response("\"c1\"", "2025-06-18");
        assert_eq!(
            std::str::from_utf8(&answer).unwrap(),
            r#"{"jsonrpc":"2.0","id":"c1","result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"x","version":"1"},"x-extra":1}}"#
        );
    }
}
