//! `sandbox`: what the default-on sandbox costs, and whether a server that
//! crash-loops disturbs its neighbours.
//!
//! * `overhead`: ONE Berth hosts the same stdio server twice, `KEY_sandboxed`
//!   (the default sandbox) and `KEY_plain` (`sandbox = false`), and both
//!   again with a pre-initialized pool (`KEY_sandboxed_pool`,
//!   `KEY_plain_pool`: `min_ready = 2`, `preinitialize = true`); KEY is
//!   `echo` (the echo fixture, so the sandbox's own cost dominates) and,
//!   when installed, `everything` (the npm reference server under `node`,
//!   whose start-up dominates). Measured, sandboxed and plain interleaved so
//!   machine drift hits both alike: a new session's time to first tool
//!   result without a pool (cold: a new process per session) beside the
//!   direct stdio spawn (the floor) and with the pool; per-call latency on
//!   an open session; calls/s of concurrent sessions.
//! * `neighbour`: server B (the echo fixture, sandboxed) is called at a
//!   fixed pace, the same number of calls in each phase: quiet, while two
//!   other servers crash-loop flat out, while they crash-loop at a set pace,
//!   quiet again. The crashers are the hostile fixture allocating 4 GiB
//!   under `memory = "64MiB"` (killed by the OOM killer) and the crash
//!   fixture (exits with status 3 on `tools/call`), each driven by a client
//!   that opens a session and calls the crashing tool, again and again.
//!   Reported: B's latency per phase, the crashes achieved, the machine's
//!   CPU, the gateway's own RSS and CPU time.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};
use tokio::process::Command;

use crate::mcp::{McpHttp, Session};
use crate::peers::{self, Gateway};
use crate::report::{Recorder, Sample, Summary, markdown_table};
use crate::suite::toml_string;
use crate::ttfr::ToolCall;

/// The npm package of the realistic runtime, under the node test directory.
const EVERYTHING: &str = "@modelcontextprotocol/server-everything";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SandboxScenario {
    /// Sandboxed against plain: cold and pooled new sessions, per call.
    Overhead,
    /// A server's latency while other servers crash-loop.
    Neighbour,
}

pub struct SandboxOptions {
    pub berth: PathBuf,
    pub fixture: PathBuf,
    /// `tests/node` with server-everything installed; `None`: echo only.
    pub node_dir: Option<PathBuf>,
    pub scenarios: Vec<SandboxScenario>,
    /// Extra lines for `[servers.KEY_sandboxed*.sandbox]` (raw TOML).
    pub sandbox_lines: Vec<String>,
    pub cold_sessions: u64,
    pub node_cold_sessions: u64,
    pub pool_sessions: u64,
    pub node_pool_sessions: u64,
    /// Sessions (of each kind) run first and not recorded.
    pub session_warmup: u64,
    pub pool_pause: Duration,
    pub node_pool_pause: Duration,
    pub cold_pause: Duration,
    pub node_cold_pause: Duration,
    /// echo: cold sessions again without the pause.
    pub back_to_back: bool,
    pub calls: u64,
    pub node_calls: u64,
    pub call_warmup: u64,
    /// Per-call: sandboxed and plain alternate in this many blocks.
    pub blocks: u64,
    pub concurrency: u64,
    pub concurrent_calls: u64,
    pub neighbour_calls: u64,
    pub neighbour_interval: Duration,
    /// Also a crash phase with each crasher paced to this many crashes/s.
    pub paced_crash_rate: Option<f64>,
    /// Wait after the crash loops start before B's calls are timed.
    pub crash_settle: Duration,
    pub oom_memory: String,
    pub oom_alloc_mib: u64,
    pub timeout: Duration,
    pub out: Option<PathBuf>,
}

/// One server program hosted in both ways.
struct Runtime {
    key: &'static str,
    label: String,
    program: PathBuf,
    args: Vec<String>,
    call: ToolCall,
    cold_sessions: u64,
    pool_sessions: u64,
    pool_pause: Duration,
    /// After each cold session, so its process is reaped before the next.
    cold_pause: Duration,
    calls: u64,
}

impl Runtime {
    fn name(&self, sandboxed: bool, pool: bool) -> String {
        format!(
            "{}_{}{}",
            self.key,
            if sandboxed { "sandboxed" } else { "plain" },
            if pool { "_pool" } else { "" }
        )
    }
}

