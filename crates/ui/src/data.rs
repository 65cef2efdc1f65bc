//! What the pages show, read from the gateway, its metrics and the usage
//! store.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use berth_cost::{Costs, Projection, UsageReport};
use berth_edge::{Gateway, Server};
use berth_fleet::PoolReport;
use berth_telemetry::ServerState;
use berth_telemetry::metrics::{StartSummary, ToolSummary};
use berth_usage::{By, Store, UsageRow};
use serde::Serialize;

use crate::Ui;
use crate::html::ms;

/// The servers table's live columns: (`data-field`, heading, tooltip).
pub const FIELDS: [(&str, &str, &str); 13] = [
    ("status", "Status", "running, idle (no process) or failed"),
    ("owner", "Owner", "config: owner"),
    (
        "era",
        "Era",
        "2026-07-28 or handshake-only, as the probe found",
    ),
    ("processes", "Processes", "server processes by state"),
    ("sessions", "Sessions", "sessions open now"),
    ("p50", "p50", "median call latency (recent calls)"),
    ("p99", "p99", "99th percentile call latency (recent calls)"),
    ("boot", "Boot", "spawn to ready (moving average)"),
    (
        "cold",
        "Cold start",
        "a new session's time to first result when its process was started for it (p50)",
    ),
    (
        "warm",
        "Warm start",
        "a new session's time to first result from a ready process (p50)",
    ),
    (
        "restarts",
        "Restarts",
        "processes started again after a crash",
    ),
    ("crashes", "Crashes", "processes that exited unexpectedly"),
    ("calls", "Calls", "calls served since start"),
];

/// One server's live figures, as the table shows them.
#[derive(Debug, Serialize)]
pub struct Row {
    pub name: String,
    /// `running`, `idle` or `failed` (the row's class).
    pub status: &'static str,
    /// Cell text by field.
    pub cells: BTreeMap<&'static str, String>,
}

/// The `/ui/events` message: every server's row.
#[derive(Serialize)]
pub struct Snapshot {
    pub at: String,
    pub servers: Vec<Row>,
}

/// The session pool's report, and the stateless pool's when it has one.
pub struct Reports {
    pub pool: PoolReport,
    pub stateless: Option<PoolReport>,
}

impl Reports {
    pub fn of(server: &Server) -> Reports {
        Reports {
            pool: server.pool.report(),
            stateless: server.stateless_pool().map(|p| p.report()),
        }
    }

    /// The latencies of the pool that served calls (sessions first).
    fn latency(&self) -> (Option<f64>, Option<f64>) {
        let pools = std::iter::once(&self.pool).chain(self.stateless.as_ref());
        pools
            .filter(|p| p.calls > 0)
            .map(|p| (p.p50_ms, p.p99_ms))
            .next()
            .unwrap_or((None, None))
    }

    fn ready_time_ms(&self) -> Option<f64> {
        self.pool
            .ready_time_ms
            .or_else(|| self.stateless.as_ref().and_then(|p| p.ready_time_ms))
    }

    fn calls(&self) -> u64 {
        self.pool.calls + self.stateless.as_ref().map_or(0, |p| p.calls)
    }
}

pub fn snapshot(gateway: &Gateway) -> Snapshot {
    let states: HashMap<String, ServerState> = gateway
        .fleet_state()
        .into_iter()
        .map(|s| (s.server.clone(), s))
        .collect();
    let starts = gateway
        .telemetry()
        .metrics()
        .map(|m| m.starts())
        .unwrap_or_default();
    let mut servers: Vec<Row> = gateway
        .servers()
        .iter()
        .map(|s| row(s, &Reports::of(s), states.get(&s.spec.name), &starts))
        .collect();
    servers.sort_by(|a, b| a.name.cmp(&b.name));
    Snapshot {
        at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        servers,
    }
}

pub fn row(
    server: &Server,
    reports: &Reports,
    state: Option<&ServerState>,
    starts: &[StartSummary],
) -> Row {
    let name = server.spec.name.clone();
    let status = reports.pool.status.as_str();
    let start_p50 = |kind: &str| {
        ms(starts
            .iter()
            .find(|s| s.server == name && s.start == kind)
            .and_then(|s| s.p50_ms))
    };
    let (p50, p99) = reports.latency();
    let processes = match state {
        Some(s) if !s.processes.is_empty() => s
            .processes
            .iter()
            .map(|(state, n)| format!("{state} {n}"))
            .collect::<Vec<_>>()
            .join(" · "),
        _ => "none".into(),
    };
    let count = |f: fn(&ServerState) -> u64| state.map_or(0, f).to_string();
    let cells = BTreeMap::from([
        ("status", status.to_owned()),
        (
            "owner",
            server.spec.owner.clone().unwrap_or_else(|| "-".into()),
        ),
        (
            "era",
            server
                .era()
                .map_or_else(|| "probing".into(), |(label, _)| label.to_owned()),
        ),
        ("processes", processes),
        ("sessions", count(|s| s.sessions)),
        ("p50", ms(p50)),
        ("p99", ms(p99)),
        ("boot", ms(reports.ready_time_ms())),
        ("cold", start_p50("cold")),
        ("warm", start_p50("warm")),
        ("restarts", count(|s| s.restarts)),
        ("crashes", count(|s| s.crashes)),
        ("calls", reports.calls().to_string()),
    ]);
    Row {
        name,
        status,
        cells,
    }
}

