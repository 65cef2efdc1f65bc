//! The sandbox end to end: a hosted server that attacks (the `hostile`
//! fixture) is refused each escape, and the operator sees the refusal: the
//! fixture's stderr line in `berth logs NAME`, or Berth's own line.
//!
//! Each test starts its own gateway. Data directories live under
//! `CARGO_TARGET_TMPDIR`, not `/tmp`: a sandbox's private `/tmp` would hide
//! a data dir in `/tmp` whatever else it did, and the test would prove
//! nothing. A control test runs the same attacks with `sandbox = false` and
//! sees them work, so these tests can fail.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{
    Berth, INHERITED_FD, Launch, Raw, Reply, berth_bin, descendants_of, fixture_bin,
    fixture_server, initialize_body, processes_with_cmdline,
};
use serde_json::{Value, json};

const VERSION: &str = "2025-11-25";

/// How long an operator-visible line may take to reach `berth logs`.
const LOG_WITHIN: Duration = Duration::from_secs(10);

/// Where the tests' data directories go (see the module comment).
fn data_parent() -> &'static Path {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
}

fn start(gateway: &str, servers: &str) -> Berth {
    start_with_env(gateway, servers, &[])
}

fn start_with_env(gateway: &str, servers: &str, env: &[(&str, &str)]) -> Berth {
    Berth::launch(Launch {
        gateway,
        servers,
        env,
        data_parent: Some(data_parent()),
        ..Launch::default()
    })
}

/// A name no other test run uses.
fn unique(label: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("berth-{label}-{}-{nanos}", std::process::id())
}

/// `[servers.NAME]` running the hostile fixture; `sandbox` holds the lines
/// of its `[servers.NAME.sandbox]` table (none: the defaults).
fn hostile(name: &str, sandbox: &str) -> String {
    let mut table = fixture_server(name, "hostile");
    if !sandbox.is_empty() {
        table.push_str(&format!("[servers.{name}.sandbox]\n{sandbox}\n"));
    }
    table.push('\n');
    table
}

/// `[servers.NAME]` running the `echo` fixture (a well-behaved bystander).
fn bystander(name: &str) -> String {
    format!("{}\n", fixture_server(name, "echo"))
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// What an operator would look at: the server's log and Berth's own.
fn context(berth: &Berth, server: &str) -> String {
    format!(
        "--- berth logs {server} (last 40 lines) ---\n{}\n--- Berth's own log (last 40 lines) ---\n{}",
        tail(&berth.server_log(server), 40),
        tail(&berth.log(), 40)
    )
}

/// The attempt report in a tools/call reply, or what went wrong instead.
fn report_of(reply: &Reply) -> Result<Value, String> {
    if reply.status != 200 {
        return Err(format!("HTTP {}: {}", reply.status, reply.body));
    }
    let message = if reply.content_type().starts_with("text/event-stream") {
        reply
            .sse_messages()
            .into_iter()
            .rev()
            .find(|m| m.get("id").is_some())
            .ok_or_else(|| format!("no response in the SSE stream: {}", reply.body))?
    } else {
        serde_json::from_str(&reply.body)
            .map_err(|e| format!("body is not JSON ({e}): {}", reply.body))?
    };
    if let Some(error) = message.get("error") {
        return Err(format!("JSON-RPC error: {error}"));
    }
    let result = &message["result"];
    if result["isError"] == true {
        return Err(format!("the tool failed: {result}"));
    }
    let text = result["content"][0]["text"]
        .as_str()
        .ok_or_else(|| format!("no text content: {message}"))?;
    serde_json::from_str(text).map_err(|e| format!("the report is not JSON ({e}): {text}"))
}

/// One attempt and the fixture's report of it.
struct Attempt {
    args: Value,
    report: Value,
}

impl Attempt {
    fn detail(&self) -> &str {
        self.report["detail"].as_str().unwrap_or_default()
    }

    fn verdict(&self) -> &'static str {
        match self.report["refused"] {
            Value::Bool(true) => "refused",
            Value::Bool(false) => "the attack WORKED",
            _ => "the attack could not even be tried",
        }
    }
}

/// A session with one hosted server, used to attempt attacks.
struct Session<'a> {
    berth: &'a Berth,
    server: String,
    raw: Raw,
    id: u64,
}

