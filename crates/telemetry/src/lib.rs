//! Telemetry: what the gateway did, reported once and consumed by several
//! observers — the Prometheus [`Metrics`], the usage meter, alerts.
//!
//! The edge and the fleet describe events as borrowed records
//! ([`RequestRecord`], [`SessionOpened`]...) and hand them to [`Telemetry`],
//! which passes each to every [`Observer`] in turn. Observers count in
//! memory; whatever writes to disk or the network does so off the request
//! path.

pub mod metrics;
mod record;

use std::sync::Arc;

pub use metrics::Metrics;
pub use record::*;

/// The metrics and every other observer, fed together.
pub struct Telemetry {
    metrics: Option<Arc<Metrics>>,
    observers: Vec<Arc<dyn Observer>>,
    counts: Vec<CountSource>,
}

/// Reads a component's own counts (for `/metrics`).
pub type CountSource = Arc<dyn Fn() -> Vec<metrics::ComponentCount> + Send + Sync>;

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry::new()
    }
}

impl Telemetry {
    pub fn new() -> Telemetry {
        let metrics = Arc::new(Metrics::new());
        Telemetry {
            observers: vec![metrics.clone()],
            metrics: Some(metrics),
            counts: Vec::new(),
        }
    }

    /// Without Prometheus metrics (`[telemetry] metrics = false`): only the
    /// observers added.
    pub fn without_metrics() -> Telemetry {
        Telemetry {
            metrics: None,
            observers: Vec::new(),
            counts: Vec::new(),
        }
    }

    /// Whether anything observes: with nothing, the gateway need not
    /// build records at all.
    pub fn is_active(&self) -> bool {
        !self.observers.is_empty()
    }

    /// Adds an observer (the usage meter, alerts...).
    pub fn with(mut self, observer: Arc<dyn Observer>) -> Telemetry {
        self.observers.push(observer);
        self
    }

    /// Adds a component's own counts to what `/metrics` shows.
    pub fn with_counts(mut self, source: CountSource) -> Telemetry {
        self.counts.push(source);
        self
    }

    /// Every component's counts now.
    pub fn counts(&self) -> Vec<metrics::ComponentCount> {
        self.counts.iter().flat_map(|source| source()).collect()
    }

    pub fn metrics(&self) -> Option<&Metrics> {
        self.metrics.as_deref()
    }
}

impl Observer for Telemetry {
    fn request(&self, r: &RequestRecord<'_>) {
        self.observers.iter().for_each(|o| o.request(r));
    }
    fn session_opened(&self, r: &SessionOpened<'_>) {
        self.observers.iter().for_each(|o| o.session_opened(r));
    }
    fn session_ended(&self, r: &SessionEnded<'_>) {
        self.observers.iter().for_each(|o| o.session_ended(r));
    }
    fn first_result(&self, r: &FirstResult<'_>) {
        self.observers.iter().for_each(|o| o.first_result(r));
    }
    fn auth_refused(&self, r: &AuthRefusal<'_>) {
        self.observers.iter().for_each(|o| o.auth_refused(r));
    }
    fn process_sample(&self, r: &ProcessSample<'_>) {
        self.observers.iter().for_each(|o| o.process_sample(r));
    }
}
