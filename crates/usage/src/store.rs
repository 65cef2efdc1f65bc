//! Where metered usage is kept: one `usage` table in SQLite or PostgreSQL,
//! a row per (hour, principal, server, tool), written by adding to the row
//! already there and read back summed over a period.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::Error;

/// The SQLite file in the data dir.
pub const SQLITE_FILE: &str = "usage.sqlite";

/// The schema this build writes (kept in the `usage_schema` table).
pub const SCHEMA_VERSION: i64 = 1;

/// A connection to PostgreSQL that is not made within this (unless the DSN
/// sets `connect_timeout`) is given up on.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a SQLite write waits for another connection's lock (a reader
/// such as `berth usage` never blocks it: the file is in WAL mode).
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Rows per PostgreSQL `INSERT ... SELECT FROM unnest(...)` statement.
const POSTGRES_CHUNK: usize = 1000;

/// What was used, over an hour or summed over a period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Quantities {
    /// Sessions opened.
    pub sessions: u64,
    /// Seconds sessions were open, summed over sessions (a session still
    /// open counts up to the last flush).
    pub session_seconds: f64,
    /// Most sessions of one principal open at once on one server.
    pub peak_connections: u64,
    /// Every request (JSON-RPC message, or GET/DELETE) answered.
    pub requests: u64,
    /// `tools/call` requests.
    pub tool_calls: u64,
    /// Requests whose outcome was not ok (tool error, error, refused).
    pub errors: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// CPU time (user + system) of the server processes.
    pub cpu_seconds: f64,
    /// Resident memory of the server processes, in GiB, times the seconds held.
    pub memory_gib_seconds: f64,
}

impl Quantities {
    /// Reads the quantities from a result row's columns in the order the
    /// queries select them (both backends): counts through `count`, reals
    /// through `real`, by position.
    fn from_columns<E>(
        count: impl Fn(usize) -> Result<u64, E>,
        real: impl Fn(usize) -> Result<f64, E>,
    ) -> Result<Quantities, E> {
        Ok(Quantities {
            sessions: count(0)?,
            session_seconds: real(1)?,
            peak_connections: count(2)?,
            requests: count(3)?,
            tool_calls: count(4)?,
            errors: count(5)?,
            bytes_in: count(6)?,
            bytes_out: count(7)?,
            cpu_seconds: real(8)?,
            memory_gib_seconds: real(9)?,
        })
    }

    /// Adds `other` (peaks: the larger).
    pub fn add(&mut self, other: &Quantities) {
        self.sessions += other.sessions;
        self.session_seconds += other.session_seconds;
        self.peak_connections = self.peak_connections.max(other.peak_connections);
        self.requests += other.requests;
        self.tool_calls += other.tool_calls;
        self.errors += other.errors;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.cpu_seconds += other.cpu_seconds;
        self.memory_gib_seconds += other.memory_gib_seconds;
    }
}

/// One hour's usage by one principal of one server's tool: what a flush
/// adds to the store.
#[derive(Debug, Clone, PartialEq)]
pub struct HourRow {
    /// The hour's start, in seconds since the Unix epoch (a multiple of 3600).
    pub hour: i64,
    /// The principal; `""` without authentication.
    pub principal: String,
    pub server: String,
    /// The tool of `tools/call` requests; `""` for everything else
    /// (sessions, other methods, process samples).
    pub tool: String,
    pub quantities: Quantities,
}

/// What [`Store::query`] groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    Principal,
    Server,
    /// Server and tool.
    Tool,
}

impl By {
    pub fn label(self) -> &'static str {
        match self {
            By::Principal => "principal",
            By::Server => "server",
            By::Tool => "tool",
        }
    }

    fn columns(self) -> &'static str {
        match self {
            By::Principal => "principal",
            By::Server => "server",
            By::Tool => "server, tool",
        }
    }
}

impl std::str::FromStr for By {
    type Err = String;
    fn from_str(s: &str) -> Result<By, String> {
        match s {
            "principal" => Ok(By::Principal),
            "server" => Ok(By::Server),
            "tool" => Ok(By::Tool),
            _ => Err(format!(
                "cannot group by {s:?}: use principal, server or tool"
            )),
        }
    }
}

