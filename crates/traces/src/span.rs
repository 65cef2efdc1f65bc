//! One [`RequestRecord`] as one OTLP span, named and attributed as the
//! OpenTelemetry MCP semantic conventions say for a server span
//! (`{mcp.method.name} {gen_ai.tool.name}`, kind SERVER).

use std::time::{Duration, SystemTime};

use berth_telemetry::{Outcome, RequestRecord};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{Span, Status};
use sha2::{Digest, Sha256};

/// Span flags bits 8 and 9: whether the parent is remote is known, and it is.
const HAS_IS_REMOTE: u32 = 0x100;
const IS_REMOTE: u32 = 0x200;

/// Where Berth itself is reached (`server.address`, `server.port`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoint {
    pub address: Option<String>,
    pub port: Option<u16>,
}

/// The span of a request, or `None` when it carries no trace context or
/// its trace is not sampled.
pub fn span_of(record: &RequestRecord<'_>, endpoint: &Endpoint) -> Option<Span> {
    let trace = record.trace.filter(|t| t.sampled)?;
    // GET and DELETE stand in for the HTTP method of a request that carries
    // no JSON-RPC message (an SSE stream, a session's end).
    let http_only = matches!(record.method, Some("GET" | "DELETE"));
    let name = match (record.method, record.tool) {
        (Some(method), Some(tool)) => format!("{method} {tool}"),
        (Some(method), None) => method.to_owned(),
        (None, _) => "unknown".to_owned(),
    };
    let mut attributes = Vec::with_capacity(16);
    match record.method {
        Some(method) if http_only => attributes.push(text("http.request.method", method)),
        Some(method) => attributes.push(text("mcp.method.name", method)),
        None => {}
    }
    if let Some(tool) = record.tool {
        attributes.push(text("gen_ai.tool.name", tool));
        attributes.push(text("gen_ai.operation.name", "execute_tool"));
    }
    if let Some(session) = record.session {
        attributes.push(text("mcp.session.id", session));
    }
    if let Some(principal) = record.principal {
        attributes.push(text("enduser.id", &hashed_principal(principal)));
    }
    attributes.push(int("http.response.status_code", i64::from(record.status)));
    if let Some(code) = record.error_code {
        attributes.push(text("rpc.response.status_code", &code.to_string()));
    }
    let error_type = error_type(record);
    if let Some(error_type) = &error_type {
        attributes.push(text("error.type", error_type));
    }
    if let Some(address) = &endpoint.address {
        attributes.push(text("server.address", address));
        if let Some(port) = endpoint.port {
            attributes.push(int("server.port", i64::from(port)));
        }
    }
    attributes.push(text("network.protocol.name", "http"));
    attributes.push(text("network.transport", "tcp"));
    attributes.push(int("http.request.body.size", saturating(record.bytes_in)));
    attributes.push(int("http.response.body.size", saturating(record.bytes_out)));
    attributes.push(text("berth.server", record.server));
    attributes.push(text("berth.era", record.era.label()));
    attributes.push(text("berth.outcome", record.outcome.label()));
    if let Some(upstream) = record.upstream {
        attributes.push(double("berth.upstream.duration", upstream.as_secs_f64()));
    }
    let status = match record.outcome {
        Outcome::Error | Outcome::Refused => Status {
            code: StatusCode::Error as i32,
            message: match record.error_code {
                Some(code) => format!("JSON-RPC error {code}"),
                None => format!("HTTP {}", record.status),
            },
        },
        Outcome::Ok | Outcome::ToolError => Status::default(),
    };
    let start = unix_nanos(record.started_at);
    let end = unix_nanos(record.started_at + record.total);
    let remote_parent = if trace.parent_span_id.is_some() {
        IS_REMOTE
    } else {
        0
    };
    Some(Span {
        trace_id: trace.trace_id.to_vec(),
        span_id: trace.span_id.to_vec(),
        parent_span_id: trace.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
        flags: u32::from(trace.sampled) | HAS_IS_REMOTE | remote_parent,
        name,
        kind: SpanKind::Server as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: end.max(start),
        attributes,
        status: Some(status),
        ..Span::default()
    })
}

/// `error.type`: the JSON-RPC error code when there is one, `tool_error`
/// for a tool's error result, the HTTP status of a refusal.
fn error_type(record: &RequestRecord<'_>) -> Option<String> {
    match (record.outcome, record.error_code) {
        (Outcome::Ok, _) => None,
        (Outcome::ToolError, _) => Some("tool_error".to_owned()),
        (_, Some(code)) => Some(code.to_string()),
        (Outcome::Refused, None) => Some(record.status.to_string()),
        (Outcome::Error, None) => Some("_OTHER".to_owned()),
    }
}

