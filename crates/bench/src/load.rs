//! `load`: Berth against its peers and the stdio floor. For each scenario,
//! each target is started fresh (interleaved: berth, supergateway, mcp-proxy,
//! external targets, then the next scenario), measured, and stopped.
//!
//! * `per-call`: one session, N sequential `tools/call echo`; the floor is
//!   the same calls over the echo server's own stdin/stdout.
//! * `throughput-C`: C concurrent sessions, M calls each; the floor is C
//!   echo servers driven over their pipes.
//!
//!   Both also have an `http floor` row: the same echo answered in this
//!   process over the same HTTP stack (hyper behind axum, see
//!   [`crate::floor`]), no gateway and no child, called by the same client:
//!   what HTTP alone costs, so Berth's own cost is what lies above it.
//!
//!   Both also have a `berth → remote` row: Berth with one remote server
//!   (`url`), the http floor's server itself, called by the same client on
//!   Berth's `/mcp/echo`. Beside the http floor row (the direct call to the
//!   same server) it gives what proxying a remote upstream adds per call;
//!   its gateway CPU is Berth's process alone, the upstream's threads are
//!   reported apart.
//!
//!   Both also have a `berth endpoint` row: the `berth` row's configuration
//!   and echo server plus one federated endpoint over it (`[endpoints.fed]
//!   servers = ["echo"]`), called on `/mcp/fed` with the member's prefixed
//!   tool `echo__echo`. Beside the `berth` row it gives what routing a call
//!   through a federated endpoint adds. The endpoint opens its member on a
//!   session's first call, so each session makes one untimed call after it
//!   opens (the plain row's echo process starts at `initialize`, also
//!   untimed).
//!
//!   Both also have a `berth 2026-07-28` row: the same Berth configuration
//!   and echo server (which speaks both eras), called by stateless
//!   2026-07-28 clients (no session, `_meta` and the revision's headers on
//!   every request), so Berth serves them from its stateless pool.
//! * `idle-exclusive`: gateway RSS (its own, children excluded) before and
//!   after opening K idle sessions, each with its own echo process.
//! * `idle-shared`: the same with Berth `binding = "shared"` (2 processes).
//! * `ttfr`: N sequential new sessions (initialize → initialized → first
//!   `tools/call`) against `berth-fixture echo --boot-delay 300ms`: Berth
//!   cold and with a pre-initialized pool, the peers, and a direct spawn.
//!
//! In `per-call` the CPU time (utime + stime from `/proc/PID/stat`) of the
//! gateway's own process, or of the floor's echo process, is read right
//! before and after the timed calls.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::mcp::{McpHttp, Session};
use crate::peers::{self, Gateway};
use crate::report::{Recorder, Sample, Summary, markdown_table};
use crate::stdio::{response_with_id, send};
use crate::ttfr::{RunOptions, TOOL, TOOL_TEXT, check_echo};

const SERVER: &str = "echo";
pub const FLOOR: &str = "stdio floor";
pub const HTTP_FLOOR: &str = "http floor";
pub const BERTH_REMOTE: &str = "berth → remote";
pub const BERTH_ENDPOINT: &str = "berth endpoint";
/// The federated endpoint of the `berth endpoint` row, over [`SERVER`].
const ENDPOINT: &str = "fed";
/// The echo tool as the endpoint shows it: `SERVER__TOOL`.
const ENDPOINT_TOOL: &str = "echo__echo";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LoadScenario {
    PerCall,
    Throughput,
    IdleExclusive,
    IdleShared,
    Ttfr,
}

pub struct LoadOptions {
    pub berth: PathBuf,
    pub fixture: PathBuf,
    pub peers_dir: PathBuf,
    pub peers: bool,
    /// Measure the `berth → remote` row (per-call and throughput).
    pub remote: bool,
    /// Measure the `berth endpoint` row (per-call and throughput).
    pub endpoint: bool,
    pub external: Vec<(String, String)>,
    pub calls: u64,
    pub warmup: u64,
    pub concurrency: Vec<u64>,
    pub calls_per_session: u64,
    pub idle_sessions: u64,
    pub shared_sessions: u64,
    pub open_concurrency: usize,
    pub timeout: Duration,
    pub scenario_timeout: Duration,
    pub scenarios: Vec<LoadScenario>,
    /// ttfr: recorded sessions (after one warm-up session).
    pub ttfr_sessions: u64,
    /// ttfr: the echo fixture's `--boot-delay`.
    pub ttfr_boot_delay: Duration,
    /// ttfr: sleep between sessions, the same for every target.
    pub ttfr_pause: Duration,
    pub quick: bool,
    pub out: Option<PathBuf>,
    /// `[gateway] worker_threads` for every Berth row (None: Berth's default).
    pub berth_worker_threads: Option<usize>,
    /// The http floor's runtime: 0 one worker per core, 1 current-thread.
    pub http_floor_worker_threads: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Floor,
    /// The echo answered in-process over HTTP (per-call and throughput).
    HttpFloor,
    Berth,
    /// Berth with one remote server (`url`): the http floor's server, in
    /// this process (per-call and throughput).
    BerthRemote,
    /// Berth's `berth` configuration plus a federated endpoint over the echo
    /// server, called through the endpoint (per-call and throughput).
    BerthEndpoint,
    /// Berth with `[auth] mode = "oauth"`: every request carries a JWT from
    /// the built-in issuer (per-call and throughput).
    BerthOAuth,
    /// Berth's `berth` configuration called by stateless 2026-07-28 clients
    /// (per-call and throughput; nothing to measure elsewhere).
    BerthModern,
    /// Berth with `[telemetry] metrics = false` and `[usage] enabled =
    /// false`: what metrics and metering cost (per-call and throughput).
    BerthQuiet,
    /// ttfr: Berth without a pool.
    BerthCold,
    /// ttfr: Berth with a pre-initialized pool.
    BerthWarm,
    Supergateway,
    McpProxy,
    External(String, String),
}

impl Target {
    fn name(&self) -> String {
        match self {
            Target::Floor => FLOOR.into(),
            Target::HttpFloor => HTTP_FLOOR.into(),
            Target::Berth => "berth".into(),
            Target::BerthRemote => BERTH_REMOTE.into(),
            Target::BerthEndpoint => BERTH_ENDPOINT.into(),
            Target::BerthOAuth => "berth oauth".into(),
            Target::BerthQuiet => "berth no telemetry".into(),
            Target::BerthModern => format!("berth {}", crate::mcp::MODERN_VERSION),
            Target::BerthCold => "berth cold".into(),
            Target::BerthWarm => "berth warm".into(),
            Target::Supergateway => format!("supergateway {}", peers::SUPERGATEWAY_VERSION),
            Target::McpProxy => format!("mcp-proxy {}", peers::MCP_PROXY_VERSION),
            Target::External(name, _) => name.clone(),
        }
    }
}

/// One measured scenario instance.
#[derive(Debug, Clone)]
struct Instance {
    kind: LoadScenario,
    name: String,
    /// Concurrent sessions (throughput) or idle sessions (memory).
    sessions: u64,
    calls_each: u64,
}

impl Instance {
    /// Sessions and untimed warm-up calls of a call scenario: per-call is
    /// one session warmed up first, throughput many sessions at once.
    fn call_shape(&self, options: &LoadOptions) -> (u64, u64) {
        match self.kind {
            LoadScenario::PerCall => (1, options.warmup),
            _ => (self.sessions, 0),
        }
    }

    fn is_memory(&self) -> bool {
        matches!(
            self.kind,
            LoadScenario::IdleExclusive | LoadScenario::IdleShared
        )
    }

    fn describe(&self, options: &LoadOptions) -> String {
        match self.kind {
            LoadScenario::PerCall => format!(
                "Per-call overhead: 1 session (berth 2026-07-28: 1 stateless client), {} sequential tools/call echo ({BERTH_ENDPOINT}: {ENDPOINT_TOOL} on /mcp/{ENDPOINT})",
                self.calls_each
            ),
            LoadScenario::Throughput => format!(
                "Throughput: {} concurrent sessions (berth 2026-07-28: stateless clients), {} tools/call each (latency of every call; {BERTH_ENDPOINT}: {ENDPOINT_TOOL} on /mcp/{ENDPOINT})",
                self.sessions, self.calls_each
            ),
            LoadScenario::IdleExclusive => format!(
                "Memory: gateway RSS (own process, children excluded) with {} idle sessions, one echo process per session",
                self.sessions
            ),
            LoadScenario::IdleShared => format!(
                "Memory: gateway RSS with {} idle sessions multiplexed over shared echo processes (berth binding = \"shared\", 2 processes)",
                self.sessions
            ),
            LoadScenario::Ttfr => format!(
                "New session, time to first tool result: {} sequential sessions (after 1 warm-up), initialize → initialized → tools/call echo, server `berth-fixture {}`, {} ms between sessions",
                self.sessions,
                fixture_args(options.ttfr_boot_delay).join(" "),
                options.ttfr_pause.as_millis()
            ),
        }
    }
}

