//! Test harness: runs the real `berth` binary on a loopback port and talks to
//! it over HTTP, the way an operator and an agent would.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue};

pub const ACCEPT_BOTH: &str = "application/json, text/event-stream";

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

pub fn berth_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_berth"))
}

/// The misbehaving and conformance fixture servers (crate `berth-fixtures`).
pub fn fixture_bin() -> PathBuf {
    let path = berth_bin().with_file_name("berth-fixture");
    assert!(
        path.exists(),
        "{} is missing: build the workspace (cargo build --workspace, or run the README's test command)",
        path.display()
    );
    path
}

/// `tests/node/node_modules`, installed by `tests/setup.sh`.
pub fn node_modules() -> PathBuf {
    let dir = repo().join("tests/node/node_modules");
    assert!(
        dir.join("@modelcontextprotocol/sdk").exists(),
        "{} is missing: run tests/setup.sh (the README's test command runs it)",
        dir.display()
    );
    dir
}

pub fn python() -> PathBuf {
    let py = repo().join("tests/python/.venv/bin/python");
    assert!(
        py.exists(),
        "{} is missing: run tests/setup.sh (the README's test command runs it)",
        py.display()
    );
    py
}

/// The Python of tests/python-modern/.venv (the `mcp` 2.3.0 SDK), installed by tests/setup.sh.
pub fn python_modern() -> PathBuf {
    let py = repo().join("tests/python-modern/.venv/bin/python");
    assert!(
        py.exists(),
        "{} is missing: run tests/setup.sh (it installs the 2026-07-28 SDK clients)",
        py.display()
    );
    py
}

/// A `[servers.NAME]` table running the fixture in `mode`.
pub fn fixture_server(name: &str, mode: &str) -> String {
    format!(
        "[servers.{name}]\ncommand = {:?}\nargs = [{mode:?}]\n",
        fixture_bin().display().to_string()
    )
}

/// A `[servers.NAME]` table running an npm reference server from tests/node with node.
pub fn npm_server(name: &str, package: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let main = node_modules().join(package).join("dist/index.js");
    assert!(main.exists(), "{} is missing", main.display());
    let mut args_toml = vec![format!("{:?}", main.display().to_string())];
    args_toml.extend(args.iter().map(|a| format!("{a:?}")));
    let env_toml: Vec<String> = env.iter().map(|(k, v)| format!("{k} = {v:?}")).collect();
    format!(
        "[servers.{name}]\ncommand = \"node\"\nargs = [{}]\nenv = {{ {} }}\n",
        args_toml.join(", "),
        env_toml.join(", ")
    )
}

/// A config file: `[gateway]` on a free loopback port with its data in `dir`.
fn config_text(dir: &Path, gateway: &str, servers: &str) -> String {
    format!(
        "[gateway]\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\n{gateway}\n\n{servers}",
        dir.display().to_string()
    )
}

/// A running gateway. Dropping it stops it (SIGTERM, then SIGKILL).
pub struct Berth {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl Berth {
    /// Starts `berth serve` with `[gateway]` lines `gateway` (listen is set
    /// to a free loopback port) and the given server tables.
    pub fn start(gateway: &str, servers: &str) -> Berth {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("berth.toml");
        std::fs::write(&config, config_text(dir.path(), gateway, servers)).expect("write config");
        let berth = Berth::spawn(
            &["serve", "--config", config.to_str().expect("utf-8 path")],
            dir,
        );
        berth.wait_for_era_probes(Duration::from_secs(30));
        berth
    }

    /// `berth ps --json`: one object per server.
    pub fn status(&self) -> Vec<serde_json::Value> {
        let (ok, out) = self.cli(&["ps", "--json"]);
        assert!(ok, "berth ps --json failed: {out}");
        let json = out.find('[').map_or("", |i| &out[i..]);
        serde_json::from_str(json).unwrap_or_else(|e| panic!("berth ps --json ({e}): {out}"))
    }

