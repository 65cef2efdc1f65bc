//! Real MCP clients (official TypeScript, Python and Rust SDKs) against real
//! reference servers from npm, through Berth; then no process may remain.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn everything_and_memory(dir: &std::path::Path) -> String {
    let memory_file = dir.join("memory.jsonl").display().to_string();
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

fn node_client(berth: &Berth, path: &str, mode: &str) {
    let script = repo().join("tests/node/client.mjs");
    let (ok, out) = run_with_timeout(
        Command::new("node")
            .arg(script)
            .arg(format!("{}{path}", berth.base()))
            .arg(mode)
            .env("BERTH_E2E_STRICT", "1"),
        Duration::from_secs(90),
    );
    assert!(
        ok,
        "TypeScript SDK client ({mode} at {path}) failed:\n{out}\n--- berth log ---\n{}",
        berth.log()
    );
}

fn python_client(berth: &Berth, path: &str, mode: &str) {
    let script = repo().join("tests/python/client.py");
    let (ok, out) = run_with_timeout(
        Command::new(python())
            .arg(script)
            .arg(format!("{}{path}", berth.base()))
            .arg(mode)
            .env("BERTH_E2E_STRICT", "1"),
        Duration::from_secs(90),
    );
    assert!(
        ok,
        "Python SDK client ({mode} at {path}) failed:\n{out}\n--- berth log ---\n{}",
        berth.log()
    );
}

#[test]
fn typescript_sdk_client_through_berth() {
    let dir = tempfile::tempdir().unwrap();
    let berth = Berth::start("", &everything_and_memory(dir.path()));
    node_client(&berth, "/mcp/everything", "everything");
    node_client(&berth, "/mcp/memory", "memory");
    // Every session was deleted by its client: every process is reaped.
    berth.wait_for_children(0, Duration::from_secs(10));
}

#[test]
fn typescript_sdk_legacy_sse_client_through_berth() {
    let dir = tempfile::tempdir().unwrap();
    let berth = Berth::start("", &everything_and_memory(dir.path()));
    node_client(&berth, "/sse/everything", "sse");
    // A legacy session ends with its SSE connection.
    berth.wait_for_children(0, Duration::from_secs(10));
}

#[test]
fn python_sdk_client_through_berth() {
    let dir = tempfile::tempdir().unwrap();
    let berth = Berth::start("", &everything_and_memory(dir.path()));
    python_client(&berth, "/mcp/everything", "everything");
    python_client(&berth, "/mcp/memory", "memory");
    berth.wait_for_children(0, Duration::from_secs(10));
}
