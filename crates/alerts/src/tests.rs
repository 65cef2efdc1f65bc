//! Transitions on a scripted clock and scripted fleet states; delivery
//! against a webhook receiver on 127.0.0.1.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::SystemTime;

use berth_telemetry::{Era, Start};

use super::*;

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

/// A clock the test moves.
#[derive(Clone, Default)]
struct FakeClock(Arc<AtomicU64>);

impl FakeClock {
    fn set(&self, t: Duration) {
        self.0.store(t.as_nanos() as u64, Ordering::Relaxed);
    }
    fn now(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::Relaxed))
    }
}

fn alerts(config: AlertsConfig, clock: &FakeClock) -> Alerts {
    let clock = clock.clone();
    Alerts::new(config)
        .expect("valid config")
        .with_clock(move || clock.now())
}

fn config() -> AlertsConfig {
    AlertsConfig {
        window: Duration::from_secs(60),
        gateway: "gw-1".into(),
        ..AlertsConfig::new("http://127.0.0.1:9/hook")
    }
}

fn state(server: &str) -> ServerState {
    ServerState {
        server: server.into(),
        owner: Some("team-payments".into()),
        ..ServerState::default()
    }
}

fn call(alerts: &Alerts, server: &str, total: Duration, method: &str, outcome: Outcome) {
    alerts.request(&RequestRecord {
        server,
        principal: None,
        method: Some(method),
        tool: Some("t"),
        era: Era::Handshake,
        status: 200,
        outcome,
        total,
        upstream: Some(total),
        bytes_in: 10,
        bytes_out: 10,
        started_at: SystemTime::now(),
        trace: None,
        session: None,
        error_code: None,
    });
}

fn events(alerts: &[Alert]) -> Vec<(Event, Condition)> {
    alerts.iter().map(|a| (a.event, a.condition)).collect()
}

#[test]
fn failed_fires_once_and_recovered_once() {
    let clock = FakeClock::default();
    let a = alerts(config(), &clock);
    let mut seen = Vec::new();
    for (i, failed) in [false, true, true, true, false, false, false]
        .into_iter()
        .enumerate()
    {
        clock.set(SEC * 10 * i as u32);
        let s = ServerState {
            failed,
            crashes: 2,
            ..state("boom")
        };
        seen.extend(a.evaluate(&[s]));
    }
    assert_eq!(
        events(&seen),
        [
            (Event::Failed, Condition::Failed),
            (Event::Recovered, Condition::Failed)
        ]
    );
    let failed = &seen[0];
    assert_eq!(failed.server, "boom");
    assert_eq!(failed.owner.as_deref(), Some("team-payments"));
    assert_eq!(failed.gateway, "gw-1");
    assert!(
        failed.detail.contains("berth restart boom"),
        "{}",
        failed.detail
    );
    assert!(
        humantime::parse_rfc3339(&failed.at).is_ok(),
        "{}",
        failed.at
    );
}

#[test]
fn a_crash_loop_fires_once_and_recovers_after_a_quiet_window() {
    let clock = FakeClock::default();
    let a = alerts(config(), &clock);
    // Crash counter at each 10 s check.
    let counters = [0, 1, 3, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6];
    let mut fired = Vec::new();
    for (i, crashes) in counters.into_iter().enumerate() {
        let t = SEC * 10 * i as u32;
        clock.set(t);
        let s = ServerState {
            crashes,
            ..state("boom")
        };
        for alert in a.evaluate(&[s]) {
            fired.push((t.as_secs(), alert));
        }
    }
    let got: Vec<(u64, Event, Condition)> = fired
        .iter()
        .map(|(t, a)| (*t, a.event, a.condition))
        .collect();
    // Fires at 20 s (3 crashes within the minute); the last check that saw
    // 3 or more within a minute is at 80 s (crashes 3→6 between 20 s and
    // 30 s); a quiet minute after that is 140 s.
    assert_eq!(
        got,
        [
            (20, Event::CrashLoop, Condition::CrashLoop),
            (140, Event::Recovered, Condition::CrashLoop)
        ]
    );
    assert_eq!(fired[0].1.crashes, 3);
    assert_eq!(fired[0].1.window_s, 60.0);
    assert_eq!(fired[1].1.crashes, 0);
}