    /// Waits until `berth logs SERVER` shows `needle` at least `count` times.
    pub fn wait_for_log(&self, server: &str, needle: &str, count: usize, within: Duration) {
        let deadline = std::time::Instant::now() + within;
        loop {
            let (_, logs) = self.cli(&["logs", server, "--lines", "500"]);
            if logs.matches(needle).count() >= count {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "`{needle}` did not appear {count} time(s) in the log of `{server}` within {within:?}: {logs}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until every server's era probe (a throwaway process started
    /// with the gateway) is done, so tests that count processes start from
    /// a settled fleet.
    pub fn wait_for_era_probes(&self, within: Duration) {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            let (ok, out) = self.cli(&["ps", "--json"]);
            let json = out.find('[').map_or("", |i| &out[i..]);
            let Ok(servers) = serde_json::from_str::<Vec<serde_json::Value>>(json) else {
                if !ok {
                    return;
                }
                continue;
            };
            if servers.iter().all(|s| !s["era"].is_null()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "era probes did not finish within {within:?}; log:\n{}",
            self.log()
        );
    }

    /// Starts `berth` with raw arguments (e.g. `serve --listen ...` on the embedded default).
    pub fn spawn(args: &[&str], dir: tempfile::TempDir) -> Berth {
        let log = std::fs::File::create(dir.path().join("berth.log")).expect("log file");
        let mut child = Command::new(berth_bin())
            .args(args)
            .env("BERTH_LOG", "info,berth_fleet=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn berth");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("Berth is listening on http://") {
                    let _ = tx.send(rest.trim().to_string());
                }
            }
        });
        let mut berth = Berth {
            child: Some(child),
            addr: "127.0.0.1:0".parse().unwrap(),
            dir,
        };
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => berth.addr = addr.parse().expect("listen address"),
            Err(_) => panic!("berth did not start within 30 s; log:\n{}", berth.log()),
        }
        berth
    }

    /// Rewrites the config file (for `berth reload` / SIGHUP).
    pub fn rewrite_config(&self, gateway: &str, servers: &str) {
        let text = config_text(self.dir.path(), gateway, servers);
        std::fs::write(self.dir.path().join("berth.toml"), text).expect("rewrite config");
    }

    /// Runs a `berth` CLI command against this gateway; returns (success, output).
    pub fn cli(&self, args: &[&str]) -> (bool, String) {
        let mut cmd = Command::new(berth_bin());
        cmd.args(args)
            .arg("--data-dir")
            .arg(self.dir.path())
            .env_remove("BERTH_ADMIN_URL")
            .env_remove("BERTH_ADMIN_TOKEN");
        run_with_timeout(&mut cmd, Duration::from_secs(20))
    }

