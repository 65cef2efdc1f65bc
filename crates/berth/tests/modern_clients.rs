//! The official SDK clients in their 2026-07-28 modes through Berth: Python
//! `mcp` 2.3.0 and the TypeScript v2 client (`@modelcontextprotocol/client`
//! 2.4.0), each in auto mode (probe, then pick the stateless era) and pinned
//! to 2026-07-28, and `rmcp` 3.x in its Discover mode. Each lists and calls
//! tools, follows progress, cancels a call by closing its stream (the server
//! must hear of it), and receives a `tools/list_changed` on a
//! `subscriptions/listen` stream. A client pinned to 2026-07-28 also uses a
//! handshake-only npm server through the bridge.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use rmcp::ClientHandler;
use rmcp::model::{CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation};
use rmcp::service::ClientLifecycleMode;
use rmcp::transport::StreamableHttpClientTransport;
use serde_json::Value;

/// The built-in demo (echo, add, countdown with progress), the conformance
/// fixture (its `test_trigger_tool_change` changes the tool list) and the
/// handshake-only npm `server-everything`.
fn servers() -> String {
    format!(
        "[servers.demo]\ncommand = {:?}\nargs = [\"builtin\", \"demo\"]\n\n{}\n{}",
        berth_bin().display().to_string(),
        fixture_server("fixture", "everything"),
        npm_server(
            "everything",
            "@modelcontextprotocol/server-everything",
            &["stdio"],
            &[]
        )
    )
}

/// Runs one client script mode; returns its JSON summary.
fn run(
    program: &str,
    script: &str,
    berth: &Berth,
    negotiation: &str,
    server: &str,
    mode: &str,
    options: &str,
) -> Value {
    let (ok, out) = run_with_timeout(
        Command::new(program)
            .arg(repo().join(script))
            .args([
                "--negotiation",
                negotiation,
                "--expect-version",
                MODERN,
                "--timeout",
                "60",
            ])
            .arg(berth.url(server))
            .arg(mode)
            .arg(options),
        Duration::from_secs(90),
    );
    let summary = out.lines().find_map(|l| {
        serde_json::from_str::<Value>(l)
            .ok()
            .filter(|v| v.get("ok").is_some())
    });
    match summary {
        Some(summary) if ok && summary["ok"] == true => {
            assert_eq!(summary["protocolVersion"], MODERN, "{summary}");
            summary
        }
        _ => panic!(
            "{script} {negotiation} {mode} against {server} failed:\n{out}\n--- berth log ---\n{}",
            berth.log()
        ),
    }
}

/// Every mode against Berth, for one SDK, in auto and pinned negotiation.
fn every_mode(program: &str, script: &str) {
    let berth = Berth::start("", &servers());
    for negotiation in ["auto", "pinned"] {
        let run = |server: &str, mode: &str, options: &str| {
            run(program, script, &berth, negotiation, server, mode, options)
        };
        let call = run(
            "demo",
            "call",
            r#"{"tool":"add","args":{"a":2,"b":3},"expect":"5"}"#,
        );
        assert_eq!(call["era"], "modern", "{call}");
        let progress = run(
            "demo",
            "progress",
            r#"{"tool":"countdown","args":{"seconds":1},"min":5}"#,
        );
        assert_eq!(progress["text"], "counted down 1 s", "{progress}");
        let cancel = run(
            "demo",
            "cancel",
            r#"{"tool":"countdown","args":{"seconds":30},"after":0.5,"within":5}"#,
        );
        assert_eq!(cancel["result"], "cancelled", "{cancel}");
        let listen = run(
            "fixture",
            "listen",
            r#"{"trigger":"test_trigger_tool_change","args":{},"wait":10}"#,
        );
        assert_eq!(
            listen["notification"], "notifications/tools/list_changed",
            "{listen}"
        );
        let bridged = run(
            "everything",
            "call",
            r#"{"tool":"echo","args":{"message":"through the bridge"},"expect":"Echo: through the bridge"}"#,
        );
        assert_eq!(bridged["era"], "modern", "{bridged}");
    }
    // Closing the stream reached the process: the countdown says so on stderr.
    berth.wait_for_log("demo", "countdown cancelled", 2, Duration::from_secs(10));
    let pid = berth.pid();
    assert!(berth.stop(Duration::from_secs(15)).success());
    assert!(children_of(pid).is_empty());
}

#[test]
fn python_sdk_2_3_in_auto_and_pinned_modes() {
    every_mode(
        python_modern().to_str().expect("utf-8 path"),
        "tests/python-modern/client.py",
    );
}

#[test]
fn typescript_v2_client_in_auto_and_pinned_modes() {
    every_mode("node", "tests/node-modern/client.mjs");
}

