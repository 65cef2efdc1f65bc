//! A scripted workload on a scripted clock, and PostgreSQL schemas of their
//! own for tests.

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_telemetry::{
    Era, Observer, Outcome, ProcessSample, RequestRecord, SessionEnded, SessionOpened, Start,
};
use berth_usage::{Meter, Store};

/// An hour's start (2026-11-16T10:00:00Z).
pub const H: u64 = 1_794_996_000;

/// A clock the test sets.
#[derive(Clone)]
pub struct Clock(Arc<AtomicU64>);

impl Clock {
    pub fn new() -> Clock {
        Clock(Arc::new(AtomicU64::new(H * 1000)))
    }

    /// Sets the time to `H + secs`.
    pub fn at(&self, secs: f64) {
        self.0
            .store(H * 1000 + (secs * 1000.0) as u64, Ordering::Relaxed);
    }

    pub fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0.load(Ordering::Relaxed))
    }
}

/// A meter on `store` reading `clock`.
pub fn meter(store: Store, clock: &Clock, retention: Duration) -> Meter {
    let clock = clock.clone();
    Meter::new(store, retention).with_clock(move || clock.now())
}

pub fn time(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// Every hour there is.
pub fn all() -> (SystemTime, SystemTime) {
    (UNIX_EPOCH, time(H * 2))
}

fn request(
    m: &Meter,
    principal: Option<&str>,
    server: &str,
    method: &str,
    tool: Option<&str>,
    outcome: Outcome,
    bytes: (u64, u64),
) {
    m.request(&RequestRecord {
        server,
        principal,
        method: Some(method),
        tool,
        era: Era::Handshake,
        status: 200,
        outcome,
        total: Duration::from_millis(2),
        upstream: Some(Duration::from_millis(1)),
        bytes_in: bytes.0,
        bytes_out: bytes.1,
        started_at: std::time::SystemTime::UNIX_EPOCH,
        trace: None,
        session: None,
        error_code: None,
    });
}

fn open(m: &Meter, principal: Option<&str>, server: &str) {
    m.session_opened(&SessionOpened {
        server,
        principal,
        start: Start::Cold,
    });
}

fn end(m: &Meter, principal: Option<&str>, server: &str, open_for: f64) {
    m.session_ended(&SessionEnded {
        server,
        principal,
        open_for: Duration::from_secs_f64(open_for),
    });
}

fn sample(m: &Meter, principal: Option<&str>, server: &str, cpu: f64, gib: f64, secs: f64) {
    m.process_sample(&ProcessSample {
        server,
        principal,
        cpu: Duration::from_secs_f64(cpu),
        memory_bytes: (gib * (1u64 << 30) as f64) as u64,
        interval: Duration::from_secs_f64(secs),
    });
}

/// Two principals (and anonymous calls) on two servers over two hours,
/// flushed three times (one flush in the middle of open sessions). Every
/// quantity is a sum of binary fractions, so both databases add it up
/// exactly.
pub async fn workload(m: &Meter, clock: &Clock) {
    let (alice, bob) = (Some("alice"), Some("bob"));
    clock.at(600.0);
    open(m, alice, "echo");
    open(m, alice, "echo");
    open(m, bob, "files");
    request(
        m,
        alice,
        "echo",
        "initialize",
        None,
        Outcome::Ok,
        (300, 500),
    );
    for _ in 0..10 {
        request(
            m,
            alice,
            "echo",
            "tools/call",
            Some("say"),
            Outcome::Ok,
            (100, 200),
        );
    }
    request(
        m,
        alice,
        "echo",
        "tools/call",
        Some("shout"),
        Outcome::ToolError,
        (40, 60),
    );
    request(m, bob, "files", "tools/list", None, Outcome::Ok, (50, 4000));
    request(
        m,
        bob,
        "files",
        "tools/call",
        Some("read"),
        Outcome::Ok,
        (70, 9000),
    );
    request(
        m,
        bob,
        "files",
        "tools/call",
        Some("read"),
        Outcome::Error,
        (70, 100),
    );
    request(
        m,
        None,
        "echo",
        "tools/call",
        Some("say"),
        Outcome::Refused,
        (10, 0),
    );
    sample(m, alice, "echo", 1.5, 0.5, 10.0);
    sample(m, bob, "files", 0.25, 2.0, 10.0);
    clock.at(1200.0);
    m.flush().await.expect("first flush");
    clock.at(1500.0);
    end(m, alice, "echo", 900.0);
    open(m, bob, "echo");
    request(
        m,
        bob,
        "echo",
        "tools/call",
        Some("say"),
        Outcome::Ok,
        (100, 200),
    );
    sample(m, None, "echo", 0.75, 0.25, 4.0);
    // Into the next hour: alice's other echo session and bob's files
    // session stay open throughout.
    clock.at(3600.0 + 1800.0);
    request(
        m,
        alice,
        "files",
        "tools/call",
        Some("write"),
        Outcome::Ok,
        (1000, 10),
    );
    open(m, alice, "files");
    m.flush().await.expect("second flush");
    clock.at(3600.0 + 2400.0);
    end(m, alice, "files", 600.0);
    end(m, bob, "echo", 4500.0);
    sample(m, alice, "files", 2.0, 1.0, 8.0);
    m.flush().await.expect("third flush");
}

/// A PostgreSQL schema of this test's own, dropped when this is dropped.
pub struct Schema {
    /// A DSN whose search_path is the schema (and whose connections are
    /// named after it).
    pub dsn: String,
    pub name: String,
    base: String,
}

/// The PostgreSQL of the tests, if reachable: `postgres`, then `root`.
/// Unreachable: a panic under CI=true, else `None` with the reason printed.
pub async fn postgres(test: &str) -> Option<Schema> {
    let mut why = Vec::new();
    for user in ["postgres", "root"] {
        let base = format!("postgres://{user}@127.0.0.1:5432/test");
        match connect(&base).await {
            Ok(client) => {
                let nanos = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .subsec_nanos();
                let name = format!("usage_{test}_{}_{nanos}", std::process::id());
                client
                    .batch_execute(&format!("CREATE SCHEMA {name}"))
                    .await
                    .unwrap();
                let dsn =
                    format!("{base}?application_name={name}&options=-c%20search_path%3D{name}");
                return Some(Schema { dsn, name, base });
            }
            Err(e) => why.push(format!("as {user}: {e}")),
        }
    }
    let why = format!(
        "PostgreSQL at 127.0.0.1:5432 (database test, trust auth) is not reachable: {}",
        why.join("; ")
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{why}");
    }
    eprintln!("skipped: {why}");
    None
}

pub async fn connect(dsn: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = dsn
        .parse::<tokio_postgres::Config>()?
        .connect_timeout(Duration::from_secs(5))
        .connect(tokio_postgres::NoTls)
        .await?;
    tokio::spawn(connection);
    Ok(client)
}

impl Schema {
    /// Runs `sql` in the schema.
    pub async fn execute(&self, sql: &str) {
        let client = connect(&self.dsn).await.unwrap();
        client.batch_execute(sql).await.unwrap();
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let (base, name) = (self.base.clone(), self.name.clone());
        // Its own runtime on its own thread: drop may run inside a test's runtime.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let client = connect(&base).await?;
                client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                    .await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop schema {}: {dropped:?}", self.name);
        }
    }
}