impl<'a> Session<'a> {
    async fn open(berth: &'a Berth, server: &str) -> Session<'a> {
        Session::open_with_token(berth, server, None).await
    }

    async fn open_with_token(berth: &'a Berth, server: &str, token: Option<String>) -> Session<'a> {
        let mut raw = Raw::new(berth.url(server));
        raw.token = token;
        let reply = raw.post(&initialize_body(VERSION)).await;
        assert!(
            reply.status == 200,
            "{server}: initialize answered {} {}\n{}",
            reply.status,
            reply.body,
            context(berth, server)
        );
        let session = reply
            .headers
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("{server}: no session id: {}", reply.body))
            .to_string();
        raw.session = Some(session);
        let ack = raw
            .post(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
            .await;
        assert_eq!(ack.status, 202, "{server}: initialized: {}", ack.body);
        Session {
            berth,
            server: server.to_string(),
            raw,
            id: 0,
        }
    }

    async fn call(&mut self, tool: &str, args: Value) -> Reply {
        self.id += 1;
        self.raw.call_tool(self.id, tool, args).await
    }

    /// Attempts `args`; panics (with the logs) if no report comes back.
    async fn attempt(&mut self, args: Value) -> Attempt {
        let reply = self.call("attempt", args.clone()).await;
        match report_of(&reply) {
            Ok(report) => Attempt { args, report },
            Err(why) => panic!(
                "{}: attempt {args} got no report: {why}\n{}",
                self.server,
                context(self.berth, &self.server)
            ),
        }
    }

    /// Attempts `args`, which must be refused, and visibly so.
    async fn refused(&mut self, what: &str, args: Value) -> Attempt {
        let attempt = self.attempt(args).await;
        self.assert_refused(what, &attempt);
        attempt
    }

    /// Attempts `args`, which must work.
    async fn worked(&mut self, what: &str, args: Value) -> Attempt {
        let attempt = self.attempt(args).await;
        assert!(
            attempt.report["refused"] == false,
            "{}: {what} should work, but {}: {}\n  attempt: {}\n  report: {}\n{}",
            self.server,
            attempt.verdict(),
            attempt.detail(),
            attempt.args,
            attempt.report,
            context(self.berth, &self.server)
        );
        attempt
    }

    /// The attempt was refused, and its stderr line is in `berth logs`.
    fn assert_refused(&self, what: &str, attempt: &Attempt) {
        assert!(
            attempt.report["refused"] == true,
            "SANDBOX ESCAPE on server `{}`: {what}: {}\n  attempt: {}\n  detail: {}\n  report: {}\n{}",
            self.server,
            attempt.verdict(),
            attempt.args,
            attempt.detail(),
            attempt.report,
            context(self.berth, &self.server)
        );
        let line = attempt.report["log"].as_str().unwrap_or_default();
        // Berth may cut long lines: the start of it is enough.
        let needle: String = line.chars().take(120).collect();
        assert!(
            needle.starts_with("hostile: ") && needle.contains(": refused: "),
            "{what}: unexpected log line {line:?}"
        );
        let deadline = Instant::now() + LOG_WITHIN;
        loop {
            let logs = self.berth.server_log(&self.server);
            if logs.contains(&needle) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what} was refused, but the operator cannot see it: `berth logs {}` lacks {needle:?} after {LOG_WITHIN:?}\n{}",
                self.server,
                context(self.berth, &self.server)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    async fn delete(&self) -> u16 {
        self.raw.delete().await
    }
}

/// Waits until `berth logs SERVER` contains `needle`; panics with the logs.
fn wait_for_server_log(berth: &Berth, server: &str, needle: &str, within: Duration, why: &str) {
    let deadline = Instant::now() + within;
    loop {
        if berth.server_log(server).contains(needle) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{why}: `berth logs {server}` lacks {needle:?} after {within:?}\n{}",
            context(berth, server)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls `check` until it returns true or `within` passes.
fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The admin API's port, from `<data_dir>/admin.json`.
fn admin_port(berth: &Berth) -> u16 {
    let text = std::fs::read_to_string(berth.dir.path().join("admin.json")).expect("admin.json");
    let admin: Value = serde_json::from_str(&text).expect("admin.json is JSON");
    let url = admin["url"].as_str().expect("admin.json has a url");
    url.rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("no port in admin url {url}"))
}

/// Berth still serves: `/healthz` answers `ok` and `berth ps` works.
async fn assert_berth_serves(berth: &Berth, after: &str) {
    let health = reqwest::get(format!("{}/healthz", berth.base())).await;
    let ok = match health {
        Ok(response) => response.status() == 200,
        Err(_) => false,
    };
    assert!(
        ok,
        "Berth stopped answering /healthz after {after}; log:\n{}",
        tail(&berth.log(), 40)
    );
    let (ok, out) = berth.cli(&["ps"]);
    assert!(ok, "berth ps failed after {after}: {out}");
}

/// Host processes of a hosted server: descendants of Berth whose command
/// line contains `needle`.
fn server_processes(berth: &Berth, needle: &str) -> Vec<u32> {
    descendants_of(berth.pid())
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|raw| {
                    String::from_utf8_lossy(&raw)
                        .replace('\0', " ")
                        .contains(needle)
                })
                .unwrap_or(false)
        })
        .collect()
}

/// SIGKILLs every host process whose command line holds the marker, when
/// dropped: an orphan that escaped must not outlive the test.
struct KillMarked(String);

impl Drop for KillMarked {
    fn drop(&mut self) {
        for (pid, _) in processes_with_cmdline(&self.0) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Removes host files an escaped write may have left, when dropped.
struct RemoveOnDrop(Vec<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A tiny HTTP server on the host's loopback that answers every request
/// with `body` and counts them.
struct Upstream {
    port: u16,
    hits: Arc<AtomicUsize>,
}

fn upstream(body: String) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
                match stream.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
    });
    Upstream { port, hits }
}

/// This host's own non-loopback IPv4 address, if it has a route out.
fn host_address() -> Option<std::net::IpAddr> {
    let socket = UdpSocket::bind("0.0.0.0:0").ok()?;
    // A UDP connect sends nothing; it only picks the source address.
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// The start of the first readable mapping of `pid`, from the host.
fn readable_address(pid: u32) -> Option<u64> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    maps.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let range = fields.next()?;
        let perms = fields.next()?;
        perms
            .starts_with('r')
            .then(|| u64::from_str_radix(range.split('-').next()?, 16).ok())
            .flatten()
    })
}

/// Every `key` anywhere in `value`.
fn find_key<'v>(value: &'v Value, key: &str, found: &mut Vec<&'v Value>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == key {
                    found.push(v);
                }
                find_key(v, key, found);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| find_key(v, key, found)),
        _ => {}
    }
}

// ---------------------------------------------------------------------------

