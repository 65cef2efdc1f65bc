//! The three models applied to a projection or to recorded usage.

use serde::{Deserialize, Serialize};

use crate::prices::non_negative;
use crate::{CostError, Prices, UsageReport};

/// A pricing model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Model {
    /// Billed per connection-hour (a session held open for an hour).
    PerConnection,
    /// Billed per tool call.
    PerRequest,
    /// Hosting included with the compute it runs on.
    Compute,
}

impl Model {
    /// Every model, in the order tables, legends and ties use.
    pub const ALL: [Model; 3] = [Model::PerConnection, Model::PerRequest, Model::Compute];

    /// The model's name for people.
    pub fn label(self) -> &'static str {
        match self {
            Model::PerConnection => "per-connection",
            Model::PerRequest => "per-request",
            Model::Compute => "included with compute",
        }
    }
}

/// Expected load: how many agents, how many tool servers each holds a
/// session with, how often they call tools, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Projection {
    /// Concurrent agents.
    pub agents: f64,
    /// Tool servers per agent: each agent holds one session per server.
    pub tools_per_agent: f64,
    /// Tool calls one agent makes per hour (over all its servers).
    pub calls_per_agent_hour: f64,
    /// Hours the sessions are held open (the period costed).
    pub session_hours: f64,
}

impl Projection {
    /// Refuses a negative or non-finite figure, naming it.
    pub fn validate(&self) -> Result<(), CostError> {
        non_negative("agents", self.agents)?;
        non_negative("tools per agent", self.tools_per_agent)?;
        non_negative("calls per agent-hour", self.calls_per_agent_hour)?;
        non_negative("session hours", self.session_hours)?;
        Ok(())
    }
}

/// What the figures are for.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum Basis {
    /// A usage report.
    Usage {
        since: String,
        until: String,
        by: String,
        rows: usize,
        /// Where the agent count the chart scales from came from.
        agents_from: AgentsFrom,
    },
    /// A projection.
    Projection(Projection),
}

/// Where a usage report's agent count came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentsFrom {
    /// The distinct principals of its rows.
    Principals,
    /// Given by the caller (`--recorded-agents`).
    Given,
    /// Nothing said: the recorded load counts as one agent.
    Assumed,
}

/// The amounts the models bill, over the whole period.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Quantities {
    /// Sessions (started, for usage; held at once, for a projection).
    pub sessions: f64,
    /// Hours sessions were held open, summed over sessions.
    pub connection_hours: f64,
    pub tool_calls: f64,
    /// vCPU-hours of the sessions' servers (used, for usage; reserved, for a projection).
    pub session_vcpu_hours: f64,
    /// GiB-hours of the sessions' servers.
    pub session_gib_hours: f64,
    /// vCPU-hours the gateway host holds over the period.
    pub gateway_vcpu_hours: f64,
    /// GiB-hours the gateway host holds over the period.
    pub gateway_gib_hours: f64,
}

/// A model's cost as a function of the agent count: `fixed + per_agent × agents`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Line {
    pub fixed: f64,
    pub per_agent: f64,
}

impl Line {
    /// USD for `agents` agents.
    pub fn at(&self, agents: f64) -> f64 {
        self.fixed + self.per_agent * agents
    }
}

/// Each model's line.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Lines {
    pub per_connection: Line,
    pub per_request: Line,
    pub compute: Line,
}

impl Lines {
    pub fn get(&self, model: Model) -> Line {
        match model {
            Model::PerConnection => self.per_connection,
            Model::PerRequest => self.per_request,
            Model::Compute => self.compute,
        }
    }

    /// The cheapest model at `agents` (the first in [`Model::ALL`] on a tie).
    pub fn cheapest_at(&self, agents: f64) -> Model {
        cheapest(Model::ALL.map(|m| (m, self.get(m).at(agents))))
    }
}

/// An agent count where two models cost the same.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Crossover {
    pub agents: f64,
    /// USD both models cost there.
    pub cost: f64,
    pub between: [Model; 2],
    /// Which of the two is cheaper with fewer agents...
    pub cheaper_below: Model,
    /// ...and which with more.
    pub cheaper_above: Model,
}

