//! Time to first tool result of a new session: the measurement loop, and
//! one session over Streamable HTTP.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::{Value, json};

use crate::mcp::McpHttp;
use crate::report::{Recorder, Sample};

/// The tool called in every session, and its arguments.
pub const TOOL: &str = "echo";
pub const TOOL_TEXT: &str = "hi";

/// A tool call and the text its result must hold: the echo fixture's, or
/// another server's (`everything`'s `echo` takes `message`).
#[derive(Debug, Clone)]
pub struct ToolCall {
    pub name: String,
    pub arguments: Value,
    /// The first content item's `text`.
    pub expect: String,
}

impl ToolCall {
    /// `berth-fixture echo`: `echo {"text": "hi"}` answers `hi`.
    pub fn fixture_echo() -> Self {
        ToolCall {
            name: TOOL.into(),
            arguments: json!({ "text": TOOL_TEXT }),
            expect: TOOL_TEXT.into(),
        }
    }

    /// The reference `everything` server (npm): `echo {"message": "hi"}`
    /// answers `Echo: hi`.
    pub fn everything_echo() -> Self {
        ToolCall {
            name: "echo".into(),
            arguments: json!({ "message": TOOL_TEXT }),
            expect: format!("Echo: {TOOL_TEXT}"),
        }
    }

    /// The tool must have answered with the expected text.
    pub fn check(&self, response: &Value) -> Result<()> {
        let text = &response["result"]["content"][0]["text"];
        if text != self.expect.as_str() {
            bail!("tools/call {}: unexpected result {response}", self.name);
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// Recorded sessions.
    pub sessions: u64,
    /// Sessions run first and not recorded.
    pub warmup: u64,
    /// Sleep between two sessions (not before the first).
    pub pause: Duration,
}

/// Runs `warmup + sessions` sessions one after the other; `session` returns
/// one session's latency. Errors are counted, never fatal; the first few are
/// also printed on stderr, prefixed with `label`.
pub async fn run<F, Fut>(label: &str, options: RunOptions, mut session: F) -> Recorder
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Sample>>,
{
    let mut recorder = Recorder::default();
    let mut printed = 0;
    for i in 0..options.warmup + options.sessions {
        if i > 0 && !options.pause.is_zero() {
            tokio::time::sleep(options.pause).await;
        }
        let warmup = i < options.warmup;
        match session().await {
            Ok(sample) if !warmup => recorder.record(&sample),
            Ok(_) => {}
            Err(error) => {
                if printed < 3 {
                    printed += 1;
                    let kind = if warmup { "warm-up session" } else { "session" };
                    eprintln!("{label}: {kind} {} failed: {error:#}", i + 1);
                }
                if !warmup {
                    recorder.error(&error);
                }
            }
        }
    }
    recorder
}

/// One timed session: from just before `initialize` is sent to the arrival
/// of the `tools/call` result. The session is then deleted, off the clock;
/// a session that cannot be deleted counts as failed.
pub async fn http_session(client: &McpHttp) -> Result<Sample> {
    http_session_with(client, &ToolCall::fixture_echo()).await
}

/// [`http_session`] with another tool call.
pub async fn http_session_with(client: &McpHttp, call: &ToolCall) -> Result<Sample> {
    let start = Instant::now();
    let (session, init) = client.initialize().await?;
    let timed = async {
        client.initialized(&session).await?;
        let acked = Instant::now();
        let reply = client
            .call_tool(&session, 1, &call.name, call.arguments.clone())
            .await?;
        call.check(&reply.message)?;
        Ok::<_, anyhow::Error>(Sample {
            total: reply.arrived - start,
            phases: vec![
                ("initialize", init.arrived - start),
                ("initialized", acked - init.arrived),
                ("tools/call", reply.arrived - acked),
            ],
        })
    }
    .await;
    let deleted = client.delete(&session).await;
    let sample = timed?;
    deleted?;
    Ok(sample)
}

/// The echo tool must have answered with our text.
pub fn check_echo(response: &Value) -> Result<()> {
    let text = &response["result"]["content"][0]["text"];
    if text != TOOL_TEXT {
        bail!("tools/call {TOOL}: unexpected result {response}");
    }
    Ok(())
}
