//! The gateway's Prometheus metrics (OpenMetrics text), fed by the records.
//!
//! Names follow Prometheus conventions (`_total`, `_seconds`, `_bytes`);
//! the two durations the OpenTelemetry MCP semantic conventions define keep
//! their names (`mcp.server.operation.duration`,
//! `mcp.server.session.duration` become `mcp_server_operation_duration_seconds`
//! and `mcp_server_session_duration_seconds`). Label values that a client
//! chooses (methods, tools) are bounded so that no client can grow the
//! metrics without limit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::record::*;

/// The Content-Type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The MCP methods counted by name; any other method is counted as `other`.
const METHODS: &[&str] = &[
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/read",
    "resources/templates/list",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "server/discover",
    "subscriptions/listen",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/roots/list_changed",
    "GET",
    "DELETE",
];

/// Distinct tool names kept per server; calls to more are counted as
/// `_other` (a client can name any tool in a call).
const MAX_TOOLS_PER_SERVER: usize = 256;

type Server = Arc<String>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabel {
    server: Server,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    server: Server,
    method: &'static str,
    status: u16,
    era: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    server: Server,
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolLabels {
    server: Server,
    tool: Arc<String>,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StartLabels {
    server: Server,
    start: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    server: Server,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ComponentLabels {
    component: &'static str,
    count: &'static str,
}

/// One count a component of the gateway keeps (`alerts`, `delivered`, 12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ComponentCount {
    pub component: &'static str,
    pub count: &'static str,
    pub value: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    server: Server,
    state: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Latency buckets, in seconds: 100 µs to ~100 s.
fn latency() -> Histogram {
    Histogram::new([
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0, 10.0, 30.0, 100.0,
    ])
}

/// Session lengths, in seconds: a second to a day.
fn session_length() -> Histogram {
    Histogram::new([
        1.0,
        10.0,
        60.0,
        300.0,
        900.0,
        1800.0,
        3600.0,
        4.0 * 3600.0,
        24.0 * 3600.0,
    ])
}

/// The gateway's metrics. Cheap to feed from the request path: one
/// read-locked map lookup and an atomic add per metric.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    tool_calls: Family<ToolLabels, Counter>,
    operation_duration: Histograms<MethodLabels>,
    gateway_added: Histograms<ServerLabel>,
    first_result: Histograms<StartLabels>,
    session_duration: Histograms<ServerLabel>,
    sessions_opened: Family<StartLabels, Counter>,
    upstream_errors: Family<ServerLabel, Counter>,
    auth_refusals: Family<ReasonLabels, Counter>,
    received: Family<ServerLabel, Counter>,
    sent: Family<ServerLabel, Counter>,
    // Read from the fleet at each scrape.
    sessions_open: Family<ServerLabel, Gauge>,
    processes: Family<StateLabels, Gauge>,
    spawns: Family<ServerLabel, Counter>,
    crashes: Family<ServerLabel, Counter>,
    restarts: Family<ServerLabel, Counter>,
    oom_kills: Family<ServerLabel, Counter>,
    failed: Family<ServerLabel, Gauge>,
    /// Counts the gateway's own components keep (alerts delivered, spans
    /// dropped, usage keys waiting...), read at each scrape.
    components: Family<ComponentLabels, Gauge>,
    /// Server names, interned (labels share them).
    servers: RwLock<HashMap<String, Server>>,
    /// Tool names seen, per server, interned and bounded.
    tools: RwLock<HashMap<Server, HashMap<String, Arc<String>>>>,
    /// One scrape at a time: the fleet-state families are rewritten.
    scrape: Mutex<()>,
    /// Tool call latencies per (server, tool), readable as quantiles (the
    /// Prometheus histograms give no access to their buckets).
    tool_latency: Latencies<Arc<String>>,
    /// First-result times per (server, how the process was had).
    start_latency: Latencies<&'static str>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            requests: Family::default(),
            tool_calls: Family::default(),
            operation_duration: Family::new_with_constructor(latency),
            gateway_added: Family::new_with_constructor(latency),
            first_result: Family::new_with_constructor(latency),
            session_duration: Family::new_with_constructor(session_length),
            sessions_opened: Family::default(),
            upstream_errors: Family::default(),
            auth_refusals: Family::default(),
            received: Family::default(),
            sent: Family::default(),
            sessions_open: Family::default(),
            processes: Family::default(),
            spawns: Family::default(),
            crashes: Family::default(),
            restarts: Family::default(),
            oom_kills: Family::default(),
            failed: Family::default(),
            components: Family::default(),
            servers: RwLock::default(),
            tools: RwLock::default(),
            scrape: Mutex::default(),
            tool_latency: Latencies::default(),
            start_latency: Latencies::default(),
            registry: Registry::default(),
        };
        let b = &mut registry;
        b.register(
            "berth_requests",
            "MCP requests answered, by server, JSON-RPC method, HTTP status and protocol era",
            m.requests.clone(),
        );
        b.register(
            "berth_tool_calls",
            "tools/call requests by server, tool and outcome (ok, tool_error, error, refused)",
            m.tool_calls.clone(),
        );
        b.register(
            "mcp_server_operation_duration_seconds",
            "Time from a request's head to its answer's head, by server and method (OpenTelemetry mcp.server.operation.duration)",
            m.operation_duration.clone(),
        );
        b.register(
            "berth_gateway_added_seconds",
            "The part of each answered request's time not spent waiting for the server",
            m.gateway_added.clone(),
        );
        b.register(
            "berth_first_result_seconds",
            "Time from a new session's initialize to its first result, by how its process was had (cold, warm, standby, shared)",
            m.first_result.clone(),
        );
        b.register(
            "mcp_server_session_duration_seconds",
            "How long sessions stayed open, by server (OpenTelemetry mcp.server.session.duration)",
            m.session_duration.clone(),
        );
        b.register(
            "berth_sessions_opened",
            "Sessions opened, by server and how their process was had",
            m.sessions_opened.clone(),
        );
        b.register(
            "berth_upstream_errors",
            "Requests that failed at the server side: the process died, stopped reading, or timed out",
            m.upstream_errors.clone(),
        );
        b.register(
            "berth_auth_refusals",
            "Requests refused by authentication, by server and reason",
            m.auth_refusals.clone(),
        );
        b.register_with_unit(
            "berth_received",
            "Request body bytes received from clients, by server",
            prometheus_client::registry::Unit::Bytes,
            m.received.clone(),
        );
        b.register_with_unit(
            "berth_sent",
            "Answer bytes sent to clients in JSON answers (answers streamed over SSE are not counted), by server",
            prometheus_client::registry::Unit::Bytes,
            m.sent.clone(),
        );
        b.register(
            "berth_sessions_open",
            "Sessions open now",
            m.sessions_open.clone(),
        );
        b.register(
            "berth_processes",
            "Server processes now, by state",
            m.processes.clone(),
        );
        b.register(
            "berth_process_spawns",
            "Server processes started",
            m.spawns.clone(),
        );
        b.register(
            "berth_process_crashes",
            "Server processes that exited unexpectedly",
            m.crashes.clone(),
        );
        b.register(
            "berth_process_restarts",
            "Server processes started again after a crash",
            m.restarts.clone(),
        );
        b.register(
            "berth_process_oom_kills",
            "Server processes killed for memory (OOM killer or the sandbox's limit)",
            m.oom_kills.clone(),
        );
        b.register(
            "berth_server_failed",
            "1 while a server is given up on after crashing too often",
            m.failed.clone(),
        );
        b.register(
            "berth_component",
            "Counts the gateway's own components keep, by component and count: alerts (delivered, retried, failed, dropped), spans (exported, dropped, queued), usage (pending_keys, dropped_keys)",
            m.components.clone(),
        );
        Metrics { registry, ..m }
    }

    fn server(&self, name: &str) -> Server {
        if let Some(s) = self
            .servers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return s.clone();
        }
        let mut servers = self.servers.write().unwrap_or_else(|p| p.into_inner());
        servers
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(name.to_owned()))
            .clone()
    }

    fn tool(&self, server: &Server, tool: &str) -> Arc<String> {
        if let Some(t) = self
            .tools
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(server)
            .and_then(|known| known.get(tool))
        {
            return t.clone();
        }
        let mut tools = self.tools.write().unwrap_or_else(|p| p.into_inner());
        let known = tools.entry(server.clone()).or_default();
        if let Some(t) = known.get(tool) {
            return t.clone();
        }
        if known.len() >= MAX_TOOLS_PER_SERVER {
            return Arc::new("_other".to_owned());
        }
        let t = Arc::new(tool.to_owned());
        known.insert(tool.to_owned(), t.clone());
        t
    }

    /// The metrics as OpenMetrics text, with the fleet's current state.
    pub fn render(&self, fleet: &[ServerState]) -> String {
        self.render_with(fleet, &[])
    }

    /// [`Metrics::render`] with the components' own counts.
    pub fn render_with(&self, fleet: &[ServerState], components: &[ComponentCount]) -> String {
        let _one = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        self.components.clear();
        for c in components {
            self.components
                .get_or_create(&ComponentLabels {
                    component: c.component,
                    count: c.count,
                })
                .set(i64::try_from(c.value).unwrap_or(i64::MAX));
        }
        for family in [&self.spawns, &self.crashes, &self.restarts, &self.oom_kills] {
            family.clear();
        }
        self.sessions_open.clear();
        self.processes.clear();
        self.failed.clear();
        for state in fleet {
            let server = ServerLabel {
                server: self.server(&state.server),
            };
            self.sessions_open
                .get_or_create(&server)
                .set(state.sessions as i64);
            self.spawns.get_or_create(&server).inc_by(state.spawns);
            self.crashes.get_or_create(&server).inc_by(state.crashes);
            self.restarts.get_or_create(&server).inc_by(state.restarts);
            self.oom_kills
                .get_or_create(&server)
                .inc_by(state.oom_kills);
            self.failed
                .get_or_create(&server)
                .set(i64::from(state.failed));
            for (name, count) in &state.processes {
                self.processes
                    .get_or_create(&StateLabels {
                        server: server.server.clone(),
                        state: name.clone(),
                    })
                    .set(*count as i64);
            }
        }
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// One tool of one server, as [`Metrics::tools`] reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSummary {
    pub server: String,
    pub tool: String,
    /// Calls by outcome (`ok`, `tool_error`, `error`, `refused`), each
    /// outcome seen at least once.
    pub outcomes: Vec<(&'static str, u64)>,
    /// The calls' latency quantiles (within about 10%), in ms.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl ToolSummary {
    /// Every call, whatever its outcome.
    pub fn calls(&self) -> u64 {
        self.outcomes.iter().map(|(_, n)| n).sum()
    }

    /// Calls whose outcome was not `ok`.
    pub fn failed(&self) -> u64 {
        self.outcomes
            .iter()
            .filter(|(o, _)| *o != "ok")
            .map(|(_, n)| n)
            .sum()
    }
}

/// New sessions' time to first result for one server and one way its
/// process was had (`cold`, `warm`, `standby`, `shared`), as
/// [`Metrics::starts`] reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct StartSummary {
    pub server: String,
    pub start: &'static str,
    pub count: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

const OUTCOMES: [&str; 4] = ["ok", "tool_error", "error", "refused"];

impl Metrics {
    /// Each tool called so far, by server then tool: calls by outcome and
    /// latency quantiles (for the dashboard; Prometheus reads
    /// [`Metrics::render`]).
    pub fn tools(&self) -> Vec<ToolSummary> {
        let mut out: Vec<ToolSummary> = self
            .tool_latency
            .read()
            .into_iter()
            .map(|(server, tool, latency)| {
                let outcomes = OUTCOMES
                    .iter()
                    .filter_map(|outcome| {
                        let labels = ToolLabels {
                            server: server.clone(),
                            tool: tool.clone(),
                            outcome,
                        };
                        let n = self.tool_calls.get(&labels).map(|c| c.get())?;
                        Some((*outcome, n))
                    })
                    .collect();
                ToolSummary {
                    server: server.to_string(),
                    tool: tool.to_string(),
                    outcomes,
                    p50_ms: latency.quantile_ms(0.5),
                    p99_ms: latency.quantile_ms(0.99),
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.server, &a.tool).cmp(&(&b.server, &b.tool)));
        out
    }

    /// Time to first result per server and way of start, by server then start.
    pub fn starts(&self) -> Vec<StartSummary> {
        let mut out: Vec<StartSummary> = self
            .start_latency
            .read()
            .into_iter()
            .map(|(server, start, latency)| StartSummary {
                server: server.to_string(),
                start,
                count: latency.count(),
                p50_ms: latency.quantile_ms(0.5),
                p99_ms: latency.quantile_ms(0.99),
            })
            .collect();
        out.sort_by(|a, b| (&a.server, a.start).cmp(&(&b.server, b.start)));
        out
    }
}

/// Latency histograms keyed by (server, `K`), recorded lock-free once a key
/// exists (a read lock and an atomic add).
struct Latencies<K> {
    by_key: RwLock<HashMap<(Server, K), Arc<Quantiles>>>,
}

impl<K> Default for Latencies<K> {
    fn default() -> Self {
        Latencies {
            by_key: RwLock::default(),
        }
    }
}

impl<K: Clone + Eq + std::hash::Hash> Latencies<K> {
    fn record(&self, server: &Server, key: &K, seconds: f64) {
        let wanted = (server.clone(), key.clone());
        let found = self
            .by_key
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&wanted)
            .cloned();
        let quantiles = match found {
            Some(q) => q,
            None => self
                .by_key
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .entry(wanted)
                .or_default()
                .clone(),
        };
        quantiles.record(seconds);
    }

    fn read(&self) -> Vec<(Server, K, Arc<Quantiles>)> {
        self.by_key
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|((s, k), q)| (s.clone(), k.clone(), q.clone()))
            .collect()
    }
}