#[test]
fn crashes_below_the_threshold_or_spread_out_are_no_loop() {
    let clock = FakeClock::default();
    let a = alerts(config(), &clock);
    // One crash every 40 s: never 3 within a minute.
    for i in 0..20u32 {
        clock.set(SEC * 10 * i);
        let s = ServerState {
            crashes: u64::from(i / 4),
            ..state("flaky")
        };
        assert!(a.evaluate(&[s]).is_empty(), "at {}s", i * 10);
    }
}

#[test]
fn a_replaced_server_counts_its_crashes_from_zero() {
    let clock = FakeClock::default();
    let a = alerts(config(), &clock);
    let mut fired = Vec::new();
    // Two crashes long ago, then a reload replaces the server (counter back
    // to 0), which crashes twice, then once more: three within the minute.
    let checks = [(0, 2), (70, 2), (80, 0), (90, 2), (100, 3)];
    for (i, (t, crashes)) in checks.into_iter().enumerate() {
        clock.set(SEC * t);
        let s = ServerState {
            crashes,
            ..state("boom")
        };
        fired.extend(a.evaluate(&[s]).into_iter().map(|a| (i, a.event)));
    }
    assert_eq!(fired, [(4, Event::CrashLoop)]);
}

#[test]
fn budget_exceeded_fires_once_and_recovers_once() {
    let clock = FakeClock::default();
    let a = alerts(config(), &clock);
    let s = ServerState {
        latency_budget: Some(MS * 20),
        ..state("slow")
    };
    clock.set(SEC * 1000);
    // The first check makes the window (no budget known before).
    assert!(a.evaluate(std::slice::from_ref(&s)).is_empty());
    for _ in 0..4 {
        call(&a, "slow", MS * 50, "tools/call", Outcome::Ok);
    }
    // Four samples: too few to judge.
    assert!(a.evaluate(std::slice::from_ref(&s)).is_empty());
    call(&a, "slow", MS * 50, "tools/call", Outcome::Error);
    // Refused calls and other methods are not the server's latency.
    for _ in 0..20 {
        call(&a, "slow", MS * 1, "tools/call", Outcome::Refused);
        call(&a, "slow", MS * 1, "tools/list", Outcome::Ok);
    }
    let fired = a.evaluate(std::slice::from_ref(&s));
    assert_eq!(
        events(&fired),
        [(Event::BudgetExceeded, Condition::BudgetExceeded)]
    );
    let p99 = fired[0].p99_ms.unwrap();
    assert!((49.0..=51.0).contains(&p99), "{p99}");
    assert_eq!(fired[0].budget_ms, Some(20.0));
    assert!(
        fired[0].detail.contains("tool-call latency") && fired[0].detail.contains("(5 calls)"),
        "{}",
        fired[0].detail
    );
    // Still over: nothing new.
    for i in 0..5 {
        clock.set(SEC * (1000 + 5 * i));
        call(&a, "slow", MS * 60, "tools/call", Outcome::Ok);
        assert!(a.evaluate(std::slice::from_ref(&s)).is_empty());
    }
    // A window later the slow calls have left it, fast ones came in.
    clock.set(SEC * 1090);
    for _ in 0..3 {
        call(&a, "slow", MS * 5, "tools/call", Outcome::Ok);
    }
    // Three fast calls are too few to say it recovered.
    assert!(a.evaluate(std::slice::from_ref(&s)).is_empty());
    for _ in 0..3 {
        call(&a, "slow", MS * 5, "tools/call", Outcome::Ok);
    }
    let fired = a.evaluate(std::slice::from_ref(&s));
    assert_eq!(
        events(&fired),
        [(Event::Recovered, Condition::BudgetExceeded)]
    );
    assert!(fired[0].p99_ms.unwrap() <= 5.1, "{:?}", fired[0].p99_ms);
    for i in 1..5 {
        clock.set(SEC * (1090 + i));
        call(&a, "slow", MS * 5, "tools/call", Outcome::Ok);
        assert!(a.evaluate(std::slice::from_ref(&s)).is_empty());
    }
}

