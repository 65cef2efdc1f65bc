//! OpenTelemetry traces: one span per MCP request, exported over OTLP/HTTP.
//!
//! The [`OtlpExporter`] is a telemetry [`Observer`]: each request record that
//! carries a sampled trace context becomes an OTLP span ([`span_of`]), queued
//! in memory (bounded: beyond [`ExporterConfig::max_queue`] spans are dropped
//! and counted), and a background task POSTs them in batches (every
//! `interval`, or as soon as `max_batch` are waiting) as protobuf to
//! `{endpoint}/v1/traces`. A batch the collector refuses or cannot take is
//! retried with backoff, then dropped with a warning. Nothing on the request
//! path waits for the network.
//!
//! ```no_run
//! # async fn serve(telemetry: berth_telemetry::Telemetry) -> Result<(), berth_traces::Error> {
//! let config = berth_traces::ExporterConfig::new("http://127.0.0.1:4318", "0.1.0");
//! let exporter = berth_traces::OtlpExporter::start(config)?;
//! let telemetry = telemetry.with(exporter.clone());
//! // ... serve until the shutdown signal ...
//! exporter.shutdown().await; // sends what is queued
//! # Ok(()) }
//! ```

mod span;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use berth_telemetry::{Observer, RequestRecord};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message as _;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

pub use span::{Endpoint, hashed_principal, span_of};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "telemetry.otlp {0:?} is not an http(s) URL; write it like \"http://127.0.0.1:4318\" (/v1/traces is appended)"
    )]
    Endpoint(String),
    #[error("cannot build the OTLP HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// How spans are batched and sent.
#[derive(Debug, Clone)]
pub struct ExporterConfig {
    /// The collector's OTLP/HTTP base URL; spans go to `{endpoint}/v1/traces`.
    pub endpoint: String,
    /// `service.version` of the resource (Berth's version).
    pub service_version: String,
    /// Where Berth is reached, as `server.address`/`server.port` of each span.
    pub server: Endpoint,
    /// A batch is sent at least this often while spans are waiting.
    pub interval: Duration,
    /// A batch holds at most this many spans; a full one is sent at once.
    pub max_batch: usize,
    /// Spans waiting beyond this are dropped (counted in [`Stats::dropped`]).
    pub max_queue: usize,
    /// Tries per batch before it is dropped.
    pub attempts: u32,
    /// The wait before the first retry; doubled at each further one.
    pub backoff: Duration,
    /// One POST may take this long.
    pub timeout: Duration,
    /// At shutdown, what is queued is sent within this (then dropped).
    pub shutdown_timeout: Duration,
}

impl ExporterConfig {
    /// The defaults: batches every second or of 512 spans, at most 8192
    /// waiting, 4 tries 250 ms apart and more.
    pub fn new(endpoint: &str, service_version: &str) -> ExporterConfig {
        ExporterConfig {
            endpoint: endpoint.to_owned(),
            service_version: service_version.to_owned(),
            server: Endpoint::default(),
            interval: Duration::from_secs(1),
            max_batch: 512,
            max_queue: 8192,
            attempts: 4,
            backoff: Duration::from_millis(250),
            timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(5),
        }
    }

    /// `{endpoint}/v1/traces`.
    fn traces_url(&self) -> Result<reqwest::Url, Error> {
        let url = reqwest::Url::parse(&self.endpoint)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| Error::Endpoint(self.endpoint.clone()))?;
        let joined = format!("{}/v1/traces", url.as_str().trim_end_matches('/'));
        reqwest::Url::parse(&joined).map_err(|_| Error::Endpoint(self.endpoint.clone()))
    }
}

/// What the exporter did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Spans the collector accepted.
    pub exported: u64,
    /// Spans dropped: the queue was full, or their batch failed every try.
    pub dropped: u64,
    /// Spans waiting to be sent.
    pub queued: u64,
}

/// Turns request records into spans and sends them to an OTLP collector.
pub struct OtlpExporter {
    config: ExporterConfig,
    url: reqwest::Url,
    http: reqwest::Client,
    queue: Mutex<VecDeque<Span>>,
    /// Woken when a full batch is waiting.
    full: Arc<Notify>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
    exported: AtomicU64,
    dropped: AtomicU64,
    /// Spans dropped for a full queue and not yet reported in the log.
    unreported: AtomicU64,
    /// The last batch failed: further failures are not logged again.
    failing: AtomicBool,
}

impl std::fmt::Debug for OtlpExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpExporter")
            .field("url", &self.url.as_str())
            .field("stats", &self.stats())
            .finish()
    }
}

impl OtlpExporter {
    /// Starts the export task. Call within a Tokio runtime; end with
    /// [`OtlpExporter::shutdown`].
    pub fn start(config: ExporterConfig) -> Result<Arc<OtlpExporter>, Error> {
        let url = config.traces_url()?;
        let http = reqwest::Client::builder().timeout(config.timeout).build()?;
        let exporter = Arc::new(OtlpExporter {
            url,
            http,
            queue: Mutex::new(VecDeque::new()),
            full: Arc::new(Notify::new()),
            stop: watch::channel(false).0,
            task: Mutex::new(None),
            exported: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            unreported: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            config,
        });
        let task = tokio::spawn(run(
            Arc::downgrade(&exporter),
            exporter.full.clone(),
            exporter.stop.subscribe(),
        ));
        *lock(&exporter.task) = Some(task);
        Ok(exporter)
    }