/// CPU time one process used over the timed calls.
#[derive(Debug, Clone, Copy)]
struct Cpu {
    ticks: u64,
    ticks_per_sec: u64,
    calls: u64,
}

impl Cpu {
    fn per_call_us(&self) -> f64 {
        self.ticks as f64 * 1e6 / self.ticks_per_sec.max(1) as f64 / self.calls.max(1) as f64
    }
}

/// Whose CPU time a [`CpuMeter`] reads.
enum CpuSource {
    /// These processes, summed.
    Pids(Vec<u32>),
    /// The HTTP floor's threads in this process.
    FloorThreads,
}

impl CpuSource {
    fn ticks(&self) -> Option<u64> {
        match self {
            CpuSource::Pids(pids) => ticks(pids),
            CpuSource::FloorThreads => crate::floor::cpu_ticks(),
        }
    }
}

/// Reads the CPU ticks of its source before, and builds a [`Cpu`] after.
struct CpuMeter {
    source: CpuSource,
    before: Option<u64>,
}

impl CpuMeter {
    fn start(pids: Vec<u32>) -> Self {
        Self::of(CpuSource::Pids(pids))
    }

    fn of(source: CpuSource) -> Self {
        let before = source.ticks();
        CpuMeter { source, before }
    }

    fn stop(self, calls: u64) -> Option<Cpu> {
        let (before, after) = (self.before?, self.source.ticks()?);
        Some(Cpu {
            ticks: after.saturating_sub(before),
            ticks_per_sec: peers::clock_ticks_per_sec(),
            calls,
        })
    }
}

fn ticks(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&pid| peers::cpu_ticks(pid)).sum()
}

/// `echo --boot-delay …` in a form the fixture parses.
fn fixture_args(boot_delay: Duration) -> Vec<String> {
    let us = boot_delay.as_micros();
    let delay = if us.is_multiple_of(1000) {
        format!("{}ms", us / 1000)
    } else {
        format!("{us}us")
    };
    vec!["echo".into(), "--boot-delay".into(), delay]
}

#[derive(Debug, Clone, Copy)]
struct Memory {
    before_kib: u64,
    after_kib: u64,
    sessions: u64,
}

impl Memory {
    fn per_session_kib(&self) -> f64 {
        (self.after_kib as f64 - self.before_kib as f64) / self.sessions.max(1) as f64
    }
}

enum Status {
    Ok,
    Unavailable(String),
    Failed(String),
}

struct Row {
    target: Target,
    status: Status,
    summary: Option<Summary>,
    wall: Option<Duration>,
    memory: Option<Memory>,
    cpu: Option<Cpu>,
    /// `berth → remote`: the CPU of its upstream (the floor's threads), not
    /// counted in `cpu`.
    upstream_cpu: Option<Cpu>,
    note: Option<String>,
}

impl Row {
    fn new(target: &Target, status: Status) -> Row {
        Row {
            target: target.clone(),
            status,
            summary: None,
            wall: None,
            memory: None,
            cpu: None,
            upstream_cpu: None,
            note: None,
        }
    }

    fn calls_per_sec(&self) -> Option<f64> {
        let (s, wall) = (self.summary.as_ref()?, self.wall?);
        (s.ok > 0 && !wall.is_zero()).then(|| s.ok as f64 / wall.as_secs_f64())
    }
}

struct ScenarioReport {
    instance: Instance,
    rows: Vec<Row>,
}

fn instances(options: &LoadOptions) -> Vec<Instance> {
    let mut out = Vec::new();
    for &kind in &options.scenarios {
        match kind {
            LoadScenario::PerCall => out.push(Instance {
                kind,
                name: "per-call".into(),
                sessions: 1,
                calls_each: options.calls,
            }),
            LoadScenario::Throughput => {
                for &c in &options.concurrency {
                    out.push(Instance {
                        kind,
                        name: format!("throughput-{c}"),
                        sessions: c,
                        calls_each: options.calls_per_session,
                    });
                }
            }
            LoadScenario::IdleExclusive => out.push(Instance {
                kind,
                name: format!("idle-exclusive-{}", options.idle_sessions),
                sessions: options.idle_sessions,
                calls_each: 0,
            }),
            LoadScenario::IdleShared => out.push(Instance {
                kind,
                name: format!("idle-shared-{}", options.shared_sessions),
                sessions: options.shared_sessions,
                calls_each: 0,
            }),
            LoadScenario::Ttfr => out.push(Instance {
                kind,
                name: "ttfr".into(),
                sessions: options.ttfr_sessions,
                calls_each: 1,
            }),
        }
    }
    out
}

fn targets(options: &LoadOptions, instance: &Instance) -> Vec<Target> {
    let mut out = if instance.kind == LoadScenario::Ttfr {
        // The 2026-07-28 row sits beside the handshake-era ones; where it
        // has nothing to measure it is reported unavailable.
        vec![
            Target::Floor,
            Target::BerthCold,
            Target::BerthWarm,
            Target::BerthModern,
        ]
    } else {
        let mut berths = vec![Target::Floor];
        if matches!(
            instance.kind,
            LoadScenario::PerCall | LoadScenario::Throughput
        ) {
            berths.push(Target::HttpFloor);
        }
        berths.push(Target::Berth);
        if matches!(
            instance.kind,
            LoadScenario::PerCall | LoadScenario::Throughput
        ) {
            // Beside the plain row it is measured against.
            if options.endpoint {
                berths.push(Target::BerthEndpoint);
            }
            if options.remote {
                berths.push(Target::BerthRemote);
            }
            berths.push(Target::BerthOAuth);
            berths.push(Target::BerthQuiet);
        }
        berths.push(Target::BerthModern);
        berths
    };
    if options.peers {
        out.push(Target::Supergateway);
        out.push(Target::McpProxy);
    }
    for (name, url) in &options.external {
        out.push(Target::External(name.clone(), url.clone()));
    }
    out
}