/// Who the server is inside: uid 1000 with `HOME=/state`, no capabilities,
/// no new privileges, a seccomp filter; on the host, not root.
#[tokio::test(flavor = "multi_thread")]
async fn the_server_runs_unprivileged_and_confined() {
    let berth = start("", &hostile("attacker", ""));
    let mut attacker = Session::open(&berth, "attacker").await;
    let who = attacker.attempt(json!({"action": "whoami"})).await;
    let report = &who.report;
    let facts = format!("whoami: {}\n{}", who.detail(), context(&berth, "attacker"));
    assert_eq!(report["uid"], 1000, "not uid 1000 inside; {facts}");
    assert_eq!(report["home"], "/state", "HOME is not /state; {facts}");
    assert_eq!(
        report["cap_eff"], "0000000000000000",
        "the server keeps capabilities; {facts}"
    );
    assert_eq!(report["no_new_privs"], "1", "NoNewPrivs is off; {facts}");
    assert_eq!(report["seccomp"], "2", "no seccomp filter; {facts}");

    // On the host, every process of the server runs as some other user than root.
    let pids = server_processes(&berth, "berth-fixture hostile");
    assert!(
        !pids.is_empty(),
        "no host process of the hostile server among Berth's descendants; {facts}"
    );
    // Its own pid and hostname are not the host's: pid and uts namespaces.
    let inside_pid = report["pid"].as_u64().unwrap_or(0);
    assert!(
        !pids.iter().any(|&pid| u64::from(pid) == inside_pid),
        "the server sees its host pid {inside_pid} (host pids {pids:?}): no pid namespace; {facts}"
    );
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    assert_ne!(
        report["hostname"].as_str(),
        Some(host_name.trim()),
        "the server sees the host's hostname: no uts namespace; {facts}"
    );
    for pid in pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let uids = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .unwrap_or_default()
            .to_string();
        assert!(
            uids.split_whitespace().all(|uid| uid != "0"),
            "host process {pid} of the server runs as root (Uid: {uids}); {facts}"
        );
    }
}

/// Host secrets and every file of Berth's data dir are out of reach.
#[tokio::test(flavor = "multi_thread")]
async fn host_secrets_and_berths_data_dir_are_unreadable() {
    let berth = start("[auth]\nmode = \"oauth\"\n", &hostile("attacker", ""));
    berth.set_secret("github_token", "ghp_n0tForServers");
    let data = berth.dir.path().to_path_buf();
    let mut files: Vec<PathBuf> = ["admin.json", "master.key", "secrets.json", "issuer-key.pem"]
        .iter()
        .map(|name| data.join(name))
        .collect();
    files.push(berth.config_path());
    files.push(data.join("berth.log"));
    for file in &files {
        assert!(
            file.exists(),
            "{} does not exist: the test expects Berth to have written it",
            file.display()
        );
    }
    let token = berth.cli_token("attacker", "attacker", "tools:call");
    let mut attacker = Session::open_with_token(&berth, "attacker", Some(token)).await;

    attacker
        .refused(
            "reading /etc/shadow",
            json!({"action": "read_file", "path": "/etc/shadow"}),
        )
        .await;
    for file in &files {
        attacker
            .refused(
                &format!("reading Berth's {}", file.display()),
                json!({"action": "read_file", "path": file}),
            )
            .await;
    }
    attacker
        .refused(
            "listing Berth's data dir",
            json!({"action": "list_dir", "path": data}),
        )
        .await;
    // Through Berth's /proc entry, its root and its cwd lead to the host's files.
    let berth_pid = berth.pid();
    let through_root = format!(
        "/proc/{berth_pid}/root{}",
        data.join("admin.json").display()
    );
    attacker
        .refused(
            "reading admin.json through /proc/<berth>/root",
            json!({"action": "read_file", "path": through_root}),
        )
        .await;
    attacker
        .refused(
            "reading /proc/<berth>/root/etc/shadow",
            json!({"action": "read_file", "path": format!("/proc/{berth_pid}/root/etc/shadow")}),
        )
        .await;
}

/// Berth's own environment (its master key, say) never reaches a server:
/// not in the server's environment, not through any /proc entry it sees.
#[tokio::test(flavor = "multi_thread")]
async fn berths_environment_is_invisible() {
    let canary = unique("canary");
    // A valid master key (64 hex characters) that only Berth's environment holds.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let master_key = format!("{nanos:032x}{:032x}", u128::from(std::process::id()));
    let berth = start_with_env(
        "",
        &hostile("attacker", ""),
        &[
            ("BERTH_TEST_CANARY", &canary),
            ("BERTH_MASTER_KEY", &master_key),
        ],
    );
    let mut attacker = Session::open(&berth, "attacker").await;

    let env = attacker.attempt(json!({"action": "env"})).await;
    for leaked in [canary.as_str(), master_key.as_str(), "BERTH_MASTER_KEY"] {
        assert!(
            !env.detail().contains(leaked),
            "SANDBOX ESCAPE: the server's environment holds {leaked:?} from Berth's:\n{}\n{}",
            env.detail(),
            context(&berth, "attacker")
        );
    }

    attacker
        .refused(
            "reading /proc/<berth pid>/environ",
            json!({"action": "read_file", "path": format!("/proc/{}/environ", berth.pid()), "bytes": 1 << 20}),
        )
        .await;

    // Every process the server can see (a sandbox helper as its pid 1, say).
    let proc_list = attacker
        .worked(
            "listing /proc",
            json!({"action": "list_dir", "path": "/proc"}),
        )
        .await;
    let pids: Vec<String> = proc_list.report["entries"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter_map(Value::as_str)
                .filter(|e| e.bytes().all(|b| b.is_ascii_digit()))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    for pid in pids {
        for file in ["environ", "cmdline"] {
            let path = format!("/proc/{pid}/{file}");
            let read = attacker
                .attempt(json!({"action": "read_file", "path": path, "bytes": 1 << 20}))
                .await;
            for leaked in [canary.as_str(), master_key.as_str()] {
                assert!(
                    !read.detail().contains(leaked),
                    "SANDBOX ESCAPE: {path} as the server sees it holds Berth's secret {leaked:?}:\n{}\n{}",
                    read.detail(),
                    context(&berth, "attacker")
                );
            }
        }
    }
}

/// The admin API and the gateway, both on the host's loopback, cannot be
/// reached: not directly, not through the egress proxy.
#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_and_the_gateway_are_unreachable() {
    let berth = start("", &hostile("attacker", ""));
    let admin = admin_port(&berth);
    let gateway = berth.addr.port();
    let mut attacker = Session::open(&berth, "attacker").await;
    for (what, port) in [("the admin API", admin), ("the gateway", gateway)] {
        attacker
            .refused(
                &format!("connecting to {what} on 127.0.0.1:{port}"),
                json!({"action": "connect", "host": "127.0.0.1", "port": port}),
            )
            .await;
    }
    attacker
        .refused(
            "reaching the admin API through the egress proxy",
            json!({"action": "proxy_get", "host": "127.0.0.1", "port": admin}),
        )
        .await;
}

