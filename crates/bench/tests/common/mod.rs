//! Runs `berth-bench` as a user would, bounded in time, for the smoke tests.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Checks that `berth` and `berth-fixture` sit next to `berth-bench`.
pub fn require_siblings() {
    for name in ["berth", "berth-fixture"] {
        let path = PathBuf::from(env!("CARGO_BIN_EXE_berth-bench")).with_file_name(name);
        assert!(
            path.exists(),
            "{} is missing: build the workspace first (cargo build --workspace)",
            path.display()
        );
    }
}

/// What a `berth-bench` run produced.
pub struct BenchRun {
    /// The `--out` JSON.
    pub report: Value,
    pub stdout: String,
    /// stdout and stderr, for assertion messages.
    pub context: String,
}

/// Runs `berth-bench ARGS --out FILE` (at most 120 s). Panics if it fails.
pub fn run_bench(args: &[&str]) -> BenchRun {
    require_siblings();
    let dir = tempfile::tempdir().expect("temp dir");
    let out_json = dir.path().join("report.json");
    let (stdout_path, stderr_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth-bench"))
        .args(args)
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
                "berth-bench {args:?} did not finish within 120 s; stderr:\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = std::fs::read_to_string(&stdout_path).expect("stdout");
    let stderr = std::fs::read_to_string(&stderr_path).expect("stderr");
    let context = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(status.success(), "exit {status}; {context}");
    let report = serde_json::from_str(&std::fs::read_to_string(&out_json).expect("--out file"))
        .expect("--out is JSON");
    BenchRun {
        report,
        stdout,
        context,
    }
}