/// Runs every scenario; returns false if a Berth row failed.
pub async fn run(options: &LoadOptions) -> Result<bool> {
    for (path, what) in [
        (&options.fixture, "berth-fixture"),
        (&options.berth, "berth"),
    ] {
        if !path.is_file() {
            bail!(
                "{what} not found at {}: cargo build --release -p berth -p berth-fixtures",
                path.display()
            );
        }
    }
    if options.peers {
        for (peer, result) in peers::install(&options.peers_dir).await {
            if let Err(error) = result {
                eprintln!("[peers] {peer} unavailable: {error:#}");
            }
        }
    }
    let mut reports = Vec::new();
    for instance in instances(options) {
        let mut rows = Vec::new();
        for target in targets(options, &instance) {
            eprintln!("[{}] {} ...", instance.name, target.name());
            let row = run_one(options, &instance, &target).await;
            match (&row.status, &row.summary) {
                (Status::Ok, Some(s)) => eprintln!(
                    "[{}] {}: {}{}",
                    instance.name,
                    target.name(),
                    s.line(),
                    row.memory
                        .map(|m| format!("  rss {} → {} KiB", m.before_kib, m.after_kib))
                        .unwrap_or_default()
                ),
                (Status::Unavailable(r), _) => {
                    eprintln!("[{}] {}: unavailable: {r}", instance.name, target.name())
                }
                (Status::Failed(r), _) => {
                    eprintln!("[{}] {}: failed: {r}", instance.name, target.name())
                }
                _ => {}
            }
            if !matches!(row.status, Status::Unavailable(_))
                || !matches!(target, Target::Floor | Target::HttpFloor)
            {
                rows.push(row);
            }
        }
        reports.push(ScenarioReport { instance, rows });
    }
    print!("{}", render(options, &reports));
    if let Some(path) = &options.out {
        let text = serde_json::to_string_pretty(&to_json(options, &reports))?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(reports.iter().all(|r| {
        r.rows.iter().all(|row| {
            !matches!(
                row.target,
                Target::Berth
                    | Target::BerthRemote
                    | Target::BerthEndpoint
                    | Target::BerthOAuth
                    | Target::BerthQuiet
                    | Target::BerthModern
                    | Target::BerthCold
                    | Target::BerthWarm
                    | Target::Floor
                    | Target::HttpFloor
            ) || matches!(row.status, Status::Ok | Status::Unavailable(_))
        })
    }))
}

fn berth_config(options: &LoadOptions, shared: bool) -> String {
    let args = ["echo"].map(crate::suite::toml_string).join(", ");
    let server = format!(
        "command = {}\nargs = [{args}]\n",
        crate::suite::toml_string(&options.fixture.to_string_lossy()),
    );
    gateway_config(options, shared, &server)
}

/// Berth's configuration with one server `echo` whose `[servers.echo]`
/// lines are `server` (a command, or a remote `url`).
fn gateway_config(options: &LoadOptions, shared: bool, server: &str) -> String {
    let workers = options
        .berth_worker_threads
        .map(|n| format!("worker_threads = {n}\n"))
        .unwrap_or_default();
    let mut text = format!(
        "[gateway]\nlisten = \"127.0.0.1:0\"\nsession_idle_timeout = \"1h\"\n{workers}\n[servers.{SERVER}]\n{server}"
    );
    if shared {
        text.push_str("binding = \"shared\"\n");
    } else {
        let max = (options
            .idle_sessions
            .max(*options.concurrency.iter().max().unwrap_or(&0))
            + 64)
            .max(64);
        text.push_str(&format!(
            "\n[servers.{SERVER}.pool]\nmax_processes = {max}\n"
        ));
    }
    text
}

/// The built-in issuer's key, made in Berth's data directory before Berth
/// starts, and a token it signed for the echo server: the `[gateway]` and
/// `[auth]` lines to add, and the token.
fn oauth_setup(dir: &std::path::Path) -> Result<(String, String)> {
    const PUBLIC: &str = "http://berth-bench.invalid";
    let mut config = berth_issuer::IssuerConfig::new(PUBLIC, "unused");
    config.resources = vec![format!("{PUBLIC}/mcp/{SERVER}")];
    let issuer = berth_issuer::Issuer::open(dir, config)?;
    let token = issuer.mint(&berth_issuer::Grant {
        subject: "bench".into(),
        client_id: "bench".into(),
        audience: format!("{PUBLIC}/mcp/{SERVER}"),
        scopes: vec!["tools:call".into()],
        ttl: Duration::from_secs(24 * 3600),
    })?;
    // Every session here is one principal (the token's subject): the
    // per-client fairness limits, meant for many tenants, would measure
    // themselves (429s), not the cost of checking a token.
    let gateway = format!(
        "[auth]\nmode = \"oauth\"\n\n[gateway]\npublic_url = {PUBLIC:?}\ndata_dir = {}\nrequests_per_second_per_client = 0.0\nmax_sessions_per_client = 0\n",
        crate::suite::toml_string(&dir.to_string_lossy())
    );
    Ok((gateway, token))
}

/// Berth's configuration for `ttfr`: no pool (cold), or a pre-initialized
/// pool of two (warm).
fn ttfr_berth_config(options: &LoadOptions, warm: bool) -> String {
    let args: Vec<String> = fixture_args(options.ttfr_boot_delay)
        .iter()
        .map(|a| crate::suite::toml_string(a))
        .collect();
    let mut text = format!(
        "[gateway]\nlisten = \"127.0.0.1:0\"\n\n[servers.{SERVER}]\ncommand = {}\nargs = [{}]\n",
        crate::suite::toml_string(&options.fixture.to_string_lossy()),
        args.join(", ")
    );
    if warm {
        text.push_str(&format!(
            "\n[servers.{SERVER}.pool]\nmin_ready = 2\npreinitialize = true\n"
        ));
    }
    text
}

/// Starts `target` (not the floor) hosting the echo fixture with
/// `fixture_args`; Berth gets `berth_config`. Returns the URL and the
/// gateway (none for an external target), or the row to report.
async fn start_target(
    options: &LoadOptions,
    target: &Target,
    dir: &std::path::Path,
    fixture_args: &[String],
    berth_config: String,
) -> std::result::Result<(String, Option<Gateway>), Row> {
    let log = dir.join("gateway.log");
    let fixture_cmd = format!("{} {}", options.fixture.display(), fixture_args.join(" "));
    let started = match target {
        Target::Berth
        | Target::BerthRemote
        | Target::BerthEndpoint
        | Target::BerthOAuth
        | Target::BerthQuiet
        | Target::BerthModern
        | Target::BerthCold
        | Target::BerthWarm => {
            let config = dir.join("berth.toml");
            let path = if *target == Target::BerthEndpoint {
                ENDPOINT
            } else {
                SERVER
            };
            match std::fs::write(&config, berth_config) {
                Ok(()) => Gateway::berth(&options.berth, &config, path, &log).await,
                Err(error) => Err(anyhow!("writing the config: {error}")),
            }
        }
        Target::Supergateway => Gateway::supergateway(&options.peers_dir, &fixture_cmd, &log).await,
        Target::McpProxy => {
            Gateway::mcp_proxy(&options.peers_dir, &options.fixture, fixture_args, &log).await
        }
        Target::External(_, _) | Target::Floor | Target::HttpFloor => {
            Err(anyhow!("not started here"))
        }
    };
    match (target, started) {
        (Target::External(_, url), _) => Ok((url.clone(), None)),
        (_, Ok(gateway)) => Ok((gateway.url.clone(), Some(gateway))),
        (
            Target::Berth
            | Target::BerthRemote
            | Target::BerthEndpoint
            | Target::BerthOAuth
            | Target::BerthQuiet
            | Target::BerthModern
            | Target::BerthCold
            | Target::BerthWarm,
            Err(error),
        ) => Err(Row::new(target, Status::Failed(format!("{error:#}")))),
        (_, Err(error)) => Err(Row::new(target, Status::Unavailable(format!("{error:#}")))),
    }
}

async fn stop_gateway(gateway: Option<Gateway>) -> Option<String> {
    let gateway = gateway?;
    let tail = gateway.log_tail();
    let note = gateway.stop().await;
    note.map(|n| format!("{n}; log: {tail}"))
}

/// `ttfr`: one warm-up session, then `ttfr_sessions` timed sessions, one
/// after the other, `ttfr_pause` apart.
async fn run_ttfr(options: &LoadOptions, target: &Target) -> Row {
    let args = fixture_args(options.ttfr_boot_delay);
    let run_options = RunOptions {
        sessions: options.ttfr_sessions,
        warmup: 1,
        pause: options.ttfr_pause,
    };
    let label = format!("[ttfr] {}", target.name());
    let mut row = if *target == Target::Floor {
        let measure = async {
            let start = Instant::now();
            let recorder = crate::ttfr::run(&label, run_options, || {
                crate::stdio::direct_session(&options.fixture, &args, options.timeout)
            })
            .await;
            Ok(Measured::new(recorder, start.elapsed()))
        };
        finish(target, bounded(options, measure).await, None)
    } else {
        if let Target::External(..) = target {
            return Row::new(
                target,
                Status::Unavailable("external target: not started with a boot delay".into()),
            );
        }
        let dir = match tempfile::Builder::new().prefix("berth-load-").tempdir() {
            Ok(dir) => dir,
            Err(error) => return Row::new(target, Status::Failed(format!("temp dir: {error}"))),
        };
        let warm = *target == Target::BerthWarm;
        let config = ttfr_berth_config(options, warm);
        let (url, gateway) = match start_target(options, target, dir.path(), &args, config).await {
            Ok(started) => started,
            Err(row) => return row,
        };
        let measured = match McpHttp::new(&url, options.timeout, None) {
            Ok(client) => {
                let measure = async {
                    if warm {
                        // Let the pool fill before the first session.
                        tokio::time::sleep(options.ttfr_pause).await;
                    }
                    client.preconnect().await;
                    let start = Instant::now();
                    let recorder = crate::ttfr::run(&label, run_options, || {
                        crate::ttfr::http_session(&client)
                    })
                    .await;
                    Ok(Measured::new(recorder, start.elapsed()))
                };
                bounded(options, measure).await
            }
            Err(error) => Err(error),
        };
        let note = stop_gateway(gateway).await;
        finish(target, measured, note)
    };
    // Sessions per second of a sequential, paused loop mean nothing.
    row.wall = None;
    row
}

async fn run_one(options: &LoadOptions, instance: &Instance, target: &Target) -> Row {
    if *target == Target::BerthModern {
        let reason = match instance.kind {
            LoadScenario::PerCall | LoadScenario::Throughput => None,
            LoadScenario::IdleExclusive | LoadScenario::IdleShared => Some(
                "not applicable: a 2026-07-28 client opens no session, so there is nothing idle to hold",
            ),
            LoadScenario::Ttfr => Some(
                "not applicable: a 2026-07-28 client opens no session; its first tool call is any tool call",
            ),
        };
        if let Some(reason) = reason {
            return Row::new(target, Status::Unavailable(reason.into()));
        }
    }
    if instance.kind == LoadScenario::Ttfr {
        return run_ttfr(options, target).await;
    }
    if *target == Target::Floor {
        if instance.is_memory() {
            return Row::new(target, Status::Unavailable("not applicable".into()));
        }
        let (sessions, _) = instance.call_shape(options);
        let measure = floor_calls(options, sessions, instance.calls_each);
        return finish(target, bounded(options, measure).await, None);
    }
    if *target == Target::HttpFloor {
        if instance.is_memory() {
            return Row::new(target, Status::Unavailable("not applicable".into()));
        }
        return http_floor(options, instance).await;
    }
    if *target == Target::BerthRemote {
        if !matches!(
            instance.kind,
            LoadScenario::PerCall | LoadScenario::Throughput
        ) {
            return Row::new(target, Status::Unavailable("not measured here".into()));
        }
        return berth_remote(options, instance).await;
    }
    if instance.kind == LoadScenario::IdleShared && *target == Target::Supergateway {
        return Row::new(
            target,
            Status::Unavailable("no shared mode: --stateful spawns one child per session".into()),
        );
    }
    let dir = match tempfile::Builder::new().prefix("berth-load-").tempdir() {
        Ok(dir) => dir,
        Err(error) => return Row::new(target, Status::Failed(format!("temp dir: {error}"))),
    };
    let shared = instance.kind == LoadScenario::IdleShared;
    let mut config = if *target == Target::BerthEndpoint {
        endpoint_config(options)
    } else {
        berth_config(options, shared)
    };
    let mut token = None;
    if *target == Target::BerthOAuth {
        match oauth_setup(dir.path()) {
            Ok((extra, minted)) => {
                config = config.replacen("[gateway]\n", &extra, 1);
                token = Some(minted);
            }
            Err(error) => return Row::new(target, Status::Failed(format!("{error:#}"))),
        }
    }
    if *target == Target::BerthQuiet {
        config = config.replacen(
            "[gateway]\n",
            "[telemetry]\nmetrics = false\n\n[usage]\nenabled = false\n\n[gateway]\n",
            1,
        );
    }
    let stateless = *target == Target::BerthModern;
    if stateless {
        // Its own data directory, where `berth ps` finds this gateway.
        config = config.replacen(
            "[gateway]\n",
            &format!(
                "[gateway]\ndata_dir = {}\n",
                crate::suite::toml_string(&dir.path().to_string_lossy())
            ),
            1,
        );
    }
    let args = ["echo".to_string()];
    let (url, gateway) = match start_target(options, target, dir.path(), &args, config).await {
        Ok(started) => started,
        Err(row) => return row,
    };
    if instance.is_memory() && gateway.is_none() {
        return Row::new(
            target,
            Status::Unavailable("external target: its process is unknown".into()),
        );
    }
    let client = match McpHttp::new(&url, options.timeout, token.as_deref()) {
        Ok(client) => Arc::new(client),
        Err(error) => return Row::new(target, Status::Failed(format!("{error:#}"))),
    };
    let pid = gateway.as_ref().map(|g| g.pid);
    let cpu = || CpuSource::Pids(pid.into_iter().collect());
    let how = if *target == Target::BerthEndpoint {
        Calls::endpoint()
    } else {
        Calls {
            stateless,
            ..Calls::plain()
        }
    };
    let measured = match instance.kind {
        LoadScenario::PerCall | LoadScenario::Throughput => {
            let (sessions, warmup) = instance.call_shape(options);
            bounded(
                options,
                http_calls(
                    &client,
                    how,
                    sessions,
                    instance.calls_each,
                    warmup,
                    cpu(),
                    None,
                ),
            )
            .await
        }
        LoadScenario::IdleExclusive | LoadScenario::IdleShared => {
            let pid = pid.unwrap_or_default();
            bounded(
                options,
                idle(&client, pid, instance.sessions, options.open_concurrency),
            )
            .await
        }
        LoadScenario::Ttfr => unreachable!("handled above"),
    };
    // Stateless requests to a server Berth judged handshake-only would have
    // measured the bridge, not the 2026-07-28 path.
    let measured = match measured {
        Ok(measured) if stateless => stateless_era(options, dir.path())
            .await
            .and_then(|era| match era.as_str() {
                crate::mcp::MODERN_VERSION => Ok(measured),
                other => Err(anyhow!(
                    "Berth's era probe found the echo server {other}: this would measure the bridge, not the 2026-07-28 path"
                )),
            }),
        other => other,
    };
    let stop_note = stop_gateway(gateway).await;
    finish(target, measured, stop_note)
}

/// The HTTP floor: the echo answered in this process (see [`crate::floor`]),
/// driven by the same client and measured the same way as Berth; its CPU is
/// that of the floor's own threads.
async fn http_floor(options: &LoadOptions, instance: &Instance) -> Row {
    let target = Target::HttpFloor;
    let server = match crate::floor::FloorServer::start(options.http_floor_worker_threads).await {
        Ok(server) => server,
        Err(error) => return Row::new(&target, Status::Failed(format!("{error:#}"))),
    };
    let measured = match McpHttp::new(&server.url, options.timeout, None) {
        Ok(client) => {
            let client = Arc::new(client);
            let (sessions, warmup) = instance.call_shape(options);
            let measured = bounded(
                options,
                http_calls(
                    &client,
                    Calls::plain(),
                    sessions,
                    instance.calls_each,
                    warmup,
                    CpuSource::FloorThreads,
                    None,
                ),
            )
            .await;
            // The client's keep-alive connections close before the server stops.
            drop(client);
            measured
        }
        Err(error) => Err(error),
    };
    server.stop().await;
    finish(&target, measured, None)
}

/// `berth → remote`: Berth whose one server is remote, its `url` the http
/// floor's server in this process, called on `/mcp/echo` as every Berth
/// row. Its gateway CPU is Berth's process alone; the floor's threads (the
/// upstream's cost) are read apart into `upstream_cpu`.
async fn berth_remote(options: &LoadOptions, instance: &Instance) -> Row {
    let target = Target::BerthRemote;
    let server = match crate::floor::FloorServer::start(options.http_floor_worker_threads).await {
        Ok(server) => server,
        Err(error) => {
            return Row::new(
                &target,
                Status::Failed(format!("starting the upstream: {error:#}")),
            );
        }
    };
    let row = async {
        let dir = match tempfile::Builder::new().prefix("berth-load-").tempdir() {
            Ok(dir) => dir,
            Err(error) => return Row::new(&target, Status::Failed(format!("temp dir: {error}"))),
        };
        let config = remote_config(options, &server.url);
        let (url, gateway) = match start_target(options, &target, dir.path(), &[], config).await {
            Ok(started) => started,
            Err(row) => return row,
        };
        let measured = match McpHttp::new(&url, options.timeout, None) {
            Ok(client) => {
                let client = Arc::new(client);
                let (sessions, warmup) = instance.call_shape(options);
                let pid = gateway.as_ref().map(|g| g.pid);
                bounded(
                    options,
                    http_calls(
                        &client,
                        Calls::plain(),
                        sessions,
                        instance.calls_each,
                        warmup,
                        CpuSource::Pids(pid.into_iter().collect()),
                        Some(CpuSource::FloorThreads),
                    ),
                )
                .await
            }
            Err(error) => Err(error),
        };
        // Berth ends its upstream sessions (DELETE) while the floor still serves.
        let note = stop_gateway(gateway).await;
        finish(&target, measured, note)
    }
    .await;
    server.stop().await;
    row
}

/// Berth's configuration for `berth → remote`: the echo server is `url`.
fn remote_config(options: &LoadOptions, url: &str) -> String {
    gateway_config(
        options,
        false,
        &format!("url = {}\n", crate::suite::toml_string(url)),
    )
}

/// Berth's configuration for `berth endpoint`: the `berth` row's, plus the
/// federated endpoint [`ENDPOINT`] whose one member is the echo server.
fn endpoint_config(options: &LoadOptions) -> String {
    let mut text = berth_config(options, false);
    text.push_str(&format!(
        "\n[endpoints.{ENDPOINT}]\nservers = [{}]\n",
        crate::suite::toml_string(SERVER)
    ));
    text
}

/// The era Berth's probe found for the echo server, from `berth ps --json`
/// of the gateway whose data directory is `data_dir`.
async fn stateless_era(options: &LoadOptions, data_dir: &std::path::Path) -> Result<String> {
    let servers = crate::suite::berth_ps(&options.berth, data_dir).await?;
    servers
        .iter()
        .find(|s| s["server"] == SERVER)
        .and_then(|server| server["era"].as_str())
        .map(str::to_string)
        .ok_or_else(|| anyhow!("berth ps --json names no era for {SERVER}: {servers:?}"))
}

struct Measured {
    recorder: Recorder,
    wall: Duration,
    memory: Option<Memory>,
    cpu: Option<Cpu>,
    upstream_cpu: Option<Cpu>,
}

impl Measured {
    fn new(recorder: Recorder, wall: Duration) -> Self {
        Measured {
            recorder,
            wall,
            memory: None,
            cpu: None,
            upstream_cpu: None,
        }
    }
}

fn finish(target: &Target, measured: Result<Measured>, note: Option<String>) -> Row {
    let mut row = match measured {
        Ok(measured) => {
            let mut row = Row::new(target, Status::Ok);
            row.summary = Some(measured.recorder.summary());
            row.wall = Some(measured.wall);
            row.memory = measured.memory;
            row.cpu = measured.cpu;
            row.upstream_cpu = measured.upstream_cpu;
            row
        }
        Err(error) => Row::new(target, Status::Failed(format!("{error:#}"))),
    };
    row.note = note;
    row
}

async fn bounded(
    options: &LoadOptions,
    measure: impl Future<Output = Result<Measured>>,
) -> Result<Measured> {
    tokio::time::timeout(options.scenario_timeout, measure)
        .await
        .map_err(|_| {
            anyhow!(
                "did not finish within {:?} (--scenario-timeout)",
                options.scenario_timeout
            )
        })?
}

/// `sessions` concurrent sessions, each: open (untimed), `warmup` untimed
/// calls, then `calls` timed calls; then DELETE (untimed). The wall time
/// runs from when every session is open and warmed up to the last call; the
/// CPU time of `cpu` is read at the same two points.
///
/// `how.stateless`: 2026-07-28 clients instead of sessions; each "opens"
/// with one untimed call (the stateless pool starts with no process) and
/// ends with nothing.
async fn http_calls(
    client: &Arc<McpHttp>,
    how: Calls,
    sessions: u64,
    calls: u64,
    warmup: u64,
    cpu: CpuSource,
    upstream: Option<CpuSource>,
) -> Result<Measured> {
    client.preconnect().await;
    let mut opened = Vec::new();
    let mut recorder = Recorder::default();
    let opens = futures::stream::iter(0..sessions)
        .map(|_| open_for(client, how))
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    for session in opens {
        match session {
            Ok(session) => opened.push(session),
            Err(error) => recorder.error(&error.context("opening the session")),
        }
    }
    if opened.is_empty() {
        bail!(
            "no session could be opened: {:?}",
            recorder.summary().first_errors
        );
    }
    for session in &opened {
        for i in 0..warmup {
            let _ = client
                .call_tool(session, i + 1, how.tool, json!({ "text": TOOL_TEXT }))
                .await;
        }
    }
    let meter = CpuMeter::of(cpu);
    let upstream_meter = upstream.map(CpuMeter::of);
    let start = Instant::now();
    let tasks = opened.into_iter().map(|session| {
        let client = Arc::clone(client);
        tokio::spawn(async move {
            let mut local = Vec::new();
            let mut errors = Vec::new();
            for i in warmup..warmup + calls {
                let begin = Instant::now();
                let result = client
                    .call_tool(&session, i + 1, how.tool, json!({ "text": TOOL_TEXT }))
                    .await
                    .and_then(|reply| check_echo(&reply.message).map(|_| reply.arrived));
                match result {
                    Ok(arrived) => local.push(arrived - begin),
                    Err(error) => errors.push(error),
                }
            }
            (session, local, errors)
        })
    });
    let results = futures::future::join_all(tasks).await;
    let wall = start.elapsed();
    let mut sessions_done = Vec::new();
    for result in results {
        let (session, latencies, errors) = result.context("a session task panicked")?;
        sessions_done.push(session);
        for total in latencies {
            recorder.record(&Sample {
                total,
                phases: vec![],
            });
        }
        for error in errors {
            recorder.error(&error);
        }
    }
    let ok = recorder.summary().ok;
    let cpu = meter.stop(ok);
    let upstream_cpu = upstream_meter.and_then(|m| m.stop(ok));
    let deletes = futures::stream::iter(sessions_done.iter())
        .map(|s| client.delete(s))
        .buffer_unordered(16)
        .collect::<Vec<_>>();
    let _ = tokio::time::timeout(Duration::from_secs(60), deletes).await;
    Ok(Measured {
        cpu,
        upstream_cpu,
        ..Measured::new(recorder, wall)
    })
}

async fn open(client: &McpHttp) -> Result<Session> {
    let (session, _) = client.initialize().await?;
    client.initialized(&session).await?;
    Ok(session)
}

/// How [`http_calls`]' clients call and what opening one involves.
#[derive(Debug, Clone, Copy)]
struct Calls {
    /// 2026-07-28 clients: no session.
    stateless: bool,
    /// The tool called: `echo`, or `echo__echo` through the endpoint.
    tool: &'static str,
    /// One untimed call (id 0) right after opening: a stateless client's
    /// pool starts with no process, a federated session opens its member on
    /// first use.
    open_call: bool,
}

impl Calls {
    /// A session on a server's own path, calling `echo`.
    fn plain() -> Self {
        Calls {
            stateless: false,
            tool: TOOL,
            open_call: false,
        }
    }

    /// A session on the federated endpoint, calling `echo__echo`.
    fn endpoint() -> Self {
        Calls {
            stateless: false,
            tool: ENDPOINT_TOOL,
            open_call: true,
        }
    }
}

/// A session (or a 2026-07-28 client) opened as `how` says, untimed.
async fn open_for(client: &McpHttp, how: Calls) -> Result<Session> {
    let session = if how.stateless {
        Session::stateless()
    } else {
        open(client).await?
    };
    if how.stateless || how.open_call {
        let reply = client
            .call_tool(&session, 0, how.tool, json!({ "text": TOOL_TEXT }))
            .await?;
        check_echo(&reply.message)?;
    }
    Ok(session)
}

/// RSS of `pid` before and after opening `sessions` idle sessions; the
/// recorder holds each session's open latency (initialize + initialized).
async fn idle(
    client: &Arc<McpHttp>,
    pid: u32,
    sessions: u64,
    concurrency: usize,
) -> Result<Measured> {
    client.preconnect().await;
    // One session first, so lazily built state is in "before".
    let first = open(client).await.context("warm-up session")?;
    let _ = client.delete(&first).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before_kib = peers::rss_kib(pid).context("reading the gateway's RSS")?;
    let start = Instant::now();
    let results = futures::stream::iter(0..sessions)
        .map(|_| async {
            let begin = Instant::now();
            open(client).await.map(|s| (s, begin.elapsed()))
        })
        .buffer_unordered(concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    let wall = start.elapsed();
    let mut recorder = Recorder::default();
    let mut open_sessions = Vec::new();
    for result in results {
        match result {
            Ok((session, total)) => {
                recorder.record(&Sample {
                    total,
                    phases: vec![],
                });
                open_sessions.push(session);
            }
            Err(error) => recorder.error(&error),
        }
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after_kib = peers::rss_kib(pid).context("reading the gateway's RSS")?;
    let memory = Memory {
        before_kib,
        after_kib,
        sessions: open_sessions.len() as u64,
    };
    // DELETE them all, bounded (off the clock).
    let deletes = futures::stream::iter(open_sessions.iter())
        .map(|s| client.delete(s))
        .buffer_unordered(concurrency.max(1))
        .collect::<Vec<_>>();
    let _ = tokio::time::timeout(Duration::from_secs(60), deletes).await;
    Ok(Measured {
        memory: Some(memory),
        ..Measured::new(recorder, wall)
    })
}

/// The floor: `sessions` echo servers spawned directly, initialized, then
/// `calls` timed calls each over their pipes, concurrently.
async fn floor_calls(options: &LoadOptions, sessions: u64, calls: u64) -> Result<Measured> {
    let warmup = if sessions == 1 { options.warmup } else { 0 };
    let mut children = Vec::new();
    for _ in 0..sessions {
        let mut child = Command::new(&options.fixture)
            .arg("echo")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {}", options.fixture.display()))?;
        let mut stdin = child.stdin.take().context("stdin")?;
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let init = json!({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {
                "protocolVersion": crate::mcp::PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": { "name": "berth-bench", "version": env!("CARGO_PKG_VERSION") }
            }
        });
        send(&mut stdin, &init).await?;
        response_with_id(&mut lines, 0).await?;
        send(
            &mut stdin,
            &json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }),
        )
        .await?;
        children.push((child, stdin, lines));
    }
    for (_, stdin, lines) in &mut children {
        for i in 0..warmup {
            let id = i + 1;
            let call = json!({
                "jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": { "name": TOOL, "arguments": { "text": TOOL_TEXT } }
            });
            send(stdin, &call).await?;
            response_with_id(lines, id).await?;
        }
    }
    let meter = CpuMeter::start(children.iter().filter_map(|(c, _, _)| c.id()).collect());
    let start = Instant::now();
    let tasks = children.into_iter().map(|(child, mut stdin, mut lines)| {
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = Vec::new();
            for i in warmup..warmup + calls {
                let id = i + 1;
                let call = json!({
                    "jsonrpc": "2.0", "id": id, "method": "tools/call",
                    "params": { "name": TOOL, "arguments": { "text": TOOL_TEXT } }
                });
                let begin = Instant::now();
                let result = async {
                    send(&mut stdin, &call).await?;
                    check_echo(&response_with_id(&mut lines, id).await?)
                }
                .await;
                let elapsed = begin.elapsed();
                match result {
                    Ok(_) => latencies.push(elapsed),
                    Err(error) => errors.push(error),
                }
            }
            (child, stdin, latencies, errors)
        })
    });
    let results = futures::future::join_all(tasks).await;
    let wall = start.elapsed();
    let mut recorder = Recorder::default();
    let mut finished = Vec::new();
    for result in results {
        let (child, stdin, latencies, errors) = result.context("a floor task panicked")?;
        finished.push((child, stdin));
        for total in latencies {
            recorder.record(&Sample {
                total,
                phases: vec![],
            });
        }
        for error in errors {
            recorder.error(&error);
        }
    }
    let cpu = meter.stop(recorder.summary().ok);
    for (mut child, stdin) in finished {
        drop(stdin);
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
    Ok(Measured {
        cpu,
        ..Measured::new(recorder, wall)
    })
}

