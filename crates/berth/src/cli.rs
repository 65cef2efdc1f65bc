//! The operator's commands over the admin API: `ps`, `logs`, `restart`, `reload`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use berth_edge::{ReloadReport, ServerStatus};
use futures::StreamExt;

/// Where the admin API is and how to authenticate to it.
#[derive(clap::Args, Debug)]
pub struct AdminArgs {
    /// Berth's data directory, where a running gateway writes admin.json.
    #[arg(long, env = "BERTH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Admin API URL (instead of reading admin.json).
    #[arg(long, env = "BERTH_ADMIN_URL")]
    pub admin_url: Option<String>,
    /// Admin token (instead of reading admin.json).
    #[arg(long, env = "BERTH_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
}

/// Where Berth's data directory is, for commands that work on it directly.
#[derive(clap::Args, Debug)]
pub struct DataDirArgs {
    /// Berth's data directory.
    #[arg(long, env = "BERTH_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Take the data directory from this configuration file (gateway.data_dir).
    #[arg(long, short, global = true)]
    pub config: Option<PathBuf>,
}

impl DataDirArgs {
    pub fn resolve(&self) -> anyhow::Result<PathBuf> {
        if let Some(dir) = &self.data_dir {
            return Ok(dir.clone());
        }
        match &self.config {
            Some(path) => Ok(crate::config::Config::load(path)?.gateway.data_dir),
            None => Ok(crate::config::default_data_dir()),
        }
    }
}

/// What a running gateway writes to `<data_dir>/admin.json`.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct AdminEndpoint {
    pub url: String,
    pub token: String,
}

impl AdminEndpoint {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("admin.json")
    }

    /// Writes the file readable by its owner only (the token grants
    /// control), atomically: a CLI reading it never sees half a token.
    pub fn write(&self, data_dir: &Path) -> anyhow::Result<PathBuf> {
        berth_files::create_private_dir(data_dir)
            .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
        let path = Self::path(data_dir);
        berth_files::write_private(&path, serde_json::to_string_pretty(self)?.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }
}

pub struct AdminClient {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl AdminClient {
    pub fn new(args: &AdminArgs) -> anyhow::Result<AdminClient> {
        let (url, token) = match (&args.admin_url, &args.admin_token) {
            (Some(url), Some(token)) => (url.clone(), token.clone()),
            _ => {
                let data_dir = args
                    .data_dir
                    .clone()
                    .unwrap_or_else(crate::config::default_data_dir);
                let path = AdminEndpoint::path(&data_dir);
                let text = std::fs::read_to_string(&path).with_context(|| {
                    format!("cannot read {} — is `berth serve` running with this data directory? (or pass --admin-url and --admin-token)", path.display())
                })?;
                let endpoint: AdminEndpoint = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not valid", path.display()))?;
                (
                    args.admin_url.clone().unwrap_or(endpoint.url),
                    args.admin_token.clone().unwrap_or(endpoint.token),
                )
            }
        };
        Ok(AdminClient {
            http: reqwest::Client::new(),
            url: url.trim_end_matches('/').to_string(),
            token,
        })
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| {
                format!(
                    "cannot reach the admin API at {} — is `berth serve` running?",
                    self.url
                )
            })?;
        if !response.status().is_success() {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            let message = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or(body);
            bail!("admin API answered {status}: {message}");
        }
        Ok(response)
    }

    /// POSTs `body` as JSON and decodes the JSON answer.
    pub async fn post_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> anyhow::Result<T> {
        let response = self
            .send(self.http.post(format!("{}{path}", self.url)).json(body))
            .await?;
        Ok(response.json::<T>().await?)
    }

    pub async fn status(&self) -> anyhow::Result<Vec<ServerStatus>> {
        #[derive(serde::Deserialize)]
        struct Status {
            servers: Vec<ServerStatus>,
        }
        let response = self
            .send(self.http.get(format!("{}/v1/status", self.url)))
            .await?;
        Ok(response.json::<Status>().await?.servers)
    }
}

