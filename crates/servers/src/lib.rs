//! Built-in MCP servers.
//!
//! Each is an ordinary stdio MCP server written with the official `rmcp` SDK.
//! The `berth` binary runs them as children of itself (`berth builtin NAME`),
//! so the gateway hosts them exactly like any other upstream.
//!
//! A built-in's settings reach it as environment variables: the configuration's
//! `[servers.X.options]` key `k` of built-in `b` becomes `BERTH_<B>_<K>` (upper
//! case, `-` as `_`), so values may be `${secret:...}` and never show in a
//! process listing.

pub mod demo;
pub mod postgres;
pub mod sandbox;

/// The names `berth builtin` accepts.
pub const BUILTINS: &[&str] = &["demo", "postgres", "sandbox"];

/// The built-ins `berth serve` runs with no configuration: none of them needs
/// a service or a secret.
pub const EMBEDDED: &[&str] = &["demo", "sandbox"];

/// The option keys built-in `name` reads (see the module docs), or `None`
/// for an unknown built-in.
pub fn options(name: &str) -> Option<&'static [&'static str]> {
    match name {
        "demo" => Some(&[]),
        "postgres" => Some(postgres::OPTIONS),
        "sandbox" => Some(sandbox::options::KEYS),
        _ => None,
    }
}

/// The variable Berth sets for every built-in: the directory it keeps what
/// it writes in, as the built-in sees it (`/state` inside its sandbox).
pub const STATE_DIR_ENV: &str = "BERTH_STATE_DIR";

/// The environment variable carrying option `key` of built-in `builtin`.
pub fn option_env(builtin: &str, key: &str) -> String {
    format!("BERTH_{builtin}_{key}")
        .to_ascii_uppercase()
        .replace('-', "_")
}

/// Serves the built-in `name` on stdin/stdout until stdin closes.
pub async fn run(name: &str) -> anyhow::Result<()> {
    match name {
        "demo" => demo::run().await,
        "postgres" => postgres::run().await,
        "sandbox" => sandbox::run().await,
        other => anyhow::bail!(
            "no built-in server named `{other}`; available: {}",
            BUILTINS.join(", ")
        ),
    }
}
