//! Soak: 2,000 sessions created and ended (half by DELETE, half by idle
//! expiry) by 8 concurrent clients. Afterwards the gateway's children are
//! back to the pool size with no zombie, and its memory has not grown.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use serde_json::json;

const SESSIONS: u64 = 2_000;

/// `SOAK_SESSIONS` runs a longer soak by hand.
fn sessions() -> u64 {
    std::env::var("SOAK_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SESSIONS)
}
const CLIENTS: u64 = 8;
const POOL: usize = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_thousand_sessions_leave_no_process_and_no_memory_behind() {
    // max_ready = min_ready: this is about leaks, so the pool does not grow
    // with demand (tests/demand.rs in fleet covers that) and its size at the
    // end is exactly its floor.
    let server = format!(
        "{}[servers.svc.pool]\nmin_ready = {POOL}\nmax_ready = {POOL}\npreinitialize = true\nmax_processes = {}\n",
        fixture_server("svc", "echo"),
        SESSIONS
    );
    let berth = Arc::new(Berth::start("session_idle_timeout = \"1s\"", &server));
    berth.wait_for_children(POOL, Duration::from_secs(10));
    let started = Arc::new(AtomicU64::new(0));
    let baseline_rss = Arc::new(AtomicU64::new(0));

    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (berth, started, baseline_rss) =
                (berth.clone(), started.clone(), baseline_rss.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                loop {
                    let n = started.fetch_add(1, Ordering::Relaxed);
                    if n >= sessions() {
                        return;
                    }
                    if n == 200 {
                        baseline_rss.store(rss_kib(berth.pid()), Ordering::Relaxed);
                    }
                    let mut raw = Raw {
                        http: http.clone(),
                        url: berth.url("svc"),
                        session: None,
                        token: None,
                    };
                    raw.initialize("2025-11-25").await;
                    let reply = raw
                        .call_tool(1, "echo", json!({"text": format!("session {n}")}))
                        .await;
                    assert!(
                        reply.body.contains(&format!("session {n}")),
                        "session {n}: {}",
                        reply.body
                    );
                    // Half end by DELETE, half are left to expire.
                    if n % 2 == 0 {
                        assert_eq!(raw.delete().await, 200, "session {n}");
                    }
                }
            })
        })
        .collect();
    for client in clients {
        client.await.expect("client task");
    }
    // Idle sessions expire after 1 s; then only the pool's processes remain.
    let left = berth.wait_for_children(POOL, Duration::from_secs(30));
    assert!(
        left.iter().all(|(_, state)| *state != 'Z'),
        "zombies: {left:?}"
    );
    // The gateway hands freed memory back once sessions stop ending (its idle
    // reaper runs every 250 ms here); give it a moment.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (baseline, end) = (baseline_rss.load(Ordering::Relaxed), rss_kib(berth.pid()));
    println!(
        "gateway RSS after 200 sessions: {baseline} KiB; after {}: {end} KiB",
        sessions()
    );
    assert!(baseline > 0, "RSS not sampled");
    assert!(
        end * 100 <= baseline * 120,
        "gateway RSS grew from {baseline} KiB to {end} KiB (> +20%)"
    );
}
