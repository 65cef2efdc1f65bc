//! The official MCP conformance suite against a stdio fixture server hosted
//! by Berth: 0.1.13 (the 2025 revisions), and 0.2.0-alpha.12 at both wires,
//! 2026-07-28 (stateless) and 2025-11-25 (sessions), on the same endpoint of
//! the same running gateway.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

/// Runs the suite's `server` command; returns its summary line.
fn run_suite(berth: &Berth, extra: &[&str]) -> String {
    let bin = node_modules().join(".bin/conformance");
    let out_dir = berth.dir.path().join(format!("results{}", extra.join("")));
    // `localhost`, not 127.0.0.1: the DNS-rebinding scenario derives the
    // "legitimate" Host and Origin from this URL.
    let url = format!("http://localhost:{}/mcp/conformance", berth.addr.port());
    let (ok, out) = run_with_timeout(
        Command::new(bin)
            .args(["server", "--url", &url, "-o"])
            .arg(&out_dir)
            .args(extra),
        Duration::from_secs(300),
    );
    let summary = out
        .lines()
        .rev()
        .find(|l| l.starts_with("Total:"))
        .unwrap_or_default()
        .to_string();
    assert!(
        ok && summary.contains(" 0 failed"),
        "conformance {extra:?} failed: {summary}\n{out}\n--- berth log ---\n{}",
        berth.log()
    );
    // No scenario may have failed a check, whatever the summary counts.
    let failures = find_failures(&out_dir);
    assert!(failures.is_empty(), "failed checks: {failures:?}");
    println!("conformance {extra:?}: {summary}");
    summary
}

/// `FAILURE` checks in the suite's checks.json files.
fn find_failures(dir: &std::path::Path) -> Vec<String> {
    let mut failures = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return failures;
    };
    for entry in entries.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path().join("checks.json")) else {
            continue;
        };
        let Ok(checks) = serde_json::from_str::<Vec<serde_json::Value>>(&text) else {
            continue;
        };
        for check in checks.iter().filter(|c| c["status"] == "FAILURE") {
            failures.push(format!(
                "{}: {}",
                entry.file_name().to_string_lossy(),
                check["id"]
            ));
        }
    }
    failures
}

#[test]
fn conformance_suite_passes_through_berth_and_leaves_no_process() {
    let berth = Berth::start(
        "session_idle_timeout = \"3s\"",
        // The suite checks that roots/list reaches its client: the opt-in.
        &format!(
            "{}roots = \"client\"\n",
            fixture_server("conformance", "everything")
        ),
    );
    let baseline = berth.children().len();
    let active = run_suite(&berth, &[]);
    let all = run_suite(&berth, &["--suite", "all"]);
    assert!(active.starts_with("Total: ") && all.starts_with("Total: "));
    // The suite never deletes its sessions: they end by idle expiry, and every
    // process they held must be reaped with no zombie left behind.
    berth.wait_for_children(baseline, Duration::from_secs(30));
}

/// `tests/conformance/run.sh` (suite 0.2.0-alpha.12, `--suite all`) for one
/// revision; it judges every check and fails on any FAILURE or WARNING.
fn run_revision(berth: &Berth, spec: &str) -> String {
    let script = repo().join("tests/conformance/run.sh");
    let url = format!("http://localhost:{}/mcp/conformance", berth.addr.port());
    let out_dir = berth.dir.path().join(format!("results-{spec}"));
    let (ok, out) = run_with_timeout(
        Command::new("bash")
            .arg(script)
            .args([&url, spec])
            .arg(&out_dir),
        Duration::from_secs(600),
    );
    let summary = out
        .lines()
        .rev()
        .find(|l| l.contains(" passed, "))
        .unwrap_or_default()
        .to_string();
    assert!(
        ok && summary.ends_with(" 0 failed"),
        "conformance 0.2 at {spec} failed: {summary}\n{out}\n--- berth log ---\n{}",
        berth.log()
    );
    println!("conformance 0.2.0-alpha.12 at {spec}: {summary}");
    summary
}

#[test]
fn conformance_0_2_passes_both_eras_on_one_endpoint() {
    let berth = Berth::start(
        "session_idle_timeout = \"3s\"",
        // The suite checks that roots/list reaches its client: the opt-in.
        &format!(
            "{}roots = \"client\"\n",
            fixture_server("conformance", "everything")
        ),
    );
    let baseline = berth.children().len();
    assert_eq!(run_revision(&berth, "2026-07-28"), "40 passed, 0 failed");
    assert_eq!(run_revision(&berth, "2025-11-25"), "33 passed, 0 failed");
    let (ok, ps) = berth.cli(&["ps"]);
    assert!(ok && ps.contains("era: 2026-07-28"), "{ps}");
    // Sessions expire; the stateless pool keeps its one warm process.
    berth.wait_for_children(baseline + 1, Duration::from_secs(30));
}
