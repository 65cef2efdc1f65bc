//! Real MCP clients (official TypeScript, Python and Rust SDKs) against real
//! reference servers from npm, through Berth; then no process may remain.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

const STATE_DIR: &str = "/state";

fn everything_and_memory() -> String {
    // The memory server keeps its graph in its sandbox's writable state dir.
    let memory_file = format!("{STATE_DIR}/memory.jsonl");
    npm_server(
        "everything",
        "@modelcontextprotocol/server-everything",
        &["stdio"],
        &[],
    ) + &npm_server(
        "memory",
        "@modelcontextprotocol/server-memory",
        &[],
        &[("MEMORY_FILE_PATH", &memory_file)],
    )
}

/// Runs an SDK client script (`tests/node/client.mjs` or `tests/python/client.py`)
/// against `path` on the gateway; it exits 0 once every step passed.
fn sdk_client(
    berth: &Berth,
    sdk: &str,
    program: std::path::PathBuf,
    script: &str,
    path: &str,
    mode: &str,
) {
    let (ok, out) = run_with_timeout(
        Command::new(program)
            .arg(repo().join(script))
            .arg(format!("{}{path}", berth.base()))
            .arg(mode)
            .env("BERTH_E2E_STRICT", "1"),
        Duration::from_secs(90),
    );
    assert!(
        ok,
        "{sdk} SDK client ({mode} at {path}) failed:\n{out}\n--- berth log ---\n{}",
        berth.log()
    );
}

fn node_client(berth: &Berth, path: &str, mode: &str) {
    sdk_client(
        berth,
        "TypeScript",
        "node".into(),
        "tests/node/client.mjs",
        path,
        mode,
    );
}

fn python_client(berth: &Berth, path: &str, mode: &str) {
    sdk_client(
        berth,
        "Python",
        python(),
        "tests/python/client.py",
        path,
        mode,
    );
}

#[test]
fn typescript_sdk_client_through_berth() {
    let berth = Berth::start("", &everything_and_memory());
    node_client(&berth, "/mcp/everything", "everything");
    node_client(&berth, "/mcp/memory", "memory");
    // Every session was deleted by its client: every process is reaped.
    berth.wait_for_children(0, Duration::from_secs(10));
}

#[test]
fn typescript_sdk_legacy_sse_client_through_berth() {
    let berth = Berth::start("", &everything_and_memory());
    node_client(&berth, "/sse/everything", "sse");
    // A legacy session ends with its SSE connection.
    berth.wait_for_children(0, Duration::from_secs(10));
}

#[test]
fn python_sdk_client_through_berth() {
    let berth = Berth::start("", &everything_and_memory());
    python_client(&berth, "/mcp/everything", "everything");
    python_client(&berth, "/mcp/memory", "memory");
    berth.wait_for_children(0, Duration::from_secs(10));
}