/// A client that declares nothing and counts the progress it hears.
#[derive(Clone, Default)]
struct Quiet {
    progress: Arc<AtomicUsize>,
}

impl ClientHandler for Quiet {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("berth-e2e-rmcp-discover", "0.1.0"),
        )
    }

    async fn on_progress(
        &self,
        _params: rmcp::model::ProgressNotificationParam,
        _context: rmcp::service::NotificationContext<rmcp::RoleClient>,
    ) {
        self.progress.fetch_add(1, Ordering::SeqCst);
    }
}

async fn discover_client(
    berth: &Berth,
    server: &str,
    handler: Quiet,
) -> rmcp::service::RunningService<rmcp::RoleClient, Quiet> {
    let transport = StreamableHttpClientTransport::from_uri(berth.url(server));
    let lifecycle = ClientLifecycleMode::Discover {
        preferred_versions: vec![rmcp::model::ProtocolVersion::V_2026_07_28],
    };
    tokio::time::timeout(
        Duration::from_secs(20),
        rmcp::service::serve_client_with_lifecycle(handler, transport, lifecycle),
    )
    .await
    .expect("discover in time")
    .expect("discover")
}

fn arguments(value: Value) -> serde_json::Map<String, Value> {
    value.as_object().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn rmcp_in_discover_mode() {
    let berth = Berth::start("", &servers());
    let handler = Quiet::default();
    let client = discover_client(&berth, "demo", handler.clone()).await;
    let tools = client.list_all_tools().await.expect("tools/list");
    let names: Vec<&str> = tools.iter().map(|t| &*t.name).collect();
    assert!(
        names.contains(&"echo") && names.contains(&"countdown"),
        "{names:?}"
    );
    let args = serde_json::json!({"text": "rmcp discover"});
    let result = client
        .call_tool(CallToolRequestParams::new("echo").with_arguments(arguments(args)))
        .await
        .expect("tools/call");
    let text = result.content[0].as_text().map(|t| t.text.clone());
    assert_eq!(text.as_deref(), Some("rmcp discover"));

    // Progress, by the client's own token.
    let countdown = CallToolRequestParams::new("countdown")
        .with_arguments(arguments(serde_json::json!({"seconds": 0.5})));
    let request =
        rmcp::model::ClientRequest::CallToolRequest(rmcp::model::CallToolRequest::new(countdown));
    let handle = client
        .send_cancellable_request(request, rmcp::service::PeerRequestOptions::no_options())
        .await
        .expect("countdown sent");
    handle.await_response().await.expect("countdown answered");
    assert!(
        handler.progress.load(Ordering::SeqCst) >= 3,
        "progress: {handler:?}",
        handler = handler.progress
    );

    // Cancelling a call closes its stream; the server hears of it.
    let before = handler.progress.load(Ordering::SeqCst);
    let long = CallToolRequestParams::new("countdown")
        .with_arguments(arguments(serde_json::json!({"seconds": 30})));
    let request =
        rmcp::model::ClientRequest::CallToolRequest(rmcp::model::CallToolRequest::new(long));
    let handle = client
        .send_cancellable_request(request, rmcp::service::PeerRequestOptions::no_options())
        .await
        .expect("countdown sent");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while handler.progress.load(Ordering::SeqCst) == before {
        assert!(
            std::time::Instant::now() < deadline,
            "no progress before cancelling"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    handle.cancel(Some("test".into())).await.expect("cancel");
    tokio::task::block_in_place(|| {
        berth.wait_for_log("demo", "countdown cancelled", 1, Duration::from_secs(10))
    });

    // subscriptions/listen on the fixture hears the tool list change.
    let fixture = discover_client(&berth, "fixture", Quiet::default()).await;
    let filter = rmcp::model::SubscriptionFilter::builder()
        .tools_list_changed()
        .build();
    let mut subscription = fixture.listen(filter).await.expect("listen acknowledged");
    assert_eq!(subscription.acknowledged().tools_list_changed, Some(true));
    fixture
        .call_tool(CallToolRequestParams::new("test_trigger_tool_change"))
        .await
        .expect("trigger");
    let heard = tokio::time::timeout(Duration::from_secs(10), subscription.next())
        .await
        .expect("a notification in time")
        .expect("a valid notification");
    assert!(
        matches!(
            heard,
            Some(rmcp::model::ServerNotification::ToolListChangedNotification(_))
        ),
        "{heard:?}"
    );
    drop(subscription);
    fixture.cancel().await.expect("close");

    // No session was opened for it.
    let servers = berth.status();
    let demo = servers.iter().find(|s| s["server"] == "demo").unwrap();
    assert_eq!(demo["sessions"], 0, "{demo}");
    assert!(
        demo["stateless"]["calls"].as_u64().unwrap_or(0) >= 2,
        "{demo}"
    );
    client.cancel().await.expect("close");
}
