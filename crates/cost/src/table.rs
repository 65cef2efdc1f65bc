//! The plain-text report: one aligned row per model, then the verdict.

use crate::format::{price, qty, usd};
use crate::{AgentsFrom, Basis, Costs, Model};

/// The costs as a plain-text table with aligned columns, the cheapest model,
/// the crossovers and which model wins over the chart's range of agents.
pub fn table(costs: &Costs) -> String {
    let mut out = String::new();
    out.push_str(&describe(costs));
    out.push_str("\n\n");
    let q = &costs.quantities;
    let p = &costs.prices;
    let rows: Vec<[String; 4]> = vec![
        [
            "MODEL".into(),
            "BILLED".into(),
            "PRICE".into(),
            "USD".into(),
        ],
        [
            Model::PerConnection.label().into(),
            format!("{} connection-hours", qty(q.connection_hours)),
            format!("{} per connection-hour", price(p.per_connection_hour)),
            usd(costs.per_connection),
        ],
        [
            Model::PerRequest.label().into(),
            format!("{} tool calls", qty(q.tool_calls)),
            format!("{} per 1,000 calls", price(p.per_1000_calls)),
            usd(costs.per_request),
        ],
        [
            Model::Compute.label().into(),
            format!(
                "{} vCPU-h + {} GiB-h (sessions)",
                qty(q.session_vcpu_hours),
                qty(q.session_gib_hours)
            ),
            format!("{} per vCPU-hour", price(p.per_vcpu_hour)),
            usd(costs.compute),
        ],
        [
            String::new(),
            format!(
                "{} vCPU-h + {} GiB-h (gateway)",
                qty(q.gateway_vcpu_hours),
                qty(q.gateway_gib_hours)
            ),
            format!("{} per GiB-hour", price(p.per_gib_hour)),
            String::new(),
        ],
    ];
    out.push_str(&aligned(&rows, [false, false, false, true]));
    out.push('\n');
    out.push_str(&format!(
        "cheapest: {} ({} for {} agents over {} h)\n",
        costs.cheapest.label(),
        usd(costs.total(costs.cheapest)),
        qty(costs.agents),
        qty(costs.period_hours)
    ));
    if costs.crossovers.is_empty() {
        out.push_str(
            "crossovers: none (the cheapest model stays the cheapest at any agent count)\n",
        );
    } else {
        out.push_str("crossovers:\n");
        for c in &costs.crossovers {
            out.push_str(&format!(
                "  {} agents: {} = {} at {}; {} is cheaper below, {} above\n",
                qty(c.agents),
                c.between[0].label(),
                c.between[1].label(),
                usd(c.cost),
                c.cheaper_below.label(),
                c.cheaper_above.label()
            ));
        }
    }
    let (from, to) = crate::chart::agent_range(costs);
    let stretches = costs.stretches(from, to);
    let wins: Vec<String> = stretches
        .iter()
        .map(|s| {
            format!(
                "{} from {} to {} agents",
                s.cheapest.label(),
                qty(s.from),
                qty(s.to)
            )
        })
        .collect();
    out.push_str(&format!("cheapest by agent count: {}\n", wins.join("; ")));
    out
}

/// One line saying what was costed.
pub(crate) fn describe(costs: &Costs) -> String {
    match &costs.basis {
        Basis::Projection(p) => format!(
            "Projection: {} agents × {} tool servers each ({} sessions), {} tool calls per agent-hour, sessions held {} h",
            qty(p.agents),
            qty(p.tools_per_agent),
            qty(costs.quantities.sessions),
            qty(p.calls_per_agent_hour),
            qty(p.session_hours)
        ),
        Basis::Usage {
            since,
            until,
            by,
            rows,
            agents_from,
        } => {
            let agents = match agents_from {
                AgentsFrom::Principals => format!("{} agents (distinct principals)", qty(costs.agents)),
                AgentsFrom::Given => format!("{} agents (as given)", qty(costs.agents)),
                AgentsFrom::Assumed => {
                    "counted as 1 agent (no principals in the rows; --recorded-agents N says how many)"
                        .to_string()
                }
            };
            format!(
                "Recorded usage {since} to {until} ({} h), {rows} rows by {by}, {} sessions; {agents}",
                qty(costs.period_hours),
                qty(costs.quantities.sessions)
            )
        }
    }
}

/// Rows as columns padded to their widest cell, two spaces apart.
fn aligned<const N: usize>(rows: &[[String; N]], right: [bool; N]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let pad = " ".repeat(widths[i] - cell.chars().count());
            if right[i] {
                line.push_str(&pad);
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&pad);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Prices, Projection};

    #[test]
    fn columns_line_up_and_figures_show() {
        let prices = Prices {
            per_connection_hour: 0.01,
            per_1000_calls: 0.02,
            per_vcpu_hour: 0.04,
            per_gib_hour: 0.004,
            vcpu_per_session: 0.1,
            gib_per_session: 0.25,
            gateway_vcpu: 1.0,
            gateway_gib: 2.0,
        };
        let projection = Projection {
            agents: 50.0,
            tools_per_agent: 4.0,
            calls_per_agent_hour: 120.0,
            session_hours: 8.0,
        };
        let costs = Costs::project(&projection, &prices).unwrap();
        let text = table(&costs);
        let lines: Vec<&str> = text.lines().collect();
        let header = lines.iter().position(|l| l.starts_with("MODEL")).unwrap();
        // Each column starts at the same offset on every row.
        let billed = lines[header].find("BILLED").unwrap();
        let price = lines[header].find("PRICE").unwrap();
        for line in &lines[header + 1..header + 5] {
            assert_eq!(line.chars().nth(billed - 1), Some(' '), "{line}");
            assert_ne!(line.chars().nth(billed), Some(' '), "{line}");
            assert_ne!(line.chars().nth(price), Some(' '), "{line}");
        }
        // Right-aligned USD: the rows with a figure end in the same column.
        let usd_end = lines[header].chars().count();
        for line in &lines[header + 1..header + 4] {
            assert_eq!(line.chars().count(), usd_end, "{line}");
        }
        // per-connection 1600 × 0.01 = $16; per-request 48 × 0.02 = $0.96; compute $8.384
        assert!(lines[header + 1].ends_with("$16.00"), "{text}");
        assert!(
            lines[header + 1].contains("1,600 connection-hours"),
            "{text}"
        );
        assert!(lines[header + 2].ends_with("$0.96"), "{text}");
        assert!(lines[header + 3].ends_with("$8.38"), "{text}");
        assert!(
            text.contains("cheapest: per-request ($0.96 for 50 agents over 8 h)"),
            "{text}"
        );
        assert!(
            text.contains("2.4 agents: per-connection = included with compute at $0.768"),
            "{text}"
        );
    }
}
