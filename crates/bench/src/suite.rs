//! `ttfr-suite`: one Berth per scenario, each with a generated configuration
//! in a temporary directory, measured with the same loop as `ttfr`; plus the
//! direct-spawn stdio floor. Every Berth started is stopped (SIGTERM, then
//! SIGKILL after a grace period), whatever happens, and everything is bounded
//! in time.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

use crate::mcp::McpHttp;
use crate::report::{Summary, markdown_table, ms};
use crate::stdio;
use crate::ttfr::{self, RunOptions};

/// Name of the server in the generated configuration (`/mcp/echo`).
const SERVER: &str = "echo";
/// `standby_after` of the `standby` scenario.
const STANDBY_AFTER: Duration = Duration::from_millis(50);
/// How long Berth gets to print its listening line.
const START_LIMIT: Duration = Duration::from_secs(30);
/// How long Berth gets to exit after SIGTERM before it is killed.
const STOP_LIMIT: Duration = Duration::from_secs(10);
/// The line Berth prints on stdout once it accepts connections.
const LISTENING: &str = "Berth is listening on http://";

/// Reads a Berth's stdout to its end (so it never blocks on a full pipe) and
/// reports the address from its "listening" line, once.
pub(crate) fn listening_address(stdout: tokio::process::ChildStdout) -> oneshot::Receiver<String> {
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let mut tx = Some(tx);
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(addr) = line.strip_prefix(LISTENING)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(addr.trim().to_string());
            }
        }
    });
    rx
}
/// Configuration keys of the process pool; a Berth that refuses them does
/// not support the pooled scenarios yet.
const POOL_KEYS: [&str; 5] = [
    "pool",
    "min_ready",
    "max_processes",
    "preinitialize",
    "standby_after",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// The fixture spawned directly, over stdio: the floor for a cold start.
    DirectSpawn,
    /// No pool: one process spawned per session.
    Cold,
    /// Pool of booted processes, initialized on demand.
    Warm,
    /// Pool of booted and initialized processes.
    Preinitialized,
    /// Pre-initialized processes frozen after 50 ms idle.
    Standby,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::DirectSpawn => "direct-spawn",
            Scenario::Cold => "cold",
            Scenario::Warm => "warm",
            Scenario::Preinitialized => "preinitialized",
            Scenario::Standby => "standby",
        }
    }

    /// The `[servers.echo.pool]` table, if any.
    fn pool_table(self) -> Option<String> {
        let preinitialize = match self {
            Scenario::DirectSpawn | Scenario::Cold => return None,
            Scenario::Warm => false,
            Scenario::Preinitialized | Scenario::Standby => true,
        };
        let mut table = format!(
            "[servers.{SERVER}.pool]\nmin_ready = 2\nmax_processes = 64\npreinitialize = {preinitialize}\n"
        );
        if self == Scenario::Standby {
            table.push_str(&format!(
                "standby_after = \"{}ms\"\n",
                STANDBY_AFTER.as_millis()
            ));
        }
        Some(table)
    }

    /// Sleep between sessions.
    fn pause(self, options: &SuiteOptions) -> Duration {
        match self {
            Scenario::DirectSpawn | Scenario::Cold => options.pause,
            Scenario::Warm | Scenario::Preinitialized => options.pool_pause,
            Scenario::Standby => options.standby_pause,
        }
    }

    /// Wait after Berth has started, for the pool to fill (and freeze).
    fn settle(self, options: &SuiteOptions) -> Duration {
        match self {
            Scenario::DirectSpawn | Scenario::Cold => Duration::ZERO,
            Scenario::Warm | Scenario::Preinitialized => options.pool_pause,
            Scenario::Standby => options.pool_pause + STANDBY_AFTER,
        }
    }
}

pub struct SuiteOptions {
    pub berth: PathBuf,
    pub fixture: PathBuf,
    pub sessions: u64,
    pub warmup: u64,
    pub timeout: Duration,
    pub boot_delay: Duration,
    pub pause: Duration,
    pub pool_pause: Duration,
    pub standby_pause: Duration,
    pub scenarios: Vec<Scenario>,
    pub scenario_timeout: Duration,
    pub out: Option<PathBuf>,
}

impl SuiteOptions {
    fn run_options(&self, scenario: Scenario) -> RunOptions {
        RunOptions {
            sessions: self.sessions,
            warmup: self.warmup,
            pause: scenario.pause(self),
        }
    }

