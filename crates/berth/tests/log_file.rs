//! A server's `log_file` on a stalled disk (a FIFO nobody reads): the file
//! is written off the request path, so `berth logs`, `berth ps` and calls
//! keep answering; the lines the file missed are counted and reported once
//! it recovers.

mod common;

use std::io::Read as _;
use std::time::Duration;

use common::{Berth, Raw, fixture_bin};

/// Floods stderr from the background while the echo fixture serves.
fn flooding_server(log_file: &std::path::Path) -> String {
    let pad = "z".repeat(300);
    let script = format!(
        "( i=0; while [ $i -lt 4000 ]; do echo \"flood $i {pad}\" >&2; i=$((i+1)); done; echo 'flood done' >&2 ) & exec {:?} echo",
        fixture_bin().display().to_string()
    );
    // No sandbox: the fixture binary's path is only named inside the script.
    format!(
        "[servers.flood]\ncommand = \"/bin/sh\"\nargs = [\"-c\", {script:?}]\nsandbox = false\nlog_file = {:?}\n",
        log_file.display().to_string()
    )
}

#[test]
fn a_stalled_log_file_stalls_neither_logs_nor_calls() {
    let fifo_dir = tempfile::tempdir().unwrap();
    let fifo = fifo_dir.path().join("flood.log");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo failed");

    let berth = Berth::start("", &flooding_server(&fifo));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut raw = Raw::new(berth.url("flood"));
    let call = |raw: &Raw, id: u64| {
        runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(30), async {
                let reply = raw
                    .call_tool(id, "echo", serde_json::json!({"text": "still here"}))
                    .await;
                assert_eq!(reply.status, 200, "call failed: {}", reply.body);
                assert!(reply.body.contains("still here"), "{}", reply.body);
            })
            .await
            .expect("a call did not answer within 30 s while the log file was stalled")
        })
    };
    // The session's process floods stderr from the start.
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), raw.initialize("2025-11-25"))
            .await
            .expect("initialize did not answer within 30 s")
    });
    call(&raw, 2);
    // The whole flood reached the ring (what `berth logs` reads) while the
    // file took nothing, and calls still answer after it.
    berth.wait_for_log("flood", "flood done", 1, Duration::from_secs(60));
    call(&raw, 3);

    let status = berth.status();
    let flood = status
        .iter()
        .find(|s| s["server"] == "flood")
        .expect("flood in berth ps");
    let unwritten = flood["log_lines_unwritten"].as_u64().unwrap_or(0);
    assert!(unwritten > 0, "no unwritten lines counted: {flood}");
    let (ok, table) = berth.cli(&["ps"]);
    assert!(ok && table.contains("line(s) not written"), "{table}");

    // The disk recovers: a reader drains the FIFO, and the log says what the file missed.
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::fs::File::open(&fifo).and_then(|mut f| f.read_to_string(&mut text));
            text
        })
    };
    berth.wait_for_log(
        "flood",
        &format!("log line(s) not written to {}", fifo.display()),
        1,
        Duration::from_secs(30),
    );
    berth.stop(Duration::from_secs(20));
    // Berth gone, the FIFO's writer is closed: the reader sees its end.
    let text = reader.join().unwrap();
    assert!(text.contains("flood 0 "), "the file got nothing");
    assert!(text.contains("not written to"), "no report in the file");
}