/// A principal as spans name it: the first 16 hex digits of the SHA-256 of
/// its id, so traces can be grouped by caller without carrying who it is.
pub fn hashed_principal(id: &str) -> String {
    Sha256::digest(id.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn unix_nanos(at: SystemTime) -> u64 {
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
}

fn saturating(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(crate) fn text(key: &str, value: &str) -> KeyValue {
    attribute(key, any_value::Value::StringValue(value.to_owned()))
}

fn int(key: &str, value: i64) -> KeyValue {
    attribute(key, any_value::Value::IntValue(value))
}

fn double(key: &str, value: f64) -> KeyValue {
    attribute(key, any_value::Value::DoubleValue(value))
}

fn attribute(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_telemetry::{Era, TraceContext};

    fn record(outcome: Outcome) -> RequestRecord<'static> {
        RequestRecord {
            server: "echo",
            principal: Some("alice"),
            method: Some("tools/call"),
            tool: Some("echo"),
            era: Era::Handshake,
            status: 200,
            outcome,
            total: Duration::from_millis(7),
            upstream: Some(Duration::from_millis(5)),
            bytes_in: 120,
            bytes_out: 80,
            started_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            trace: Some(TraceContext::continue_or_start(
                Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
                [7; 8],
                [9; 16],
            )),
            session: Some("s-1"),
            error_code: None,
        }
    }

    fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a any_value::Value> {
        span.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.as_ref())
    }

    fn string(span: &Span, key: &str) -> Option<String> {
        match attr(span, key) {
            Some(any_value::Value::StringValue(s)) => Some(s.clone()),
            _ => None,
        }
    }

    #[test]
    fn a_tool_call_becomes_a_server_span() {
        let endpoint = Endpoint {
            address: Some("gw.example".into()),
            port: Some(8080),
        };
        let span = span_of(&record(Outcome::Ok), &endpoint).expect("sampled");
        assert_eq!(span.name, "tools/call echo");
        assert_eq!(span.kind, SpanKind::Server as i32);
        assert_eq!(
            span.trace_id,
            [
                0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e,
                0x47, 0x36
            ]
        );
        assert_eq!(span.span_id, [7; 8]);
        assert_eq!(
            span.parent_span_id,
            [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
        );
        assert_eq!(span.flags, 0x301);
        assert_eq!(span.start_time_unix_nano, 1_700_000_000_000_000_000);
        assert_eq!(span.end_time_unix_nano, 1_700_000_000_007_000_000);
        assert_eq!(
            string(&span, "mcp.method.name").as_deref(),
            Some("tools/call")
        );
        assert_eq!(string(&span, "gen_ai.tool.name").as_deref(), Some("echo"));
        assert_eq!(string(&span, "mcp.session.id").as_deref(), Some("s-1"));
        assert_eq!(string(&span, "berth.server").as_deref(), Some("echo"));
        assert_eq!(
            string(&span, "server.address").as_deref(),
            Some("gw.example")
        );
        assert_eq!(
            attr(&span, "http.response.status_code"),
            Some(&any_value::Value::IntValue(200))
        );
        assert_eq!(string(&span, "error.type"), None);
        assert_eq!(span.status.as_ref().map(|s| s.code), Some(0));
        // Never the raw id: 16 hex digits of its SHA-256.
        let user = string(&span, "enduser.id").expect("enduser.id");
        assert_eq!(user, "2bd806c97f0e00af");
        assert!(span.attributes.iter().all(|kv| {
            !matches!(kv.value.as_ref().and_then(|v| v.value.as_ref()),
                Some(any_value::Value::StringValue(s)) if s.contains("alice"))
        }));
    }

    #[test]
    fn errors_set_the_status_and_error_type() {
        let mut r = record(Outcome::Error);
        r.error_code = Some(-32602);
        let span = span_of(&r, &Endpoint::default()).expect("sampled");
        assert_eq!(string(&span, "error.type").as_deref(), Some("-32602"));
        assert_eq!(
            string(&span, "rpc.response.status_code").as_deref(),
            Some("-32602")
        );
        assert_eq!(
            span.status.as_ref().map(|s| s.code),
            Some(StatusCode::Error as i32)
        );

        let mut r = record(Outcome::Refused);
        r.status = 401;
        r.method = None;
        r.tool = None;
        let span = span_of(&r, &Endpoint::default()).expect("sampled");
        assert_eq!(span.name, "unknown");
        assert_eq!(string(&span, "error.type").as_deref(), Some("401"));
        assert_eq!(
            span.status.as_ref().map(|s| s.code),
            Some(StatusCode::Error as i32)
        );

        let span = span_of(&record(Outcome::ToolError), &Endpoint::default()).expect("sampled");
        assert_eq!(string(&span, "error.type").as_deref(), Some("tool_error"));
        assert_eq!(span.status.as_ref().map(|s| s.code), Some(0));
    }

    #[test]
    fn unsampled_and_untraced_requests_make_no_span() {
        let mut r = record(Outcome::Ok);
        r.trace = Some(TraceContext::continue_or_start(
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
            [7; 8],
            [9; 16],
        ));
        assert!(span_of(&r, &Endpoint::default()).is_none());
        r.trace = None;
        assert!(span_of(&r, &Endpoint::default()).is_none());
    }

    #[test]
    fn a_new_trace_has_no_parent() {
        let mut r = record(Outcome::Ok);
        r.trace = Some(TraceContext::continue_or_start(None, [7; 8], [9; 16]));
        r.method = Some("GET");
        r.tool = None;
        let span = span_of(&r, &Endpoint::default()).expect("sampled");
        assert!(span.parent_span_id.is_empty());
        assert_eq!(span.flags, 0x101);
        assert_eq!(span.name, "GET");
        assert_eq!(string(&span, "mcp.method.name"), None);
        assert_eq!(string(&span, "http.request.method").as_deref(), Some("GET"));
    }
}
