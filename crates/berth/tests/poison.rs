//! Poisoned requests on stdio servers (issue 12, item 2): a request a server
//! cannot answer with a usable id costs its sender a JSON-RPC error, never
//! the process other sessions share, nor the sender's own process.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Berth, Raw, fixture_server, npm_server};

const EVERYTHING: &str = "@modelcontextprotocol/server-everything";
const VERSION: &str = "2025-06-18";
const HUGE: &str = "123456789012345678901234567890123456789";

/// Requests (and a notification) a server cannot answer with a usable id.
fn poison() -> Vec<String> {
    vec![
        r#"{"jsonrpc":"2.0","id":11,"method":"tools/list","params":[]}"#.into(),
        format!(r#"{{"jsonrpc":"2.0","id":{HUGE},"method":"tools/list"}}"#),
        r#"{"jsonrpc":"2.0","id":1.5,"method":"tools/list"}"#.into(),
        r#"{"jsonrpc":"2.0","method":"notifications/initialized","params":123}"#.into(),
        r#"{"jsonrpc":"2.0","id":{"a":1},"method":"tools/list"}"#.into(),
    ]
}

/// The id a poisoned request carries, as written (`None` for the notification).
fn written_id(body: &str) -> Option<&str> {
    let start = body.find(r#""id":"#)? + 5;
    let end = body[start..].find(",\"method\"")? + start;
    Some(&body[start..end])
}

/// Sends one poisoned message and checks the answer: an HTTP answer (202 for
/// the notification), a JSON-RPC body echoing the sender's id byte for byte.
async fn poison_one(raw: &Raw, body: &str) {
    let reply = tokio::time::timeout(Duration::from_secs(20), raw.post(body))
        .await
        .unwrap_or_else(|_| panic!("no HTTP answer to {body}"));
    let Some(id) = written_id(body) else {
        assert_eq!(reply.status, 202, "{body}: {} {}", reply.status, reply.body);
        return;
    };
    assert_ne!(reply.status, 404, "{body}: {}", reply.body);
    let answer: serde_json::Value = if reply.content_type().starts_with("text/event-stream") {
        reply.sse_messages().pop().expect("an answer on the stream")
    } else {
        reply.json()
    };
    assert!(
        answer.get("error").is_some() || answer.get("result").is_some(),
        "{body}: {}",
        reply.body
    );
    if id.starts_with('{') {
        // No id Berth can carry: refused at the gateway, with a null id.
        assert!(answer["error"].is_object(), "{body}: {}", reply.body);
    } else {
        assert!(
            reply.body.contains(&format!(r#""id":{id}"#)),
            "{body}: the answer must echo the id as written: {}",
            reply.body
        );
    }
}

fn server_state(berth: &Berth) -> serde_json::Value {
    berth.status().into_iter().next().expect("one server")
}

fn assert_healthy(berth: &Berth) {
    let s = server_state(berth);
    assert_eq!(s["status"], "running", "{s}");
    assert_eq!(s["crashes"], 0, "{s}");
    assert!(s["failure"].is_null(), "{s}");
}

async fn echo(raw: &Raw, id: u64, tool_arg: &str, text: &str) {
    let reply = tokio::time::timeout(
        Duration::from_secs(20),
        raw.call_tool(id, "echo", serde_json::json!({ tool_arg: text })),
    )
    .await
    .expect("bystander call answered in time");
    assert_eq!(reply.status, 200, "bystander: {}", reply.body);
    assert!(reply.body.contains(text), "bystander: {}", reply.body);
}

/// Eight tenants poison a shared process while a bystander keeps calling.
async fn shared_tenants_survive_poison(server: String, tool_arg: &str) {
    let berth = Berth::start("request_timeout = \"5s\"", &server);
    let url = berth.url("svc");
    let mut bystander = Raw::new(url.clone());
    bystander.initialize(VERSION).await;
    let mut tenants = Vec::new();
    for _ in 0..8 {
        let mut raw = Raw::new(url.clone());
        raw.initialize(VERSION).await;
        tenants.push(raw);
    }
    let pids_before: Vec<u64> = server_state(&berth)["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_u64().unwrap())
        .collect();

    let done = Arc::new(AtomicBool::new(false));
    let calls = {
        let done = done.clone();
        let arg = tool_arg.to_string();
        tokio::spawn(async move {
            let mut n = 0u64;
            while !done.load(Ordering::Relaxed) || n < 5 {
                n += 1;
                echo(&bystander, 1000 + n, &arg, &format!("still here {n}")).await;
            }
            (bystander, n)
        })
    };
    let poisoners: Vec<_> = tenants
        .into_iter()
        .map(|raw| {
            tokio::spawn(async move {
                for body in poison() {
                    poison_one(&raw, &body).await;
                }
                // Its session is intact: no 404, the server still answers.
                let ping = raw
                    .post(r#"{"jsonrpc":"2.0","id":"after","method":"ping"}"#)
                    .await;
                assert_eq!(ping.status, 200, "{}", ping.body);
                assert!(ping.body.contains(r#""result""#), "{}", ping.body);
            })
        })
        .collect();
    for p in poisoners {
        p.await.expect("poisoner");
    }
    done.store(true, Ordering::Relaxed);
    let (bystander, n) = calls.await.expect("bystander");
    assert!(n >= 5);
    echo(&bystander, 1, tool_arg, "after the storm").await;
    assert_healthy(&berth);
    // The same processes: none was stopped.
    let pids_after: Vec<u64> = server_state(&berth)["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(pids_before, pids_after, "{}", berth.server_log("svc"));
    // New sessions still open.
    let mut late = Raw::new(url);
    late.initialize(VERSION).await;
    echo(&late, 2, tool_arg, "newcomer").await;
    assert_healthy(&berth);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_server_everything_survives_eight_poisoning_tenants() {
    let server = format!(
        "{}binding = \"shared\"\n",
        npm_server("svc", EVERYTHING, &["stdio"], &[])
    );
    shared_tenants_survive_poison(server, "message").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_strict_server_survives_eight_poisoning_tenants() {
    let server = format!("{}binding = \"shared\"\n", fixture_server("svc", "strict"));
    shared_tenants_survive_poison(server, "text").await;
}

/// The pid of the process leased to the one session.
fn leased_pid(berth: &Berth) -> u64 {
    let s = server_state(berth);
    let leased: Vec<u64> = s["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["state"] == "leased")
        .map(|p| p["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(leased.len(), 1, "{s}");
    leased[0]
}

/// Exclusive binding: the poisoner gets errors and keeps its process.
async fn exclusive_caller_keeps_its_process(server: String, tool_arg: &str) {
    let berth = Berth::start("request_timeout = \"3s\"", &server);
    let mut raw = Raw::new(berth.url("svc"));
    raw.initialize(VERSION).await;
    let pid = leased_pid(&berth);
    let raw = Arc::new(raw);
    // Concurrently: a server that drops what it cannot read leaves each
    // request to the request timeout.
    let sent: Vec<_> = poison()
        .into_iter()
        .map(|body| {
            let raw = raw.clone();
            tokio::spawn(async move { poison_one(&raw, &body).await })
        })
        .collect();
    for s in sent {
        s.await.expect("poisoned request");
    }
    echo(&raw, 5, tool_arg, "mine still").await;
    assert_eq!(leased_pid(&berth), pid, "{}", berth.server_log("svc"));
    assert_healthy(&berth);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exclusive_server_everything_poisoner_keeps_its_process() {
    let server = npm_server("svc", EVERYTHING, &["stdio"], &[]);
    exclusive_caller_keeps_its_process(server, "message").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exclusive_strict_poisoner_gets_the_servers_errors_and_keeps_its_process() {
    let berth = Berth::start("request_timeout = \"3s\"", &fixture_server("svc", "strict"));
    let mut raw = Raw::new(berth.url("svc"));
    raw.initialize(VERSION).await;
    let pid = leased_pid(&berth);
    // Sent one at a time: each is the only request in flight, so the error
    // the server writes without an id is that request's.
    for body in poison() {
        poison_one(&raw, &body).await;
    }
    for (body, code) in [
        (
            format!(r#"{{"jsonrpc":"2.0","id":{HUGE},"method":"tools/list"}}"#),
            -32600,
        ),
        (
            r#"{"jsonrpc":"2.0","id":12,"method":"tools/list","params":[]}"#.into(),
            -32602,
        ),
    ] {
        let reply = raw.post(&body).await;
        assert_eq!(reply.json()["error"]["code"], code, "{}", reply.body);
    }
    echo(&raw, 5, "text", "mine still").await;
    assert_eq!(leased_pid(&berth), pid, "{}", berth.server_log("svc"));
    assert_healthy(&berth);
    let log = berth.server_log("svc");
    assert!(log.contains("whose params are not an object"), "{log}");
    assert!(!log.contains("stopping process"), "{log}");
}
