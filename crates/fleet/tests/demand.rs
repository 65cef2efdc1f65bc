//! The warm pool follows demand (issue 14): `min_ready` is the floor; while
//! sessions arrive faster than that many processes can be replaced, the pool
//! keeps arrival rate × spawn-to-ready time × headroom ready or starting,
//! and gives the surplus back once demand is gone. A burst that empties the
//! pool is refilled at once, in parallel, within `max_processes`.
//!
//! No assertion here is about speed: only about counts and the pool's own
//! report, waited for with deadlines (the figures are in the benchmark).

use std::time::Duration;

mod common;

use berth_fleet::{
    Lease, Pool, PoolReport, ProcState, ServerLog, ServerSpec, TargetReason, Unsolicited,
};
use tokio::time::Instant;

/// A server that boots in `boot` seconds, then answers every request with an
/// `initialize` result (good enough for Berth's ping, too).
fn slow_server(name: &str, boot: &str) -> ServerSpec {
    let script = format!(
        r#"sleep {boot}
while IFS= read -r line; do
  id=$(printf '%s' "$line" | sed -n 's/.*"id":\("[^"]*"\|[0-9][0-9]*\).*/\1/p')
  [ -n "$id" ] && printf '{{"jsonrpc":"2.0","id":%s,"result":{{"protocolVersion":"2025-06-18","capabilities":{{}},"serverInfo":{{"name":"slow","version":"1"}}}}}}\n' "$id"
done"#
    );
    let mut spec = common::sh(name, &script);
    spec.pool.preinitialize = true;
    spec
}

fn waiting(report: &PoolReport) -> usize {
    report
        .processes
        .iter()
        .filter(|p| matches!(p.state, ProcState::Ready | ProcState::Standby))
        .count()
}

fn in_state(report: &PoolReport, state: ProcState) -> usize {
    report.processes.iter().filter(|p| p.state == state).count()
}

/// Polls the pool's report until `done` holds; panics with the last report
/// after `limit`.
async fn wait_for(
    pool: &Pool,
    limit: Duration,
    what: &str,
    mut done: impl FnMut(&PoolReport) -> bool,
) -> PoolReport {
    let deadline = Instant::now() + limit;
    loop {
        let report = pool.report();
        if done(&report) {
            return report;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {limit:?}; last report: {report:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn take(pool: &Pool) -> (Lease, Unsolicited) {
    tokio::time::timeout(Duration::from_secs(10), pool.acquire())
        .await
        .expect("acquire hung")
        .expect("acquire failed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ready_target_follows_steady_demand_up_and_back_down() {
    let mut spec = slow_server("steady", "0.3");
    spec.pool.min_ready = 1;
    spec.pool.max_ready = 6;
    spec.pool.headroom = 2.0;
    spec.pool.max_processes = 24;
    spec.pool.demand_window = Duration::from_secs(1);
    // Surplus processes go after 1 s unused (the pool is never scaled to
    // zero: a session is held throughout).
    spec.pool.stop_after = Some(Duration::from_secs(1));
    let pool = Pool::start(spec, ServerLog::new("steady", 100));
    wait_for(&pool, Duration::from_secs(10), "the floor is ready", |r| {
        waiting(r) == 1
    })
    .await;
    let (held, _held_rx) = take(&pool).await;

    // Sessions at 20/s, each a process to itself, ended right away, until
    // the pool keeps more than the floor ready or starting.
    let mut grown = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut pace = tokio::time::interval(Duration::from_millis(50));
    while Instant::now() < deadline {
        pace.tick().await;
        let (lease, _rx) = take(&pool).await;
        lease.mark_healthy();
        drop(lease);
        let report = pool.report();
        let warm = waiting(&report) + in_state(&report, ProcState::Starting);
        if report.ready_target > 1 && warm > 1 {
            grown = Some(report);
            break;
        }
    }
    let grown = grown.unwrap_or_else(|| panic!("never grew: {:#?}", pool.report()));
    assert!(
        matches!(
            grown.target_reason,
            TargetReason::Demand | TargetReason::MaxReady
        ),
        "{grown:#?}"
    );
    assert!(grown.ready_target <= 6, "max_ready caps it: {grown:#?}");
    assert!(grown.arrival_rate > 0.0, "{grown:#?}");
    assert!(grown.ready_time_ms.is_some(), "{grown:#?}");

    // Demand stops: the target falls back to the floor and the surplus goes.
    let settled = wait_for(
        &pool,
        Duration::from_secs(20),
        "shrunk back to min_ready",
        |r| {
            r.target_reason == TargetReason::Floor
                && r.ready_target == 1
                && waiting(r) == 1
                && in_state(r, ProcState::Starting) == 0
        },
    )
    .await;
    assert_eq!(settled.arrival_rate, 0.0, "{settled:#?}");
    assert!(held.closed().is_none(), "the held session kept its process");
    held.release("test over").await;
    pool.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_that_empties_the_pool_is_refilled_at_once_within_max_processes() {
    let mut spec = slow_server("burst", "0.5");
    spec.pool.min_ready = 2;
    spec.pool.max_processes = 10;
    let pool = Pool::start(spec, ServerLog::new("burst", 100));
    // The floor is ready, and the boot time is measured.
    wait_for(&pool, Duration::from_secs(10), "the floor is ready", |r| {
        waiting(r) == 2 && r.ready_time_ms.is_some()
    })
    .await;

    // Six sessions at once: two warm, four cold.
    let mut held = Vec::new();
    for _ in 0..6 {
        held.push(take(&pool).await);
    }
    // The replacements are spawned together, not one boot after another:
    // several are starting at the same moment. Never more than
    // max_processes alive.
    let mut most_starting = 0;
    let report = wait_for(&pool, Duration::from_secs(10), "the pool refilled", |r| {
        assert!(r.processes.len() <= 10, "over max_processes: {r:#?}");
        most_starting = most_starting.max(in_state(r, ProcState::Starting));
        waiting(r) >= 2 && in_state(r, ProcState::Starting) == 0
    })
    .await;
    assert!(
        most_starting >= 2,
        "replacements were started one at a time: {report:#?}"
    );
    assert!(
        waiting(&report) <= 4,
        "no more than max_processes leaves: {report:#?}"
    );

    // Full: the next session beyond max_processes is refused, not queued forever.
    let mut extra = Vec::new();
    let refused = loop {
        match pool.acquire().await {
            Ok(taken) => extra.push(taken),
            Err(e) => break e,
        }
        assert!(extra.len() <= 4, "more than max_processes handed out");
    };
    assert!(
        matches!(refused, berth_fleet::AcquireError::AtCapacity { max: 10 }),
        "{refused}"
    );
    for (lease, _) in held.into_iter().chain(extra) {
        lease.release("test over").await;
    }
    pool.stop().await;
}
