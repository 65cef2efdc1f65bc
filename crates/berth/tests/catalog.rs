//! The catalog end to end: `berth add` installs every npm/PyPI entry on a
//! fresh data dir, one gateway hosts them all and answers `tools/list` on
//! each; `berth add github` asks for its token on a terminal; the `memory`
//! entry keeps every entity of concurrent sessions; entries come from a
//! registry speaking the MCP Registry API v0.1; errors name what is missing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Berth, Raw, run_with_timeout};
use serde_json::{Value, json};

fn entries_dir() -> PathBuf {
    common::repo().join("crates/catalog/entries")
}

fn entry(key: &str) -> Value {
    let text = std::fs::read_to_string(entries_dir().join(format!("{key}.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Every embedded entry: (key, document).
fn all_entries() -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = std::fs::read_dir(entries_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let key = p.file_stem().unwrap().to_str().unwrap().to_string();
            let doc = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            (key, doc)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// A fresh gateway directory with a config of `[gateway]` lines only; the
/// servers come from `berth add`.
fn fresh_dir(gateway: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("berth-catalog-")
        .tempdir()
        .unwrap();
    std::fs::write(
        dir.path().join("berth.toml"),
        format!(
            "[gateway]\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\n{gateway}\n",
            dir.path().display().to_string()
        ),
    )
    .unwrap();
    dir
}

/// `berth ARGS --config DIR/berth.toml`, stdin closed (no terminal).
fn berth_in(dir: &Path, args: &[&str], within: Duration) -> (bool, String) {
    let mut cmd = Command::new(common::berth_bin());
    cmd.args(args)
        .arg("--config")
        .arg(dir.join("berth.toml"))
        .env_remove("BERTH_CONFIG")
        .env_remove("BERTH_DATA_DIR");
    run_with_timeout(&mut cmd, within)
}

/// `berth add` arguments giving every required setting of `doc` a
/// placeholder (secrets through a file, as an operator would).
fn placeholder_args(doc: &Value, secret_file: &Path) -> Vec<String> {
    let mut args = Vec::new();
    let package = &doc["packages"][0];
    let mut inputs: Vec<(String, &Value)> = package["environmentVariables"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| (v["name"].as_str().unwrap_or_default().to_string(), v))
                .collect()
        })
        .unwrap_or_default();
    for arg in package["packageArguments"].as_array().into_iter().flatten() {
        let name = arg["valueHint"]
            .as_str()
            .or(arg["name"].as_str())
            .unwrap_or_default();
        inputs.push((name.to_string(), arg));
    }
    for (name, input) in inputs {
        let required = input["isRequired"].as_bool().unwrap_or(false);
        let fixed = input.get("value").is_some() || input.get("default").is_some();
        if !required || fixed {
            continue;
        }
        if input["isSecret"].as_bool().unwrap_or(false) {
            args.push("--secret".into());
            args.push(format!("{name}=@{}", secret_file.display()));
        } else {
            args.push("--env".into());
            args.push(format!("{name}=placeholder"));
        }
    }
    args
}

/// Validates `doc` against the vendored MCP Registry schema (2025-12-11).
fn schema_errors(doc: &Value) -> Vec<String> {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(common::repo().join("crates/catalog/schema/server.schema.json"))
            .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::draft7::new(&schema).expect("the schema compiles");
    validator
        .iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_catalog_package_installs_with_berth_add_and_answers_tools_list() {
    let dir = fresh_dir("");
    let secret_file = dir.path().join("placeholder-secret");
    std::fs::write(&secret_file, "placeholder-not-a-real-key\n").unwrap();
    let packaged: Vec<(String, Value)> = all_entries()
        .into_iter()
        .filter(|(_, doc)| doc["packages"].as_array().is_some_and(|p| !p.is_empty()))
        .collect();
    assert!(
        packaged.len() >= 17,
        "only {} npm/PyPI entries",
        packaged.len()
    );
    for (key, doc) in &packaged {
        let errors = schema_errors(doc);
        assert!(
            errors.is_empty(),
            "{key} does not match server.json 2025-12-11: {errors:?}"
        );
    }

    // Install four at a time: npm and pip are mostly waiting on the network.
    let queue = std::sync::Mutex::new(packaged.clone());
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                loop {
                    let Some((key, doc)) = queue.lock().unwrap().pop() else {
                        return;
                    };
                    let mut args: Vec<String> =
                        vec!["add".into(), key.clone(), "--no-reload".into()];
                    args.extend(placeholder_args(&doc, &secret_file));
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    let (ok, out) = berth_in(dir.path(), &args, Duration::from_secs(300));
                    if !ok {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("berth add {key}: {out}"));
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "installs failed:\n{}",
        failures.join("\n")
    );

    let config = dir.path().join("berth.toml");
    let (ok, out) = run_with_timeout(
        Command::new(common::berth_bin()).arg("check").arg(&config),
        Duration::from_secs(20),
    );
    assert!(ok, "berth check refused what berth add wrote: {out}");
    assert!(
        out.contains(&format!("{} from the catalog", packaged.len())),
        "{out}"
    );
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        !text.contains("placeholder-not-a-real-key"),
        "a secret reached the config:\n{text}"
    );
    assert!(
        !text.contains("npx"),
        "nothing may be fetched at run time:\n{text}"
    );

    // No package directory outside <data_dir>/packages/NAME/VERSION.
    for (key, doc) in &packaged {
        let version = doc["packages"][0]["version"].as_str().unwrap();
        let installed = dir.path().join("packages").join(key).join(version);
        assert!(
            installed.join("berth-package.json").exists(),
            "{} missing",
            installed.display()
        );
    }

    let berth = Berth::spawn(&["serve", "--config", config.to_str().unwrap()], dir);
    berth.wait_for_era_probes(Duration::from_secs(120));
    let answers = futures::future::join_all(packaged.iter().map(|(key, _)| {
        let url = berth.url(key);
        let key = key.clone();
        async move {
            let mut raw = Raw::new(url);
            raw.initialize("2025-06-18").await;
            let reply = raw
                .post(r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#)
                .await;
            let message = if reply.content_type().starts_with("text/event-stream") {
                reply.sse_messages().pop().unwrap_or_default()
            } else {
                reply.json()
            };
            raw.delete().await;
            (key, reply.status, message)
        }
    }))
    .await;
    let mut problems = Vec::new();
    for (key, status, message) in answers {
        let tools = message["result"]["tools"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0);
        if status != 200 || tools == 0 {
            problems.push(format!("{key}: HTTP {status}: {message}"));
        }
    }
    assert!(
        problems.is_empty(),
        "tools/list failed through Berth:\n{}\n\nlog:\n{}",
        problems.join("\n"),
        berth.log()
    );
}

/// `berth add github` on a terminal (a pty, driven by Python's pty module the
/// way a person at a keyboard would) asks for the token without echoing it.
#[tokio::test]
async fn berth_add_github_on_a_terminal_asks_for_the_token_and_the_server_sees_it() {
    let dir = fresh_dir("");
    let token = "ghp_test_0123456789abcdefTOKEN";
    let driver = r#"
import os, pty, sys, time, select, termios
berth, config, token = sys.argv[1], sys.argv[2], sys.argv[3]
env = {k: v for k, v in os.environ.items() if k not in ("BERTH_CONFIG", "BERTH_DATA_DIR")}
pid, fd = pty.fork()
if pid == 0:
    os.execve(berth, [berth, "add", "github", "--no-reload", "--config", config], env)
seen = b""
def read_until(needle, limit):
    global seen
    end = time.time() + limit
    while needle not in seen:
        left = end - time.time()
        if left <= 0:
            sys.exit("timed out waiting for %r; saw: %r" % (needle, seen))
        r, _, _ = select.select([fd], [], [], left)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                sys.exit("terminal closed before %r; saw: %r" % (needle, seen))
            if not chunk:
                sys.exit("terminal closed before %r; saw: %r" % (needle, seen))
            seen += chunk
read_until(b"GITHUB_PERSONAL_ACCESS_TOKEN", 30)
read_until(b": ", 5)
# Type only once the prompt has turned echo off, as a person would after
# seeing it (writing earlier races the prompt's own terminal setup).
end = time.time() + 10
while termios.tcgetattr(fd)[3] & termios.ECHO:
    if time.time() > end:
        sys.exit("the prompt never turned terminal echo off")
    time.sleep(0.01)
os.write(fd, token.encode() + b"\r")
rest = b""
end = time.time() + 300
while time.time() < end:
    r, _, _ = select.select([fd], [], [], 1)
    if r:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        rest += chunk
_, status = os.waitpid(pid, 0)
out = (seen + rest).decode(errors="replace")
print(out)
if token in out:
    sys.exit("the token was echoed on the terminal")
sys.exit(0 if os.waitstatus_to_exitcode(status) == 0 else "berth add failed")
"#;
    let config = dir.path().join("berth.toml");
    let (ok, out) = run_with_timeout(
        Command::new("python3")
            .arg("-c")
            .arg(driver)
            .arg(common::berth_bin())
            .arg(&config)
            .arg(token),
        Duration::from_secs(330),
    );
    assert!(ok, "berth add github on a terminal: {out}");
    assert!(out.contains("added `github`"), "{out}");

    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        !text.contains(token),
        "the token reached the config file:\n{text}"
    );
    assert!(
        text.contains(
            "GITHUB_PERSONAL_ACCESS_TOKEN = \"${secret:github.GITHUB_PERSONAL_ACCESS_TOKEN}\""
        ),
        "{text}"
    );
    let store = std::fs::read_to_string(dir.path().join("secrets.json")).unwrap_or_default();
    assert!(
        !store.contains(token),
        "the secret store holds the token in clear"
    );
    let (ok, out) = run_with_timeout(
        Command::new(common::berth_bin()).arg("check").arg(&config),
        Duration::from_secs(20),
    );
    assert!(
        ok && out.contains("ok (1 server(s), 1 from the catalog, 0 remote; 0 endpoint(s))"),
        "{out}"
    );

    let berth = Berth::spawn(&["serve", "--config", config.to_str().unwrap()], dir);
    berth.wait_for_era_probes(Duration::from_secs(60));
    let mut raw = Raw::new(berth.url("github"));
    raw.initialize("2025-06-18").await;
    // The process serving this session has the token in its environment.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let environ = loop {
        let found = common::descendants_of(berth.pid())
            .into_iter()
            .find_map(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
                if !String::from_utf8_lossy(&cmdline).contains("server-github") {
                    return None;
                }
                std::fs::read(format!("/proc/{pid}/environ")).ok()
            });
        if let Some(environ) = found {
            break environ;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no github server process found"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let wanted = format!("GITHUB_PERSONAL_ACCESS_TOKEN={token}");
    assert!(
        environ
            .split(|&b| b == 0)
            .any(|var| var == wanted.as_bytes()),
        "the github server does not see its token"
    );
    let reply = raw
        .post(r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#)
        .await;
    assert!(reply.body.contains("create_issue"), "{}", reply.body);
}

/// The catalog's `memory` entry is shared by one process: 20 sessions
/// writing at once lose no entity.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_sessions_on_the_memory_entry_lose_no_entity() {
    let dir = fresh_dir("");
    let (ok, out) = berth_in(
        dir.path(),
        &["add", "memory", "--no-reload"],
        Duration::from_secs(300),
    );
    assert!(ok, "berth add memory: {out}");
    let config = dir.path().join("berth.toml");
    let berth = Berth::spawn(&["serve", "--config", config.to_str().unwrap()], dir);
    berth.wait_for_era_probes(Duration::from_secs(60));
    let url = berth.url("memory");
    let writers = (0..20).map(|i| {
        let url = url.clone();
        async move {
            let mut raw = Raw::new(url);
            raw.initialize("2025-06-18").await;
            let reply = raw
                .call_tool(
                    2,
                    "create_entities",
                    json!({"entities": [{"name": format!("entity-{i}"), "entityType": "test", "observations": [format!("written by session {i}")]}]}),
                )
                .await;
            assert_eq!(reply.status, 200, "session {i}: {}", reply.body);
            assert!(!reply.body.contains("\"isError\":true"), "session {i}: {}", reply.body);
            raw.delete().await;
        }
    });
    futures::future::join_all(writers).await;

    let mut raw = Raw::new(url);
    raw.initialize("2025-06-18").await;
    let reply = raw.call_tool(3, "read_graph", json!({})).await;
    let names: Vec<String> = (0..20)
        .filter(|i| {
            !reply.body.contains(&format!("entity-{i}\\\""))
                && !reply.body.contains(&format!("entity-{i}\""))
        })
        .map(|i| format!("entity-{i}"))
        .collect();
    assert!(
        names.is_empty(),
        "lost {} of 20 entities: {names:?}\n{}",
        names.len(),
        reply.body
    );
    // One process served them all.
    let status = berth.status();
    let memory = status.iter().find(|s| s["server"] == "memory").unwrap();
    assert!(
        memory["processes"].as_array().is_some_and(|p| p.len() == 1),
        "{memory}"
    );
}

/// A registry speaking the MCP Registry API v0.1, serving recorded pages.
async fn recorded_registry() -> (String, tokio::task::JoinHandle<()>) {
    use axum::extract::Query;
    use std::collections::HashMap;
    let pages = common::repo().join("crates/berth/tests/data/registry");
    let page = move |Query(query): Query<HashMap<String, String>>| {
        let pages = pages.clone();
        async move {
            let name = match query.get("cursor").map(String::as_str) {
                None => "page-1.json",
                Some("page-2") => "page-2.json",
                Some(_) => {
                    return (
                        axum::http::StatusCode::BAD_REQUEST,
                        "bad cursor".to_string(),
                    );
                }
            };
            (
                axum::http::StatusCode::OK,
                std::fs::read_to_string(pages.join(name)).unwrap(),
            )
        }
    };
    let app = axum::Router::new().route("/v0.1/servers", axum::routing::get(page));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_from_a_registry_are_listed_and_added() {
    let (url, registry) = recorded_registry().await;
    let dir = fresh_dir("");
    let path = dir.path().to_path_buf();
    let list_url = url.clone();
    let (ok, out) = tokio::task::spawn_blocking(move || {
        berth_in(
            &path,
            &["catalog", "list", "--registry", &list_url],
            Duration::from_secs(30),
        )
    })
    .await
    .unwrap();
    assert!(ok, "{out}");
    // Both pages were read (the second through the cursor of the first).
    assert!(out.contains("mcp-server-time"), "{out}");
    assert!(
        out.contains("weather-remote") || out.contains("skipped"),
        "{out}"
    );
    assert!(
        out.contains("only lists remotes"),
        "a remote-only entry is reported: {out}"
    );
    assert!(
        out.contains("registry-everything"),
        "page 2 was not read: {out}"
    );

    let path = dir.path().to_path_buf();
    let add_url = url.clone();
    let (ok, out) = tokio::task::spawn_blocking(move || {
        berth_in(
            &path,
            &[
                "add",
                "io.github.example/mcp-server-time",
                "--as",
                "clock",
                "--no-reload",
                "--registry",
                &add_url,
            ],
            Duration::from_secs(300),
        )
    })
    .await
    .unwrap();
    assert!(ok, "{out}");
    let text = std::fs::read_to_string(dir.path().join("berth.toml")).unwrap();
    assert!(text.contains("[servers.clock]"), "{text}");
    assert!(text.contains("catalog = \"mcp-server-time@"), "{text}");
    registry.abort();

    let config = dir.path().join("berth.toml");
    let berth = Berth::spawn(&["serve", "--config", config.to_str().unwrap()], dir);
    berth.wait_for_era_probes(Duration::from_secs(60));
    let mut raw = Raw::new(berth.url("clock"));
    raw.initialize("2025-06-18").await;
    let reply = raw
        .post(r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#)
        .await;
    assert!(reply.body.contains("get_current_time"), "{}", reply.body);
}

#[test]
fn add_errors_name_what_is_missing() {
    let dir = fresh_dir("");
    // A required secret, no terminal to ask on.
    let (ok, out) = berth_in(dir.path(), &["add", "github"], Duration::from_secs(30));
    assert!(!ok);
    assert!(
        out.contains(
            "GITHUB_PERSONAL_ACCESS_TOKEN (secret: --secret GITHUB_PERSONAL_ACCESS_TOKEN=@FILE)"
        ),
        "{out}"
    );
    // A secret on the command line is refused.
    let (ok, out) = berth_in(
        dir.path(),
        &[
            "add",
            "github",
            "--secret",
            "GITHUB_PERSONAL_ACCESS_TOKEN=abc",
        ],
        Duration::from_secs(30),
    );
    assert!(!ok && out.contains("@FILE"), "{out}");
    // Unknown entries suggest similar ones.
    let (ok, out) = berth_in(dir.path(), &["add", "sq"], Duration::from_secs(30));
    assert!(
        !ok && out.contains("similar: ") && out.contains("sqlite"),
        "{out}"
    );
    // Node and Python absent.
    for (key, needed) in [
        ("memory", "Node.js (`node`)"),
        ("time", "Python 3 (`python3`)"),
    ] {
        let mut cmd = Command::new(common::berth_bin());
        cmd.args(["add", key, "--no-reload", "--config"])
            .arg(dir.path().join("berth.toml"))
            .env("PATH", "/nonexistent");
        let (ok, out) = run_with_timeout(&mut cmd, Duration::from_secs(30));
        assert!(
            !ok && out.contains(needed) && out.contains("not found on PATH"),
            "{out}"
        );
    }
    // A package version that does not exist.
    let mut doc = entry("time");
    doc["version"] = json!("1999.1.1");
    doc["packages"][0]["version"] = json!("1999.1.1");
    let from = dir.path().join("old-time.json");
    std::fs::write(&from, doc.to_string()).unwrap();
    let (ok, out) = berth_in(
        dir.path(),
        &["add", "--from", from.to_str().unwrap(), "--no-reload"],
        Duration::from_secs(120),
    );
    assert!(
        !ok && out.contains("PyPI has no package mcp-server-time at version 1999.1.1"),
        "{out}"
    );
    let mut doc = entry("memory");
    doc["packages"][0]["version"] = json!("0.0.0-nope");
    std::fs::write(&from, doc.to_string()).unwrap();
    let (ok, out) = berth_in(
        dir.path(),
        &["add", "--from", from.to_str().unwrap(), "--no-reload"],
        Duration::from_secs(120),
    );
    assert!(
        !ok && out.contains(
            "npm has no package @modelcontextprotocol/server-memory at version 0.0.0-nope"
        ),
        "{out}"
    );
    // Nothing was left behind by the failures.
    let text = std::fs::read_to_string(dir.path().join("berth.toml")).unwrap();
    assert!(!text.contains("[servers."), "{text}");
    assert!(!dir.path().join("packages/time/1999.1.1").exists());
}

/// `upgrade` moves a server to the catalog's pin keeping the operator's own
/// settings; `remove` takes the server, its package and its secrets away;
/// both reload the running gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_and_remove_follow_the_catalog_and_reload_the_gateway() {
    let dir = fresh_dir("");
    let current = entry("time");
    let pinned = current["version"].as_str().unwrap().to_string();
    let older = "2025.9.25";
    assert_ne!(pinned, older);
    let mut doc = current.clone();
    doc["version"] = json!(older);
    doc["packages"][0]["version"] = json!(older);
    let from = dir.path().join("time-older.json");
    std::fs::write(&from, doc.to_string()).unwrap();
    let path = dir.path().to_path_buf();
    let (ok, out) = berth_in(
        &path,
        &["add", "--from", from.to_str().unwrap(), "--no-reload"],
        Duration::from_secs(300),
    );
    assert!(ok, "{out}");
    // The operator changes a setting of their own.
    let config = dir.path().join("berth.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let log_file = dir.path().join("time.log");
    std::fs::write(
        &config,
        text.replace(
            "[servers.time]\n",
            &format!(
                "[servers.time]\nlog_file = {:?} # mine\n",
                log_file.display().to_string()
            ),
        ),
    )
    .unwrap();

    let berth = Berth::spawn(&["serve", "--config", config.to_str().unwrap()], dir);
    berth.wait_for_era_probes(Duration::from_secs(60));
    let root = berth.dir.path().to_path_buf();
    let (ok, out) = tokio::task::spawn_blocking({
        let root = root.clone();
        move || berth_in(&root, &["upgrade", "time"], Duration::from_secs(300))
    })
    .await
    .unwrap();
    assert!(ok, "{out}");
    assert!(out.contains(&format!("{older} → {pinned}")), "{out}");
    assert!(
        out.contains("reloaded: added -; changed time"),
        "the gateway was not reloaded: {out}"
    );
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains(&format!("catalog = \"time@{pinned}\"")),
        "{text}"
    );
    assert!(
        text.contains(" # mine"),
        "the operator's line was lost:\n{text}"
    );
    assert!(
        !root.join("packages/time").join(older).exists(),
        "the old version stays"
    );
    let mut raw = Raw::new(berth.url("time"));
    raw.initialize("2025-06-18").await;
    let reply = raw
        .post(r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#)
        .await;
    assert!(reply.body.contains("get_current_time"), "{}", reply.body);

    let (ok, out) = tokio::task::spawn_blocking({
        let root = root.clone();
        move || berth_in(&root, &["remove", "time"], Duration::from_secs(60))
    })
    .await
    .unwrap();
    assert!(ok, "{out}");
    assert!(
        out.contains("removed time"),
        "the gateway was not reloaded: {out}"
    );
    assert!(!root.join("packages/time").exists());
    assert!(
        !std::fs::read_to_string(&config)
            .unwrap()
            .contains("[servers.time]")
    );
    let (ok, _) = berth_in(&root, &["remove", "time"], Duration::from_secs(20));
    assert!(!ok, "removing twice must fail");
}

/// `berth add postgres` asks for the DSN (a secret), writes the built-in with
/// its options, and lets its sandbox reach exactly the host:port the DSN
/// names; the server answers through Berth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_builtin_from_the_catalog_reaches_the_database_its_dsn_names() {
    if std::net::TcpStream::connect_timeout(
        &"127.0.0.1:5432".parse().unwrap(),
        Duration::from_secs(2),
    )
    .is_err()
    {
        let why = "PostgreSQL is not listening on 127.0.0.1:5432";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
        eprintln!("skipped: {why}");
        return;
    }
    let dir = fresh_dir("");
    let dsn_file = dir.path().join("dsn");
    std::fs::write(&dsn_file, "postgresql://root@127.0.0.1:5432/test\n").unwrap();
    let (ok, out) = berth_in(
        dir.path(),
        &[
            "add",
            "postgres",
            "--as",
            "db",
            "--no-reload",
            "--secret",
            &format!("dsn=@{}", dsn_file.display()),
        ],
        Duration::from_secs(30),
    );
    assert!(ok, "{out}");
    let config = dir.path().join("berth.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("builtin = \"postgres\""), "{text}");
    assert!(text.contains("dsn = \"${secret:db.dsn}\""), "{text}");
    assert!(text.contains("allow = [\"127.0.0.1:5432\"]"), "{text}");
    assert!(
        !text.contains("root@127.0.0.1"),
        "the DSN reached the config:\n{text}"
    );

    let berth = Berth::spawn(&["serve", "--config", config.to_str().unwrap()], dir);
    berth.wait_for_era_probes(Duration::from_secs(60));
    let mut raw = Raw::new(berth.url("db"));
    raw.initialize("2025-06-18").await;
    let reply = raw
        .call_tool(
            2,
            "query",
            json!({"sql": "SELECT current_database() AS db"}),
        )
        .await;
    assert!(
        reply.body.contains("test"),
        "{}\n{}",
        reply.body,
        berth.server_log("db")
    );
    assert!(!reply.body.contains("\"isError\":true"), "{}", reply.body);
}

/// An npm server whose HTTP client ignores `HTTPS_PROXY` (gitlab: node-fetch)
/// reaches its API through the sandbox's egress proxy once `berth add` has
/// preloaded the proxy agents (`node_proxy`), and only where the allow list says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_fetch_server_goes_through_the_egress_proxy_to_allowed_hosts_only() {
    use std::sync::{Arc, Mutex};
    // A stand-in for the GitLab API on loopback, recording what reaches it.
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = {
        let seen = seen.clone();
        move |headers: axum::http::HeaderMap, uri: axum::http::Uri| {
            let seen = seen.clone();
            async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                seen.lock().unwrap().push(format!("{uri} {auth}"));
                axum::Json(json!([{"id": 1, "name": "berth", "path_with_namespace": "x/berth"}]))
            }
        }
    };
    let app = axum::Router::new().fallback(record);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = listener.local_addr().unwrap();
    let fake = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let dir = fresh_dir("");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "glpat-test-token\n").unwrap();
    let path = dir.path().to_path_buf();
    let (ok, out) = tokio::task::spawn_blocking(move || {
        berth_in(
            &path,
            &[
                "add",
                "gitlab",
                "--no-reload",
                "--secret",
                &format!("GITLAB_PERSONAL_ACCESS_TOKEN=@{}", token_file.display()),
                "--env",
                &format!("GITLAB_API_URL=http://{api}/api/v4"),
            ],
            Duration::from_secs(300),
        )
    })
    .await
    .unwrap();
    assert!(ok, "{out}");
    let config = dir.path().join("berth.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("NODE_OPTIONS = \"--require "), "{text}");
    assert!(text.contains("allow = [\"gitlab.com:443\"]"), "{text}");

    // The catalog's allow list does not name the stand-in: refused, and said so.
    let berth = Berth::spawn(&["serve", "--config", config.to_str().unwrap()], dir);
    berth.wait_for_era_probes(Duration::from_secs(60));
    let mut raw = Raw::new(berth.url("gitlab"));
    raw.initialize("2025-06-18").await;
    let reply = raw
        .call_tool(2, "search_repositories", json!({"search": "berth"}))
        .await;
    assert!(
        reply.body.contains("\"isError\":true") || reply.body.contains("error"),
        "{}",
        reply.body
    );
    assert!(
        seen.lock().unwrap().is_empty(),
        "the server reached the API around the proxy"
    );
    berth.wait_for_log(
        "gitlab",
        &format!("is not in sandbox.allow (add \"{api}\" to [servers.gitlab.sandbox] allow)"),
        1,
        Duration::from_secs(10),
    );

    // Allowed: the request goes through the proxy with the stored token.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(
            "\"gitlab.com:443\"",
            &format!("\"gitlab.com:443\", \"{api}\""),
        ),
    )
    .unwrap();
    let (ok, out) = berth.cli(&["reload"]);
    assert!(ok && out.contains("changed gitlab"), "{out}");
    let mut raw = Raw::new(berth.url("gitlab"));
    raw.initialize("2025-06-18").await;
    let reply = raw
        .call_tool(2, "search_repositories", json!({"search": "berth"}))
        .await;
    // What the stand-in answers need not satisfy the server's schema: the
    // request reaching it, with the stored token, is the point.
    assert!(!reply.body.contains("egress refused"), "{}", reply.body);
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|r| r.starts_with("/api/v4/projects?search=berth")
                && r.ends_with("Bearer glpat-test-token")),
        "{seen:?}"
    );
    fake.abort();
}
