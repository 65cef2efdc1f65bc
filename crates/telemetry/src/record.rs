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
    /// When the request's head arrived (wall clock, for spans).
    pub started_at: std::time::SystemTime,
    /// The request's place in a distributed trace: the client's trace (from
    /// its `traceparent` header or `_meta.traceparent`) or a new one.
    pub trace: Option<TraceContext>,
    /// The MCP session the request belongs to, when it has one (handshake era).
    pub session: Option<&'a str>,
    /// The JSON-RPC error code of the answer, when it is an error.
    pub error_code: Option<i64>,
}

/// W3C trace context of one request: the trace, the span Berth opened for
/// the request (passed on to the server as the parent of its own spans),
/// and the client's span it continues, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    /// The caller's sampled flag.
    pub sampled: bool,
}

impl TraceContext {
    /// Continues the trace of a W3C `traceparent` value
    /// (`00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`), or starts
    /// a new sampled one when there is none or it is malformed.
    pub fn continue_or_start(
        traceparent: Option<&str>,
        new_span: [u8; 8],
        new_trace: [u8; 16],
    ) -> TraceContext {
        if let Some((trace_id, parent, sampled)) = traceparent.and_then(parse_traceparent) {
            return TraceContext {
                trace_id,
                span_id: new_span,
                parent_span_id: Some(parent),
                sampled,
            };
        }
        TraceContext {
            trace_id: new_trace,
            span_id: new_span,
            parent_span_id: None,
            sampled: true,
        }
    }

    /// This request's span as a `traceparent` value, for the server.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{}",
            hex(&self.trace_id),
            hex(&self.span_id),
            if self.sampled { "01" } else { "00" }
        )
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != N * 2 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// (trace id, parent span id, sampled) of a version-00 `traceparent`; all-zero
/// ids are invalid (W3C Trace Context §3.2.2).
fn parse_traceparent(value: &str) -> Option<([u8; 16], [u8; 8], bool)> {
    let mut parts = value.trim().split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != "00" || parts.next().is_some() {
        return None;
    }
    let trace: [u8; 16] = unhex(trace)?;
    let parent: [u8; 8] = unhex(parent)?;
    let flags: [u8; 1] = unhex(flags)?;
    if trace == [0; 16] || parent == [0; 8] {
        return None;
    }
    Some((trace, parent, flags[0] & 1 == 1))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_trace_is_continued() {
        let t = TraceContext::continue_or_start(
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            [1; 8],
            [2; 16],
        );
        assert_eq!(hex(&t.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            t.parent_span_id.map(|p| hex(&p)).as_deref(),
            Some("00f067aa0ba902b7")
        );
        assert_eq!(
            t.traceparent(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0101010101010101-01"
        );
    }

    #[test]
    fn malformed_traceparents_start_a_new_trace() {
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-zzf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            let t = TraceContext::continue_or_start(Some(bad), [1; 8], [2; 16]);
            assert_eq!(t.trace_id, [2; 16], "{bad}");
            assert_eq!(t.parent_span_id, None, "{bad}");
        }
    }
}
