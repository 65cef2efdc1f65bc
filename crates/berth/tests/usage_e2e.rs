//! Usage metering end to end: two principals on two servers through the real
//! gateway, read back with `berth usage`; the rows survive a restart.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// `berth usage ... --format json` for the gateway's data dir.
fn usage(berth: &Berth, by: &str) -> Vec<Value> {
    let (ok, out) = berth.cli(&["usage", "--by", by, "--since", "2h", "--format", "json"]);
    assert!(ok, "berth usage failed: {out}");
    let json = out.find('{').map_or("", |i| &out[i..]);
    let report: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {out}"));
    report["rows"].as_array().cloned().unwrap_or_default()
}

fn row<'a>(rows: &'a [Value], key: &str, value: &str) -> &'a Value {
    rows.iter()
        .find(|r| r[key].as_str().is_some_and(|v| v.ends_with(value)))
        .unwrap_or_else(|| panic!("no row with {key} = {value}: {rows:#?}"))
}

async fn session(berth: &Berth, server: &str, key: &str, calls: u64) {
    let mut client = Raw::new(berth.url(server));
    client.token = Some(key.to_owned());
    client.initialize("2025-11-25").await;
    for id in 0..calls {
        let reply = client
            .call_tool(id + 1, "echo", json!({ "text": "hi" }))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    assert_eq!(client.delete().await, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_principals_on_two_servers_are_metered_and_survive_a_restart() {
    let (alice, alice_table) = api_key("alice");
    let (bob, bob_table) = api_key("bob");
    let gateway = format!(
        "[auth]\nmode = \"api_key\"\n{alice_table}{bob_table}[usage]\nflush_interval = \"1s\"\n"
    );
    let servers = format!(
        "{}{}",
        fixture_server("alpha", "echo"),
        fixture_server("beta", "echo")
    );
    let berth = Berth::start(&gateway, &servers);
    session(&berth, "alpha", &alice, 3).await;
    session(&berth, "beta", &alice, 2).await;
    session(&berth, "alpha", &bob, 1).await;
    // A graceful stop writes what the meter holds.
    let dir = berth.dir.path().to_owned();
    let berth = berth.restart(Duration::from_secs(20));
    assert_eq!(berth.dir.path(), dir);

    let by_principal = usage(&berth, "principal");
    let a = row(&by_principal, "principal", "alice");
    assert_eq!(a["sessions"], 2, "{by_principal:#?}");
    assert_eq!(a["tool_calls"], 5);
    // initialize, initialized, each call, DELETE: per session.
    assert_eq!(a["requests"], 2 * 3 + 5);
    let b = row(&by_principal, "principal", "bob");
    assert_eq!(b["sessions"], 1);
    assert_eq!(b["tool_calls"], 1);

    let by_server = usage(&berth, "server");
    assert_eq!(row(&by_server, "server", "alpha")["tool_calls"], 4);
    assert_eq!(row(&by_server, "server", "beta")["tool_calls"], 2);
    let by_tool = usage(&berth, "tool");
    let echo_on = |server: &str| {
        by_tool
            .iter()
            .find(|r| r["server"] == server && r["tool"] == "echo")
            .map(|r| r["tool_calls"].clone())
    };
    assert_eq!(echo_on("alpha"), Some(json!(4)), "{by_tool:#?}");
    assert_eq!(echo_on("beta"), Some(json!(2)));
    for r in &by_server {
        assert!(r["bytes_in"].as_u64().unwrap_or(0) > 0, "{r}");
        assert!(r["bytes_out"].as_u64().unwrap_or(0) > 0, "{r}");
        assert!(r["session_seconds"].as_f64().unwrap_or(-1.0) >= 0.0, "{r}");
    }

    // The restarted gateway adds to the same rows.
    session(&berth, "beta", &bob, 4).await;
    let berth = berth.restart(Duration::from_secs(20));
    let by_principal = usage(&berth, "principal");
    assert_eq!(row(&by_principal, "principal", "bob")["tool_calls"], 5);
    assert_eq!(row(&by_principal, "principal", "alice")["tool_calls"], 5);

    // What berth usage prints, berth cost prices: 10 tool calls at $2 per 1,000.
    let (ok, report) = berth.cli(&[
        "usage",
        "--by",
        "principal",
        "--since",
        "2h",
        "--format",
        "json",
    ]);
    assert!(ok, "{report}");
    let file = berth.dir.path().join("usage.json");
    std::fs::write(&file, &report[report.find('{').unwrap_or(0)..]).expect("write usage.json");
    let (ok, out) = run_with_timeout(
        std::process::Command::new(berth_bin()).args([
            "cost",
            "--usage",
            file.to_str().expect("utf-8 path"),
            "--format",
            "json",
            "--price-1000-calls",
            "2",
        ]),
        Duration::from_secs(20),
    );
    assert!(ok, "{out}");
    let cost: Value = serde_json::from_str(&out[out.find('{').unwrap_or(0)..]).expect("cost JSON");
    assert_eq!(cost["quantities"]["tool_calls"], 10.0, "{cost:#}");
    assert!(
        (cost["per_request"].as_f64().unwrap_or(0.0) - 0.02).abs() < 1e-9,
        "{cost:#}"
    );
    assert_eq!(cost["agents"], 2.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sessions_process_resources_are_metered_to_its_principal() {
    let (alice, alice_table) = api_key("alice");
    let berth = Berth::start(
        &format!("[auth]\nmode = \"api_key\"\n{alice_table}[usage]\nflush_interval = \"1s\"\n"),
        &fixture_server("alpha", "echo"),
    );
    let mut client = Raw::new(berth.url("alpha"));
    client.token = Some(alice);
    client.initialize("2025-11-25").await;
    // Processes are sampled every 5 s; the meter writes every second.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let rows = usage(&berth, "principal");
        let memory = rows
            .iter()
            .find(|r| {
                r["principal"]
                    .as_str()
                    .is_some_and(|p| p.ends_with("alice"))
            })
            .and_then(|r| r["memory_gib_seconds"].as_f64())
            .unwrap_or(0.0);
        if memory > 0.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no memory metered to alice within 30 s: {rows:#?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(client.delete().await, 200);
}