fn runtimes(options: &SandboxOptions) -> Vec<Runtime> {
    let mut out = vec![Runtime {
        key: "echo",
        label: "berth-fixture echo".into(),
        program: options.fixture.clone(),
        args: vec!["echo".into()],
        call: ToolCall::fixture_echo(),
        cold_sessions: options.cold_sessions,
        pool_sessions: options.pool_sessions,
        pool_pause: options.pool_pause,
        cold_pause: options.cold_pause,
        calls: options.calls,
    }];
    if let Some(dir) = &options.node_dir {
        let package = dir.join("node_modules").join(EVERYTHING);
        let version = std::fs::read_to_string(package.join("package.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| v["version"].as_str().map(str::to_string))
            .unwrap_or_else(|| "?".into());
        out.push(Runtime {
            key: "everything",
            label: format!("node {EVERYTHING}@{version}"),
            program: PathBuf::from("node"),
            args: vec![
                package.join("dist/index.js").to_string_lossy().into_owned(),
                "stdio".into(),
            ],
            call: ToolCall::everything_echo(),
            cold_sessions: options.node_cold_sessions,
            pool_sessions: options.node_pool_sessions,
            pool_pause: options.node_pool_pause,
            cold_pause: options.node_cold_pause,
            calls: options.node_calls,
        });
    }
    out
}

/// Where server-everything is expected: `tests/node` of the source tree.
pub fn default_node_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/node")
}

/// Whether `dir` has server-everything and `node` runs.
pub async fn node_available(dir: &Path) -> Result<()> {
    let main = dir
        .join("node_modules")
        .join(EVERYTHING)
        .join("dist/index.js");
    if !main.is_file() {
        bail!(
            "{} missing (run tests/setup.sh, or npm ci in tests/node)",
            main.display()
        );
    }
    let out = Command::new("node")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .await
        .context("running node --version")?;
    if !out.status.success() {
        bail!("node --version: {}", out.status);
    }
    Ok(())
}

/// `[servers.NAME]` hosting `runtime`, sandboxed or not, pooled or not.
fn server_table(
    options: &SandboxOptions,
    runtime: &Runtime,
    sandboxed: bool,
    pool: bool,
) -> String {
    let name = runtime.name(sandboxed, pool);
    let args: Vec<String> = runtime.args.iter().map(|a| toml_string(a)).collect();
    let mut text = format!(
        "[servers.{name}]\ncommand = {}\nargs = [{}]\n",
        toml_string(&runtime.program.to_string_lossy()),
        args.join(", ")
    );
    if !sandboxed {
        text.push_str("sandbox = false\n");
    } else if !options.sandbox_lines.is_empty() {
        text.push_str(&format!(
            "\n[servers.{name}.sandbox]\n{}\n",
            options.sandbox_lines.join("\n")
        ));
    }
    if pool {
        text.push_str(&format!(
            "\n[servers.{name}.pool]\nmin_ready = 2\npreinitialize = true\n"
        ));
    }
    text.push('\n');
    text
}

fn gateway_table(dir: &Path) -> String {
    format!(
        "[gateway]\nlisten = \"127.0.0.1:0\"\nsession_idle_timeout = \"1h\"\ndata_dir = {}\n\n",
        toml_string(&dir.join("data").to_string_lossy())
    )
}

fn overhead_config(options: &SandboxOptions, runtimes: &[Runtime], dir: &Path) -> String {
    let mut text = gateway_table(dir);
    for runtime in runtimes {
        for pool in [false, true] {
            for sandboxed in [true, false] {
                text.push_str(&server_table(options, runtime, sandboxed, pool));
            }
        }
    }
    text
}

/// The servers of `neighbour`: B, and the two crashers.
const QUIET: &str = "quiet";
const OOM: &str = "crash_oom";
const EXIT: &str = "crash_exit";

fn neighbour_config(options: &SandboxOptions, dir: &Path) -> String {
    let fixture = toml_string(&options.fixture.to_string_lossy());
    let mut text = gateway_table(dir);
    text.push_str(&format!(
        "[servers.{QUIET}]\ncommand = {fixture}\nargs = [\"echo\"]\n\n"
    ));
    // Never marked failed, however often they crash.
    let policy = "max_crashes = 1000000\ncrash_window = \"1s\"\n";
    text.push_str(&format!(
        "[servers.{OOM}]\ncommand = {fixture}\nargs = [\"hostile\"]\n{policy}\n[servers.{OOM}.sandbox]\nmemory = {}\n\n",
        toml_string(&options.oom_memory)
    ));
    text.push_str(&format!(
        "[servers.{EXIT}]\ncommand = {fixture}\nargs = [\"crash\"]\n{policy}\n"
    ));
    text
}

/// Sandboxed, plain, and (cold only) the direct spawn, of one measure.
struct Pair {
    floor: Option<Summary>,
    plain: Summary,
    sandboxed: Summary,
    /// Wall time of the timed calls (calls/s), for the call measures.
    plain_wall: Option<Duration>,
    sandboxed_wall: Option<Duration>,
    /// New sessions: the CPU they cost, plain and sandboxed.
    cpu: Option<(SessionCpu, SessionCpu)>,
}

/// CPU time spent around a number of sessions: the gateway's own, and that
/// of the children it reaped meanwhile (server processes, sandbox helpers).
#[derive(Debug, Default, Clone, Copy)]
struct SessionCpu {
    own_ticks: u64,
    children_ticks: u64,
    sessions: u64,
    /// A reading failed: the figures are not to be shown.
    incomplete: bool,
}

impl SessionCpu {
    fn own_ms(&self) -> Option<f64> {
        self.per_session(self.own_ticks)
    }

    fn children_ms(&self) -> Option<f64> {
        self.per_session(self.children_ticks)
    }

    fn per_session(&self, ticks: u64) -> Option<f64> {
        (!self.incomplete && self.sessions > 0).then(|| {
            ticks as f64 * 1000.0
                / peers::clock_ticks_per_sec().max(1) as f64
                / self.sessions as f64
        })
    }

    fn json(&self) -> Value {
        json!({
            "sessions": self.sessions,
            "own_ticks": self.own_ticks,
            "children_ticks": self.children_ticks,
            "own_ms_per_session": self.own_ms().map(|v| (v * 100.0).round() / 100.0),
            "children_ms_per_session": self.children_ms().map(|v| (v * 100.0).round() / 100.0),
        })
    }
}

/// The gateway's CPU counters at the start of a session.
struct CpuProbe {
    pid: u32,
    own: Option<u64>,
    children: Option<u64>,
}

impl CpuProbe {
    fn start(pid: u32) -> Self {
        CpuProbe {
            pid,
            own: peers::cpu_ticks(pid),
            children: peers::children_cpu_ticks(pid),
        }
    }

    /// Adds what was spent since `start` to `total`, as one session.
    fn add_to(self, total: &mut SessionCpu) {
        let own = self.own.zip(peers::cpu_ticks(self.pid));
        let children = self.children.zip(peers::children_cpu_ticks(self.pid));
        match (own, children) {
            (Some((a, b)), Some((c, d))) => {
                total.own_ticks += b.saturating_sub(a);
                total.children_ticks += d.saturating_sub(c);
            }
            _ => total.incomplete = true,
        }
        total.sessions += 1;
    }
}

impl Pair {
    fn rate(summary: &Summary, wall: Option<Duration>) -> Option<f64> {
        let wall = wall?;
        (summary.ok > 0 && !wall.is_zero()).then(|| summary.ok as f64 / wall.as_secs_f64())
    }
}

impl OverheadRow {
    /// A new-session row (cold, pool), not a calls row.
    fn is_session(&self) -> bool {
        self.case.starts_with("cold") || self.case == "pool"
    }
}

struct OverheadRow {
    runtime: String,
    key: &'static str,
    /// `cold`, `pool`, `per-call`, `concurrent-16`.
    case: String,
    what: String,
    pair: Pair,
}

struct NeighbourPhase {
    name: &'static str,
    summary: Summary,
    wall: Duration,
    cpu_ticks: Option<u64>,
    rss_start_kib: Option<u64>,
    rss_end_kib: Option<u64>,
    rss_max_kib: Option<u64>,
    oom_crashes: u64,
    exit_crashes: u64,
    /// The whole machine's CPU busy share over the phase (from /proc/stat).
    machine_busy: Option<f64>,
    /// Crash phases: the pace of each loop (none: flat out).
    pace: Option<Duration>,
    /// Crash phases, per crasher: from a session's `initialize` to its
    /// crash error.
    cycles: Vec<(&'static str, Summary)>,
    /// Crash phases: A calls that did not end in a crash error, the first few.
    not_crashed: u64,
    other_errors: Vec<String>,
    /// When the phase (crash phases: the loops) ran, on the RSS samples' clock.
    window: (f64, f64),
}

struct NeighbourReport {
    phases: Vec<NeighbourPhase>,
    /// `berth ps --json` afterwards: per server, status, crashes, last exit.
    ps: Value,
    /// The gateway's RSS every 250 ms: (seconds since B's warm-up, KiB).
    /// The crash loops ran from `loops[0]` to `loops[1]` on that clock.
    rss_samples: Vec<(f64, u64)>,
}

/// Runs the scenarios; false if one failed.
pub async fn run(options: &SandboxOptions) -> Result<bool> {
    for (path, what) in [
        (&options.fixture, "berth-fixture"),
        (&options.berth, "berth"),
    ] {
        if !path.is_file() {
            bail!(
                "{what} not found at {}: cargo build --release -p berth -p berth-fixtures -p berth-bench",
                path.display()
            );
        }
    }
    let load_start = loadavg();
    let started = Instant::now();
    let mut overhead = None;
    let mut neighbour = None;
    let mut ok = true;
    for scenario in &options.scenarios {
        match scenario {
            SandboxScenario::Overhead => match run_overhead(options).await {
                Ok(rows) => overhead = Some(rows),
                Err(error) => {
                    ok = false;
                    eprintln!("[overhead] failed: {error:#}");
                }
            },
            SandboxScenario::Neighbour => match run_neighbour(options).await {
                Ok(report) => neighbour = Some(report),
                Err(error) => {
                    ok = false;
                    eprintln!("[neighbour] failed: {error:#}");
                }
            },
        }
    }
    let conditions = json!({
        "machine": crate::report::machine(),
        "loadavg_start": load_start,
        "loadavg_end": loadavg(),
        "wall_s": (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
    });
    print!(
        "{}",
        render(
            options,
            &conditions,
            overhead.as_deref(),
            neighbour.as_ref()
        )
    );
    if let Some(path) = &options.out {
        let value = to_json(
            options,
            &conditions,
            overhead.as_deref(),
            neighbour.as_ref(),
        );
        let text = serde_json::to_string_pretty(&value)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ok)
}

fn url_of(gateway: &Gateway, server: &str) -> String {
    // Gateway::berth's URL is `http://ADDR/mcp/<first server>`.
    let base = gateway
        .url
        .rsplit_once("/mcp/")
        .map_or(gateway.url.as_str(), |(base, _)| base);
    format!("{base}/mcp/{server}")
}

async fn start_berth(
    options: &SandboxOptions,
    dir: &Path,
    config: &str,
    first: &str,
) -> Result<Gateway> {
    let path = dir.join("berth.toml");
    std::fs::write(&path, config).context("writing the config")?;
    std::fs::create_dir_all(dir.join("data")).context("creating the data dir")?;
    Gateway::berth(&options.berth, &path, first, &dir.join("berth.log")).await
}

async fn client(gateway: &Gateway, server: &str, timeout: Duration) -> Result<Arc<McpHttp>> {
    let client = McpHttp::new(&url_of(gateway, server), timeout, None)?;
    client.preconnect().await;
    Ok(Arc::new(client))
}

async fn run_overhead(options: &SandboxOptions) -> Result<Vec<OverheadRow>> {
    let mut runtimes = runtimes(options);
    if let Some(dir) = &options.node_dir
        && let Err(error) = node_available(dir).await
    {
        eprintln!("[overhead] node everything skipped: {error:#}");
        runtimes.retain(|r| r.key != "everything");
    }
    let dir = tempfile::Builder::new()
        .prefix("berth-bench-sandbox-")
        .tempdir()
        .context("temp dir")?;
    let config = overhead_config(options, &runtimes, dir.path());
    let gateway = start_berth(options, dir.path(), &config, &runtimes[0].name(true, false)).await?;
    eprintln!(
        "[overhead] berth pid {} at {}",
        gateway.pid,
        url_of(&gateway, "")
    );
    let result = overhead_rows(options, &runtimes, &gateway).await;
    let tail = gateway.log_tail();
    if let Some(note) = gateway.stop().await {
        eprintln!("[overhead] berth: {note}; log: {tail}");
    }
    result
}

async fn overhead_rows(
    options: &SandboxOptions,
    runtimes: &[Runtime],
    gateway: &Gateway,
) -> Result<Vec<OverheadRow>> {
    let mut rows = Vec::new();
    for runtime in runtimes {
        let sbx = client(gateway, &runtime.name(true, false), options.timeout).await?;
        let plain = client(gateway, &runtime.name(false, false), options.timeout).await?;
        let sbx_pool = client(gateway, &runtime.name(true, true), options.timeout).await?;
        let plain_pool = client(gateway, &runtime.name(false, true), options.timeout).await?;

        eprintln!(
            "[overhead] {}: cold, {} sessions each (+{} warm-up), floor/sandboxed/plain interleaved",
            runtime.label, runtime.cold_sessions, options.session_warmup
        );
        let pair = cold(
            options,
            runtime,
            gateway.pid,
            &sbx,
            &plain,
            runtime.cold_pause,
        )
        .await;
        log_pair(runtime, "cold", &pair);
        rows.push(OverheadRow {
            runtime: runtime.label.clone(),
            key: runtime.key,
            case: "cold".into(),
            what: format!(
                "new session (new process) → first tool result, no pool, {} ms between sessions",
                runtime.cold_pause.as_millis()
            ),
            pair,
        });
        if options.back_to_back && runtime.key == "echo" {
            eprintln!(
                "[overhead] {}: cold back-to-back, {} sessions each (+{} warm-up), no pause",
                runtime.label, runtime.cold_sessions, options.session_warmup
            );
            let pair = cold(options, runtime, gateway.pid, &sbx, &plain, Duration::ZERO).await;
            log_pair(runtime, "cold back-to-back", &pair);
            rows.push(OverheadRow {
                runtime: runtime.label.clone(),
                key: runtime.key,
                case: "cold back-to-back".into(),
                what: "as cold, each session started as soon as the previous one ended".into(),
                pair,
            });
        }

        eprintln!(
            "[overhead] {}: pool, {} sessions each (+{} warm-up), {} ms before each",
            runtime.label,
            runtime.pool_sessions,
            options.session_warmup,
            runtime.pool_pause.as_millis()
        );
        let pair = pooled(options, runtime, gateway.pid, &sbx_pool, &plain_pool).await;
        log_pair(runtime, "pool", &pair);
        rows.push(OverheadRow {
            runtime: runtime.label.clone(),
            key: runtime.key,
            case: "pool".into(),
            what: "new session → first tool result, min_ready = 2, preinitialize = true".into(),
            pair,
        });

        eprintln!(
            "[overhead] {}: per call, {} calls each in {} alternating blocks (+{} warm-up)",
            runtime.label, runtime.calls, options.blocks, options.call_warmup
        );
        let pair = per_call(options, runtime, &sbx, &plain).await?;
        log_pair(runtime, "per-call", &pair);
        rows.push(OverheadRow {
            runtime: runtime.label.clone(),
            key: runtime.key,
            case: "per-call".into(),
            what: format!("1 session, {} sequential tools/call", runtime.calls),
            pair,
        });

        if options.concurrency > 0 {
            eprintln!(
                "[overhead] {}: {} concurrent sessions × {} calls, 2 rounds each",
                runtime.label, options.concurrency, options.concurrent_calls
            );
            let pair = concurrent(options, runtime, &sbx, &plain).await?;
            log_pair(runtime, "concurrent", &pair);
            rows.push(OverheadRow {
                runtime: runtime.label.clone(),
                key: runtime.key,
                case: format!("concurrent-{}", options.concurrency),
                what: format!(
                    "{} sessions × {} tools/call, concurrently",
                    options.concurrency, options.concurrent_calls
                ),
                pair,
            });
        }
    }
    Ok(rows)
}

fn log_pair(runtime: &Runtime, case: &str, pair: &Pair) {
    if let Some(floor) = &pair.floor {
        eprintln!(
            "[overhead] {} {case} floor:     {}",
            runtime.key,
            floor.line()
        );
    }
    eprintln!(
        "[overhead] {} {case} sandboxed: {}",
        runtime.key,
        pair.sandboxed.line()
    );
    eprintln!(
        "[overhead] {} {case} plain:     {}",
        runtime.key,
        pair.plain.line()
    );
    for (what, s) in [("sandboxed", &pair.sandboxed), ("plain", &pair.plain)] {
        if !s.phases.is_empty() {
            eprintln!(
                "[overhead] {} {case} {what}: {}",
                runtime.key,
                s.phases_line()
            );
        }
        for error in &s.first_errors {
            eprintln!("[overhead] {} {case} {what}: error: {error}", runtime.key);
        }
    }
}

/// Records a session's outcome, unless it is a warm-up.
fn note(recorder: &mut Recorder, warmup: bool, result: Result<Sample>, label: &str) {
    match result {
        Ok(sample) if !warmup => recorder.record(&sample),
        Ok(_) => {}
        Err(error) => {
            if recorder.summary().errors < 3 {
                eprintln!("[overhead] {label}: {error:#}");
            }
            if !warmup {
                recorder.error(&error);
            }
        }
    }
}

/// Cold sessions: the floor, sandboxed and plain take turns, in an order
/// that rotates every iteration.
/// `pause` after each session; CPU is attributed only with a pause (the
/// process must be reaped before the next session starts).
async fn cold(
    options: &SandboxOptions,
    runtime: &Runtime,
    pid: u32,
    sbx: &McpHttp,
    plain: &McpHttp,
    pause: Duration,
) -> Pair {
    let (mut floor_r, mut sbx_r, mut plain_r) = (
        Recorder::default(),
        Recorder::default(),
        Recorder::default(),
    );
    let (mut sbx_cpu, mut plain_cpu) = (SessionCpu::default(), SessionCpu::default());
    for i in 0..options.session_warmup + runtime.cold_sessions {
        let warmup = i < options.session_warmup;
        for turn in 0..3 {
            let probe = CpuProbe::start(pid);
            let kind = (i + turn) % 3;
            match kind {
                0 => {
                    let result = crate::stdio::direct_session_with(
                        &runtime.program,
                        &runtime.args,
                        &runtime.call,
                        options.timeout,
                    )
                    .await;
                    note(&mut floor_r, warmup, result, "floor");
                }
                1 => {
                    let result = crate::ttfr::http_session_with(sbx, &runtime.call).await;
                    note(&mut sbx_r, warmup, result, "sandboxed");
                }
                _ => {
                    let result = crate::ttfr::http_session_with(plain, &runtime.call).await;
                    note(&mut plain_r, warmup, result, "plain");
                }
            }
            // The process is stopped after DELETE, in the background: let
            // it be reaped (and its CPU time counted) before the next.
            tokio::time::sleep(pause).await;
            match kind {
                1 if !warmup => probe.add_to(&mut sbx_cpu),
                2 if !warmup => probe.add_to(&mut plain_cpu),
                _ => {}
            }
        }
    }
    Pair {
        floor: Some(floor_r.summary()),
        plain: plain_r.summary(),
        sandboxed: sbx_r.summary(),
        plain_wall: None,
        sandboxed_wall: None,
        cpu: (!pause.is_zero()).then_some((plain_cpu, sbx_cpu)),
    }
}

/// Pooled sessions, alternating, `pool_pause` before each so the pool has
/// refilled. The CPU figures count from a session's start to the next
/// session's, so they include the refill it causes.
async fn pooled(
    options: &SandboxOptions,
    runtime: &Runtime,
    pid: u32,
    sbx: &McpHttp,
    plain: &McpHttp,
) -> Pair {
    let (mut sbx_r, mut plain_r) = (Recorder::default(), Recorder::default());
    let (mut sbx_cpu, mut plain_cpu) = (SessionCpu::default(), SessionCpu::default());
    tokio::time::sleep(runtime.pool_pause).await;
    for i in 0..options.session_warmup + runtime.pool_sessions {
        let warmup = i < options.session_warmup;
        for turn in 0..2 {
            let probe = CpuProbe::start(pid);
            let sandboxed = (i + turn) % 2 == 0;
            if sandboxed {
                let result = crate::ttfr::http_session_with(sbx, &runtime.call).await;
                note(&mut sbx_r, warmup, result, "sandboxed pool");
            } else {
                let result = crate::ttfr::http_session_with(plain, &runtime.call).await;
                note(&mut plain_r, warmup, result, "plain pool");
            }
            tokio::time::sleep(runtime.pool_pause).await;
            if !warmup {
                probe.add_to(if sandboxed {
                    &mut sbx_cpu
                } else {
                    &mut plain_cpu
                });
            }
        }
    }
    Pair {
        floor: None,
        plain: plain_r.summary(),
        sandboxed: sbx_r.summary(),
        plain_wall: None,
        sandboxed_wall: None,
        cpu: Some((plain_cpu, sbx_cpu)),
    }
}

async fn open(client: &McpHttp) -> Result<Session> {
    let (session, _) = client.initialize().await?;
    client.initialized(&session).await?;
    Ok(session)
}

/// `calls` sequential calls on `session`, ids from `first_id`; latencies
/// into `recorder`; returns the wall time.
async fn calls(
    client: &McpHttp,
    session: &Session,
    call: &ToolCall,
    first_id: u64,
    calls: u64,
    recorder: &mut Recorder,
) -> Duration {
    let start = Instant::now();
    for i in 0..calls {
        let begin = Instant::now();
        let result = client
            .call_tool(session, first_id + i, &call.name, call.arguments.clone())
            .await
            .and_then(|reply| call.check(&reply.message).map(|_| reply.arrived));
        match result {
            Ok(arrived) => recorder.record(&Sample {
                total: arrived - begin,
                phases: vec![],
            }),
            Err(error) => recorder.error(&error),
        }
    }
    start.elapsed()
}

/// One session on each; warm-up calls; then `blocks` blocks, alternating
/// which goes first.
async fn per_call(
    options: &SandboxOptions,
    runtime: &Runtime,
    sbx: &McpHttp,
    plain: &McpHttp,
) -> Result<Pair> {
    let sbx_session = open(sbx).await.context("opening the sandboxed session")?;
    let plain_session = open(plain).await.context("opening the plain session")?;
    let mut scratch = Recorder::default();
    calls(
        sbx,
        &sbx_session,
        &runtime.call,
        1,
        options.call_warmup,
        &mut scratch,
    )
    .await;
    calls(
        plain,
        &plain_session,
        &runtime.call,
        1,
        options.call_warmup,
        &mut scratch,
    )
    .await;
    let (mut sbx_r, mut plain_r) = (Recorder::default(), Recorder::default());
    let (mut sbx_wall, mut plain_wall) = (Duration::ZERO, Duration::ZERO);
    let blocks = options.blocks.max(1);
    let per_block = runtime.calls.div_ceil(blocks);
    let mut next_id = options.call_warmup + 1;
    for block in 0..blocks {
        let n = per_block.min(runtime.calls - (block * per_block).min(runtime.calls));
        for turn in 0..2 {
            if (block + turn) % 2 == 0 {
                sbx_wall += calls(sbx, &sbx_session, &runtime.call, next_id, n, &mut sbx_r).await;
            } else {
                plain_wall += calls(
                    plain,
                    &plain_session,
                    &runtime.call,
                    next_id,
                    n,
                    &mut plain_r,
                )
                .await;
            }
        }
        next_id += n;
    }
    let _ = sbx.delete(&sbx_session).await;
    let _ = plain.delete(&plain_session).await;
    Ok(Pair {
        floor: None,
        plain: plain_r.summary(),
        sandboxed: sbx_r.summary(),
        plain_wall: Some(plain_wall),
        sandboxed_wall: Some(sbx_wall),
        cpu: None,
    })
}

/// `concurrency` sessions calling at once, on one server; returns the wall
/// time of the calls (sessions opened and warmed up before, untimed).
async fn concurrent_round(
    client: &Arc<McpHttp>,
    call: &ToolCall,
    concurrency: u64,
    each: u64,
    recorder: &mut Recorder,
) -> Result<Duration> {
    let mut sessions = Vec::new();
    for _ in 0..concurrency {
        let session = open(client).await.context("opening a session")?;
        let mut scratch = Recorder::default();
        calls(client, &session, call, 1, 5, &mut scratch).await;
        sessions.push(session);
    }
    let start = Instant::now();
    let tasks = sessions.into_iter().map(|session| {
        let client = Arc::clone(client);
        let call = call.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = Vec::new();
            for i in 0..each {
                let begin = Instant::now();
                match client
                    .call_tool(&session, 100 + i, &call.name, call.arguments.clone())
                    .await
                    .and_then(|reply| call.check(&reply.message).map(|_| reply.arrived))
                {
                    Ok(arrived) => latencies.push(arrived - begin),
                    Err(error) => errors.push(error),
                }
            }
            (session, latencies, errors)
        })
    });
    let results = futures::future::join_all(tasks).await;
    let wall = start.elapsed();
    for result in results {
        let (session, latencies, errors) = result.context("a session task panicked")?;
        for total in latencies {
            recorder.record(&Sample {
                total,
                phases: vec![],
            });
        }
        for error in errors {
            recorder.error(&error);
        }
        let _ = client.delete(&session).await;
    }
    Ok(wall)
}

async fn concurrent(
    options: &SandboxOptions,
    runtime: &Runtime,
    sbx: &Arc<McpHttp>,
    plain: &Arc<McpHttp>,
) -> Result<Pair> {
    let (mut sbx_r, mut plain_r) = (Recorder::default(), Recorder::default());
    let (mut sbx_wall, mut plain_wall) = (Duration::ZERO, Duration::ZERO);
    // sandboxed, plain, plain, sandboxed.
    for sandboxed in [true, false, false, true] {
        let (client, recorder, wall) = if sandboxed {
            (sbx, &mut sbx_r, &mut sbx_wall)
        } else {
            (plain, &mut plain_r, &mut plain_wall)
        };
        *wall += concurrent_round(
            client,
            &runtime.call,
            options.concurrency,
            options.concurrent_calls,
            recorder,
        )
        .await?;
        // Let the ended sessions' processes go before the next round.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok(Pair {
        floor: None,
        plain: plain_r.summary(),
        sandboxed: sbx_r.summary(),
        plain_wall: Some(plain_wall),
        sandboxed_wall: Some(sbx_wall),
        cpu: None,
    })
}

