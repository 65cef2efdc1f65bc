//! A server's roots belong to the operator (`roots` of `[servers.NAME]`).
//!
//! The real `@modelcontextprotocol/server-filesystem` replaces the
//! directories it may touch with the roots its client gives it. A hostile
//! client (the official Python SDK, declaring roots and answering
//! `roots/list` with `/etc`, announcing `notifications/roots/list_changed`
//! and slipping in a forged `roots/list` answer) must not widen it, whether
//! its session got a process Berth pre-initialized (full pool) or a fresh one
//! its own `initialize` was forwarded to (empty pool), and the results must
//! be the same in both. Only `roots = "client"`, the explicit opt-in, hands
//! the roots to the client.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

/// The client: connects, lets the test look at the server, then probes the
/// filesystem server and prints what it saw as one JSON line.
///
/// argv: URL MODE, MODE `hostile` (also forges a roots answer) or `client`
/// (waits until its roots are in force: the opt-in case).
const CLIENT: &str = r#"
import asyncio, json, sys, time
from mcp import ClientSession, types
from mcp.client.streamable_http import streamablehttp_client
from mcp.shared.message import SessionMessage

url, mode = sys.argv[1], sys.argv[2]
asked = 0

async def list_roots(context):
    global asked
    asked += 1
    return types.ListRootsResult(roots=[types.Root(uri="file:///etc", name="etc")])

def text(result):
    return "".join(getattr(c, "text", "") for c in result.content)

async def main():
    async with streamablehttp_client(url) as (read, write, _):
        async with ClientSession(read, write, list_roots_callback=list_roots) as session:
            await session.initialize()
            await session.send_roots_list_changed()
            if mode == "hostile":
                # An answer to the server's first request (id 0, roots/list
                # when it asks), which this client was never sent.
                forged = types.JSONRPCResponse(
                    jsonrpc="2.0", id=0, result={"roots": [{"uri": "file:///etc"}]}
                )
                await write.send(SessionMessage(types.JSONRPCMessage(forged)))
            print("initialized", flush=True)
            await asyncio.to_thread(sys.stdin.readline)
            deadline = time.monotonic() + 30
            while True:
                allowed = text(await session.call_tool("list_allowed_directories", {}))
                if mode != "client" or "/etc" in allowed or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            probes = {}
            for path in ["/etc/os-release", "/etc/hostname"]:
                result = await session.call_tool("read_text_file", {"path": path})
                probes[path] = {"error": bool(result.isError), "text": text(result)[:300]}
            print(json.dumps({"allowed": allowed, "read": probes, "asked": asked}), flush=True)

asyncio.run(main())
"#;

/// The Python client, stopped (its process group killed) when dropped.
struct Client {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Client {
    fn start(url: &str, mode: &str) -> Client {
        let mut child = Command::new(python())
            .args(["-c", CLIENT, url, mode])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .expect("start the Python client");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let stdin = child.stdin.take();
        Client {
            child,
            stdin,
            lines,
        }
    }

    fn line(&self, within: Duration, what: &str, berth: &Berth) -> String {
        self.lines.recv_timeout(within).unwrap_or_else(|_| {
            panic!(
                "the client did not {what} within {within:?}\n--- berth log ---\n{}",
                berth.log()
            )
        })
    }