#[test]
fn a_slow_first_result_is_over_budget_too() {
    let clock = FakeClock::default();
    let a = alerts(config(), &clock);
    let s = ServerState {
        latency_budget: Some(MS * 100),
        ..state("cold")
    };
    assert!(a.evaluate(std::slice::from_ref(&s)).is_empty());
    for _ in 0..10 {
        call(&a, "cold", MS * 3, "tools/call", Outcome::Ok);
        a.first_result(&FirstResult {
            server: "cold",
            start: Start::Cold,
            after: MS * 800,
        });
    }
    let fired = a.evaluate(std::slice::from_ref(&s));
    assert_eq!(
        events(&fired),
        [(Event::BudgetExceeded, Condition::BudgetExceeded)]
    );
    assert!(
        fired[0].detail.contains("time to first result"),
        "{}",
        fired[0].detail
    );
    // Without a budget no window is kept and nothing is measured.
    let other = state("unbudgeted");
    a.evaluate(std::slice::from_ref(&other));
    call(&a, "unbudgeted", SEC * 9, "tools/call", Outcome::Ok);
    assert_eq!(a.p99("unbudgeted"), (None, None));
}

#[test]
fn a_removed_server_closes_what_was_open() {
    let clock = FakeClock::default();
    let a = alerts(config(), &clock);
    let s = ServerState {
        failed: true,
        ..state("gone")
    };
    assert_eq!(
        events(&a.evaluate(&[s])),
        [(Event::Failed, Condition::Failed)]
    );
    let fired = a.evaluate(&[state("other")]);
    assert_eq!(events(&fired), [(Event::Recovered, Condition::Failed)]);
    assert!(fired[0].detail.contains("removed"), "{}", fired[0].detail);
    assert!(a.evaluate(&[state("other")]).is_empty());
}

#[test]
fn crashes_before_the_first_check_count() {
    let clock = FakeClock::default();
    let a = alerts(config(), &clock);
    // A server first seen with 3 crashes: they happened since it started,
    // less than a check ago.
    let s = ServerState {
        crashes: 3,
        ..state("boom")
    };
    let fired = a.evaluate(&[s]);
    assert_eq!(events(&fired), [(Event::CrashLoop, Condition::CrashLoop)]);
    assert_eq!(fired[0].crashes, 3);
}

#[test]
fn an_empty_fleet_is_a_stopping_gateway_not_removed_servers() {
    let clock = FakeClock::default();
    let a = alerts(config(), &clock);
    let s = ServerState {
        failed: true,
        ..state("boom")
    };
    assert_eq!(a.evaluate(std::slice::from_ref(&s)).len(), 1);
    assert!(a.evaluate(&[]).is_empty());
    assert!(a.evaluate(&[s]).is_empty());
}

#[test]
fn the_payload_has_every_field() {
    let clock = FakeClock::default();
    let a = alerts(config(), &clock);
    let s = ServerState {
        failed: true,
        latency_budget: Some(MS * 250),
        ..state("boom")
    };
    let alert = a.evaluate(&[s]).remove(0);
    let json = serde_json::to_value(&alert).unwrap();
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    let mut expected = [
        "event",
        "server",
        "owner",
        "condition",
        "detail",
        "p99_ms",
        "budget_ms",
        "crashes",
        "window_s",
        "at",
        "gateway",
    ];
    expected.sort_unstable();
    let mut keys = keys;
    keys.sort_unstable();
    assert_eq!(keys, expected);
    assert_eq!(json["event"], "failed");
    assert_eq!(json["condition"], "failed");
    assert_eq!(json["budget_ms"], 250.0);
    assert_eq!(json["p99_ms"], serde_json::Value::Null);
    assert_eq!(json["window_s"], 60.0);
}