/// Buckets per doubling: each bucket spans a factor of 2^(1/4) ≈ 1.19, so a
/// quantile read back is within about 10% of the true value.
const STEPS_PER_OCTAVE: f64 = 4.0;
/// 1 µs to 2^28 µs (about 4.5 minutes); slower calls land in the last bucket.
const QUANTILE_BUCKETS: usize = 28 * 4 + 2;

/// A log-bucketed latency histogram in microseconds.
struct Quantiles {
    buckets: [AtomicU64; QUANTILE_BUCKETS],
}

impl Default for Quantiles {
    fn default() -> Self {
        Quantiles {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Quantiles {
    fn record(&self, seconds: f64) {
        let micros = seconds * 1e6;
        let i = if micros.is_nan() || micros <= 1.0 {
            0
        } else {
            // Truncation is the bucketing; the cast saturates.
            ((micros.log2() * STEPS_PER_OCTAVE) as usize + 1).min(QUANTILE_BUCKETS - 1)
        };
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
    }

    fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The `q` quantile in ms: the geometric middle of the bucket holding it.
    fn quantile_ms(&self, q: f64) -> Option<f64> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        let i = counts.iter().position(|n| {
            seen += n;
            seen >= rank
        })?;
        let micros = match i {
            0 => 1.0,
            i => ((i as f64 - 0.5) / STEPS_PER_OCTAVE).exp2(),
        };
        Some(micros / 1000.0)
    }
}

/// `method` when it is one Berth counts by name, else `other`.
pub fn method_label(method: Option<&str>) -> &'static str {
    match method {
        None => "none",
        Some(m) => METHODS
            .iter()
            .find(|known| **known == m)
            .copied()
            .unwrap_or("other"),
    }
}

impl Observer for Metrics {
    fn request(&self, r: &RequestRecord<'_>) {
        let server = self.server(r.server);
        let method = method_label(r.method);
        self.requests
            .get_or_create(&RequestLabels {
                server: server.clone(),
                method,
                status: r.status,
                era: r.era.label(),
            })
            .inc();
        if method == "tools/call" {
            let tool = self.tool(&server, r.tool.unwrap_or(""));
            self.tool_latency
                .record(&server, &tool, r.total.as_secs_f64());
            self.tool_calls
                .get_or_create(&ToolLabels {
                    server: server.clone(),
                    tool,
                    outcome: r.outcome.label(),
                })
                .inc();
        }
        self.operation_duration
            .get_or_create(&MethodLabels {
                server: server.clone(),
                method,
            })
            .observe(r.total.as_secs_f64());
        let label = ServerLabel { server };
        if let Some(upstream) = r.upstream {
            self.gateway_added
                .get_or_create(&label)
                .observe(r.total.saturating_sub(upstream).as_secs_f64());
        }
        if r.outcome == Outcome::Error && r.upstream.is_some() {
            self.upstream_errors.get_or_create(&label).inc();
        }
        if r.bytes_in > 0 {
            self.received.get_or_create(&label).inc_by(r.bytes_in);
        }
        if r.bytes_out > 0 {
            self.sent.get_or_create(&label).inc_by(r.bytes_out);
        }
    }