    /// An access token from this gateway's built-in issuer for `client` to
    /// call `server` with `scope` (`berth token create`).
    pub fn cli_token(&self, client: &str, server: &str, scope: &str) -> String {
        let (ok, out) = self.cli(&[
            "token", "create", "--client", client, "--server", server, "--scope", scope,
        ]);
        assert!(ok, "berth token create: {out}");
        out.lines()
            .find(|l| l.starts_with("ey"))
            .unwrap_or_else(|| panic!("no token in {out}"))
            .to_string()
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn url(&self, server: &str) -> String {
        format!("http://{}/mcp/{server}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The gateway's stderr so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("berth.log")).unwrap_or_default()
    }

    /// Direct children of the gateway: (pid, state letter from /proc).
    pub fn children(&self) -> Vec<(u32, char)> {
        children_of(self.pid())
    }

    /// Waits until the gateway has exactly `n` children and none is a zombie.
    pub fn wait_for_children(&self, n: usize, within: Duration) -> Vec<(u32, char)> {
        let deadline = Instant::now() + within;
        loop {
            let kids = self.children();
            if kids.len() == n && kids.iter().all(|(_, s)| *s != 'Z') {
                return kids;
            }
            if Instant::now() > deadline {
                panic!(
                    "expected {n} live children, found {kids:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the gateway gracefully (SIGTERM, at most `within`) and starts
    /// it again on the same config and data dir.
    pub fn restart(mut self, within: Duration) -> Berth {
        let mut child = self.child.take().expect("running");
        let status = terminate(&mut child, within).expect("berth did not exit after SIGTERM");
        assert!(
            status.success(),
            "berth exited with {status}; log:\n{}",
            self.log()
        );
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
        let config = dir.path().join("berth.toml");
        let berth = Berth::spawn(
            &["serve", "--config", config.to_str().expect("utf-8 path")],
            dir,
        );
        berth.wait_for_era_probes(Duration::from_secs(30));
        berth
    }

    /// SIGTERM, then waits for exit (at most `within`).
    pub fn stop(mut self, within: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        terminate(&mut child, within).expect("berth did not exit after SIGTERM")
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take()
            && terminate(&mut child, Duration::from_secs(10)).is_none()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn terminate(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Processes whose parent is `pid`, with their state (R, S, Z...).
pub fn children_of(pid: u32) -> Vec<(u32, char)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may contain spaces, so split after the last ')'.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let mut fields = rest.split(' ');
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid = fields.next().and_then(|s| s.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push((child, state));
        }
    }
    out
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(str::to_owned)
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// Runs a command with a deadline; returns (success, stdout+stderr).
pub fn run_with_timeout(cmd: &mut Command, within: Duration) -> (bool, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let out_path = dir.path().join("out");
    let out = std::fs::File::create(&out_path).expect("out file");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(out)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let deadline = Instant::now() + within;
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        if Instant::now() > deadline {
            // Kill the whole group: npx and node spawn children of their own.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    match status {
        Some(status) => (status.success(), output),
        None => (false, format!("{output}\n[timed out after {within:?}]")),
    }
}

use std::os::unix::process::CommandExt;

/// A raw HTTP client for MCP, for tests that check status codes and headers.
pub struct Raw {
    pub http: reqwest::Client,
    pub url: String,
    pub session: Option<String>,
    /// Sent as `Authorization: Bearer <token>` when set.
    pub token: Option<String>,
}

pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }

    /// The JSON-RPC error message of the body.
    pub fn error_message(&self) -> String {
        self.json()["error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message in {}", self.body))
            .to_string()
    }

    pub fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The JSON messages of an SSE body (data lines of each event, joined).
    pub fn sse_messages(&self) -> Vec<serde_json::Value> {
        sse_messages(&self.body)
    }

    /// The JSON-RPC answer (result or error) the reply carries, whether it
    /// came as JSON or in an SSE stream; `null` when there is none.
    pub fn answer(&self) -> serde_json::Value {
        if self.content_type().starts_with("text/event-stream") {
            self.sse_messages()
                .into_iter()
                .find(|m| {
                    m.get("id").is_some() && (m.get("result").is_some() || m.get("error").is_some())
                })
                .unwrap_or_default()
        } else {
            serde_json::from_str(&self.body).unwrap_or_default()
        }
    }
}

pub fn sse_messages(body: &str) -> Vec<serde_json::Value> {
    body.split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
                .collect();
            let joined = data.join("\n");
            (!joined.trim().is_empty())
                .then(|| serde_json::from_str(&joined).expect("SSE data is JSON"))
        })
        .collect()
}

pub fn initialize_body(version: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":0,"method":"initialize","params":{{"protocolVersion":"{version}","capabilities":{{"sampling":{{}},"elicitation":{{}}}},"clientInfo":{{"name":"berth-tests","version":"1"}}}}}}"#
    )
}

impl Raw {
    pub fn new(url: String) -> Raw {
        Raw {
            http: reqwest::Client::new(),
            url,
            session: None,
            token: None,
        }
    }

    /// POSTs `body` with the usual MCP headers plus `extra` (which may override them).
    pub async fn post_with(&self, body: impl Into<reqwest::Body>, extra: &[(&str, &str)]) -> Reply {
        let resp = self.open_with(body, extra).await;
        let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
        Reply {
            status,
            headers,
            body: resp.text().await.unwrap_or_default(),
        }
    }

    /// POSTs `body` with the usual MCP headers; the caller reads the answer
    /// as it streams (`chunk()`).
    pub async fn open(&self, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.open_with(body, &[]).await
    }

    async fn open_with(
        &self,
        body: impl Into<reqwest::Body>,
        extra: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut headers = HeaderMap::new();
        headers.insert("accept", HeaderValue::from_static(ACCEPT_BOTH));
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        if let Some(s) = &self.session {
            headers.insert("mcp-session-id", HeaderValue::from_str(s).unwrap());
        }
        if let Some(t) = &self.token {
            headers.insert(
                "authorization",
                HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
            );
        }
        for (k, v) in extra {
            headers.insert(
                reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        self.http
            .post(&self.url)
            .headers(headers)
            .body(body)
            .send()
            .await
            .expect("POST")
    }

    pub async fn post(&self, body: &str) -> Reply {
        self.post_with(body.to_string(), &[]).await
    }

    /// initialize + notifications/initialized; remembers the session id.
    pub async fn initialize(&mut self, version: &str) -> serde_json::Value {
        self.session = None;
        let reply = self.post(&initialize_body(version)).await;
        assert_eq!(reply.status, 200, "initialize failed: {}", reply.body);
        let session = reply
            .headers
            .get("mcp-session-id")
            .expect("session header")
            .to_str()
            .unwrap()
            .to_string();
        self.session = Some(session);
        let ack = self
            .post(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
            .await;
        assert_eq!(ack.status, 202, "initialized: {}", ack.body);
        // The initialize answer may come as JSON or as SSE.
        if reply.content_type().starts_with("text/event-stream") {
            reply.sse_messages().pop().expect("initialize result")
        } else {
            reply.json()
        }
    }

    /// A tools/call; returns the reply as-is.
    pub async fn call_tool(&self, id: u64, name: &str, arguments: serde_json::Value) -> Reply {
        let body = serde_json::json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":name,"arguments":arguments}});
        self.post(&body.to_string()).await
    }

    pub async fn get(&self, extra: &[(&str, &str)]) -> reqwest::Response {
        let mut req = self
            .http
            .get(&self.url)
            .header("accept", "text/event-stream");
        if let Some(s) = &self.session {
            req = req.header("mcp-session-id", s);
        }
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        req.send().await.expect("GET")
    }

    pub async fn delete(&self) -> u16 {
        let mut req = self.http.delete(&self.url);
        if let Some(s) = &self.session {
            req = req.header("mcp-session-id", s);
        }
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        req.send().await.expect("DELETE").status().as_u16()
    }
}

/// The 2026-07-28 revision's version string.
pub const MODERN: &str = "2026-07-28";

/// A 2026-07-28 request: `params` with the `_meta` envelope added.
pub fn modern_body(id: serde_json::Value, method: &str, params: serde_json::Value) -> String {
    let mut params = params;
    let meta = params
        .as_object_mut()
        .expect("params is an object")
        .entry("_meta")
        .or_insert_with(|| serde_json::json!({}));
    meta["io.modelcontextprotocol/protocolVersion"] = MODERN.into();
    meta["io.modelcontextprotocol/clientCapabilities"] = serde_json::json!({});
    meta["io.modelcontextprotocol/clientInfo"] =
        serde_json::json!({"name": "berth-tests", "version": "1"});
    serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()
}

/// The headers that mirror a 2026-07-28 request (`name`: Mcp-Name, if any).
pub fn modern_headers(method: &str, name: Option<&str>) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        ("mcp-protocol-version", MODERN.to_string()),
        ("mcp-method", method.to_string()),
    ];
    if let Some(name) = name {
        headers.push(("mcp-name", name.to_string()));
    }
    headers
}

impl Raw {
    /// A well-formed 2026-07-28 request (headers mirroring the body).
    pub async fn modern(
        &self,
        id: serde_json::Value,
        method: &str,
        params: serde_json::Value,
    ) -> Reply {
        let name = params
            .get("name")
            .or_else(|| params.get("uri"))
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        let headers = modern_headers(method, name.as_deref());
        let extra: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.post_with(modern_body(id, method, params), &extra)
            .await
    }
}

/// A `[servers.NAME]` table running a PyPI reference server from tests/python/.venv
/// by its console script (e.g. `mcp-server-time`), as an operator would.
pub fn pypi_server(name: &str, script: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let bin = python().with_file_name(script);
    assert!(
        bin.exists(),
        "{} is missing: run tests/setup.sh (tests/python/requirements.txt lists it)",
        bin.display()
    );
    let args_toml: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
    let env_toml: Vec<String> = env.iter().map(|(k, v)| format!("{k} = {v:?}")).collect();
    format!(
        "[servers.{name}]\ncommand = {:?}\nargs = [{}]\nenv = {{ {} }}\n",
        bin.display().to_string(),
        args_toml.join(", "),
        env_toml.join(", ")
    )
}

/// How to start a gateway when [`Berth::start`] is not enough: extra
/// variables in Berth's own environment, a data directory somewhere else
/// than the system temp dir, or Berth run as another user.
#[derive(Default)]
pub struct Launch<'a> {
    /// `[gateway]` lines, as for [`Berth::start`].
    pub gateway: &'a str,
    /// Server tables, as for [`Berth::start`].
    pub servers: &'a str,
    /// Set in Berth's environment (on top of the test's own).
    pub env: &'a [(&'a str, &'a str)],
    /// The data directory is created in this directory (default: the
    /// system temp dir).
    pub data_parent: Option<&'a Path>,
    /// Runs Berth as this (uid, gid) with no supplementary groups, through
    /// util-linux `setpriv`; the data directory and the config file are
    /// handed to that user first.
    pub user: Option<(u32, u32)>,
    /// Opens this directory and leaves it open in Berth as descriptor
    /// [`INHERITED_FD`], not close-on-exec, as a careless parent (or a
    /// service manager) could.
    pub inherited_dir: Option<&'a Path>,
}

/// The descriptor number [`Launch::inherited_dir`] has in Berth.
pub const INHERITED_FD: i32 = 97;

impl Berth {
    /// Starts `berth serve` as `launch` says and waits for its era probes.
    pub fn launch(launch: Launch) -> Berth {
        let mut builder = tempfile::Builder::new();
        builder.prefix("berth-");
        let dir = match launch.data_parent {
            Some(parent) => {
                std::fs::create_dir_all(parent).expect("data dir parent");
                builder.tempdir_in(parent)
            }
            None => builder.tempdir(),
        }
        .expect("temp dir");
        let config = dir.path().join("berth.toml");
        std::fs::write(
            &config,
            config_text(dir.path(), launch.gateway, launch.servers),
        )
        .expect("write config");
        let log_path = dir.path().join("berth.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut cmd = match launch.user {
            Some((uid, gid)) => {
                for path in [dir.path(), &config, &log_path] {
                    std::os::unix::fs::chown(path, Some(uid), Some(gid))
                        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
                }
                let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"]
                    .into_iter()
                    .find(|p| Path::new(p).exists())
                    .expect("setpriv (util-linux) is needed to run Berth as another user");
                let mut cmd = Command::new(setpriv);
                cmd.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg("--")
                    .arg(berth_bin());
                cmd
            }
            None => Command::new(berth_bin()),
        };
        cmd.args(["serve", "--config", config.to_str().expect("utf-8 path")])
            .env("BERTH_LOG", "info,berth_fleet=debug")
            .envs(launch.env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        let inherited = launch.inherited_dir.map(|path| {
            std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
        });
        if let Some(file) = &inherited {
            use std::os::fd::{AsRawFd, BorrowedFd};
            let raw = file.as_raw_fd();
            // SAFETY: only dup2 runs between fork and exec; `file` outlives the spawn.
            unsafe {
                cmd.pre_exec(move || {
                    let copy = nix::unistd::dup2_raw(BorrowedFd::borrow_raw(raw), INHERITED_FD)?;
                    // The copy must stay open (and dup2 left it inheritable).
                    std::mem::forget(copy);
                    Ok(())
                });
            }
        }
        let berth = Berth::spawn_command(cmd, dir);
        drop(inherited);
        berth.wait_for_era_probes(Duration::from_secs(30));
        berth
    }

    /// Spawns `cmd` (a `berth serve` that writes its stderr where it likes
    /// and its stdout to a pipe) and waits for its listen address.
    fn spawn_command(mut cmd: Command, dir: tempfile::TempDir) -> Berth {
        let mut child = cmd.spawn().expect("spawn berth");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("Berth is listening on http://") {
                    let _ = tx.send(rest.trim().to_string());
                }
            }
        });
        let mut berth = Berth {
            child: Some(child),
            addr: "127.0.0.1:0".parse().unwrap(),
            dir,
        };
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => berth.addr = addr.parse().expect("listen address"),
            Err(_) => panic!("berth did not start within 30 s; log:\n{}", berth.log()),
        }
        berth
    }

    /// `berth secret set NAME` with `value` on stdin, in this gateway's data dir.
    pub fn set_secret(&self, name: &str, value: &str) {
        self.store_secret(name, None, value);
    }

    /// `berth secret set NAME --principal P`: `principal`'s own value.
    pub fn set_secret_for(&self, name: &str, principal: &str, value: &str) {
        self.store_secret(name, Some(principal), value);
    }

    fn store_secret(&self, name: &str, principal: Option<&str>, value: &str) {
        use std::io::Write;
        let mut cmd = Command::new(berth_bin());
        cmd.args(["secret", "set", name]);
        if let Some(principal) = principal {
            cmd.args(["--principal", principal]);
        }
        let mut child = cmd
            .arg("--data-dir")
            .arg(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("berth secret set");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{value}\n").as_bytes())
            .expect("write the secret");
        let out = child.wait_with_output().expect("berth secret set");
        assert!(
            out.status.success(),
            "berth secret set: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The config file [`Berth::start`] and [`Berth::launch`] write.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("berth.toml")
    }

    /// `berth logs SERVER` (its last 500 lines), whatever the outcome.
    pub fn server_log(&self, server: &str) -> String {
        self.cli(&["logs", server, "--lines", "500"]).1
    }
}

/// Every descendant of `pid` (children, their children...), from /proc.
pub fn descendants_of(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut queue = vec![pid];
    while let Some(parent) = queue.pop() {
        for (child, _) in children_of(parent) {
            if !found.contains(&child) {
                found.push(child);
                queue.push(child);
            }
        }
    }
    found
}

/// Host processes whose command line (argv joined with spaces) contains `needle`.
pub fn processes_with_cmdline(needle: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(needle) {
            out.push((pid, cmdline.trim_end().to_string()));
        }
    }
    out
}

