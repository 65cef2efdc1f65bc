//! `openloop`: new sessions arriving at a fixed rate (open loop: each starts
//! on its schedule whether or not the previous ones have finished), against
//! a Berth hosting the slow-booting echo fixture with `min_ready = 2,
//! preinitialize = true`. Reports time to first tool result (p50/p99 after a
//! warm-up span, since the pool only learns the rate once sessions come) and
//! server processes spawned per session, per rate.
//!
//! Processes are counted by the server's own command: a shell line appends
//! to `$HOME/spawns` (the server's state dir under the sandbox) before
//! exec'ing the fixture.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::mcp::McpHttp;
use crate::report::{Recorder, Summary, markdown_table, ms};
use crate::suite::{Berth, Started, toml_string};
use crate::ttfr;

/// Name of the server in the generated configuration (`/mcp/echo`).
const SERVER: &str = "echo";

pub struct OpenLoopOptions {
    pub berth: PathBuf,
    pub fixture: PathBuf,
    pub boot_delay: Duration,
    /// Sessions per second, one run (one Berth) each.
    pub rates: Vec<f64>,
    /// How long sessions keep arriving, per rate.
    pub duration: Duration,
    /// Sessions that start within this span are not recorded (the pool is
    /// learning the rate).
    pub skip: Duration,
    /// Bounds each request.
    pub timeout: Duration,
    pub out: Option<PathBuf>,
}

struct RateResult {
    rate: f64,
    summary: Summary,
    /// Sessions started after `skip`.
    recorded: u64,
    /// Server processes spawned while they ran, per recorded session.
    spawned_per_session: Option<f64>,
    /// The pool's target and why, from `berth ps --json`, at the end.
    target: Option<String>,
}

