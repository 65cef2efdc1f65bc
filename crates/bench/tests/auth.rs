//! Smoke test: a short `auth` run. Asserts the report's shape, never timings.

mod common;

use common::run_bench;

#[test]
fn auth_reports_every_case() {
    let common::BenchRun {
        report,
        stdout,
        context,
    } = run_bench(&["auth", "--iterations", "50"]);
    assert!(stdout.contains("| cached |"), "{context}");
    let rows = report["results"].as_array().expect("results");
    let cases: Vec<&str> = rows.iter().filter_map(|r| r["case"].as_str()).collect();
    assert_eq!(
        cases,
        [
            "verify-rs256",
            "verify-eddsa",
            "verify",
            "cached",
            "api-key",
            "reject"
        ],
        "{context}"
    );
    for row in rows {
        let p50 = row["p50_ns"].as_u64().expect("p50_ns");
        assert!(
            p50 > 0 && p50 <= row["p99_ns"].as_u64().unwrap(),
            "{context}"
        );
    }
}
