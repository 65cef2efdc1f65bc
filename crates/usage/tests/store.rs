//! The store, through SQLite and through the PostgreSQL at 127.0.0.1:5432
//! (database `test`, trust auth; each test in a schema of its own). Without
//! a reachable PostgreSQL its tests print why and pass, unless CI=true.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use berth_usage::{By, Quantities, Store, UsageRow};
use common::{Clock, H, Schema, all, meter, time, workload};

const RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);

enum Backend {
    Sqlite(tempfile::TempDir),
    Postgres(Schema),
}

impl Backend {
    fn sqlite() -> Backend {
        Backend::Sqlite(tempfile::tempdir().unwrap())
    }

    async fn postgres(test: &str) -> Option<Backend> {
        common::postgres(test).await.map(Backend::Postgres)
    }

    async fn open(&self) -> Store {
        match self {
            Backend::Sqlite(dir) => Store::open_sqlite(&dir.path().join("usage.sqlite")).await,
            Backend::Postgres(schema) => Store::open_postgres(&schema.dsn).await,
        }
        .unwrap()
    }

    /// Runs `sql` on its own connection, as an operator would.
    async fn execute(&self, sql: &str) {
        match self {
            Backend::Sqlite(dir) => {
                let conn = rusqlite::Connection::open(dir.path().join("usage.sqlite")).unwrap();
                conn.execute_batch(sql).unwrap();
            }
            Backend::Postgres(schema) => schema.execute(sql).await,
        }
    }
}

async fn every_grouping(store: &Store) -> Vec<Vec<UsageRow>> {
    let (since, until) = all();
    let mut out = Vec::new();
    for by in [By::Principal, By::Server, By::Tool] {
        out.push(store.query(since, until, by).await.unwrap());
    }
    out
}

async fn run_workload(store: Store) -> Vec<Vec<UsageRow>> {
    let clock = Clock::new();
    let m = meter(store.clone(), &clock, RETENTION);
    workload(&m, &clock).await;
    every_grouping(&store).await
}

fn server_row(server: &str, q: Quantities) -> UsageRow {
    UsageRow {
        principal: None,
        server: Some(server.into()),
        tool: None,
        quantities: q,
    }
}

/// The workload by server, worked out by hand (see common::workload).
fn expected_by_server() -> Vec<UsageRow> {
    vec![
        server_row(
            "echo",
            Quantities {
                sessions: 3,
                // alice 600→1500 and 600→6000, bob 1500→6000.
                session_seconds: 900.0 + 5400.0 + 4500.0,
                peak_connections: 2,
                requests: 14,
                tool_calls: 13,
                errors: 2,
                bytes_in: 1450,
                bytes_out: 2760,
                cpu_seconds: 2.25,
                memory_gib_seconds: 6.0,
            },
        ),
        server_row(
            "files",
            Quantities {
                sessions: 2,
                // bob 600→6000, alice 5400→6000.
                session_seconds: 5400.0 + 600.0,
                peak_connections: 1,
                requests: 4,
                tool_calls: 3,
                errors: 1,
                bytes_in: 1190,
                bytes_out: 13110,
                cpu_seconds: 2.25,
                memory_gib_seconds: 28.0,
            },
        ),
    ]
}

#[tokio::test]
async fn sqlite_keeps_the_workload_exactly() {
    let backend = Backend::sqlite();
    let rows = run_workload(backend.open().await).await;
    assert_eq!(rows[1], expected_by_server());
    let principals: Vec<_> = rows[0]
        .iter()
        .map(|r| {
            (
                r.principal.as_deref().unwrap(),
                r.quantities.requests,
                r.quantities.session_seconds,
            )
        })
        .collect();
    assert_eq!(
        principals,
        [
            ("", 1, 0.0),
            ("alice", 13, 900.0 + 5400.0 + 600.0),
            ("bob", 4, 5400.0 + 4500.0)
        ]
    );
    let tools: Vec<_> = rows[2]
        .iter()
        .map(|r| {
            (
                r.server.as_deref().unwrap(),
                r.tool.as_deref().unwrap(),
                r.quantities.tool_calls,
            )
        })
        .collect();
    assert_eq!(
        tools,
        [
            ("echo", "", 0),
            ("echo", "say", 12),
            ("echo", "shout", 1),
            ("files", "", 0),
            ("files", "read", 2),
            ("files", "write", 1)
        ]
    );
    assert!(rows[2].iter().all(|r| r.principal.is_none()));
}