/// Microseconds as milliseconds with three decimals, `–` when absent.
fn ms(micros: Option<u64>) -> String {
    match micros {
        Some(us) => format!("{:.3} ms", us as f64 / 1000.0),
        None => "–".to_string(),
    }
}

/// `2.10× (+1.23 ms)`: `value` against `base`.
fn ratio_us(value: u64, base: u64) -> String {
    let diff = value as f64 - base as f64;
    let sign = if diff >= 0.0 { "+" } else { "−" };
    format!(
        "{:.2}× ({sign}{:.3} ms)",
        value as f64 / base.max(1) as f64,
        diff.abs() / 1000.0
    )
}

fn ratio_kib(value: f64, base: f64) -> String {
    let diff = value - base;
    let sign = if diff >= 0.0 { "+" } else { "−" };
    let ratio = if base.abs() < f64::EPSILON {
        "–".to_string()
    } else {
        format!("{:.2}×", value / base)
    };
    format!("{ratio} ({sign}{:.1} KiB)", diff.abs())
}

fn status_text(status: &Status) -> Option<String> {
    match status {
        Status::Ok => None,
        Status::Unavailable(reason) => Some(format!("unavailable: {}", one_line(reason))),
        Status::Failed(reason) => Some(format!("failed: {}", one_line(reason))),
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(200)
        .collect()
}

fn render(options: &LoadOptions, reports: &[ScenarioReport]) -> String {
    let mut out = format!(
        "\n# berth-bench load{}: echo fixture `{} echo`\n",
        if options.quick { " --quick" } else { "" },
        options.fixture.display()
    );
    for report in reports {
        out.push_str(&format!(
            "\n## {}\n\n{}\n\n",
            report.instance.name,
            report.instance.describe(options)
        ));
        let measured: Vec<&Row> = report
            .rows
            .iter()
            .filter(|r| matches!(r.status, Status::Ok))
            .collect();
        if report.instance.is_memory() {
            let mut header: Vec<String> = [
                "target",
                "sessions",
                "errors",
                "RSS before",
                "RSS after",
                "per session",
                "open p50",
            ]
            .map(String::from)
            .to_vec();
            for other in &measured {
                header.push(format!("vs {}", other.target.name()));
            }
            let rows: Vec<Vec<String>> = report
                .rows
                .iter()
                .map(|row| {
                    let mut cells = vec![row.target.name()];
                    if let Some(text) = status_text(&row.status) {
                        cells.push(text);
                        cells.resize(header.len(), "–".into());
                        return cells;
                    }
                    let m = row.memory.expect("memory row");
                    let s = row.summary.as_ref().expect("summary");
                    cells.extend([
                        m.sessions.to_string(),
                        s.errors.to_string(),
                        format!("{:.1} MiB", m.before_kib as f64 / 1024.0),
                        format!("{:.1} MiB", m.after_kib as f64 / 1024.0),
                        format!("{:.1} KiB", m.per_session_kib()),
                        ms(s.p50_us),
                    ]);
                    for other in &measured {
                        cells.push(if other.target == row.target {
                            "–".into()
                        } else {
                            let o = other.memory.expect("memory row");
                            ratio_kib(m.per_session_kib(), o.per_session_kib())
                        });
                    }
                    cells
                })
                .collect();
            let header: Vec<&str> = header.iter().map(String::as_str).collect();
            out.push_str(&markdown_table(&header, &rows));
        } else {
            let kind = report.instance.kind;
            let mut header: Vec<String> = if kind == LoadScenario::Ttfr {
                ["target", "sessions", "errors", "p50", "p90", "p99", "max"]
                    .map(String::from)
                    .to_vec()
            } else {
                [
                    "target", "calls", "errors", "p50", "p90", "p99", "max", "calls/s",
                ]
                .map(String::from)
                .to_vec()
            };
            if matches!(kind, LoadScenario::PerCall | LoadScenario::Throughput) {
                header.push("gateway CPU/call".into());
            }
            for other in &measured {
                header.push(format!("p50 vs {}", other.target.name()));
            }
            let rows: Vec<Vec<String>> = report
                .rows
                .iter()
                .map(|row| {
                    let mut cells = vec![row.target.name()];
                    if let Some(text) = status_text(&row.status) {
                        cells.push(text);
                        cells.resize(header.len(), "–".into());
                        return cells;
                    }
                    let s = row.summary.as_ref().expect("summary");
                    cells.extend([
                        s.ok.to_string(),
                        s.errors.to_string(),
                        ms(s.p50_us),
                        ms(s.p90_us),
                        ms(s.p99_us),
                        ms(s.max_us),
                    ]);
                    if kind != LoadScenario::Ttfr {
                        cells.push(
                            row.calls_per_sec()
                                .map(|t| format!("{t:.0}"))
                                .unwrap_or("–".into()),
                        );
                    }
                    if matches!(kind, LoadScenario::PerCall | LoadScenario::Throughput) {
                        cells.push(
                            row.cpu
                                .map(|c| format!("{:.1} µs", c.per_call_us()))
                                .unwrap_or("–".into()),
                        );
                    }
                    for other in &measured {
                        let base = other.summary.as_ref().and_then(|o| o.p50_us);
                        cells.push(match (base, s.p50_us) {
                            (Some(base), Some(p50)) if other.target != row.target => {
                                ratio_us(p50, base)
                            }
                            _ => "–".into(),
                        });
                    }
                    cells
                })
                .collect();
            let header: Vec<&str> = header.iter().map(String::as_str).collect();
            out.push_str(&markdown_table(&header, &rows));
        }
        if matches!(
            report.instance.kind,
            LoadScenario::PerCall | LoadScenario::Throughput
        ) {
            out.push_str(&format!(
                "- gateway CPU/call: utime + stime of the gateway's own process (children excluded; the stdio floor: the echo processes; the http floor: its server threads in the bench process; {BERTH_REMOTE}: Berth's process only, its upstream being the http floor's server; {BERTH_ENDPOINT}: Berth's process, its member's echo processes excluded as for berth) over the timed calls, from /proc/PID/stat in ticks of 1/{} s\n",
                peers::clock_ticks_per_sec()
            ));
            if let Some(line) = against_http_floor(&report.rows) {
                out.push_str(&line);
            }
            if let Some(line) = telemetry_overhead(&report.rows) {
                out.push_str(&line);
            }
            out.push_str(&feature_overheads(&report.rows));
        }
        for row in &report.rows {
            if report.instance.kind == LoadScenario::IdleExclusive && row.target == Target::McpProxy
            {
                out.push_str(&format!(
                    "- {}: always multiplexes every session over one child (it has no per-session processes)\n",
                    row.target.name()
                ));
            }
            if let Some(s) = &row.summary {
                for error in &s.first_errors {
                    out.push_str(&format!(
                        "- {}: error: {}\n",
                        row.target.name(),
                        one_line(error)
                    ));
                }
            }
            if let Some(note) = &row.note {
                out.push_str(&format!("- {}: {}\n", row.target.name(), one_line(note)));
            }
        }
    }
    out
}

/// Berth against the HTTP floor of the same run: CPU per call and
/// throughput, the figures issue 14's targets are stated in.
fn against_http_floor(rows: &[Row]) -> Option<String> {
    let ok = |target: &Target| {
        rows.iter()
            .find(|r| r.target == *target && matches!(r.status, Status::Ok))
    };
    let floor = ok(&Target::HttpFloor)?;
    let mut out = String::new();
    for target in [Target::Berth, Target::BerthModern] {
        let Some(berth) = ok(&target) else { continue };
        let cpu = match (berth.cpu, floor.cpu) {
            (Some(b), Some(f)) if f.per_call_us() > 0.0 => {
                format!("{:.2}×", b.per_call_us() / f.per_call_us())
            }
            _ => "–".into(),
        };
        let throughput = match (berth.calls_per_sec(), floor.calls_per_sec()) {
            (Some(b), Some(f)) if f > 0.0 => format!("{:.0}%", b / f * 100.0),
            _ => "–".into(),
        };
        out.push_str(&format!(
            "- {} against the http floor: CPU/call {cpu}, calls/s {throughput}\n",
            target.name()
        ));
    }
    Some(out)
}

/// A row measured against the row it adds one hop or feature to, in the
/// same run: (row, baseline, what the difference is).
fn overhead_pairs() -> Vec<(Target, Target, &'static str)> {
    vec![
        (
            Target::BerthEndpoint,
            Target::Berth,
            "federated endpoint overhead",
        ),
        (
            Target::BerthRemote,
            Target::HttpFloor,
            "remote upstream overhead",
        ),
    ]
}

/// One line per [`overhead_pairs`] pair whose rows both succeeded: the
/// per-call latency added (p50 and mean, µs and ratio), throughput against
/// the baseline, and whose CPU is whose.
fn feature_overheads(rows: &[Row]) -> String {
    let ok = |target: &Target| {
        rows.iter()
            .find(|r| r.target == *target && matches!(r.status, Status::Ok))
    };
    let mut out = String::new();
    for (target, base, what) in overhead_pairs() {
        let (Some(row), Some(baseline)) = (ok(&target), ok(&base)) else {
            continue;
        };
        let (Some(s), Some(b)) = (row.summary.as_ref(), baseline.summary.as_ref()) else {
            continue;
        };
        let p50 = match (s.p50_us, b.p50_us) {
            (Some(v), Some(base)) => us_over(v as f64, base as f64),
            _ => "–".into(),
        };
        let mean = match (s.mean_us, b.mean_us) {
            (Some(v), Some(base)) => us_over(v, base),
            _ => "–".into(),
        };
        let throughput = match (row.calls_per_sec(), baseline.calls_per_sec()) {
            (Some(v), Some(base)) if base > 0.0 => format!("{:.0}%", v / base * 100.0),
            _ => "–".into(),
        };
        let cpu = |c: Option<Cpu>| {
            c.map(|c| format!("{:.1} µs", c.per_call_us()))
                .unwrap_or("–".into())
        };
        // A remote upstream's CPU is apart from the gateway's; a stdio
        // server's is not counted (children are excluded).
        let upstream = match row.upstream_cpu {
            Some(c) => format!("its upstream's {}, ", cpu(Some(c))),
            None => String::new(),
        };
        out.push_str(&format!(
            "- {what} ({} against {}, same run): p50 {p50}, mean {mean} per call; calls/s {throughput}; gateway CPU/call {} (the gateway's process only; {upstream}the {} alone {})\n",
            target.name(),
            base.name(),
            cpu(row.cpu),
            base.name(),
            cpu(baseline.cpu),
        ));
    }
    out
}

/// `+37 µs (1.35×)`: `value` above `base`, in microseconds.
fn us_over(value: f64, base: f64) -> String {
    let diff = value - base;
    let sign = if diff >= 0.0 { "+" } else { "−" };
    let ratio = if base > 0.0 {
        format!("{:.2}×", value / base)
    } else {
        "–".into()
    };
    format!("{sign}{:.0} µs ({ratio})", diff.abs())
}

/// What metrics and usage metering cost: Berth as configured by default
/// against Berth with both off, same run.
fn telemetry_overhead(rows: &[Row]) -> Option<String> {
    let ok = |target: &Target| {
        rows.iter()
            .find(|r| r.target == *target && matches!(r.status, Status::Ok))
    };
    let (on, off) = (ok(&Target::Berth)?, ok(&Target::BerthQuiet)?);
    let throughput = match (on.calls_per_sec(), off.calls_per_sec()) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:+.1}%", (a / b - 1.0) * 100.0),
        _ => "–".into(),
    };
    let p50 = match (
        on.summary.as_ref().and_then(|s| s.p50_us),
        off.summary.as_ref().and_then(|s| s.p50_us),
    ) {
        (Some(a), Some(b)) if b > 0 => format!("{:+.1}%", (a as f64 / b as f64 - 1.0) * 100.0),
        _ => "–".into(),
    };
    Some(format!(
        "- metrics and usage metering (berth against berth no telemetry): calls/s {throughput}, p50 {p50}\n"
    ))
}

