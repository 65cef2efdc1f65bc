//! The chart: cost against agent count, one line per model, the cheapest
//! model's stretch shaded, crossovers marked. Plain SVG text, deterministic.

use std::fmt::Write;

use crate::format::{qty, usd};
use crate::{AgentsFrom, Basis, Costs, Crossover, Model};

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 560.0;
/// The plot area.
const LEFT: f64 = 90.0;
const RIGHT: f64 = 640.0;
const TOP: f64 = 70.0;
const BOTTOM: f64 = 480.0;
const LEGEND_X: f64 = 665.0;

/// A model's colour (colour-blind safe) and dash pattern.
fn style(model: Model) -> (&'static str, &'static str) {
    match model {
        Model::PerConnection => ("#0072b2", "none"),
        Model::PerRequest => ("#d55e00", "9 5"),
        Model::Compute => ("#009e73", "3 3"),
    }
}

/// A shorter name where space is tight.
fn short(model: Model) -> &'static str {
    match model {
        Model::PerConnection => "per-connection",
        Model::PerRequest => "per-request",
        Model::Compute => "compute",
    }
}

/// The agent counts the chart spans: from 1 to four times the input's
/// agents, stretched to show a crossover up to ten times further, rounded up
/// to a tick.
pub(crate) fn agent_range(costs: &Costs) -> (f64, f64) {
    let axis = x_axis(costs);
    (axis.lo, axis.hi)
}

struct Axis {
    lo: f64,
    hi: f64,
    step: f64,
}

impl Axis {
    /// Tick values: `lo`, then the multiples of `step` that are not crowding it.
    fn ticks(&self) -> Vec<f64> {
        let mut ticks = vec![self.lo];
        let mut k = 1.0;
        loop {
            let v = k * self.step;
            if v > self.hi + self.step * 1e-9 {
                break;
            }
            if v > self.lo + self.step * 0.4 {
                ticks.push(v);
            }
            k += 1.0;
        }
        ticks
    }
}

fn x_axis(costs: &Costs) -> Axis {
    let a = costs.agents.max(1.0);
    let mut hi = 4.0 * a;
    if let Some(far) = costs
        .crossovers
        .iter()
        .map(|c| c.agents)
        .filter(|&n| n <= 40.0 * a)
        .reduce(f64::max)
    {
        hi = hi.max(far * 1.25);
    }
    let step = nice_step(hi - 1.0, 8.0).max(1.0);
    Axis {
        lo: 1.0,
        hi: (hi / step).ceil() * step,
        step,
    }
}

fn y_axis(costs: &Costs, x_hi: f64) -> Axis {
    let top = Model::ALL
        .iter()
        .map(|&m| costs.lines.get(m).at(x_hi))
        .fold(0.0, f64::max);
    let top = if top > 0.0 && top.is_finite() {
        top
    } else {
        1.0
    };
    let step = nice_step(top, 6.0);
    Axis {
        lo: 0.0,
        hi: (top * 1.02 / step).ceil() * step,
        step,
    }
}

/// 1, 2 or 5 times a power of ten, near `span / count`.
fn nice_step(span: f64, count: f64) -> f64 {
    let raw = span / count;
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    let norm = raw / magnitude;
    let mult = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    mult * magnitude
}

/// A dollar tick label with as many decimals as the step needs.
fn dollar_tick(v: f64, step: f64) -> String {
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    let text = format!("{v:.decimals$}");
    // Thousands separators for the whole part.
    let (int, frac) = text.split_at(text.find('.').unwrap_or(text.len()));
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("${grouped}{frac}")
}

/// Text made safe to embed in SVG (element content and attribute values).
pub(crate) fn escape(text: &str) -> String {
    // XML 1.0 has no place for most control characters, even escaped.
    let text: String = text
        .chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect();
    html_escape::encode_quoted_attribute(&text).into_owned()
}

/// What the chart is of, in one short line.
fn subtitle(costs: &Costs) -> String {
    match &costs.basis {
        Basis::Projection(p) => format!(
            "projection: {} tool servers per agent, {} tool calls per agent-hour, {} h",
            qty(p.tools_per_agent),
            qty(p.calls_per_agent_hour),
            qty(p.session_hours)
        ),
        Basis::Usage {
            since,
            until,
            agents_from,
            ..
        } => {
            let unit = match agents_from {
                AgentsFrom::Principals => format!("{} principals", qty(costs.agents)),
                AgentsFrom::Given => format!("{} agents", qty(costs.agents)),
                AgentsFrom::Assumed => "1 agent (assumed)".to_string(),
            };
            format!("recorded {since} to {until}, scaled from {unit}")
        }
    }
}