// ---------------------------------------------------------------- neighbour

/// What the crash loops have seen so far.
#[derive(Default)]
struct CrashCount {
    crashes: AtomicU64,
    not_crashed: AtomicU64,
}

struct CrashLoop {
    count: Arc<CrashCount>,
    task: tokio::task::JoinHandle<(Recorder, Vec<String>)>,
}

/// Opens a session on `client`'s server and calls `call`, which must end in
/// the process's crash, again and again until `stop`; a cycle that took
/// less than `pace` waits out the rest.
fn crash_loop(
    client: Arc<McpHttp>,
    name: &'static str,
    arguments: Value,
    pace: Option<Duration>,
    stop: Arc<AtomicBool>,
) -> CrashLoop {
    let count = Arc::new(CrashCount::default());
    let counter = Arc::clone(&count);
    let task = tokio::spawn(async move {
        let mut cycle = Recorder::default();
        let mut others = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let start = Instant::now();
            let session = match open(&client).await {
                Ok(session) => session,
                Err(error) => {
                    if others.len() < 3 {
                        others.push(format!("{name}: opening: {error:#}"));
                    }
                    counter.not_crashed.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            match client.call_tool(&session, 1, name, arguments.clone()).await {
                Err(error) if format!("{error:#}").contains("-32000") => {
                    counter.crashes.fetch_add(1, Ordering::Relaxed);
                    cycle.record(&Sample {
                        total: start.elapsed(),
                        phases: vec![],
                    });
                }
                other => {
                    counter.not_crashed.fetch_add(1, Ordering::Relaxed);
                    if others.len() < 3 {
                        others.push(match other {
                            Ok(reply) => format!("{name}: answered: {}", reply.message),
                            Err(error) => format!("{name}: {error:#}"),
                        });
                    }
                }
            }
            // The session is gone with its process (404): nothing to check.
            let _ = client.delete(&session).await;
            if let Some(pace) = pace {
                tokio::time::sleep(pace.saturating_sub(start.elapsed())).await;
            }
        }
        (cycle, others)
    });
    CrashLoop { count, task }
}

/// B's calls, one every `interval` (a call that takes longer delays the next).
async fn paced_calls(
    client: &McpHttp,
    session: &Session,
    call: &ToolCall,
    first_id: u64,
    n: u64,
    interval: Duration,
) -> (Recorder, Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut recorder = Recorder::default();
    let start = Instant::now();
    for i in 0..n {
        tick.tick().await;
        let begin = Instant::now();
        match client
            .call_tool(session, first_id + i, &call.name, call.arguments.clone())
            .await
            .and_then(|reply| call.check(&reply.message).map(|_| reply.arrived))
        {
            Ok(arrived) => recorder.record(&Sample {
                total: arrived - begin,
                phases: vec![],
            }),
            Err(error) => recorder.error(&error),
        }
    }
    (recorder, start.elapsed())
}

/// Samples the gateway's RSS every 250 ms until `stop`: (seconds, KiB).
fn rss_sampler(pid: u32, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<(f64, u64)>> {
    tokio::spawn(async move {
        let start = Instant::now();
        let mut samples = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            if let Some(kib) = peers::rss_kib(pid) {
                samples.push((start.elapsed().as_secs_f64(), kib));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        samples
    })
}

async fn run_neighbour(options: &SandboxOptions) -> Result<NeighbourReport> {
    let dir = tempfile::Builder::new()
        .prefix("berth-bench-neighbour-")
        .tempdir()
        .context("temp dir")?;
    let config = neighbour_config(options, dir.path());
    let gateway = start_berth(options, dir.path(), &config, QUIET).await?;
    eprintln!(
        "[neighbour] berth pid {} at {}",
        gateway.pid,
        url_of(&gateway, "")
    );
    let result = neighbour(options, &gateway, dir.path()).await;
    let tail = gateway.log_tail();
    if let Some(note) = gateway.stop().await {
        eprintln!("[neighbour] berth: {note}; log: {tail}");
    }
    result
}

/// (busy, total) jiffies of the whole machine, from the first line of
/// /proc/stat.
fn machine_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is in user).
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3)? + fields.get(4).unwrap_or(&0);
    Some((total - idle, total))
}

