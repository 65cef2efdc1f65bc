//! Peer gateways (supergateway from npm, mcp-proxy from PyPI), installed
//! into `bench/peers/`, and the gateway processes `load` starts: each in its
//! own process group, bound to 127.0.0.1, stopped with SIGTERM then SIGKILL
//! to the whole group.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// Pinned peer versions (also in `bench/peers/package.json` and
/// `bench/peers/requirements.txt`).
pub const SUPERGATEWAY_VERSION: &str = "4.0.0";
pub const MCP_PROXY_VERSION: &str = "0.13.0";
/// How long a gateway gets to accept connections.
const START_LIMIT: Duration = Duration::from_secs(30);
/// How long a gateway gets to exit after SIGTERM before its group is killed.
const STOP_LIMIT: Duration = Duration::from_secs(10);
/// How long one installer may run.
const INSTALL_LIMIT: Duration = Duration::from_secs(300);
/// The default peers directory: `bench/peers` of the source tree.
pub fn default_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../bench/peers")
}

pub fn supergateway_bin(dir: &Path) -> PathBuf {
    dir.join("node_modules/supergateway/dist/index.js")
}

pub fn mcp_proxy_bin(dir: &Path) -> PathBuf {
    dir.join(".venv/bin/mcp-proxy")
}

/// Installs both peers; returns one line per peer (`ok` or why not).
pub async fn install(dir: &Path) -> Vec<(String, Result<()>)> {
    vec![
        ("supergateway".to_string(), install_supergateway(dir).await),
        ("mcp-proxy".to_string(), install_mcp_proxy(dir).await),
    ]
}

async fn install_supergateway(dir: &Path) -> Result<()> {
    if supergateway_bin(dir).is_file() && installed_npm_version(dir) == Some(SUPERGATEWAY_VERSION) {
        return Ok(());
    }
    run_installer(
        Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(dir),
        "npm install",
    )
    .await?;
    match installed_npm_version(dir) {
        Some(SUPERGATEWAY_VERSION) => Ok(()),
        other => bail!("npm installed supergateway {other:?}, expected {SUPERGATEWAY_VERSION}"),
    }
}

fn installed_npm_version(dir: &Path) -> Option<&'static str> {
    let text = std::fs::read_to_string(dir.join("node_modules/supergateway/package.json")).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    (value["version"] == SUPERGATEWAY_VERSION).then_some(SUPERGATEWAY_VERSION)
}

async fn install_mcp_proxy(dir: &Path) -> Result<()> {
    let venv = dir.join(".venv");
    if !venv.join("bin/pip").is_file() {
        run_installer(
            Command::new("python3").arg("-m").arg("venv").arg(&venv),
            "python3 -m venv",
        )
        .await?;
    }
    if mcp_proxy_bin(dir).is_file() {
        let out = Command::new(mcp_proxy_bin(dir))
            .arg("--version")
            .output()
            .await;
        if let Ok(out) = out
            && String::from_utf8_lossy(&out.stdout).contains(MCP_PROXY_VERSION)
        {
            return Ok(());
        }
    }
    run_installer(
        Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "-r", "requirements.txt"])
            .current_dir(dir),
        "pip install",
    )
    .await
}

async fn run_installer(command: &mut Command, what: &str) -> Result<()> {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("{what}: cannot start"))?;
    let out = tokio::time::timeout(INSTALL_LIMIT, child.wait_with_output())
        .await
        .map_err(|_| anyhow!("{what}: did not finish within {INSTALL_LIMIT:?}"))?
        .with_context(|| format!("{what}: waiting"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        bail!(
            "{what}: {}: {}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
        );
    }
    Ok(())
}

/// A gateway process started by the benchmark.
pub struct Gateway {
    child: Child,
    pub pid: u32,
    pub url: String,
    pub log_path: PathBuf,
}

/// A free loopback port (bound, then released).
fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

fn spawn_in_group(command: &mut Command, log_path: &Path) -> Result<Child> {
    let log = std::fs::File::create(log_path).context("creating the gateway log")?;
    command
        .stdin(Stdio::null())
        .stderr(log)
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .context("starting the gateway")
}

impl Gateway {
    /// `berth serve --config CONFIG`; the URL of server `server`.
    pub async fn berth(program: &Path, config: &Path, server: &str, log: &Path) -> Result<Self> {
        let mut command = Command::new(program);
        command
            .arg("serve")
            .arg("--config")
            .arg(config)
            .stdout(Stdio::piped());
        let mut child = spawn_in_group(&mut command, log)?;
        let stdout = child.stdout.take().context("berth stdout")?;
        let rx = crate::suite::listening_address(stdout);
        let pid = child.id().context("berth pid")?;
        let mut gateway = Gateway {
            child,
            pid,
            url: String::new(),
            log_path: log.to_path_buf(),
        };
        let addr = tokio::select! {
            addr = rx => addr.ok(),
            _ = gateway.child.wait() => None,
            _ = tokio::time::sleep(START_LIMIT) => None,
        };
        match addr {
            Some(addr) => {
                gateway.url = format!("http://{addr}/mcp/{server}");
                Ok(gateway)
            }
            None => {
                let log = gateway.log_tail();
                gateway.stop().await;
                bail!("berth did not start listening; log: {log}")
            }
        }
    }