pub async fn ps(args: &AdminArgs, json: bool) -> anyhow::Result<()> {
    let client = AdminClient::new(args)?;
    let servers = client.status().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&servers)?);
        return Ok(());
    }
    // The name column fits the longest name: long names keep the table aligned.
    let w = servers
        .iter()
        .map(|s| s.pool.server.len())
        .max()
        .unwrap_or(0)
        .max(16);
    println!(
        "{:<w$} {:<8} {:>8} {:>6} {:>6} {:>7} {:>6} {:>8} {:>8} {:>8} {:>9} {:>9}",
        "SERVER",
        "STATUS",
        "SESSIONS",
        "READY",
        "STANDBY",
        "LEASED",
        "OTHER",
        "RESTARTS",
        "CRASHES",
        "CALLS",
        "P50",
        "P99"
    );
    for s in &servers {
        let count = |state: berth_fleet::ProcState| {
            s.pool.processes.iter().filter(|p| p.state == state).count()
        };
        use berth_fleet::ProcState::*;
        let other = s.pool.processes.len() - count(Ready) - count(Standby) - count(Leased);
        let ms = |v: Option<f64>| v.map(|v| format!("{v:.2}ms")).unwrap_or_else(|| "-".into());
        println!(
            "{:<w$} {:<8} {:>8} {:>6} {:>6} {:>7} {:>6} {:>8} {:>8} {:>8} {:>9} {:>9}",
            s.pool.server,
            s.pool.status,
            s.sessions,
            count(Ready),
            count(Standby),
            count(Leased),
            other,
            s.pool.restarts,
            s.pool.crashes,
            s.pool.calls,
            ms(s.pool.p50_ms),
            ms(s.pool.p99_ms)
        );
        if let Some(failure) = &s.pool.failure {
            println!("  ! {failure}");
        }
        match (&s.owner, s.latency_budget_ms) {
            (None, None) => {}
            (owner, budget) => println!(
                "  owner: {} · latency budget: {}",
                owner.as_deref().unwrap_or("-"),
                budget.map_or("-".into(), |ms| format!("{ms:.0}ms p99"))
            ),
        }
        if let Some(last) = &s.pool.last_exit {
            println!("  last crash: {last}");
        }
        if s.pool.stray_lines > 0 {
            println!(
                "  stray: {} server line(s) Berth could route nowhere or no reader took (see berth logs)",
                s.pool.stray_lines
            );
        }
        if s.log_lines_unwritten > 0 {
            println!(
                "  log file: {} line(s) not written (the disk did not keep up, or writing failed)",
                s.log_lines_unwritten
            );
        }
        if s.dropped_messages > 0 {
            println!(
                "  dropped: {} server message(s) slow readers never got (replay buffers full)",
                s.dropped_messages
            );
        }
        let boot = s
            .pool
            .ready_time_ms
            .map(|ms| format!(", boot {ms:.0} ms"))
            .unwrap_or_default();
        println!(
            "  ready target: {} ({}; {:.1} sessions/s{boot})",
            s.pool.ready_target,
            s.pool.target_reason.as_str(),
            s.pool.arrival_rate
        );
        let era = match (&s.era, &s.era_reason) {
            (Some(era), Some(why)) => format!("{era} ({why})"),
            (Some(era), None) => era.clone(),
            (None, _) => "probing".into(),
        };
        println!("  era: {era}");
        print_processes(&s.pool.processes);
        if let Some(pool) = s
            .stateless
            .as_ref()
            .filter(|p| !p.processes.is_empty() || p.calls > 0)
        {
            println!(
                "  stateless (2026-07-28) pool: {} calls, p50 {}, p99 {}",
                pool.calls,
                ms(pool.p50_ms),
                ms(pool.p99_ms)
            );
            if let Some(failure) = &pool.failure {
                println!("  ! {failure}");
            }
            print_processes(&pool.processes);
        }
    }
    Ok(())
}

