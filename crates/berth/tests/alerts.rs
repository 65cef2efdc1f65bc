//! `[alerts]` against the real gateway: a webhook receiver on 127.0.0.1
//! (answering 500 to the first delivery, so every test also proves a retry)
//! gets `crash_loop`, `failed`, `budget_exceeded` and `recovered` exactly
//! once per transition.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// A webhook on its own thread and runtime (the tests block theirs on CLI
/// calls). Answers 500 to the first `fail_first` posts, then 200.
struct Hook {
    addr: SocketAddr,
    /// Bodies of the posts answered 200, in order.
    accepted: Arc<Mutex<Vec<Value>>>,
    /// Every post, refused ones included.
    attempts: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Hook {
    fn start(fail_first: usize) -> Hook {
        let accepted: Arc<Mutex<Vec<Value>>> = Arc::default();
        let attempts = Arc::new(AtomicUsize::new(0));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (acc, att) = (accepted.clone(), attempts.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("receiver runtime");
            runtime.block_on(async move {
                let app = axum::Router::new().route(
                    "/hook",
                    axum::routing::post(
                        move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                            let (acc, att) = (acc.clone(), att.clone());
                            async move {
                                assert_eq!(headers["content-type"], "application/json");
                                if att.fetch_add(1, Ordering::SeqCst) < fail_first {
                                    return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                                }
                                let body: Value =
                                    serde_json::from_slice(&body).expect("an alert is JSON");
                                acc.lock().unwrap().push(body);
                                axum::http::StatusCode::OK
                            }
                        },
                    ),
                );
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind the receiver");
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    })
                    .await
                    .expect("receiver");
            });
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("receiver address");
        Hook {
            addr,
            accepted,
            attempts,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `[alerts]` posting here, checked every 200 ms over `window`.
    fn section(&self, window: &str) -> String {
        format!(
            "[alerts]\nwebhook = \"http://{}/hook\"\nwindow = {window:?}\ncheck_every = \"200ms\"\ncrash_loop = 3\ntimeout = \"2s\"\n",
            self.addr
        )
    }

    fn accepted(&self) -> Vec<Value> {
        self.accepted.lock().unwrap().clone()
    }

    /// (event, condition) of every accepted alert.
    fn events(&self) -> Vec<(String, String)> {
        self.accepted()
            .iter()
            .map(|a| {
                (
                    a["event"].as_str().unwrap_or("?").to_owned(),
                    a["condition"].as_str().unwrap_or("?").to_owned(),
                )
            })
            .collect()
    }

    /// Waits for an accepted alert with `event` and `condition`.
    async fn wait_for(&self, event: &str, condition: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            if let Some(alert) = self
                .accepted()
                .into_iter()
                .find(|a| a["event"] == event && a["condition"] == condition)
            {
                return alert;
            }
            assert!(
                Instant::now() < deadline,
                "no {event}/{condition} alert within {within:?}; got {:?}",
                self.events()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Fields every alert carries.
fn check_common(alert: &Value, server: &str, owner: &str, window_s: f64) {
    assert_eq!(alert["server"], server, "{alert}");
    assert_eq!(alert["owner"], owner, "{alert}");
    assert_eq!(alert["window_s"], window_s, "{alert}");
    assert!(
        alert["at"]
            .as_str()
            .is_some_and(|at| at.contains('T') && at.ends_with('Z')),
        "{alert}"
    );
    assert!(
        alert["gateway"].as_str().is_some_and(|g| !g.is_empty()),
        "{alert}"
    );
    assert!(
        alert["detail"].as_str().is_some_and(|d| d.contains(server)),
        "{alert}"
    );
}

/// One session whose `tools/call` crashes the `crash` fixture.
async fn crash_once(berth: &Berth, server: &str, id: u64) {
    let mut raw = Raw::new(berth.url(server));
    let init = raw.post(&initialize_body("2025-11-25")).await;
    if init.status != 200 {
        return; // failed by now: nothing to crash
    }
    raw.session = init
        .headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let reply = raw.call_tool(id, "crash", json!({})).await;
    assert!(reply.body.contains("error"), "{}", reply.body);
}

/// Stops the gateway (a graceful stop delivers what is queued), then the
/// receiver has everything.
fn stop(berth: Berth) {
    let status = berth.stop(Duration::from_secs(15));
    assert!(status.success(), "berth exited with {status}");
}

#[tokio::test]
async fn a_crash_loop_is_alerted_once_and_recovers_once() {
    let hook = Hook::start(1);
    let servers = format!(
        "{}max_crashes = 50\nowner = \"team-payments\"\n",
        fixture_server("boom", "crash")
    );
    let berth = Berth::start(&hook.section("3s"), &servers);
    assert!(
        berth
            .log()
            .contains(&format!("alerts: posting to http://{}", hook.addr))
    );

    for id in 1..=4 {
        crash_once(&berth, "boom", id).await;
    }
    let alert = hook
        .wait_for("crash_loop", "crash_loop", Duration::from_secs(20))
        .await;
    check_common(&alert, "boom", "team-payments", 3.0);
    assert!(alert["crashes"].as_u64().unwrap() >= 3, "{alert}");
    // More crashes while it loops: no second alert.
    crash_once(&berth, "boom", 5).await;
    // A window without crashes clears it.
    let recovered = hook
        .wait_for("recovered", "crash_loop", Duration::from_secs(20))
        .await;
    check_common(&recovered, "boom", "team-payments", 3.0);
    // /metrics shows the alerts' own delivery counts.
    let (url, token) = admin_endpoint(&berth);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = reqwest::Client::new()
            .get(format!("{url}/metrics"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text");
        if text.contains("berth_component{component=\"alerts\",count=\"delivered\"} 2")
            && text.contains("berth_component{component=\"alerts\",count=\"retried\"} 1")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no alert delivery counts in /metrics:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop(berth);
    assert_eq!(
        hook.events(),
        [
            ("crash_loop".into(), "crash_loop".into()),
            ("recovered".into(), "crash_loop".into())
        ]
    );
    // The 500 was retried: one more attempt than alerts.
    assert_eq!(hook.attempts.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_failed_server_is_alerted_once_and_recovers_after_a_reload() {
    let hook = Hook::start(1);
    let gateway = hook.section("2s");
    let owner = "owner = \"team-ledger\"\n";
    let boom = format!(
        "{}max_crashes = 2\ncrash_window = \"1m\"\n{owner}",
        fixture_server("boom", "crash")
    );
    let berth = Berth::start(&gateway, &boom);
    for id in 1..=2 {
        crash_once(&berth, "boom", id).await;
    }
    let failed = hook
        .wait_for("failed", "failed", Duration::from_secs(20))
        .await;
    check_common(&failed, "boom", "team-ledger", 2.0);
    assert!(
        failed["detail"]
            .as_str()
            .unwrap()
            .contains("berth restart boom"),
        "{failed}"
    );
    assert_eq!(failed["crashes"], 2, "{failed}");

    // The fix: the same server now runs echo.
    berth.rewrite_config(
        &gateway,
        &format!("{}{owner}", fixture_server("boom", "echo")),
    );
    let (ok, out) = berth.cli(&["reload"]);
    assert!(ok, "{out}");
    let recovered = hook
        .wait_for("recovered", "failed", Duration::from_secs(20))
        .await;
    check_common(&recovered, "boom", "team-ledger", 2.0);
    let mut raw = Raw::new(berth.url("boom"));
    raw.initialize("2025-11-25").await;
    let reply = raw.call_tool(1, "echo", json!({"text": "fine"})).await;
    assert!(reply.body.contains("fine"), "{}", reply.body);
    stop(berth);
    // Two crashes are below crash_loop = 3: no crash loop.
    assert_eq!(
        hook.events(),
        [
            ("failed".into(), "failed".into()),
            ("recovered".into(), "failed".into())
        ]
    );
    assert_eq!(hook.attempts.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_server_over_its_latency_budget_is_alerted_once() {
    let hook = Hook::start(1);
    let slow = format!(
        "[servers.slow]\ncommand = {:?}\nargs = [\"echo\", \"--call-delay\", \"50ms\"]\nlatency_budget = \"20ms\"\nowner = \"team-search\"\n",
        fixture_bin().display().to_string()
    );
    let berth = Berth::start(&hook.section("2s"), &slow);
    let mut raw = Raw::new(berth.url("slow"));
    raw.initialize("2025-11-25").await;
    // Calls until the alert comes (the first check makes the window).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut id = 0;
    let alert = loop {
        for _ in 0..5 {
            id += 1;
            let reply = raw.call_tool(id, "echo", json!({"text": "slow"})).await;
            assert!(reply.body.contains("slow"), "{}", reply.body);
        }
        if let Some(alert) = hook
            .accepted()
            .into_iter()
            .find(|a| a["event"] == "budget_exceeded")
        {
            break alert;
        }
        assert!(
            Instant::now() < deadline,
            "no budget_exceeded alert within 20 s; got {:?}; log:\n{}",
            hook.events(),
            berth.log()
        );
    };
    check_common(&alert, "slow", "team-search", 2.0);
    assert_eq!(alert["condition"], "budget_exceeded");
    assert_eq!(alert["budget_ms"], 20.0);
    let p99 = alert["p99_ms"].as_f64().unwrap();
    assert!(p99 >= 50.0, "{alert}");
    // Still slow, over several checks: nothing new.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(1) {
        id += 1;
        raw.call_tool(id, "echo", json!({"text": "slow"})).await;
    }
    stop(berth);
    assert_eq!(
        hook.events(),
        [("budget_exceeded".into(), "budget_exceeded".into())]
    );
    assert_eq!(hook.attempts.load(Ordering::SeqCst), 2);
}