/// Berth itself cannot be signalled or traced, and keeps serving.
#[tokio::test(flavor = "multi_thread")]
async fn berth_cannot_be_signalled_or_traced() {
    let berth = start("", &hostile("attacker", ""));
    let pid = berth.pid();
    let mut attacker = Session::open(&berth, "attacker").await;
    for signal in ["0", "TERM", "KILL"] {
        attacker
            .refused(
                &format!("signal {signal} to Berth (host pid {pid})"),
                json!({"action": "signal", "pid": pid, "signal": signal}),
            )
            .await;
    }
    attacker
        .refused(
            &format!("ptrace of Berth (host pid {pid})"),
            json!({"action": "ptrace", "pid": pid}),
        )
        .await;
    assert_berth_serves(&berth, "the signal and ptrace attempts").await;
    attacker
        .worked(
            "a harmless call afterwards",
            json!({"action": "spin", "ms": 1}),
        )
        .await;
}

/// Another hosted server's processes: their environment and memory cannot
/// be read, they cannot be killed or traced, and they keep answering.
#[tokio::test(flavor = "multi_thread")]
async fn a_sibling_server_is_out_of_reach() {
    let secret = unique("sibling-secret");
    let servers = format!(
        "{}{}env = {{ SIBLING_SECRET = {secret:?} }}\n",
        hostile("attacker", ""),
        fixture_server("sibling", "env"),
    );
    let berth = start("", &servers);
    let mut sibling = Session::open(&berth, "sibling").await;
    let reply = sibling.call("env", json!({})).await;
    assert!(
        reply.status == 200 && reply.body.contains(&secret),
        "the sibling does not answer: {} {}\n{}",
        reply.status,
        reply.body,
        context(&berth, "sibling")
    );
    // The sibling's host processes: Berth's descendants holding the secret.
    let targets: Vec<u32> = descendants_of(berth.pid())
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| String::from_utf8_lossy(&env).contains(&secret))
                .unwrap_or(false)
        })
        .collect();
    assert!(
        !targets.is_empty(),
        "no descendant of Berth has the sibling's environment; processes: {:?}\n{}",
        descendants_of(berth.pid()),
        context(&berth, "sibling")
    );

    let mut attacker = Session::open(&berth, "attacker").await;
    for &pid in &targets {
        attacker
            .refused(
                &format!("reading the sibling's /proc/{pid}/environ"),
                json!({"action": "read_file", "path": format!("/proc/{pid}/environ"), "bytes": 1 << 20}),
            )
            .await;
        let mut mem = json!({"action": "read_file", "path": format!("/proc/{pid}/mem")});
        if let Some(address) = readable_address(pid) {
            mem["offset"] = json!(address);
        }
        attacker
            .refused(&format!("reading the sibling's /proc/{pid}/mem"), mem)
            .await;
    }
    // Whatever pids the attacker can see, none holds the sibling's secret.
    let proc_list = attacker
        .worked(
            "listing /proc",
            json!({"action": "list_dir", "path": "/proc"}),
        )
        .await;
    for pid in proc_list.report["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|e| e.bytes().all(|b| b.is_ascii_digit()))
    {
        let path = format!("/proc/{pid}/environ");
        let read = attacker
            .attempt(json!({"action": "read_file", "path": path, "bytes": 1 << 20}))
            .await;
        assert!(
            !read.detail().contains(&secret),
            "SANDBOX ESCAPE: {path} as the attacker sees it is the sibling's environment:\n{}",
            read.detail()
        );
    }
    for &pid in &targets {
        attacker
            .refused(
                &format!("SIGKILL to the sibling's process {pid}"),
                json!({"action": "signal", "pid": pid, "signal": "KILL"}),
            )
            .await;
        attacker
            .refused(
                &format!("ptrace of the sibling's process {pid}"),
                json!({"action": "ptrace", "pid": pid}),
            )
            .await;
    }
    let reply = sibling.call("env", json!({})).await;
    assert!(
        reply.status == 200 && reply.body.contains(&secret),
        "the sibling stopped answering after the attacks: {} {}\n{}",
        reply.status,
        reply.body,
        context(&berth, "sibling")
    );
}

