//! `/metrics` on the admin listener, read by the official Prometheus client's
//! parser after a scripted workload: every counter equals the workload.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use common::*;
use serde_json::{Value, json};

/// `/metrics` parsed by `prometheus_client.openmetrics.parser`: one entry
/// per sample.
async fn scrape(berth: &Berth) -> Vec<Value> {
    let (url, token) = admin_endpoint(berth);
    let response = reqwest::Client::new()
        .get(format!("{url}/metrics"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = response.text().await.expect("metrics text");
    let mut parser = Command::new(python())
        .arg(repo().join("tests/python/parse_metrics.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python parser");
    parser
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write metrics");
    let out = parser.wait_with_output().expect("parser output");
    assert!(
        out.status.success(),
        "the Prometheus parser refused the metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("parser JSON")
}

/// The value of the sample `name` whose labels include `labels`.
fn value(samples: &[Value], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s["name"] == name
                && labels
                    .iter()
                    .all(|(k, v)| s["labels"][k].as_str() == Some(v))
        })
        .and_then(|s| s["value"].as_f64())
}

fn sum(samples: &[Value], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| {
            s["name"] == name
                && labels
                    .iter()
                    .all(|(k, v)| s["labels"][k].as_str() == Some(v))
        })
        .filter_map(|s| s["value"].as_f64())
        .sum()
}

#[tokio::test]
async fn metrics_count_a_scripted_workload_exactly() {
    let berth = Berth::start("", &fixture_server("echo", "echo"));
    let mut client = Raw::new(berth.url("echo"));
    client.initialize("2025-11-25").await;
    const CALLS: u64 = 7;
    for id in 0..CALLS {
        let reply = client
            .call_tool(10 + id, "echo", json!({ "text": "hi" }))
            .await;
        assert_eq!(reply.status, 200);
    }
    // Two calls to a tool the server does not have: JSON-RPC errors.
    for id in 0..2 {
        client.call_tool(100 + id, "nope", json!({})).await;
    }
    // A request to a server that does not exist is not counted.
    let stranger = Raw::new(berth.url("no-such-server"));
    stranger.post(&initialize_body("2025-11-25")).await;
    // An unknown session: refused before the server.
    let mut lost = Raw::new(berth.url("echo"));
    lost.session = Some("no-such-session".into());
    let refused = lost.call_tool(1, "echo", json!({ "text": "x" })).await;
    assert_eq!(refused.status, 404);

    let samples = scrape(&berth).await;
    let echo = [("server", "echo")];
    assert_eq!(
        value(
            &samples,
            "berth_tool_calls_total",
            &[("server", "echo"), ("tool", "echo"), ("outcome", "ok")]
        ),
        Some(CALLS as f64),
        "{samples:#?}"
    );
    assert_eq!(
        value(
            &samples,
            "berth_tool_calls_total",
            &[("server", "echo"), ("tool", "nope"), ("outcome", "error")]
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &samples,
            "berth_tool_calls_total",
            &[("server", "echo"), ("tool", "echo"), ("outcome", "refused")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "berth_requests_total",
            &[
                ("server", "echo"),
                ("method", "tools/call"),
                ("status", "200"),
                ("era", "handshake")
            ]
        ),
        Some((CALLS + 2) as f64)
    );
    assert_eq!(
        value(
            &samples,
            "berth_requests_total",
            &[("method", "initialize"), ("status", "200")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sum(
            &samples,
            "berth_requests_total",
            &[("server", "no-such-server")]
        ),
        0.0
    );
    // Histograms count the same requests.
    assert_eq!(
        value(
            &samples,
            "mcp_server_operation_duration_seconds_count",
            &[("server", "echo"), ("method", "tools/call")]
        ),
        Some((CALLS + 2 + 1) as f64)
    );
    assert_eq!(
        value(&samples, "berth_gateway_added_seconds_count", &echo),
        Some((CALLS + 2) as f64),
        "every call the server answered (initialize has its own path)"
    );
    // One session, one first result, one process at work.
    assert_eq!(value(&samples, "berth_sessions_open", &echo), Some(1.0));
    assert_eq!(sum(&samples, "berth_sessions_opened_total", &echo), 1.0);
    assert_eq!(
        sum(&samples, "berth_first_result_seconds_count", &echo),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            "berth_processes",
            &[("server", "echo"), ("state", "leased")]
        ),
        Some(1.0)
    );
    assert!(value(&samples, "berth_process_spawns_total", &echo).unwrap_or(0.0) >= 1.0);
    assert_eq!(
        value(&samples, "berth_process_crashes_total", &echo),
        Some(0.0)
    );
    // Bytes: every request body of the session counted.
    let received = value(&samples, "berth_received_bytes_total", &echo).unwrap_or(0.0);
    assert!(received > 0.0, "{samples:#?}");

    // Ending the session is seen at the next scrape.
    assert_eq!(client.delete().await, 200);
    let samples = scrape(&berth).await;
    assert_eq!(value(&samples, "berth_sessions_open", &echo), Some(0.0));
    assert_eq!(
        value(&samples, "mcp_server_session_duration_seconds_count", &echo),
        Some(1.0)
    );
    let by_family: BTreeMap<String, usize> = samples.iter().fold(BTreeMap::new(), |mut m, s| {
        *m.entry(s["family"].as_str().unwrap_or("").to_owned())
            .or_default() += 1;
        m
    });
    eprintln!("families: {by_family:?}");
}

#[tokio::test]
async fn metrics_need_the_admin_token() {
    let berth = Berth::start("", &fixture_server("echo", "echo"));
    let (url, _) = admin_endpoint(&berth);
    let response = reqwest::Client::new()
        .get(format!("{url}/metrics"))
        .bearer_auth("wrong")
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn auth_refusals_are_counted_by_reason() {
    let (_, table) = api_key("ci");
    let berth = Berth::start(
        &format!("[auth]\nmode = \"api_key\"\n{table}"),
        &fixture_server("echo", "echo"),
    );
    let client = Raw::new(berth.url("echo"));
    let reply = client.post(&initialize_body("2025-11-25")).await;
    assert_eq!(reply.status, 401);
    let reply = client
        .post_with(
            initialize_body("2025-11-25"),
            &[("authorization", "Bearer wrong")],
        )
        .await;
    assert_eq!(reply.status, 401);
    let samples = scrape(&berth).await;
    assert_eq!(
        value(
            &samples,
            "berth_auth_refusals_total",
            &[("server", "echo"), ("reason", "missing")]
        ),
        Some(1.0),
        "{samples:#?}"
    );
    assert_eq!(
        value(
            &samples,
            "berth_auth_refusals_total",
            &[("server", "echo"), ("reason", "invalid_token")]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn owner_and_latency_budget_are_shown_by_ps() {
    let server = format!(
        "{}owner = \"team-payments\"\nlatency_budget = \"100ms\"\n",
        fixture_server("echo", "echo")
    );
    let berth = Berth::start("", &server);
    let status = berth.status();
    assert_eq!(status[0]["owner"], "team-payments", "{status:#?}");
    assert_eq!(status[0]["latency_budget_ms"], 100.0);
    let (ok, table) = berth.cli(&["ps"]);
    assert!(ok, "{table}");
    assert!(
        table.contains("owner: team-payments · latency budget: 100ms p99"),
        "{table}"
    );
}

#[tokio::test]
async fn calls_through_an_endpoint_count_for_the_members_own_tool() {
    let servers = format!(
        "{}\n[endpoints.fed]\nservers = [\"echo\"]\n",
        fixture_server("echo", "echo")
    );
    let berth = Berth::start("", &servers);
    let mut client = Raw::new(berth.url("fed"));
    client.initialize("2025-11-25").await;
    for id in 0..3 {
        let reply = client
            .call_tool(10 + id, "echo__echo", json!({ "text": "hi" }))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    let samples = scrape(&berth).await;
    assert_eq!(
        value(
            &samples,
            "berth_tool_calls_total",
            &[("server", "echo"), ("tool", "echo"), ("outcome", "ok")]
        ),
        Some(3.0),
        "{samples:#?}"
    );
    // Nothing is counted under the endpoint's own name for these tools.
    assert_eq!(
        sum(&samples, "berth_tool_calls_total", &[("server", "fed")]),
        0.0
    );
}