fn to_json(options: &LoadOptions, reports: &[ScenarioReport]) -> Value {
    let scenarios: Vec<Value> = reports
        .iter()
        .map(|report| {
            let rows: Vec<Value> = report
                .rows
                .iter()
                .map(|row| {
                    let mut value = json!({
                        "target": row.target.name(),
                        "url": match &row.target { Target::External(_, url) => Some(url.clone()), _ => None },
                        "note": row.note,
                    });
                    let fields = value.as_object_mut().expect("object");
                    match &row.status {
                        Status::Ok => {
                            fields.insert("status".into(), "ok".into());
                        }
                        Status::Unavailable(r) => {
                            fields.insert("status".into(), "unavailable".into());
                            fields.insert("reason".into(), r.as_str().into());
                        }
                        Status::Failed(r) => {
                            fields.insert("status".into(), "failed".into());
                            fields.insert("reason".into(), r.as_str().into());
                        }
                    }
                    if let Some(s) = &row.summary {
                        fields.extend(s.json_fields());
                    }
                    if let Some(wall) = row.wall {
                        fields.insert("wall_ms".into(), json!(wall.as_secs_f64() * 1000.0));
                    }
                    if let Some(t) = row.calls_per_sec() {
                        fields.insert("calls_per_sec".into(), json!((t * 10.0).round() / 10.0));
                    }
                    if let Some(c) = row.cpu {
                        fields.insert("cpu_ticks".into(), c.ticks.into());
                        fields.insert("clock_ticks_per_sec".into(), c.ticks_per_sec.into());
                        fields.insert(
                            "cpu_us_per_call".into(),
                            json!((c.per_call_us() * 100.0).round() / 100.0),
                        );
                    }
                    if let Some(c) = row.upstream_cpu {
                        fields.insert("upstream_cpu_ticks".into(), c.ticks.into());
                        fields.insert(
                            "upstream_cpu_us_per_call".into(),
                            json!((c.per_call_us() * 100.0).round() / 100.0),
                        );
                    }
                    if let Some(m) = row.memory {
                        fields.insert("rss_before_kib".into(), m.before_kib.into());
                        fields.insert("rss_after_kib".into(), m.after_kib.into());
                        fields.insert("idle_sessions".into(), m.sessions.into());
                        fields.insert(
                            "rss_per_session_kib".into(),
                            json!((m.per_session_kib() * 10.0).round() / 10.0),
                        );
                    }
                    value
                })
                .collect();
            json!({
                "scenario": report.instance.name,
                "description": report.instance.describe(options),
                "sessions": report.instance.sessions,
                "calls_per_session": report.instance.calls_each,
                "rows": rows,
                "overheads": overheads_json(&report.rows),
            })
        })
        .collect();
    json!({
        "benchmark": "load",
        "quick": options.quick,
        "berth": options.berth,
        "fixture": options.fixture,
        "peers": options.peers,
        "machine": crate::report::machine(),
        "scenarios": scenarios,
    })
}