/// Runs every rate; false if one had no successful session.
pub async fn run(options: &OpenLoopOptions) -> Result<bool> {
    for (path, what) in [
        (&options.berth, "berth"),
        (&options.fixture, "berth-fixture"),
    ] {
        if !path.is_file() {
            bail!(
                "{what} not found at {}: build the workspace (cargo build --workspace) or pass --{}",
                path.display(),
                if what == "berth" { "berth" } else { "fixture" }
            );
        }
    }
    let mut results = Vec::new();
    for &rate in &options.rates {
        eprintln!(
            "[openloop {rate}/s] {} of arrivals, the first {} not recorded",
            humantime::format_duration(options.duration),
            humantime::format_duration(options.skip)
        );
        let result = run_rate(options, rate).await?;
        eprintln!(
            "[openloop {rate}/s] {}; spawned/session {}; {}",
            result.summary.line(),
            result
                .spawned_per_session
                .map_or("?".into(), |v| format!("{v:.2}")),
            result.target.as_deref().unwrap_or("target ?")
        );
        results.push(result);
    }
    print!("{}", render(options, &results));
    if let Some(path) = &options.out {
        let json = json!({
            "benchmark": "openloop",
            "boot_delay_ms": options.boot_delay.as_millis() as u64,
            "duration_s": options.duration.as_secs_f64(),
            "skip_s": options.skip.as_secs_f64(),
            "rates": results.iter().map(|r| {
                let mut fields = r.summary.json_fields();
                fields.insert("rate".into(), json!(r.rate));
                fields.insert("recorded".into(), json!(r.recorded));
                fields.insert("spawned_per_session".into(), json!(r.spawned_per_session));
                fields.insert("target".into(), json!(r.target));
                Value::Object(fields)
            }).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(results.iter().all(|r| r.summary.ok > 0))
}

fn config_text(options: &OpenLoopOptions, data_dir: &Path) -> String {
    let us = options.boot_delay.as_micros();
    let delay = if us.is_multiple_of(1000) {
        format!("{}ms", us / 1000)
    } else {
        format!("{us}us")
    };
    let args = [
        "-c",
        "echo >> \"$HOME/spawns\"; exec \"$0\" \"$@\"",
        &options.fixture.to_string_lossy(),
        "echo",
        "--boot-delay",
        &delay,
    ]
    .iter()
    .map(|a| toml_string(a))
    .collect::<Vec<_>>()
    .join(", ");
    format!(
        "[gateway]\nlisten = \"127.0.0.1:0\"\ndata_dir = {}\n\n[servers.{SERVER}]\ncommand = \"/bin/sh\"\nargs = [{args}]\n\n[servers.{SERVER}.pool]\nmin_ready = 2\nmax_processes = 64\npreinitialize = true\n",
        toml_string(&data_dir.to_string_lossy()),
    )
}

/// Lines in the spawn counter file (0 if it is not there yet).
fn spawns(file: &Path) -> u64 {
    std::fs::read_to_string(file).map_or(0, |t| t.lines().count() as u64)
}

async fn run_rate(options: &OpenLoopOptions, rate: f64) -> Result<RateResult> {
    if !(rate > 0.0 && rate.is_finite()) {
        bail!("--rates: {rate} is not a positive rate");
    }
    let dir = tempfile::Builder::new()
        .prefix("berth-bench-openloop-")
        .tempdir()
        .context("temp dir")?;
    let data_dir = dir.path().join("data");
    let config = dir.path().join("berth.toml");
    std::fs::write(&config, config_text(options, &data_dir)).context("writing the config")?;
    let counter = data_dir.join("state").join(SERVER).join("spawns");
    let berth = match Berth::start(&options.berth, &config, &dir.path().join("berth.log")).await? {
        Started::Running(berth) => berth,
        Started::Refused { status, log } => {
            bail!("berth exited ({status}) before listening:\n{log}")
        }
    };
    let measured = measure(options, rate, &berth, &counter, &data_dir).await;
    let stopped = berth.stop().await;
    let result = measured?;
    if let Err(error) = stopped {
        eprintln!("[openloop {rate}/s] stopping berth: {error:#}");
    }
    Ok(result)
}

async fn measure(
    options: &OpenLoopOptions,
    rate: f64,
    berth: &Berth,
    counter: &Path,
    data_dir: &Path,
) -> Result<RateResult> {
    let client = Arc::new(McpHttp::new(
        &format!("http://{}/mcp/{SERVER}", berth.addr),
        options.timeout,
        None,
    )?);
    // The floor (min_ready = 2) booted and pre-initialized: a few boot times.
    tokio::time::sleep(options.boot_delay * 3 + Duration::from_millis(500)).await;
    client.preconnect().await;

    let interval = Duration::from_secs_f64(1.0 / rate);
    let sessions = (options.duration.as_secs_f64() * rate).round() as u64;
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(sessions as usize);
    let mut spawned_at_skip = None;
    for i in 0..sessions {
        let due = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due).await;
        let offset = due - start;
        if spawned_at_skip.is_none() && offset >= options.skip {
            spawned_at_skip = Some(spawns(counter));
        }
        let client = client.clone();
        tasks.push((
            offset >= options.skip,
            tokio::spawn(async move { ttfr::http_session(&client).await }),
        ));
    }
    let mut recorder = Recorder::default();
    let mut recorded = 0;
    for (record, task) in tasks {
        let outcome = task.await.context("a session task panicked")?;
        if !record {
            continue;
        }
        recorded += 1;
        match outcome {
            Ok(sample) => recorder.record(&sample),
            Err(error) => recorder.error(&error),
        }
    }
    // Processes spawned for the recorded sessions: refills they caused.
    // Read once the refills they started have shown up (a boot later).
    tokio::time::sleep(options.boot_delay + Duration::from_millis(200)).await;
    let spawned_per_session = spawned_at_skip
        .filter(|_| recorded > 0 && counter.exists())
        .map(|before| spawns(counter).saturating_sub(before) as f64 / recorded as f64);
    let target = pool_target(&options.berth, data_dir).await.ok();
    Ok(RateResult {
        rate,
        summary: recorder.summary(),
        recorded,
        spawned_per_session,
        target,
    })
}

/// "ready target N (reason), rate R/s, ready time T ms" from `berth ps --json`.
async fn pool_target(berth: &Path, data_dir: &Path) -> Result<String> {
    let servers = crate::suite::berth_ps(berth, data_dir).await?;
    // The pool's fields are flattened into each server's object.
    let pool = servers
        .iter()
        .find(|s| s["server"] == SERVER)
        .context("no echo server in berth ps")?;
    Ok(format!(
        "ready target {} ({}), rate {:.1}/s, ready time {} ms",
        pool["ready_target"],
        pool["target_reason"].as_str().unwrap_or("?"),
        pool["arrival_rate"].as_f64().unwrap_or(0.0),
        pool["ready_time_ms"]
            .as_f64()
            .map_or("?".into(), |t| format!("{t:.0}"))
    ))
}

fn render(options: &OpenLoopOptions, results: &[RateResult]) -> String {
    let mut out = format!(
        "\nOpen-loop arrivals: `berth-fixture echo --boot-delay {}`, min_ready = 2, preinitialize = true; {} of arrivals per rate, the first {} not recorded\n\n",
        humantime::format_duration(options.boot_delay),
        humantime::format_duration(options.duration),
        humantime::format_duration(options.skip),
    );
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            vec![
                format!("{}/s", r.rate),
                r.recorded.to_string(),
                r.summary.errors.to_string(),
                ms(r.summary.p50_us),
                ms(r.summary.p90_us),
                ms(r.summary.p99_us),
                ms(r.summary.max_us),
                r.spawned_per_session
                    .map_or("?".into(), |v| format!("{v:.2}")),
            ]
        })
        .collect();
    out.push_str(&markdown_table(
        &[
            "rate",
            "sessions",
            "errors",
            "p50",
            "p90",
            "p99",
            "max",
            "spawned/session",
        ],
        &rows,
    ));
    for r in results {
        if let Some(target) = &r.target {
            out.push_str(&format!("\n{}/s: at the end, {target}\n", r.rate));
        }
    }
    out
}
