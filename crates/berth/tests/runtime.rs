//! `[gateway] worker_threads`: the runtime is built from the configuration
//! (read before the runtime exists). With 1 the whole gateway runs on one
//! thread; it must still serve concurrent sessions, and a process's answers
//! must still find their callers. 0 is refused at start with a clear error.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Berth, Raw, berth_bin, fixture_server};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_thread_serves_concurrent_sessions() {
    let berth = Berth::start("worker_threads = 1", &fixture_server("echo", "echo"));
    let calls = (0..8).map(|s| {
        let url = berth.url("echo");
        async move {
            let mut raw = Raw::new(url);
            raw.initialize("2025-11-25").await;
            for i in 0..25 {
                let text = format!("s{s}-c{i}");
                let reply = raw.call_tool(i + 1, "echo", json!({ "text": text })).await;
                assert_eq!(reply.status, 200, "{}", reply.body);
                let message = if reply.content_type().starts_with("text/event-stream") {
                    reply.sse_messages().pop().expect("an answer")
                } else {
                    reply.json()
                };
                assert_eq!(message["id"], i + 1, "{message}");
                assert_eq!(message["result"]["content"][0]["text"], text, "{message}");
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(60), futures::future::join_all(calls))
        .await
        .expect("200 calls over 8 sessions within 60 s");
}

#[test]
fn zero_worker_threads_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("berth.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\nworker_threads = 0\n\n{}",
            dir.path().display().to_string(),
            fixture_server("echo", "echo")
        ),
    )
    .expect("write config");
    let mut child = Command::new(berth_bin())
        .args(["serve", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn berth");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("berth kept running with worker_threads = 0");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("read stderr");
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("gateway.worker_threads = 0") && stderr.contains("at least 1"),
        "{stderr}"
    );
}
