//! The process lifecycle against small shell scripts standing in for servers.

use std::time::Duration;

mod common;

use berth_fleet::{Delivery, ServerLog, ServerSpec, Upstream};
use common::{msg, sh};

async fn settle(mut exchange: berth_fleet::Exchange) -> Delivery {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), exchange.next())
            .await
            .expect("no answer in 5 s")
        {
            Some(Delivery::Message(_)) => continue,
            Some(d) => return d,
            None => panic!("exchange ended without an answer"),
        }
    }
}

#[tokio::test]
async fn routes_answers_and_interim_messages_by_id_and_token() {
    let script = r#"read a; read b
echo '{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"t1","progress":1}}'
echo '{"jsonrpc":"2.0","id":2,"result":{"n":2}}'
echo '{"jsonrpc":"2.0","id":1,"result":{"n":1}}'
read c"#;
    let (up, _unsolicited) =
        Upstream::spawn(&sh("routes", script), ServerLog::new("routes", 10)).unwrap();
    let mut first = up
        .call(&msg(
            r#"{"jsonrpc":"2.0","id":1,"method":"a","params":{"_meta":{"progressToken":"t1"}}}"#,
        ))
        .unwrap();
    let second = up
        .call(&msg(r#"{"jsonrpc":"2.0","id":2,"method":"b"}"#))
        .unwrap();
    match first.next().await {
        Some(Delivery::Message(m)) => assert_eq!(m.method(), Some("notifications/progress")),
        other => panic!("expected the progress notification first, got {other:?}"),
    }
    let Delivery::Response(r2) = settle(second).await else {
        panic!("no answer for id 2")
    };
    assert_eq!(
        &r2.bytes[..],
        br#"{"jsonrpc":"2.0","id":2,"result":{"n":2}}"#
    );
    let Delivery::Response(r1) = settle(first).await else {
        panic!("no answer for id 1")
    };
    assert!(r1.bytes.ends_with(br#"{"n":1}}"#));
    up.shutdown("test over").await;
}

#[tokio::test]
async fn an_exit_fails_requests_in_flight_with_status_and_stderr() {
    let (up, _u) = Upstream::spawn(
        &sh("dies", "read line; echo 'oops: out of cheese' >&2; exit 7"),
        ServerLog::new("dies", 10),
    )
    .unwrap();
    let exchange = up
        .call(&msg(r#"{"jsonrpc":"2.0","id":"x","method":"tools/call"}"#))
        .unwrap();
    let Delivery::Failed(failure) = settle(exchange).await else {
        panic!("expected a failure")
    };
    assert_eq!(failure.code, berth_wire::ErrorCode::UPSTREAM_CLOSED);
    assert!(
        failure.message.contains("exited with status 7"),
        "{}",
        failure.message
    );
    assert!(
        failure.message.contains("out of cheese"),
        "{}",
        failure.message
    );
    // Later requests fail at once with the same cause.
    let again = up
        .call(&msg(r#"{"jsonrpc":"2.0","id":"y","method":"ping"}"#))
        .unwrap_err();
    assert!(again.message.contains("status 7"));
}

#[tokio::test]
async fn stop_escalates_to_sigkill_and_reaps_the_whole_group() {
    let log = ServerLog::new("stubborn", 50);
    // Ignores stdin EOF and SIGTERM; its `sleep` child is in the same group.
    let (up, _u) = Upstream::spawn(
        &sh("stubborn", "trap '' TERM; while :; do sleep 1; done"),
        log.clone(),
    )
    .unwrap();
    let pid = up.pid();
    tokio::time::timeout(Duration::from_secs(5), up.shutdown("test over"))
        .await
        .expect("shutdown hung");
    assert!(
        log.snapshot().iter().any(|l| l.text.contains("SIGKILL")),
        "{:?}",
        log.snapshot()
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} still exists"
    );
}

#[tokio::test]
async fn overlong_lines_stop_the_server() {
    let mut spec = sh(
        "flood",
        "read line; head -c 100000 /dev/zero | tr '\\0' 'x'; echo; read more",
    );
    spec.max_message_bytes = 1000;
    let (up, _u) = Upstream::spawn(&spec, ServerLog::new("flood", 10)).unwrap();
    let exchange = up
        .call(&msg(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#))
        .unwrap();
    let Delivery::Failed(failure) = settle(exchange).await else {
        panic!("expected a failure")
    };
    assert!(
        failure.message.contains("1000-byte limit"),
        "{}",
        failure.message
    );
}

#[tokio::test]
async fn a_missing_command_is_a_spawn_error() {
    let err = Upstream::spawn(
        &ServerSpec::new("ghost", "/nonexistent/berth-test"),
        ServerLog::new("ghost", 10),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("could not start server `ghost`"),
        "{err}"
    );
}

#[tokio::test]
async fn a_server_request_goes_to_the_request_in_flight_whatever_its_own_token() {
    // rmcp servers put a progress token of their own on every request they send.
    let script = r#"read a
echo '{"jsonrpc":"2.0","id":0,"method":"sampling/createMessage","params":{"_meta":{"progressToken":0}}}'
read reply
echo '{"jsonrpc":"2.0","id":1,"result":{}}'
read more"#;
    let (up, mut unsolicited) =
        Upstream::spawn(&sh("sampler", script), ServerLog::new("sampler", 10)).unwrap();
    let mut call = up
        .call(&msg(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"_meta":{"progressToken":"mine"}}}"#))
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(5), call.next())
        .await
        .unwrap()
    {
        Some(Delivery::Message(m)) => assert_eq!(m.method(), Some("sampling/createMessage")),
        other => panic!("the sampling request should reach the call's stream, got {other:?}"),
    }
    assert!(
        unsolicited.try_recv().is_err(),
        "nothing should go to the session stream"
    );
    up.send(&msg(
        r#"{"jsonrpc":"2.0","id":0,"result":{"content":{"type":"text","text":"ok"}}}"#,
    ))
    .unwrap();
    assert!(matches!(settle(call).await, Delivery::Response(_)));
    up.shutdown("test over").await;
}

/// The scheduling policy of process `pid` (field 41 of /proc/PID/stat).
fn policy(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) start at field 3.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after.split(' ').nth(41 - 3).unwrap().parse().unwrap()
}

#[tokio::test]
async fn servers_run_under_sched_batch_unless_configured_normal() {
    for (scheduling, expected) in [
        (berth_fleet::Scheduling::Batch, libc::SCHED_BATCH as u32),
        (berth_fleet::Scheduling::Normal, libc::SCHED_OTHER as u32),
    ] {
        let mut spec = sh("sched", "read line");
        spec.scheduling = scheduling;
        let (up, _u) = Upstream::spawn(&spec, ServerLog::new("sched", 10)).unwrap();
        assert_eq!(policy(up.pid()), expected, "{scheduling:?}");
        tokio::time::timeout(Duration::from_secs(5), up.shutdown("test over"))
            .await
            .expect("shutdown hung");
    }
}
