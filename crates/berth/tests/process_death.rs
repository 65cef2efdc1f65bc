//! A session whose server process died while idle: the client's next
//! requests are told that the process died and how (not a bare "Session not
//! found"), through the real binary.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// The pid of the process serving session `id`, from the gateway's log.
fn session_pid(berth: &Berth, id: &str, within: Duration) -> i32 {
    let deadline = Instant::now() + within;
    loop {
        let log = strip_ansi(&berth.log());
        let pid = log
            .lines()
            .filter(|l| l.contains("session started") && l.contains(id))
            .find_map(|l| l.split("pid=").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|pid| pid.parse().ok());
        if let Some(pid) = pid {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "no session start in the log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The log without terminal colour codes (`ESC [ ... m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn kill(pid: i32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the server process");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_after_the_idle_process_was_killed_says_how_it_died() {
    let berth = Berth::start("", &fixture_server("svc", "echo"));
    let mut raw = Raw::new(berth.url("svc"));
    raw.initialize("2025-11-25").await;
    let first = raw.call_tool(1, "echo", json!({"text": "alive"})).await;
    assert!(first.body.contains("alive"), "{}", first.body);
    let id = raw.session.clone().expect("a session id");
    kill(session_pid(&berth, &id, Duration::from_secs(10)));

    // The gateway notices the death on its own; until then a request may
    // race it, and both paths must give the same answer.
    let deadline = Instant::now() + Duration::from_secs(10);
    let gone = loop {
        let reply = raw.call_tool(2, "echo", json!({"text": "anyone?"})).await;
        if reply.status == 404 {
            break reply;
        }
        assert!(
            Instant::now() < deadline,
            "the session outlived its process: {} {}",
            reply.status,
            reply.body
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let error = &gone.json()["error"];
    assert_eq!(error["code"], -32001, "{}", gone.body);
    let message = error["message"].as_str().unwrap_or_default();
    for needle in [
        "Session not found",
        "its server process died",
        "server `svc`",
        "SIGKILL",
        "initialize a new session",
    ] {
        assert!(
            message.contains(needle),
            "{needle:?} missing from {message}"
        );
    }

    // Later requests on the dead session are told the same, GET and DELETE too.
    let again = raw
        .post(r#"{"jsonrpc":"2.0","id":3,"method":"ping"}"#)
        .await;
    assert_eq!(again.status, 404, "{}", again.body);
    assert_eq!(again.json()["error"]["message"], error["message"]);
    let get = raw.get(&[]).await;
    assert_eq!(get.status(), 404);
    let get: serde_json::Value = get.json().await.expect("a JSON-RPC error");
    assert_eq!(get["error"]["message"], error["message"], "{get}");
    assert_eq!(raw.delete().await, 404);

    // A session id that never existed still gets the plain answer.
    let mut stranger = Raw::new(berth.url("svc"));
    stranger.session = Some("no-such-session".into());
    let unknown = stranger
        .post(r#"{"jsonrpc":"2.0","id":4,"method":"ping"}"#)
        .await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    let plain = unknown.json()["error"]["message"].to_string();
    assert!(
        plain.contains("unknown or ended") && !plain.contains("died"),
        "{plain}"
    );

    // The server itself serves new sessions.
    raw.initialize("2025-11-25").await;
    let fresh = raw.call_tool(5, "echo", json!({"text": "new"})).await;
    assert!(fresh.body.contains("new"), "{}", fresh.body);
    assert_eq!(raw.delete().await, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_process_that_exits_on_its_own_is_reported_with_its_status_and_stderr() {
    // The crash fixture exits with status 3 (after a line on stderr) when its
    // tool is called: the in-flight call fails, and the session's next
    // request is told how the process ended, stderr included.
    let berth = Berth::start("", &fixture_server("crash", "crash"));
    let mut raw = Raw::new(berth.url("crash"));
    raw.initialize("2025-11-25").await;
    let failed = raw.call_tool(1, "boom", json!({})).await;
    assert_eq!(failed.json()["error"]["code"], -32000, "{}", failed.body);

    let deadline = Instant::now() + Duration::from_secs(10);
    let gone = loop {
        let reply = raw
            .post(r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#)
            .await;
        if reply.status == 404 {
            break reply;
        }
        assert!(Instant::now() < deadline, "{} {}", reply.status, reply.body);
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let error = &gone.json()["error"];
    assert_eq!(error["code"], -32001, "{}", gone.body);
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("its server process died") && message.contains("status 3"),
        "{message}"
    );
    assert!(
        error["data"]["stderr"]
            .to_string()
            .contains("fixture crash: exiting on purpose"),
        "{error}"
    );
}
