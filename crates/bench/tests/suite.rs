//! Smoke test: a short `ttfr-suite` run against the real `berth` and
//! `berth-fixture` binaries. Asserts the report's shape, never timings.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const SCENARIOS: [&str; 5] = ["direct-spawn", "cold", "warm", "preinitialized", "standby"];
const SESSIONS: u64 = 3;

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
fn ttfr_suite_reports_every_scenario() {
    // The suite finds both next to itself; check here for a clear message.
    sibling("berth");
    sibling("berth-fixture");
    let dir = tempfile::tempdir().expect("temp dir");
    let out_json = dir.path().join("ttfr.json");
    let stdout_path = dir.path().join("stdout");
    let stderr_path = dir.path().join("stderr");

    let mut child = Command::new(env!("CARGO_BIN_EXE_berth-bench"))
        .args(["ttfr-suite", "--sessions", &SESSIONS.to_string()])
        .args(["--warmup", "1", "--boot-delay", "10ms"])
        .args(["--pool-pause", "60", "--standby-pause", "100"])
        .args(["--timeout", "10s", "--scenario-timeout", "60s"])
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
                "berth-bench ttfr-suite did not finish within 120 s; stderr:\n{}",
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
    let rows = report["scenarios"].as_array().expect("scenarios");
    let names: Vec<&str> = rows.iter().filter_map(|r| r["scenario"].as_str()).collect();
    assert_eq!(names, SCENARIOS, "{context}");

    for row in rows {
        let name = row["scenario"].as_str().unwrap();
        // Every berth the suite started exited cleanly on SIGTERM.
        assert!(row["stop_note"].is_null(), "{name}: {row}\n{context}");
        match row["status"].as_str() {
            Some("ok") => {
                assert_eq!(row["ok"], SESSIONS, "{name}: {row}\n{context}");
                assert_eq!(row["errors"], 0, "{name}: {row}\n{context}");
                for key in ["min_us", "p50_us", "p90_us", "p99_us", "max_us", "mean_us"] {
                    assert!(row[key].is_number(), "{name}: {key} in {row}");
                }
                // The Markdown row carries numbers too.
                let line = stdout
                    .lines()
                    .find(|l| l.starts_with(&format!("| {name} |")))
                    .unwrap_or_else(|| panic!("no table row for {name}; {context}"));
                assert!(line.contains(" ms |"), "{line}");
            }
            Some("unsupported") => {
                // Only the pool scenarios may be missing from a berth build.
                assert!(
                    !["direct-spawn", "cold"].contains(&name),
                    "{name} must be supported; {context}"
                );
                assert!(row["reason"].as_str().is_some_and(|r| !r.is_empty()));
                assert!(
                    stdout.contains(&format!("| {name} |")),
                    "no table row for {name}; {context}"
                );
            }
            other => panic!("{name}: status {other:?}: {row}\n{context}"),
        }
    }
}