#[tokio::test]
async fn postgres_gives_the_same_rows_as_sqlite() {
    let Some(postgres) = Backend::postgres("same_rows").await else {
        return;
    };
    let from_postgres = run_workload(postgres.open().await).await;
    let from_sqlite = run_workload(Backend::sqlite().open().await).await;
    assert_eq!(from_postgres[1], expected_by_server());
    for (by, (p, s)) in ["principal", "server", "tool"]
        .iter()
        .zip(from_postgres.iter().zip(&from_sqlite))
    {
        assert_eq!(p, s, "by {by}");
    }
}

async fn survives_a_restart(backend: &Backend) {
    let before = run_workload(backend.open().await).await;
    // A new process: a new store on the same database.
    let store = backend.open().await;
    assert_eq!(every_grouping(&store).await, before);
    // And what it meters next adds to what is there.
    let clock = Clock::new();
    clock.at(7000.0);
    let m = meter(store.clone(), &clock, RETENTION);
    berth_telemetry::Observer::session_opened(
        &m,
        &berth_telemetry::SessionOpened {
            server: "echo",
            principal: Some("carol"),
            start: berth_telemetry::Start::Warm,
        },
    );
    clock.at(7010.0);
    m.shutdown().await.unwrap();
    let after = store.query(all().0, all().1, By::Server).await.unwrap();
    assert_eq!(
        after[0].quantities.sessions,
        before[1][0].quantities.sessions + 1
    );
    assert_eq!(
        after[0].quantities.session_seconds,
        before[1][0].quantities.session_seconds + 10.0
    );
    assert_eq!(after[1], before[1][1]);
}

#[tokio::test]
async fn sqlite_rows_survive_a_restart() {
    survives_a_restart(&Backend::sqlite()).await;
}

#[tokio::test]
async fn postgres_rows_survive_a_restart() {
    if let Some(backend) = Backend::postgres("restart").await {
        survives_a_restart(&backend).await;
    }
}

async fn retention_deletes_old_hours(backend: &Backend) {
    let store = backend.open().await;
    let clock = Clock::new();
    let m = meter(store.clone(), &clock, Duration::from_secs(2 * 3600));
    let request = |tool: &str| {
        berth_telemetry::Observer::request(
            &m,
            &berth_telemetry::RequestRecord {
                server: "echo",
                principal: None,
                method: Some("tools/call"),
                tool: Some(tool),
                era: berth_telemetry::Era::Modern,
                status: 200,
                outcome: berth_telemetry::Outcome::Ok,
                total: Duration::ZERO,
                upstream: None,
                bytes_in: 1,
                bytes_out: 1,
                started_at: std::time::SystemTime::UNIX_EPOCH,
                trace: None,
                session: None,
                error_code: None,
            },
        )
    };
    for hour in 0..4 {
        clock.at(hour as f64 * 3600.0 + 1.0);
        request(&format!("hour{hour}"));
        m.flush().await.unwrap();
    }
    // At hour 3 with two hours kept: hour 0 is gone, 1 to 3 are there.
    let tools: Vec<_> = store
        .query(all().0, all().1, By::Tool)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.tool.unwrap())
        .collect();
    assert_eq!(tools, ["hour1", "hour2", "hour3"]);
    // Time passes with nothing metered: old hours still go.
    clock.at(6.0 * 3600.0);
    m.flush().await.unwrap();
    assert!(
        store
            .query(all().0, all().1, By::Tool)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn sqlite_retention_deletes_old_hours() {
    retention_deletes_old_hours(&Backend::sqlite()).await;
}

#[tokio::test]
async fn postgres_retention_deletes_old_hours() {
    if let Some(backend) = Backend::postgres("retention").await {
        retention_deletes_old_hours(&backend).await;
    }
}

async fn a_failed_flush_keeps_usage(backend: &Backend) {
    let store = backend.open().await;
    let clock = Clock::new();
    let m = meter(store.clone(), &clock, RETENTION);
    let open = |principal| {
        berth_telemetry::Observer::session_opened(
            &m,
            &berth_telemetry::SessionOpened {
                server: "echo",
                principal: Some(principal),
                start: berth_telemetry::Start::Cold,
            },
        )
    };
    clock.at(100.0);
    open("alice");
    // The table is away (an operator's mistake): the flush fails and
    // keeps everything for the next one.
    backend
        .execute("ALTER TABLE usage RENAME TO usage_away")
        .await;
    clock.at(200.0);
    let err = m.flush().await.unwrap_err().to_string();
    assert!(
        err.contains("usage database") && err.contains("cannot write usage"),
        "{err}"
    );
    assert_eq!(m.pending_keys(), 1);
    // More usage while it is away, in the same key and a new one.
    open("alice");
    open("bob");
    clock.at(300.0);
    assert!(m.flush().await.is_err());
    backend
        .execute("ALTER TABLE usage_away RENAME TO usage")
        .await;
    clock.at(400.0);
    assert_eq!(m.flush().await.unwrap(), 2);
    assert_eq!(m.pending_keys(), 0);
    assert_eq!(m.dropped_keys(), 0);
    let rows = store.query(all().0, all().1, By::Principal).await.unwrap();
    let got: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r.principal.as_deref().unwrap(),
                r.quantities.sessions,
                r.quantities.session_seconds,
                r.quantities.peak_connections,
            )
        })
        .collect();
    // alice: one session 100→400 and one 200→400; bob 200→400.
    assert_eq!(got, [("alice", 2, 500.0, 2), ("bob", 1, 200.0, 1)]);
}

