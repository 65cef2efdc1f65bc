//! The meter: telemetry records added up in memory per (hour, principal,
//! server, tool), written to the store by a background task.
//!
//! Session time is metered continuously: the meter knows when each open
//! session of a (principal, server) opened, and every flush credits the
//! seconds since the previous one, so a long session is in the store up to
//! the last flush even if the gateway dies; when it ends, the rest of its
//! `open_for` is credited. Seconds are split at hour boundaries.

use std::hash::RandomState;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_telemetry::{
    Observer, Outcome, ProcessSample, RequestRecord, SessionEnded, SessionOpened,
};
use hashbrown::{Equivalent, HashMap};

use crate::Error;
use crate::store::{HourRow, Quantities, Store, hour_floor};

/// Keys (hour, principal, server, tool) waiting for the store at most:
/// while writes fail, usage beyond this is dropped (counted in
/// [`Meter::dropped_keys`] and logged) rather than held without bound.
pub const MAX_PENDING_KEYS: usize = 100_000;

/// Principal, server and tool names are cut to this many bytes: a tool name
/// comes from the client.
const MAX_NAME_BYTES: usize = 256;

/// Session time credited in one go at most (a bogus `open_for`).
const MAX_CREDIT_SECS: f64 = 366.0 * 24.0 * 3600.0;

const GIB: f64 = (1u64 << 30) as f64;

/// Where the meter reads the time: the system clock, or a test's.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// SipHash with a random key: tool names come from clients.
type Map<K, V> = HashMap<K, V, RandomState>;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    hour: i64,
    principal: String,
    server: String,
    tool: String,
}

/// A [`Key`] borrowed from a record: looked up without allocating. Its
/// derived `Hash` matches `Key`'s (same fields, `&str` hashes as `String`).
#[derive(Hash)]
struct KeyRef<'a> {
    hour: i64,
    principal: &'a str,
    server: &'a str,
    tool: &'a str,
}

impl Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        self.hour == key.hour
            && self.principal == key.principal
            && self.server == key.server
            && self.tool == key.tool
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SessionKey {
    principal: String,
    server: String,
}

#[derive(Hash)]
struct SessionKeyRef<'a> {
    principal: &'a str,
    server: &'a str,
}

impl Equivalent<SessionKey> for SessionKeyRef<'_> {
    fn equivalent(&self, key: &SessionKey) -> bool {
        self.principal == key.principal && self.server == key.server
    }
}

struct State {
    /// Usage counted since the last flush.
    pending: Map<Key, Quantities>,
    /// The map the last flush wrote, emptied: the next `pending`, so the
    /// request path reuses its capacity instead of growing a new one.
    spare: Option<Map<Key, Quantities>>,
    /// When each open session opened (epoch seconds, ascending).
    open: Map<SessionKey, Vec<f64>>,
    /// Session time is credited up to here (the last flush).
    accrued_to: f64,
}

/// Counts usage in memory as the gateway's records arrive and writes it to
/// a [`Store`]. An [`Observer`]: register it with the telemetry.
pub struct Meter {
    state: Mutex<State>,
    store: Store,
    retention: Duration,
    clock: Clock,
    /// One flush at a time (the task's, `flush()`, `shutdown()`).
    flushing: tokio::sync::Mutex<()>,
    dropped: AtomicU64,
    /// The retention bound of the last successful delete.
    deleted_before: AtomicI64,
    stop: tokio::sync::watch::Sender<bool>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meter")
            .field("store", &self.store)
            .field("pending_keys", &self.pending_keys())
            .field("dropped_keys", &self.dropped_keys())
            .finish()
    }
}

impl Meter {
    /// A meter writing to `store` when [`flush`](Meter::flush) is called
    /// (see [`Meter::start`] for one that flushes by itself); hours older
    /// than `retention` are deleted at each flush.
    pub fn new(store: Store, retention: Duration) -> Meter {
        let clock: Clock = Arc::new(SystemTime::now);
        let now = epoch_secs(clock());
        Meter {
            state: Mutex::new(State {
                pending: Map::default(),
                spare: None,
                open: Map::default(),
                accrued_to: now,
            }),
            store,
            retention,
            clock,
            flushing: tokio::sync::Mutex::new(()),
            dropped: AtomicU64::new(0),
            deleted_before: AtomicI64::new(i64::MIN),
            stop: tokio::sync::watch::Sender::new(false),
            task: Mutex::new(None),
        }
    }

