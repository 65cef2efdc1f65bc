//! The conditions of each server, re-evaluated from its fleet state and its
//! latency window at every check; an alert is made only when a condition
//! starts or clears.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use berth_telemetry::ServerState;

use crate::window::{Kind, Measure, Quantile};
use crate::{Alert, Condition, Event};

/// Crash counter samples kept per server at most (a window much longer
/// than the check interval): beyond it the oldest go, and the window
/// looks a little shorter.
const MAX_CRASH_SAMPLES: usize = 4096;

/// The thresholds, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub window: Duration,
    pub crash_loop: u64,
    pub min_samples: u64,
}

#[derive(Default)]
struct Tracked {
    owner: Option<String>,
    failed: bool,
    /// (when, crash counter) at each check, the oldest at or before the
    /// window's start.
    crashes: VecDeque<(Duration, u64)>,
    /// When the crash loop was last seen, while it is open.
    looping: Option<Duration>,
    /// The measure that went over budget, while it is open.
    over: Option<Kind>,
    last_check: Duration,
}

impl Tracked {
    /// Crashes within the window ending at `now`, after noting `counter`.
    fn crashes_in_window(&mut self, now: Duration, counter: u64, window: Duration) -> u64 {
        if self.crashes.is_empty() {
            // First seen: the server started (with the gateway, or added by
            // a reload) less than a check ago, its counter from zero.
            self.crashes.push_back((now, 0));
        }
        if self.crashes.back().is_some_and(|(_, c)| *c > counter) {
            // The counter went back: the server was replaced (a reload),
            // its crashes count from zero since the last check.
            self.crashes.clear();
            self.crashes.push_back((self.last_check, 0));
        }
        self.crashes.push_back((now, counter));
        if let Some(start) = now.checked_sub(window) {
            while self.crashes.get(1).is_some_and(|(t, _)| *t <= start) {
                self.crashes.pop_front();
            }
        }
        while self.crashes.len() > MAX_CRASH_SAMPLES {
            self.crashes.pop_front();
        }
        let base = self.crashes.front().map_or(counter, |(_, c)| *c);
        counter.saturating_sub(base)
    }
}

/// Every server's open conditions.
#[derive(Default)]
pub struct Evaluator {
    servers: BTreeMap<String, Tracked>,
}

/// How a server compares with its budget over the window.
enum Budget {
    /// This measure's p99 is over (with enough samples).
    Over(Kind, Quantile),
    /// Measured, and nothing over.
    Under,
    /// Too few samples to tell.
    Unknown,
}

fn compare(measure: &Measure, budget: Duration, min_samples: u64) -> Budget {
    let mut measured = false;
    for kind in [Kind::Call, Kind::FirstResult] {
        if let Some(q) = measure.get(kind).filter(|q| q.count >= min_samples) {
            if q.p99 > budget {
                return Budget::Over(kind, q);
            }
            measured = true;
        }
    }
    if measured {
        Budget::Under
    } else {
        Budget::Unknown
    }
}