    pub fn stats(&self) -> Stats {
        Stats {
            exported: self.exported.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            queued: lock(&self.queue).len() as u64,
        }
    }

    /// Queues a span (dropping it when the queue is full).
    pub fn push(&self, span: Span) {
        let waiting = {
            let mut queue = lock(&self.queue);
            if queue.len() >= self.config.max_queue {
                drop(queue);
                self.dropped.fetch_add(1, Ordering::Relaxed);
                self.unreported.fetch_add(1, Ordering::Relaxed);
                return;
            }
            queue.push_back(span);
            queue.len()
        };
        if waiting >= self.config.max_batch {
            self.full.notify_one();
        }
    }

    /// Stops the export task and sends what is queued (within
    /// `shutdown_timeout`; what is left then is dropped with a warning).
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        let task = lock(&self.task).take();
        let abort = task.as_ref().map(JoinHandle::abort_handle);
        let flush = async {
            // The task may be sending a batch: it ends after that one.
            if let Some(task) = task {
                let _ = task.await;
            }
            self.send_all().await;
        };
        if tokio::time::timeout(self.config.shutdown_timeout, flush)
            .await
            .is_err()
        {
            if let Some(abort) = abort {
                abort.abort();
            }
            let left = {
                let mut queue = lock(&self.queue);
                let left = queue.len() as u64;
                queue.clear();
                left
            };
            self.dropped.fetch_add(left, Ordering::Relaxed);
            tracing::warn!(
                spans = left,
                "traces: the collector at {} did not take the last spans within {:?}; they were dropped",
                self.url,
                self.config.shutdown_timeout
            );
        }
    }

    /// Sends batches until the queue is empty.
    async fn send_all(&self) {
        loop {
            self.report_drops();
            let batch: Vec<Span> = {
                let mut queue = lock(&self.queue);
                let n = queue.len().min(self.config.max_batch.max(1));
                queue.drain(..n).collect()
            };
            if batch.is_empty() {
                return;
            }
            self.send(batch).await;
        }
    }

    /// Sends one batch, retrying with backoff; drops it after the last try.
    async fn send(&self, spans: Vec<Span>) {
        let count = spans.len() as u64;
        let body = self.request(spans).encode_to_vec();
        let mut wait = self.config.backoff;
        let attempts = self.config.attempts.max(1);
        let mut why = String::new();
        for attempt in 1..=attempts {
            match self.post(body.clone()).await {
                Ok(()) => {
                    self.exported.fetch_add(count, Ordering::Relaxed);
                    if self.failing.swap(false, Ordering::Relaxed) {
                        tracing::info!("traces: the collector at {} takes spans again", self.url);
                    }
                    return;
                }
                Err(Failure::Final(reason)) => {
                    why = reason;
                    break;
                }
                Err(Failure::Retry(reason)) => why = reason,
            }
            if attempt < attempts {
                tokio::time::sleep(wait).await;
                wait = wait.saturating_mul(2);
            }
        }
        self.dropped.fetch_add(count, Ordering::Relaxed);
        if self.failing.swap(true, Ordering::Relaxed) {
            tracing::debug!(spans = count, "traces: dropped another batch ({why})");
        } else {
            tracing::warn!(
                spans = count,
                "traces: dropped a batch the collector at {} did not take after {attempts} tries ({why}); check [telemetry] otlp and that the collector is up (further failures are logged at debug level)",
                self.url
            );
        }
    }

    async fn post(&self, body: Vec<u8>) -> Result<(), Failure> {
        let response = self
            .http
            .post(self.url.clone())
            .header("content-type", "application/x-protobuf")
            .body(body)
            .send()
            .await
            .map_err(|e| Failure::Retry(format!("{e}")))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let reason = format!("HTTP {status}");
        // OTLP/HTTP: only these mean "try again later".
        match status.as_u16() {
            429 | 502 | 503 | 504 => Err(Failure::Retry(reason)),
            _ => Err(Failure::Final(reason)),
        }
    }

    fn request(&self, spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        span::text("service.name", "berth"),
                        span::text("service.version", &self.config.service_version),
                    ],
                    ..Resource::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "berth".to_owned(),
                        version: self.config.service_version.clone(),
                        ..InstrumentationScope::default()
                    }),
                    spans,
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        }
    }

    /// Logs spans dropped for a full queue since the last report.
    fn report_drops(&self) {
        let dropped = self.unreported.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(
                spans = dropped,
                "traces: the span queue was full ({} spans) and spans were dropped; the collector at {} is slow or down",
                self.config.max_queue,
                self.url
            );
        }
    }
}

enum Failure {
    Retry(String),
    Final(String),
}

impl Observer for OtlpExporter {
    fn request(&self, record: &RequestRecord<'_>) {
        if let Some(span) = span_of(record, &self.config.server) {
            self.push(span);
        }
    }
}

/// The export task: a batch every `interval`, or as soon as one is full.
async fn run(
    exporter: std::sync::Weak<OtlpExporter>,
    full: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(interval) = exporter.upgrade().map(|e| e.config.interval) else {
        return;
    };
    let mut ticks = tokio::time::interval(interval.max(Duration::from_millis(10)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = full.notified() => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        // Not held while waiting: a dropped exporter ends the task.
        let Some(current) = exporter.upgrade() else {
            return;
        };
        current.send_all().await;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
