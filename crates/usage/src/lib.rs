//! Usage metering: what each principal used of each server and tool, hour
//! by hour.
//!
//! The [`Meter`] is a telemetry [`Observer`](berth_telemetry::Observer): the
//! gateway's records (requests, sessions opened and ended, process samples)
//! are added up in memory per (hour, principal, server, tool), and a
//! background task writes what accumulated to a [`Store`] every
//! `flush_interval`, in one transaction, adding to the rows already there.
//! Nothing on the request path waits for the store.
//!
//! The store is SQLite (`<data_dir>/usage.sqlite`, mode 0600) unless
//! `[usage] postgres` names a PostgreSQL database; both keep one `usage`
//! table and give identical [`Store::query`] results.
//!
//! Wiring it into the gateway:
//!
//! ```no_run
//! # async fn serve(telemetry: berth_telemetry::Telemetry, data_dir: &std::path::Path) -> Result<(), berth_usage::Error> {
//! let config = berth_usage::UsageConfig::default();
//! let meter = berth_usage::start(&config, data_dir).await?; // None when disabled
//! let telemetry = match &meter {
//!     Some(meter) => telemetry.with(meter.clone()),
//!     None => telemetry,
//! };
//! // ... serve until the shutdown signal ...
//! if let Some(meter) = meter {
//!     meter.shutdown().await?; // writes what is left
//! }
//! # Ok(()) }
//! ```
//!
//! Why `rusqlite` and `tokio-postgres` rather than `sqlx`: the workspace
//! already speaks PostgreSQL through `tokio-postgres` (the built-in
//! `postgres` server); `sqlx` would bring a second PostgreSQL driver, its
//! macros and much more compile time for two small tables.

mod meter;
mod store;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use meter::{Clock, MAX_PENDING_KEYS, Meter};
pub use store::{By, HourRow, Quantities, SCHEMA_VERSION, SQLITE_FILE, Store, UsageRow};

/// The `[usage]` settings, with any secret in the DSN already resolved.
#[derive(Clone, PartialEq)]
pub struct UsageConfig {
    /// Meter at all.
    pub enabled: bool,
    /// A PostgreSQL connection string; SQLite in the data dir when `None`.
    pub postgres: Option<String>,
    /// How often the meter writes what it counted.
    pub flush_interval: Duration,
    /// Hours older than this are deleted at each flush.
    pub retention: Duration,
}

impl Default for UsageConfig {
    fn default() -> Self {
        UsageConfig {
            enabled: true,
            postgres: None,
            flush_interval: Duration::from_secs(10),
            retention: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

/// The DSN may hold a password: it is never printed.
impl std::fmt::Debug for UsageConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageConfig")
            .field("enabled", &self.enabled)
            .field("postgres", &self.postgres.as_ref().map(|_| "<set>"))
            .field("flush_interval", &self.flush_interval)
            .field("retention", &self.retention)
            .finish()
    }
}

/// Opens the store `config` names: PostgreSQL when `postgres` is set,
/// otherwise `<data_dir>/usage.sqlite` (the directory created 0700 and the
/// file 0600 if missing). Creates the schema when missing.
pub async fn open(config: &UsageConfig, data_dir: &Path) -> Result<Store, Error> {
    match &config.postgres {
        Some(dsn) => Store::open_postgres(dsn).await,
        None => Store::open_sqlite(&data_dir.join(SQLITE_FILE)).await,
    }
}

/// Opens the store and starts a [`Meter`] flushing to it every
/// `flush_interval`; `None` when `[usage] enabled = false`. Must be called
/// within a Tokio runtime.
pub async fn start(config: &UsageConfig, data_dir: &Path) -> Result<Option<Arc<Meter>>, Error> {
    if !config.enabled {
        return Ok(None);
    }
    let store = open(config, data_dir).await?;
    Ok(Some(Meter::start(
        store,
        config.flush_interval,
        config.retention,
    )))
}

/// Why the store could not be opened, written or read. Every message names
/// the database (the SQLite file's path, or PostgreSQL's host and the
/// `[usage] postgres` setting) and never a password.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("usage database {path}: {message}")]
    Sqlite { path: String, message: String },
    #[error("usage database {target} ([usage] postgres): {message}")]
    Postgres { target: String, message: String },
    #[error("[usage] postgres: {0}")]
    Dsn(String),
    #[error("usage store: {0}")]
    Task(String),
}
