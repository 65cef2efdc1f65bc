//! `berth-bench`: measures Berth.
//!
//! * `ttfr` — new-session time to first tool result against one MCP
//!   Streamable HTTP URL: `initialize` → `notifications/initialized` →
//!   `tools/call echo`, timed from just before `initialize` is sent to the
//!   arrival of the tool result; the session is then deleted (untimed).
//! * `ttfr-suite` — starts Berth once per scenario (cold spawn, warm pool,
//!   pre-initialized pool, frozen standby) in front of a slow-booting echo
//!   server, runs `ttfr` against each, adds the direct-spawn stdio floor and
//!   prints a Markdown table.
//! * `load` — Berth against its peers (supergateway, mcp-proxy, any
//!   `--target`) and the direct stdio floor: per-call overhead, throughput
//!   under concurrent sessions, gateway memory per idle session; and Berth
//!   proxying a remote upstream against that upstream called directly, and
//!   a federated endpoint against the plain server path.
//! * `auth` — the cost of checking a bearer token per request, in process.
//! * `sandbox` — the default-on sandbox against `sandbox = false` in one
//!   Berth (new session cold and pooled, per call, concurrent calls), and a
//!   server's latency while other servers crash-loop (noisy neighbour).
//! * `peers-install` — installs the peers into `bench/peers/`.

mod auth;
mod floor;
mod load;
mod mcp;
mod openloop;
mod peers;
mod report;
mod sandbox;
mod stdio;
mod suite;
mod ttfr;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use crate::suite::{Scenario, SuiteOptions};
use crate::ttfr::RunOptions;

#[derive(Parser)]
#[command(
    name = "berth-bench",
    version,
    about = "Benchmarks for the Berth MCP gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// New-session time to first tool result against one MCP Streamable HTTP URL
    /// (the server must have a tool `echo` taking `{"text": …}`).
    Ttfr(TtfrArgs),
    /// Start Berth per scenario (cold, warm, preinitialized, standby) in front
    /// of a slow-booting echo server, measure each and the direct stdio floor.
    TtfrSuite(SuiteArgs),
    /// New sessions arriving at fixed rates (open loop) against a pool with
    /// min_ready = 2 in front of a slow-booting echo server: time to first
    /// result and processes spawned per session.
    Openloop(OpenLoopArgs),
    /// Berth against its peers and the stdio floor: per-call overhead,
    /// throughput, memory per idle session (installs the peers first).
    Load(LoadArgs),
    /// Install the peer gateways (supergateway from npm, mcp-proxy from PyPI)
    /// into the peers directory.
    PeersInstall(PeersArgs),
    /// What checking a bearer token costs per request (JWT, cached, API key).
    Auth(AuthArgs),
    /// The sandbox's cost (sandboxed against plain, one Berth) and a noisy
    /// neighbour (a server's latency while others crash-loop).
    Sandbox(SandboxArgs),
}