/// The tools of `server` with calls, from the metrics (`None`: metrics off).
pub fn tools(gateway: &Gateway, server: &str) -> Option<Vec<ToolSummary>> {
    let metrics = gateway.telemetry().metrics()?;
    Some(
        metrics
            .tools()
            .into_iter()
            .filter(|t| t.server == server)
            .collect(),
    )
}

/// First-result times of `server`, by how its process was had.
pub fn starts(gateway: &Gateway, server: &str) -> Vec<StartSummary> {
    gateway
        .telemetry()
        .metrics()
        .map(|m| m.starts())
        .unwrap_or_default()
        .into_iter()
        .filter(|s| s.server == server)
        .collect()
}

/// The period the usage page covers.
pub const USAGE_PERIOD: Duration = Duration::from_secs(24 * 3600);

/// Usage over the last [`USAGE_PERIOD`], grouped one way.
pub struct Usage {
    pub since: SystemTime,
    pub until: SystemTime,
    pub rows: Vec<UsageRow>,
}

/// Reads the last day's usage from `store`; the error names the store.
pub async fn usage(store: &Store, by: By) -> Result<Usage, String> {
    let now = SystemTime::now();
    let since = now.checked_sub(USAGE_PERIOD).unwrap_or(now);
    let rows = store
        .query(since, now, by)
        .await
        .map_err(|e| format!("cannot read usage from {}: {e}", store.describe()))?;
    let (since, until) = Store::window(since, now);
    Ok(Usage { since, until, rows })
}

/// The projection charted when no usage is recorded yet: 100 agents, each
/// with 3 tool servers, 60 calls an hour, over an 8-hour working day.
pub const DEFAULT_PROJECTION: Projection = Projection {
    agents: 100.0,
    tools_per_agent: 3.0,
    calls_per_agent_hour: 60.0,
    session_hours: 8.0,
};

/// The cost models applied to the last day's usage (by principal, so the
/// chart scales by agents), or to [`DEFAULT_PROJECTION`] when nothing was
/// recorded; with a sentence saying which.
pub async fn costs(ui: &Ui) -> Result<(Costs, String), String> {
    if let Some(store) = &ui.usage {
        let usage = usage(store, By::Principal).await?;
        if usage.rows.iter().any(|r| r.quantities.requests > 0) {
            let report = report(&usage);
            let costs = Costs::from_usage(&report, None, &ui.prices).map_err(|e| e.to_string())?;
            let what = format!(
                "Recorded usage from {} to {} ({} principal(s)), at the [cost] prices.",
                report.since,
                report.until,
                report.principals().max(1)
            );
            return Ok((costs, what));
        }
    }
    let costs = Costs::project(&DEFAULT_PROJECTION, &ui.prices).map_err(|e| e.to_string())?;
    let p = DEFAULT_PROJECTION;
    let why = if ui.usage.is_some() {
        "No usage recorded in the last 24 h yet"
    } else {
        "Usage metering is off ([usage] enabled = false)"
    };
    Ok((
        costs,
        format!(
            "{why}: a projection of {} agents × {} tool servers, {} calls per agent-hour, {} h, at the [cost] prices.",
            p.agents, p.tools_per_agent, p.calls_per_agent_hour, p.session_hours
        ),
    ))
}

/// The usage as the report `berth cost --usage` reads.
fn report(usage: &Usage) -> UsageReport {
    let time = |t| humantime::format_rfc3339_seconds(t).to_string();
    UsageReport {
        since: time(usage.since),
        until: time(usage.until),
        by: By::Principal.label().to_owned(),
        rows: usage
            .rows
            .iter()
            .map(|r| {
                let q = &r.quantities;
                berth_cost::UsageRow {
                    principal: r.principal.clone(),
                    server: r.server.clone(),
                    tool: r.tool.clone(),
                    sessions: q.sessions,
                    session_seconds: q.session_seconds,
                    peak_connections: q.peak_connections,
                    requests: q.requests,
                    tool_calls: q.tool_calls,
                    errors: q.errors,
                    bytes_in: q.bytes_in,
                    bytes_out: q.bytes_out,
                    cpu_seconds: q.cpu_seconds,
                    memory_gib_seconds: q.memory_gib_seconds,
                }
            })
            .collect(),
    }
}