    /// `echo --boot-delay …` in a form the fixture parses.
    fn fixture_args(&self) -> Vec<String> {
        let us = self.boot_delay.as_micros();
        let delay = if us.is_multiple_of(1000) {
            format!("{}ms", us / 1000)
        } else {
            format!("{us}us")
        };
        vec!["echo".into(), "--boot-delay".into(), delay]
    }
}

enum Outcome {
    Measured(Summary),
    Unsupported(String),
    Failed(String),
    /// Ctrl-C: the suite stops after this scenario's clean-up.
    Interrupted,
}

struct ScenarioResult {
    scenario: Scenario,
    outcome: Outcome,
    /// Anything odd about stopping Berth (non-zero exit, had to be killed).
    stop_note: Option<String>,
}

/// Runs the suite; returns false if a scenario failed (an unsupported one
/// does not count as a failure).
pub async fn run(options: &SuiteOptions) -> Result<bool> {
    ensure_file(&options.fixture, "berth-fixture", "-p berth-fixtures")?;
    if options
        .scenarios
        .iter()
        .any(|s| *s != Scenario::DirectSpawn)
    {
        ensure_file(&options.berth, "berth", "-p berth")?;
    }

    let mut results = Vec::new();
    for &scenario in &options.scenarios {
        eprintln!(
            "[{}] {} sessions + {} warm-up, pause {} between sessions, settle {} after start",
            scenario.name(),
            options.sessions,
            options.warmup,
            human(scenario.pause(options)),
            human(scenario.settle(options)),
        );
        let result = run_scenario(scenario, options).await;
        match &result.outcome {
            Outcome::Measured(summary) => eprintln!(
                "[{0}] {1}\n[{0}] {2}",
                scenario.name(),
                summary.line(),
                summary.phases_line()
            ),
            Outcome::Unsupported(reason) => eprintln!(
                "[{}] unsupported by this berth build: {reason}",
                scenario.name()
            ),
            Outcome::Failed(error) => eprintln!("[{}] failed: {error}", scenario.name()),
            Outcome::Interrupted => eprintln!("[{}] interrupted", scenario.name()),
        }
        let interrupted = matches!(result.outcome, Outcome::Interrupted);
        results.push(result);
        if interrupted {
            break;
        }
    }

    print!("{}", render(options, &results));
    if let Some(path) = &options.out {
        let json = serde_json::to_string_pretty(&to_json(options, &results))?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(results.iter().all(|r| match &r.outcome {
        Outcome::Measured(summary) => summary.ok > 0 || options.sessions == 0,
        Outcome::Unsupported(_) => true,
        Outcome::Failed(_) | Outcome::Interrupted => false,
    }))
}

async fn run_scenario(scenario: Scenario, options: &SuiteOptions) -> ScenarioResult {
    let (outcome, stop_note) = if scenario == Scenario::DirectSpawn {
        (direct_spawn(options).await, None)
    } else {
        through_berth(scenario, options).await
    };
    ScenarioResult {
        scenario,
        outcome,
        stop_note,
    }
}

/// Runs `measure` within `--scenario-timeout`, giving up on Ctrl-C.
async fn bounded(
    options: &SuiteOptions,
    measure: impl Future<Output = crate::report::Recorder>,
) -> Outcome {
    tokio::select! {
        result = tokio::time::timeout(options.scenario_timeout, measure) => match result {
            Ok(recorder) => Outcome::Measured(recorder.summary()),
            Err(_) => Outcome::Failed(format!(
                "did not finish within {} (--scenario-timeout)",
                human(options.scenario_timeout)
            )),
        },
        _ = tokio::signal::ctrl_c() => Outcome::Interrupted,
    }
}

/// The stdio floor. On timeout or Ctrl-C the session in flight is dropped,
/// which kills its server (kill_on_drop).
async fn direct_spawn(options: &SuiteOptions) -> Outcome {
    let args = options.fixture_args();
    let measure = ttfr::run(
        Scenario::DirectSpawn.name(),
        options.run_options(Scenario::DirectSpawn),
        || stdio::direct_session(&options.fixture, &args, options.timeout),
    );
    bounded(options, measure).await
}

/// Starts Berth with the scenario's configuration, measures, stops Berth
/// (also after a timeout or Ctrl-C).
async fn through_berth(scenario: Scenario, options: &SuiteOptions) -> (Outcome, Option<String>) {
    let dir = match tempfile::Builder::new().prefix("berth-bench-").tempdir() {
        Ok(dir) => dir,
        Err(error) => return (Outcome::Failed(format!("temp dir: {error}")), None),
    };
    let config = dir.path().join("berth.toml");
    if let Err(error) = std::fs::write(&config, config_text(scenario, options)) {
        return (
            Outcome::Failed(format!("writing the config: {error}")),
            None,
        );
    }
    let berth = match Berth::start(&options.berth, &config, &dir.path().join("berth.log")).await {
        Ok(Started::Running(berth)) => berth,
        Ok(Started::Refused { status, log }) => {
            let outcome = match unsupported_reason(&log) {
                Some(reason) => Outcome::Unsupported(reason),
                None => Outcome::Failed(format!(
                    "berth exited ({status}) before listening; log tail:\n{}",
                    tail(&log, 10)
                )),
            };
            return (outcome, None);
        }
        Err(error) => return (Outcome::Failed(format!("{error:#}")), None),
    };

    let url = format!("http://{}/mcp/{SERVER}", berth.addr);
    let outcome = match McpHttp::new(&url, options.timeout, None) {
        Ok(client) => {
            let measure = async {
                tokio::time::sleep(scenario.settle(options)).await;
                client.preconnect().await;
                ttfr::run(scenario.name(), options.run_options(scenario), || {
                    ttfr::http_session(&client)
                })
                .await
            };
            bounded(options, measure).await
        }
        Err(error) => Outcome::Failed(format!("{error:#}")),
    };
    let log = berth.log_path.clone();
    let stop_note = match berth.stop().await {
        Ok(status) if status.success() => None,
        Ok(status) => Some(format!(
            "berth exited with {status} after SIGTERM; log tail:\n{}",
            tail(&std::fs::read_to_string(&log).unwrap_or_default(), 10)
        )),
        Err(error) => Some(format!("{error:#}")),
    };
    (outcome, stop_note)
}

/// The generated berth.toml.
fn config_text(scenario: Scenario, options: &SuiteOptions) -> String {
    let args: Vec<String> = options
        .fixture_args()
        .iter()
        .map(|a| toml_string(a))
        .collect();
    let mut text = format!(
        "[gateway]\nlisten = \"127.0.0.1:0\"\n\n[servers.{SERVER}]\ncommand = {}\nargs = [{}]\n",
        toml_string(&options.fixture.to_string_lossy()),
        args.join(", ")
    );
    if let Some(pool) = scenario.pool_table() {
        text.push('\n');
        text.push_str(&pool);
    }
    text
}

/// A TOML basic string.
pub(crate) fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The error line of a Berth that refused a pool key, if that is why it stopped.
fn unsupported_reason(log: &str) -> Option<String> {
    log.lines()
        .find(|line| {
            let lower = line.to_ascii_lowercase();
            let refused = [
                "unknown field",
                "unknown key",
                "not supported",
                "unsupported",
            ]
            .iter()
            .any(|w| lower.contains(w));
            refused && POOL_KEYS.iter().any(|key| lower.contains(key))
        })
        .map(|line| line.trim().to_string())
}

fn ensure_file(path: &Path, name: &str, package: &str) -> Result<()> {
    if !path.is_file() {
        bail!(
            "{name} not found at {}: build it (cargo build {package}) or pass --{}",
            path.display(),
            if name == "berth" { "berth" } else { "fixture" }
        );
    }
    Ok(())
}

/// `berth ps --json` of the gateway whose data directory is `data_dir`: one
/// object per server (its pool's fields are at the top level).
pub(crate) async fn berth_ps(berth: &Path, data_dir: &Path) -> Result<Vec<Value>> {
    let output = Command::new(berth)
        .args(["ps", "--json", "--data-dir"])
        .arg(data_dir)
        .env_remove("BERTH_ADMIN_URL")
        .env_remove("BERTH_ADMIN_TOKEN")
        .stdin(Stdio::null())
        .output()
        .await
        .context("running berth ps")?;
    if !output.status.success() {
        bail!(
            "berth ps: {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    serde_json::from_slice(&output.stdout).context("berth ps --json is not a JSON list")
}

/// A running `berth serve`.
pub(crate) struct Berth {
    child: Child,
    pub(crate) addr: String,
    log_path: PathBuf,
}

pub(crate) enum Started {
    Running(Box<Berth>),
    /// Berth exited before listening: how, and its log (stderr).
    Refused {
        status: String,
        log: String,
    },
}

impl Berth {
    pub(crate) async fn start(program: &Path, config: &Path, log_path: &Path) -> Result<Started> {
        let log = std::fs::File::create(log_path).context("creating the berth log")?;
        let mut child = Command::new(program)
            .arg("serve")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;

        // Read stdout to its end (so Berth never blocks on it), reporting the
        // listening address once.
        let stdout = child.stdout.take().context("berth stdout")?;
        let mut rx = listening_address(stdout);

        enum Event {
            Listening(String),
            StdoutClosed,
            Exited,
            TimedOut,
        }
        let event = tokio::select! {
            addr = &mut rx => match addr {
                Ok(addr) => Event::Listening(addr),
                Err(_) => Event::StdoutClosed,
            },
            _ = child.wait() => Event::Exited,
            _ = tokio::time::sleep(START_LIMIT) => Event::TimedOut,
        };
        let read_log = || std::fs::read_to_string(log_path).unwrap_or_default();
        match event {
            Event::Listening(addr) => Ok(Started::Running(Box::new(Berth {
                child,
                addr,
                log_path: log_path.to_path_buf(),
            }))),
            Event::Exited | Event::StdoutClosed => {
                // Closed stdout without the line: it is on its way out.
                let status = match tokio::time::timeout(STOP_LIMIT, child.wait()).await {
                    Ok(Ok(status)) => status.to_string(),
                    Ok(Err(error)) => format!("wait failed: {error}"),
                    Err(_) => {
                        let _ = child.kill().await;
                        "closed stdout, killed".to_string()
                    }
                };
                Ok(Started::Refused {
                    status,
                    log: read_log(),
                })
            }
            Event::TimedOut => {
                let _ = child.kill().await;
                Err(anyhow!(
                    "berth did not print its listening line within {}; log:\n{}",
                    human(START_LIMIT),
                    tail(&read_log(), 10)
                ))
            }
        }
    }

    /// SIGTERM, then waits [`STOP_LIMIT`]; kills it if it is still running.
    pub(crate) async fn stop(mut self) -> Result<ExitStatus> {
        if let Some(pid) = self.child.id() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).context("pid")?);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        match tokio::time::timeout(STOP_LIMIT, self.child.wait()).await {
            Ok(status) => status.context("waiting for berth"),
            Err(_) => {
                let _ = self.child.kill().await;
                bail!(
                    "berth did not exit within {} of SIGTERM and was killed",
                    human(STOP_LIMIT)
                )
            }
        }
    }
}

/// The report: a Markdown table, then notes.
fn render(options: &SuiteOptions, results: &[ScenarioResult]) -> String {
    let mut out = format!(
        "\nNew-session time to first tool result: `berth-fixture {}`, {} sessions per scenario (+{} warm-up), sequential\n\n",
        options.fixture_args().join(" "),
        options.sessions,
        options.warmup
    );
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            let mut row = vec![
                r.scenario.name().to_string(),
                human(r.scenario.pause(options)),
            ];
            match &r.outcome {
                Outcome::Measured(s) => row.extend([
                    s.ok.to_string(),
                    s.errors.to_string(),
                    ms(s.p50_us),
                    ms(s.p90_us),
                    ms(s.p99_us),
                    ms(s.max_us),
                ]),
                Outcome::Unsupported(_) => {
                    row.push("unsupported by this berth build".into());
                    row.extend(std::iter::repeat_n("–".to_string(), 5));
                }
                Outcome::Failed(_) | Outcome::Interrupted => {
                    row.push("failed (see below)".into());
                    row.extend(std::iter::repeat_n("–".to_string(), 5));
                }
            }
            row
        })
        .collect();
    out.push_str(&markdown_table(
        &[
            "scenario", "pause", "sessions", "errors", "p50", "p90", "p99", "max",
        ],
        &rows,
    ));
    out.push('\n');
    out.push_str("- direct-spawn: the fixture spawned over stdio, no gateway; timed from spawn to the tool result\n");
    out.push_str("- other rows: from just before POST initialize to the tools/call result, through berth; DELETE untimed\n");
    for r in results {
        let name = r.scenario.name();
        match &r.outcome {
            Outcome::Measured(s) => {
                for error in &s.first_errors {
                    out.push_str(&format!("- {name}: error: {error}\n"));
                }
            }
            Outcome::Unsupported(reason) => {
                out.push_str(&format!(
                    "- {name}: unsupported by this berth build ({reason})\n"
                ));
            }
            Outcome::Failed(error) => out.push_str(&format!("- {name}: failed: {error}\n")),
            Outcome::Interrupted => out.push_str(&format!("- {name}: interrupted\n")),
        }
        if let Some(note) = &r.stop_note {
            out.push_str(&format!("- {name}: {note}\n"));
        }
    }
    out
}

