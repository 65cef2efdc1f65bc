//! What each request did, noted as it is handled and reported to the
//! gateway's telemetry once its answer is out.
//!
//! The admission layer opens a [`Note`] for every MCP request (a task-local,
//! so handlers need no extra parameters); the handlers and the engine write
//! what only they know (the method, the tool, the era, the time spent
//! waiting for the server, how the answer ended); the admission layer then
//! builds the [`RequestRecord`]. Answers streamed over SSE are reported when
//! the stream's head is out: what the server sends later is not in the note.

use std::cell::RefCell;
use std::sync::LazyLock;
use std::time::Duration;

use berth_telemetry::{Era, Outcome};
use memchr::memmem::Finder;

/// What is known of the request being handled.
#[derive(Debug, Clone)]
pub(crate) struct Note {
    pub(crate) method: Option<&'static str>,
    pub(crate) tool: Option<Box<str>>,
    pub(crate) era: Era,
    /// Time spent waiting for the server's answers.
    pub(crate) upstream: Option<Duration>,
    /// How the server's answer ended, when one came.
    pub(crate) outcome: Option<Outcome>,
    pub(crate) bytes_in: u64,
}

impl Default for Note {
    fn default() -> Self {
        Note {
            method: None,
            tool: None,
            era: Era::Handshake,
            upstream: None,
            outcome: None,
            bytes_in: 0,
        }
    }
}

tokio::task_local! {
    pub(crate) static NOTE: RefCell<Note>;
}

/// Writes to the note of the request being handled (nothing outside one).
pub(crate) fn note(f: impl FnOnce(&mut Note)) {
    let _ = NOTE.try_with(|note| f(&mut note.borrow_mut()));
}

/// Notes the message a request carries: its method (bounded to the names
/// metrics count) and its tool.
pub(crate) fn note_message(msg: &berth_wire::Message) {
    note(|n| {
        n.method = Some(berth_telemetry::metrics::method_label(msg.method()));
        n.tool = msg.tool().map(Into::into);
    });
}

/// Notes an answer from the server, `waited` after the request was sent.
pub(crate) fn note_answer(bytes: &[u8], waited: Duration) {
    let outcome = outcome_of(bytes);
    note(|n| {
        n.upstream = Some(n.upstream.map_or(waited, |u| u.max(waited)));
        // The worst answer of a batch stands for it.
        n.outcome = Some(match (n.outcome, outcome) {
            (Some(Outcome::Error), _) | (_, Outcome::Error) => Outcome::Error,
            (Some(Outcome::ToolError), _) | (_, Outcome::ToolError) => Outcome::ToolError,
            _ => Outcome::Ok,
        });
    });
}

/// How an answer ended: an error, a tool's error result, or a result. The
/// bytes are searched before anything is parsed (most answers are results).
pub(crate) fn outcome_of(answer: &[u8]) -> Outcome {
    static ERROR: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"error\""));
    static IS_ERROR: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"isError\""));
    if ERROR.find(answer).is_some() && berth_wire::modern::error_code(answer).is_some() {
        return Outcome::Error;
    }
    if IS_ERROR.find(answer).is_some() && is_tool_error(answer) {
        return Outcome::ToolError;
    }
    Outcome::Ok
}

fn is_tool_error(answer: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Answer {
        result: Option<ToolResult>,
    }
    #[derive(serde::Deserialize)]
    struct ToolResult {
        #[serde(rename = "isError")]
        is_error: Option<bool>,
    }
    serde_json::from_slice::<Answer>(answer)
        .ok()
        .and_then(|a| a.result)
        .and_then(|r| r.is_error)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_told_apart() {
        assert_eq!(
            outcome_of(br#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#),
            Outcome::Ok
        );
        assert_eq!(
            outcome_of(br#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":true}}"#),
            Outcome::ToolError
        );
        assert_eq!(
            outcome_of(br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"x"}}"#),
            Outcome::Error
        );
        // A result that mentions the words is still a result.
        assert_eq!(
            outcome_of(
                br#"{"jsonrpc":"2.0","id":1,"result":{"structuredContent":{"error":"none","isError":false}}}"#
            ),
            Outcome::Ok
        );
    }
}