/// The chart as an SVG document: cost (USD over the period) against agent
/// count for the three models, with a legend, the cheapest model's range
/// shaded and every crossover marked and annotated. The same costs always
/// give the same bytes.
pub fn chart_svg(costs: &Costs) -> String {
    let x = x_axis(costs);
    let y = y_axis(costs, x.hi);
    let px = |n: f64| LEFT + (n - x.lo) / (x.hi - x.lo) * (RIGHT - LEFT);
    let py = |c: f64| BOTTOM - (c - y.lo) / (y.hi - y.lo) * (BOTTOM - TOP);
    let mut s = String::new();
    let title = "Hosting cost by agent count";
    // Writing to a String cannot fail; the results are ignored below.
    let _ = writeln!(s, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, "<title>{}</title>", escape(title));
    let _ = writeln!(
        s,
        r##"<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.2}" y="28" text-anchor="middle" font-size="17" font-weight="bold">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    let _ = writeln!(
        s,
        r##"<text x="{:.2}" y="50" text-anchor="middle" fill="#444444">{}</text>"##,
        WIDTH / 2.0,
        escape(&subtitle(costs))
    );

    // Where each model is the cheapest: a tinted band, named when it is wide enough.
    let _ = writeln!(s, r#"<g id="cheapest">"#);
    for stretch in costs.stretches(x.lo, x.hi) {
        let (colour, _) = style(stretch.cheapest);
        let (x0, x1) = (px(stretch.from), px(stretch.to));
        let _ = writeln!(
            s,
            r#"<rect x="{x0:.2}" y="{TOP:.2}" width="{:.2}" height="{:.2}" fill="{colour}" fill-opacity="0.1"/>"#,
            x1 - x0,
            BOTTOM - TOP
        );
        let label = format!("{} cheapest", short(stretch.cheapest));
        if x1 - x0 > label.chars().count() as f64 * 6.5 + 8.0 {
            let _ = writeln!(
                s,
                r#"<text x="{:.2}" y="{:.2}" text-anchor="middle" font-size="11" fill="{colour}">{}</text>"#,
                (x0 + x1) / 2.0,
                TOP + 15.0,
                escape(&label)
            );
        }
    }
    let _ = writeln!(s, "</g>");

    // Grid, ticks and axes.
    let _ = writeln!(s, r#"<g id="axes">"#);
    for v in y.ticks() {
        let yy = py(v);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT:.2}" y1="{yy:.2}" x2="{RIGHT:.2}" y2="{yy:.2}" stroke="#dddddd" stroke-width="1"/>"##
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.2}" y="{:.2}" text-anchor="end">{}</text>"#,
            LEFT - 8.0,
            yy + 4.0,
            escape(&dollar_tick(v, y.step))
        );
    }
    for v in x.ticks() {
        let xx = px(v);
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.2}" y1="{BOTTOM:.2}" x2="{xx:.2}" y2="{:.2}" stroke="#333333" stroke-width="1"/>"##,
            BOTTOM + 5.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{xx:.2}" y="{:.2}" text-anchor="middle">{}</text>"#,
            BOTTOM + 19.0,
            escape(&qty(v))
        );
    }
    let _ = writeln!(
        s,
        r##"<path d="M {LEFT:.2} {TOP:.2} L {LEFT:.2} {BOTTOM:.2} L {RIGHT:.2} {BOTTOM:.2}" fill="none" stroke="#333333" stroke-width="1.5"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.2}" y="{:.2}" text-anchor="middle" font-size="13">agents</text>"#,
        (LEFT + RIGHT) / 2.0,
        BOTTOM + 42.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(24 {:.2}) rotate(-90)" text-anchor="middle" font-size="13">{}</text>"#,
        (TOP + BOTTOM) / 2.0,
        escape(&format!(
            "USD over the period ({} h)",
            qty(costs.period_hours)
        ))
    );
    let _ = writeln!(s, "</g>");

    // The input's agent count.
    if costs.agents >= x.lo && costs.agents <= x.hi {
        let xx = px(costs.agents);
        let what = match costs.basis {
            Basis::Projection(_) => "projected",
            Basis::Usage { .. } => "recorded",
        };
        let _ = writeln!(s, r#"<g id="input">"#);
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.2}" y1="{TOP:.2}" x2="{xx:.2}" y2="{BOTTOM:.2}" stroke="#777777" stroke-width="1" stroke-dasharray="4 4"/>"##
        );
        let (anchor, dx) = if xx > (LEFT + RIGHT) / 2.0 {
            ("end", -5.0)
        } else {
            ("start", 5.0)
        };
        let _ = writeln!(
            s,
            r##"<text x="{:.2}" y="{:.2}" text-anchor="{anchor}" font-size="11" fill="#555555">{}</text>"##,
            xx + dx,
            TOP + 32.0,
            escape(&format!("{what}: {} agents", qty(costs.agents)))
        );
        let _ = writeln!(s, "</g>");
    }

    // One line per model (each is straight: a fixed part plus a part per agent).
    let _ = writeln!(s, r#"<g id="models">"#);
    for model in Model::ALL {
        let line = costs.lines.get(model);
        let (colour, dash) = style(model);
        let _ = writeln!(
            s,
            r#"<polyline points="{:.2},{:.2} {:.2},{:.2}" fill="none" stroke="{colour}" stroke-width="2.5" stroke-dasharray="{dash}"><title>{}</title></polyline>"#,
            px(x.lo),
            py(line.at(x.lo)),
            px(x.hi),
            py(line.at(x.hi)),
            escape(model.label())
        );
        if costs.agents >= x.lo && costs.agents <= x.hi {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.2}" cy="{:.2}" r="4" fill="{colour}"/>"#,
                px(costs.agents),
                py(costs.total(model))
            );
        }
    }
    let _ = writeln!(s, "</g>");

    // Crossovers: a numbered ring where two lines meet; the legend lists
    // each one's agent count, cost and models (labels beside the rings would
    // overprint when crossovers are close).
    let shown: Vec<&Crossover> = costs
        .crossovers
        .iter()
        .filter(|c| c.agents >= x.lo && c.agents <= x.hi)
        .collect();
    let _ = writeln!(s, r#"<g id="crossovers">"#);
    for (i, c) in shown.iter().enumerate() {
        let (cx, cy) = (px(c.agents), py(c.cost));
        let _ = writeln!(
            s,
            r##"<line x1="{cx:.2}" y1="{cy:.2}" x2="{cx:.2}" y2="{BOTTOM:.2}" stroke="#222222" stroke-width="0.8" stroke-dasharray="1 3"/>"##
        );
        let _ = writeln!(
            s,
            r##"<circle cx="{cx:.2}" cy="{cy:.2}" r="5.5" fill="#ffffff" stroke="#222222" stroke-width="1.8"><title>{}</title></circle>"##,
            escape(&crossover_text(c))
        );
        // Alternate upper-left and lower-right, so neighbours' numbers do not
        // meet; never outside the plot (left of it, a number reads as a tick).
        let left = if i % 2 == 0 {
            cx - 20.0 > LEFT
        } else {
            cx + 20.0 > RIGHT
        };
        let ny = if i % 2 == 0 { cy - 8.0 } else { cy + 17.0 };
        let (nx, anchor) = if left {
            (cx - 8.0, "end")
        } else {
            (cx + 8.0, "start")
        };
        let _ = writeln!(
            s,
            r##"<text x="{nx:.2}" y="{ny:.2}" text-anchor="{anchor}" font-size="12" font-weight="bold" fill="#222222">{}</text>"##,
            i + 1
        );
    }
    let _ = writeln!(s, "</g>");

    legend(&mut s, costs, &shown);
    let _ = writeln!(s, "</svg>");
    s
}

