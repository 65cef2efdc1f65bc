//! The stdio floor: spawn a server directly (no gateway) and time spawn →
//! `initialize` → first `tools/call` result over its stdin and stdout.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::mcp::PROTOCOL_VERSION;
use crate::report::Sample;
use crate::ttfr::ToolCall;

/// How long a server gets to exit once its stdin is closed.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// One timed session, from just before the spawn (the gateway's cold start
/// spawns too) to the `tools/call` result; `timeout` bounds the whole of it.
/// The server gets an empty environment, as Berth gives its servers (only
/// what their configuration names): the benchmark's own could slow it down
/// (`NODE_EXTRA_CA_CERTS` makes node parse a CA bundle at start-up).
/// The server is then stopped by closing its stdin, off the clock.
pub async fn direct_session(program: &Path, args: &[String], timeout: Duration) -> Result<Sample> {
    direct_session_with(program, args, &ToolCall::fixture_echo(), timeout).await
}

/// [`direct_session`] with another tool call.
pub async fn direct_session_with(
    program: &Path,
    args: &[String],
    call: &ToolCall,
    timeout: Duration,
) -> Result<Sample> {
    let start = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawning {}", program.display()))?;
    let mut stdin = child.stdin.take().context("no stdin")?;
    let mut lines = BufReader::new(child.stdout.take().context("no stdout")?).lines();

    let timed = tokio::time::timeout(timeout, handshake_and_call(&mut stdin, &mut lines, call))
        .await
        .map_err(|_| anyhow!("no tool result within {timeout:?}"))
        .and_then(|r| r)
        .map(|initialized| {
            let done = Instant::now();
            Sample {
                total: done - start,
                phases: vec![
                    ("spawn+initialize", initialized - start),
                    ("tools/call", done - initialized),
                ],
            }
        });

    drop(stdin);
    stop(&mut child).await;
    timed
}

/// Returns when the `initialize` result arrived.
async fn handshake_and_call(
    stdin: &mut ChildStdin,
    lines: &mut Lines<BufReader<ChildStdout>>,
    call: &ToolCall,
) -> Result<Instant> {
    let initialize = json!({
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": { "name": "berth-bench", "version": env!("CARGO_PKG_VERSION") }
        }
    });
    send(stdin, &initialize).await?;
    let response = response_with_id(lines, 0).await?;
    let initialized = Instant::now();
    if response.get("result").is_none() {
        bail!("initialize failed: {response}");
    }
    send(
        stdin,
        &json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }),
    )
    .await?;
    let request = json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": { "name": call.name, "arguments": call.arguments }
    });
    send(stdin, &request).await?;
    call.check(&response_with_id(lines, 1).await?)?;
    Ok(initialized)
}

pub(crate) async fn send(stdin: &mut ChildStdin, message: &Value) -> Result<()> {
    let mut line = message.to_string();
    line.push('\n');
    stdin
        .write_all(line.as_bytes())
        .await
        .context("writing to the server")?;
    stdin.flush().await.context("writing to the server")
}

/// Reads stdout lines until the response with `id` (other messages are skipped).
pub(crate) async fn response_with_id(
    lines: &mut Lines<BufReader<ChildStdout>>,
    id: u64,
) -> Result<Value> {
    loop {
        let line = lines
            .next_line()
            .await
            .context("reading from the server")?
            .ok_or_else(|| anyhow!("the server closed stdout before answering request {id}"))?;
        let Ok(message) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if message.get("id").and_then(Value::as_u64) == Some(id) && message.get("method").is_none()
        {
            return Ok(message);
        }
    }
}

/// Waits for the server to exit after stdin closed; kills it after [`EXIT_GRACE`].
async fn stop(child: &mut Child) {
    if tokio::time::timeout(EXIT_GRACE, child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}