/// A range of agent counts over which one model is the cheapest.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stretch {
    pub from: f64,
    pub to: f64,
    pub cheapest: Model,
}

/// The three models applied to one input.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Costs {
    pub basis: Basis,
    /// The agent count the totals are for (recorded or projected).
    pub agents: f64,
    /// Hours the totals cover.
    pub period_hours: f64,
    pub prices: Prices,
    pub quantities: Quantities,
    /// USD under the per-connection model.
    pub per_connection: f64,
    /// USD under the per-request model.
    pub per_request: f64,
    /// USD under the included-with-compute model (sessions plus the gateway host).
    pub compute: f64,
    pub cheapest: Model,
    /// Each model as a line in the agent count, for other agent counts.
    pub lines: Lines,
    /// Every agent count above zero where two lines cross, fewest agents first.
    pub crossovers: Vec<Crossover>,
}

impl Costs {
    /// The three models applied to a projection: sessions = N×T,
    /// connection-hours = N×T×H, calls = N×C×H, compute = N×T×H session-hours
    /// at the per-session reservation plus H hours of the gateway host.
    pub fn project(projection: &Projection, prices: &Prices) -> Result<Costs, CostError> {
        projection.validate()?;
        prices.validate()?;
        let Projection {
            agents: n,
            tools_per_agent: t,
            calls_per_agent_hour: c,
            session_hours: h,
        } = *projection;
        let quantities = Quantities {
            sessions: n * t,
            connection_hours: n * t * h,
            tool_calls: n * c * h,
            session_vcpu_hours: n * t * h * prices.vcpu_per_session,
            session_gib_hours: n * t * h * prices.gib_per_session,
            gateway_vcpu_hours: h * prices.gateway_vcpu,
            gateway_gib_hours: h * prices.gateway_gib,
        };
        let lines = Lines {
            per_connection: Line {
                fixed: 0.0,
                per_agent: t * h * prices.per_connection_hour,
            },
            per_request: Line {
                fixed: 0.0,
                per_agent: c * h / 1000.0 * prices.per_1000_calls,
            },
            compute: Line {
                fixed: h * prices.gateway_compute_hour(),
                per_agent: t * h * prices.session_compute_hour(),
            },
        };
        Ok(Costs::new(
            Basis::Projection(*projection),
            n,
            h,
            prices,
            quantities,
            lines,
        ))
    }

    /// The three models applied to recorded usage. The agent count the
    /// lines scale from is `recorded_agents`, else the report's distinct
    /// principals, else 1 (the recorded load as a unit).
    pub fn from_usage(
        report: &UsageReport,
        recorded_agents: Option<f64>,
        prices: &Prices,
    ) -> Result<Costs, CostError> {
        prices.validate()?;
        report.validate()?;
        let period = report.period_hours()?;
        let (agents, agents_from) = match recorded_agents {
            Some(n) => {
                non_negative("recorded agents", n)?;
                if n == 0.0 {
                    return Err(CostError::Usage(
                        "recorded agents must be more than 0: the usage came from someone".into(),
                    ));
                }
                (n, AgentsFrom::Given)
            }
            None => match report.principals() {
                0 => (1.0, AgentsFrom::Assumed),
                n => (n as f64, AgentsFrom::Principals),
            },
        };
        let sum = |f: fn(&crate::UsageRow) -> f64| report.rows.iter().map(f).sum::<f64>();
        let quantities = Quantities {
            sessions: sum(|r| r.sessions as f64),
            connection_hours: sum(|r| r.session_seconds) / 3600.0,
            tool_calls: sum(|r| r.tool_calls as f64),
            session_vcpu_hours: sum(|r| r.cpu_seconds) / 3600.0,
            session_gib_hours: sum(|r| r.memory_gib_seconds) / 3600.0,
            gateway_vcpu_hours: period * prices.gateway_vcpu,
            gateway_gib_hours: period * prices.gateway_gib,
        };
        let q = &quantities;
        let lines = Lines {
            per_connection: Line {
                fixed: 0.0,
                per_agent: q.connection_hours * prices.per_connection_hour / agents,
            },
            per_request: Line {
                fixed: 0.0,
                per_agent: q.tool_calls / 1000.0 * prices.per_1000_calls / agents,
            },
            compute: Line {
                fixed: q.gateway_vcpu_hours * prices.per_vcpu_hour
                    + q.gateway_gib_hours * prices.per_gib_hour,
                per_agent: (q.session_vcpu_hours * prices.per_vcpu_hour
                    + q.session_gib_hours * prices.per_gib_hour)
                    / agents,
            },
        };
        let basis = Basis::Usage {
            since: report.since.clone(),
            until: report.until.clone(),
            by: report.by.clone(),
            rows: report.rows.len(),
            agents_from,
        };
        Ok(Costs::new(basis, agents, period, prices, quantities, lines))
    }