fn print_processes(processes: &[berth_fleet::ProcessReport]) {
    for p in processes {
        let state = p.state.as_str();
        if let Some(endpoint) = &p.endpoint {
            // An endpoint session: which members it holds open.
            let members: Vec<String> = endpoint
                .members
                .iter()
                .map(|m| match (m.open, m.pid) {
                    (true, Some(pid)) if !berth_fleet::is_remote_number(pid) => {
                        format!("{} (open, pid {pid})", m.server)
                    }
                    (true, _) => format!("{} (open)", m.server),
                    (false, _) => format!("{} (not opened)", m.server),
                })
                .collect();
            println!(
                "  session {:<4} {:<9} {:>8.1}s  members: {}",
                p.pid - (1 << 30),
                p.state.as_str(),
                p.age_ms as f64 / 1000.0,
                members.join(", ")
            );
            continue;
        }
        if let Some(remote) = &p.remote {
            // A connection to a remote server: where, and how it fares.
            let latency = remote
                .mean_latency_ms
                .map(|ms| format!("{ms:.1} ms mean"))
                .unwrap_or_else(|| "no requests yet".into());
            let status = remote
                .last_status
                .map(|s| format!("last HTTP {s}"))
                .unwrap_or_else(|| "no answer yet".into());
            println!(
                "  conn {:<7} {:<9} {:>8.1}s  {}  session {}  {} requests, {} errors, {latency}, {status}{}{}",
                p.pid - (1 << 30),
                state,
                p.age_ms as f64 / 1000.0,
                remote.url,
                remote.session.as_deref().unwrap_or("-"),
                remote.requests,
                remote.errors,
                if remote.reinitialized > 0 {
                    format!(", re-initialized {}x", remote.reinitialized)
                } else {
                    String::new()
                },
                remote
                    .last_error
                    .as_deref()
                    .map(|e| format!("\n      last error: {e}"))
                    .unwrap_or_default(),
            );
            continue;
        }
        println!(
            "  pid {:<8} {:<9} {:>8.1}s  generation {}",
            p.pid,
            state,
            p.age_ms as f64 / 1000.0,
            p.generation
        );
    }
}

pub async fn logs(
    args: &AdminArgs,
    server: &str,
    follow: bool,
    lines: usize,
) -> anyhow::Result<()> {
    let client = AdminClient::new(args)?;
    let url = format!(
        "{}/v1/servers/{server}/logs?lines={lines}&follow={follow}",
        client.url
    );
    let response = client.send(client.http.get(url)).await?;
    let mut body = response.bytes_stream();
    let mut out = std::io::stdout();
    while let Some(chunk) = body.next().await {
        out.write_all(&chunk?)?;
        out.flush()?;
    }
    Ok(())
}

pub async fn restart(args: &AdminArgs, server: &str) -> anyhow::Result<()> {
    let client = AdminClient::new(args)?;
    client
        .send(
            client
                .http
                .post(format!("{}/v1/servers/{server}/restart", client.url)),
        )
        .await?;
    println!("{server}: restarting (new sessions get new processes; existing sessions drain)");
    Ok(())
}

pub async fn reload(args: &AdminArgs) -> anyhow::Result<()> {
    let client = AdminClient::new(args)?;
    let report: ReloadReport = client
        .send(client.http.post(format!("{}/v1/reload", client.url)))
        .await?
        .json()
        .await?;
    print_reload(&report);
    Ok(())
}

pub fn print_reload(report: &ReloadReport) {
    let list = |v: &[String]| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.join(", ")
        }
    };
    println!(
        "reloaded: added {}; changed {}; removed {}; unchanged {}",
        list(&report.added),
        list(&report.changed),
        list(&report.removed),
        list(&report.unchanged)
    );
}