#[test]
fn bad_settings_are_refused_and_credentials_never_shown() {
    for bad in ["", "ftp://x/y", "hooks.example.com", "http://"] {
        let err = Alerts::new(AlertsConfig::new(bad))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("alerts.webhook must be an http(s) URL"),
            "{err}"
        );
    }
    let config = AlertsConfig {
        headers: vec![("authorization".into(), "Bearer s3cret\n".into())],
        ..AlertsConfig::new("https://u:pw@hooks.example.com:8443/t/abc?token=xyz")
    };
    assert!(!format!("{config:?}").contains("pw"));
    assert!(!format!("{config:?}").contains("s3cret"));
    let err = Alerts::new(config).err().unwrap().to_string();
    assert!(err.contains("alerts.headers.authorization"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
    let a = Alerts::new(AlertsConfig::new(
        "https://u:pw@hooks.example.com:8443/t/abc?token=xyz",
    ))
    .unwrap();
    assert_eq!(a.webhook(), "https://hooks.example.com:8443");
}

#[test]
fn backoff_doubles_from_the_base_and_is_bounded() {
    let a = Alerts::new(AlertsConfig::new("http://127.0.0.1:9/")).unwrap();
    let guard = lock(&a.pending);
    let (_, target) = guard.as_ref().unwrap();
    let waits: Vec<u64> = (0..8).map(|i| target.backoff(i).as_secs()).collect();
    assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
}

/// A webhook receiver on 127.0.0.1: answers each POST with the next of
/// `statuses` (then 200), and keeps what it got.
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<(Instant, HeaderMap, serde_json::Value)>>>,
    hits: Arc<AtomicUsize>,
}

async fn receiver(statuses: Vec<u16>, hang: bool) -> Receiver {
    use axum::http::StatusCode;
    let got: Arc<Mutex<Vec<(Instant, HeaderMap, serde_json::Value)>>> = Arc::default();
    let hits = Arc::new(AtomicUsize::new(0));
    let (got2, hits2) = (got.clone(), hits.clone());
    let statuses = Arc::new(statuses);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let (got, hits, statuses) = (got2.clone(), hits2.clone(), statuses.clone());
            async move {
                let n = hits.fetch_add(1, Ordering::SeqCst);
                if hang {
                    std::future::pending::<()>().await;
                }
                let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                lock(&got).push((Instant::now(), headers, json));
                let status = statuses.get(n).copied().unwrap_or(200);
                StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver { addr, got, hits }
}

async fn until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(MS * 10).await;
    }
}

fn fast(url: String) -> AlertsConfig {
    AlertsConfig {
        retry_base: MS * 100,
        retry_max: MS * 400,
        timeout: SEC * 2,
        retries: 3,
        headers: vec![("authorization".into(), "Bearer hook-token".into())],
        check_every: SEC * 3600,
        ..AlertsConfig::new(url)
    }
}

#[tokio::test]
async fn a_5xx_or_429_is_retried_with_backoff_and_delivered_once() {
    let r = receiver(vec![500, 429], false).await;
    let a = Arc::new(Alerts::new(fast(format!("http://{}/hook", r.addr))).unwrap());
    a.start(Vec::new);
    let s = ServerState {
        failed: true,
        ..state("boom")
    };
    a.evaluate(&[s]);
    until("delivered", SEC * 10, || a.stats().delivered() == 1).await;
    let got = lock(&r.got).clone();
    assert_eq!(got.len(), 3, "two refusals, then accepted");
    assert!(got.iter().all(|(_, _, body)| body == &got[2].2));
    assert_eq!(got[2].2["event"], "failed");
    let (_, headers, _) = &got[0];
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["authorization"], "Bearer hook-token");
    // 100 ms then 200 ms between attempts.
    let gaps = [got[1].0 - got[0].0, got[2].0 - got[1].0];
    assert!(gaps[0] >= MS * 100 && gaps[1] >= MS * 200, "{gaps:?}");
    assert_eq!((a.stats().retried(), a.stats().failed()), (2, 0));
    a.shutdown().await;
}