    fn new(
        basis: Basis,
        agents: f64,
        period_hours: f64,
        prices: &Prices,
        quantities: Quantities,
        lines: Lines,
    ) -> Costs {
        let q = &quantities;
        let per_connection = q.connection_hours * prices.per_connection_hour;
        let per_request = q.tool_calls / 1000.0 * prices.per_1000_calls;
        let compute = (q.session_vcpu_hours + q.gateway_vcpu_hours) * prices.per_vcpu_hour
            + (q.session_gib_hours + q.gateway_gib_hours) * prices.per_gib_hour;
        let cheapest = cheapest([
            (Model::PerConnection, per_connection),
            (Model::PerRequest, per_request),
            (Model::Compute, compute),
        ]);
        Costs {
            basis,
            agents,
            period_hours,
            prices: *prices,
            quantities,
            per_connection,
            per_request,
            compute,
            cheapest,
            lines,
            crossovers: crossovers(&lines),
        }
    }

    /// USD under `model`.
    pub fn total(&self, model: Model) -> f64 {
        match model {
            Model::PerConnection => self.per_connection,
            Model::PerRequest => self.per_request,
            Model::Compute => self.compute,
        }
    }

    /// Which model is cheapest where, from `from` to `to` agents.
    pub fn stretches(&self, from: f64, to: f64) -> Vec<Stretch> {
        let mut points = vec![from];
        points.extend(
            self.crossovers
                .iter()
                .map(|c| c.agents)
                .filter(|&n| n > from && n < to),
        );
        points.push(to);
        if to <= from {
            return vec![Stretch {
                from,
                to,
                cheapest: self.lines.cheapest_at(from),
            }];
        }
        let mut stretches: Vec<Stretch> = Vec::new();
        for pair in points.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if b <= a {
                continue;
            }
            let cheapest = self.lines.cheapest_at((a + b) / 2.0);
            match stretches.last_mut() {
                Some(last) if last.cheapest == cheapest => last.to = b,
                _ => stretches.push(Stretch {
                    from: a,
                    to: b,
                    cheapest,
                }),
            }
        }
        stretches
    }
}

fn cheapest(values: [(Model, f64); 3]) -> Model {
    let mut best = values[0];
    for candidate in &values[1..] {
        if candidate.1 < best.1 {
            best = *candidate;
        }
    }
    best.0
}

