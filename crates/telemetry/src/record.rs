//! What the gateway reports as it works: one record per answered MCP
//! request, per session opened or ended, per process sample. Records borrow
//! from the request path and are consumed at once by every [`Observer`].

use std::time::Duration;

/// The protocol era a request was served in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Era {
    /// A 2025 revision over Streamable HTTP (initialize, session header).
    Handshake,
    /// A 2026-07-28 stateless request.
    Modern,
    /// The legacy HTTP+SSE transport.
    Legacy,
}

impl Era {
    pub fn label(self) -> &'static str {
        match self {
            Era::Handshake => "handshake",
            Era::Modern => "2026-07-28",
            Era::Legacy => "legacy-sse",
        }
    }
}

/// How a request ended, as far as its client is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A result (or, for notifications, accepted).
    Ok,
    /// A tool's result with `isError: true`.
    ToolError,
    /// A JSON-RPC error from the server, or one Berth answered in its place
    /// (timeout, process died).
    Error,
    /// Refused before reaching the server (bad request, no session,
    /// unauthorized, rate limited...).
    Refused,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::ToolError => "tool_error",
            Outcome::Error => "error",
            Outcome::Refused => "refused",
        }
    }
}

/// One MCP request, once its answer (or the head of its stream) is out.
#[derive(Debug, Clone)]
pub struct RequestRecord<'a> {
    pub server: &'a str,
    /// The authenticated principal's id; `None` without authentication.
    pub principal: Option<&'a str>,
    /// The JSON-RPC method (`"tools/call"`), `None` when the body never
    /// parsed, or the HTTP method's stand-in for GET/DELETE (`"GET"`).
    pub method: Option<&'a str>,
    /// The tool, for `tools/call`.
    pub tool: Option<&'a str>,
    pub era: Era,
    /// The HTTP status of the answer.
    pub status: u16,
    pub outcome: Outcome,
    /// From the request's head to its answer's head.
    pub total: Duration,
    /// The part of `total` spent waiting for the server, when one was asked.
    pub upstream: Option<Duration>,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// How a new session's process was had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Start {
    /// Started for this session.
    Cold,
    /// Ready (pre-started or pre-initialized) when the session came.
    Warm,
    /// Thawed from standby.
    Standby,
    /// A process shared between sessions.
    Shared,
}

impl Start {
    pub fn label(self) -> &'static str {
        match self {
            Start::Cold => "cold",
            Start::Warm => "warm",
            Start::Standby => "standby",
            Start::Shared => "shared",
        }
    }
}

/// A session that opened.
#[derive(Debug, Clone)]
pub struct SessionOpened<'a> {
    pub server: &'a str,
    pub principal: Option<&'a str>,
    pub start: Start,
}

/// A session that ended, after `open_for`.
#[derive(Debug, Clone)]
pub struct SessionEnded<'a> {
    pub server: &'a str,
    pub principal: Option<&'a str>,
    pub open_for: Duration,
}

/// A new session's first result: `after` its `initialize` arrived.
#[derive(Debug, Clone)]
pub struct FirstResult<'a> {
    pub server: &'a str,
    pub start: Start,
    pub after: Duration,
}

/// A request refused by authentication, and why (`missing`,
/// `invalid_token`, `insufficient_scope`, `unavailable`).
#[derive(Debug, Clone)]
pub struct AuthRefusal<'a> {
    pub server: &'a str,
    pub reason: &'static str,
}

/// What one server process used over the last sampling interval.
#[derive(Debug, Clone)]
pub struct ProcessSample<'a> {
    pub server: &'a str,
    /// The principal of the session the process serves alone, if any.
    pub principal: Option<&'a str>,
    /// CPU time (user + system) used since the previous sample.
    pub cpu: Duration,
    /// Resident memory now, in bytes.
    pub memory_bytes: u64,
    /// The time the sample stands for.
    pub interval: Duration,
}

/// One server's fleet state, read when metrics are scraped.
#[derive(Debug, Clone, Default)]
pub struct ServerState {
    pub server: String,
    /// Processes by state (`ready`, `busy`, `standby`, `starting`...).
    pub processes: Vec<(String, u64)>,
    pub sessions: u64,
    pub spawns: u64,
    pub crashes: u64,
    pub restarts: u64,
    pub oom_kills: u64,
    /// 1 while the server is given up on (failed).
    pub failed: bool,
    /// Who answers for the server (config `owner`).
    pub owner: Option<String>,
    /// The p99 it should keep (config `latency_budget`).
    pub latency_budget: Option<Duration>,
}

/// Something that consumes the gateway's records: the metrics, the usage
/// meter, alerts. Calls come from the request path: implementations must
/// not block (count in memory, write elsewhere).
pub trait Observer: Send + Sync {
    fn request(&self, _record: &RequestRecord<'_>) {}
    fn session_opened(&self, _record: &SessionOpened<'_>) {}
    fn session_ended(&self, _record: &SessionEnded<'_>) {}
    fn first_result(&self, _record: &FirstResult<'_>) {}
    fn auth_refused(&self, _record: &AuthRefusal<'_>) {}
    fn process_sample(&self, _record: &ProcessSample<'_>) {}
}