/// B's calls for one phase, with the gateway's CPU time and RSS and the
/// machine's CPU around them.
async fn phase(
    options: &SandboxOptions,
    name: &'static str,
    pid: u32,
    b: &McpHttp,
    session: &Session,
    first_id: u64,
    t0: Instant,
) -> NeighbourPhase {
    let call = ToolCall::fixture_echo();
    eprintln!(
        "[neighbour] {name}: {} calls to B, one every {:?}",
        options.neighbour_calls, options.neighbour_interval
    );
    let from = t0.elapsed().as_secs_f64();
    let rss_start = peers::rss_kib(pid);
    let cpu_start = peers::cpu_ticks(pid);
    let machine_start = machine_jiffies();
    let (recorder, wall) = paced_calls(
        b,
        session,
        &call,
        first_id,
        options.neighbour_calls,
        options.neighbour_interval,
    )
    .await;
    let machine_end = machine_jiffies();
    let cpu_end = peers::cpu_ticks(pid);
    let rss_end = peers::rss_kib(pid);
    NeighbourPhase {
        name,
        summary: recorder.summary(),
        wall,
        cpu_ticks: cpu_end.zip(cpu_start).map(|(e, s)| e.saturating_sub(s)),
        rss_start_kib: rss_start,
        rss_end_kib: rss_end,
        rss_max_kib: None,
        oom_crashes: 0,
        exit_crashes: 0,
        machine_busy: machine_start
            .zip(machine_end)
            .and_then(|((b0, t0), (b1, t1))| {
                (t1 > t0).then(|| (b1 - b0) as f64 / (t1 - t0) as f64)
            }),
        pace: None,
        cycles: Vec::new(),
        not_crashed: 0,
        other_errors: Vec::new(),
        window: (from, t0.elapsed().as_secs_f64()),
    }
}

