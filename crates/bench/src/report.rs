//! Latency recording (an HDR histogram at microsecond resolution) and the
//! summaries printed as text, Markdown and JSON.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Largest latency the histogram tracks exactly (one hour); larger values
/// are recorded as this.
const HIGHEST_TRACKABLE_US: u64 = 3_600_000_000;

/// How many error messages are kept for the report.
const KEPT_ERRORS: usize = 3;

/// One session's latency, and the phases it is made of (in order).
pub struct Sample {
    pub total: Duration,
    pub phases: Vec<(&'static str, Duration)>,
}

/// Latencies of successful sessions (in all and per phase) and the failures.
pub struct Recorder {
    histogram: Histogram<u64>,
    phases: Vec<(&'static str, Histogram<u64>)>,
    errors: u64,
    first_errors: Vec<String>,
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_TRACKABLE_US, 3).expect("valid histogram bounds")
}

fn record_into(histogram: &mut Histogram<u64>, latency: Duration) {
    let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    histogram.saturating_record(micros.max(1));
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            histogram: new_histogram(),
            phases: Vec::new(),
            errors: 0,
            first_errors: Vec::new(),
        }
    }
}

impl Recorder {
    pub fn record(&mut self, sample: &Sample) {
        record_into(&mut self.histogram, sample.total);
        for &(name, latency) in &sample.phases {
            let index = match self.phases.iter().position(|(n, _)| *n == name) {
                Some(index) => index,
                None => {
                    self.phases.push((name, new_histogram()));
                    self.phases.len() - 1
                }
            };
            record_into(&mut self.phases[index].1, latency);
        }
    }

    pub fn error(&mut self, error: &anyhow::Error) {
        self.errors += 1;
        if self.first_errors.len() < KEPT_ERRORS {
            self.first_errors.push(format!("{error:#}"));
        }
    }

    pub fn summary(&self) -> Summary {
        let h = &self.histogram;
        let some = |v: u64| (!h.is_empty()).then_some(v);
        Summary {
            ok: h.len(),
            errors: self.errors,
            min_us: some(h.min()),
            p50_us: some(h.value_at_quantile(0.50)),
            p90_us: some(h.value_at_quantile(0.90)),
            p99_us: some(h.value_at_quantile(0.99)),
            max_us: some(h.max()),
            mean_us: (!h.is_empty()).then(|| h.mean()),
            phases: self
                .phases
                .iter()
                .map(|(name, h)| Phase {
                    name,
                    p50_us: h.value_at_quantile(0.50),
                    p99_us: h.value_at_quantile(0.99),
                })
                .collect(),
            first_errors: self.first_errors.clone(),
        }
    }
}

/// Where the time of a session goes.
#[derive(Debug, Clone)]
pub struct Phase {
    pub name: &'static str,
    pub p50_us: u64,
    pub p99_us: u64,
}

/// Percentiles are `None` when no session succeeded.
#[derive(Debug, Clone)]
pub struct Summary {
    pub ok: u64,
    pub errors: u64,
    pub min_us: Option<u64>,
    pub p50_us: Option<u64>,
    pub p90_us: Option<u64>,
    pub p99_us: Option<u64>,
    pub max_us: Option<u64>,
    pub mean_us: Option<f64>,
    pub phases: Vec<Phase>,
    pub first_errors: Vec<String>,
}

impl Summary {
    /// One line: `p50 … p90 … p99 … max … mean … errors N`.
    pub fn line(&self) -> String {
        format!(
            "p50 {}  p90 {}  p99 {}  max {}  mean {}  (min {})  ok {}  errors {}",
            ms(self.p50_us),
            ms(self.p90_us),
            ms(self.p99_us),
            ms(self.max_us),
            ms(self.mean_us.map(|m| m.round() as u64)),
            ms(self.min_us),
            self.ok,
            self.errors
        )
    }

