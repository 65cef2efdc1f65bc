//! What hosting MCP servers costs as agents multiply.
//!
//! Three pricing models, applied to recorded usage (`berth usage --format
//! json`, see [`UsageReport`]) or to a [`Projection`] (agents × tool servers
//! per agent × hours):
//!
//! - **per-connection**: every session held open is billed by the hour
//!   (`connection-hours × per_connection_hour`);
//! - **per-request**: every tool call is billed
//!   (`tool calls / 1000 × per_1000_calls`);
//! - **included with compute**: hosting costs nothing on top of the compute
//!   it runs on: the sessions' servers (vCPU-hours and GiB-hours) plus the
//!   gateway host's floor (`gateway_vcpu`, `gateway_gib` for the whole period).
//!
//! Each model's cost is a line in the agent count (a fixed part plus a part per
//! agent), so the crate also finds where the lines cross and which model is
//! cheapest between crossings. [`table`] and [`chart_svg`] render a [`Costs`];
//! it serialises to JSON as is.

mod chart;
mod format;
mod model;
mod prices;
mod table;
mod usage;

pub use chart::chart_svg;
pub use model::{
    AgentsFrom, Basis, Costs, Crossover, Line, Lines, Model, Projection, Quantities, Stretch,
};
pub use prices::Prices;
pub use table::table;
pub use usage::{UsageReport, UsageRow};

/// Input the models cannot be applied to.
#[derive(Debug, thiserror::Error)]
pub enum CostError {
    /// A price, a projection figure or a measurement that is negative, NaN or infinite.
    #[error("{what} must be a finite number of at least 0 (got {value})")]
    Invalid { what: String, value: f64 },
    /// Usage JSON that does not parse or does not have the report's shape.
    #[error("{line}:{column}: {message}")]
    Json {
        line: usize,
        column: usize,
        message: String,
    },
    /// A usage report that parses but cannot be costed.
    #[error("{0}")]
    Usage(String),
}
