//! Fairness between clients: one client cannot take every session of a
//! server or all of the gateway's attention; another client is unaffected.

mod common;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn a_client_gets_429_beyond_its_sessions_while_another_still_gets_in() {
    let (greedy, greedy_table) = api_key("greedy");
    let (polite, polite_table) = api_key("polite");
    let berth = Berth::start(
        &format!(
            "max_sessions_per_client = 3\n[auth]\nmode = \"api_key\"\n{greedy_table}{polite_table}"
        ),
        &fixture_server("svc", "echo"),
    );
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut raw = Raw::new(berth.url("svc"));
        raw.token = Some(greedy.clone());
        raw.initialize("2025-11-25").await;
        held.push(raw);
    }
    let mut fourth = Raw::new(berth.url("svc"));
    fourth.token = Some(greedy.clone());
    let refused = fourth.post(&initialize_body("2025-11-25")).await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    let retry = refused
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    assert!(
        retry.is_some_and(|s| s >= 1),
        "Retry-After: {:?}",
        refused.headers
    );
    assert_eq!(refused.json()["error"]["code"], -32005, "{}", refused.body);
    assert!(
        refused.error_message().contains("max_sessions_per_client"),
        "{}",
        refused.body
    );

    // Another client is not affected, and the greedy one's sessions still work.
    let mut other = Raw::new(berth.url("svc"));
    other.token = Some(polite.clone());
    other.initialize("2025-11-25").await;
    let echoed = other.call_tool(1, "echo", json!({"text": "fair"})).await;
    assert_eq!(echoed.status, 200, "{}", echoed.body);
    let echoed = held[0].call_tool(1, "echo", json!({"text": "mine"})).await;
    assert_eq!(echoed.status, 200, "{}", echoed.body);

    // Ending one frees a slot.
    assert_eq!(held[0].delete().await, 200);
    let again = fourth.post(&initialize_body("2025-11-25")).await;
    assert_eq!(again.status, 200, "{}", again.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_over_its_request_rate_gets_429_and_another_does_not() {
    let (fast, fast_table) = api_key("fast");
    let (slow, slow_table) = api_key("slow");
    let berth = Berth::start(
        &format!(
            "requests_per_second_per_client = 5.0\n[auth]\nmode = \"api_key\"\n{fast_table}{slow_table}"
        ),
        &fixture_server("svc", "echo"),
    );
    let mut raw = Raw::new(berth.url("svc"));
    raw.token = Some(fast.clone());
    raw.initialize("2025-11-25").await;
    let mut limited = None;
    for n in 0..40 {
        let reply = raw.call_tool(n, "echo", json!({"text": "again"})).await;
        if reply.status == 429 {
            limited = Some(reply);
            break;
        }
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    let limited = limited.expect("40 calls at once stayed under 5 per second (burst 10)");
    assert!(
        limited.headers.get("retry-after").is_some(),
        "{:?}",
        limited.headers
    );
    assert_eq!(limited.json()["error"]["code"], -32005, "{}", limited.body);

    let mut other = Raw::new(berth.url("svc"));
    other.token = Some(slow.clone());
    other.initialize("2025-11-25").await;
    let echoed = other.call_tool(1, "echo", json!({"text": "fine"})).await;
    assert_eq!(echoed.status, 200, "{}", echoed.body);
}
