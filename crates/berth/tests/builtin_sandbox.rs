//! The built-in `sandbox` server end to end: run by the real `berth`
//! binary as `berth builtin sandbox` inside Berth's process sandbox (the
//! default), driven over MCP Streamable HTTP.
//!
//! Data directories live under `CARGO_TARGET_TMPDIR` (a sandbox's private
//! `/tmp` would hide one in `/tmp`). Sleep durations are unique per test so
//! the host-wide process checks cannot see another test's processes.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    Berth, Launch, Raw, berth_bin, children_of, descendants_of, processes_with_cmdline,
    run_with_timeout,
};
use serde_json::{Value, json};

const VERSION: &str = "2025-11-25";

fn data_parent() -> &'static Path {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
}

/// A gateway hosting the sandbox built-in, with `env` in its server table.
fn start(env: &[(&str, &str)]) -> Berth {
    let env_toml: Vec<String> = env.iter().map(|(k, v)| format!("{k} = {v:?}")).collect();
    let servers = format!(
        "[servers.sandbox]\ncommand = {:?}\nargs = [\"builtin\", \"sandbox\"]\nenv = {{ {} }}\n",
        berth_bin().display().to_string(),
        env_toml.join(", ")
    );
    Berth::launch(Launch {
        gateway: "",
        servers: &servers,
        data_parent: Some(data_parent()),
        ..Launch::default()
    })
}

async fn session(berth: &Berth) -> Raw {
    let mut raw = Raw::new(berth.url("sandbox"));
    let init = raw.initialize(VERSION).await;
    assert_eq!(
        init["result"]["serverInfo"]["name"], "berth-sandbox",
        "{init}"
    );
    raw
}

/// A tools/call: the structured result, or the tool error's text.
async fn call(raw: &Raw, name: &str, args: Value) -> Result<Value, String> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let reply = raw.call_tool(id, name, args.clone()).await;
    assert_eq!(reply.status, 200, "{name} {args}: {}", reply.body);
    let message = if reply.content_type().starts_with("text/event-stream") {
        reply
            .sse_messages()
            .into_iter()
            .find(|m| m["id"] == id)
            .unwrap_or_else(|| panic!("no answer to {name}: {}", reply.body))
    } else {
        reply.json()
    };
    let result = &message["result"];
    assert!(
        result.is_object(),
        "{name} {args}: not a tool result: {message}"
    );
    if result["isError"] == true {
        return Err(result["content"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .to_string());
    }
    Ok(result["structuredContent"].clone())
}

async fn ok(raw: &Raw, name: &str, args: Value) -> Value {
    call(raw, name, args.clone())
        .await
        .unwrap_or_else(|e| panic!("{name} {args} failed: {e}"))
}

async fn refused(raw: &Raw, name: &str, args: Value) -> String {
    match call(raw, name, args.clone()).await {
        Ok(v) => panic!("{name} {args} should have been refused, got {v}"),
        Err(e) => e,
    }
}

/// The workspace's path inside the sandbox (`/state/workspaces/<id>`) and on the host.
async fn workspace(raw: &Raw, berth: &Berth) -> (String, PathBuf) {
    let out = ok(raw, "exec", json!({"argv": ["pwd"]})).await;
    let inside = out["stdout"].as_str().unwrap().trim().to_string();
    let id = inside
        .strip_prefix("/state/workspaces/")
        .unwrap_or_else(|| panic!("unexpected workspace {inside}"));
    let host = berth.dir.path().join("state/sandbox/workspaces").join(id);
    assert!(host.is_dir(), "{} is missing", host.display());
    (inside, host)
}

fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what} (waited {within:?})");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_for_no_process(needle: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let left = processes_with_cmdline(needle);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "processes with `{needle}` still run after {within:?}: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until no descendant of Berth is a zombie: every process a
/// session's commands left (orphans included) has been reaped.
fn wait_for_no_zombies(berth: &Berth, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let zombies: Vec<u32> = descendants_of(berth.pid())
            .into_iter()
            .flat_map(children_of)
            .filter(|(_, state)| *state == 'Z')
            .map(|(pid, _)| pid)
            .collect();
        if zombies.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "zombies under Berth after {within:?}: {zombies:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn paths_are_confined_to_the_workspace() {
    let berth = start(&[]);
    let raw = session(&berth).await;

    // Nested paths work.
    let w = ok(
        &raw,
        "fs_write",
        json!({"path": "a/b/c.txt", "content": "hello\n"}),
    )
    .await;
    assert_eq!(w["bytes_written"], 6);
    let r = ok(&raw, "fs_read", json!({"path": "a/b/../b/c.txt"})).await;
    assert_eq!(r["content"], "hello\n");
    let l = ok(&raw, "fs_list", json!({"path": ".", "recursive": true})).await;
    let paths: Vec<&str> = l["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["a", "a/b", "a/b/c.txt"]);

    // Traversal.
    for path in ["../x", "a/../../x", "/etc/passwd"] {
        let e = refused(&raw, "fs_read", json!({"path": path})).await;
        assert!(
            e.contains(&format!("`{path}`")) && e.contains("refused"),
            "{path}: {e}"
        );
    }
    let e = refused(
        &raw,
        "fs_write",
        json!({"path": "../escape.txt", "content": "x"}),
    )
    .await;
    assert!(e.contains("out of the workspace"), "{e}");
    let e = refused(&raw, "exec", json!({"argv": ["pwd"], "cwd": ".."})).await;
    assert!(e.contains("cwd") && e.contains("refused"), "{e}");

    // Symlinks planted by a command, to the root, to /etc, and upwards.
    let made = ok(
        &raw,
        "exec",
        json!({"argv": ["sh", "-c", "ln -s / root && ln -s /etc etc && ln -s ../.. up && ln -s a/b inside"]}),
    )
    .await;
    assert_eq!(made["exit_code"], 0, "{made}");
    for (tool, args) in [
        ("fs_read", json!({"path": "etc/passwd"})),
        ("fs_read", json!({"path": "root/etc/passwd"})),
        ("fs_read", json!({"path": "up/berth.toml"})),
        ("fs_write", json!({"path": "etc/evil", "content": "x"})),
        (
            "fs_write",
            json!({"path": "root/state/evil", "content": "x"}),
        ),
        (
            "fs_write",
            json!({"path": "etc/new/dir/evil", "content": "x"}),
        ),
        ("fs_list", json!({"path": "root"})),
        ("fs_list", json!({"path": "etc"})),
        (
            "fs_edit",
            json!({"path": "etc/passwd", "old_text": "root", "new_text": "toor"}),
        ),
        ("fs_search", json!({"path": "root", "content": "root"})),
        (
            "fs_delete",
            json!({"path": "root/state", "recursive": true}),
        ),
        ("exec", json!({"argv": ["pwd"], "cwd": "etc"})),
    ] {
        let e = refused(&raw, tool, args.clone()).await;
        assert!(e.contains("outside the workspace"), "{tool} {args}: {e}");
    }
    // A symlink that stays inside is followed; the links themselves can be
    // inspected and removed (not what they point to).
    let r = ok(&raw, "fs_read", json!({"path": "inside/c.txt"})).await;
    assert_eq!(r["content"], "hello\n");
    let s = ok(&raw, "fs_stat", json!({"path": "etc"})).await;
    assert_eq!(
        (s["type"].as_str(), s["link_target"].as_str()),
        (Some("symlink"), Some("/etc"))
    );
    ok(&raw, "fs_delete", json!({"path": "root"})).await;
    // Recursive listing and search never descend through a symlink.
    let l = ok(&raw, "fs_list", json!({"recursive": true})).await;
    assert!(
        l["entries"].as_array().unwrap().len() < 10,
        "the listing went through a symlink: {l}"
    );
    let found = ok(&raw, "fs_search", json!({"content": "root:"})).await;
    assert_eq!(found["matches"], json!([]), "{found}");
    // The host was not touched.
    assert!(!berth.dir.path().join("state/evil").exists());
    assert!(berth.dir.path().join("berth.toml").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timeout_kills_the_whole_tree() {
    let berth = start(&[]);
    let raw = session(&berth).await;
    let started = Instant::now();
    let out = ok(
        &raw,
        "exec",
        json!({"argv": ["sh", "-c", "sleep 7301 & setsid sleep 7302 & (setsid sleep 7303 &) ; sleep 7304"], "timeout_ms": 500}),
    )
    .await;
    assert_eq!(out["timed_out"], true, "{out}");
    assert_eq!(out["signal"], "SIGKILL", "{out}");
    assert!(out["exit_code"].is_null(), "{out}");
    assert!(started.elapsed() < Duration::from_secs(20), "{out}");
    // The double-forked `sleep 7303` left the command's tree and session:
    // it must be gone all the same.
    wait_for_no_process("sleep 730", Duration::from_secs(10));
    wait_for_no_zombies(&berth, Duration::from_secs(10));
    // The session still works afterwards.
    let again = ok(&raw, "exec", json!({"argv": ["echo", "still here"]})).await;
    assert_eq!(again["stdout"], "still here\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn what_a_command_leaves_running_is_killed_when_it_exits() {
    let berth = start(&[]);
    let raw = session(&berth).await;
    let out = ok(
        &raw,
        "exec",
        json!({"argv": ["sh", "-c", "sleep 7321 > /dev/null 2>&1 & (setsid sleep 7322 > /dev/null 2>&1 &); echo done"]}),
    )
    .await;
    assert_eq!(
        (out["exit_code"].as_i64(), out["timed_out"].as_bool()),
        (Some(0), Some(false)),
        "{out}"
    );
    assert_eq!(out["stdout"], "done\n");
    wait_for_no_process("sleep 732", Duration::from_secs(10));
    wait_for_no_zombies(&berth, Duration::from_secs(10));
}

/// A cancelled exec takes its whole tree down at once, not at its timeout.
#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_exec_is_killed() {
    let berth = start(&[]);
    let raw = session(&berth).await;
    let mut other = Raw::new(berth.url("sandbox"));
    other.session = raw.session.clone();
    let call = tokio::spawn(async move {
        other
            .call_tool(
                900,
                "exec",
                json!({"argv": ["sh", "-c", "(setsid sleep 7341 &); sleep 7342"], "timeout_ms": 120_000}),
            )
            .await
    });
    wait_until("the command should start", Duration::from_secs(15), || {
        processes_with_cmdline("sleep 734").len() >= 3
    });
    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                        "params": {"requestId": 900, "reason": "changed my mind"}});
    assert_eq!(raw.post(&cancel.to_string()).await.status, 202);
    wait_for_no_process("sleep 734", Duration::from_secs(10));
    wait_for_no_zombies(&berth, Duration::from_secs(10));
    call.abort();
    let again = ok(&raw, "exec", json!({"argv": ["echo", "on"]})).await;
    assert_eq!(again["stdout"], "on\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn output_is_capped() {
    let berth = start(&[]);
    let raw = session(&berth).await;
    let started = Instant::now();
    let reply = raw
        .call_tool(
            1,
            "exec",
            json!({"argv": ["sh", "-c", "head -c 5000000 /dev/zero | tr '\\0' a; echo fine >&2"], "output_limit": 65536}),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert!(
        reply.body.len() < 300 << 10,
        "the answer is {} bytes",
        reply.body.len()
    );
    let out = ok(
        &raw,
        "exec",
        json!({"argv": ["sh", "-c", "head -c 5000000 /dev/zero | tr '\\0' a; echo fine >&2"], "output_limit": 65536}),
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(out["stdout_truncated"], true, "{}", out["stderr"]);
    assert_eq!(out["stderr_truncated"], false);
    assert_eq!(out["stderr"], "fine\n");
    assert_eq!(out["exit_code"], 0);
    let stdout = out["stdout"].as_str().unwrap();
    let marker = format!("\n[... output truncated: {} more bytes]", 5_000_000 - 65536);
    assert!(
        stdout.ends_with(&marker),
        "{}",
        &stdout[stdout.len().saturating_sub(100)..]
    );
    assert_eq!(stdout.len(), 65536 + marker.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_never_see_each_other() {
    let berth = start(&[]);
    let a = session(&berth).await;
    let b = session(&berth).await;
    ok(
        &a,
        "fs_write",
        json!({"path": "secret.txt", "content": "A's secret"}),
    )
    .await;
    let (a_inside, a_host) = workspace(&a, &berth).await;
    let (b_inside, b_host) = workspace(&b, &berth).await;
    assert_ne!(a_host, b_host);
    let a_id = a_host.file_name().unwrap().to_str().unwrap().to_string();

    let listing = ok(&b, "fs_list", json!({"path": "."})).await;
    assert_eq!(listing["entries"], json!([]), "{listing}");
    let e = refused(&b, "fs_read", json!({"path": "secret.txt"})).await;
    assert!(e.contains("does not exist"), "{e}");
    for path in [
        format!("../{a_id}/secret.txt"),
        format!("{a_inside}/secret.txt"),
        "..".to_string(),
    ] {
        let e = refused(&b, "fs_read", json!({"path": path})).await;
        assert!(e.contains("refused"), "{path}: {e}");
        let e = refused(&b, "fs_list", json!({"path": path})).await;
        assert!(e.contains("refused"), "{path}: {e}");
    }
    // A link to A's workspace, made by B's own command, leads nowhere either.
    ok(&b, "exec", json!({"argv": ["ln", "-s", a_inside, "a"]})).await;
    ok(
        &b,
        "exec",
        json!({"argv": ["ln", "-s", format!("../{a_id}"), "rel"]}),
    )
    .await;
    for path in ["a/secret.txt", "rel/secret.txt"] {
        let e = refused(&b, "fs_read", json!({"path": path})).await;
        assert!(e.contains("outside the workspace"), "{path}: {e}");
    }
    let e = refused(
        &b,
        "fs_write",
        json!({"path": "rel/secret.txt", "content": "B"}),
    )
    .await;
    assert!(e.contains("outside the workspace"), "{e}");
    assert_eq!(
        std::fs::read_to_string(a_host.join("secret.txt")).unwrap(),
        "A's secret"
    );
    assert!(b_inside.starts_with("/state/workspaces/"));
}

/// Commands (not only the file tools) are walled off from other sessions'
/// workspaces and the rest of the server's state directory, and still work
/// normally in their own.
#[tokio::test(flavor = "multi_thread")]
async fn commands_never_see_other_workspaces() {
    let berth = start(&[]);
    let a = session(&berth).await;
    let b = session(&berth).await;
    let name = "hidden-from-b-7c1e.txt";
    let secret = "A-secret-5f0d2";
    ok(&a, "fs_write", json!({"path": name, "content": secret})).await;
    let (a_inside, a_host) = workspace(&a, &berth).await;
    let (b_inside, _) = workspace(&b, &berth).await;
    let a_id = a_host.file_name().unwrap().to_str().unwrap().to_string();
    // A's own commands see its file.
    let own = ok(&a, "exec", json!({"argv": ["cat", name]})).await;
    assert_eq!(own["stdout"], secret, "{own}");

    let sh = |script: String| json!({"argv": ["sh", "-c", script]});
    for script in [
        "ls -la /state/workspaces".to_string(),
        format!("cat /state/workspaces/*/{name}"),
        format!("cat {a_inside}/{name}"),
        format!("cat ../{a_id}/{name}"),
        format!("ls -la {a_inside} ..; ls /state; ls -R /state"),
        format!("find / -name '{name}' 2>/dev/null"),
        format!(
            "find /state -name '*' 2>/dev/null; grep -r '{secret}' /state /proc/1/root/state 2>/dev/null"
        ),
        format!("cat /proc/1/root{a_inside}/{name} /proc/1/cwd/../{a_id}/{name}"),
        format!("ln -s {a_inside} a && cat a/{name}; cp -r {a_inside} copy && ls copy"),
        format!("mv {a_inside} stolen; ls stolen"),
    ] {
        let out = ok(&b, "exec", sh(script.clone())).await;
        let text = format!("{}{}", out["stdout"], out["stderr"]);
        assert!(
            !text.contains(secret)
                && !text.contains(&format!("{name}\n"))
                && !text.contains(&format!("{name}\"")),
            "{script}: B saw A's file: {out}"
        );
        if !script.starts_with("find /state") {
            assert!(
                !out["stdout"].as_str().unwrap().contains(&a_id),
                "{script}: {out}"
            );
        }
    }
    // Background processes are behind the same wall.
    let p = ok(
        &b,
        "process_start",
        sh(format!("cat {a_inside}/{name}; echo done")),
    )
    .await;
    let id = p["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(15);
    let logs = loop {
        let logs = ok(&b, "process_logs", json!({"id": id})).await;
        if logs["stdout"].as_str().unwrap().contains("done") {
            break logs;
        }
        assert!(
            Instant::now() < deadline,
            "the background cat did not end: {logs}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!logs.to_string().contains(secret), "{logs}");
    // A's file is untouched.
    assert_eq!(std::fs::read_to_string(a_host.join(name)).unwrap(), secret);

    // B's own workspace, /tmp and the usual devices work.
    ok(
        &b,
        "fs_write",
        json!({"path": "mine.txt", "content": "B's own\n"}),
    )
    .await;
    for (script, expected) in [
        ("cat mine.txt", "B's own\n".to_string()),
        (
            "cd \"$HOME\" && touch x && ls x && pwd",
            format!("x\n{b_inside}\n"),
        ),
        ("echo hi > /tmp/x && cat /tmp/x", "hi\n".into()),
        (
            "echo shm > /dev/shm/y && cat /dev/shm/y && rm /dev/shm/y",
            "shm\n".into(),
        ),
        (
            "echo gone > /dev/null; head -c 4 /dev/zero | od -An -tx1 | tr -d ' \n'; echo",
            "00000000\n".into(),
        ),
        ("head -c 8 /dev/urandom | wc -c", "8\n".into()),
        ("printf 'b\na\n' | sort | tr a-z A-Z", "A\nB\n".into()),
        (
            "mkdir -p d/e && mv mine.txt d/e/ && ln -s d/e/mine.txt l && cat l && rm -r d l",
            "B's own\n".into(),
        ),
        ("mv /tmp/x ./moved && cat moved && rm moved", "hi\n".into()),
        (
            "ls /usr/bin/env /etc/passwd >/dev/null && echo ok",
            "ok\n".into(),
        ),
    ] {
        let out = ok(&b, "exec", sh(script.to_string())).await;
        assert_eq!(
            (out["exit_code"].as_i64(), out["stdout"].as_str().unwrap()),
            (Some(0), expected.as_str()),
            "{script}: {out}"
        );
    }
    for (program, args) in [
        (
            "python3",
            vec![
                "-c",
                "import os, tempfile; open('p.txt', 'w').write(os.environ['HOME']); print(len(tempfile.mkstemp()))",
            ],
        ),
        (
            "node",
            vec![
                "-e",
                "require('fs').writeFileSync('n.txt', 'ok'); console.log(require('fs').readFileSync('n.txt', 'utf8'))",
            ],
        ),
    ] {
        let probe = ok(&b, "exec", sh(format!("command -v {program}"))).await;
        if probe["exit_code"] != 0 {
            eprintln!("{program} is not available in the sandbox: skipped");
            continue;
        }
        let mut argv = vec![program];
        argv.extend(args);
        let out = ok(&b, "exec", json!({"argv": argv})).await;
        assert_eq!(out["exit_code"], 0, "{program}: {out}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_workspace_goes_with_the_session() {
    let berth = start(&[]);
    let raw = session(&berth).await;
    ok(
        &raw,
        "fs_write",
        json!({"path": "deep/er/file", "content": "x"}),
    )
    .await;
    let (_, host) = workspace(&raw, &berth).await;
    assert_eq!(raw.delete().await, 200);
    wait_until(
        &format!("{} should be removed after DELETE", host.display()),
        Duration::from_secs(15),
        || !host.exists(),
    );
}

/// A workspace whose process was SIGKILLed (nobody holds its lock) is
/// removed when the next session starts; a live one is not.
#[tokio::test(flavor = "multi_thread")]
async fn stale_workspaces_are_swept_at_start() {
    use std::os::unix::fs::MetadataExt;
    let berth = start(&[]);
    let live = session(&berth).await;
    ok(
        &live,
        "fs_write",
        json!({"path": "mine", "content": "alive"}),
    )
    .await;
    let (_, live_host) = workspace(&live, &berth).await;
    let root = live_host.parent().unwrap().to_owned();
    let owner = std::fs::metadata(&root).unwrap();
    let stale = root.join("0123456789abcdef01234567");
    std::fs::create_dir_all(stale.join("left/behind")).unwrap();
    for dir in [&stale, &stale.join("left"), &stale.join("left/behind")] {
        std::os::unix::fs::chown(dir, Some(owner.uid()), Some(owner.gid())).unwrap();
    }
    let next = session(&berth).await;
    ok(&next, "fs_list", json!({})).await;
    wait_until(
        &format!("{} should have been swept", stale.display()),
        Duration::from_secs(15),
        || !stale.exists(),
    );
    assert_eq!(
        std::fs::read_to_string(live_host.join("mine")).unwrap(),
        "alive"
    );
    let r = ok(&live, "fs_read", json!({"path": "mine"})).await;
    assert_eq!(r["content"], "alive");
}

#[tokio::test(flavor = "multi_thread")]
async fn keep_workspace_keeps_it() {
    let berth = start(&[("BERTH_SANDBOX_KEEP_WORKSPACE", "true")]);
    let raw = session(&berth).await;
    ok(
        &raw,
        "fs_write",
        json!({"path": "kept.txt", "content": "still here"}),
    )
    .await;
    let (_, host) = workspace(&raw, &berth).await;
    assert_eq!(raw.delete().await, 200);
    berth.wait_for_log(
        "sandbox",
        &format!(
            "keeping workspace /state/workspaces/{}",
            host.file_name().unwrap().to_str().unwrap()
        ),
        1,
        Duration::from_secs(15),
    );
    // The process is gone (its line is the last thing it does), the files stay.
    assert_eq!(
        std::fs::read_to_string(host.join("kept.txt")).unwrap(),
        "still here"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn background_processes() {
    let berth = start(&[]);
    let raw = session(&berth).await;
    let ticker = ok(
        &raw,
        "process_start",
        json!({"argv": ["sh", "-c", "i=0; while :; do echo tick-7331 $i; i=$((i+1)); sleep 0.05; done"]}),
    )
    .await;
    let id = ticker["id"].as_str().unwrap().to_string();
    assert_eq!(ticker["state"], "running");
    let daemon = ok(
        &raw,
        "process_start",
        json!({"argv": ["sh", "-c", "(setsid sleep 7332 > /dev/null 2>&1 &); exec sleep 7333"]}),
    )
    .await;
    let daemon_id = daemon["id"].as_str().unwrap().to_string();

    // Its output shows up, and can be followed by offset.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = String::new();
    let mut offset = 0;
    while seen.matches("tick-7331").count() < 3 {
        assert!(Instant::now() < deadline, "no ticks: {seen:?}");
        let logs = ok(
            &raw,
            "process_logs",
            json!({"id": id, "stdout_offset": offset}),
        )
        .await;
        seen.push_str(logs["stdout"].as_str().unwrap());
        offset = logs["stdout_next_offset"].as_u64().unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen.starts_with("tick-7331 0\ntick-7331 1\n"), "{seen:?}");

    let killed = ok(&raw, "process_kill", json!({"id": id})).await;
    assert_eq!(killed["state"], "exited", "{killed}");
    assert_eq!(killed["signal"], "SIGKILL", "{killed}");
    wait_for_no_process("tick-7331", Duration::from_secs(10));
    wait_for_no_zombies(&berth, Duration::from_secs(10));

    let list = ok(&raw, "process_list", json!({})).await;
    let states: Vec<(String, String)> = list["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().into(),
                p["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [(id.clone(), "exited".into()), (daemon_id, "running".into())]
    );
    let e = refused(&raw, "process_logs", json!({"id": "p99"})).await;
    assert!(e.contains("no process `p99`"), "{e}");

    // The daemon and its daemonized child die with the session.
    assert_eq!(processes_with_cmdline("sleep 733").len(), 2);
    assert_eq!(raw.delete().await, 200);
    wait_for_no_process("sleep 733", Duration::from_secs(15));
    wait_for_no_zombies(&berth, Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread")]
async fn file_tools() {
    let berth = start(&[]);
    let raw = session(&berth).await;
    ok(
        &raw,
        "fs_write",
        json!({"path": "src/main.rs", "content": "fn main() {\n    println!(\"hi\");\n}\n"}),
    )
    .await;
    ok(
        &raw,
        "fs_write",
        json!({"path": "src/lib.rs", "content": "// hi\n"}),
    )
    .await;
    ok(
        &raw,
        "fs_write",
        json!({"path": "src/lib.rs", "content": "pub fn hi() {}\n", "append": true}),
    )
    .await;
    let r = ok(
        &raw,
        "fs_read",
        json!({"path": "src/lib.rs", "offset": 6, "limit": 6}),
    )
    .await;
    assert_eq!(
        (r["content"].as_str(), r["eof"].as_bool()),
        (Some("pub fn"), Some(false))
    );

    let e = refused(
        &raw,
        "fs_edit",
        json!({"path": "src/lib.rs", "old_text": "hi", "new_text": "yo"}),
    )
    .await;
    assert!(e.contains("occurs 2 times"), "{e}");
    let e = refused(
        &raw,
        "fs_edit",
        json!({"path": "src/lib.rs", "old_text": "absent", "new_text": "yo"}),
    )
    .await;
    assert!(e.contains("not found"), "{e}");
    let edited = ok(
        &raw,
        "fs_edit",
        json!({"path": "src/lib.rs", "old_text": "hi", "new_text": "yo", "replace_all": true}),
    )
    .await;
    assert_eq!(edited["replacements"], 2);

    let found = ok(
        &raw,
        "fs_search",
        json!({"pattern": "*.rs", "content": "println"}),
    )
    .await;
    assert_eq!(
        found["matches"],
        json!([{"path": "src/main.rs", "line": 2, "text": "    println!(\"hi\");"}])
    );
    let found = ok(&raw, "fs_search", json!({"pattern": "**/lib.rs"})).await;
    assert_eq!(found["paths"][0]["path"], "src/lib.rs");

    ok(
        &raw,
        "fs_write",
        json!({"path": "bin/blob", "content": "AAEC/w==", "encoding": "base64"}),
    )
    .await;
    let r = ok(&raw, "fs_read", json!({"path": "bin/blob"})).await;
    assert_eq!(
        (r["binary"].as_bool(), r["content"].as_str()),
        (Some(true), Some("AAEC/w=="))
    );

    let s = ok(&raw, "fs_stat", json!({"path": "src/lib.rs"})).await;
    assert_eq!(
        (s["type"].as_str(), s["mode"].as_str()),
        (Some("file"), Some("0644"))
    );
    assert!(s["mtime"].as_str().unwrap().ends_with('Z'), "{s}");

    let e = refused(&raw, "fs_delete", json!({"path": "src"})).await;
    assert!(e.contains("not empty"), "{e}");
    let d = ok(&raw, "fs_delete", json!({"path": "src", "recursive": true})).await;
    assert_eq!(d["removed"], 3);
    let e = refused(&raw, "fs_delete", json!({"path": "."})).await;
    assert!(e.contains("workspace itself"), "{e}");

    // A FIFO planted by a command does not hang a tool.
    ok(&raw, "exec", json!({"argv": ["mkfifo", "pipe"]})).await;
    let e = refused(&raw, "fs_read", json!({"path": "pipe"})).await;
    assert!(e.contains("not a regular file"), "{e}");

    let e = refused(&raw, "exec", json!({"argv": []})).await;
    assert!(e.contains("argv is empty"), "{e}");
    let e = refused(&raw, "exec", json!({"argv": ["no-such-program-7341"]})).await;
    assert!(e.contains("cannot run `no-such-program-7341`"), "{e}");
    let e = refused(
        &raw,
        "exec",
        json!({"argv": ["true"], "timeout_ms": 3_600_000}),
    )
    .await;
    assert!(e.contains("exec_timeout_max"), "{e}");
    let out = ok(&raw, "exec", json!({"argv": ["sh", "-c", "cat; echo \" $X\"; exit 3"], "stdin": "in", "env": {"X": "ex"}})).await;
    assert_eq!(
        (out["stdout"].as_str(), out["exit_code"].as_i64()),
        (Some("in ex\n"), Some(3))
    );
    // A wrong argument type is a tool error the caller can read, not a protocol error.
    let e = refused(&raw, "fs_read", json!({"path": 7})).await;
    assert!(e.contains("path") || e.contains("invalid type"), "{e}");
}

/// A bad option stops the server at start with a message naming the variable.
#[test]
fn a_bad_option_is_refused_at_start() {
    for (var, value) in [
        ("BERTH_SANDBOX_OUTPUT_LIMIT", "lots"),
        ("BERTH_SANDBOX_EXEC_TIMEOUT", "soon"),
        ("BERTH_SANDBOX_KEEP_WORKSPACE", "maybe"),
        ("BERTH_SANDBOX_WORKSPACE_ROOT", "relative"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(berth_bin());
        cmd.args(["builtin", "sandbox"])
            .env("HOME", dir.path())
            .env(var, value)
            .stdin(std::process::Stdio::null());
        let (success, output) = run_with_timeout(&mut cmd, Duration::from_secs(20));
        assert!(!success, "{var}={value} was accepted: {output}");
        assert!(output.contains(var), "{var}={value}: {output}");
    }
}