#[derive(Args)]
struct SandboxArgs {
    /// The berth binary [default: `berth` next to this executable]
    #[arg(long, value_name = "PATH")]
    berth: Option<PathBuf>,
    /// The berth-fixture binary [default: `berth-fixture` next to this executable]
    #[arg(long, value_name = "PATH")]
    fixture: Option<PathBuf>,
    /// Where @modelcontextprotocol/server-everything is installed
    /// (node_modules/...) [default: tests/node of the source tree]
    #[arg(long, value_name = "DIR")]
    node_dir: Option<PathBuf>,
    /// Measure the echo fixture only (no node).
    #[arg(long)]
    no_node: bool,
    /// Scenarios to run, in this order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "overhead,neighbour"
    )]
    scenarios: Vec<sandbox::SandboxScenario>,
    /// A line for the sandboxed servers' [servers.NAME.sandbox] table, e.g.
    /// 'network = "none"' (repeatable; default: no table, the defaults).
    #[arg(long = "sandbox-line", value_name = "TOML")]
    sandbox_lines: Vec<String>,
    /// Smaller counts (about a minute in all).
    #[arg(long)]
    quick: bool,
    /// echo: cold sessions of each kind (floor, sandboxed, plain) [default: 100, quick 20]
    #[arg(long)]
    cold_sessions: Option<u64>,
    /// everything (node): cold sessions of each kind [default: 15, quick 4]
    #[arg(long)]
    node_cold_sessions: Option<u64>,
    /// echo: pooled sessions of each kind [default: 50, quick 10]
    #[arg(long)]
    pool_sessions: Option<u64>,
    /// everything (node): pooled sessions of each kind [default: 15, quick 4]
    #[arg(long)]
    node_pool_sessions: Option<u64>,
    /// Sessions of each kind run first and not recorded.
    #[arg(long, default_value_t = 2)]
    session_warmup: u64,
    /// echo: pause before each pooled session (the pool refills).
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    pool_pause: Duration,
    /// everything (node): pause before each pooled session.
    #[arg(long, default_value = "1500ms", value_parser = humantime::parse_duration)]
    node_pool_pause: Duration,
    /// echo: pause after each cold session (its process is reaped meanwhile).
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    cold_pause: Duration,
    /// echo: skip the second cold measure without pauses (back-to-back).
    #[arg(long)]
    no_back_to_back: bool,
    /// everything (node): pause after each cold session.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    node_cold_pause: Duration,
    /// echo: timed calls per server on one session [default: 5000, quick 1000]
    #[arg(long)]
    calls: Option<u64>,
    /// everything (node): timed calls per server on one session [default: 2000, quick 400]
    #[arg(long)]
    node_calls: Option<u64>,
    /// Untimed calls on each session first.
    #[arg(long, default_value_t = 100)]
    call_warmup: u64,
    /// Per-call: sandboxed and plain alternate in this many blocks.
    #[arg(long, default_value_t = 10)]
    blocks: u64,
    /// Concurrent sessions (0: no concurrent measure).
    #[arg(long, default_value_t = 16)]
    concurrency: u64,
    /// Calls per concurrent session, per round (2 rounds each) [default: 200, quick 50]
    #[arg(long)]
    concurrent_calls: Option<u64>,
    /// neighbour: calls to B per phase [default: 3000, quick 1000]
    #[arg(long)]
    neighbour_calls: Option<u64>,
    /// neighbour: one call to B every this long.
    #[arg(long, default_value = "2ms", value_parser = humantime::parse_duration)]
    neighbour_interval: Duration,
    /// neighbour: also a crash phase with each crash loop paced to this many
    /// crashes per second (0: none).
    #[arg(long, default_value_t = 5.0)]
    paced_crash_rate: f64,
    /// neighbour: how long the crash loops run before B's calls are timed.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    crash_settle: Duration,
    /// neighbour: the OOM crasher's memory limit.
    #[arg(long, default_value = "64MiB")]
    oom_memory: String,
    /// neighbour: what the OOM crasher tries to allocate, in MiB.
    #[arg(long, default_value_t = 4096)]
    oom_alloc_mib: u64,
    /// Bound on each request.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct AuthArgs {
    /// Checks per case.
    #[arg(long, default_value_t = 20_000)]
    iterations: u64,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct PeersArgs {
    /// Where the peers are installed [default: bench/peers of the source tree]
    #[arg(long, value_name = "DIR")]
    peers_dir: Option<PathBuf>,
}