/// [`feature_overheads`] as JSON: per pair whose rows both succeeded, the
/// p50 and mean added per call (µs) and their ratios.
fn overheads_json(rows: &[Row]) -> Vec<Value> {
    let ok = |target: &Target| {
        rows.iter()
            .find(|r| r.target == *target && matches!(r.status, Status::Ok))
    };
    overhead_pairs()
        .into_iter()
        .filter_map(|(target, base, what)| {
            let (row, baseline) = (ok(&target)?, ok(&base)?);
            let (s, b) = (row.summary.as_ref()?, baseline.summary.as_ref()?);
            let (p50, base_p50) = (s.p50_us? as f64, b.p50_us? as f64);
            let (mean, base_mean) = (s.mean_us?, b.mean_us?);
            let round = |v: f64| (v * 100.0).round() / 100.0;
            let cpu = |c: Option<Cpu>| c.map(|c| round(c.per_call_us()));
            let calls_per_sec_ratio = match (row.calls_per_sec(), baseline.calls_per_sec()) {
                (Some(v), Some(base)) if base > 0.0 => Some(round(v / base)),
                _ => None,
            };
            Some(json!({
                "what": what,
                "target": target.name(),
                "baseline": base.name(),
                "p50_us_added": round(p50 - base_p50),
                "p50_ratio": round(p50 / base_p50.max(1.0)),
                "mean_us_added": round(mean - base_mean),
                "mean_ratio": round(mean / base_mean.max(1.0)),
                "calls_per_sec_ratio": calls_per_sec_ratio,
                "cpu_us_per_call": cpu(row.cpu),
                "baseline_cpu_us_per_call": cpu(baseline.cpu),
            }))
        })
        .collect()
}