/// B's calls while both crashers crash-loop (each at most once per `pace`).
#[allow(clippy::too_many_arguments)]
async fn crash_phase(
    options: &SandboxOptions,
    name: &'static str,
    gateway: &Gateway,
    pace: Option<Duration>,
    b: &McpHttp,
    session: &Session,
    first_id: u64,
    t0: Instant,
) -> Result<NeighbourPhase> {
    let stop = Arc::new(AtomicBool::new(false));
    let from = t0.elapsed().as_secs_f64();
    let oom = crash_loop(
        client(gateway, OOM, options.timeout).await?,
        "attempt",
        json!({ "action": "alloc", "mib": options.oom_alloc_mib }),
        pace,
        Arc::clone(&stop),
    );
    let exit = crash_loop(
        client(gateway, EXIT, options.timeout).await?,
        "anything",
        json!({}),
        pace,
        Arc::clone(&stop),
    );
    tokio::time::sleep(options.crash_settle).await;
    let crashes = |l: &CrashLoop| l.count.crashes.load(Ordering::Relaxed);
    let (oom_start, exit_start) = (crashes(&oom), crashes(&exit));
    let mut phase = phase(options, name, gateway.pid, b, session, first_id, t0).await;
    phase.oom_crashes = crashes(&oom) - oom_start;
    phase.exit_crashes = crashes(&exit) - exit_start;
    phase.pace = pace;
    stop.store(true, Ordering::Relaxed);
    for (server, l) in [(OOM, oom), (EXIT, exit)] {
        phase.not_crashed += l.count.not_crashed.load(Ordering::Relaxed);
        let (cycle, errors) =
            tokio::time::timeout(options.timeout + Duration::from_secs(5), l.task)
                .await
                .map_err(|_| anyhow!("the crash loop of {server} did not stop"))?
                .context("a crash loop panicked")?;
        phase.cycles.push((server, cycle.summary()));
        phase.other_errors.extend(errors);
    }
    phase.window = (from, t0.elapsed().as_secs_f64());
    // Let the last crashed processes be reaped before what comes next.
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(phase)
}