/// One group's usage over a period. The keys not grouped by are `None`
/// (`null` in JSON); a grouped principal of `""` is anonymous use, a grouped
/// tool of `""` everything but `tools/call`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageRow {
    pub principal: Option<String>,
    pub server: Option<String>,
    pub tool: Option<String>,
    #[serde(flatten)]
    pub quantities: Quantities,
}

/// The start of the hour `t` falls in, in seconds since the Unix epoch.
pub(crate) fn hour_floor(secs: f64) -> i64 {
    ((secs / 3600.0).floor() as i64) * 3600
}

fn epoch_secs(t: SystemTime) -> f64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

fn epoch_time(secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn uint(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The kept usage: SQLite or PostgreSQL, identical to use. Cheap to clone.
#[derive(Clone)]
pub struct Store(Arc<Backend>);

enum Backend {
    Sqlite(Sqlite),
    Postgres(Box<Postgres>),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.describe())
    }
}

impl Store {
    /// Opens (creating it, mode 0600, and its directory, 0700, if missing)
    /// the SQLite file at `path` and its schema.
    pub async fn open_sqlite(path: &Path) -> Result<Store, Error> {
        let path = path.to_path_buf();
        let sqlite = blocking(move || Sqlite::open(path)).await??;
        Ok(Store(Arc::new(Backend::Sqlite(sqlite))))
    }

    /// Connects to the PostgreSQL database `dsn` names (a
    /// `postgresql://user@host:5432/db` URL or `key=value` pairs) and
    /// creates the schema there if missing (in the first schema of the
    /// connection's `search_path`).
    pub async fn open_postgres(dsn: &str) -> Result<Store, Error> {
        let postgres = Postgres::open(dsn).await?;
        Ok(Store(Arc::new(Backend::Postgres(Box::new(postgres)))))
    }

    /// Which database this is: the SQLite file's path, or PostgreSQL's
    /// `host:port/database` (never the password).
    pub fn describe(&self) -> String {
        match &*self.0 {
            Backend::Sqlite(s) => format!("SQLite {}", s.path.display()),
            Backend::Postgres(p) => format!("PostgreSQL {}", p.target),
        }
    }

    /// Adds `rows` to the rows of the same key (peaks: the larger) and
    /// deletes the hours before `delete_before` (epoch seconds), in one
    /// transaction: all of it is written, or none.
    pub async fn write(
        &self,
        rows: Arc<[HourRow]>,
        delete_before: Option<i64>,
    ) -> Result<(), Error> {
        match &*self.0 {
            Backend::Sqlite(s) => {
                let (conn, path) = (s.conn.clone(), s.path.clone());
                blocking(move || Sqlite::write(&conn, &path, &rows, delete_before)).await?
            }
            Backend::Postgres(p) => p.write(&rows, delete_before).await,
        }
    }

    /// Usage in the hours that overlap `[since, until)`, grouped `by`,
    /// summed (peaks: the largest), sorted by the grouped keys.
    /// [`Store::window`] gives the hours this covers.
    pub async fn query(
        &self,
        since: SystemTime,
        until: SystemTime,
        by: By,
    ) -> Result<Vec<UsageRow>, Error> {
        let (lo, hi) = bounds(since, until);
        let mut rows = match &*self.0 {
            Backend::Sqlite(s) => {
                let (conn, path) = (s.conn.clone(), s.path.clone());
                blocking(move || Sqlite::query(&conn, &path, lo, hi, by)).await??
            }
            Backend::Postgres(p) => p.query(lo, hi, by).await?,
        };
        // Sorted here, not in SQL: byte order, whatever the database's collation.
        rows.sort_by(|a, b| {
            (&a.principal, &a.server, &a.tool).cmp(&(&b.principal, &b.server, &b.tool))
        });
        Ok(rows)
    }

    /// The period `query(since, until, ..)` covers: from the start of
    /// `since`'s hour to the end of the hour before `until` (`until` itself
    /// when it is on the hour).
    pub fn window(since: SystemTime, until: SystemTime) -> (SystemTime, SystemTime) {
        let (lo, hi) = bounds(since, until);
        (epoch_time(lo), epoch_time(hi))
    }
}