    /// `phases p50/p99: initialize 1.20/2.10 ms, …`, empty without samples.
    pub fn phases_line(&self) -> String {
        if self.phases.is_empty() {
            return String::new();
        }
        let phases: Vec<String> = self
            .phases
            .iter()
            .map(|p| {
                format!(
                    "{} {:.2}/{:.2} ms",
                    p.name,
                    p.p50_us as f64 / 1000.0,
                    p.p99_us as f64 / 1000.0
                )
            })
            .collect();
        format!("phases p50/p99: {}", phases.join(", "))
    }

    /// The fields of a JSON report (latencies in microseconds).
    pub fn json_fields(&self) -> serde_json::Map<String, Value> {
        let value = json!({
            "ok": self.ok,
            "errors": self.errors,
            "min_us": self.min_us,
            "p50_us": self.p50_us,
            "p90_us": self.p90_us,
            "p99_us": self.p99_us,
            "max_us": self.max_us,
            "mean_us": self.mean_us.map(|m| (m * 10.0).round() / 10.0),
            "phases": self
                .phases
                .iter()
                .map(|p| (p.name.to_string(), json!({ "p50_us": p.p50_us, "p99_us": p.p99_us })))
                .collect::<serde_json::Map<String, Value>>(),
            "first_errors": self.first_errors,
        });
        match value {
            Value::Object(map) => map,
            _ => unreachable!("json! of an object"),
        }
    }
}

/// Microseconds as milliseconds with two decimals, `–` when absent.
pub fn ms(micros: Option<u64>) -> String {
    match micros {
        Some(us) => format!("{:.2} ms", us as f64 / 1000.0),
        None => "–".to_string(),
    }
}

/// A Markdown table with a header row.
pub fn markdown_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = String::new();
    let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
    out.push_str(&line(
        &header.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
    ));
    out.push_str(&line(&vec!["---".to_string(); header.len()]));
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

/// The machine a run was on (CPU model and count, kernel), for the JSON reports.
pub(crate) fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|t| {
        t.lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
    });
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "cpu": cpu,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_recorded_latencies() {
        let mut recorder = Recorder::default();
        for ms in 1..=100 {
            recorder.record(&Sample {
                total: Duration::from_millis(ms),
                phases: vec![
                    ("first", Duration::from_millis(ms / 2)),
                    ("second", Duration::from_millis(ms - ms / 2)),
                ],
            });
        }
        recorder.error(&anyhow::anyhow!("boom"));
        let s = recorder.summary();
        assert_eq!((s.ok, s.errors), (100, 1));
        // Three significant digits: within 0.1 %.
        let near = |v: Option<u64>, want: u64| v.unwrap().abs_diff(want) <= want / 1000;
        assert!(near(s.p50_us, 50_000), "{s:?}");
        assert!(near(s.p99_us, 99_000), "{s:?}");
        assert!(near(s.max_us, 100_000), "{s:?}");
        assert!(near(s.min_us, 1_000), "{s:?}");
        assert_eq!(s.first_errors, vec!["boom".to_string()]);
        let names: Vec<&str> = s.phases.iter().map(|p| p.name).collect();
        assert_eq!(names, ["first", "second"]);
        assert!(near(Some(s.phases[1].p50_us), 25_000), "{s:?}");
        assert!(
            s.phases_line().starts_with("phases p50/p99: first 25."),
            "{}",
            s.phases_line()
        );
        assert!(s.json_fields()["phases"]["second"]["p99_us"].is_number());
    }

    #[test]
    fn empty_summary_has_no_percentiles() {
        let s = Recorder::default().summary();
        assert_eq!(s.p50_us, None);
        assert_eq!(ms(s.p50_us), "–");
        assert_eq!(s.json_fields()["p50_us"], Value::Null);
    }

    #[test]
    fn markdown() {
        let table = markdown_table(&["a", "b"], &[vec!["1".into(), "2".into()]]);
        assert_eq!(table, "| a | b |\n| --- | --- |\n| 1 | 2 |\n");
        assert_eq!(ms(Some(312_450)), "312.45 ms");
    }
}