async fn neighbour(
    options: &SandboxOptions,
    gateway: &Gateway,
    dir: &Path,
) -> Result<NeighbourReport> {
    let pid = gateway.pid;
    let b = client(gateway, QUIET, options.timeout).await?;
    let session = open(&b).await.context("opening B's session")?;
    let mut scratch = Recorder::default();
    let call = ToolCall::fixture_echo();
    calls(&b, &session, &call, 1, options.call_warmup, &mut scratch).await;
    let mut next_id = options.call_warmup + 1;
    let sampling_done = Arc::new(AtomicBool::new(false));
    let sampler = rss_sampler(pid, Arc::clone(&sampling_done));
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut phases = vec![phase(options, "quiet", pid, &b, &session, next_id, t0).await];
    next_id += options.neighbour_calls;
    let mut crash_phases = vec![("crash loop", None)];
    if let Some(rate) = options.paced_crash_rate.filter(|r| *r > 0.0) {
        crash_phases.push((
            "crash loop, paced",
            Some(Duration::from_secs_f64(1.0 / rate)),
        ));
    }
    for (name, pace) in crash_phases {
        phases.push(crash_phase(options, name, gateway, pace, &b, &session, next_id, t0).await?);
        next_id += options.neighbour_calls;
    }
    phases.push(phase(options, "quiet after", pid, &b, &session, next_id, t0).await);
    let _ = b.delete(&session).await;
    sampling_done.store(true, Ordering::Relaxed);
    let samples = sampler.await.unwrap_or_default();
    for phase in &mut phases {
        let (from, to) = phase.window;
        let peak = samples
            .iter()
            .filter(|(t, _)| (from..=to).contains(t))
            .map(|&(_, kib)| kib)
            .max();
        phase.rss_max_kib = peak.max(phase.rss_start_kib.max(phase.rss_end_kib));
    }
    let ps = berth_ps(options, &dir.join("data"))
        .await
        .unwrap_or_else(|e| json!({ "error": format!("{e:#}") }));
    Ok(NeighbourReport {
        phases,
        ps,
        rss_samples: samples,
    })
}

/// `berth ps --json` of the gateway whose data directory is `data_dir`:
/// per server its status, crashes and last exit.
async fn berth_ps(options: &SandboxOptions, data_dir: &Path) -> Result<Value> {
    let servers = crate::suite::berth_ps(&options.berth, data_dir).await?;
    let field = |s: &Value, key: &str| s[key].clone();
    let list: Vec<Value> = servers
        .iter()
        .map(|s| {
            json!({
                "server": field(s, "server"),
                "status": field(s, "status"),
                "crashes": field(s, "crashes"),
                "restarts": field(s, "restarts"),
                "last_exit": field(s, "last_exit"),
            })
        })
        .collect();
    Ok(Value::Array(list))
}

// ------------------------------------------------------------------ report

fn loadavg() -> Option<String> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

fn ms(us: Option<u64>) -> String {
    match us {
        Some(us) => format!("{:.3} ms", us as f64 / 1000.0),
        None => "–".into(),
    }
}

/// `+1.234 ms` / `−0.010 ms`.
fn diff(value: Option<u64>, base: Option<u64>) -> String {
    match (value, base) {
        (Some(v), Some(b)) => {
            let d = v as f64 - b as f64;
            let sign = if d >= 0.0 { "+" } else { "−" };
            format!("{sign}{:.3} ms", d.abs() / 1000.0)
        }
        _ => "–".into(),
    }
}

fn ratio(value: Option<f64>, base: Option<f64>) -> String {
    match (value, base) {
        (Some(v), Some(b)) if b > 0.0 => format!("{:.2}×", v / b),
        _ => "–".into(),
    }
}

fn as_f64(v: Option<u64>) -> Option<f64> {
    v.map(|v| v as f64)
}