/// Whether `pid` is frozen: stopped by SIGSTOP (`T`), or in a cgroup whose
/// freezer says FROZEN (a sandboxed server's standby).
pub fn is_frozen(pid: u32) -> bool {
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(") ").next().and_then(|r| r.chars().next()));
    if state == Some('T') {
        return true;
    }
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    cgroups.lines().any(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next(), parts.next());
        let (Some(controllers), Some(path)) = (controllers, path) else {
            return false;
        };
        let file = if controllers == "freezer" {
            format!("/sys/fs/cgroup/freezer{path}/freezer.state")
        } else if controllers.is_empty() {
            format!("/sys/fs/cgroup{path}/cgroup.freeze")
        } else {
            return false;
        };
        std::fs::read_to_string(file).is_ok_and(|s| s.trim() == "FROZEN" || s.trim() == "1")
    })
}

/// A new API key for `name`: (the key, its `[[auth.api_keys]]` table).
pub fn api_key(name: &str) -> (String, String) {
    let (ok, out) = run_with_timeout(
        std::process::Command::new(berth_bin()).args([
            "key",
            "create",
            name,
            "--scope",
            "tools:call",
        ]),
        Duration::from_secs(10),
    );
    assert!(ok, "{out}");
    let key = out
        .lines()
        .find(|l| l.starts_with("bk_"))
        .expect("key")
        .to_string();
    let hash = out
        .lines()
        .find_map(|l| l.strip_prefix("hash = "))
        .expect("hash line")
        .to_string();
    let table =
        format!("[[auth.api_keys]]\nname = {name:?}\nhash = {hash}\nscopes = [\"tools:call\"]\n");
    (key, table)
}

