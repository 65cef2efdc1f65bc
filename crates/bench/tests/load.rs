//! Smoke test: `berth-bench load --quick --no-peers` with tiny counts against
//! the real `berth` and `berth-fixture` binaries (offline: peers skipped).
//! Asserts that every scenario has its Berth rows (and the stdio floor where
//! it applies), with CPU/call in per-call; it never asserts a timing.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn sibling(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_berth-bench")).with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        path.display()
    );
    path
}

#[test]
fn quick_load_reports_every_berth_row() {
    sibling("berth");
    sibling("berth-fixture");
    let dir = tempfile::tempdir().expect("temp dir");
    let out_json = dir.path().join("load.json");
    let stdout_path = dir.path().join("stdout");
    let stderr_path = dir.path().join("stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth-bench"))
        .args(["load", "--quick", "--no-peers"])
        .args(["--calls", "20", "--warmup", "2", "--concurrency", "2,4"])
        .args(["--calls-per-session", "3", "--idle-sessions", "5"])
        .args(["--shared-sessions", "20", "--scenario-timeout", "60s"])
        .args(["--ttfr-sessions", "2", "--ttfr-boot-delay", "100ms"])
        .args(["--ttfr-pause", "200ms"])
        .arg("--out")
        .arg(&out_json)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .expect("run berth-bench");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "berth-bench load did not finish within 120 s; stderr:\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = std::fs::read_to_string(&stdout_path).expect("stdout");
    let stderr = std::fs::read_to_string(&stderr_path).expect("stderr");
    let context = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(status.success(), "exit {status}; {context}");

    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&out_json).expect("--out file"))
            .expect("--out is JSON");
    assert_eq!(report["peers"], false);
    let scenarios = report["scenarios"].as_array().expect("scenarios");
    let names: Vec<&str> = scenarios
        .iter()
        .filter_map(|s| s["scenario"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "per-call",
            "throughput-2",
            "throughput-4",
            "idle-exclusive-5",
            "idle-shared-20",
            "ttfr"
        ],
        "{context}"
    );
    for scenario in scenarios {
        let name = scenario["scenario"].as_str().unwrap();
        let rows = scenario["rows"].as_array().expect("rows");
        let targets: Vec<&str> = rows.iter().filter_map(|r| r["target"].as_str()).collect();
        let expected: &[&str] = if name.starts_with("idle-") {
            &["berth"]
        } else if name == "ttfr" {
            &["stdio floor", "berth cold", "berth warm"]
        } else {
            &["stdio floor", "berth"]
        };
        assert_eq!(targets, expected, "{name}; {context}");
        for row in rows {
            let target = row["target"].as_str().unwrap();
            assert_eq!(row["status"], "ok", "{name}/{target}: {row}\n{context}");
            assert_eq!(row["errors"], 0, "{name}/{target}: {row}\n{context}");
            assert!(row["note"].is_null(), "{name}/{target}: {row}");
            for key in ["p50_us", "p90_us", "p99_us", "max_us"] {
                assert!(row[key].is_number(), "{name}/{target}: {key} in {row}");
            }
            if name.starts_with("idle-") {
                assert!(row["rss_after_kib"].is_number(), "{row}");
                assert!(row["rss_per_session_kib"].is_number(), "{row}");
            } else if name == "ttfr" {
                // Latencies only: a new session has no calls/s.
            } else {
                assert!(row["calls_per_sec"].is_number(), "{row}");
            }
            if name == "per-call" {
                assert!(row["cpu_us_per_call"].is_number(), "{row}");
                assert!(row["cpu_ticks"].is_number(), "{row}");
            }
            // The Markdown table has the row too, with numbers.
            assert!(
                stdout
                    .lines()
                    .any(|l| l.starts_with(&format!("| {target} | ")) && l.contains(" ms |")),
                "no table row for {target} in {name}; {context}"
            );
        }
        assert!(
            stdout.contains(&format!("## {name}\n")),
            "no table for {name}; {context}"
        );
    }
}