    /// Lets the client probe; its findings.
    fn probe(mut self, berth: &Berth) -> serde_json::Value {
        let mut stdin = self.stdin.take().expect("stdin");
        writeln!(stdin, "go").expect("tell the client to go on");
        let line = self.line(Duration::from_secs(60), "report", berth);
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("client said {line:?} ({e})"))
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(self.child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.wait();
    }
}

/// Two directories for the filesystem server, each with a file.
struct Dirs {
    _tmp: tempfile::TempDir,
    a: PathBuf,
    b: PathBuf,
}

fn dirs() -> Dirs {
    let tmp = tempfile::tempdir().expect("temp dir");
    let root = tmp.path().canonicalize().expect("canonical temp dir");
    let (a, b) = (root.join("a"), root.join("b"));
    for dir in [&a, &b] {
        std::fs::create_dir(dir).unwrap();
        std::fs::write(dir.join("inside.txt"), "inside\n").unwrap();
    }
    Dirs { _tmp: tmp, a, b }
}

/// `[servers.NAME]` hosting the filesystem server on `dirs` with `extra`
/// lines (roots) and a pool of `min_ready` ready processes.
fn filesystem(name: &str, dirs: &[&Path], extra: &str, pool: &str) -> String {
    let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    let dirs: Vec<&str> = dirs.iter().map(String::as_str).collect();
    format!(
        "{}{extra}\n[servers.{name}.pool]\n{pool}\n",
        npm_server(name, "@modelcontextprotocol/server-filesystem", &dirs, &[])
    )
}

/// The server's lines once it has settled its directories after
/// `initialized` (whether roots were given, not offered, or refused).
const SETTLED: [&str; 4] = [
    "Updated allowed directories from MCP roots",
    "Client does not support MCP Roots",
    "Failed to request initial roots",
    "No valid root directories provided",
];

fn settled_count(berth: &Berth, server: &str) -> usize {
    let log = berth.server_log(server);
    SETTLED.iter().map(|line| log.matches(line).count()).sum()
}

fn wait_until(what: &str, berth: &Berth, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {within:?}\n--- berth log ---\n{}",
            berth.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Berth's log lines saying it dropped what a client said about its roots.
fn drops(berth: &Berth) -> usize {
    berth
        .log()
        .matches("dropped a client's message about its roots")
        .count()
}

/// Waits until `server` has a ready, initialized process.
fn wait_for_full_pool(berth: &Berth, server: &str) {
    wait_until(
        &format!("a ready process of `{server}`"),
        berth,
        Duration::from_secs(60),
        || {
            let ready = berth.status().iter().any(|s| {
                s["server"] == server
                    && s["processes"]
                        .as_array()
                        .is_some_and(|p| p.iter().any(|p| p["state"] == "ready"))
            });
            ready && settled_count(berth, server) >= 1
        },
    );
}

/// One hostile session on `server`: what it finds once the server has
/// settled its directories (`fresh`: its process is new, initialized with the
/// client's own `initialize`) and Berth has dropped the client's roots
/// messages.
fn hostile_session(berth: &Berth, server: &str, fresh: bool) -> serde_json::Value {
    let (settled, dropped) = (settled_count(berth, server), drops(berth));
    let client = Client::start(&berth.url(server), "hostile");
    let line = client.line(Duration::from_secs(60), "initialize", berth);
    assert_eq!(line, "initialized");
    wait_until(
        "the server settled and Berth dropped the client's roots messages",
        berth,
        Duration::from_secs(30),
        || {
            settled_count(berth, server) >= settled + usize::from(fresh)
                && drops(berth) >= dropped + 2
        },
    );
    client.probe(berth)
}

fn assert_confined(found: &serde_json::Value, allowed: &[&Path], berth: &Berth, server: &str) {
    let context = || {
        format!(
            "{found:#}\n--- {server} log ---\n{}",
            berth.server_log(server)
        )
    };
    let text = found["allowed"].as_str().unwrap_or_default();
    assert!(!text.contains("/etc"), "widened to /etc: {}", context());
    for dir in allowed {
        assert!(
            text.contains(&dir.display().to_string()),
            "{} not allowed: {}",
            dir.display(),
            context()
        );
    }
    for path in ["/etc/os-release", "/etc/hostname"] {
        let read = &found["read"][path];
        assert_eq!(read["error"], true, "{path} was read: {}", context());
        assert!(
            read["text"]
                .as_str()
                .unwrap_or_default()
                .contains("outside allowed directories"),
            "{path} not refused as outside the allowed directories: {}",
            context()
        );
    }
    assert_eq!(
        found["asked"],
        0,
        "the server asked the client: {}",
        context()
    );
}

/// Stops Berth and checks no filesystem server of `dirs` outlived it.
fn stop(berth: Berth, dirs: &Dirs) {
    berth.stop(Duration::from_secs(30));
    let needle = dirs.a.display().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_with_cmdline(&needle).is_empty() {
        assert!(
            Instant::now() < deadline,
            "servers outlived Berth: {:?}",
            processes_with_cmdline(&needle)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn fixed_roots_hold_against_a_hostile_client_with_a_full_or_an_empty_pool() {
    let d = dirs();
    // The server is started on A and B; its roots are A alone: once the
    // fixed list reaches it, only A is allowed.
    let roots = format!("roots = [{:?}]", d.a.display().to_string());
    let servers = [
        filesystem(
            "full",
            &[&d.a, &d.b],
            &roots,
            "min_ready = 1\npreinitialize = true",
        ),
        filesystem(
            "empty",
            &[&d.a, &d.b],
            &roots,
            "min_ready = 0\npreinitialize = true",
        ),
    ]
    .join("\n");
    let berth = Berth::start("", &servers);
    wait_for_full_pool(&berth, "full");
    let full = hostile_session(&berth, "full", false);
    let empty = hostile_session(&berth, "empty", true);
    assert_confined(&full, &[&d.a], &berth, "full");
    for found in [&full, &empty] {
        let text = found["allowed"].as_str().unwrap_or_default();
        assert!(
            !text.contains(&d.b.display().to_string()),
            "the fixed roots did not reach the server (B, from its args, is still allowed): {found:#}"
        );
    }
    // The same, whichever process the session got (the server's name aside).
    assert_eq!(
        full.to_string(),
        empty.to_string(),
        "a pooled and a fresh process differ"
    );
    stop(berth, &d);
}

#[test]
fn unset_roots_give_the_server_none_with_a_full_or_an_empty_pool() {
    let d = dirs();
    let servers = [
        filesystem(
            "full",
            &[&d.a, &d.b],
            "",
            "min_ready = 1\npreinitialize = true",
        ),
        filesystem(
            "empty",
            &[&d.a, &d.b],
            "",
            "min_ready = 0\npreinitialize = true",
        ),
    ]
    .join("\n");
    let berth = Berth::start("", &servers);
    wait_for_full_pool(&berth, "full");
    let full = hostile_session(&berth, "full", false);
    let empty = hostile_session(&berth, "empty", true);
    // Its own arguments decide: A and B.
    assert_confined(&full, &[&d.a, &d.b], &berth, "full");
    assert_eq!(
        full.to_string(),
        empty.to_string(),
        "a pooled and a fresh process differ"
    );
    let log = berth.server_log("empty");
    assert!(
        log.contains("Client does not support MCP Roots"),
        "the fresh process was told of the client's roots capability:\n{log}"
    );
    stop(berth, &d);
}

#[test]
fn client_roots_are_an_opt_in_for_pools_berth_does_not_initialize() {
    let d = dirs();
    let servers = filesystem(
        "byclient",
        &[&d.a],
        "roots = \"client\"",
        "min_ready = 0\npreinitialize = false",
    );
    let berth = Berth::start("", &servers);
    let client = Client::start(&berth.url("byclient"), "client");
    let line = client.line(Duration::from_secs(60), "initialize", &berth);
    assert_eq!(line, "initialized");
    let found = client.probe(&berth);
    let context = || {
        format!(
            "{found:#}\n--- server log ---\n{}",
            berth.server_log("byclient")
        )
    };
    // The client's /etc replaced the server's A: what `roots = "client"` means.
    let allowed = found["allowed"].as_str().unwrap_or_default();
    assert!(
        allowed.contains("/etc"),
        "client roots ignored: {}",
        context()
    );
    assert!(
        !allowed.contains(&d.a.display().to_string()),
        "{}",
        context()
    );
    // (In the sandbox /etc/hostname holds the server's name.)
    assert_eq!(
        found["read"]["/etc/hostname"]["error"],
        false,
        "{}",
        context()
    );
    assert!(found["asked"].as_u64().unwrap_or(0) >= 1, "{}", context());
    stop(berth, &d);

    // Where Berth initializes processes itself there is no client to ask.
    for pool in [
        "[servers.fs.pool]\npreinitialize = true\n",
        "binding = \"shared\"\n",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("berth.toml");
        let text = format!(
            "[gateway]\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\n\n[servers.fs]\ncommand = \"node\"\nroots = \"client\"\n{pool}",
            dir.path().display().to_string()
        );
        std::fs::write(&config, text).unwrap();
        for args in [&["check"][..], &["serve", "--config"][..]] {
            let (ok, out) = run_with_timeout(
                Command::new(berth_bin()).args(args).arg(&config),
                Duration::from_secs(20),
            );
            assert!(
                !ok,
                "berth {args:?} accepted roots = \"client\" with {pool:?}: {out}"
            );
            assert!(
                out.contains(
                    "servers.fs.roots = \"client\" needs a pool that does not pre-initialize"
                ),
                "berth {args:?}: {out}"
            );
        }
    }
}

use std::os::unix::process::CommandExt;
