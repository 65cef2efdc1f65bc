//! `[telemetry] otlp`: the OpenTelemetry span exporter `serve` feeds.

use std::sync::Arc;

use anyhow::Context;
use berth_traces::{Endpoint, ExporterConfig, OtlpExporter};

use crate::config::Config;

/// Starts the exporter when `[telemetry] otlp` is set; spans name Berth by
/// its public URL (`server.address`, `server.port`).
pub fn start(config: &Config, public_url: &str) -> anyhow::Result<Option<Arc<OtlpExporter>>> {
    let Some(otlp) = &config.telemetry.otlp else {
        return Ok(None);
    };
    let mut exporter = ExporterConfig::new(otlp, env!("CARGO_PKG_VERSION"));
    if let Ok(url) = reqwest::Url::parse(public_url) {
        exporter.server = Endpoint {
            address: url.host_str().map(str::to_owned),
            port: url.port_or_known_default(),
        };
    }
    let exporter = OtlpExporter::start(exporter)
        .context("cannot start the OpenTelemetry exporter ([telemetry] otlp)")?;
    tracing::info!("traces: one span per MCP request, sent to {otlp}/v1/traces");
    Ok(Some(exporter))
}