/// Where each pair of lines crosses above zero agents.
fn crossovers(lines: &Lines) -> Vec<Crossover> {
    let mut found = Vec::new();
    for (i, &a) in Model::ALL.iter().enumerate() {
        for &b in &Model::ALL[i + 1..] {
            let (la, lb) = (lines.get(a), lines.get(b));
            let slope = la.per_agent - lb.per_agent;
            if slope == 0.0 {
                continue;
            }
            let agents = (lb.fixed - la.fixed) / slope;
            if !(agents.is_finite() && agents > 0.0) {
                continue;
            }
            let (below, above) = if la.per_agent > lb.per_agent {
                (a, b)
            } else {
                (b, a)
            };
            found.push(Crossover {
                agents,
                cost: la.at(agents),
                between: [a, b],
                cheaper_below: below,
                cheaper_above: above,
            });
        }
    }
    found.sort_by(|x, y| x.agents.total_cmp(&y.agents));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Round prices, so the hand arithmetic below stays readable.
    fn prices() -> Prices {
        Prices {
            per_connection_hour: 0.01,
            per_1000_calls: 0.02,
            per_vcpu_hour: 0.04,
            per_gib_hour: 0.004,
            vcpu_per_session: 0.1,
            gib_per_session: 0.25,
            gateway_vcpu: 1.0,
            gateway_gib: 2.0,
        }
    }

    fn close(actual: f64, expected: f64) {
        assert!(
            (actual - expected).abs() <= 1e-9 * expected.abs().max(1.0),
            "{actual} != {expected}"
        );
    }

    /// Two principals over 24 hours.
    const USAGE: &str = r#"{"since": "2026-11-29T22:00:00Z", "until": "2026-11-30T22:00:00Z", "by": "principal,server",
      "rows": [
        {"principal": "agent-a", "server": "echo", "tool": null, "sessions": 12, "session_seconds": 36000,
         "peak_connections": 3, "requests": 540, "tool_calls": 500, "bytes_in": 1, "bytes_out": 2,
         "cpu_seconds": 720, "memory_gib_seconds": 7200},
        {"principal": "agent-b", "server": "echo", "tool": null, "sessions": 8, "session_seconds": 7200,
         "peak_connections": 2, "requests": 1600, "tool_calls": 1500, "bytes_in": 3, "bytes_out": 4,
         "cpu_seconds": 1080, "memory_gib_seconds": 3600},
        {"principal": "agent-a", "server": "files", "tool": null, "sessions": 4, "session_seconds": 28800,
         "peak_connections": 1, "requests": 100, "tool_calls": 2000, "bytes_in": 5, "bytes_out": 6,
         "cpu_seconds": 0, "memory_gib_seconds": 3600}
      ]}"#;

    #[test]
    fn recorded_usage_under_each_model() {
        let report = UsageReport::from_json(USAGE).unwrap();
        let costs = Costs::from_usage(&report, None, &prices()).unwrap();
        // connection-hours = (36000 + 7200 + 28800) s / 3600 = 20 h
        // per-connection = 20 × $0.01 = $0.20
        close(costs.quantities.connection_hours, 20.0);
        close(costs.per_connection, 0.20);
        // tool calls = 500 + 1500 + 2000 = 4000; per-request = 4000 / 1000 × $0.02 = $0.08
        close(costs.quantities.tool_calls, 4000.0);
        close(costs.per_request, 0.08);
        // sessions' vCPU-hours = (720 + 1080 + 0) / 3600 = 0.5, GiB-hours = 14400 / 3600 = 4
        // gateway over 24 h: 24 vCPU-hours, 48 GiB-hours
        // compute = (0.5 + 24) × $0.04 + (4 + 48) × $0.004 = 0.98 + 0.208 = $1.188
        close(costs.quantities.session_vcpu_hours, 0.5);
        close(costs.quantities.session_gib_hours, 4.0);
        close(costs.quantities.gateway_vcpu_hours, 24.0);
        close(costs.quantities.gateway_gib_hours, 48.0);
        close(costs.compute, 1.188);
        assert_eq!(costs.cheapest, Model::PerRequest);
        close(costs.quantities.sessions, 24.0);
        close(costs.period_hours, 24.0);
        // Two distinct principals: the lines are per agent of those two.
        assert_eq!(costs.agents, 2.0);
        assert!(matches!(
            costs.basis,
            Basis::Usage {
                agents_from: AgentsFrom::Principals,
                rows: 3,
                ..
            }
        ));
        // per agent: per-connection 0.20 / 2 = 0.10; per-request 0.08 / 2 = 0.04;
        // compute: fixed 24 × 0.04 + 48 × 0.004 = 1.152, per agent (0.5 × 0.04 + 4 × 0.004) / 2 = 0.018
        close(costs.lines.per_connection.per_agent, 0.10);
        close(costs.lines.per_request.per_agent, 0.04);
        close(costs.lines.compute.fixed, 1.152);
        close(costs.lines.compute.per_agent, 0.018);
        for model in Model::ALL {
            close(costs.lines.get(model).at(2.0), costs.total(model));
        }
        // compute = per-connection where 1.152 + 0.018 n = 0.10 n: n = 1.152 / 0.082 = 14.048...
        // compute = per-request where 1.152 + 0.018 n = 0.04 n: n = 1.152 / 0.022 = 52.36...
        assert_eq!(costs.crossovers.len(), 2);
        let first = &costs.crossovers[0];
        close(first.agents, 1.152 / 0.082);
        close(first.cost, 0.10 * 1.152 / 0.082);
        assert_eq!(first.between, [Model::PerConnection, Model::Compute]);
        assert_eq!(
            (first.cheaper_below, first.cheaper_above),
            (Model::PerConnection, Model::Compute)
        );
        let second = &costs.crossovers[1];
        close(second.agents, 1.152 / 0.022);
        assert_eq!(second.between, [Model::PerRequest, Model::Compute]);
        assert_eq!(
            (second.cheaper_below, second.cheaper_above),
            (Model::PerRequest, Model::Compute)
        );
        // per-request is below per-connection everywhere, so it wins until compute
        // overtakes it at 52.36 agents.
        let stretches = costs.stretches(1.0, 100.0);
        assert_eq!(stretches.len(), 2, "{stretches:?}");
        assert_eq!(stretches[0].cheapest, Model::PerRequest);
        close(stretches[0].to, 1.152 / 0.022);
        assert_eq!(stretches[1].cheapest, Model::Compute);
        assert_eq!(stretches[1].to, 100.0);
    }

    #[test]
    fn usage_without_principals_counts_as_one_agent_unless_told() {
        let report = UsageReport::from_json(
            &USAGE
                .replace("\"agent-a\"", "null")
                .replace("\"agent-b\"", "null"),
        )
        .unwrap();
        let costs = Costs::from_usage(&report, None, &prices()).unwrap();
        assert_eq!(costs.agents, 1.0);
        close(costs.lines.per_connection.per_agent, 0.20);
        let told = Costs::from_usage(&report, Some(4.0), &prices()).unwrap();
        assert_eq!(told.agents, 4.0);
        close(told.lines.per_connection.per_agent, 0.05);
        // The totals are what was recorded, whatever the agent count.
        close(told.per_connection, 0.20);
        let err = Costs::from_usage(&report, Some(0.0), &prices())
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than 0"), "{err}");
        let err = Costs::from_usage(&report, Some(-3.0), &prices())
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "recorded agents must be a finite number of at least 0 (got -3)"
        );
    }

    #[test]
    fn projection_under_each_model() {
        let projection = Projection {
            agents: 50.0,
            tools_per_agent: 4.0,
            calls_per_agent_hour: 120.0,
            session_hours: 8.0,
        };
        let costs = Costs::project(&projection, &prices()).unwrap();
        // sessions = 50 × 4 = 200; connection-hours = 200 × 8 = 1600
        // per-connection = 1600 × $0.01 = $16
        close(costs.quantities.sessions, 200.0);
        close(costs.quantities.connection_hours, 1600.0);
        close(costs.per_connection, 16.0);
        // calls = 50 × 120 × 8 = 48000; per-request = 48 × $0.02 = $0.96
        close(costs.quantities.tool_calls, 48000.0);
        close(costs.per_request, 0.96);
        // sessions' compute: 1600 session-hours × (0.1 × 0.04 + 0.25 × 0.004) = 1600 × 0.005 = $8
        // gateway: 8 h × (1 × 0.04 + 2 × 0.004) = 8 × 0.048 = $0.384; compute = $8.384
        close(costs.quantities.session_vcpu_hours, 160.0);
        close(costs.quantities.session_gib_hours, 400.0);
        close(costs.compute, 8.384);
        assert_eq!(costs.cheapest, Model::PerRequest);
        // per agent: per-connection 4 × 8 × 0.01 = 0.32; per-request 120 × 8 / 1000 × 0.02 = 0.0192;
        // compute 4 × 8 × 0.005 = 0.16 on top of 0.384.
        close(costs.lines.per_connection.per_agent, 0.32);
        close(costs.lines.per_request.per_agent, 0.0192);
        close(costs.lines.compute.per_agent, 0.16);
        close(costs.lines.compute.fixed, 0.384);
        // compute = per-connection at 0.384 / (0.32 - 0.16) = 2.4 agents ($0.768);
        // per-request's slope is below compute's: they never cross.
        assert_eq!(costs.crossovers.len(), 1, "{:?}", costs.crossovers);
        close(costs.crossovers[0].agents, 2.4);
        close(costs.crossovers[0].cost, 0.768);
        assert_eq!(
            costs.crossovers[0].between,
            [Model::PerConnection, Model::Compute]
        );
    }

    #[test]
    fn heavy_callers_make_compute_win_past_a_crossover() {
        // 3000 calls per agent-hour: per-request per agent = 3000 × 8 / 1000 × 0.02 = $0.48.
        // Lines: per-connection 0.32 n, per-request 0.48 n, compute 0.384 + 0.16 n.
        // compute = per-request at 0.384 / (0.48 - 0.16) = 1.2 agents,
        // compute = per-connection at 0.384 / (0.32 - 0.16) = 2.4 agents.
        let projection = Projection {
            agents: 10.0,
            tools_per_agent: 4.0,
            calls_per_agent_hour: 3000.0,
            session_hours: 8.0,
        };
        let costs = Costs::project(&projection, &prices()).unwrap();
        // compute at 10 agents = 0.384 + 10 × 0.16 = $1.984; per-request 10 × 0.48 = $4.80
        close(costs.compute, 1.984);
        close(costs.per_request, 4.80);
        assert_eq!(costs.cheapest, Model::Compute);
        let agents: Vec<f64> = costs.crossovers.iter().map(|c| c.agents).collect();
        assert_eq!(agents.len(), 2);
        close(agents[0], 1.2);
        close(agents[1], 2.4);
        // Below 1.2 agents per-connection is cheapest (0.32 n < 0.48 n and < 0.384 + 0.16 n).
        let stretches = costs.stretches(0.5, 40.0);
        let winners: Vec<Model> = stretches.iter().map(|s| s.cheapest).collect();
        assert_eq!(winners, [Model::PerConnection, Model::Compute]);
        close(stretches[0].to, 2.4);
    }

    #[test]
    fn bad_projections_and_prices_are_refused() {
        let good = Projection {
            agents: 1.0,
            tools_per_agent: 1.0,
            calls_per_agent_hour: 1.0,
            session_hours: 1.0,
        };
        let negative = Projection {
            agents: -5.0,
            ..good
        };
        let err = Costs::project(&negative, &prices())
            .unwrap_err()
            .to_string();
        assert_eq!(err, "agents must be a finite number of at least 0 (got -5)");
        let nan = Projection {
            session_hours: f64::NAN,
            ..good
        };
        let err = Costs::project(&nan, &prices()).unwrap_err().to_string();
        assert!(err.starts_with("session hours must be"), "{err}");
        let bad_price = Prices {
            per_vcpu_hour: -0.04,
            ..prices()
        };
        let err = Costs::project(&good, &bad_price).unwrap_err().to_string();
        assert!(err.starts_with("cost.per_vcpu_hour must be"), "{err}");
    }

    #[test]
    fn zero_agents_cost_the_gateway_floor_only() {
        let projection = Projection {
            agents: 0.0,
            tools_per_agent: 4.0,
            calls_per_agent_hour: 120.0,
            session_hours: 8.0,
        };
        let costs = Costs::project(&projection, &prices()).unwrap();
        assert_eq!((costs.per_connection, costs.per_request), (0.0, 0.0));
        close(costs.compute, 0.384);
        assert_eq!(costs.cheapest, Model::PerConnection, "ties go to the first");
    }

    #[test]
    fn json_names_models_and_sources() {
        let projection = Projection {
            agents: 2.0,
            tools_per_agent: 1.0,
            calls_per_agent_hour: 10.0,
            session_hours: 1.0,
        };
        let costs = Costs::project(&projection, &prices()).unwrap();
        let json = serde_json::to_value(&costs).unwrap();
        assert_eq!(json["basis"]["source"], "projection");
        assert_eq!(json["basis"]["agents"], 2.0);
        assert_eq!(json["cheapest"], "per-request");
        assert_eq!(json["crossovers"][0]["between"][1], "compute");
        assert_eq!(json["prices"]["per_1000_calls"], 0.02);
    }
}