/// `[lo, hi)` in epoch seconds, both on the hour.
fn bounds(since: SystemTime, until: SystemTime) -> (i64, i64) {
    let lo = hour_floor(epoch_secs(since));
    let until = epoch_secs(until);
    let mut hi = hour_floor(until);
    if (hi as f64) < until {
        hi += 3600;
    }
    (lo, hi.max(lo))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Task(format!("the database task failed: {e}")))
}

const SUMS: &str = "SUM(sessions), SUM(session_seconds), MAX(peak_connections), SUM(requests), \
     SUM(tool_calls), SUM(errors), SUM(bytes_in), SUM(bytes_out), SUM(cpu_seconds), \
     SUM(memory_gib_seconds)";

const POSTGRES_SUMS: &str = "SUM(sessions)::BIGINT, SUM(session_seconds), MAX(peak_connections), \
     SUM(requests)::BIGINT, SUM(tool_calls)::BIGINT, SUM(errors)::BIGINT, SUM(bytes_in)::BIGINT, \
     SUM(bytes_out)::BIGINT, SUM(cpu_seconds), SUM(memory_gib_seconds)";

/// The grouped keys of a query's row and its first quantity's column.
fn keys(by: By, mut get: impl FnMut(usize) -> String) -> (UsageRow, usize) {
    let (principal, server, tool, next) = match by {
        By::Principal => (Some(get(0)), None, None, 1),
        By::Server => (None, Some(get(0)), None, 1),
        By::Tool => (None, Some(get(0)), Some(get(1)), 2),
    };
    (
        UsageRow {
            principal,
            server,
            tool,
            quantities: Quantities::default(),
        },
        next,
    )
}

// ---------------------------------------------------------------- SQLite

struct Sqlite {
    path: PathBuf,
    conn: Arc<Mutex<rusqlite::Connection>>,
}

const SQLITE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS usage_schema (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS usage (
    hour INTEGER NOT NULL,
    principal TEXT NOT NULL,
    server TEXT NOT NULL,
    tool TEXT NOT NULL,
    sessions INTEGER NOT NULL DEFAULT 0,
    session_seconds REAL NOT NULL DEFAULT 0,
    peak_connections INTEGER NOT NULL DEFAULT 0,
    requests INTEGER NOT NULL DEFAULT 0,
    tool_calls INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0,
    bytes_in INTEGER NOT NULL DEFAULT 0,
    bytes_out INTEGER NOT NULL DEFAULT 0,
    cpu_seconds REAL NOT NULL DEFAULT 0,
    memory_gib_seconds REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, principal, server, tool)
);
";

const SQLITE_UPSERT: &str = "
INSERT INTO usage (hour, principal, server, tool, sessions, session_seconds, peak_connections,
                   requests, tool_calls, errors, bytes_in, bytes_out, cpu_seconds, memory_gib_seconds)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
ON CONFLICT (hour, principal, server, tool) DO UPDATE SET
    sessions = sessions + excluded.sessions,
    session_seconds = session_seconds + excluded.session_seconds,
    peak_connections = max(peak_connections, excluded.peak_connections),
    requests = requests + excluded.requests,
    tool_calls = tool_calls + excluded.tool_calls,
    errors = errors + excluded.errors,
    bytes_in = bytes_in + excluded.bytes_in,
    bytes_out = bytes_out + excluded.bytes_out,
    cpu_seconds = cpu_seconds + excluded.cpu_seconds,
    memory_gib_seconds = memory_gib_seconds + excluded.memory_gib_seconds
";

