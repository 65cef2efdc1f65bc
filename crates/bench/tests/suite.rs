//! Smoke test: a short `ttfr-suite` run against the real `berth` and
//! `berth-fixture` binaries. Asserts the report's shape, never timings.

mod common;

use common::run_bench;

const SCENARIOS: [&str; 5] = ["direct-spawn", "cold", "warm", "preinitialized", "standby"];
const SESSIONS: u64 = 3;

#[test]
fn ttfr_suite_reports_every_scenario() {
    let common::BenchRun {
        report,
        stdout,
        context,
    } = run_bench(&[
        "ttfr-suite",
        "--sessions",
        &SESSIONS.to_string(),
        "--warmup",
        "1",
        "--boot-delay",
        "10ms",
        "--pool-pause",
        "60",
        "--standby-pause",
        "100",
        "--timeout",
        "10s",
        "--scenario-timeout",
        "60s",
    ]);
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
