//! Delivery: alerts wait in a bounded queue and one background task posts
//! them to the webhook in order, retrying with backoff what may succeed
//! later (no connection, a timeout, 5xx, 429).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use tokio::sync::{mpsc, watch};

use crate::Alert;

/// Counts of what became of the alerts.
#[derive(Debug, Default)]
pub struct Stats {
    delivered: AtomicU64,
    retried: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

impl Stats {
    /// Alerts the webhook accepted (2xx).
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }
    /// Attempts that were retried.
    pub fn retried(&self) -> u64 {
        self.retried.load(Ordering::Relaxed)
    }
    /// Alerts given up on (refused with a 4xx, or retries exhausted).
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
    /// Alerts dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// How to post.
#[derive(Clone)]
pub struct Target {
    pub client: reqwest::Client,
    pub url: reqwest::Url,
    /// The webhook as logged: scheme, host and port, never its credentials.
    pub shown: String,
    pub headers: HeaderMap,
    pub timeout: Duration,
    pub retries: u32,
    pub retry_base: Duration,
    pub retry_max: Duration,
}

impl Target {
    /// The wait before retry number `attempt` (0-based): base × 2^attempt,
    /// at most `retry_max`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        self.retry_base
            .saturating_mul(1u32 << attempt.min(20))
            .min(self.retry_max)
    }
}

/// The sending half: never waits.
pub struct Queue {
    tx: mpsc::Sender<Alert>,
    stats: Arc<Stats>,
}

impl Queue {
    pub fn new(capacity: usize, stats: Arc<Stats>) -> (Queue, mpsc::Receiver<Alert>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (Queue { tx, stats }, rx)
    }

    /// Queues `alert`, or drops it (counted, logged) when the queue is full.
    pub fn push(&self, alert: Alert) {
        match self.tx.try_send(alert) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(alert)) => {
                let dropped = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(
                    "alerts: queue full (the webhook is slow or down), dropped {} for `{}` ({dropped} dropped so far)",
                    alert.event.label(),
                    alert.server
                );
            }
            Err(mpsc::error::TrySendError::Closed(alert)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    "alerts: stopped, {} for `{}` not sent",
                    alert.event.label(),
                    alert.server
                );
            }
        }
    }
}

/// Posts queued alerts until `stop`; then sends what is already queued and
/// returns.
pub async fn run(
    target: Target,
    mut rx: mpsc::Receiver<Alert>,
    stats: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let alert = tokio::select! {
            biased;
            alert = rx.recv() => match alert {
                Some(alert) => alert,
                None => break,
            },
            _ = stop.wait_for(|stopped| *stopped) => match rx.try_recv() {
                Ok(alert) => alert,
                Err(_) => break,
            },
        };
        deliver(&target, &alert, &stats).await;
    }
}

enum Attempt {
    Done,
    Refused(String),
    Retry(String, Option<Duration>),
}

async fn attempt(target: &Target, body: &[u8]) -> Attempt {
    let sent = target
        .client
        .post(target.url.clone())
        .headers(target.headers.clone())
        .header(CONTENT_TYPE, "application/json")
        .timeout(target.timeout)
        .body(body.to_vec())
        .send()
        .await;
    match sent {
        Ok(response) => {
            let status = response.status();
            if status.is_success() {
                return Attempt::Done;
            }
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            if status.is_server_error() || status.as_u16() == 429 {
                Attempt::Retry(format!("HTTP {status}"), retry_after)
            } else {
                Attempt::Refused(format!("HTTP {status}"))
            }
        }
        // The URL may carry credentials: errors are logged without it.
        Err(e) => Attempt::Retry(e.without_url().to_string(), None),
    }
}

/// Posts one alert, with up to `retries` retries.
pub async fn deliver(target: &Target, alert: &Alert, stats: &Stats) -> bool {
    let body = match serde_json::to_vec(alert) {
        Ok(body) => body,
        Err(e) => {
            tracing::error!("alerts: cannot encode an alert: {e}");
            return false;
        }
    };
    let what = format!("{} alert for `{}`", alert.event.label(), alert.server);
    let mut tries = 0u32;
    loop {
        match attempt(target, &body).await {
            Attempt::Done => {
                stats.delivered.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("alerts: {what} delivered to {}", target.shown);
                return true;
            }
            Attempt::Refused(why) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    "alerts: {} refused the {what} ({why}); not retried: check [alerts] webhook and headers",
                    target.shown
                );
                return false;
            }
            Attempt::Retry(why, _) if tries >= target.retries => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    "alerts: the {what} was not delivered to {} after {} attempts (last: {why}); it is dropped",
                    target.shown,
                    tries + 1
                );
                return false;
            }
            Attempt::Retry(why, retry_after) => {
                let wait =
                    retry_after.map_or_else(|| target.backoff(tries), |r| r.min(target.retry_max));
                stats.retried.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    "alerts: {} did not take the {what} ({why}); retrying in {wait:?}",
                    target.shown
                );
                tries += 1;
                tokio::time::sleep(wait).await;
            }
        }
    }
}
