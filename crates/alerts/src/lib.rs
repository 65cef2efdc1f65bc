//! Alerts: a server that failed, crash-loops or is over its latency budget
//! is reported to a webhook, once when the condition starts and once when
//! it clears (`recovered`), with its owner.
//!
//! [`Alerts`] is a telemetry [`Observer`]: it keeps, per server with a
//! `latency_budget`, the p99 of its `tools/call` latency and of its new
//! sessions' time to first result over a sliding window (time-sliced
//! histograms: bounded memory, one short lock per call). An evaluation task
//! reads the fleet state every `check_every` and compares; alerts go
//! through a bounded queue to one delivery task, so neither the request
//! path nor the evaluation ever waits for the webhook.
//!
//! ```no_run
//! # use berth_telemetry::ServerState;
//! # async fn serve(fleet_state: fn() -> Vec<ServerState>) -> Result<(), berth_alerts::Error> {
//! let config = berth_alerts::AlertsConfig::new("https://hooks.example.com/berth");
//! let alerts = std::sync::Arc::new(berth_alerts::Alerts::new(config)?);
//! // telemetry.with(alerts.clone()) before the gateway is built, then, with
//! // a closure over a Weak<Gateway> calling fleet_state():
//! alerts.start(fleet_state);
//! // ... serve until the shutdown signal ...
//! alerts.shutdown().await;
//! # Ok(()) }
//! ```

mod deliver;
mod eval;
mod window;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime};

use berth_telemetry::{FirstResult, Observer, Outcome, RequestRecord, ServerState};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

pub use deliver::Stats;
use deliver::{Queue, Target};
use eval::{Evaluator, Rules};
pub use window::SLICES;
use window::{Kind, Measure, Window};

/// Alerts waiting for delivery at most; more are dropped (counted).
pub const QUEUE: usize = 256;

/// The `[alerts]` settings, with any secret in the headers resolved.
#[derive(Clone, PartialEq)]
pub struct AlertsConfig {
    /// Where alerts are posted (http or https).
    pub webhook: String,
    /// The window p99s and crash loops are computed over.
    pub window: Duration,
    /// This many crashes within `window` is a crash loop.
    pub crash_loop: u64,
    /// How often the fleet is evaluated.
    pub check_every: Duration,
    /// Per delivery attempt.
    pub timeout: Duration,
    /// Retries after a failed attempt (connection error, 5xx, 429).
    pub retries: u32,
    /// Sent with every delivery (e.g. `authorization`).
    pub headers: Vec<(String, String)>,
    /// Names this gateway in the alerts (its hostname).
    pub gateway: String,
    /// The first retry's wait; each next one doubles, up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// Samples a p99 needs before it is compared with a budget.
    pub min_samples: u64,
    /// Alerts waiting for delivery at most.
    pub queue: usize,
}

impl AlertsConfig {
    /// The defaults, posting to `webhook`.
    pub fn new(webhook: impl Into<String>) -> AlertsConfig {
        AlertsConfig {
            webhook: webhook.into(),
            ..AlertsConfig::default()
        }
    }
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            webhook: String::new(),
            window: Duration::from_secs(300),
            crash_loop: 3,
            check_every: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            retries: 5,
            headers: Vec::new(),
            gateway: String::new(),
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            min_samples: 5,
            queue: QUEUE,
        }
    }
}

/// Header values and the webhook's credentials are never printed.
impl std::fmt::Debug for AlertsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertsConfig")
            .field("webhook", &shown(&self.webhook))
            .field("window", &self.window)
            .field("crash_loop", &self.crash_loop)
            .field("check_every", &self.check_every)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("gateway", &self.gateway)
            .finish_non_exhaustive()
    }
}

/// The webhook as it may be logged: scheme, host and port only (its path,
/// query and user info may hold a token).
pub fn shown(webhook: &str) -> String {
    match reqwest::Url::parse(webhook) {
        Ok(url) => match (url.host_str(), url.port()) {
            (Some(host), Some(port)) => format!("{}://{host}:{port}", url.scheme()),
            (Some(host), None) => format!("{}://{host}", url.scheme()),
            _ => "<webhook without a host>".into(),
        },
        Err(_) => "<invalid webhook URL>".into(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(String),
    #[error("cannot build the webhook's HTTP client: {0}")]
    Client(reqwest::Error),
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Failed,
    CrashLoop,
    BudgetExceeded,
    Recovered,
}

impl Event {
    pub fn label(self) -> &'static str {
        match self {
            Event::Failed => "failed",
            Event::CrashLoop => "crash_loop",
            Event::BudgetExceeded => "budget_exceeded",
            Event::Recovered => "recovered",
        }
    }
}

/// The condition an alert is about (for `recovered`: the one that cleared).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    Failed,
    CrashLoop,
    BudgetExceeded,
}