fn render(
    options: &SandboxOptions,
    conditions: &Value,
    overhead: Option<&[OverheadRow]>,
    neighbour: Option<&NeighbourReport>,
) -> String {
    let mut out = format!(
        "\n# berth-bench sandbox\n\nmachine: {} ({} CPUs), Linux {}; load average at start {}, at end {}; {} s\n",
        conditions["machine"]["cpu"].as_str().unwrap_or("?"),
        conditions["machine"]["cpus"],
        conditions["machine"]["kernel"].as_str().unwrap_or("?"),
        conditions["loadavg_start"].as_str().unwrap_or("?"),
        conditions["loadavg_end"].as_str().unwrap_or("?"),
        conditions["wall_s"],
    );
    if let Some(rows) = overhead {
        let sandbox = if options.sandbox_lines.is_empty() {
            "the default sandbox".to_string()
        } else {
            format!("sandbox with {}", options.sandbox_lines.join(", "))
        };
        out.push_str(&format!(
            "\n## Sandbox overhead: new session\n\nOne Berth; each server hosted as `*_sandboxed` ({sandbox}) and `*_plain` (`sandbox = false`), measured interleaved. Sessions: initialize → initialized → tools/call echo, timed from before initialize to the result; DELETE untimed. Floor: the server spawned directly over stdio, spawn → result.\n\n"
        ));
        let table: Vec<Vec<String>> = rows
            .iter()
            .filter(|r| r.is_session())
            .map(|r| {
                let p = &r.pair;
                vec![
                    r.runtime.clone(),
                    r.case.clone(),
                    format!("{}/{}", p.sandboxed.ok, p.plain.ok),
                    format!("{}/{}", p.sandboxed.errors, p.plain.errors),
                    p.floor.as_ref().map_or("–".into(), |f| ms(f.p50_us)),
                    ms(p.plain.p50_us),
                    ms(p.plain.p99_us),
                    ms(p.sandboxed.p50_us),
                    ms(p.sandboxed.p99_us),
                    diff(p.sandboxed.p50_us, p.plain.p50_us),
                    diff(p.sandboxed.p99_us, p.plain.p99_us),
                    ratio(as_f64(p.sandboxed.p50_us), as_f64(p.plain.p50_us)),
                ]
            })
            .collect();
        out.push_str(&markdown_table(
            &[
                "server",
                "case",
                "sessions (sbx/plain)",
                "errors",
                "stdio floor p50",
                "plain p50",
                "plain p99",
                "sandboxed p50",
                "sandboxed p99",
                "sandboxed − plain p50",
                "sandboxed − plain p99",
                "sandboxed / plain p50",
            ],
            &table,
        ));
        for r in rows.iter().filter(|r| r.is_session()) {
            for (what, s) in [("sandboxed", &r.pair.sandboxed), ("plain", &r.pair.plain)] {
                if !s.phases.is_empty() {
                    out.push_str(&format!(
                        "- {} {} {what}: {}\n",
                        r.key,
                        r.case,
                        s.phases_line()
                    ));
                }
            }
        }
        out.push_str(&format!(
            "\nCPU per new session (cold: from the session's start to the end of the pause after it ({} ms; node {} ms), by which time its process is reaped; pool: to the next session, the refill included). Gateway = Berth's own process; children = what Berth reaped meanwhile (servers, sandbox helpers), in 1/{} s ticks summed over the sessions.\n\n",
            options.cold_pause.as_millis(),
            options.node_cold_pause.as_millis(),
            peers::clock_ticks_per_sec()
        ));
        let cpu_ms = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.2} ms"));
        let table: Vec<Vec<String>> = rows
            .iter()
            .filter_map(|r| {
                let (plain, sbx) = r.pair.cpu?;
                Some(vec![
                    r.runtime.clone(),
                    r.case.clone(),
                    cpu_ms(plain.own_ms()),
                    cpu_ms(sbx.own_ms()),
                    cpu_ms(plain.children_ms()),
                    cpu_ms(sbx.children_ms()),
                ])
            })
            .collect();
        out.push_str(&markdown_table(
            &[
                "server",
                "case",
                "gateway CPU plain",
                "gateway CPU sandboxed",
                "children CPU plain",
                "children CPU sandboxed",
            ],
            &table,
        ));
        out.push_str("\n## Sandbox overhead: calls on an open session\n\n");
        let table: Vec<Vec<String>> = rows
            .iter()
            .filter(|r| !r.is_session())
            .map(|r| {
                let p = &r.pair;
                let sbx_rate = Pair::rate(&p.sandboxed, p.sandboxed_wall);
                let plain_rate = Pair::rate(&p.plain, p.plain_wall);
                vec![
                    r.runtime.clone(),
                    r.what.clone(),
                    format!("{}/{}", p.sandboxed.errors, p.plain.errors),
                    ms(p.plain.p50_us),
                    ms(p.plain.p99_us),
                    plain_rate.map_or("–".into(), |r| format!("{r:.0}")),
                    ms(p.sandboxed.p50_us),
                    ms(p.sandboxed.p99_us),
                    sbx_rate.map_or("–".into(), |r| format!("{r:.0}")),
                    diff(p.sandboxed.p50_us, p.plain.p50_us),
                    diff(p.sandboxed.p99_us, p.plain.p99_us),
                    ratio(as_f64(p.sandboxed.p50_us), as_f64(p.plain.p50_us)),
                    ratio(sbx_rate, plain_rate),
                ]
            })
            .collect();
        out.push_str(&markdown_table(
            &[
                "server",
                "calls",
                "errors (sbx/plain)",
                "plain p50",
                "plain p99",
                "plain calls/s",
                "sandboxed p50",
                "sandboxed p99",
                "sandboxed calls/s",
                "Δ p50",
                "Δ p99",
                "p50 ratio",
                "calls/s ratio",
            ],
            &table,
        ));
        for r in rows {
            for (what, s) in [("sandboxed", &r.pair.sandboxed), ("plain", &r.pair.plain)] {
                for error in &s.first_errors {
                    out.push_str(&format!("- {} {} {what}: error: {error}\n", r.key, r.case));
                }
            }
        }
    }
    if let Some(n) = neighbour {
        out.push_str(&format!(
            "\n## Noisy neighbour\n\nServer `{QUIET}` (echo fixture, sandboxed): {} calls per phase, one every {:?}, on one session. During the crash phases two clients loop on, each opening a new session per crash: `{OOM}` (hostile fixture, `memory = {:?}`, `attempt alloc {} MiB` → OOM kill) and `{EXIT}` (crash fixture, exits 3 on tools/call); flat out, or paced to one crash per loop every so often. Gateway = Berth's own process (children excluded); machine CPU = all CPUs busy, from /proc/stat.\n\n",
            options.neighbour_calls,
            options.neighbour_interval,
            options.oom_memory,
            options.oom_alloc_mib,
        ));
        let quiet = n.phases.first().map(|p| &p.summary);
        let ticks = peers::clock_ticks_per_sec().max(1) as f64;
        let table: Vec<Vec<String>> = n
            .phases
            .iter()
            .map(|p| {
                let s = &p.summary;
                let crashes = p.oom_crashes + p.exit_crashes;
                vec![
                    match p.pace {
                        Some(pace) => {
                            format!("{} ({:.0}/s per loop)", p.name, 1.0 / pace.as_secs_f64())
                        }
                        None => p.name.to_string(),
                    },
                    s.ok.to_string(),
                    s.errors.to_string(),
                    ms(s.p50_us),
                    ms(s.p90_us),
                    ms(s.p99_us),
                    ms(s.max_us),
                    ratio(as_f64(s.p50_us), as_f64(quiet.and_then(|q| q.p50_us))),
                    ratio(as_f64(s.p99_us), as_f64(quiet.and_then(|q| q.p99_us))),
                    format!(
                        "{} + {} ({:.1}/s)",
                        p.oom_crashes,
                        p.exit_crashes,
                        crashes as f64 / p.wall.as_secs_f64().max(1e-9)
                    ),
                    p.machine_busy
                        .map_or("–".into(), |b| format!("{:.0} %", b * 100.0)),
                    p.cpu_ticks.map_or("–".into(), |t| {
                        format!(
                            "{:.0} ms in {:.1} s",
                            t as f64 * 1000.0 / ticks,
                            p.wall.as_secs_f64()
                        )
                    }),
                    match (p.rss_start_kib, p.rss_end_kib) {
                        (Some(a), Some(b)) => format!(
                            "{:.1} → {:.1} MiB{}",
                            a as f64 / 1024.0,
                            b as f64 / 1024.0,
                            p.rss_max_kib
                                .map(|m| format!(" (max {:.1})", m as f64 / 1024.0))
                                .unwrap_or_default()
                        ),
                        _ => "–".into(),
                    },
                ]
            })
            .collect();
        out.push_str(&markdown_table(
            &[
                "phase",
                "B calls",
                "errors",
                "B p50",
                "B p90",
                "B p99",
                "B max",
                "p50 vs quiet",
                "p99 vs quiet",
                "A crashes (OOM + exit)",
                "machine CPU",
                "gateway CPU",
                "gateway RSS",
            ],
            &table,
        ));
        let first = n.phases.first();
        for c in n.phases.iter().filter(|p| !p.cycles.is_empty()) {
            let crashes = c.oom_crashes + c.exit_crashes;
            if crashes == 0 {
                continue;
            }
            let per = 100.0 / crashes as f64;
            if let (Some(qt), Some(ct)) = (first.and_then(|q| q.cpu_ticks), c.cpu_ticks) {
                // B's own calls are the same in both phases (same count).
                let extra = (ct as f64 - qt as f64) * 1000.0 / ticks;
                out.push_str(&format!(
                    "- {}: gateway CPU per 100 crashes {:.0} ms (this phase's minus the quiet phase's, same B calls)\n",
                    c.name,
                    extra * per,
                ));
            }
            if let (Some(a), Some(b)) = (c.rss_start_kib, c.rss_end_kib) {
                out.push_str(&format!(
                    "- {}: gateway RSS {:+.0} KiB per 100 crashes (end of the phase minus its start)\n",
                    c.name,
                    (b as f64 - a as f64) * per
                ));
            }
            for (server, cycle) in &c.cycles {
                out.push_str(&format!(
                    "- {}: {server} crash cycle (initialize → crash error): {}\n",
                    c.name,
                    cycle.line()
                ));
            }
            if c.not_crashed > 0 {
                out.push_str(&format!(
                    "- {}: A calls that did not end in a crash: {} (first: {})\n",
                    c.name,
                    c.not_crashed,
                    c.other_errors.join(" | ")
                ));
            }
        }
        if let (Some(first), Some(last)) = (n.rss_samples.first(), n.rss_samples.last()) {
            let max = n.rss_samples.iter().map(|s| s.1).max().unwrap_or(0);
            out.push_str(&format!(
                "- gateway RSS sampled every 250 ms: first {:.1} MiB, last {:.1} MiB, max {:.1} MiB ({} samples)\n",
                first.1 as f64 / 1024.0,
                last.1 as f64 / 1024.0,
                max as f64 / 1024.0,
                n.rss_samples.len()
            ));
        }
        if let Some(list) = n.ps.as_array() {
            for s in list {
                out.push_str(&format!(
                    "- berth ps afterwards: {} {}, crashes {}, restarts {}{}\n",
                    s["server"].as_str().unwrap_or("?"),
                    s["status"].as_str().unwrap_or("?"),
                    s["crashes"],
                    s["restarts"],
                    s["last_exit"]
                        .as_str()
                        .map(|l| format!("; last exit: {l}"))
                        .unwrap_or_default()
                ));
            }
        }
        for p in &n.phases {
            for error in &p.summary.first_errors {
                out.push_str(&format!("- {}: B error: {error}\n", p.name));
            }
        }
    }
    out
}

