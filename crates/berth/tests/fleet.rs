//! Issue 3 behaviour through the real binary: crash recovery, crash loops,
//! capacity, standby, scale to zero, health checks, hot reload, rolling restart.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn with(server: String, extra: &str) -> String {
    format!("{server}{extra}\n")
}

/// A second raw client on the same session (for a call running concurrently).
fn same_session(raw: &Raw) -> Raw {
    Raw {
        http: reqwest::Client::new(),
        url: raw.url.clone(),
        session: raw.session.clone(),
        token: raw.token.clone(),
    }
}

/// The JSON-RPC messages of a reply, JSON or SSE.
fn messages(reply: &Reply) -> Vec<serde_json::Value> {
    if reply.content_type().starts_with("text/event-stream") {
        reply.sse_messages()
    } else {
        vec![reply.json()]
    }
}

fn only_child(berth: &Berth) -> u32 {
    let kids = berth.wait_for_children(1, Duration::from_secs(10));
    kids[0].0
}

/// Waits until `check` holds, polling; panics with `what` after `within`.
async fn eventually(within: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Kills the session's process during a slow call; returns (reply, time from kill to reply).
async fn kill_during_call(berth: &Berth, raw: &Raw) -> (Reply, Duration) {
    let pid = only_child(berth);
    let other = same_session(raw);
    // test_reconnection logs, then answers after about a second.
    let call =
        tokio::spawn(async move { other.call_tool(2, "test_reconnection", json!({})).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let reply = call.await.unwrap();
    (reply, killed.elapsed())
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_mid_call_with_replay_the_session_continues_on_a_fresh_process() {
    let berth = Berth::start(
        "",
        &with(fixture_server("svc", "everything"), "on_crash = \"replay\""),
    );
    let mut raw = Raw::new(berth.url("svc"));
    raw.initialize("2025-11-25").await;
    let old = only_child(&berth);
    let (reply, took) = kill_during_call(&berth, &raw).await;
    let answer = messages(&reply).pop().expect("an answer");
    assert_eq!(answer["id"], 2, "{}", reply.body);
    assert_eq!(answer["error"]["code"], -32000, "{}", reply.body);
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("killed by signal SIGKILL"),
        "{answer}"
    );
    println!("error {took:?} after the kill");
    assert!(
        took < Duration::from_millis(100),
        "the error came {took:?} after the kill"
    );

    // Same session id, a fresh process, replayed initialize: the next call works.
    let next = raw.call_tool(3, "test_simple_text", json!({})).await;
    assert_eq!(next.status, 200, "{}", next.body);
    assert!(
        next.body
            .contains("This is a simple text response for testing."),
        "{}",
        next.body
    );
    let new = only_child(&berth);
    assert_ne!(old, new, "a fresh process serves the session");
    assert_eq!(raw.delete().await, 200);
    berth.wait_for_children(0, Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_mid_call_with_end_the_next_request_gets_404() {
    let berth = Berth::start(
        "",
        &with(fixture_server("svc", "everything"), "on_crash = \"end\""),
    );
    let mut raw = Raw::new(berth.url("svc"));
    raw.initialize("2025-11-25").await;
    let (reply, took) = kill_during_call(&berth, &raw).await;
    let answer = messages(&reply).pop().expect("an answer");
    assert_eq!(answer["error"]["code"], -32000, "{}", reply.body);
    assert!(
        took < Duration::from_millis(100),
        "the error came {took:?} after the kill"
    );
    let next = raw.call_tool(3, "test_simple_text", json!({})).await;
    assert_eq!(next.status, 404, "{}", next.body);
    assert_eq!(next.json()["error"]["code"], -32001);
    berth.wait_for_children(0, Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_looping_server_is_marked_failed_and_others_keep_serving() {
    let servers = with(
        fixture_server("broken", "exit-at-start"),
        "max_crashes = 3\ncrash_window = \"60s\"",
    ) + &fixture_server("fine", "echo");
    let berth = Berth::start("", &servers);
    let broken = Raw::new(berth.url("broken"));
    for attempt in 1..=3 {
        let reply = broken.post(&initialize_body("2025-11-25")).await;
        assert_eq!(reply.status, 502, "attempt {attempt}: {}", reply.body);
    }
    let refused = broken.post(&initialize_body("2025-11-25")).await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    let error = &refused.json()["error"];
    assert_eq!(error["code"], -32005);
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("server `broken` is failing") && message.contains("crashed 3 times"),
        "{message}"
    );
    assert!(
        error["data"]["stderr"]
            .to_string()
            .contains("fixture: failing at start"),
        "{error}"
    );

    let mut fine = Raw::new(berth.url("fine"));
    fine.initialize("2025-11-25").await;
    let echoed = fine
        .call_tool(1, "echo", json!({"text": "still here"}))
        .await;
    assert!(echoed.body.contains("still here"), "{}", echoed.body);

    let (ok, ps) = berth.cli(&["ps"]);
    assert!(ok, "{ps}");
    let line = ps
        .lines()
        .find(|l| l.starts_with("broken"))
        .unwrap_or_else(|| panic!("{ps}"));
    assert!(line.contains("failed"), "{ps}");
    assert!(ps.contains("is failing"), "{ps}");
    // Each server's ready target and why (a failed one keeps nothing ready).
    assert!(ps.contains("ready target: 0 (idle;"), "{ps}");
    // A restart clears the failed state (the server is tried again).
    let (ok, out) = berth.cli(&["restart", "broken"]);
    assert!(ok, "{out}");
    let (_, ps) = berth.cli(&["ps"]);
    assert!(
        !ps.lines()
            .any(|l| l.starts_with("broken") && l.contains("failed")),
        "{ps}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pre_initialized_pool_of_a_crashing_server_fails_by_itself() {
    let config = "max_crashes = 3\n[servers.broken.pool]\nmin_ready = 1\npreinitialize = true\n";
    let berth = Berth::start("", &with(fixture_server("broken", "exit-at-start"), config));
    let raw = Raw::new(berth.url("broken"));
    eventually(
        Duration::from_secs(10),
        "the pool gives up on the server",
        async || raw.post(&initialize_body("2025-11-25")).await.status == 503,
    )
    .await;
    berth.wait_for_children(0, Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread")]
async fn max_processes_refuses_with_503_until_a_session_ends() {
    let berth = Berth::start(
        "",
        &with(
            fixture_server("svc", "echo"),
            "[servers.svc.pool]\nmax_processes = 2",
        ),
    );
    let mut first = Raw::new(berth.url("svc"));
    first.initialize("2025-11-25").await;
    let mut second = Raw::new(berth.url("svc"));
    second.initialize("2025-11-25").await;
    let third = Raw::new(berth.url("svc"));
    let refused = third.post(&initialize_body("2025-11-25")).await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.json()["error"]["code"], -32005);
    assert!(
        refused.error_message().contains("max_processes"),
        "{}",
        refused.body
    );

    assert_eq!(first.delete().await, 200);
    eventually(
        Duration::from_secs(5),
        "a new session once one ended",
        async || third.post(&initialize_body("2025-11-25")).await.status == 200,
    )
    .await;
    let echoed = second.call_tool(1, "echo", json!({"text": "ok"})).await;
    assert_eq!(echoed.status, 200, "{}", echoed.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn waiting_processes_go_to_standby_and_thaw_for_a_session() {
    let pool = "[servers.svc.pool]\nmin_ready = 1\npreinitialize = true\nstandby_after = \"100ms\"";
    let berth = Berth::start("", &with(fixture_server("svc", "echo"), pool));
    let deadline = Instant::now() + Duration::from_secs(10);
    let frozen = loop {
        let kids = berth.children();
        if let [(pid, _)] = kids[..]
            && is_frozen(pid)
        {
            break pid;
        }
        assert!(
            Instant::now() < deadline,
            "no process went to standby: {kids:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (_, ps) = berth.cli(&["ps"]);
    assert!(ps.contains(&format!("pid {frozen:<8} standby")), "{ps}");

    let mut raw = Raw::new(berth.url("svc"));
    let init = raw.initialize("2025-11-25").await;
    assert_eq!(init["result"]["protocolVersion"], "2025-11-25", "{init}");
    let echoed = raw.call_tool(1, "echo", json!({"text": "thawed"})).await;
    assert!(echoed.body.contains("thawed"), "{}", echoed.body);
    assert!(
        children_of(berth.pid())
            .iter()
            .any(|(pid, _)| *pid == frozen)
            && !is_frozen(frozen),
        "the standby process serves the session, thawed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pre_initialized_processes_negotiate_the_clients_version() {
    let pool = "[servers.svc.pool]\nmin_ready = 1\npreinitialize = true";
    let berth = Berth::start("", &with(fixture_server("svc", "everything"), pool));
    berth.wait_for_children(1, Duration::from_secs(10));
    let mut raw = Raw::new(berth.url("svc"));
    let init = raw.initialize("2025-06-18").await;
    assert_eq!(init["result"]["protocolVersion"], "2025-06-18", "{init}");
    assert_eq!(init["id"], 0);
    assert!(
        init["result"]["serverInfo"]["name"].is_string(),
        "the server's own result: {init}"
    );
    let listed = raw
        .post(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        .await;
    assert!(listed.body.contains("test_simple_text"), "{}", listed.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_the_client_cannot_handle_are_answered_by_berth() {
    let pool = "[servers.svc.pool]\nmin_ready = 1\npreinitialize = true";
    let berth = Berth::start("", &with(fixture_server("svc", "everything"), pool));
    berth.wait_for_children(1, Duration::from_secs(10));
    // A client that declares no capabilities at all.
    let mut raw = Raw::new(berth.url("svc"));
    let hello = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"plain","version":"1"}}}"#;
    let reply = raw.post(hello).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    raw.session = Some(
        reply.headers["mcp-session-id"]
            .to_str()
            .unwrap()
            .to_string(),
    );
    let reply = raw
        .call_tool(1, "test_sampling", json!({"prompt": "hi"}))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let all = messages(&reply);
    assert!(
        !all.iter().any(|m| m["method"] == "sampling/createMessage"),
        "the client got a sampling request: {all:?}"
    );
    let last = all.last().unwrap();
    assert_eq!(last["id"], 1, "{last}");
    assert!(
        last.to_string().contains("sampling"),
        "the tool reports sampling failed: {last}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_pool_scales_to_zero_and_cold_starts_again() {
    let pool = "[servers.svc.pool]\nmin_ready = 1\nstop_after = \"300ms\"";
    let berth = Berth::start("", &with(fixture_server("svc", "echo"), pool));
    berth.wait_for_children(1, Duration::from_secs(5));
    berth.wait_for_children(0, Duration::from_secs(5));
    let (_, ps) = berth.cli(&["ps"]);
    assert!(
        ps.lines()
            .any(|l| l.starts_with("svc") && l.contains("idle")),
        "{ps}"
    );
    let mut raw = Raw::new(berth.url("svc"));
    raw.initialize("2025-11-25").await;
    let echoed = raw.call_tool(1, "echo", json!({"text": "back"})).await;
    assert!(echoed.body.contains("back"), "{}", echoed.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unresponsive_waiting_process_is_replaced() {
    let server = "[servers.mute]\ncommand = \"sh\"\nargs = [\"-c\", \"cat > /dev/null\"]\n\
                  [servers.mute.pool]\nmin_ready = 1\nhealth_interval = \"200ms\"\nhealth_timeout = \"200ms\"\n";
    let berth = Berth::start("", server);
    let first = only_child(&berth);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, logs) = berth.cli(&["logs", "mute"]);
        if logs.contains("unresponsive") && berth.children().iter().any(|(pid, _)| *pid != first) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the mute process was not replaced:\n{logs}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hot_reload_adds_changes_and_removes_servers_without_disturbing_others() {
    let a = fixture_server("a", "echo");
    let b = fixture_server("b", "echo");
    let c = fixture_server("c", "echo");
    let berth = Berth::start("", &format!("{a}{b}{c}"));

    // A client on `a` keeps calling tools all along.
    let mut client = Raw::new(berth.url("a"));
    client.initialize("2025-11-25").await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let caller = tokio::spawn({
        let stop = stop.clone();
        async move {
            let (mut calls, mut errors) = (0u64, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                calls += 1;
                let reply = client
                    .call_tool(calls, "echo", json!({"text": "steady"}))
                    .await;
                if reply.status != 200 || !reply.body.contains("steady") {
                    errors.push(format!("{} {}", reply.status, reply.body));
                }
            }
            (calls, errors)
        }
    });
    let mut on_b = Raw::new(berth.url("b"));
    on_b.initialize("2025-11-25").await;

    // Change b (more env), remove c, add d: via `berth reload`.
    let b2 = with(fixture_server("b", "echo"), "env = { CHANGED = \"1\" }");
    berth.rewrite_config("", &format!("{a}{b2}{}", fixture_server("d", "echo")));
    let (ok, out) = berth.cli(&["reload"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("added d; changed b; removed c; unchanged a"),
        "{out}"
    );
    let mut on_d = Raw::new(berth.url("d"));
    on_d.initialize("2025-11-25").await;
    let gone = Raw::new(berth.url("c"))
        .post(&initialize_body("2025-11-25"))
        .await;
    assert_eq!(gone.status, 404, "{}", gone.body);
    // The session on the changed server drains on its old process.
    let drained = on_b.call_tool(1, "echo", json!({"text": "old b"})).await;
    assert!(drained.body.contains("old b"), "{}", drained.body);

    // And by SIGHUP: add e.
    berth.rewrite_config(
        "",
        &format!(
            "{a}{b2}{}{}",
            fixture_server("d", "echo"),
            fixture_server("e", "echo")
        ),
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(berth.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let e = Raw::new(berth.url("e"));
    eventually(
        Duration::from_secs(10),
        "server e after SIGHUP",
        async || e.post(&initialize_body("2025-11-25")).await.status == 200,
    )
    .await;

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (calls, errors) = caller.await.unwrap();
    assert!(
        errors.is_empty(),
        "{} of {calls} calls on `a` failed: {errors:?}",
        errors.len()
    );
    assert!(calls > 10, "only {calls} calls were made");
}

#[tokio::test(flavor = "multi_thread")]
async fn rolling_restart_replaces_waiting_processes_and_lets_sessions_drain() {
    let pool = "[servers.svc.pool]\nmin_ready = 1";
    let berth = Berth::start("", &with(fixture_server("svc", "echo"), pool));
    only_child(&berth);
    let mut raw = Raw::new(berth.url("svc"));
    raw.initialize("2025-11-25").await;
    // The session took the waiting process; the pool refilled.
    let leased = berth.wait_for_children(2, Duration::from_secs(5));
    let (ok, out) = berth.cli(&["restart", "svc"]);
    assert!(ok, "{out}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, ps) = berth.cli(&["ps"]);
        let draining = ps
            .lines()
            .filter(|l| l.contains("draining") && l.contains("generation 1"))
            .count();
        let fresh = ps
            .lines()
            .filter(|l| l.contains("ready") && l.contains("generation 2"))
            .count();
        if draining == 1 && fresh == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "expected one draining session process and one new ready one:\n{ps}\n{leased:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let echoed = raw.call_tool(1, "echo", json!({"text": "draining"})).await;
    assert!(
        echoed.body.contains("draining"),
        "the old session keeps working: {}",
        echoed.body
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_giving_up_during_initialize_leaves_no_process_and_shutdown_stays_clean() {
    let slow = format!(
        "[servers.slow]\ncommand = {:?}\nargs = [\"echo\", \"--boot-delay\", \"2s\"]\n",
        fixture_bin().display().to_string()
    );
    let berth = Berth::start("", &slow);
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let gave_up = impatient
        .post(berth.url("slow"))
        .header("accept", ACCEPT_BOTH)
        .header("content-type", "application/json")
        .body(initialize_body("2025-11-25"))
        .send()
        .await;
    assert!(gave_up.is_err(), "the client should have timed out");
    berth.wait_for_children(0, Duration::from_secs(10));
    let status = berth.stop(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "berth must exit 0 on SIGTERM");
}

/// Reads JSON-RPC messages from an SSE response as they arrive.
struct SseReader {
    response: reqwest::Response,
    buffer: String,
}

impl SseReader {
    async fn next(&mut self) -> Option<serde_json::Value> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let event: String = self.buffer.drain(..end + 2).collect();
                if let Some(message) = sse_messages(&event).pop() {
                    return Some(message);
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(20), self.response.chunk())
                .await
                .ok()?
                .ok()??;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

/// One session's work on a shared server: progress with its own token, and a
/// sampling round trip with its own prompt and answer.
async fn shared_session_round(url: String, i: usize) {
    let mut raw = Raw::new(url);
    raw.initialize("2025-11-25").await;
    // Every session uses the same request ids: Berth must keep them apart.
    let progress = json!({"jsonrpc":"2.0","id":1,"method":"tools/call",
        "params":{"name":"test_tool_with_progress","arguments":{},"_meta":{"progressToken":format!("tok-{i}")}}});
    let reply = raw.post(&progress.to_string()).await;
    let all = messages(&reply);
    let (notes, answers): (Vec<_>, Vec<_>) = all
        .iter()
        .partition(|m| m["method"] == "notifications/progress");
    assert!(!notes.is_empty(), "session {i}: no progress: {all:?}");
    assert!(
        notes
            .iter()
            .all(|n| n["params"]["progressToken"] == format!("tok-{i}")),
        "session {i} saw another's progress: {notes:?}"
    );
    assert_eq!(answers.len(), 1, "session {i}: {all:?}");
    assert_eq!(answers[0]["id"], 1, "session {i}: {all:?}");

    let call = json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"test_sampling","arguments":{"prompt":format!("prompt-{i}")}}});
    let response = raw
        .http
        .post(&raw.url)
        .header("accept", ACCEPT_BOTH)
        .header("content-type", "application/json")
        .header("mcp-session-id", raw.session.clone().unwrap())
        .body(call.to_string())
        .send()
        .await
        .unwrap();
    let mut stream = SseReader {
        response,
        buffer: String::new(),
    };
    let request = stream
        .next()
        .await
        .unwrap_or_else(|| panic!("session {i}: no sampling request"));
    assert_eq!(
        request["method"], "sampling/createMessage",
        "session {i}: {request}"
    );
    assert!(
        request["params"]
            .to_string()
            .contains(&format!("prompt-{i}\"")),
        "session {i} got another's sampling request: {request}"
    );
    let answer = json!({"jsonrpc":"2.0","id":request["id"],"result":{"role":"assistant","model":"test","content":{"type":"text","text":format!("answer-{i}")}}});
    assert_eq!(raw.post(&answer.to_string()).await.status, 202);
    let result = stream
        .next()
        .await
        .unwrap_or_else(|| panic!("session {i}: no tool result"));
    assert_eq!(result["id"], 2, "session {i}: {result}");
    assert!(
        result
            .to_string()
            .contains(&format!("LLM response: answer-{i}\"")),
        "session {i}: {result}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_binding_keeps_32_sessions_apart_on_2_processes() {
    let server = with(
        fixture_server("svc", "everything"),
        "binding = \"shared\"\n[servers.svc.pool]\nmax_processes = 2",
    );
    let berth = Berth::start("", &server);
    berth.wait_for_children(2, Duration::from_secs(10));
    let sessions: Vec<_> = (0..32)
        .map(|i| tokio::spawn(shared_session_round(berth.url("svc"), i)))
        .collect();
    for session in sessions {
        session.await.expect("session task");
    }
    // Still the same two processes, serving every session.
    assert_eq!(berth.children().len(), 2);
    let (_, ps) = berth.cli(&["ps", "--json"]);
    let status: serde_json::Value =
        serde_json::from_str(&ps).unwrap_or_else(|e| panic!("{e}: {ps}"));
    let processes = status[0]["processes"].as_array().unwrap();
    assert_eq!(processes.len(), 2, "{ps}");
    assert!(processes.iter().all(|p| p["state"] == "shared"), "{ps}");
    assert_eq!(status[0]["sessions"], 32, "{ps}");
}
