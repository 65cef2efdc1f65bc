//! `berth usage`, the real binary, on a SQLite usage store filled through
//! berth-usage in a data dir of its own.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_usage::{HourRow, Quantities, Store};
use serde_json::{Value, json};

fn row(hour: i64, principal: &str, server: &str, tool: &str, q: Quantities) -> HourRow {
    HourRow {
        hour,
        principal: principal.into(),
        server: server.into(),
        tool: tool.into(),
        quantities: q,
    }
}

/// The start of the hour before this one, in epoch seconds.
fn last_hour() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    now / 3600 * 3600 - 3600
}

/// A data dir whose store holds the last hour's usage of two servers, and
/// an older hour two days back.
async fn filled() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("usage.sqlite"))
        .await
        .unwrap();
    let h = last_hour();
    let q = Quantities::default;
    let rows = vec![
        row(
            h,
            "alice",
            "echo",
            "",
            Quantities {
                sessions: 10,
                session_seconds: 3000.5,
                peak_connections: 3,
                requests: 20,
                bytes_in: 100_000,
                bytes_out: 600_000,
                cpu_seconds: 12.5,
                memory_gib_seconds: 4500.0,
                ..q()
            },
        ),
        row(
            h,
            "alice",
            "echo",
            "say",
            Quantities {
                requests: 480,
                tool_calls: 480,
                errors: 4,
                bytes_in: 23_456,
                bytes_out: 54_321,
                ..q()
            },
        ),
        row(
            h,
            "bob",
            "echo",
            "",
            Quantities {
                sessions: 2,
                session_seconds: 600.0,
                peak_connections: 1,
                requests: 40,
                tool_calls: 20,
                ..q()
            },
        ),
        row(
            h,
            "",
            "files",
            "read,\"all\"",
            Quantities {
                requests: 7,
                tool_calls: 7,
                errors: 1,
                bytes_in: 70,
                bytes_out: 7000,
                ..q()
            },
        ),
        // Two days back: outside the default 24 hours.
        row(
            h - 48 * 3600,
            "bob",
            "echo",
            "",
            Quantities {
                sessions: 100,
                requests: 100,
                ..q()
            },
        ),
    ];
    store.write(Arc::from(rows), None).await.unwrap();
    dir
}

fn berth(data_dir: &Path, args: &[&str]) -> Output {
    let cwd = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("usage")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        // No ./berth.toml, no configuration from the environment.
        .current_dir(cwd.path())
        .env_remove("BERTH_CONFIG")
        .env_remove("BERTH_DATA_DIR")
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "berth usage failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn rfc3339(secs: i64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs as u64)).to_string()
}

#[tokio::test]
async fn json_by_server_sums_the_last_day() {
    let dir = filled().await;
    let out = stdout(&berth(dir.path(), &["--by", "server", "--format", "json"]));
    let report: Value = serde_json::from_str(&out).unwrap();
    let h = last_hour();
    // 24 hours back from now, widened to whole hours: 25 of them.
    assert_eq!(report["since"], rfc3339(h - 23 * 3600));
    assert_eq!(report["until"], rfc3339(h + 2 * 3600));
    assert_eq!(report["by"], "server");
    assert_eq!(
        report["rows"],
        json!([
            {"principal": null, "server": "echo", "tool": null,
             "sessions": 12, "session_seconds": 3600.5, "peak_connections": 3,
             "requests": 540, "tool_calls": 500, "errors": 4,
             "bytes_in": 123456, "bytes_out": 654321,
             "cpu_seconds": 12.5, "memory_gib_seconds": 4500.0},
            {"principal": null, "server": "files", "tool": null,
             "sessions": 0, "session_seconds": 0.0, "peak_connections": 0,
             "requests": 7, "tool_calls": 7, "errors": 1,
             "bytes_in": 70, "bytes_out": 7000,
             "cpu_seconds": 0.0, "memory_gib_seconds": 0.0}
        ])
    );
    // Three days back takes in the older hour.
    let out = stdout(&berth(
        dir.path(),
        &["--since", "72h", "--by", "principal", "--format", "json"],
    ));
    let report: Value = serde_json::from_str(&out).unwrap();
    let sessions: Vec<_> = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["principal"].clone(),
                r["sessions"].clone(),
                r["server"].clone(),
            )
        })
        .collect();
    assert_eq!(
        sessions,
        [
            (json!(""), json!(0), Value::Null),
            (json!("alice"), json!(10), Value::Null),
            (json!("bob"), json!(102), Value::Null)
        ]
    );
}

#[tokio::test]
async fn csv_by_tool_is_rfc_4180() {
    let dir = filled().await;
    let out = stdout(&berth(dir.path(), &["--by", "tool", "--format", "csv"]));
    let lines: Vec<&str> = out.split_inclusive("\r\n").collect();
    assert_eq!(
        lines,
        [
            "server,tool,sessions,session_seconds,peak_connections,requests,tool_calls,errors,bytes_in,bytes_out,cpu_seconds,memory_gib_seconds\r\n",
            "echo,,12,3600.5,3,60,20,0,100000,600000,12.5,4500\r\n",
            "echo,say,0,0,0,480,480,4,23456,54321,0,0\r\n",
            "files,\"read,\"\"all\"\"\",0,0,0,7,7,1,70,7000,0,0\r\n",
        ]
    );
}

#[tokio::test]
async fn the_table_has_units_and_a_total() {
    let dir = filled().await;
    let out = stdout(&berth(dir.path(), &["--by", "principal"]));
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("Usage by principal from "), "{out}");
    assert!(lines[0].contains("usage.sqlite"), "{out}");
    let words = |l: &str| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(
        words(lines[1]),
        [
            "PRINCIPAL",
            "SESSIONS",
            "SESSION",
            "TIME",
            "PEAK",
            "REQUESTS",
            "TOOL",
            "CALLS",
            "ERRORS",
            "IN",
            "OUT",
            "CPU",
            "MEMORY"
        ]
    );
    assert_eq!(
        words(lines[2]),
        [
            "(anonymous)",
            "0",
            "0.0s",
            "0",
            "7",
            "7",
            "1",
            "70",
            "B",
            "6.8",
            "KiB",
            "0.0s",
            "0.000",
            "GiB·h"
        ]
    );
    assert_eq!(
        words(lines[3]),
        [
            "alice", "10", "50m01s", "3", "500", "480", "4", "120.6", "KiB", "639.0", "KiB",
            "12.5s", "1.250", "GiB·h"
        ]
    );
    assert_eq!(
        words(lines[5]),
        [
            "TOTAL", "12", "1h00m", "3", "547", "507", "5", "120.6", "KiB", "645.8", "KiB",
            "12.5s", "1.250", "GiB·h"
        ]
    );
    // Aligned: every line is as wide as the header (numbers flush right).
    let width = lines[1].chars().count();
    assert!(
        lines[2..].iter().all(|l| l.chars().count() == width),
        "{out}"
    );
}

#[test]
fn a_data_dir_without_usage_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let out = berth(dir.path(), &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no usage recorded in"), "{err}");
    assert!(err.contains("usage.sqlite does not exist"), "{err}");
    // Nothing was created by looking.
    assert!(!dir.path().join("usage.sqlite").exists());
    let out = berth(dir.path(), &["--since", "last tuesday"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--since \"last tuesday\": give a duration"),
        "{err}"
    );
}