fn to_json(options: &SuiteOptions, results: &[ScenarioResult]) -> Value {
    let scenarios: Vec<Value> = results
        .iter()
        .map(|r| {
            let mut row = json!({
                "scenario": r.scenario.name(),
                "pause_ms": r.scenario.pause(options).as_millis() as u64,
                "settle_ms": r.scenario.settle(options).as_millis() as u64,
                "pool": r.scenario.pool_table(),
                "stop_note": r.stop_note,
            });
            let fields = row.as_object_mut().expect("object");
            match &r.outcome {
                Outcome::Measured(summary) => {
                    fields.insert("status".into(), "ok".into());
                    fields.extend(summary.json_fields());
                }
                Outcome::Unsupported(reason) => {
                    fields.insert("status".into(), "unsupported".into());
                    fields.insert("reason".into(), reason.as_str().into());
                }
                Outcome::Failed(error) => {
                    fields.insert("status".into(), "failed".into());
                    fields.insert("reason".into(), error.as_str().into());
                }
                Outcome::Interrupted => {
                    fields.insert("status".into(), "failed".into());
                    fields.insert("reason".into(), "interrupted".into());
                }
            }
            row
        })
        .collect();
    json!({
        "benchmark": "ttfr-suite",
        "berth": options.berth,
        "fixture": options.fixture,
        "fixture_args": options.fixture_args(),
        "boot_delay_us": options.boot_delay.as_micros() as u64,
        "sessions": options.sessions,
        "warmup": options.warmup,
        "scenarios": scenarios,
    })
}