/// One alert, as posted (JSON).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    pub event: Event,
    pub server: String,
    pub owner: Option<String>,
    pub condition: Condition,
    /// A sentence for a human.
    pub detail: String,
    /// The p99 that crossed the budget (for budget alerts), else the worst
    /// measured one, if any.
    pub p99_ms: Option<f64>,
    pub budget_ms: Option<f64>,
    /// Crashes within the window.
    pub crashes: u64,
    pub window_s: f64,
    /// RFC 3339.
    pub at: String,
    /// The gateway that saw it (hostname).
    pub gateway: String,
}

/// Where the alerts read the time: monotonic, since any origin.
pub type Clock = Arc<dyn Fn() -> Duration + Send + Sync>;

/// Latency windows of the servers that have a budget.
type Windows = HashMap<String, Mutex<Window>>;

/// Watches the fleet and posts alerts. Register it with the telemetry
/// (`Telemetry::with`), then [`start`](Alerts::start) it.
pub struct Alerts {
    rules: Rules,
    window: Duration,
    check_every: Duration,
    gateway: String,
    clock: Clock,
    windows: RwLock<Windows>,
    evaluator: Mutex<Evaluator>,
    queue: Queue,
    /// The delivery task's half, until started.
    pending: Mutex<Option<(mpsc::Receiver<Alert>, Target)>>,
    shown: String,
    grace: Duration,
    stats: Arc<Stats>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Alerts {
    /// Checks `config` and builds the HTTP client; starts nothing.
    pub fn new(config: AlertsConfig) -> Result<Alerts, Error> {
        let url = reqwest::Url::parse(&config.webhook)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| {
                Error::Config(format!(
                    "alerts.webhook must be an http(s) URL such as \"https://hooks.example.com/berth\", not {}",
                    shown(&config.webhook)
                ))
            })?;
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let key = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                Error::Config(format!(
                    "alerts.headers: {name:?} is not an HTTP header name"
                ))
            })?;
            let mut value = HeaderValue::from_str(value).map_err(|_| {
                Error::Config(format!(
                    "alerts.headers.{name}: the value is not a valid HTTP header value (no line breaks or control characters)"
                ))
            })?;
            value.set_sensitive(true);
            headers.insert(key, value);
        }
        for (what, zero) in [
            ("window", config.window.is_zero()),
            ("check_every", config.check_every.is_zero()),
            ("timeout", config.timeout.is_zero()),
            ("crash_loop", config.crash_loop == 0),
        ] {
            if zero {
                return Err(Error::Config(format!(
                    "alerts.{what} must be greater than zero"
                )));
            }
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.timeout)
            .build()
            .map_err(Error::Client)?;
        let shown = shown(&config.webhook);
        let target = Target {
            client,
            url,
            shown: shown.clone(),
            headers,
            timeout: config.timeout,
            retries: config.retries,
            retry_base: config.retry_base,
            retry_max: config.retry_max.max(config.retry_base),
        };
        let stats = Arc::new(Stats::default());
        let (queue, rx) = Queue::new(config.queue, stats.clone());
        let origin = Instant::now();
        Ok(Alerts {
            rules: Rules {
                window: config.window,
                crash_loop: config.crash_loop,
                min_samples: config.min_samples,
            },
            window: config.window,
            check_every: config.check_every,
            gateway: config.gateway,
            clock: Arc::new(move || origin.elapsed()),
            windows: RwLock::new(HashMap::new()),
            evaluator: Mutex::new(Evaluator::default()),
            queue,
            pending: Mutex::new(Some((rx, target))),
            shown,
            grace: config.timeout,
            stats,
            stop: watch::Sender::new(false),
            tasks: Mutex::new(Vec::new()),
        })
    }

    /// The same alerts reading the time from `clock` (tests script time).
    pub fn with_clock(mut self, clock: impl Fn() -> Duration + Send + Sync + 'static) -> Alerts {
        self.clock = Arc::new(clock);
        self
    }

    /// The webhook as logged: scheme, host and port.
    pub fn webhook(&self) -> &str {
        &self.shown
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Starts delivery and the evaluation every `check_every` of what
    /// `fleet` returns. Call once, within a Tokio runtime.
    pub fn start(self: &Arc<Self>, fleet: impl Fn() -> Vec<ServerState> + Send + Sync + 'static) {
        let Some((rx, target)) = lock(&self.pending).take() else {
            tracing::warn!("alerts: already started");
            return;
        };
        let mut tasks = lock(&self.tasks);
        tasks.push(tokio::spawn(deliver::run(
            target,
            rx,
            self.stats.clone(),
            self.stop.subscribe(),
        )));
        let weak = Arc::downgrade(self);
        let mut stop = self.stop.subscribe();
        let every = self.check_every;
        tasks.push(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first check one interval after the start, like every other.
            ticks.tick().await;
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = stop.wait_for(|stopped| *stopped) => break,
                }
                let Some(alerts) = weak.upgrade() else { break };
                alerts.evaluate(&fleet());
            }
        }));
    }

    /// Evaluates `states` now: returns the transitions (also logged and
    /// queued for the webhook).
    pub fn evaluate(&self, states: &[ServerState]) -> Vec<Alert> {
        let now = (self.clock)();
        self.track_budgets(states);
        let mut alerts = {
            let windows = self.windows.read().unwrap_or_else(|e| e.into_inner());
            lock(&self.evaluator).evaluate(now, states, &self.rules, |server| {
                windows.get(server).map(|w| lock(w).measure(now))
            })
        };
        let at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        for alert in &mut alerts {
            alert.at.clone_from(&at);
            alert.gateway.clone_from(&self.gateway);
            let owner = alert.owner.as_deref().unwrap_or("no owner");
            if alert.event == Event::Recovered {
                tracing::info!("alert recovered ({owner}): {}", alert.detail);
            } else {
                tracing::warn!("alert {} ({owner}): {}", alert.event.label(), alert.detail);
            }
            self.queue.push(alert.clone());
        }
        alerts
    }

    /// A latency window for each server with a budget, and none for others
    /// (records for them cost a lookup only).
    fn track_budgets(&self, states: &[ServerState]) {
        let budgeted = || states.iter().filter(|s| s.latency_budget.is_some());
        {
            let windows = self.windows.read().unwrap_or_else(|e| e.into_inner());
            let count = budgeted().count();
            if windows.len() == count && budgeted().all(|s| windows.contains_key(&s.server)) {
                return;
            }
        }
        let mut windows = self.windows.write().unwrap_or_else(|e| e.into_inner());
        windows.retain(|name, _| budgeted().any(|s| &s.server == name));
        for s in budgeted() {
            windows
                .entry(s.server.clone())
                .or_insert_with(|| Mutex::new(Window::new(self.window)));
        }
    }

    fn record(&self, server: &str, kind: Kind, value: Duration) {
        let windows = self.windows.read().unwrap_or_else(|e| e.into_inner());
        if let Some(window) = windows.get(server) {
            let now = (self.clock)();
            lock(window).record(now, kind, value);
        }
    }

    /// The p99s of `server` now (servers with a budget only).
    pub fn p99(&self, server: &str) -> (Option<Duration>, Option<Duration>) {
        let windows = self.windows.read().unwrap_or_else(|e| e.into_inner());
        let m: Measure = windows
            .get(server)
            .map(|w| lock(w).measure((self.clock)()))
            .unwrap_or_default();
        (m.calls.map(|q| q.p99), m.first.map(|q| q.p99))
    }

    /// Stops evaluating; what is queued gets up to `timeout` to be sent.
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        let tasks = std::mem::take(&mut *lock(&self.tasks));
        for mut task in tasks {
            if tokio::time::timeout(self.grace, &mut task).await.is_err() {
                task.abort();
                tracing::warn!("alerts: stopped before every alert reached {}", self.shown);
            }
        }
    }
}

impl Observer for Alerts {
    fn request(&self, r: &RequestRecord<'_>) {
        if r.method == Some("tools/call") && r.outcome != Outcome::Refused {
            self.record(r.server, Kind::Call, r.total);
        }
    }

    fn first_result(&self, r: &FirstResult<'_>) {
        self.record(r.server, Kind::FirstResult, r.after);
    }
}

#[cfg(test)]
mod tests;