/// Starts Berth with a host directory (readable by anyone, holding
/// `secret.txt`) left open as descriptor [`INHERITED_FD`], as a careless
/// parent or a service manager could.
fn start_with_inherited_dir(servers: &str) -> (Berth, tempfile::TempDir) {
    use std::os::unix::fs::PermissionsExt;
    let outside = tempfile::tempdir_in(data_parent()).expect("temp dir");
    let secret = outside.path().join("secret.txt");
    std::fs::write(&secret, "host secret").unwrap();
    // Readable by anyone: only the sandbox can stop the read.
    std::fs::set_permissions(outside.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let berth = Berth::launch(Launch {
        servers,
        data_parent: Some(data_parent()),
        inherited_dir: Some(outside.path()),
        ..Launch::default()
    });
    (berth, outside)
}

/// A descriptor Berth inherited does not lead out of the sandbox's root
/// through `/proc/self/fd/N/...`.
#[tokio::test(flavor = "multi_thread")]
async fn an_inherited_descriptor_leads_nowhere() {
    let (berth, _outside) = start_with_inherited_dir(&hostile("attacker", ""));
    let mut attacker = Session::open(&berth, "attacker").await;
    attacker
        .refused(
            &format!("reading a host file through Berth's inherited descriptor {INHERITED_FD}"),
            json!({"action": "read_file", "path": format!("/proc/self/fd/{INHERITED_FD}/secret.txt")}),
        )
        .await;
}

/// The server holds no descriptor but its stdio: nothing Berth inherited
/// (a directory, a pipe, a socket) nor anything of Berth's own.
#[tokio::test(flavor = "multi_thread")]
async fn the_server_holds_only_its_stdio() {
    let (berth, _outside) = start_with_inherited_dir(&hostile("attacker", ""));
    let mut attacker = Session::open(&berth, "attacker").await;
    let fds = attacker.attempt(json!({"action": "fds"})).await;
    let extra: Vec<String> = fds.report["fds"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(fd, _)| !matches!(fd.as_str(), "0" | "1" | "2"))
        .map(|(fd, target)| format!("{fd} -> {}", target.as_str().unwrap_or_default()))
        .collect();
    assert!(
        extra.is_empty(),
        "the server holds descriptors it did not open (Berth's parent's, or Berth's own; {INHERITED_FD} is a host directory the test left open in Berth): {extra:?}\n{}",
        context(&berth, "attacker")
    );
}

/// Writes land only in /state and /tmp: not in /usr, /, Berth's data dir
/// or its config file.
#[tokio::test(flavor = "multi_thread")]
async fn writes_outside_state_and_tmp_are_refused() {
    let berth = start("", &hostile("attacker", ""));
    let name = unique("pwned");
    let data = berth.dir.path().to_path_buf();
    let outside = [
        PathBuf::from("/usr").join(&name),
        PathBuf::from("/").join(&name),
        data.join(&name),
    ];
    let _cleanup = RemoveOnDrop(outside.to_vec());
    let admin_before = std::fs::read(data.join("admin.json")).expect("admin.json");
    let config_before = std::fs::read(berth.config_path()).expect("config");
    let mut attacker = Session::open(&berth, "attacker").await;

    for path in &outside {
        attacker
            .refused(
                &format!("writing {}", path.display()),
                json!({"action": "write_file", "path": path}),
            )
            .await;
        assert!(
            !path.exists(),
            "SANDBOX ESCAPE: {} exists on the host",
            path.display()
        );
    }
    for path in [data.join("admin.json"), berth.config_path()] {
        attacker
            .refused(
                &format!("overwriting {}", path.display()),
                json!({"action": "write_file", "path": path}),
            )
            .await;
    }
    assert_eq!(
        std::fs::read(data.join("admin.json")).unwrap(),
        admin_before,
        "admin.json changed"
    );
    assert_eq!(
        std::fs::read(berth.config_path()).unwrap(),
        config_before,
        "the config file changed"
    );

    for path in ["/state/x", "/tmp/x"] {
        attacker
            .worked(
                &format!("writing {path}"),
                json!({"action": "write_file", "path": path}),
            )
            .await;
        let back = attacker
            .worked(
                &format!("reading {path} back"),
                json!({"action": "read_file", "path": path}),
            )
            .await;
        assert_eq!(back.detail(), "pwned", "{path} reads back wrong");
    }
}

/// A symlink made in /state or /tmp leads nowhere outside the sandbox.
#[tokio::test(flavor = "multi_thread")]
async fn symlinks_do_not_lead_out() {
    let berth = start("", &hostile("attacker", ""));
    let admin = berth.dir.path().join("admin.json");
    let mut attacker = Session::open(&berth, "attacker").await;
    for (link, target) in [
        ("/tmp/l", berth.config_path()),
        ("/state/l", PathBuf::from("/etc/shadow")),
        ("/state/l2", admin.clone()),
    ] {
        let attempt = attacker
            .refused(
                &format!("reading {} through the symlink {link}", target.display()),
                json!({"action": "symlink_read", "target": target, "link": link}),
            )
            .await;
        // The link itself must be made: /state and /tmp are writable.
        assert!(
            attempt.detail().starts_with("created "),
            "the symlink {link} could not even be made: {}\n{}",
            attempt.detail(),
            context(&berth, "attacker")
        );
    }
}

/// No mounts, no nested user namespace.
#[tokio::test(flavor = "multi_thread")]
async fn mounts_and_user_namespaces_are_refused() {
    let berth = start("", &hostile("attacker", ""));
    let mut attacker = Session::open(&berth, "attacker").await;
    attacker
        .refused(
            "mounting a tmpfs on /tmp/x",
            json!({"action": "mount", "path": "/tmp/x"}),
        )
        .await;
    attacker
        .refused(
            "mounting a tmpfs on /state/m",
            json!({"action": "mount", "path": "/state/m"}),
        )
        .await;
    attacker
        .refused("creating a user namespace", json!({"action": "userns"}))
        .await;
}

/// A double-forked, setsid orphan dies when its session ends, and when
/// Berth shuts down.
#[tokio::test(flavor = "multi_thread")]
async fn orphans_die_with_their_session_and_with_berth() {
    let berth = start("", &hostile("attacker", ""));
    let first = unique("orphan-session");
    let second = unique("orphan-shutdown");
    let _kill_first = KillMarked(first.clone());
    let _kill_second = KillMarked(second.clone());

    let mut session = Session::open(&berth, "attacker").await;
    session
        .worked(
            "starting an orphan",
            json!({"action": "orphan", "marker": first}),
        )
        .await;
    assert!(
        eventually(Duration::from_secs(5), || !processes_with_cmdline(&first)
            .is_empty()),
        "the orphan {first} never showed on the host\n{}",
        context(&berth, "attacker")
    );
    let status = session.delete().await;
    assert!(
        status < 300,
        "DELETE of the session answered {status}\n{}",
        context(&berth, "attacker")
    );
    assert!(
        eventually(Duration::from_secs(15), || processes_with_cmdline(&first)
            .is_empty()),
        "SANDBOX ESCAPE: the orphan outlived its session (15 s after DELETE): {:?}\n{}",
        processes_with_cmdline(&first),
        context(&berth, "attacker")
    );

    let mut session = Session::open(&berth, "attacker").await;
    session
        .worked(
            "starting an orphan",
            json!({"action": "orphan", "marker": second}),
        )
        .await;
    assert!(
        eventually(Duration::from_secs(5), || !processes_with_cmdline(&second)
            .is_empty()),
        "the orphan {second} never showed on the host\n{}",
        context(&berth, "attacker")
    );
    let before = context(&berth, "attacker");
    drop(session);
    let status = berth.stop(Duration::from_secs(30));
    assert!(status.success(), "Berth exited with {status}\n{before}");
    assert!(
        eventually(Duration::from_secs(10), || processes_with_cmdline(&second)
            .is_empty()),
        "SANDBOX ESCAPE: the orphan outlived Berth (10 s after it exited): {:?}\n{before}",
        processes_with_cmdline(&second)
    );
}

/// `pids = 32`: a fork bomb stops below 32; its children die with the
/// session; other servers keep serving.
#[tokio::test(flavor = "multi_thread")]
async fn a_fork_bomb_stops_at_the_pids_limit() {
    let servers = format!(
        "{}{}",
        hostile("bomber", "pids = 32"),
        bystander("bystander")
    );
    let berth = start("", &servers);
    let mut bomber = Session::open(&berth, "bomber").await;
    let bomb = bomber
        .refused(
            "a fork bomb of 1000 under pids = 32",
            json!({"action": "fork_bomb", "max": 1000}),
        )
        .await;
    let count = bomb.report["count"].as_u64().unwrap_or(u64::MAX);
    assert!(
        count < 32,
        "the fork bomb made {count} processes under pids = 32: {}",
        bomb.detail()
    );
    // The bomber itself still answers.
    bomber
        .worked("a call after the bomb", json!({"action": "spin", "ms": 1}))
        .await;

    let mut other = Session::open(&berth, "bystander").await;
    let reply = other.call("echo", json!({"text": "still here"})).await;
    assert!(
        reply.status == 200 && reply.body.contains("still here"),
        "another server stopped serving during the fork bomb: {} {}\n{}",
        reply.status,
        reply.body,
        context(&berth, "bystander")
    );

    // The bomb's children go with the session.
    bomber.delete().await;
    assert!(
        eventually(Duration::from_secs(15), || server_processes(
            &berth,
            "berth-fixture hostile"
        )
        .is_empty()),
        "the fork bomb's processes outlived its session: {:?}\n{}",
        server_processes(&berth, "berth-fixture hostile"),
        context(&berth, "bomber")
    );
}

/// `memory = "128MiB"`: a 4 GiB allocation gets the process OOM-killed, the
/// operator is told (log and `last_exit`), and other servers keep serving.
#[tokio::test(flavor = "multi_thread")]
async fn a_memory_hog_is_oom_killed_and_reported() {
    let servers = format!(
        "{}{}",
        hostile("hog", "memory = \"128MiB\""),
        bystander("bystander")
    );
    let berth = start("", &servers);
    let mut hog = Session::open(&berth, "hog").await;
    let reply = hog
        .call("attempt", json!({"action": "alloc", "mib": 4096}))
        .await;
    if let Ok(report) = report_of(&reply) {
        panic!(
            "SANDBOX ESCAPE: the hog answered instead of being OOM-killed under memory = 128MiB: {report}\n{}",
            context(&berth, "hog")
        );
    }
    wait_for_server_log(
        &berth,
        "hog",
        "killed by the OOM killer",
        Duration::from_secs(15),
        "the OOM kill is not reported",
    );
    let status = berth.status();
    let entry = status
        .iter()
        .find(|s| s["server"] == "hog")
        .unwrap_or_else(|| panic!("no `hog` in berth ps --json: {status:?}"));
    let mut exits = Vec::new();
    find_key(entry, "last_exit", &mut exits);
    assert!(
        exits
            .iter()
            .any(|e| e.as_str().is_some_and(|e| e.contains("OOM"))),
        "berth ps --json does not say the hog was OOM-killed (last_exit: {exits:?}): {entry}"
    );

    let mut other = Session::open(&berth, "bystander").await;
    let reply = other.call("echo", json!({"text": "still here"})).await;
    assert!(
        reply.status == 200 && reply.body.contains("still here"),
        "another server stopped serving after the OOM kill: {} {}\n{}",
        reply.status,
        reply.body,
        context(&berth, "bystander")
    );
}

/// `cpus = 0.05`: a server spinning for 2 s gets far less CPU than one
/// with the default limit spinning at the same time (measured side by
/// side, so a busy machine slows both alike; the limited one gets about
/// 100 ms whatever the load, the other about 2 s on an idle machine and
/// still over 500 ms with the other sandbox tests running on 2 cores).
#[tokio::test(flavor = "multi_thread")]
async fn a_cpu_limit_throttles_a_spinning_server() {
    let servers = format!("{}{}", hostile("slow", "cpus = 0.05"), hostile("free", ""));
    let berth = start("", &servers);
    let mut slow = Session::open(&berth, "slow").await;
    let mut free = Session::open(&berth, "free").await;
    let spin = json!({"action": "spin", "ms": 2000});
    let (slow_spin, free_spin) = tokio::join!(
        slow.worked("spinning under cpus = 0.05", spin.clone()),
        free.worked("spinning with the default limit", spin.clone()),
    );
    let cpu = |a: &Attempt| a.report["cpu_ms"].as_u64().unwrap_or(u64::MAX);
    let (slow_ms, free_ms) = (cpu(&slow_spin), cpu(&free_spin));
    assert!(
        slow_ms.saturating_mul(2) < free_ms,
        "cpus = 0.05 did not throttle: the limited server used {slow_ms} ms of CPU ({}), the default one {free_ms} ms ({})",
        slow_spin.detail(),
        free_spin.detail()
    );
}

/// The server cannot move itself out of its cgroups (and so out of its
/// limits), whatever cgroup hierarchy it finds.
#[tokio::test(flavor = "multi_thread")]
async fn the_server_cannot_leave_its_cgroup() {
    let berth = start("", &hostile("attacker", "pids = 64"));
    let mut attacker = Session::open(&berth, "attacker").await;
    let before = attacker.attempt(json!({"action": "whoami"})).await;
    for path in [
        "/sys/fs/cgroup/cgroup.procs",
        "/sys/fs/cgroup/unified/cgroup.procs",
        "/sys/fs/cgroup/memory/cgroup.procs",
        "/sys/fs/cgroup/pids/cgroup.procs",
        "/sys/fs/cgroup/cpu/cgroup.procs",
        "/sys/fs/cgroup/freezer/cgroup.procs",
    ] {
        attacker
            .refused(
                &format!("moving itself to {path}"),
                json!({"action": "write_file", "path": path, "content": "0", "create": false}),
            )
            .await;
    }
    let after = attacker.attempt(json!({"action": "whoami"})).await;
    assert_eq!(
        before.report["cgroup"], after.report["cgroup"],
        "the server's cgroups changed"
    );
}

/// `network = "none"`: nothing on the host answers, loopback or not.
#[tokio::test(flavor = "multi_thread")]
async fn network_none_reaches_nothing() {
    let loopback = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = loopback.local_addr().unwrap().port();
    let any = TcpListener::bind("0.0.0.0:0").expect("bind");
    let any_port = any.local_addr().unwrap().port();
    let berth = start("", &hostile("attacker", "network = \"none\""));
    let mut attacker = Session::open(&berth, "attacker").await;
    attacker
        .refused(
            &format!("connecting to a host listener on 127.0.0.1:{port}"),
            json!({"action": "connect", "host": "127.0.0.1", "port": port}),
        )
        .await;
    if let Some(ip) = host_address() {
        attacker
            .refused(
                &format!("connecting to a host listener on {ip}:{any_port}"),
                json!({"action": "connect", "host": ip.to_string(), "port": any_port}),
            )
            .await;
    }
    attacker
        .refused(
            "going through a proxy",
            json!({"action": "proxy_get", "host": "127.0.0.1", "port": port}),
        )
        .await;
}

/// `network = "allow"`: the allowed upstream is reached through Berth's
/// proxy; anything else is refused, and Berth says so; no direct route.
#[tokio::test(flavor = "multi_thread")]
async fn network_allow_reaches_only_allowed_hosts_through_the_proxy() {
    let body = unique("upstream-body");
    let upstream = upstream(body.clone());
    let sandbox = format!(
        "network = \"allow\"\nallow = [\"127.0.0.1:{}\"]",
        upstream.port
    );
    let berth = start("", &hostile("attacker", &sandbox));
    let mut attacker = Session::open(&berth, "attacker").await;

    let got = attacker
        .worked(
            "an allowed upstream through the proxy",
            json!({"action": "proxy_get", "host": "127.0.0.1", "port": upstream.port}),
        )
        .await;
    assert!(
        got.detail().contains(&body),
        "the upstream's body is not in the answer: {}",
        got.detail()
    );
    let proxied = upstream.hits.load(Ordering::SeqCst);
    assert!(proxied >= 1, "the upstream saw no connection");

    let gateway = berth.addr.port();
    attacker
        .refused(
            &format!("the gateway's own port 127.0.0.1:{gateway} through the proxy"),
            json!({"action": "proxy_get", "host": "127.0.0.1", "port": gateway}),
        )
        .await;
    wait_for_server_log(
        &berth,
        "attacker",
        "egress refused",
        LOG_WITHIN,
        "Berth does not report the refused egress",
    );

    // Other spellings of the host's loopback, to the admin API, are not
    // the allowed 127.0.0.1:<upstream> either.
    let admin = admin_port(&berth);
    for host in [
        "127.0.0.1",
        "localhost",
        "0.0.0.0",
        "127.1",
        "2130706433",
        "::1",
    ] {
        attacker
            .refused(
                &format!("the admin API as {host}:{admin} through the proxy"),
                json!({"action": "proxy_get", "host": host, "port": admin}),
            )
            .await;
    }
    // Nor does a plain (absolute-URI) request get through.
    attacker
        .refused(
            "GET http://127.0.0.1:<admin>/v1/status through the proxy",
            json!({"action": "proxy_http", "host": "127.0.0.1", "port": admin, "path": "/v1/status"}),
        )
        .await;

    attacker
        .refused(
            "the allowed upstream without the proxy",
            json!({"action": "connect", "host": "127.0.0.1", "port": upstream.port}),
        )
        .await;
    let hits = upstream.hits.load(Ordering::SeqCst);
    assert_eq!(hits, proxied, "the upstream was reached directly");
}

/// `network = "host"`, for contrast: the host's loopback is reachable.
#[tokio::test(flavor = "multi_thread")]
async fn network_host_reaches_the_hosts_loopback() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    let berth = start("", &hostile("attacker", "network = \"host\""));
    let mut attacker = Session::open(&berth, "attacker").await;
    attacker
        .worked(
            &format!("connecting to 127.0.0.1:{port} with network = host"),
            json!({"action": "connect", "host": "127.0.0.1", "port": port}),
        )
        .await;
}