fn human(duration: Duration) -> String {
    if duration.subsec_millis() == 0 && duration.as_secs() >= 1 {
        format!("{} s", duration.as_secs())
    } else {
        format!("{} ms", duration.as_millis())
    }
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> SuiteOptions {
        SuiteOptions {
            berth: "/x/berth".into(),
            fixture: "/x/berth-fixture".into(),
            sessions: 1,
            warmup: 0,
            timeout: Duration::from_secs(1),
            boot_delay: Duration::from_millis(300),
            pause: Duration::ZERO,
            pool_pause: Duration::from_millis(400),
            standby_pause: Duration::from_millis(200),
            scenarios: vec![],
            scenario_timeout: Duration::from_secs(1),
            out: None,
        }
    }

    #[test]
    fn configs() {
        let options = options();
        assert_eq!(
            config_text(Scenario::Cold, &options),
            "[gateway]\nlisten = \"127.0.0.1:0\"\n\n[servers.echo]\ncommand = \"/x/berth-fixture\"\nargs = [\"echo\", \"--boot-delay\", \"300ms\"]\n"
        );
        let standby = config_text(Scenario::Standby, &options);
        assert!(standby.ends_with("\n[servers.echo.pool]\nmin_ready = 2\nmax_processes = 64\npreinitialize = true\nstandby_after = \"50ms\"\n"), "{standby}");
        let warm = config_text(Scenario::Warm, &options);
        assert!(warm.contains("preinitialize = false\n") && !warm.contains("standby"));
    }

    #[test]
    fn boot_delay_argument() {
        let mut options = options();
        options.boot_delay = Duration::from_micros(1500);
        assert_eq!(options.fixture_args()[2], "1500us");
    }

    #[test]
    fn toml_strings() {
        assert_eq!(toml_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(toml_string("\n"), r#""\u000A""#);
    }

    #[test]
    fn refused_pool_keys_are_unsupported() {
        let log = "error: /tmp/x/berth.toml:6:15: unknown field `pool`, expected one of `command`, `args`\n";
        assert_eq!(unsupported_reason(log).as_deref(), Some(log.trim()));
        assert!(
            unsupported_reason(
                "error: berth.toml:9:1: unknown field `standby_after`, expected one of `min_ready`"
            )
            .is_some()
        );
        assert_eq!(unsupported_reason("error: cannot bind 127.0.0.1:0"), None);
        assert_eq!(
            unsupported_reason("error: pool: min_ready must not exceed max_processes"),
            None
        );
    }
}