    /// supergateway 4.0.0, stateful Streamable HTTP, with a preload that
    /// makes it listen on 127.0.0.1 (it has no host flag).
    pub async fn supergateway(dir: &Path, stdio: &str, log: &Path) -> Result<Self> {
        let script = supergateway_bin(dir);
        if !script.is_file() {
            bail!(
                "not installed ({} missing; run berth-bench peers-install)",
                script.display()
            );
        }
        let port = free_port()?;
        let mut command = Command::new("node");
        command
            .arg("--require")
            .arg(dir.join("loopback.cjs"))
            .arg(&script)
            .args(["--stdio", stdio])
            .args(["--outputTransport", "streamableHttp", "--stateful"])
            .args(["--port", &port.to_string(), "--logLevel", "none"])
            .stdout(Stdio::null());
        let child = spawn_in_group(&mut command, log)?;
        Self::wait_port(child, port, "/mcp", log).await
    }

    /// mcp-proxy 0.13.0 from PyPI: Streamable HTTP at `/mcp`.
    pub async fn mcp_proxy(
        dir: &Path,
        fixture: &Path,
        args: &[String],
        log: &Path,
    ) -> Result<Self> {
        let bin = mcp_proxy_bin(dir);
        if !bin.is_file() {
            bail!(
                "not installed ({} missing; run berth-bench peers-install)",
                bin.display()
            );
        }
        let port = free_port()?;
        let mut command = Command::new(bin);
        command
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--log-level", "WARNING", "--"])
            .arg(fixture)
            .args(args)
            .stdout(Stdio::null());
        let child = spawn_in_group(&mut command, log)?;
        Self::wait_port(child, port, "/mcp", log).await
    }

    async fn wait_port(child: Child, port: u16, path: &str, log: &Path) -> Result<Self> {
        let pid = child.id().context("pid")?;
        let mut gateway = Gateway {
            child,
            pid,
            url: format!("http://127.0.0.1:{port}{path}"),
            log_path: log.to_path_buf(),
        };
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(gateway);
            }
            if let Ok(Some(status)) = gateway.child.try_wait() {
                bail!("exited ({status}) before listening: {}", gateway.log_tail());
            }
            if Instant::now() > deadline {
                let log = gateway.log_tail();
                gateway.stop().await;
                bail!("did not listen on port {port} within {START_LIMIT:?}: {log}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" / ")
    }

    /// SIGTERM to the group, then SIGKILL to the group after [`STOP_LIMIT`].
    /// Returns a note if the gateway had to be killed.
    pub async fn stop(mut self) -> Option<String> {
        let group = Pid::from_raw(self.pid as i32);
        let _ = killpg(group, Signal::SIGTERM);
        let note = match tokio::time::timeout(STOP_LIMIT, self.child.wait()).await {
            Ok(_) => None,
            Err(_) => Some(format!(
                "did not exit within {STOP_LIMIT:?} of SIGTERM; killed"
            )),
        };
        // Whatever is left in the group (supergateway's and mcp-proxy's
        // children live there).
        let _ = killpg(group, Signal::SIGKILL);
        let _ = self.child.kill().await;
        note
    }
}

/// Resident set size of one process (not its children), from /proc.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// CPU time one process (not its children) has used so far: utime + stime
/// from `/proc/PID/stat`, in clock ticks (see [`clock_ticks_per_sec`]).
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat)
}

/// utime (field 14) + stime (field 15) of a `/proc/PID/stat` line; the
/// command name (field 2) may hold spaces and parentheses, so fields are
/// counted after its last `)`.
pub(crate) fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// CPU time of the children one process has reaped so far (cutime +
/// cstime from `/proc/PID/stat`: each reaped child's own time plus that of
/// the descendants it reaped), in clock ticks.
pub fn children_cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(13);
    let cutime: u64 = fields.next()?.parse().ok()?;
    let cstime: u64 = fields.next()?.parse().ok()?;
    Some(cutime + cstime)
}

/// `sysconf(_SC_CLK_TCK)`: the unit of [`cpu_ticks`] (100 on Linux).
pub fn clock_ticks_per_sec() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|t| u64::try_from(t).ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_parse() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 1 0 9 1000 10";
        assert_eq!(parse_cpu_ticks(stat), Some(12));
        assert!(cpu_ticks(std::process::id()).is_some());
        assert!(children_cpu_ticks(std::process::id()).is_some());
        assert!(clock_ticks_per_sec() > 0);
    }

    #[test]
    fn own_rss_is_readable() {
        let kib = rss_kib(std::process::id()).expect("VmRSS");
        assert!(kib > 0);
    }

    #[test]
    fn pinned_versions_match_the_peer_files() {
        let dir = default_dir();
        let package = std::fs::read_to_string(dir.join("package.json")).unwrap();
        assert!(package.contains(&format!("\"supergateway\": \"{SUPERGATEWAY_VERSION}\"")));
        let requirements = std::fs::read_to_string(dir.join("requirements.txt")).unwrap();
        assert_eq!(
            requirements.trim(),
            format!("mcp-proxy=={MCP_PROXY_VERSION}")
        );
    }
}