    /// The same meter reading the time from `clock` (tests script time).
    pub fn with_clock(mut self, clock: impl Fn() -> SystemTime + Send + Sync + 'static) -> Meter {
        self.clock = Arc::new(clock);
        let now = epoch_secs((self.clock)());
        self.lock().accrued_to = now;
        self
    }

    /// Opens nothing: starts a meter on an open `store` that writes what it
    /// counted every `flush_interval` (a failed write is retried at the
    /// next). Call within a Tokio runtime; end with [`Meter::shutdown`].
    pub fn start(store: Store, flush_interval: Duration, retention: Duration) -> Arc<Meter> {
        Meter::new(store, retention).run(flush_interval)
    }

    /// Starts this meter's flush task (every `flush_interval`).
    pub fn run(self, flush_interval: Duration) -> Arc<Meter> {
        let meter = Arc::new(self);
        let weak = Arc::downgrade(&meter);
        let mut stop = meter.stop.subscribe();
        let interval = flush_interval.max(Duration::from_millis(10));
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            let mut failing = false;
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = stop.wait_for(|stopped| *stopped) => break,
                }
                let Some(meter) = weak.upgrade() else { break };
                match meter.flush().await {
                    Ok(_) if failing => {
                        failing = false;
                        tracing::info!("usage: writing to {} again", meter.store.describe());
                    }
                    Ok(_) => {}
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(
                            "usage not written (kept in memory, retried every {interval:?}): {e}"
                        );
                    }
                    Err(e) => tracing::debug!("usage still not written: {e}"),
                }
            }
        });
        *meter.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        meter
    }

    /// The store written to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Keys counted and not written yet.
    pub fn pending_keys(&self) -> usize {
        self.lock().pending.len()
    }

    /// Keys dropped because more than [`MAX_PENDING_KEYS`] waited.
    pub fn dropped_keys(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Credits open sessions' time up to now and writes everything counted
    /// in one transaction, deleting hours past the retention. On failure
    /// the usage stays in memory for the next flush. Returns the number of
    /// keys written.
    pub async fn flush(&self) -> Result<usize, Error> {
        let _one = self.flushing.lock().await;
        let now = epoch_secs((self.clock)());
        let (mut batch, full) = {
            let mut state = self.lock();
            let full = state.accrue(now);
            let spare = state.spare.take().unwrap_or_default();
            (std::mem::replace(&mut state.pending, spare), full)
        };
        if full > 0 {
            self.dropped(full);
        }
        let delete_before =
            (!self.retention.is_zero()).then(|| hour_floor(now - self.retention.as_secs_f64()));
        // Nothing counted and nothing new to delete: the store is left alone.
        let deleted = self.deleted_before.load(Ordering::Relaxed);
        if batch.is_empty() && delete_before.is_none_or(|d| d == deleted) {
            self.lock().spare = Some(batch);
            return Ok(0);
        }
        let rows: Arc<[HourRow]> = batch
            .drain()
            .map(|(k, quantities)| HourRow {
                hour: k.hour,
                principal: k.principal,
                server: k.server,
                tool: k.tool,
                quantities,
            })
            .collect();
        match self.store.write(rows.clone(), delete_before).await {
            Ok(()) => {
                if let Some(d) = delete_before {
                    self.deleted_before.store(d, Ordering::Relaxed);
                }
                let mut state = self.lock();
                if state.spare.is_none() {
                    state.spare = Some(batch);
                }
                Ok(rows.len())
            }
            Err(e) => {
                self.keep(&rows);
                Err(e)
            }
        }
    }

    /// Stops the flush task and writes what is left (open sessions credited
    /// up to now). The gateway calls it on graceful shutdown.
    pub async fn shutdown(&self) -> Result<(), Error> {
        self.stop.send_replace(true);
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
        self.flush().await.map(|_| ())
    }

    /// Puts a batch that could not be written back, within the bound.
    fn keep(&self, rows: &[HourRow]) {
        let mut dropped = 0u64;
        {
            let mut state = self.lock();
            for row in rows {
                let key = KeyRef {
                    hour: row.hour,
                    principal: &row.principal,
                    server: &row.server,
                    tool: &row.tool,
                };
                if let Some(q) = state.pending.get_mut(&key) {
                    q.add(&row.quantities);
                } else if state.pending.len() < MAX_PENDING_KEYS {
                    state.pending.insert(
                        Key {
                            hour: row.hour,
                            principal: row.principal.clone(),
                            server: row.server.clone(),
                            tool: row.tool.clone(),
                        },
                        row.quantities,
                    );
                } else {
                    dropped += 1;
                }
            }
        }
        if dropped > 0 {
            self.dropped(dropped);
        }
    }

    fn dropped(&self, n: u64) {
        let before = self.dropped.fetch_add(n, Ordering::Relaxed);
        // Logged at the first drop and at every ten-thousandth after.
        if before == 0 || (before + n) / 10_000 != before / 10_000 {
            tracing::warn!(
                "usage: {} key(s) dropped in all: more than {MAX_PENDING_KEYS} were waiting for {} (is it reachable?)",
                before + n,
                self.store.describe()
            );
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now(&self) -> f64 {
        epoch_secs((self.clock)())
    }

    /// Adds to the quantities of one key (dropped, and counted as such,
    /// when the key is new and the map full).
    fn count(&self, key: KeyRef<'_>, f: impl FnOnce(&mut Quantities)) {
        let full = {
            let mut state = self.lock();
            state.with(key, f)
        };
        if full {
            self.dropped(1);
        }
    }
}

impl State {
    /// Applies `f` to `key`'s quantities, adding the key if missing;
    /// `true` (and nothing counted) when it is missing and the map full.
    fn with(&mut self, key: KeyRef<'_>, f: impl FnOnce(&mut Quantities)) -> bool {
        if let Some(q) = self.pending.get_mut(&key) {
            f(q);
            return false;
        }
        if self.pending.len() >= MAX_PENDING_KEYS {
            return true;
        }
        let owned = Key {
            hour: key.hour,
            principal: clean(key.principal),
            server: clean(key.server),
            tool: clean(key.tool),
        };
        f(self.pending.entry(owned).or_default());
        false
    }

    /// Credits `secs` of session time over `[from, to]` to `(principal,
    /// server)`, split at hours, raising each hour's peak to `peak`.
    fn credit(
        &mut self,
        principal: &str,
        server: &str,
        from: f64,
        to: f64,
        count: f64,
        peak: u64,
    ) -> u64 {
        let mut full = 0;
        let mut start = from.max(to - MAX_CREDIT_SECS);
        while start < to {
            let hour = hour_floor(start);
            let end = to.min((hour + 3600) as f64);
            let secs = (end - start) * count;
            let key = KeyRef {
                hour,
                principal,
                server,
                tool: "",
            };
            if self.with(key, |q| {
                q.session_seconds += secs;
                q.peak_connections = q.peak_connections.max(peak);
            }) {
                full += 1;
            }
            start = end;
        }
        full
    }

    /// Credits every open session's time up to `now`; returns the keys
    /// dropped because the map was full.
    fn accrue(&mut self, now: f64) -> u64 {
        let from = self.accrued_to;
        if now <= from {
            return 0;
        }
        let mut full = 0;
        let open = std::mem::take(&mut self.open);
        for (key, opened) in &open {
            let n = opened.len() as u64;
            if n == 0 {
                continue;
            }
            // Sessions open since before the last flush share one interval.
            let before = opened.partition_point(|&t| t <= from);
            if before > 0 {
                full += self.credit(&key.principal, &key.server, from, now, before as f64, n);
            }
            for &t in &opened[before..] {
                full += self.credit(&key.principal, &key.server, t, now, 1.0, n);
            }
        }
        self.open = open;
        self.open.retain(|_, opened| !opened.is_empty());
        self.accrued_to = now;
        full
    }
}

/// `s` cut to [`MAX_NAME_BYTES`] (at a character boundary).
fn cut(s: &str) -> &str {
    if s.len() <= MAX_NAME_BYTES {
        return s;
    }
    let mut end = MAX_NAME_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// An owned name the databases accept (PostgreSQL text holds no NUL).
fn clean(s: &str) -> String {
    s.replace('\0', "\u{fffd}")
}

fn epoch_secs(t: SystemTime) -> f64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

impl Observer for Meter {
    fn request(&self, r: &RequestRecord<'_>) {
        let tool_call = r.method == Some("tools/call");
        let key = KeyRef {
            hour: hour_floor(self.now()),
            principal: cut(r.principal.unwrap_or("")),
            server: cut(r.server),
            tool: if tool_call {
                cut(r.tool.unwrap_or(""))
            } else {
                ""
            },
        };
        let error = r.outcome != Outcome::Ok;
        self.count(key, |q| {
            q.requests += 1;
            q.tool_calls += u64::from(tool_call);
            q.errors += u64::from(error);
            q.bytes_in += r.bytes_in;
            q.bytes_out += r.bytes_out;
        });
    }

    fn session_opened(&self, r: &SessionOpened<'_>) {
        let now = self.now();
        let (principal, server) = (cut(r.principal.unwrap_or("")), cut(r.server));
        let full = {
            let mut state = self.lock();
            let who = SessionKeyRef { principal, server };
            let open = match state.open.get_mut(&who) {
                Some(open) => {
                    open.push(now);
                    open.len()
                }
                None => {
                    let key = SessionKey {
                        principal: principal.to_owned(),
                        server: server.to_owned(),
                    };
                    state.open.insert(key, vec![now]);
                    1
                }
            } as u64;
            let key = KeyRef {
                hour: hour_floor(now),
                principal,
                server,
                tool: "",
            };
            state.with(key, |q| {
                q.sessions += 1;
                q.peak_connections = q.peak_connections.max(open);
            })
        };
        if full {
            self.dropped(1);
        }
    }

    fn session_ended(&self, r: &SessionEnded<'_>) {
        let now = self.now();
        let (principal, server) = (cut(r.principal.unwrap_or("")), cut(r.server));
        let open_for = r.open_for.as_secs_f64().min(MAX_CREDIT_SECS);
        let full = {
            let mut state = self.lock();
            let accrued_to = state.accrued_to;
            let who = SessionKeyRef { principal, server };
            // The session that ended is the open one whose start is
            // closest to `now - open_for` (records name no session).
            let (credited, concurrent) = match state.open.get_mut(&who) {
                Some(opened) if !opened.is_empty() => {
                    let n = opened.len() as u64;
                    let target = now - open_for;
                    let i = opened.partition_point(|&t| t < target);
                    let pick = match (i.checked_sub(1), opened.get(i)) {
                        (Some(j), Some(&after)) if after - target < target - opened[j] => i,
                        (Some(j), _) => j,
                        (None, _) => i,
                    };
                    let started = opened.remove(pick);
                    ((accrued_to - started).max(0.0), n)
                }
                _ => (0.0, 1),
            };
            let rest = (open_for - credited).max(0.0);
            state.credit(principal, server, now - rest, now, 1.0, concurrent)
        };
        if full > 0 {
            self.dropped(full);
        }
    }

    fn process_sample(&self, r: &ProcessSample<'_>) {
        let key = KeyRef {
            hour: hour_floor(self.now()),
            principal: cut(r.principal.unwrap_or("")),
            server: cut(r.server),
            tool: "",
        };
        let cpu = r.cpu.as_secs_f64();
        let memory = r.memory_bytes as f64 / GIB * r.interval.as_secs_f64();
        self.count(key, |q| {
            q.cpu_seconds += cpu;
            q.memory_gib_seconds += memory;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_telemetry::Era;
    use std::sync::atomic::AtomicU64;

    /// An hour's start (2026-11-16T10:00:00Z).
    const H: u64 = 1_794_996_000;

    struct Script {
        meter: Meter,
        millis: Arc<AtomicU64>,
        _dir: tempfile::TempDir,
    }

    impl Script {
        async fn new() -> Script {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open_sqlite(&dir.path().join("usage.sqlite"))
                .await
                .unwrap();
            let millis = Arc::new(AtomicU64::new(H * 1000));
            let clock = millis.clone();
            let meter = Meter::new(store, Duration::ZERO).with_clock(move || {
                UNIX_EPOCH + Duration::from_millis(clock.load(Ordering::Relaxed))
            });
            Script {
                meter,
                millis,
                _dir: dir,
            }
        }

        /// Sets the clock to `H + secs`.
        fn at(&self, secs: f64) {
            self.millis
                .store(H * 1000 + (secs * 1000.0) as u64, Ordering::Relaxed);
        }

        #[allow(clippy::too_many_arguments)]
        fn request(
            &self,
            principal: Option<&str>,
            server: &str,
            method: &str,
            tool: Option<&str>,
            outcome: Outcome,
            bytes_in: u64,
            bytes_out: u64,
        ) {
            self.meter.request(&RequestRecord {
                server,
                principal,
                method: Some(method),
                tool,
                era: Era::Handshake,
                status: 200,
                outcome,
                total: Duration::from_millis(3),
                upstream: None,
                bytes_in,
                bytes_out,
                started_at: std::time::SystemTime::UNIX_EPOCH,
                trace: None,
                session: None,
                error_code: None,
            });
        }

        fn open(&self, principal: Option<&str>, server: &str) {
            self.meter.session_opened(&SessionOpened {
                server,
                principal,
                start: berth_telemetry::Start::Warm,
            });
        }

        fn end(&self, principal: Option<&str>, server: &str, open_for: f64) {
            self.meter.session_ended(&SessionEnded {
                server,
                principal,
                open_for: Duration::from_secs_f64(open_for),
            });
        }

        /// The pending usage, sorted: (hour offset, principal, server, tool, quantities).
        fn pending(&self) -> Vec<(i64, String, String, String, Quantities)> {
            let state = self.meter.lock();
            let mut rows: Vec<_> = state
                .pending
                .iter()
                .map(|(k, q)| {
                    (
                        k.hour - H as i64,
                        k.principal.clone(),
                        k.server.clone(),
                        k.tool.clone(),
                        *q,
                    )
                })
                .collect();
            rows.sort_by(|a, b| (a.0, &a.1, &a.2, &a.3).cmp(&(b.0, &b.1, &b.2, &b.3)));
            rows
        }

        /// Session seconds and peak pending for (hour offset in seconds, principal, server).
        fn session(&self, hour: i64, principal: &str, server: &str) -> (f64, u64) {
            self.pending()
                .into_iter()
                .find(|r| r.0 == hour && r.1 == principal && r.2 == server && r.3.is_empty())
                .map(|r| (r.4.session_seconds, r.4.peak_connections))
                .unwrap_or((0.0, 0))
        }
    }

    fn row(p: &str, s: &str, t: &str, q: Quantities) -> (i64, String, String, String, Quantities) {
        (0, p.into(), s.into(), t.into(), q)
    }

    #[tokio::test]
    async fn two_principals_on_two_servers_give_exact_rows() {
        let s = Script::new().await;
        let (alice, bob) = (Some("alice"), Some("bob"));
        s.at(100.0);
        s.open(alice, "echo");
        s.open(bob, "files");
        s.open(alice, "files");
        s.request(alice, "echo", "initialize", None, Outcome::Ok, 100, 200);
        s.request(
            alice,
            "echo",
            "tools/call",
            Some("say"),
            Outcome::Ok,
            50,
            70,
        );
        s.request(
            alice,
            "echo",
            "tools/call",
            Some("say"),
            Outcome::ToolError,
            60,
            80,
        );
        s.request(alice, "files", "tools/list", None, Outcome::Ok, 10, 900);
        s.request(
            bob,
            "files",
            "tools/call",
            Some("read"),
            Outcome::Error,
            10,
            20,
        );
        s.request(
            bob,
            "echo",
            "tools/call",
            Some("say"),
            Outcome::Refused,
            5,
            0,
        );
        // Anonymous, and a tool named on a method that is not tools/call.
        s.request(None, "echo", "GET", Some("ignored"), Outcome::Ok, 0, 0);
        s.meter.process_sample(&ProcessSample {
            server: "echo",
            principal: alice,
            cpu: Duration::from_millis(1500),
            memory_bytes: 2 << 30,
            interval: Duration::from_secs(5),
        });
        s.meter.process_sample(&ProcessSample {
            server: "files",
            principal: None,
            cpu: Duration::from_millis(500),
            memory_bytes: 512 << 20,
            interval: Duration::from_secs(4),
        });
        s.at(160.0);
        s.end(alice, "echo", 60.0);
        let q = Quantities::default;
        assert_eq!(
            s.pending(),
            vec![
                row("", "echo", "", Quantities { requests: 1, ..q() }),
                row(
                    "",
                    "files",
                    "",
                    Quantities {
                        cpu_seconds: 0.5,
                        memory_gib_seconds: 2.0,
                        ..q()
                    }
                ),
                row(
                    "alice",
                    "echo",
                    "",
                    Quantities {
                        sessions: 1,
                        session_seconds: 60.0,
                        peak_connections: 1,
                        requests: 1,
                        bytes_in: 100,
                        bytes_out: 200,
                        cpu_seconds: 1.5,
                        memory_gib_seconds: 10.0,
                        ..q()
                    }
                ),
                row(
                    "alice",
                    "echo",
                    "say",
                    Quantities {
                        requests: 2,
                        tool_calls: 2,
                        errors: 1,
                        bytes_in: 110,
                        bytes_out: 150,
                        ..q()
                    }
                ),
                row(
                    "alice",
                    "files",
                    "",
                    Quantities {
                        sessions: 1,
                        peak_connections: 1,
                        requests: 1,
                        bytes_in: 10,
                        bytes_out: 900,
                        ..q()
                    }
                ),
                row(
                    "bob",
                    "echo",
                    "say",
                    Quantities {
                        requests: 1,
                        tool_calls: 1,
                        errors: 1,
                        bytes_in: 5,
                        ..q()
                    }
                ),
                row(
                    "bob",
                    "files",
                    "",
                    Quantities {
                        sessions: 1,
                        peak_connections: 1,
                        ..q()
                    }
                ),
                row(
                    "bob",
                    "files",
                    "read",
                    Quantities {
                        requests: 1,
                        tool_calls: 1,
                        errors: 1,
                        bytes_in: 10,
                        bytes_out: 20,
                        ..q()
                    }
                ),
            ]
        );
        // A flush credits the two sessions still open with their 100 s so far.
        s.at(200.0);
        assert_eq!(s.meter.flush().await.unwrap(), 8);
        assert!(s.pending().is_empty());
        let by_principal = s
            .meter
            .store()
            .query(
                UNIX_EPOCH,
                UNIX_EPOCH + Duration::from_secs(H + 3600),
                crate::By::Principal,
            )
            .await
            .unwrap();
        let seconds: Vec<_> = by_principal
            .iter()
            .map(|r| (r.principal.clone().unwrap(), r.quantities.session_seconds))
            .collect();
        assert_eq!(
            seconds,
            [
                ("".into(), 0.0),
                ("alice".into(), 160.0),
                ("bob".into(), 100.0)
            ]
        );
    }

    #[tokio::test]
    async fn session_time_is_metered_while_open_and_split_at_hours() {
        let s = Script::new().await;
        let who = Some("alice");
        s.at(3500.0);
        s.open(who, "echo");
        s.at(3510.0);
        s.meter.flush().await.unwrap();
        let store = s.meter.store().clone();
        let hour = |h: u64| {
            let store = store.clone();
            async move {
                let since = UNIX_EPOCH + Duration::from_secs(H + h * 3600);
                let rows = store
                    .query(since, since + Duration::from_secs(3600), crate::By::Server)
                    .await
                    .unwrap();
                rows.first()
                    .map(|r| (r.quantities.session_seconds, r.quantities.peak_connections))
            }
        };
        // Open 10 s, not ended: already in the store.
        assert_eq!(hour(0).await, Some((10.0, 1)));
        // The next flush crosses the hour: 90 s more in the first, 20 s in the second.
        s.at(3620.0);
        s.meter.flush().await.unwrap();
        assert_eq!(hour(0).await, Some((100.0, 1)));
        assert_eq!(hour(1).await, Some((20.0, 1)));
        // It ends after 200 s: the 80 s not credited yet are added, no more.
        s.at(3700.0);
        s.end(who, "echo", 200.0);
        assert_eq!(s.session(3600, "alice", "echo"), (80.0, 1));
        s.at(3800.0);
        s.meter.flush().await.unwrap();
        assert_eq!(hour(0).await, Some((100.0, 1)));
        assert_eq!(hour(1).await, Some((100.0, 1)));
        // Ended sessions are forgotten: later flushes credit nothing.
        s.at(3900.0);
        assert_eq!(s.meter.flush().await.unwrap(), 0);
        assert!(s.meter.lock().open.is_empty());
    }

    #[tokio::test]
    async fn sessions_that_end_are_told_apart_by_their_length() {
        let s = Script::new().await;
        let who = Some("alice");
        s.at(0.0);
        s.open(who, "echo");
        s.at(30.0);
        s.open(who, "echo");
        s.at(40.0);
        s.meter.flush().await.unwrap();
        // The one opened at 30 ends at 50 (open 20 s): 10 s were credited at
        // the flush, 10 s remain; the one opened at 0 stays open.
        s.at(50.0);
        s.end(who, "echo", 20.0);
        assert_eq!(s.session(0, "alice", "echo"), (10.0, 2));
        assert_eq!(
            s.meter.lock().open.values().next().unwrap(),
            &vec![H as f64]
        );
        s.at(100.0);
        s.end(who, "echo", 100.0);
        // 60 s since the flush.
        assert_eq!(s.session(0, "alice", "echo"), (70.0, 2));
    }

    #[tokio::test]
    async fn peak_connections_per_principal_and_server_and_hour() {
        let s = Script::new().await;
        let (alice, bob) = (Some("alice"), Some("bob"));
        s.at(10.0);
        s.open(alice, "echo");
        s.open(alice, "echo");
        s.open(bob, "echo");
        s.open(alice, "echo");
        s.at(20.0);
        s.end(alice, "echo", 10.0);
        s.end(alice, "echo", 10.0);
        s.open(alice, "echo");
        assert_eq!(s.session(0, "alice", "echo").1, 3);
        assert_eq!(s.session(0, "bob", "echo").1, 1);
        // The next hour: two of alice's sessions are still open though none
        // opened in it; its peak is 2.
        s.at(3600.0 + 5.0);
        s.meter.flush().await.unwrap();
        s.at(3600.0 + 15.0);
        s.end(bob, "echo", 3605.0);
        s.meter.flush().await.unwrap();
        let store = s.meter.store();
        let next = UNIX_EPOCH + Duration::from_secs(H + 3600);
        let rows = store
            .query(next, next + Duration::from_secs(3600), crate::By::Principal)
            .await
            .unwrap();
        let peaks: Vec<_> = rows
            .iter()
            .map(|r| (r.principal.clone().unwrap(), r.quantities.peak_connections))
            .collect();
        assert_eq!(peaks, [("alice".into(), 2), ("bob".into(), 1)]);
        let first = store
            .query(UNIX_EPOCH + Duration::from_secs(H), next, crate::By::Server)
            .await
            .unwrap();
        assert_eq!(first[0].quantities.peak_connections, 3);
        assert_eq!(first[0].quantities.sessions, 5);
    }

    #[tokio::test]
    async fn keys_beyond_the_bound_are_dropped_and_counted() {
        let s = Script::new().await;
        s.at(1.0);
        for i in 0..MAX_PENDING_KEYS {
            let tool = format!("t{i}");
            s.request(None, "echo", "tools/call", Some(&tool), Outcome::Ok, 1, 1);
        }
        assert_eq!(s.meter.dropped_keys(), 0);
        s.request(
            None,
            "echo",
            "tools/call",
            Some("one-too-many"),
            Outcome::Ok,
            1,
            1,
        );
        assert_eq!(s.meter.dropped_keys(), 1);
        // A key already counted still counts.
        s.request(None, "echo", "tools/call", Some("t7"), Outcome::Ok, 1, 1);
        assert_eq!(s.meter.pending_keys(), MAX_PENDING_KEYS);
        assert_eq!(s.meter.dropped_keys(), 1);
    }

    #[tokio::test]
    async fn long_and_odd_names_are_cut_and_cleaned() {
        let s = Script::new().await;
        let long = "é".repeat(300);
        s.request(None, "echo", "tools/call", Some(&long), Outcome::Ok, 0, 0);
        s.request(None, "echo", "tools/call", Some("a\0b"), Outcome::Ok, 0, 0);
        s.request(None, "echo", "tools/call", Some("a\0b"), Outcome::Ok, 0, 0);
        let tools: Vec<_> = s
            .pending()
            .into_iter()
            .map(|r| (r.3, r.4.requests))
            .collect();
        assert_eq!(tools, [("a\u{fffd}b".to_string(), 2), ("é".repeat(128), 1)]);
    }
}
