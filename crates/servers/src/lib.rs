//! Built-in MCP servers.
//!
//! Each is an ordinary stdio MCP server written with the official `rmcp` SDK.
//! The `berth` binary runs them as children of itself (`berth builtin NAME`),
//! so the gateway hosts them exactly like any other upstream.

pub mod demo;

/// The names `berth builtin` accepts.
pub const BUILTINS: &[&str] = &["demo"];

/// Serves the built-in `name` on stdin/stdout until stdin closes.
pub async fn run(name: &str) -> anyhow::Result<()> {
    match name {
        "demo" => demo::run().await,
        other => anyhow::bail!(
            "no built-in server named `{other}`; available: {}",
            BUILTINS.join(", ")
        ),
    }
}