/// `NAME=URL` of `--target`.
pub fn parse_target(text: &str) -> Result<(String, String), String> {
    let (name, url) = text
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=URL, got {text:?}"))?;
    if name.is_empty() || !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!("expected NAME=http://…, got {text:?}"));
    }
    Ok((name.to_string(), url.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios() {
        assert_eq!(ratio_us(3000, 1000), "3.00× (+2.000 ms)");
        assert_eq!(ratio_us(500, 1000), "0.50× (−0.500 ms)");
        assert_eq!(ratio_kib(10.0, 5.0), "2.00× (+5.0 KiB)");
        assert_eq!(us_over(135.0, 100.0), "+35 µs (1.35×)");
        assert_eq!(us_over(90.0, 100.0), "−10 µs (0.90×)");
    }

    fn options(remote: bool) -> LoadOptions {
        LoadOptions {
            berth: PathBuf::from("/bin/berth"),
            fixture: PathBuf::from("/bin/berth-fixture"),
            peers_dir: PathBuf::from("/peers"),
            peers: false,
            remote,
            endpoint: remote,
            external: Vec::new(),
            calls: 10,
            warmup: 1,
            concurrency: vec![16],
            calls_per_session: 10,
            idle_sessions: 10,
            shared_sessions: 10,
            open_concurrency: 4,
            timeout: Duration::from_secs(5),
            scenario_timeout: Duration::from_secs(60),
            scenarios: vec![
                LoadScenario::PerCall,
                LoadScenario::Throughput,
                LoadScenario::IdleExclusive,
                LoadScenario::Ttfr,
            ],
            ttfr_sessions: 1,
            ttfr_boot_delay: Duration::from_millis(300),
            ttfr_pause: Duration::from_millis(400),
            quick: true,
            out: None,
            berth_worker_threads: None,
            http_floor_worker_threads: 1,
        }
    }

    #[test]
    fn the_remote_row_sits_in_per_call_and_throughput_only() {
        let with = options(true);
        for instance in instances(&with) {
            let has = targets(&with, &instance).contains(&Target::BerthRemote);
            let expected = matches!(
                instance.kind,
                LoadScenario::PerCall | LoadScenario::Throughput
            );
            assert_eq!(has, expected, "{}", instance.name);
            // Beside the direct call to the same server.
            assert_eq!(
                has,
                targets(&with, &instance).contains(&Target::HttpFloor),
                "{}",
                instance.name
            );
        }
        let without = options(false);
        for instance in instances(&without) {
            assert!(!targets(&without, &instance).contains(&Target::BerthRemote));
        }
    }

    #[test]
    fn remote_config_names_the_url_and_no_process() {
        let config = remote_config(&options(true), "http://127.0.0.1:9/mcp");
        assert!(
            config.contains("[servers.echo]\nurl = \"http://127.0.0.1:9/mcp\"\n"),
            "{config}"
        );
        assert!(!config.contains("command"), "{config}");
        assert!(!config.contains("args"), "{config}");
        let plain = berth_config(&options(true), false);
        assert!(plain.contains("command = "), "{plain}");
    }

    fn ok_row(target: Target, p50_us: u64, cpu_ticks: u64) -> Row {
        let mut recorder = Recorder::default();
        for _ in 0..10 {
            recorder.record(&Sample {
                total: Duration::from_micros(p50_us),
                phases: vec![],
            });
        }
        let mut row = Row::new(&target, Status::Ok);
        row.summary = Some(recorder.summary());
        row.wall = Some(Duration::from_millis(1));
        row.cpu = Some(Cpu {
            ticks: cpu_ticks,
            ticks_per_sec: 100,
            calls: 10,
        });
        row
    }

    #[test]
    fn remote_overhead_is_against_the_http_floor() {
        let mut remote = ok_row(Target::BerthRemote, 150, 3);
        remote.upstream_cpu = Some(Cpu {
            ticks: 1,
            ticks_per_sec: 100,
            calls: 10,
        });
        let rows = vec![ok_row(Target::HttpFloor, 100, 1), remote];
        let line = feature_overheads(&rows);
        assert!(
            line.starts_with("- remote upstream overhead (berth → remote against http floor"),
            "{line}"
        );
        assert!(line.contains("p50 +50 µs (1.50×)"), "{line}");
        assert!(line.contains("gateway CPU/call 3000.0 µs"), "{line}");
        assert!(line.contains("its upstream's 1000.0 µs"), "{line}");
        let json = overheads_json(&rows);
        assert_eq!(json.len(), 1);
        assert_eq!(json[0]["p50_us_added"], 50.0);
        assert_eq!(json[0]["p50_ratio"], 1.5);
        // Without the floor row there is nothing to compare against.
        assert_eq!(feature_overheads(&rows[1..]), "");
        assert!(overheads_json(&rows[1..]).is_empty());
    }

    #[test]
    fn the_endpoint_row_sits_beside_berth_in_per_call_and_throughput_only() {
        let with = options(true);
        for instance in instances(&with) {
            let targets = targets(&with, &instance);
            let has = targets.contains(&Target::BerthEndpoint);
            let expected = matches!(
                instance.kind,
                LoadScenario::PerCall | LoadScenario::Throughput
            );
            assert_eq!(has, expected, "{}", instance.name);
            if has {
                let at = |t: Target| targets.iter().position(|x| *x == t);
                assert_eq!(
                    at(Target::BerthEndpoint),
                    at(Target::Berth).map(|i| i + 1),
                    "{}: {targets:?}",
                    instance.name
                );
            }
        }
        // --no-endpoint alone leaves the remote row.
        let without = LoadOptions {
            endpoint: false,
            ..options(true)
        };
        for instance in instances(&without) {
            let targets = targets(&without, &instance);
            assert!(!targets.contains(&Target::BerthEndpoint));
            assert_eq!(
                targets.contains(&Target::BerthRemote),
                targets.contains(&Target::HttpFloor)
            );
        }
    }

    #[test]
    fn endpoint_config_is_the_plain_one_plus_an_endpoint_over_echo() {
        let options = options(true);
        let plain = berth_config(&options, false);
        let config = endpoint_config(&options);
        let extra = config.strip_prefix(plain.as_str()).expect("plain first");
        assert_eq!(extra, "\n[endpoints.fed]\nservers = [\"echo\"]\n");
        // The name the client calls is the member's prefixed tool.
        assert_eq!(ENDPOINT_TOOL, format!("{SERVER}__{TOOL}"));
        assert_eq!(Calls::endpoint().tool, ENDPOINT_TOOL);
        assert!(Calls::endpoint().open_call);
        assert_eq!(Calls::plain().tool, TOOL);
        assert!(!Calls::plain().open_call);
    }

    #[test]
    fn endpoint_overhead_is_against_plain_berth() {
        let rows = vec![
            ok_row(Target::HttpFloor, 50, 1),
            ok_row(Target::Berth, 100, 2),
            ok_row(Target::BerthEndpoint, 120, 3),
        ];
        let text = feature_overheads(&rows);
        let line = text.lines().next().unwrap_or_default();
        assert_eq!(
            line,
            "- federated endpoint overhead (berth endpoint against berth, same run): p50 +20 µs (1.20×), mean +20 µs (1.20×) per call; calls/s 100%; gateway CPU/call 3000.0 µs (the gateway's process only; the berth alone 2000.0 µs)"
        );
        // No remote row: no second line.
        assert_eq!(text.lines().count(), 1, "{text}");
        let json = overheads_json(&rows);
        assert_eq!(json.len(), 1);
        assert_eq!(json[0]["what"], "federated endpoint overhead");
        assert_eq!(json[0]["target"], "berth endpoint");
        assert_eq!(json[0]["baseline"], "berth");
        assert_eq!(json[0]["p50_us_added"], 20.0);
        assert_eq!(json[0]["p50_ratio"], 1.2);
        assert_eq!(json[0]["calls_per_sec_ratio"], 1.0);
        assert_eq!(json[0]["cpu_us_per_call"], 3000.0);
        assert_eq!(json[0]["baseline_cpu_us_per_call"], 2000.0);
        // A failed plain row leaves nothing to compare against.
        let mut failed = rows;
        failed[1].status = Status::Failed("x".into());
        assert_eq!(feature_overheads(&failed), "");
        assert!(overheads_json(&failed).is_empty());
    }

    #[test]
    fn targets_parse() {
        assert_eq!(
            parse_target("x=http://127.0.0.1:1/mcp").unwrap(),
            ("x".to_string(), "http://127.0.0.1:1/mcp".to_string())
        );
        assert!(parse_target("nourl").is_err());
        assert!(parse_target("=http://a").is_err());
    }
}