/// The control: with `sandbox = false` the same attacks work (so the tests
/// above can fail), and Berth warns about the unsandboxed server.
#[tokio::test(flavor = "multi_thread")]
async fn without_a_sandbox_the_attacks_work_and_berth_warns() {
    let canary = unique("canary");
    let servers = format!("{}sandbox = false\n", fixture_server("naked", "hostile"));
    let berth = start_with_env("", &servers, &[("BERTH_TEST_CANARY", &canary)]);
    let mut attacker = Session::open(&berth, "naked").await;

    let config = attacker
        .worked(
            "reading the config file unsandboxed",
            json!({"action": "read_file", "path": berth.config_path()}),
        )
        .await;
    assert!(config.detail().contains("[gateway]"), "{}", config.detail());
    let admin = attacker
        .worked(
            "reading admin.json unsandboxed",
            json!({"action": "read_file", "path": berth.dir.path().join("admin.json")}),
        )
        .await;
    assert!(admin.detail().contains("token"), "{}", admin.detail());
    let environ = attacker
        .worked(
            "reading Berth's environ unsandboxed",
            json!({"action": "read_file", "path": format!("/proc/{}/environ", berth.pid()), "bytes": 1 << 20}),
        )
        .await;
    assert!(environ.detail().contains(&canary), "{}", environ.detail());
    attacker
        .worked(
            "connecting to the admin API unsandboxed",
            json!({"action": "connect", "host": "127.0.0.1", "port": admin_port(&berth)}),
        )
        .await;
    attacker
        .worked(
            "signal 0 to Berth unsandboxed",
            json!({"action": "signal", "pid": berth.pid(), "signal": 0}),
        )
        .await;

    assert!(
        eventually(Duration::from_secs(5), || berth
            .log()
            .contains("without a sandbox")),
        "Berth does not warn about the unsandboxed server; log:\n{}",
        tail(&berth.log(), 40)
    );
}

