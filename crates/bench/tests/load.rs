//! Smoke test: `berth-bench load --quick --no-peers` with tiny counts against
//! the real `berth` and `berth-fixture` binaries (offline: peers skipped).
//! Asserts that every scenario has its Berth rows (and the stdio and http
//! floors where they apply), with CPU/call in per-call and throughput and
//! Berth's ratios to the http floor; it never asserts a timing. The
//! `berth 2026-07-28` row (stateless clients, same Berth and echo server) is
//! measured in per-call and throughput and says why not elsewhere. The
//! `berth → remote` row (Berth proxying the http floor's server as a remote
//! upstream) is measured in per-call and throughput, with its overhead over
//! the http floor and its upstream's CPU apart. The `berth endpoint` row
//! (the same Berth plus a federated endpoint over the echo server, called as
//! `echo__echo` on `/mcp/fed`) is measured in per-call and throughput, with
//! its overhead over the plain `berth` row.

mod common;

use common::run_bench;

/// The row of stateless 2026-07-28 clients.
const MODERN: &str = "berth 2026-07-28";
/// Berth with one remote server: the http floor's.
const REMOTE: &str = "berth → remote";
/// Berth's echo server called through a federated endpoint.
const ENDPOINT: &str = "berth endpoint";

#[test]
fn quick_load_reports_every_berth_row() {
    let common::BenchRun {
        report,
        stdout,
        context,
    } = run_bench(&[
        "load",
        "--quick",
        "--no-peers",
        "--calls",
        "20",
        "--warmup",
        "2",
        "--concurrency",
        "2,4",
        "--calls-per-session",
        "3",
        "--idle-sessions",
        "5",
        "--shared-sessions",
        "20",
        "--scenario-timeout",
        "60s",
        "--ttfr-sessions",
        "2",
        "--ttfr-boot-delay",
        "100ms",
        "--ttfr-pause",
        "200ms",
    ]);
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
            &["berth", MODERN]
        } else if name == "ttfr" {
            &["stdio floor", "berth cold", "berth warm", MODERN]
        } else {
            // The http floor: the echo answered in the bench process over HTTP.
            // Every request of the oauth row carries a built-in issuer's JWT.
            // The no-telemetry row: what metrics and metering cost.
            &[
                "stdio floor",
                "http floor",
                "berth",
                ENDPOINT,
                REMOTE,
                "berth oauth",
                "berth no telemetry",
                MODERN,
            ]
        };
        assert_eq!(targets, expected, "{name}; {context}");
        for row in rows {
            let target = row["target"].as_str().unwrap();
            if target == MODERN && (name.starts_with("idle-") || name == "ttfr") {
                assert_eq!(row["status"], "unavailable", "{name}: {row}");
                let reason = row["reason"].as_str().unwrap_or_default();
                assert!(reason.starts_with("not applicable"), "{name}: {row}");
                assert!(
                    stdout.lines().any(
                        |l| l.starts_with(&format!("| {target} | unavailable: not applicable"))
                    ),
                    "no table row for {target} in {name}; {context}"
                );
                continue;
            }
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
            if name == "per-call" || name.starts_with("throughput-") {
                assert!(row["cpu_us_per_call"].is_number(), "{row}");
                assert!(row["cpu_ticks"].is_number(), "{row}");
                // Only the remote row has an upstream whose CPU is apart.
                assert_eq!(
                    row["upstream_cpu_us_per_call"].is_number(),
                    target == REMOTE,
                    "{row}"
                );
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
        if name == "per-call" || name.starts_with("throughput-") {
            // Berth's ratios to the http floor of the same run.
            let section = stdout
                .split(&format!("## {name}\n"))
                .nth(1)
                .unwrap_or_default();
            let section = section.split("\n## ").next().unwrap_or_default();
            for target in ["berth", MODERN] {
                assert!(
                    section.contains(&format!("- {target} against the http floor: CPU/call ")),
                    "no http floor ratios for {target} in {name}; {context}"
                );
            }
            // The remote row against the direct call to the same server.
            assert!(
                section.contains(&format!(
                    "- remote upstream overhead ({REMOTE} against http floor, same run): p50 "
                )),
                "no remote overhead in {name}; {context}"
            );
            // The endpoint row against the plain berth row.
            assert!(
                section.contains(&format!(
                    "- federated endpoint overhead ({ENDPOINT} against berth, same run): p50 "
                )),
                "no federated endpoint overhead in {name}; {context}"
            );
            let overheads = scenario["overheads"].as_array().expect("overheads");
            let pairs: Vec<(&str, &str)> = overheads
                .iter()
                .filter_map(|o| Some((o["target"].as_str()?, o["baseline"].as_str()?)))
                .collect();
            assert_eq!(
                pairs,
                [(ENDPOINT, "berth"), (REMOTE, "http floor")],
                "{name}: {overheads:?}"
            );
            for overhead in overheads {
                for key in [
                    "p50_us_added",
                    "p50_ratio",
                    "mean_us_added",
                    "calls_per_sec_ratio",
                    "cpu_us_per_call",
                    "baseline_cpu_us_per_call",
                ] {
                    assert!(overhead[key].is_number(), "{name}: {key} in {overhead}");
                }
            }
        }
    }
}