/// A crossover in words: "per-request = compute".
fn crossover_text(c: &Crossover) -> String {
    format!(
        "{} agents, {}: {} = {}",
        qty(c.agents),
        usd(c.cost),
        short(c.between[0]),
        short(c.between[1])
    )
}

/// The legend: each model's line style and name, its cost at the input's
/// agent count, what the shading and rings mean, and the crossovers shown.
fn legend(s: &mut String, costs: &Costs, crossovers: &[&Crossover]) {
    let crossovers_title = if crossovers.is_empty() { 0.0 } else { 24.0 };
    let height = 262.0 + crossovers_title + 34.0 * crossovers.len() as f64;
    let _ = writeln!(s, r#"<g id="legend">"#);
    let _ = writeln!(
        s,
        r##"<rect x="{:.2}" y="{TOP:.2}" width="{:.2}" height="{height:.2}" fill="#ffffff" stroke="#bbbbbb"/>"##,
        LEGEND_X - 8.0,
        WIDTH - LEGEND_X - 2.0
    );
    let _ = writeln!(
        s,
        r#"<text x="{LEGEND_X:.2}" y="{:.2}" font-weight="bold">Pricing model</text>"#,
        TOP + 20.0
    );
    for (i, model) in Model::ALL.into_iter().enumerate() {
        let yy = TOP + 44.0 + 24.0 * i as f64;
        let (colour, dash) = style(model);
        let _ = writeln!(
            s,
            r#"<line x1="{LEGEND_X:.2}" y1="{:.2}" x2="{:.2}" y2="{:.2}" stroke="{colour}" stroke-width="2.5" stroke-dasharray="{dash}"/>"#,
            yy - 4.0,
            LEGEND_X + 32.0,
            yy - 4.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.2}" y="{yy:.2}">{}</text>"#,
            LEGEND_X + 40.0,
            escape(model.label())
        );
    }
    let mut yy = TOP + 130.0;
    let _ = writeln!(
        s,
        r#"<text x="{LEGEND_X:.2}" y="{yy:.2}" font-weight="bold">{}</text>"#,
        escape(&format!("At {} agents", qty(costs.agents)))
    );
    for model in Model::ALL {
        yy += 18.0;
        let (colour, _) = style(model);
        let marker = if model == costs.cheapest {
            " (cheapest)"
        } else {
            ""
        };
        let _ = writeln!(
            s,
            r#"<text x="{LEGEND_X:.2}" y="{yy:.2}" font-size="11" fill="{colour}">{}</text>"#,
            escape(&format!(
                "{}: {}{marker}",
                short(model),
                usd(costs.total(model))
            ))
        );
    }
    yy += 28.0;
    let _ = writeln!(
        s,
        r##"<rect x="{LEGEND_X:.2}" y="{:.2}" width="14" height="12" fill="#777777" fill-opacity="0.25"/>"##,
        yy - 10.0
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.2}" y="{yy:.2}" font-size="11">shaded: the cheapest model</text>"#,
        LEGEND_X + 20.0
    );
    yy += 20.0;
    let _ = writeln!(
        s,
        r##"<circle cx="{:.2}" cy="{:.2}" r="5" fill="#ffffff" stroke="#222222" stroke-width="1.8"/>"##,
        LEGEND_X + 7.0,
        yy - 4.0
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.2}" y="{yy:.2}" font-size="11">crossover: equal cost</text>"#,
        LEGEND_X + 20.0
    );
    if !crossovers.is_empty() {
        yy += 32.0;
        let _ = writeln!(
            s,
            r#"<text x="{LEGEND_X:.2}" y="{yy:.2}" font-weight="bold">Crossovers</text>"#
        );
    }
    for (i, c) in crossovers.iter().enumerate() {
        yy += 18.0;
        let _ = writeln!(
            s,
            r#"<text x="{LEGEND_X:.2}" y="{yy:.2}" font-size="11" font-weight="bold">{}</text>"#,
            i + 1
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.2}" y="{yy:.2}" font-size="11">{}</text>"#,
            LEGEND_X + 14.0,
            escape(&format!("{} agents, {}", qty(c.agents), usd(c.cost)))
        );
        yy += 16.0;
        let _ = writeln!(
            s,
            r##"<text x="{:.2}" y="{yy:.2}" font-size="11" fill="#444444">{}</text>"##,
            LEGEND_X + 14.0,
            escape(&format!(
                "{} = {}",
                short(c.between[0]),
                short(c.between[1])
            ))
        );
    }
    let _ = writeln!(s, "</g>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Prices, Projection, UsageReport};

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

    fn projection(agents: f64) -> Costs {
        let p = Projection {
            agents,
            tools_per_agent: 4.0,
            calls_per_agent_hour: 3000.0,
            session_hours: 8.0,
        };
        Costs::project(&p, &prices()).unwrap()
    }

    #[test]
    fn names_the_models_and_marks_crossovers() {
        // Crossovers at 1.2 and 2.4 agents (see model.rs); 10 agents: x from 1 to 40.
        let svg = chart_svg(&projection(10.0));
        for name in ["per-connection", "per-request", "included with compute"] {
            assert!(svg.contains(&format!(">{name}</text>")), "{name}");
        }
        assert_eq!(agent_range(&projection(10.0)), (1.0, 40.0));
        assert!(svg.contains(">1.2 agents, $0.576<"), "{svg}");
        assert!(svg.contains(">2.4 agents, $0.768<"), "{svg}");
        assert!(svg.contains(">per-request = compute<"));
        assert!(svg.contains(">compute cheapest<"));
        assert!(svg.contains(">projected: 10 agents<"));
        assert!(svg.contains(">agents<"));
        assert!(svg.contains("USD over the period (8 h)"));
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert!(svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn same_input_same_bytes() {
        assert_eq!(chart_svg(&projection(10.0)), chart_svg(&projection(10.0)));
        assert_ne!(chart_svg(&projection(10.0)), chart_svg(&projection(11.0)));
    }

    #[test]
    fn the_range_reaches_a_crossover_past_four_times_the_agents() {
        // One agent: lines 0.32 n (per-connection), 0.0192 n (per-request, 120 calls/h),
        // 0.384 + 0.16 n (compute): compute = per-connection at 2.4, inside 1..4.
        let p = Projection {
            agents: 1.0,
            tools_per_agent: 4.0,
            calls_per_agent_hour: 120.0,
            session_hours: 8.0,
        };
        let costs = Costs::project(&p, &prices()).unwrap();
        assert_eq!(agent_range(&costs), (1.0, 4.0));
        // A floor 10 × bigger (8 h × (10 × 0.04 + 20 × 0.004) = $3.84): compute =
        // per-connection at 3.84 / (0.32 - 0.16) = 24 agents, past 4: the range stretches.
        let heavy = Prices {
            gateway_vcpu: 10.0,
            gateway_gib: 20.0,
            ..prices()
        };
        let costs = Costs::project(&p, &heavy).unwrap();
        assert!((costs.crossovers[0].agents - 24.0).abs() < 1e-9);
        let (lo, hi) = agent_range(&costs);
        assert_eq!(lo, 1.0);
        assert!(hi >= 30.0, "{hi}");
        assert!(chart_svg(&costs).contains(">24 agents, $7.68<"));
    }

    #[test]
    fn text_from_the_input_is_escaped() {
        let usage = r#"{"since": "2026-11-29T22:00:00Z", "until": "2026-11-30T22:00:00Z", "by": "server",
          "rows": [{"principal": null, "server": "a", "tool": null, "sessions": 1, "session_seconds": 3600,
            "peak_connections": 1, "requests": 1, "tool_calls": 1, "bytes_in": 0, "bytes_out": 0,
            "cpu_seconds": 1, "memory_gib_seconds": 1}]}"#;
        let report = UsageReport::from_json(usage).unwrap();
        let mut costs = Costs::from_usage(&report, None, &prices()).unwrap();
        if let Basis::Usage { since, .. } = &mut costs.basis {
            *since = "<b>&\"'".into();
        }
        let svg = chart_svg(&costs);
        assert!(
            svg.contains("recorded &lt;b&gt;&amp;&quot;&#x27; to"),
            "{svg}"
        );
        assert!(!svg.contains("<b>"));
        assert_eq!(escape("a\u{1}b"), "a\u{fffd}b");
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(nice_step(39.0, 8.0), 5.0);
        assert_eq!(nice_step(3.0, 8.0), 0.5);
        assert_eq!(nice_step(0.0, 8.0), 1.0);
        assert_eq!(dollar_tick(1500.0, 500.0), "$1,500");
        assert_eq!(dollar_tick(0.25, 0.05), "$0.25");
        let axis = Axis {
            lo: 1.0,
            hi: 40.0,
            step: 5.0,
        };
        assert_eq!(
            axis.ticks(),
            [1.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0]
        );
    }
}