impl Sqlite {
    fn open(path: PathBuf) -> Result<Sqlite, Error> {
        let fail = |message: String| Error::Sqlite {
            path: path.display().to_string(),
            message,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            berth_files::create_private_dir(dir)
                .map_err(|e| fail(format!("cannot create its directory: {e}")))?;
        }
        // Created empty (a valid empty database) and private before SQLite
        // opens it; SQLite gives its -wal and -shm files the same mode.
        match berth_files::create_private_new(&path, b"") {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(fail(format!("cannot create it: {e}"))),
        }
        let sql = |e: rusqlite::Error| fail(sqlite_message(e));
        let mut conn = rusqlite::Connection::open(&path).map_err(sql)?;
        conn.busy_timeout(SQLITE_BUSY_TIMEOUT).map_err(sql)?;
        // The first statement that reads the file: a file that is not a
        // database fails here, named by the path.
        let _mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(sql)?;
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sql)?;
        tx.execute_batch(SQLITE_SCHEMA).map_err(sql)?;
        let version: Option<i64> = tx
            .query_row("SELECT MAX(version) FROM usage_schema", [], |row| {
                row.get(0)
            })
            .map_err(sql)?;
        match version {
            None => {
                tx.execute(
                    "INSERT INTO usage_schema (version) VALUES (?1)",
                    [SCHEMA_VERSION],
                )
                .map_err(sql)?;
            }
            Some(v) if v > SCHEMA_VERSION => return Err(fail(newer(v))),
            Some(_) => {}
        }
        tx.commit().map_err(sql)?;
        Ok(Sqlite {
            path,
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    fn write(
        conn: &Mutex<rusqlite::Connection>,
        path: &Path,
        rows: &[HourRow],
        delete_before: Option<i64>,
    ) -> Result<(), Error> {
        let fail = |e: rusqlite::Error| Error::Sqlite {
            path: path.display().to_string(),
            message: format!("cannot write usage: {}", sqlite_message(e)),
        };
        let mut conn = conn.lock().unwrap_or_else(|e| e.into_inner());
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(fail)?;
        {
            let mut upsert = tx.prepare_cached(SQLITE_UPSERT).map_err(fail)?;
            for r in rows {
                let q = &r.quantities;
                upsert
                    .execute(rusqlite::params![
                        r.hour,
                        r.principal,
                        r.server,
                        r.tool,
                        int(q.sessions),
                        q.session_seconds,
                        int(q.peak_connections),
                        int(q.requests),
                        int(q.tool_calls),
                        int(q.errors),
                        int(q.bytes_in),
                        int(q.bytes_out),
                        q.cpu_seconds,
                        q.memory_gib_seconds,
                    ])
                    .map_err(fail)?;
            }
        }
        if let Some(before) = delete_before {
            tx.execute("DELETE FROM usage WHERE hour < ?1", [before])
                .map_err(fail)?;
        }
        tx.commit().map_err(fail)
    }

    fn query(
        conn: &Mutex<rusqlite::Connection>,
        path: &Path,
        lo: i64,
        hi: i64,
        by: By,
    ) -> Result<Vec<UsageRow>, Error> {
        let fail = |e: rusqlite::Error| Error::Sqlite {
            path: path.display().to_string(),
            message: format!("cannot read usage: {}", sqlite_message(e)),
        };
        let cols = by.columns();
        let sql = format!(
            "SELECT {cols}, {SUMS} FROM usage WHERE hour >= ?1 AND hour < ?2 GROUP BY {cols}"
        );
        let conn = conn.lock().unwrap_or_else(|e| e.into_inner());
        let mut stmt = conn.prepare(&sql).map_err(fail)?;
        let rows = stmt
            .query_map([lo, hi], |row| {
                let mut error = None;
                let (mut out, n) = keys(by, |i| {
                    row.get::<_, String>(i).unwrap_or_else(|e| {
                        error.get_or_insert(e);
                        String::new()
                    })
                });
                if let Some(e) = error {
                    return Err(e);
                }
                out.quantities = Quantities::from_columns(
                    |i| row.get::<_, i64>(n + i).map(uint),
                    |i| row.get::<_, f64>(n + i),
                )?;
                Ok(out)
            })
            .map_err(fail)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(fail)
    }
}

fn sqlite_message(e: rusqlite::Error) -> String {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => format!(
            "{e} (the file is not a SQLite database, or is damaged: move it aside and Berth starts a new one)"
        ),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => format!(
            "{e} (another program held the database's lock for over {}s)",
            SQLITE_BUSY_TIMEOUT.as_secs()
        ),
        _ => e.to_string(),
    }
}

fn newer(version: i64) -> String {
    format!(
        "its schema is version {version}, written by a newer Berth; this one knows version {SCHEMA_VERSION}"
    )
}

// ------------------------------------------------------------- PostgreSQL

struct Postgres {
    config: tokio_postgres::Config,
    /// `host:port/database`, for messages.
    target: String,
    client: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
}

const POSTGRES_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS usage_schema (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS usage (
    hour BIGINT NOT NULL,
    principal TEXT NOT NULL,
    server TEXT NOT NULL,
    tool TEXT NOT NULL,
    sessions BIGINT NOT NULL DEFAULT 0,
    session_seconds DOUBLE PRECISION NOT NULL DEFAULT 0,
    peak_connections BIGINT NOT NULL DEFAULT 0,
    requests BIGINT NOT NULL DEFAULT 0,
    tool_calls BIGINT NOT NULL DEFAULT 0,
    errors BIGINT NOT NULL DEFAULT 0,
    bytes_in BIGINT NOT NULL DEFAULT 0,
    bytes_out BIGINT NOT NULL DEFAULT 0,
    cpu_seconds DOUBLE PRECISION NOT NULL DEFAULT 0,
    memory_gib_seconds DOUBLE PRECISION NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, principal, server, tool)
);
";

const POSTGRES_UPSERT: &str = "
INSERT INTO usage (hour, principal, server, tool, sessions, session_seconds, peak_connections,
                   requests, tool_calls, errors, bytes_in, bytes_out, cpu_seconds, memory_gib_seconds)
SELECT * FROM unnest($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::BIGINT[],
                     $6::DOUBLE PRECISION[], $7::BIGINT[], $8::BIGINT[], $9::BIGINT[], $10::BIGINT[],
                     $11::BIGINT[], $12::BIGINT[], $13::DOUBLE PRECISION[], $14::DOUBLE PRECISION[])
ON CONFLICT (hour, principal, server, tool) DO UPDATE SET
    sessions = usage.sessions + EXCLUDED.sessions,
    session_seconds = usage.session_seconds + EXCLUDED.session_seconds,
    peak_connections = GREATEST(usage.peak_connections, EXCLUDED.peak_connections),
    requests = usage.requests + EXCLUDED.requests,
    tool_calls = usage.tool_calls + EXCLUDED.tool_calls,
    errors = usage.errors + EXCLUDED.errors,
    bytes_in = usage.bytes_in + EXCLUDED.bytes_in,
    bytes_out = usage.bytes_out + EXCLUDED.bytes_out,
    cpu_seconds = usage.cpu_seconds + EXCLUDED.cpu_seconds,
    memory_gib_seconds = usage.memory_gib_seconds + EXCLUDED.memory_gib_seconds
";

impl Postgres {
    async fn open(dsn: &str) -> Result<Postgres, Error> {
        let mut config: tokio_postgres::Config = dsn.parse().map_err(|e| {
            Error::Dsn(format!(
                "not a valid connection string ({e}); expected postgresql://user@host:5432/db or \"host=... user=... dbname=...\""
            ))
        })?;
        if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
            return Err(Error::Dsn(
                "sslmode=require: Berth's usage store does not speak TLS to PostgreSQL; use a trusted network (loopback, a private network) with sslmode=disable or prefer".into(),
            ));
        }
        if config.get_hosts().is_empty() {
            return Err(Error::Dsn(
                "names no host (add host=... or postgresql://user@HOST/db)".into(),
            ));
        }
        if config.get_user().is_none() {
            return Err(Error::Dsn(
                "names no user (add user=... or postgresql://USER@host/db)".into(),
            ));
        }
        if config.get_application_name().is_none() {
            config.application_name("berth-usage");
        }
        let target = postgres_target(&config);
        let postgres = Postgres {
            config,
            target,
            client: tokio::sync::Mutex::new(None),
        };
        let mut guard = postgres.client.lock().await;
        let result = async {
            let client = postgres.connected(&mut guard).await?;
            let tx = client.transaction().await?;
            // Two gateways (or a gateway and the CLI) creating the schema at
            // once: one waits for the other.
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtext('berth_usage_schema'))",
                &[],
            )
            .await?;
            tx.batch_execute(POSTGRES_SCHEMA).await?;
            let version: Option<i32> = tx
                .query_one("SELECT MAX(version) FROM usage_schema", &[])
                .await?
                .get(0);
            match version {
                None => {
                    tx.execute(
                        "INSERT INTO usage_schema (version) VALUES ($1)",
                        &[&(SCHEMA_VERSION as i32)],
                    )
                    .await?;
                }
                Some(v) if i64::from(v) > SCHEMA_VERSION => return Ok(Err(newer(v.into()))),
                Some(_) => {}
            }
            tx.commit().await?;
            Ok::<_, PgFailure>(Ok(()))
        }
        .await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(message)) => {
                return Err(Error::Postgres {
                    target: postgres.target.clone(),
                    message,
                });
            }
            Err(e) => {
                *guard = None;
                return Err(postgres.error("cannot create the usage tables", e));
            }
        }
        drop(guard);
        Ok(postgres)
    }

    /// The connection, made (again) if there is none or it closed.
    async fn connected<'a>(
        &self,
        slot: &'a mut Option<tokio_postgres::Client>,
    ) -> Result<&'a mut tokio_postgres::Client, PgFailure> {
        if slot.as_ref().is_some_and(|c| c.is_closed()) {
            *slot = None;
        }
        if slot.is_none() {
            let timeout = self
                .config
                .get_connect_timeout()
                .copied()
                .unwrap_or(CONNECT_TIMEOUT);
            let (client, connection) =
                tokio::time::timeout(timeout, self.config.connect(tokio_postgres::NoTls))
                    .await
                    .map_err(|_| PgFailure::Connect(format!("no answer within {timeout:?}")))?
                    .map_err(|e| PgFailure::Connect(e.to_string()))?;
            let target = self.target.clone();
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!("usage database {target}: connection ended: {e}");
                }
            });
            *slot = Some(client);
        }
        slot.as_mut()
            .ok_or_else(|| PgFailure::Connect("no connection".into()))
    }

    fn error(&self, doing: &str, e: PgFailure) -> Error {
        let message = match e {
            PgFailure::Connect(why) => format!("cannot connect: {why}"),
            PgFailure::Sql(e) => format!("{doing}: {}", postgres_message(&e)),
        };
        Error::Postgres {
            target: self.target.clone(),
            message,
        }
    }

    async fn write(&self, rows: &[HourRow], delete_before: Option<i64>) -> Result<(), Error> {
        let mut guard = self.client.lock().await;
        let result = async {
            let client = self.connected(&mut guard).await?;
            let tx = client.transaction().await?;
            let upsert = tx.prepare(POSTGRES_UPSERT).await?;
            for chunk in rows.chunks(POSTGRES_CHUNK) {
                let column = |f: fn(&HourRow) -> i64| chunk.iter().map(f).collect::<Vec<i64>>();
                let text = |f: fn(&HourRow) -> &str| chunk.iter().map(f).collect::<Vec<&str>>();
                let real = |f: fn(&HourRow) -> f64| chunk.iter().map(f).collect::<Vec<f64>>();
                let hour = column(|r| r.hour);
                let principal = text(|r| &r.principal);
                let server = text(|r| &r.server);
                let tool = text(|r| &r.tool);
                let sessions = column(|r| int(r.quantities.sessions));
                let session_seconds = real(|r| r.quantities.session_seconds);
                let peak = column(|r| int(r.quantities.peak_connections));
                let requests = column(|r| int(r.quantities.requests));
                let tool_calls = column(|r| int(r.quantities.tool_calls));
                let errors = column(|r| int(r.quantities.errors));
                let bytes_in = column(|r| int(r.quantities.bytes_in));
                let bytes_out = column(|r| int(r.quantities.bytes_out));
                let cpu = real(|r| r.quantities.cpu_seconds);
                let memory = real(|r| r.quantities.memory_gib_seconds);
                tx.execute(
                    &upsert,
                    &[
                        &hour,
                        &principal,
                        &server,
                        &tool,
                        &sessions,
                        &session_seconds,
                        &peak,
                        &requests,
                        &tool_calls,
                        &errors,
                        &bytes_in,
                        &bytes_out,
                        &cpu,
                        &memory,
                    ],
                )
                .await?;
            }
            if let Some(before) = delete_before {
                tx.execute("DELETE FROM usage WHERE hour < $1", &[&before])
                    .await?;
            }
            tx.commit().await?;
            Ok::<_, PgFailure>(())
        }
        .await;
        result.map_err(|e| {
            // Whatever broke, the next write starts on a fresh connection.
            *guard = None;
            self.error("cannot write usage", e)
        })
    }

    async fn query(&self, lo: i64, hi: i64, by: By) -> Result<Vec<UsageRow>, Error> {
        let cols = by.columns();
        let sql = format!(
            "SELECT {cols}, {POSTGRES_SUMS} FROM usage WHERE hour >= $1 AND hour < $2 GROUP BY {cols}"
        );
        let mut guard = self.client.lock().await;
        let result = async {
            let client = self.connected(&mut guard).await?;
            let rows = client.query(&sql, &[&lo, &hi]).await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                let mut error = None;
                let (mut usage, n) = keys(by, |i| {
                    row.try_get::<_, String>(i).unwrap_or_else(|e| {
                        error.get_or_insert(e);
                        String::new()
                    })
                });
                if let Some(e) = error {
                    return Err(PgFailure::Sql(e));
                }
                usage.quantities = Quantities::from_columns(
                    |i| row.try_get::<_, i64>(n + i).map(uint),
                    |i| row.try_get::<_, f64>(n + i),
                )?;
                out.push(usage);
            }
            Ok::<_, PgFailure>(out)
        }
        .await;
        result.map_err(|e| {
            *guard = None;
            self.error("cannot read usage", e)
        })
    }
}

