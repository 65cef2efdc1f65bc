//! A server flooding its client with big notifications: Berth's memory stays
//! bounded by its replay limits (in bytes, not only in events), and what a
//! slow reader misses is counted and logged, never lost in silence.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// Samples Berth's RSS until the server says it is done; the highest, in MiB.
fn peak_rss_until_done(berth: &Berth, server: &str, floods: usize, within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    let mut peak = 0;
    loop {
        peak = peak.max(rss_kib(berth.pid()) / 1024);
        let (_, logs) = berth.cli(&["logs", server, "--lines", "500"]);
        if logs.matches("notify: done").count() >= floods {
            return peak.max(rss_kib(berth.pid()) / 1024);
        }
        assert!(
            Instant::now() < deadline,
            "the flood did not finish within {within:?}: {logs}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// 300 × 4 MB notifications with no stream open: they wait in the
/// session's standalone buffer, which keeps 8 MiB at most.
#[tokio::test(flavor = "multi_thread")]
async fn a_flood_with_no_reader_keeps_berth_small() {
    let berth = Berth::start("", &fixture_server("svc", "echo"));
    let before = rss_kib(berth.pid()) / 1024;
    let mut raw = Raw::new(berth.url("svc"));
    raw.initialize("2025-11-25").await;
    // The session declares sampling; the server asks for it, then floods.
    let flood = raw
        .call_tool(
            1,
            "notify",
            json!({"count": 300, "bytes": 4_000_000, "sampling": true}),
        )
        .await;
    assert_eq!(flood.status, 200, "{}", flood.body);
    let peak = tokio::task::block_in_place(|| {
        peak_rss_until_done(&berth, "svc", 1, Duration::from_secs(120))
    });
    // What may be held at once: the process's unsolicited budget (64 MiB),
    // the session's replay bytes (8 MiB), lines being read and written (4 MB
    // each) and the allocator's slack; ~140-160 MiB measured alone, more on a
    // loaded machine. 1.2 GB flows through: anything unbounded is far above.
    assert!(
        peak < 256,
        "Berth grew to {peak} MiB (from {before} MiB) buffering 1.2 GB nobody read"
    );
    // The loss is counted and said, not silent.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !berth.log().contains("a slow reader missed server messages") {
        assert!(
            Instant::now() < deadline,
            "no log line about the dropped messages:\n{}",
            berth.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ...and counted in `berth ps`.
    let status = berth.status();
    let dropped = status[0]["dropped_messages"].as_u64().unwrap_or(0);
    assert!(
        dropped > 0,
        "berth ps --json shows no dropped messages: {status:?}"
    );
    let (_, ps) = berth.cli(&["ps"]);
    assert!(ps.contains("dropped:"), "{ps}");
    // The server's own request did not vanish: it was failed back to it.
    berth.wait_for_log(
        "svc",
        "notify: sampling answered: error",
        1,
        Duration::from_secs(10),
    );
    // The session still works.
    let echoed = raw
        .call_tool(2, "echo", json!({"text": "still here"}))
        .await;
    assert_eq!(echoed.status, 200, "{}", echoed.body);
}

/// Six sessions whose readers resumed a stream and then stopped reading,
/// each flooded with 50 × 4 MB: bounded all the same.
#[tokio::test(flavor = "multi_thread")]
async fn six_stalled_readers_keep_berth_small() {
    let berth = Berth::start("", &fixture_server("svc", "echo"));
    let mut stalled = Vec::new();
    let mut sessions = Vec::new();
    for _ in 0..6 {
        let mut raw = Raw::new(berth.url("svc"));
        raw.initialize("2025-11-25").await;
        // A resumed standalone stream, never read from here on.
        let response = raw.get(&[("last-event-id", "0-0")]).await;
        assert_eq!(response.status(), 200);
        stalled.push(response);
        sessions.push(raw);
    }
    for (n, raw) in sessions.iter().enumerate() {
        let flood = raw
            .call_tool(
                n as u64 + 1,
                "notify",
                json!({"count": 50, "bytes": 4_000_000}),
            )
            .await;
        assert_eq!(flood.status, 200, "{}", flood.body);
    }
    let peak = tokio::task::block_in_place(|| {
        peak_rss_until_done(&berth, "svc", 6, Duration::from_secs(180))
    });
    assert!(
        peak < 200,
        "Berth grew to {peak} MiB with six stalled readers"
    );
    drop(stalled);
}