/// Berth run by an unprivileged user (nobody) still starts, serves, and
/// keeps its data dir from the server.
#[tokio::test(flavor = "multi_thread")]
async fn an_unprivileged_berth_sandboxes_its_servers() {
    const NOBODY: (u32, u32) = (65534, 65534);
    let berth = Berth::launch(Launch {
        servers: &hostile("attacker", ""),
        data_parent: Some(data_parent()),
        user: Some(NOBODY),
        ..Launch::default()
    });
    let status = std::fs::read_to_string(format!("/proc/{}/status", berth.pid())).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("65534")),
        "Berth does not run as 65534:\n{status}"
    );
    let mut attacker = Session::open(&berth, "attacker").await;
    attacker
        .worked("a call", json!({"action": "spin", "ms": 1}))
        .await;
    let data = berth.dir.path().to_path_buf();
    for file in [data.join("admin.json"), berth.config_path()] {
        attacker
            .refused(
                &format!("reading {} (Berth runs as nobody)", file.display()),
                json!({"action": "read_file", "path": file}),
            )
            .await;
    }
    attacker
        .refused(
            "listing Berth's data dir (Berth runs as nobody)",
            json!({"action": "list_dir", "path": data}),
        )
        .await;
    attacker
        .refused(
            "signal 0 to Berth (Berth runs as nobody)",
            json!({"action": "signal", "pid": berth.pid(), "signal": 0}),
        )
        .await;
}