enum PgFailure {
    Connect(String),
    Sql(tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for PgFailure {
    fn from(e: tokio_postgres::Error) -> Self {
        PgFailure::Sql(e)
    }
}

/// The server's own message when it sent one (tokio-postgres's Display
/// says only "db error").
fn postgres_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => e.to_string(),
    }
}

fn postgres_target(config: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match host {
                Host::Tcp(name) if name.contains(':') => format!("[{name}]:{port}"),
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(dir) => format!("{}:{port}", dir.display()),
            }
        })
        .collect();
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{}/{db}", hosts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_whole_hours() {
        let t = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(bounds(t(7200 + 5), t(4 * 3600 + 1)), (7200, 5 * 3600));
        assert_eq!(bounds(t(7200), t(4 * 3600)), (7200, 4 * 3600));
        // An empty or reversed period covers nothing.
        assert_eq!(bounds(t(7200), t(3600)), (7200, 7200));
        assert_eq!(
            Store::window(t(3600 + 59), t(3600 + 60)),
            (t(3600), t(7200))
        );
    }

    #[test]
    fn targets_never_show_the_password() {
        let config: tokio_postgres::Config = "postgresql://u:hunter2@db.example:6543/metering"
            .parse()
            .unwrap();
        assert_eq!(postgres_target(&config), "db.example:6543/metering");
        let config: tokio_postgres::Config = "host=10.0.0.1 user=berth".parse().unwrap();
        assert_eq!(postgres_target(&config), "10.0.0.1:5432/berth");
    }

    #[test]
    fn rows_serialize_with_the_documented_fields() {
        let row = UsageRow {
            principal: None,
            server: Some("echo".into()),
            tool: None,
            quantities: Quantities {
                sessions: 12,
                session_seconds: 3600.5,
                peak_connections: 3,
                requests: 540,
                tool_calls: 500,
                errors: 2,
                bytes_in: 123456,
                bytes_out: 654321,
                cpu_seconds: 12.5,
                memory_gib_seconds: 4500.0,
            },
        };
        let json = serde_json::to_string(&row).unwrap();
        assert_eq!(
            json,
            r#"{"principal":null,"server":"echo","tool":null,"sessions":12,"session_seconds":3600.5,"peak_connections":3,"requests":540,"tool_calls":500,"errors":2,"bytes_in":123456,"bytes_out":654321,"cpu_seconds":12.5,"memory_gib_seconds":4500.0}"#
        );
    }
}