    fn session_opened(&self, r: &SessionOpened<'_>) {
        self.sessions_opened
            .get_or_create(&StartLabels {
                server: self.server(r.server),
                start: r.start.label(),
            })
            .inc();
    }

    fn session_ended(&self, r: &SessionEnded<'_>) {
        self.session_duration
            .get_or_create(&ServerLabel {
                server: self.server(r.server),
            })
            .observe(r.open_for.as_secs_f64());
    }

    fn first_result(&self, r: &FirstResult<'_>) {
        let server = self.server(r.server);
        let start = r.start.label();
        self.start_latency
            .record(&server, &start, r.after.as_secs_f64());
        self.first_result
            .get_or_create(&StartLabels { server, start })
            .observe(r.after.as_secs_f64());
    }

    fn auth_refused(&self, r: &AuthRefusal<'_>) {
        self.auth_refusals
            .get_or_create(&ReasonLabels {
                server: self.server(r.server),
                reason: r.reason,
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn call(tool: &str, outcome: Outcome) -> RequestRecord<'_> {
        RequestRecord {
            server: "echo",
            principal: None,
            method: Some("tools/call"),
            tool: Some(tool),
            era: Era::Handshake,
            status: 200,
            outcome,
            total: Duration::from_millis(3),
            upstream: Some(Duration::from_millis(2)),
            bytes_in: 100,
            bytes_out: 50,
            started_at: std::time::SystemTime::now(),
            trace: None,
            session: None,
            error_code: None,
        }
    }

    #[test]
    fn requests_and_tool_calls_are_counted_exactly() {
        let m = Metrics::new();
        for _ in 0..7 {
            m.request(&call("echo", Outcome::Ok));
        }
        m.request(&call("echo", Outcome::ToolError));
        let text = m.render(&[]);
        assert!(
            text.contains(
                "berth_requests_total{server=\"echo\",method=\"tools/call\",status=\"200\",era=\"handshake\"} 8"
            ),
            "{text}"
        );
        assert!(
            text.contains("berth_tool_calls_total{server=\"echo\",tool=\"echo\",outcome=\"ok\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("berth_received_bytes_total{server=\"echo\"} 800"),
            "{text}"
        );
        assert!(
            text.contains("mcp_server_operation_duration_seconds_count{server=\"echo\",method=\"tools/call\"} 8"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn client_chosen_labels_are_bounded() {
        let m = Metrics::new();
        let names: Vec<String> = (0..MAX_TOOLS_PER_SERVER + 10)
            .map(|i| format!("t{i}"))
            .collect();
        for name in &names {
            m.request(&call(name, Outcome::Error));
        }
        let mut r = call("x", Outcome::Ok);
        r.method = Some("made/up");
        m.request(&r);
        let text = m.render(&[]);
        assert!(
            text.contains("tool=\"_other\",outcome=\"error\"} 10"),
            "{text}"
        );
        assert!(text.contains("method=\"other\""), "{text}");
    }

    #[test]
    fn tool_latencies_and_outcomes_read_back() {
        let m = Metrics::new();
        // 90 calls of 2 ms and 10 of 200 ms: p50 is 2 ms, p99 is 200 ms.
        for i in 0..100 {
            let mut r = call("echo", Outcome::Ok);
            r.total = Duration::from_millis(if i % 10 == 0 { 200 } else { 2 });
            if i == 0 {
                r.outcome = Outcome::ToolError;
            }
            m.request(&r);
        }
        m.request(&call("other", Outcome::Error));
        let tools = m.tools();
        assert_eq!(tools.len(), 2, "{tools:?}");
        let echo = &tools[0];
        assert_eq!(echo.tool, "echo");
        assert_eq!(echo.calls(), 100);
        assert_eq!(echo.failed(), 1);
        assert_eq!(echo.outcomes, vec![("ok", 99), ("tool_error", 1)]);
        let (p50, p99) = (echo.p50_ms.unwrap(), echo.p99_ms.unwrap());
        assert!((p50 / 2.0 - 1.0).abs() < 0.1, "p50 {p50}");
        assert!((p99 / 200.0 - 1.0).abs() < 0.1, "p99 {p99}");
        assert_eq!(tools[1].tool, "other");
        assert_eq!(tools[1].outcomes, vec![("error", 1)]);
    }

    #[test]
    fn quantiles_stay_within_ten_percent() {
        for micros in [3.0, 47.0, 1_000.0, 12_345.0, 999_999.0, 60e6] {
            let q = Quantiles::default();
            q.record(micros / 1e6);
            let got = q.quantile_ms(0.5).unwrap() * 1000.0;
            assert!(
                (got / micros - 1.0).abs() < 0.1,
                "{micros} µs read as {got}"
            );
        }
        let q = Quantiles::default();
        q.record(0.0);
        q.record(1e9);
        assert_eq!(q.count(), 2);
        assert_eq!(q.quantile_ms(0.0), Some(0.001));
        assert!(Quantiles::default().quantile_ms(0.5).is_none());
    }

    #[test]
    fn first_results_by_start_read_back() {
        let m = Metrics::new();
        for (start, ms) in [(Start::Cold, 300), (Start::Warm, 3), (Start::Warm, 3)] {
            m.first_result(&FirstResult {
                server: "echo",
                start,
                after: Duration::from_millis(ms),
            });
        }
        let starts = m.starts();
        assert_eq!(starts.len(), 2);
        assert_eq!((starts[0].start, starts[0].count), ("cold", 1));
        assert_eq!((starts[1].start, starts[1].count), ("warm", 2));
        let warm = starts[1].p50_ms.unwrap();
        assert!((warm / 3.0 - 1.0).abs() < 0.1, "{warm}");
    }

    #[test]
    fn fleet_state_is_read_at_each_scrape() {
        let m = Metrics::new();
        let state = ServerState {
            server: "echo".into(),
            processes: vec![("ready".into(), 2), ("busy".into(), 1)],
            sessions: 1,
            spawns: 3,
            crashes: 1,
            ..ServerState::default()
        };
        let text = m.render(std::slice::from_ref(&state));
        assert!(
            text.contains("berth_processes{server=\"echo\",state=\"ready\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("berth_process_spawns_total{server=\"echo\"} 3"),
            "{text}"
        );
        // A second scrape does not add the counts again.
        let text = m.render(&[state]);
        assert!(
            text.contains("berth_process_spawns_total{server=\"echo\"} 3"),
            "{text}"
        );
    }
}
