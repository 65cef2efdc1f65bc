//! `berth cost`: what hosting costs under per-connection, per-request and
//! included-with-compute pricing, for recorded usage or a projection.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use berth_cost::{CostError, Costs, Prices, Projection, UsageReport};

use crate::config::Config;

/// `berth cost [--usage FILE | --agents N --tools-per-agent T
/// --calls-per-agent-hour C --session-hours H]`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["usage", "agents"])))]
pub struct CostArgs {
    /// Recorded usage: the JSON `berth usage --format json` prints (`-` reads stdin).
    #[arg(long, value_name = "FILE", conflicts_with = "agents")]
    pub usage: Option<PathBuf>,
    /// How many agents the recorded usage came from, for the chart's scale
    /// (default: the usage's distinct principals, or 1 without any).
    #[arg(long, value_name = "N", requires = "usage", value_parser = positive, allow_negative_numbers = true)]
    pub recorded_agents: Option<f64>,
    /// Projection: concurrent agents.
    #[arg(
        long,
        value_name = "N",
        requires_all = ["tools_per_agent", "calls_per_agent_hour", "session_hours"],
        value_parser = non_negative,
        allow_negative_numbers = true
    )]
    pub agents: Option<f64>,
    /// Projection: tool servers per agent (each agent holds one session per server).
    #[arg(long, value_name = "T", requires = "agents", value_parser = non_negative, allow_negative_numbers = true)]
    pub tools_per_agent: Option<f64>,
    /// Projection: tool calls one agent makes per hour.
    #[arg(long, value_name = "C", requires = "agents", value_parser = non_negative, allow_negative_numbers = true)]
    pub calls_per_agent_hour: Option<f64>,
    /// Projection: hours the sessions are held open (the period costed).
    #[arg(long, value_name = "H", requires = "agents", value_parser = non_negative, allow_negative_numbers = true)]
    pub session_hours: Option<f64>,
    /// The configuration whose `[cost]` prices apply (default: ./berth.toml
    /// when there is one, else the built-in prices).
    #[arg(long, short, env = "BERTH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Also write the chart (cost against agent count, per model) to this SVG file.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// USD per connection-hour (overrides cost.per_connection_hour).
    #[arg(long, value_name = "USD", value_parser = non_negative, allow_negative_numbers = true)]
    pub price_connection_hour: Option<f64>,
    /// USD per 1,000 tool calls (overrides cost.per_1000_calls).
    #[arg(long, value_name = "USD", value_parser = non_negative, allow_negative_numbers = true)]
    pub price_1000_calls: Option<f64>,
    /// USD per vCPU-hour (overrides cost.per_vcpu_hour).
    #[arg(long, value_name = "USD", value_parser = non_negative, allow_negative_numbers = true)]
    pub price_vcpu_hour: Option<f64>,
    /// USD per GiB-hour (overrides cost.per_gib_hour).
    #[arg(long, value_name = "USD", value_parser = non_negative, allow_negative_numbers = true)]
    pub price_gib_hour: Option<f64>,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

pub fn run(args: &CostArgs) -> anyhow::Result<()> {
    let (prices, from) = prices(args)?;
    let costs = match &args.usage {
        Some(path) => {
            let report = read_usage(path)?;
            Costs::from_usage(&report, args.recorded_agents, &prices)
                .with_context(|| format!("usage {}", path.display()))?
        }
        None => {
            let projection = Projection {
                agents: args.agents.unwrap_or_default(),
                tools_per_agent: args.tools_per_agent.unwrap_or_default(),
                calls_per_agent_hour: args.calls_per_agent_hour.unwrap_or_default(),
                session_hours: args.session_hours.unwrap_or_default(),
            };
            Costs::project(&projection, &prices)?
        }
    };
    if let Some(path) = &args.svg {
        std::fs::write(path, berth_cost::chart_svg(&costs))
            .with_context(|| format!("cannot write the chart to {}", path.display()))?;
        eprintln!("chart written to {}", path.display());
    }
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&costs)?),
        Format::Table => {
            print!("{}", berth_cost::table(&costs));
            println!("prices: {from}");
        }
    }
    Ok(())
}

/// The prices: `[cost]` of the configuration (when there is one), then the
/// command line's overrides. Also says where they came from.
fn prices(args: &CostArgs) -> anyhow::Result<(Prices, String)> {
    let path = match &args.config {
        Some(path) => Some(path.clone()),
        None => Some(PathBuf::from("berth.toml")).filter(|p| p.exists()),
    };
    let (mut prices, mut from) = match &path {
        Some(path) => {
            let config = Config::load(path)?;
            match config.cost {
                Some(prices) => (prices, format!("[cost] of {}", path.display())),
                None => (
                    Prices::default(),
                    format!("built-in defaults ({} has no [cost])", path.display()),
                ),
            }
        }
        None => (
            Prices::default(),
            "built-in defaults (no --config, $BERTH_CONFIG or ./berth.toml)".to_string(),
        ),
    };
    let overrides = [
        (args.price_connection_hour, &mut prices.per_connection_hour),
        (args.price_1000_calls, &mut prices.per_1000_calls),
        (args.price_vcpu_hour, &mut prices.per_vcpu_hour),
        (args.price_gib_hour, &mut prices.per_gib_hour),
    ];
    let mut overridden = false;
    for (value, slot) in overrides {
        if let Some(value) = value {
            *slot = value;
            overridden = true;
        }
    }
    if overridden {
        from.push_str(", with --price-* overrides");
    }
    prices.validate()?;
    Ok((prices, from))
}

/// Reads and parses a usage report; errors name the file (and line:column).
fn read_usage(path: &Path) -> anyhow::Result<UsageReport> {
    let text = if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the usage report from stdin")?;
        text
    } else {
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read usage file {}", path.display()))?
    };
    if text.trim().is_empty() {
        anyhow::bail!(
            "usage file {} is empty (expected the JSON `berth usage --format json` prints)",
            path.display()
        );
    }
    UsageReport::from_json(&text).map_err(|e| match e {
        CostError::Json { .. } => anyhow::anyhow!(
            "{}:{e} (not the JSON `berth usage --format json` prints)",
            path.display()
        ),
        other => anyhow::anyhow!("usage file {}: {other}", path.display()),
    })
}

fn number(text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .map_err(|_| format!("`{text}` is not a number"))
}

/// A finite number of at least zero.
fn non_negative(text: &str) -> Result<f64, String> {
    let value = number(text)?;
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(format!("must be a number of at least 0, not {text}"))
    }
}

/// A finite number above zero.
fn positive(text: &str) -> Result<f64, String> {
    let value = number(text)?;
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(format!("must be a number above 0, not {text}"))
    }
}