/// The measure that fired, read again: is it back under budget?
fn cleared(measure: &Measure, kind: Kind, budget: Duration, min_samples: u64) -> Option<Quantile> {
    measure
        .get(kind)
        .filter(|q| q.count >= min_samples && q.p99 <= budget)
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

impl Evaluator {
    /// Evaluates `states` at `now` (monotonic); `measure` gives a server's
    /// latency window. Returns the transitions, without `at`/`gateway`.
    pub fn evaluate(
        &mut self,
        now: Duration,
        states: &[ServerState],
        rules: &Rules,
        measure: impl Fn(&str) -> Option<Measure>,
    ) -> Vec<Alert> {
        let mut alerts = Vec::new();
        if states.is_empty() {
            // A gateway always has a server: nothing is a gateway going
            // away, not every server removed.
            return alerts;
        }
        let window_s = rules.window.as_secs_f64();
        for state in states {
            let name = &state.server;
            let t = self.servers.entry(name.clone()).or_insert_with(|| Tracked {
                last_check: now,
                ..Tracked::default()
            });
            t.owner = state.owner.clone();
            let crashes = t.crashes_in_window(now, state.crashes, rules.window);
            let m = measure(name).unwrap_or_default();
            let budget_ms = state.latency_budget.map(ms);
            let worst = [m.calls, m.first]
                .into_iter()
                .flatten()
                .filter(|q| q.count >= rules.min_samples)
                .map(|q| q.p99)
                .max()
                .map(ms);
            let alert = |event, condition, detail: String, p99_ms: Option<f64>| Alert {
                event,
                server: name.clone(),
                owner: state.owner.clone(),
                condition,
                detail,
                p99_ms,
                budget_ms,
                crashes,
                window_s,
                at: String::new(),
                gateway: String::new(),
            };

            if state.failed && !t.failed {
                t.failed = true;
                alerts.push(alert(
                    Event::Failed,
                    Condition::Failed,
                    format!(
                        "server `{name}` failed: Berth stopped restarting it after repeated crashes ({} in total); see `berth logs {name}`, fix it, then run `berth restart {name}`",
                        state.crashes
                    ),
                    worst,
                ));
            } else if !state.failed && t.failed {
                t.failed = false;
                alerts.push(alert(
                    Event::Recovered,
                    Condition::Failed,
                    format!("server `{name}` is no longer failed: it is served again"),
                    worst,
                ));
            }

            if crashes >= rules.crash_loop {
                if t.looping.is_none() {
                    alerts.push(alert(
                        Event::CrashLoop,
                        Condition::CrashLoop,
                        format!(
                            "server `{name}` crashed {crashes} times within {} (the alert is at {}); see `berth logs {name}`",
                            human(rules.window),
                            rules.crash_loop
                        ),
                        worst,
                    ));
                }
                t.looping = Some(now);
            } else if let Some(seen) = t.looping
                && now.saturating_sub(seen) >= rules.window
            {
                t.looping = None;
                alerts.push(alert(
                    Event::Recovered,
                    Condition::CrashLoop,
                    format!(
                        "server `{name}` has not crash-looped for {} ({crashes} crashes within it)",
                        human(rules.window)
                    ),
                    worst,
                ));
            }

            match state.latency_budget {
                Some(budget) => match (t.over, compare(&m, budget, rules.min_samples)) {
                    (None, Budget::Over(kind, q)) => {
                        t.over = Some(kind);
                        alerts.push(alert(
                            Event::BudgetExceeded,
                            Condition::BudgetExceeded,
                            format!(
                                "p99 {} of server `{name}` is {} ms over the last {} ({} {}), over its {} ms budget",
                                kind.describe(),
                                ms(q.p99),
                                human(rules.window),
                                q.count,
                                kind.unit(q.count),
                                ms(budget)
                            ),
                            Some(ms(q.p99)),
                        ));
                    }
                    // The other measure is over now: still over budget.
                    (Some(_), Budget::Over(kind, _)) => t.over = Some(kind),
                    (Some(kind), _) => {
                        if let Some(q) = cleared(&m, kind, budget, rules.min_samples) {
                            t.over = None;
                            alerts.push(alert(
                                Event::Recovered,
                                Condition::BudgetExceeded,
                                format!(
                                    "p99 {} of server `{name}` is back within its {} ms budget: {} ms over the last {} ({} {})",
                                    kind.describe(),
                                    ms(budget),
                                    ms(q.p99),
                                    human(rules.window),
                                    q.count,
                                    kind.unit(q.count)
                                ),
                                Some(ms(q.p99)),
                            ));
                        }
                    }
                    (None, _) => {}
                },
                None => {
                    if t.over.take().is_some() {
                        alerts.push(alert(
                            Event::Recovered,
                            Condition::BudgetExceeded,
                            format!("server `{name}` no longer has a latency budget"),
                            worst,
                        ));
                    }
                }
            }
            t.last_check = now;
        }

        // Servers gone from the configuration: what was open is closed.
        let gone: Vec<String> = self
            .servers
            .keys()
            .filter(|name| !states.iter().any(|s| &s.server == *name))
            .cloned()
            .collect();
        for name in gone {
            let Some(t) = self.servers.remove(&name) else {
                continue;
            };
            let open = [
                (t.failed, Condition::Failed),
                (t.looping.is_some(), Condition::CrashLoop),
                (t.over.is_some(), Condition::BudgetExceeded),
            ];
            for (_, condition) in open.into_iter().filter(|(open, _)| *open) {
                alerts.push(Alert {
                    event: Event::Recovered,
                    server: name.clone(),
                    owner: t.owner.clone(),
                    condition,
                    detail: format!("server `{name}` was removed from the configuration"),
                    p99_ms: None,
                    budget_ms: None,
                    crashes: 0,
                    window_s,
                    at: String::new(),
                    gateway: String::new(),
                });
            }
        }
        alerts
    }
}