fn summary_json(s: &Summary) -> Value {
    Value::Object(s.json_fields())
}

fn to_json(
    options: &SandboxOptions,
    conditions: &Value,
    overhead: Option<&[OverheadRow]>,
    neighbour: Option<&NeighbourReport>,
) -> Value {
    let overhead = overhead.map(|rows| {
        rows.iter()
            .map(|r| {
                let p = &r.pair;
                json!({
                    "server": r.runtime,
                    "key": r.key,
                    "case": r.case,
                    "what": r.what,
                    "floor": p.floor.as_ref().map(summary_json),
                    "plain": summary_json(&p.plain),
                    "sandboxed": summary_json(&p.sandboxed),
                    "plain_calls_per_sec": Pair::rate(&p.plain, p.plain_wall).map(|r| (r * 10.0).round() / 10.0),
                    "sandboxed_calls_per_sec": Pair::rate(&p.sandboxed, p.sandboxed_wall).map(|r| (r * 10.0).round() / 10.0),
                    "plain_cpu": p.cpu.map(|(plain, _)| plain.json()),
                    "sandboxed_cpu": p.cpu.map(|(_, sbx)| sbx.json()),
                })
            })
            .collect::<Vec<_>>()
    });
    let neighbour = neighbour.map(|n| {
        json!({
            "phases": n.phases.iter().map(|p| json!({
                "phase": p.name,
                "pace_ms": p.pace.map(|d| d.as_secs_f64() * 1000.0),
                "b": summary_json(&p.summary),
                "wall_ms": (p.wall.as_secs_f64() * 1000.0).round(),
                "machine_busy": p.machine_busy.map(|b| (b * 1000.0).round() / 1000.0),
                "gateway_cpu_ticks": p.cpu_ticks,
                "clock_ticks_per_sec": peers::clock_ticks_per_sec(),
                "gateway_rss_start_kib": p.rss_start_kib,
                "gateway_rss_end_kib": p.rss_end_kib,
                "gateway_rss_max_kib": p.rss_max_kib,
                "oom_crashes": p.oom_crashes,
                "exit_crashes": p.exit_crashes,
                "crash_cycles": p.cycles.iter().map(|(server, s)| json!({ "server": server, "cycle": summary_json(s) })).collect::<Vec<_>>(),
                "not_crashed": p.not_crashed,
                "other_errors": p.other_errors,
                "window_s": [p.window.0, p.window.1],
            })).collect::<Vec<_>>(),
            "berth_ps": n.ps,
            "gateway_rss_samples": n.rss_samples.iter().map(|&(t, kib)| json!([(t * 100.0).round() / 100.0, kib])).collect::<Vec<_>>(),
        })
    });
    json!({
        "benchmark": "sandbox",
        "berth": options.berth,
        "fixture": options.fixture,
        "conditions": conditions,
        "options": {
            "sandbox_lines": options.sandbox_lines,
            "cold_sessions": options.cold_sessions,
            "node_cold_sessions": options.node_cold_sessions,
            "pool_sessions": options.pool_sessions,
            "node_pool_sessions": options.node_pool_sessions,
            "session_warmup": options.session_warmup,
            "pool_pause_ms": options.pool_pause.as_millis() as u64,
            "cold_pause_ms": options.cold_pause.as_millis() as u64,
            "back_to_back": options.back_to_back,
            "node_cold_pause_ms": options.node_cold_pause.as_millis() as u64,
            "node_pool_pause_ms": options.node_pool_pause.as_millis() as u64,
            "calls": options.calls,
            "node_calls": options.node_calls,
            "call_warmup": options.call_warmup,
            "blocks": options.blocks,
            "concurrency": options.concurrency,
            "concurrent_calls": options.concurrent_calls,
            "neighbour_calls": options.neighbour_calls,
            "neighbour_interval_us": options.neighbour_interval.as_micros() as u64,
            "paced_crash_rate": options.paced_crash_rate,
            "oom_memory": options.oom_memory,
            "oom_alloc_mib": options.oom_alloc_mib,
        },
        "overhead": overhead,
        "neighbour": neighbour,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> SandboxOptions {
        SandboxOptions {
            berth: "/x/berth".into(),
            fixture: "/x/berth-fixture".into(),
            node_dir: None,
            scenarios: vec![],
            sandbox_lines: vec![],
            cold_sessions: 1,
            node_cold_sessions: 1,
            pool_sessions: 1,
            node_pool_sessions: 1,
            session_warmup: 0,
            pool_pause: Duration::ZERO,
            node_pool_pause: Duration::ZERO,
            cold_pause: Duration::ZERO,
            node_cold_pause: Duration::ZERO,
            back_to_back: false,
            calls: 1,
            node_calls: 1,
            call_warmup: 0,
            blocks: 1,
            concurrency: 0,
            concurrent_calls: 0,
            neighbour_calls: 1,
            neighbour_interval: Duration::from_millis(1),
            paced_crash_rate: None,
            crash_settle: Duration::ZERO,
            oom_memory: "64MiB".into(),
            oom_alloc_mib: 4096,
            timeout: Duration::from_secs(1),
            out: None,
        }
    }

    #[test]
    fn overhead_config_hosts_each_server_four_ways() {
        let options = options();
        let text = overhead_config(&options, &runtimes(&options), Path::new("/t"));
        for name in [
            "echo_sandboxed",
            "echo_plain",
            "echo_sandboxed_pool",
            "echo_plain_pool",
        ] {
            assert!(text.contains(&format!("[servers.{name}]\n")), "{text}");
        }
        assert_eq!(text.matches("sandbox = false\n").count(), 2, "{text}");
        assert!(text.contains(
            "[servers.echo_plain_pool]\ncommand = \"/x/berth-fixture\"\nargs = [\"echo\"]\nsandbox = false\n\n[servers.echo_plain_pool.pool]\nmin_ready = 2\npreinitialize = true\n"
        ), "{text}");
        assert!(text.contains("data_dir = \"/t/data\"\n"), "{text}");
    }

    #[test]
    fn sandbox_lines_go_to_the_sandboxed_servers_only() {
        let mut options = options();
        options.sandbox_lines = vec!["network = \"none\"".into()];
        let text = overhead_config(&options, &runtimes(&options), Path::new("/t"));
        assert_eq!(text.matches("network = \"none\"").count(), 2, "{text}");
        assert!(text.contains("[servers.echo_sandboxed.sandbox]\nnetwork = \"none\"\n"));
        assert!(!text.contains("[servers.echo_plain.sandbox]"));
    }

    #[test]
    fn neighbour_config_never_gives_up_on_the_crashers() {
        let text = neighbour_config(&options(), Path::new("/t"));
        assert_eq!(text.matches("max_crashes = 1000000\n").count(), 2, "{text}");
        assert!(
            text.contains("[servers.crash_oom.sandbox]\nmemory = \"64MiB\"\n"),
            "{text}"
        );
        assert!(text.contains("args = [\"hostile\"]"));
        assert!(text.contains("args = [\"crash\"]"));
        assert!(!text.contains("sandbox = false"));
    }

    #[test]
    fn differences_and_ratios() {
        assert_eq!(diff(Some(3000), Some(1000)), "+2.000 ms");
        assert_eq!(diff(Some(500), Some(1000)), "−0.500 ms");
        assert_eq!(diff(None, Some(1)), "–");
        assert_eq!(ratio(Some(3.0), Some(2.0)), "1.50×");
        assert_eq!(ratio(Some(3.0), Some(0.0)), "–");
    }
}