#[derive(Args)]
struct LoadArgs {
    /// The berth binary [default: `berth` next to this executable]
    #[arg(long, value_name = "PATH")]
    berth: Option<PathBuf>,
    /// The berth-fixture binary [default: `berth-fixture` next to this executable]
    #[arg(long, value_name = "PATH")]
    fixture: Option<PathBuf>,
    #[command(flatten)]
    peers: PeersArgs,
    /// Skip supergateway and mcp-proxy (no installation, offline).
    #[arg(long)]
    no_peers: bool,
    /// Skip the `berth → remote` row (per-call, throughput): Berth proxying
    /// a remote upstream, the http floor's server, beside the http floor.
    #[arg(long)]
    no_remote: bool,
    /// Skip the `berth endpoint` row (per-call, throughput): the `berth`
    /// configuration plus a federated endpoint over the echo server, called
    /// through the endpoint (`echo__echo` on `/mcp/fed`), beside `berth`.
    #[arg(long)]
    no_endpoint: bool,
    /// Another gateway hosting the echo fixture, as NAME=URL (repeatable).
    #[arg(long = "target", value_name = "NAME=URL", value_parser = load::parse_target)]
    targets: Vec<(String, String)>,
    /// Smaller counts so that every scenario finishes in under two minutes.
    #[arg(long)]
    quick: bool,
    /// per-call: sequential calls [default: 5000, quick 500]
    #[arg(long)]
    calls: Option<u64>,
    /// per-call: untimed calls first [default: 100, quick 20]
    #[arg(long)]
    warmup: Option<u64>,
    /// throughput: concurrent sessions, one scenario each.
    #[arg(long, value_delimiter = ',', default_value = "16,64,256")]
    concurrency: Vec<u64>,
    /// throughput: calls per session [default: 100, quick 10]
    #[arg(long)]
    calls_per_session: Option<u64>,
    /// idle-exclusive: idle sessions [default: 1000, quick 200]
    #[arg(long)]
    idle_sessions: Option<u64>,
    /// idle-shared: idle sessions [default: 10000, quick 1000]
    #[arg(long)]
    shared_sessions: Option<u64>,
    /// Sessions opened at once in the memory scenarios.
    #[arg(long, default_value_t = 16)]
    open_concurrency: usize,
    /// Bound on each request.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Bound on each target's measurement in each scenario.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    scenario_timeout: Duration,
    /// Scenarios to run, in this order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "per-call,throughput,idle-exclusive,idle-shared,ttfr"
    )]
    scenarios: Vec<load::LoadScenario>,
    /// ttfr: recorded sessions, after one warm-up [default: 20, quick 5]
    #[arg(long)]
    ttfr_sessions: Option<u64>,
    /// ttfr: the echo fixture's boot delay.
    #[arg(long, default_value = "300ms", value_parser = humantime::parse_duration)]
    ttfr_boot_delay: Duration,
    /// ttfr: pause between sessions, the same for every target (lets Berth's pool refill).
    #[arg(long, default_value = "400ms", value_parser = humantime::parse_duration)]
    ttfr_pause: Duration,
    /// `[gateway] worker_threads` for every Berth row [default: Berth's own]
    #[arg(long, value_name = "N")]
    berth_worker_threads: Option<usize>,
    /// The http floor's runtime threads: 1 runs it on one thread (the least
    /// CPU per call under load), 0 one worker per core (Berth's default shape).
    #[arg(long, value_name = "N", default_value_t = 1)]
    http_floor_worker_threads: usize,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct Common {
    /// Recorded sessions, run one after the other.
    #[arg(long, default_value_t = 100)]
    sessions: u64,
    /// Sessions run first and not recorded.
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// Bound on each request (and each direct-spawn session), e.g. 30s.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

#[derive(Args)]
struct TtfrArgs {
    /// The MCP endpoint, e.g. http://127.0.0.1:8080/mcp/echo
    #[arg(long)]
    url: String,
    #[command(flatten)]
    common: Common,
    /// Milliseconds to sleep between sessions (lets a warm pool refill).
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pause: u64,
    /// Print one JSON line instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct OpenLoopArgs {
    /// The berth binary [default: `berth` next to this executable]
    #[arg(long, value_name = "PATH")]
    berth: Option<PathBuf>,
    /// The berth-fixture binary [default: `berth-fixture` next to this executable]
    #[arg(long, value_name = "PATH")]
    fixture: Option<PathBuf>,
    /// The echo server's start-up delay.
    #[arg(long, default_value = "300ms", value_parser = humantime::parse_duration)]
    boot_delay: Duration,
    /// Session arrival rates (per second), one Berth each.
    #[arg(long, value_delimiter = ',', default_value = "5,30")]
    rates: Vec<f64>,
    /// How long sessions arrive, per rate.
    #[arg(long, default_value = "12s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Sessions starting within this span are not recorded.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    skip: Duration,
    /// Bound on each request.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct SuiteArgs {
    /// The berth binary [default: `berth` next to this executable]
    #[arg(long, value_name = "PATH")]
    berth: Option<PathBuf>,
    /// The berth-fixture binary [default: `berth-fixture` next to this executable]
    #[arg(long, value_name = "PATH")]
    fixture: Option<PathBuf>,
    #[command(flatten)]
    common: Common,
    /// The echo server's start-up delay (`berth-fixture echo --boot-delay`).
    #[arg(long, default_value = "300ms", value_parser = humantime::parse_duration)]
    boot_delay: Duration,
    /// Milliseconds between sessions for `cold` and `direct-spawn`.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pause: u64,
    /// Milliseconds between sessions for `warm` and `preinitialized`, so the
    /// pool has refilled (keep it above the boot delay); also waited once
    /// after start-up for the pool to fill.
    #[arg(long, default_value_t = 400, value_name = "MS")]
    pool_pause: u64,
    /// Milliseconds between sessions for `standby` (above its standby_after
    /// of 50 ms, so each session takes a frozen process).
    #[arg(long, default_value_t = 200, value_name = "MS")]
    standby_pause: u64,
    /// Scenarios to run, in this order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "direct-spawn,cold,warm,preinitialized,standby"
    )]
    scenarios: Vec<Scenario>,
    /// Bound on each scenario's sessions (berth's start-up and shutdown are
    /// bounded apart: 30 s and 10 s).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    scenario_timeout: Duration,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Ttfr(args) => ttfr_command(args).await,
        Command::TtfrSuite(args) => suite_command(args).await,
        Command::Openloop(args) => openloop_command(args).await,
        Command::Load(args) => load_command(args).await,
        Command::PeersInstall(args) => peers_install_command(args).await,
        Command::Sandbox(args) => sandbox_command(args).await,
        Command::Auth(args) => {
            auth::run(&auth::AuthOptions {
                iterations: args.iterations,
                out: args.out,
            })
            .await
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("berth-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Returns whether at least one session succeeded.
async fn ttfr_command(args: TtfrArgs) -> Result<bool> {
    let options = RunOptions {
        sessions: args.common.sessions,
        warmup: args.common.warmup,
        pause: Duration::from_millis(args.pause),
    };
    let client = mcp::McpHttp::new(&args.url, args.common.timeout, None)?;
    client.preconnect().await;
    let recorder = ttfr::run("ttfr", options, || ttfr::http_session(&client)).await;
    let summary = recorder.summary();
    if args.json {
        let mut line = json!({
            "benchmark": "ttfr",
            "url": args.url,
            "sessions": options.sessions,
            "warmup": options.warmup,
            "pause_ms": args.pause,
        });
        line.as_object_mut()
            .context("JSON object")?
            .extend(summary.json_fields());
        println!("{line}");
    } else {
        println!(
            "ttfr {}: {} sessions ({} warm-up, pause {} ms)",
            args.url, options.sessions, options.warmup, args.pause
        );
        println!("  {}", summary.line());
        println!("  {}", summary.phases_line());
    }
    Ok(summary.ok > 0 || options.sessions == 0)
}

async fn openloop_command(args: OpenLoopArgs) -> Result<bool> {
    openloop::run(&openloop::OpenLoopOptions {
        berth: binary(args.berth.as_deref(), "berth")?,
        fixture: binary(args.fixture.as_deref(), "berth-fixture")?,
        boot_delay: args.boot_delay,
        rates: args.rates,
        duration: args.duration,
        skip: args.skip,
        timeout: args.timeout,
        out: args.out,
    })
    .await
}

/// The binary given on the command line, else `name` next to this executable.
fn binary(given: Option<&Path>, name: &str) -> Result<PathBuf> {
    if let Some(path) = given {
        return Ok(path.to_path_buf());
    }
    let exe = std::env::current_exe().context("locating this executable")?;
    Ok(exe.with_file_name(name))
}

async fn peers_install_command(args: PeersArgs) -> Result<bool> {
    let dir = args.peers_dir.unwrap_or_else(peers::default_dir);
    let mut ok = true;
    for (peer, result) in peers::install(&dir).await {
        match result {
            Ok(()) => println!("{peer}: installed in {}", dir.display()),
            Err(error) => {
                ok = false;
                println!("{peer}: not installed: {error:#}");
            }
        }
    }
    Ok(ok)
}

async fn load_command(args: LoadArgs) -> Result<bool> {
    let pick = |value: Option<u64>, full: u64, quick: u64| {
        value.unwrap_or(if args.quick { quick } else { full })
    };
    let options = load::LoadOptions {
        berth: binary(args.berth.as_deref(), "berth")?,
        fixture: binary(args.fixture.as_deref(), "berth-fixture")?,
        peers_dir: args
            .peers
            .peers_dir
            .clone()
            .unwrap_or_else(peers::default_dir),
        peers: !args.no_peers,
        remote: !args.no_remote,
        endpoint: !args.no_endpoint,
        external: args.targets.clone(),
        calls: pick(args.calls, 5000, 500),
        warmup: pick(args.warmup, 100, 20),
        concurrency: args.concurrency.clone(),
        calls_per_session: pick(args.calls_per_session, 100, 10),
        idle_sessions: pick(args.idle_sessions, 1000, 200),
        shared_sessions: pick(args.shared_sessions, 10000, 1000),
        open_concurrency: args.open_concurrency,
        timeout: args.timeout,
        scenario_timeout: args.scenario_timeout,
        scenarios: args.scenarios.clone(),
        ttfr_sessions: pick(args.ttfr_sessions, 20, 5),
        ttfr_boot_delay: args.ttfr_boot_delay,
        ttfr_pause: args.ttfr_pause,
        berth_worker_threads: args.berth_worker_threads,
        http_floor_worker_threads: args.http_floor_worker_threads,
        quick: args.quick,
        out: args.out.clone(),
    };
    load::run(&options).await
}

async fn suite_command(args: SuiteArgs) -> Result<bool> {
    let options = SuiteOptions {
        berth: binary(args.berth.as_deref(), "berth")?,
        fixture: binary(args.fixture.as_deref(), "berth-fixture")?,
        sessions: args.common.sessions,
        warmup: args.common.warmup,
        timeout: args.common.timeout,
        boot_delay: args.boot_delay,
        pause: Duration::from_millis(args.pause),
        pool_pause: Duration::from_millis(args.pool_pause),
        standby_pause: Duration::from_millis(args.standby_pause),
        scenarios: args.scenarios,
        scenario_timeout: args.scenario_timeout,
        out: args.out,
    };
    suite::run(&options).await
}

async fn sandbox_command(args: SandboxArgs) -> Result<bool> {
    let pick = |value: Option<u64>, full: u64, quick: u64| {
        value.unwrap_or(if args.quick { quick } else { full })
    };
    let options = sandbox::SandboxOptions {
        berth: binary(args.berth.as_deref(), "berth")?,
        fixture: binary(args.fixture.as_deref(), "berth-fixture")?,
        node_dir: (!args.no_node).then(|| {
            args.node_dir
                .clone()
                .unwrap_or_else(sandbox::default_node_dir)
        }),
        scenarios: args.scenarios.clone(),
        sandbox_lines: args.sandbox_lines.clone(),
        cold_sessions: pick(args.cold_sessions, 100, 20),
        node_cold_sessions: pick(args.node_cold_sessions, 15, 4),
        pool_sessions: pick(args.pool_sessions, 50, 10),
        node_pool_sessions: pick(args.node_pool_sessions, 15, 4),
        session_warmup: args.session_warmup,
        pool_pause: args.pool_pause,
        node_pool_pause: args.node_pool_pause,
        cold_pause: args.cold_pause,
        node_cold_pause: args.node_cold_pause,
        back_to_back: !args.no_back_to_back,
        calls: pick(args.calls, 5000, 1000),
        node_calls: pick(args.node_calls, 2000, 400),
        call_warmup: args.call_warmup,
        blocks: args.blocks,
        concurrency: args.concurrency,
        concurrent_calls: pick(args.concurrent_calls, 200, 50),
        neighbour_calls: pick(args.neighbour_calls, 3000, 1000),
        neighbour_interval: args.neighbour_interval,
        paced_crash_rate: Some(args.paced_crash_rate),
        crash_settle: args.crash_settle,
        oom_memory: args.oom_memory.clone(),
        oom_alloc_mib: args.oom_alloc_mib,
        timeout: args.timeout,
        out: args.out.clone(),
    };
    sandbox::run(&options).await
}