/// A server that trips over what the sandbox hides or protects gets a line
/// in its log naming the path and the setting that would allow it.
#[tokio::test(flavor = "multi_thread")]
async fn hidden_and_read_only_paths_get_a_hint_naming_the_setting() {
    let outside = tempfile::tempdir_in(data_parent()).unwrap();
    let hidden = outside.path().join("models.bin");
    std::fs::write(&hidden, "weights").unwrap();
    let shelf = tempfile::tempdir_in(data_parent()).unwrap();
    let readable = format!("readable = [{:?}]", shelf.path().display().to_string());
    let berth = start("", &hostile("attacker", &readable));
    let mut attacker = Session::open(&berth, "attacker").await;

    let read = attacker
        .attempt(json!({"action": "read_file", "path": hidden.display().to_string()}))
        .await;
    assert_eq!(read.report["refused"], true, "{}", read.detail());
    berth.wait_for_log(
        "attacker",
        &format!(
            "sandbox: {} exists on the host but is hidden from this server; to expose it add it to [servers.attacker.sandbox] readable",
            hidden.display()
        ),
        1,
        LOG_WITHIN,
    );

    let target = shelf.path().join("out.txt");
    let write = attacker
        .attempt(json!({"action": "write_file", "path": target.display().to_string()}))
        .await;
    assert_eq!(write.report["refused"], true, "{}", write.detail());
    berth.wait_for_log(
        "attacker",
        &format!(
            "sandbox: {} is read-only for this server; to let it write there add it to [servers.attacker.sandbox] writable",
            shelf.path().display()
        ),
        1,
        LOG_WITHIN,
    );
}

/// `berth sandbox show` prints the effective policy; `berth check` warns
/// about a server without a sandbox.
#[test]
fn the_operator_can_see_each_servers_sandbox() {
    let dir = tempfile::tempdir_in(data_parent()).unwrap();
    let config = dir.path().join("berth.toml");
    let text = format!(
        "[gateway]\ndata_dir = {:?}\n{}{}[servers.open]\ncommand = \"/bin/cat\"\nsandbox = false\n",
        dir.path().join("data").display().to_string(),
        hostile(
            "attacker",
            "network = \"none\"\nmemory = \"256MiB\"\npids = 64"
        ),
        bystander("quiet"),
    );
    std::fs::write(&config, text).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(berth_bin()).args(args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let config = config.display().to_string();
    let (ok, shown) = run(&["sandbox", "show", "attacker", "--config", &config]);
    assert!(ok, "{shown}");
    for expected in [
        "runs as: uid 1000 gid 1000 inside",
        "network: none (own loopback only)",
        "limits: memory 256 MiB, pids 64, cpus 1",
        "seccomp refuses ptrace",
        "ro  /usr",
        &format!("ro  {}", fixture_bin().display()),
        "rw  /state (host: ",
        "namespaces (user, pid, mount, ipc, uts, net, cgroup): yes",
    ] {
        assert!(
            shown.contains(expected),
            "`{expected}` missing from:\n{shown}"
        );
    }
    assert!(
        !shown.contains(&format!("ro  {}", dir.path().display())),
        "the data dir's parent is exposed:\n{shown}"
    );
    let (ok, off) = run(&["sandbox", "show", "open", "--config", &config]);
    assert!(ok && off.contains("sandbox: OFF"), "{off}");
    let (ok, missing) = run(&["sandbox", "show", "nope", "--config", &config]);
    assert!(!ok && missing.contains("no server `nope`"), "{missing}");

    let (ok, checked) = run(&["check", &config]);
    assert!(ok, "{checked}");
    assert!(
        checked.contains("warning: server `open` runs without a sandbox"),
        "{checked}"
    );
    assert!(!checked.contains("server `attacker`"), "{checked}");
}
