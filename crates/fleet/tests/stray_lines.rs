//! Server lines that concern no request Berth can find (issue 12): they cost
//! the message, never the process. Errors a server could give no id are
//! attributed to the one request on the wire.

use std::time::Duration;

mod common;

use berth_fleet::{Binding, Delivery, ServerLog, ServerSpec, SessionTag, Upstream};
use berth_wire::{ErrorCode, Message};
use common::msg;

fn sh(name: &str, script: &str, shared: bool) -> ServerSpec {
    let mut spec = common::sh(name, script);
    spec.binding = if shared {
        Binding::Shared
    } else {
        Binding::Exclusive
    };
    spec
}

async fn answer(mut exchange: berth_fleet::Exchange) -> Message {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), exchange.next())
            .await
            .expect("no answer in 5 s")
        {
            Some(Delivery::Message(_)) => continue,
            Some(Delivery::Response(m)) => return m,
            other => panic!("expected a response, got {other:?}"),
        }
    }
}

fn json(m: &Message) -> serde_json::Value {
    serde_json::from_slice(&m.bytes).unwrap()
}

#[tokio::test]
async fn an_error_without_an_id_goes_to_the_only_request_in_flight() {
    // Answers the first request with an error that has no id at all, then
    // with one to an id nobody sent, then answers the second properly.
    let script = r#"read a
echo '{"jsonrpc":"2.0","error":{"code":-32600,"message":"bad id"}}'
echo '{"jsonrpc":"2.0","id":"never-sent","result":{}}'
read b
echo '{"jsonrpc":"2.0","id":2,"result":{"ok":true}}'
read c"#;
    let (up, _unsolicited) =
        Upstream::spawn(&sh("idless", script, false), ServerLog::new("idless", 10)).unwrap();
    let big =
        r#"{"jsonrpc":"2.0","id":123456789012345678901234567890123456789,"method":"tools/list"}"#;
    let first = answer(up.call(&msg(big)).unwrap()).await;
    assert_eq!(
        &first.bytes[..],
        br#"{"jsonrpc":"2.0","id":123456789012345678901234567890123456789,"error":{"code":-32600,"message":"bad id"}}"#
    );
    let second = answer(
        up.call(&msg(r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#))
            .unwrap(),
    )
    .await;
    assert_eq!(json(&second)["result"]["ok"], true);
    assert!(up.closed().is_none(), "{:?}", up.closed());
    assert_eq!(up.strays(), 1);
    assert!(!up.crashed());
}

#[tokio::test]
async fn a_null_id_error_on_a_shared_process_reaches_only_its_sender() {
    // Serial mode: the first request is on the wire alone; the server cannot
    // read it and says so with "id": null. The second (another session) is
    // answered under its rewritten id, `b2.2`.
    let script = r#"read a
echo '{"jsonrpc":"2.0","id":null,"error":{"code":-32602,"message":"Invalid params"}}'
read b
echo '{"jsonrpc":"2.0","id":"b2.2","result":{"who":"bystander"}}'
read c"#;
    let (up, _unsolicited) =
        Upstream::spawn(&sh("nullid", script, true), ServerLog::new("nullid", 10)).unwrap();
    let poisoner = up
        .call_as(
            &msg(r#"{"jsonrpc":"2.0","id":1.5,"method":"tools/list"}"#),
            Some(SessionTag(1)),
        )
        .unwrap();
    let bystander = up
        .call_as(
            &msg(r#"{"jsonrpc":"2.0","id":"x","method":"tools/list"}"#),
            Some(SessionTag(2)),
        )
        .unwrap();
    let poisoned = answer(poisoner).await;
    assert_eq!(
        &poisoned.bytes[..],
        br#"{"jsonrpc":"2.0","id":1.5,"error":{"code":-32602,"message":"Invalid params"}}"#
    );
    let served = answer(bystander).await;
    assert_eq!(json(&served)["id"], "x");
    assert_eq!(json(&served)["result"]["who"], "bystander");
    assert!(up.closed().is_none(), "{:?}", up.closed());
    assert_eq!(up.strays(), 0);
}

#[tokio::test]
async fn a_shared_process_is_never_sent_params_it_cannot_read() {
    // Records what it reads; answers nothing.
    let record = std::env::temp_dir().join(format!("berth-stray-{}", std::process::id()));
    let _ = std::fs::remove_file(&record);
    let script = format!("cat > {}", record.display());
    let (up, _unsolicited) =
        Upstream::spawn(&sh("params", &script, true), ServerLog::new("params", 10)).unwrap();
    let refused = up
        .call_as(
            &msg(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":[]}"#),
            Some(SessionTag(1)),
        )
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode::INVALID_PARAMS);
    up.send(&msg(
        r#"{"jsonrpc":"2.0","method":"notifications/initialized","params":123}"#,
    ))
    .unwrap();
    up.send(&msg(
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    ))
    .unwrap();
    up.shutdown("test over").await;
    let seen = std::fs::read_to_string(&record).unwrap();
    let _ = std::fs::remove_file(&record);
    assert_eq!(
        seen,
        "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n"
    );
}

#[tokio::test]
async fn output_that_is_not_json_rpc_still_stops_the_process() {
    let script = r#"read a
echo 'this is not json'
read b"#;
    let (up, _unsolicited) =
        Upstream::spawn(&sh("garbage", script, false), ServerLog::new("garbage", 10)).unwrap();
    let mut exchange = up
        .call(&msg(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#))
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(5), exchange.next()).await {
        Ok(Some(Delivery::Failed(f))) => assert!(
            f.message.contains("not a JSON-RPC message"),
            "{}",
            f.message
        ),
        other => panic!("expected a failure, got {other:?}"),
    }
    assert!(up.closed().is_some());
}

/// A server flooding messages nobody reads: what waits for a reader stays
/// within the budget, the rest is dropped and counted, and the server's own
/// request past the budget is answered with an error, not left hanging.
#[tokio::test]
async fn unread_messages_stay_within_the_budget_and_requests_are_answered() {
    let flood = r#"
import sys
head = '{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"'
tail = '"}}'
# Lines of exactly 4 MiB: sixteen fill the 64 MiB budget to the byte.
line = head + "x" * (4 * 1024 * 1024 - len(head) - len(tail)) + tail
for n in range(40):
    sys.stdout.write(line + "\n")
sys.stdout.write('{"jsonrpc":"2.0","id":"r1","method":"sampling/createMessage","params":{}}\n')
sys.stdout.flush()
sys.stderr.write("answer: " + sys.stdin.readline())
sys.stderr.flush()
sys.stdin.readline()
"#;
    let spec = common::spec("flood", "python3", &["-c", flood]);
    let log = ServerLog::new("flood", 50);
    let (up, mut unsolicited) = Upstream::spawn(&spec, log.clone()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let answer = loop {
        if let Some(line) = log
            .last_stderr(up.pid(), 5)
            .into_iter()
            .find(|l| l.contains("answer: "))
        {
            break line;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server's request was never answered: {:?} strays {}",
            log.last_stderr(up.pid(), 5),
            up.strays()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        answer.contains("\"id\":\"r1\"") && answer.contains("error"),
        "{answer}"
    );
    assert!(up.strays() > 0, "the drops were not counted");
    assert_eq!(
        log.strays(),
        up.strays(),
        "the server's count (berth ps) differs"
    );
    let mut waiting = 0;
    while let Ok(msg) = unsolicited.try_recv() {
        waiting += msg.bytes.len();
    }
    assert!(
        waiting <= berth_fleet::UNSOLICITED_BUDGET,
        "{waiting} bytes waited for a reader"
    );
    assert!(waiting > 0);
}