#[tokio::test]
async fn sqlite_failed_flush_keeps_usage_for_the_next() {
    a_failed_flush_keeps_usage(&Backend::sqlite()).await;
}

#[tokio::test]
async fn postgres_failed_flush_keeps_usage_for_the_next() {
    if let Some(backend) = Backend::postgres("failed_flush").await {
        a_failed_flush_keeps_usage(&backend).await;
    }
}

#[tokio::test]
async fn unreachable_postgres_names_the_host_and_the_setting() {
    // Port 1 on loopback: nothing listens there.
    let err = Store::open_postgres("postgresql://berth:secret-pw@127.0.0.1:1/usage")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("127.0.0.1:1/usage"), "{err}");
    assert!(err.contains("[usage] postgres"), "{err}");
    assert!(err.contains("cannot connect"), "{err}");
    assert!(!err.contains("secret-pw"), "{err}");
    let err = Store::open_postgres("postgresql://u@h/db?sslmode=require")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("[usage] postgres: sslmode=require"),
        "{err}"
    );
    let err = Store::open_postgres("not a dsn")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("[usage] postgres: not a valid connection string"),
        "{err}"
    );
}

#[tokio::test]
async fn a_corrupt_sqlite_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.sqlite");
    std::fs::write(&path, vec![b'x'; 8192]).unwrap();
    let err = Store::open_sqlite(&path).await.unwrap_err().to_string();
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("not a database"), "{err}");
}

#[tokio::test]
async fn the_sqlite_file_and_its_directory_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let store = berth_usage::open(&berth_usage::UsageConfig::default(), &data)
        .await
        .unwrap();
    run_workload(store).await;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    assert!(data.join(berth_usage::SQLITE_FILE).exists());
}

#[tokio::test]
async fn a_schema_from_a_newer_berth_is_refused() {
    let backend = Backend::sqlite();
    drop(backend.open().await);
    backend
        .execute("UPDATE usage_schema SET version = 99")
        .await;
    let Backend::Sqlite(dir) = &backend else {
        unreachable!()
    };
    let err = Store::open_sqlite(&dir.path().join("usage.sqlite"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("schema is version 99"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flush_task_writes_on_its_own_and_shutdown_writes_the_rest() {
    let backend = Backend::sqlite();
    let store = backend.open().await;
    let meter = berth_usage::Meter::start(store.clone(), Duration::from_millis(50), RETENTION);
    let telemetry = berth_telemetry::Telemetry::new().with(meter.clone());
    let call = |tool| {
        berth_telemetry::Observer::request(
            &telemetry,
            &berth_telemetry::RequestRecord {
                server: "echo",
                principal: Some("alice"),
                method: Some("tools/call"),
                tool: Some(tool),
                era: berth_telemetry::Era::Modern,
                status: 200,
                outcome: berth_telemetry::Outcome::Ok,
                total: Duration::ZERO,
                upstream: None,
                bytes_in: 10,
                bytes_out: 20,
                started_at: std::time::SystemTime::UNIX_EPOCH,
                trace: None,
                session: None,
                error_code: None,
            },
        )
    };
    call("say");
    let now = std::time::SystemTime::now();
    let window = (
        now - Duration::from_secs(7200),
        now + Duration::from_secs(7200),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let rows = store.query(window.0, window.1, By::Tool).await.unwrap();
        if rows.first().is_some_and(|r| r.quantities.tool_calls == 1) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not flushed: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    call("say");
    call("shout");
    meter.shutdown().await.unwrap();
    let rows = store.query(window.0, window.1, By::Tool).await.unwrap();
    let calls: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r.tool.as_deref().unwrap(),
                r.quantities.tool_calls,
                r.quantities.bytes_out,
            )
        })
        .collect();
    assert_eq!(calls, [("say", 2, 40), ("shout", 1, 20)]);
    let _ = time(H);
}
