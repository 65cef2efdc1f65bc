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
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use berth_telemetry::{Era, Outcome, TraceContext};
use berth_wire::Message;
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
    /// The JSON-RPC error code of the (first) error answer.
    pub(crate) error_code: Option<i64>,
    pub(crate) bytes_in: u64,
    /// The request's trace context, when tracing is on.
    pub(crate) trace: Option<TraceContext>,
    /// Whether `trace` continues a `traceparent` header (which a
    /// `_meta.traceparent` in the body does not override).
    pub(crate) trace_from_header: bool,
    /// The session the request was served in.
    pub(crate) session: Option<Arc<str>>,
}

impl Default for Note {
    fn default() -> Self {
        Note {
            method: None,
            tool: None,
            era: Era::Handshake,
            upstream: None,
            outcome: None,
            error_code: None,
            bytes_in: 0,
            trace: None,
            trace_from_header: false,
            session: None,
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
/// metrics count), its tool, and, when tracing without a `traceparent`
/// header, the trace its `params._meta.traceparent` names.
pub(crate) fn note_message(msg: &Message) {
    note(|n| {
        n.method = Some(berth_telemetry::metrics::method_label(msg.method()));
        n.tool = msg.tool().map(Into::into);
        if let Some(trace) = n.trace.filter(|_| !n.trace_from_header)
            && let Some(parent) = meta_traceparent(&msg.bytes)
        {
            // The same span, now a child of the client's.
            let continued =
                TraceContext::continue_or_start(Some(&parent), trace.span_id, trace.trace_id);
            if continued.parent_span_id.is_some() {
                n.trace = Some(continued);
            }
        }
    });
}

/// Notes the session the request is served in.
pub(crate) fn note_session(id: &Arc<str>) {
    note(|n| n.session = Some(id.clone()));
}

/// The request as the server gets it when tracing: `params._meta.traceparent`
/// names this request's span, so the server's own spans are its children.
/// `None` when not tracing (or the message has nowhere to put it): then the
/// original bytes go on untouched.
pub(crate) fn traced(msg: &Message) -> Option<Message> {
    let trace = NOTE.try_with(|n| n.borrow().trace).ok().flatten()?;
    let value = serde_json::Value::from(trace.traceparent()).to_string();
    let bytes = berth_wire::with_meta(&msg.bytes, "traceparent", &value)?;
    msg.reparse(bytes).ok()
}

/// `params._meta.traceparent` of a request, if it is a string. The bytes
/// are searched first (a backslash may hide an escaped key).
fn meta_traceparent(bytes: &[u8]) -> Option<String> {
    static KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"traceparent"));
    if KEY.find(bytes).is_none() && memchr::memchr(b'\\', bytes).is_none() {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct Params {
        #[serde(rename = "_meta")]
        meta: Option<Meta>,
    }
    #[derive(serde::Deserialize)]
    struct Meta {
        traceparent: Option<serde_json::Value>,
    }
    let params = berth_wire::Envelope::parse(bytes).ok()?.params?;
    let params: Params = serde_json::from_str(params.get()).ok()?;
    match params.meta?.traceparent? {
        serde_json::Value::String(s) => Some(s),
        _ => None,
    }
}

/// Notes an answer from the server, `waited` after the request was sent.
pub(crate) fn note_answer(bytes: &[u8], waited: Duration) {
    // Read inside the note: with telemetry off there is none, and the
    // answer is not searched at all.
    note(|n| {
        let outcome = outcome_of(bytes);
        if outcome == Outcome::Error && n.error_code.is_none() {
            n.error_code = berth_wire::modern::error_code(bytes);
        }
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

    const CLIENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    /// What `note_message` makes of `body` under a note holding `trace`,
    /// and the bytes `traced` would send.
    fn noted(
        body: &str,
        trace: TraceContext,
        from_header: bool,
    ) -> (Option<TraceContext>, Option<String>) {
        let msg = Message::parse(bytes::Bytes::from(body.to_owned())).unwrap();
        let note = Note {
            trace: Some(trace),
            trace_from_header: from_header,
            ..Note::default()
        };
        NOTE.sync_scope(RefCell::new(note), || {
            note_message(&msg);
            let sent = traced(&msg).map(|m| String::from_utf8(m.bytes.to_vec()).unwrap());
            (NOTE.with(|n| n.borrow().trace), sent)
        })
    }

    #[test]
    fn a_body_traceparent_is_continued_unless_a_header_was() {
        // Escaped key: still found.
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"t","_meta":{{"trace\u0070arent":"{CLIENT}"}}}}}}"#
        );
        let fresh = TraceContext::continue_or_start(None, [1; 8], [2; 16]);
        let (trace, sent) = noted(&body, fresh, false);
        let trace = trace.unwrap();
        assert_eq!(trace.span_id, [1; 8]);
        assert_eq!(trace.trace_id[0], 0x4b);
        assert_eq!(trace.parent_span_id.map(|p| p[1]), Some(0xf0));
        let sent = sent.unwrap();
        assert!(
            sent.contains(&format!(r#""trace\u0070arent":"{}""#, trace.traceparent())),
            "{sent}"
        );

        // A header's trace stands.
        let header = TraceContext::continue_or_start(
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            [1; 8],
            [2; 16],
        );
        let (trace, _) = noted(&body, header, true);
        assert_eq!(trace, Some(header));

        // Not a string, or malformed: Berth's own trace stands.
        for meta in [r#"{"traceparent":7}"#, r#"{"traceparent":"00-zz-01"}"#] {
            let body = format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"_meta":{meta}}}}}"#
            );
            assert_eq!(noted(&body, fresh, false).0, Some(fresh), "{meta}");
        }
    }

    #[test]
    fn untraced_requests_are_sent_as_they_came() {
        let msg = Message::parse(bytes::Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
        ))
        .unwrap();
        assert!(
            NOTE.sync_scope(RefCell::new(Note::default()), || traced(&msg))
                .is_none()
        );
        assert!(traced(&msg).is_none());
    }

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