/// The admin endpoint the gateway wrote to its data dir: (URL without a
/// trailing slash, admin token).
pub fn admin_endpoint(berth: &Berth) -> (String, String) {
    let text = std::fs::read_to_string(berth.dir.path().join("data/admin.json"))
        .or_else(|_| std::fs::read_to_string(berth.dir.path().join("admin.json")))
        .expect("admin.json");
    let admin: serde_json::Value = serde_json::from_str(&text).expect("admin.json is JSON");
    (
        admin["url"]
            .as_str()
            .expect("url")
            .trim_end_matches('/')
            .to_owned(),
        admin["token"].as_str().expect("token").to_owned(),
    )
}

/// A remote MCP server for Berth to proxy: `tests/python/remote_server.py`
/// (or the SDK 2.3 reference server); killed when dropped.
pub struct Upstream {
    child: Option<std::process::Child>,
    pub url: String,
    args: Vec<String>,
}

impl Upstream {
    pub fn start(args: &[&str]) -> Upstream {
        let mut all = vec![
            python().display().to_string(),
            repo()
                .join("tests/python/remote_server.py")
                .display()
                .to_string(),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        Self::start_program(all)
    }

    /// The SDK 2.3 reference server: both eras on one endpoint. (It binds
    /// the port it is given: a free one is picked here.)
    pub fn modern() -> Upstream {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        Self::start_program(vec![
            python_modern().display().to_string(),
            repo()
                .join("tests/python-modern/ref_server.py")
                .display()
                .to_string(),
            "--port".into(),
            port.to_string(),
        ])
    }

    fn start_program(args: Vec<String>) -> Upstream {
        let (child, url) = Self::spawn(&args);
        Upstream {
            child: Some(child),
            url,
            args,
        }
    }

    fn spawn(args: &[String]) -> (std::process::Child, String) {
        let mut child = Command::new(&args[0])
            .args(&args[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start remote_server.py");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(BufReader::new(stdout)).map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("READY ") {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(url) => (child, url),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("remote_server.py {args:?} did not get ready within 30 s");
            }
        }
    }

    fn port(&self) -> String {
        self.url
            .rsplit_once(':')
            .and_then(|(_, rest)| rest.split('/').next())
            .expect("port in the url")
            .to_string()
    }

    /// Kills the server (its sessions are lost) and starts it again on the
    /// same port.
    pub fn restart(&mut self) {
        self.kill();
        let mut args = self.args.clone();
        args.retain(|a| a != "--port" && a != "0");
        args.extend(["--port".to_string(), self.port()]);
        let (child, url) = Self::spawn(&args);
        assert_eq!(url, self.url, "restarted on another address");
        self.child = Some(child);
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.kill();
    }
}