#[tokio::test]
async fn other_4xx_are_not_retried() {
    let r = receiver(vec![401], false).await;
    let a = Arc::new(Alerts::new(fast(format!("http://{}/hook", r.addr))).unwrap());
    a.start(Vec::new);
    a.evaluate(&[ServerState {
        failed: true,
        ..state("boom")
    }]);
    until("given up", SEC * 10, || a.stats().failed() == 1).await;
    // A retry would come 100 ms later.
    tokio::time::sleep(MS * 300).await;
    assert_eq!(r.hits.load(Ordering::SeqCst), 1);
    assert_eq!((a.stats().delivered(), a.stats().retried()), (0, 0));
    a.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_webhook_is_retried_then_given_up() {
    // A port nothing listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let a = Arc::new(Alerts::new(fast(format!("http://127.0.0.1:{port}/hook"))).unwrap());
    a.start(Vec::new);
    let started = Instant::now();
    a.evaluate(&[ServerState {
        failed: true,
        ..state("boom")
    }]);
    until("given up", SEC * 10, || a.stats().failed() == 1).await;
    assert_eq!(a.stats().retried(), 3);
    // 100 + 200 + 400 ms of backoff.
    assert!(started.elapsed() >= MS * 700, "{:?}", started.elapsed());
    a.shutdown().await;
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_without_blocking() {
    let r = receiver(Vec::new(), true).await;
    let config = AlertsConfig {
        queue: 2,
        timeout: MS * 300,
        ..fast(format!("http://{}/hook", r.addr))
    };
    let a = Arc::new(Alerts::new(config).unwrap());
    a.start(Vec::new);
    let states: Vec<ServerState> = (0..10)
        .map(|i| ServerState {
            failed: true,
            ..state(&format!("s{i}"))
        })
        .collect();
    // The first alert is taken by the delivery task (which then hangs on
    // the webhook), two wait in the queue, the rest are dropped.
    a.evaluate(&states[..1]);
    until("first delivery in flight", SEC * 5, || {
        r.hits.load(Ordering::SeqCst) == 1
    })
    .await;
    let started = Instant::now();
    let fired = a.evaluate(&states);
    assert!(started.elapsed() < MS * 100, "{:?}", started.elapsed());
    assert_eq!(fired.len(), 9);
    assert_eq!(a.stats().dropped(), 7);
    // Shutdown is bounded even with a webhook that never answers.
    let started = Instant::now();
    a.shutdown().await;
    assert!(started.elapsed() < SEC * 2, "{:?}", started.elapsed());
}

#[tokio::test]
async fn the_evaluation_loop_reads_the_fleet_every_check() {
    let r = receiver(Vec::new(), false).await;
    let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let config = AlertsConfig {
        check_every: MS * 50,
        ..fast(format!("http://{}/hook", r.addr))
    };
    let a = Arc::new(Alerts::new(config).unwrap());
    let (f, n) = (failed.clone(), reads.clone());
    a.start(move || {
        n.fetch_add(1, Ordering::SeqCst);
        vec![ServerState {
            failed: f.load(Ordering::SeqCst),
            ..state("boom")
        }]
    });
    until("a few checks", SEC * 5, || {
        reads.load(Ordering::SeqCst) >= 3
    })
    .await;
    failed.store(true, Ordering::SeqCst);
    until("failed", SEC * 5, || a.stats().delivered() == 1).await;
    let before = reads.load(Ordering::SeqCst);
    until("more checks", SEC * 5, || {
        reads.load(Ordering::SeqCst) >= before + 3
    })
    .await;
    failed.store(false, Ordering::SeqCst);
    until("recovered", SEC * 5, || a.stats().delivered() == 2).await;
    let before = reads.load(Ordering::SeqCst);
    until("more checks", SEC * 5, || {
        reads.load(Ordering::SeqCst) >= before + 3
    })
    .await;
    let got: Vec<String> = lock(&r.got)
        .iter()
        .map(|(_, _, b)| format!("{}/{}", b["event"], b["condition"]))
        .collect();
    assert_eq!(got, ["\"failed\"/\"failed\"", "\"recovered\"/\"failed\""]);
    a.shutdown().await;
    let after = reads.load(Ordering::SeqCst);
    tokio::time::sleep(MS * 200).await;
    assert_eq!(reads.load(Ordering::SeqCst), after, "stopped evaluating");
}
