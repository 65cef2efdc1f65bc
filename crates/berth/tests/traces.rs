//! OpenTelemetry traces end to end: a real Berth exports one span per MCP
//! request to an OTLP/HTTP receiver run here on loopback; the bodies are
//! decoded by the official `opentelemetry-proto` Python messages; the
//! server's stdin transcript shows the `_meta.traceparent` it was given.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use common::{Berth, Raw, api_key, fixture_server, python};
use serde_json::{Value, json};

/// The client's trace when it sends a `traceparent` header.
const HEADER_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const HEADER_PARENT: &str = "b7ad6b7169203331";
/// The client's trace when it puts `traceparent` in `params._meta`.
const META_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const META_PARENT: &str = "00f067aa0ba902b7";
/// A 2026-07-28 client's trace, in `_meta` too.
const MODERN_TRACE: &str = "5d4a3a3b0e2f4c9d8a7b6c5d4e3f2a1b";
const MODERN_PARENT: &str = "1122334455667788";
/// SHA-256 of the principal id `key:agent`, first 16 hex digits
/// (computed independently: `printf key:agent | sha256sum`).
const AGENT_HASH: &str = "a76b5dca0f7530ce";

/// One POST the receiver got.
#[derive(Clone)]
struct Post {
    path: String,
    content_type: String,
    body: Bytes,
}

#[derive(Default)]
struct Collector {
    posts: Mutex<Vec<Post>>,
}

async fn collect(
    State(collector): State<Arc<Collector>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    collector.posts.lock().unwrap().push(Post {
        path: uri.path().to_owned(),
        content_type: headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        body,
    });
    StatusCode::OK
}

/// An OTLP/HTTP receiver on loopback; stops with the test's runtime.
async fn receiver() -> (Arc<Collector>, SocketAddr) {
    let collector = Arc::new(Collector::default());
    let app = axum::Router::new()
        .fallback(collect)
        .with_state(collector.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (collector, addr)
}

/// Every span in the posts, decoded by tests/python/decode_otlp.py.
fn decode(posts: &[Post]) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<String> = posts
        .iter()
        .enumerate()
        .map(|(i, post)| {
            let path = dir.path().join(format!("{i}.pb"));
            std::fs::write(&path, &post.body).unwrap();
            path.display().to_string()
        })
        .collect();
    let script = common::repo().join("tests/python/decode_otlp.py");
    let out = Command::new(python())
        .arg(&script)
        .args(&files)
        .stdin(Stdio::null())
        .output()
        .expect("run decode_otlp.py");
    assert!(
        out.status.success(),
        "decode_otlp.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("decode_otlp.py prints JSON")
}

/// Waits until the spans received satisfy `done`.
async fn spans_until(
    collector: &Collector,
    within: Duration,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + within;
    loop {
        let posts = collector.posts.lock().unwrap().clone();
        let spans = decode(&posts);
        if done(&spans) {
            return spans;
        }
        assert!(
            Instant::now() < deadline,
            "the spans expected did not arrive within {within:?}; got {}",
            serde_json::to_string_pretty(&spans).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The server's stdin transcript (every line it was sent), writable by the
/// sandboxed server.
fn transcript_file() -> tempfile::NamedTempFile {
    let record = tempfile::NamedTempFile::new().unwrap();
    std::fs::set_permissions(
        record.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    record
}

fn recorded_server(record: &tempfile::NamedTempFile) -> String {
    let path = record.path().display().to_string();
    format!(
        "{}env = {{ BERTH_FIXTURE_RECORD = {path:?} }}\n[servers.svc.sandbox]\nwritable = [{path:?}]\n",
        fixture_server("svc", "echo")
    )
}

/// The line of the transcript whose tool call carries `text`.
fn sent_with(record: &tempfile::NamedTempFile, text: &str) -> Value {
    let transcript = std::fs::read_to_string(record.path()).unwrap();
    transcript
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|m| m["params"]["arguments"]["text"] == text)
        .unwrap_or_else(|| {
            panic!("no tools/call with text {text:?} reached the server:\n{transcript}")
        })
}

fn call_body(id: u64, tool: &str, text: &str, meta: Option<Value>) -> String {
    let mut params = json!({"name": tool, "arguments": {"text": text}});
    if let Some(meta) = meta {
        params["_meta"] = meta;
    }
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params}).to_string()
}

fn span_by<'a>(spans: &'a [Value], name: &str, text_trace: Option<&str>) -> &'a Value {
    spans
        .iter()
        .find(|s| s["name"] == name && text_trace.is_none_or(|t| s["trace_id"] == t))
        .unwrap_or_else(|| {
            panic!(
                "no span {name:?} (trace {text_trace:?}) in {}",
                serde_json::to_string_pretty(spans).unwrap()
            )
        })
}

fn is_hex_id(value: &Value, digits: usize) -> bool {
    value.as_str().is_some_and(|s| {
        s.len() == digits
            && s.bytes().all(|b| b.is_ascii_hexdigit())
            && s.bytes().any(|b| b != b'0')
    })
}

#[tokio::test]
async fn each_request_is_one_span_and_the_server_joins_the_trace() {
    let (collector, otlp) = receiver().await;
    let (key, key_table) = api_key("agent");
    let record = transcript_file();
    let berth = Berth::start(
        &format!("[telemetry]\notlp = \"http://{otlp}\"\n[auth]\nmode = \"api_key\"\n{key_table}"),
        &recorded_server(&record),
    );
    let began = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;

    let mut raw = Raw::new(berth.url("svc"));
    raw.token = Some(key.clone());
    raw.initialize("2025-11-25").await;
    let session = raw.session.clone().unwrap();

    // A traceparent header.
    let header = format!("00-{HEADER_TRACE}-{HEADER_PARENT}-01");
    let reply = raw
        .post_with(
            call_body(1, "echo", "one", None),
            &[("traceparent", &header)],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    // A traceparent in _meta only.
    let meta = format!("00-{META_TRACE}-{META_PARENT}-01");
    let reply = raw
        .post(&call_body(
            2,
            "echo",
            "two",
            Some(json!({"traceparent": meta})),
        ))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    // None: Berth starts a trace.
    let reply = raw.post(&call_body(3, "echo", "three", None)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    // A JSON-RPC error from the server.
    let reply = raw.post(&call_body(4, "nope", "five", None)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["error"]["code"], -32602, "{}", reply.body);
    // A 2026-07-28 request (no session), traced in _meta.
    let modern_tp = format!("00-{MODERN_TRACE}-{MODERN_PARENT}-01");
    let mut stateless = Raw::new(berth.url("svc"));
    stateless.token = Some(key.clone());
    let reply = stateless
        .modern(
            json!(9),
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "four"}, "_meta": {"traceparent": modern_tp}}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    // Refused before any server: a key Berth does not know.
    let mut stranger = Raw::new(berth.url("svc"));
    stranger.token = Some("bk_not_a_key".into());
    let reply = stranger.post(&call_body(5, "echo", "six", None)).await;
    assert_eq!(reply.status, 401, "{}", reply.body);

    let spans = spans_until(&collector, Duration::from_secs(20), |spans| {
        spans
            .iter()
            .filter(|s| s["name"] == "tools/call echo")
            .count()
            >= 4
            && spans.iter().any(|s| s["name"] == "tools/call nope")
            && spans.iter().any(|s| s["attributes"]["error.type"] == "401")
    })
    .await;
    let ended = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    {
        let posts = collector.posts.lock().unwrap();
        assert!(posts.iter().all(|p| p.path == "/v1/traces"));
        assert!(
            posts
                .iter()
                .all(|p| p.content_type == "application/x-protobuf")
        );
    }
    // One span per request: initialize, initialized, five calls, the refusal.
    assert_eq!(
        spans.len(),
        8,
        "{}",
        serde_json::to_string_pretty(&spans).unwrap()
    );
    for span in &spans {
        assert_eq!(span["resource"]["service.name"], "berth");
        assert_eq!(
            span["resource"]["service.version"],
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(span["kind"], "SPAN_KIND_SERVER");
        assert!(
            is_hex_id(&span["trace_id"], 32) && is_hex_id(&span["span_id"], 16),
            "{span}"
        );
        let (start, end) = (
            span["start"].as_u64().unwrap(),
            span["end"].as_u64().unwrap(),
        );
        assert!(began <= start && start <= end && end <= ended, "{span}");
        assert_eq!(span["attributes"]["berth.server"], "svc");
        assert_eq!(span["attributes"]["server.address"], "127.0.0.1");
        assert_eq!(span["attributes"]["server.port"], berth.addr.port());
        // The principal only hashed, never as it is.
        assert!(!span.to_string().contains("key:agent"), "{span}");
        assert!(!span.to_string().contains(&key), "{span}");
    }
    let names: Vec<&str> = spans.iter().filter_map(|s| s["name"].as_str()).collect();
    assert!(
        names.contains(&"initialize") && names.contains(&"notifications/initialized"),
        "{names:?}"
    );

    // The client's initialize reached the server (no pre-initialized
    // process here) with Berth's initialize span as its parent.
    let init = spans
        .iter()
        .find(|s| s["name"] == "initialize")
        .expect("the initialize span");
    let init_parent = format!(
        "00-{}-{}-01",
        init["trace_id"].as_str().unwrap(),
        init["span_id"].as_str().unwrap()
    );
    let transcript = std::fs::read_to_string(record.path()).unwrap();
    assert!(
        transcript
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .any(|m| m["method"] == "initialize"
                && m["params"]["_meta"]["traceparent"] == init_parent.as_str()),
        "no initialize with {init_parent} reached the server:\n{transcript}"
    );

    // The client's header: its trace, its span as the parent.
    let one = span_by(&spans, "tools/call echo", Some(HEADER_TRACE));
    assert_eq!(one["parent_span_id"], HEADER_PARENT);
    let a = &one["attributes"];
    assert_eq!(a["mcp.method.name"], "tools/call");
    assert_eq!(a["gen_ai.tool.name"], "echo");
    assert_eq!(a["gen_ai.operation.name"], "execute_tool");
    assert_eq!(a["mcp.session.id"], session.as_str());
    assert_eq!(a["enduser.id"], AGENT_HASH);
    assert_eq!(a["http.response.status_code"], 200);
    assert_eq!(a["berth.era"], "handshake");
    assert!(a.get("error.type").is_none(), "{one}");
    assert_eq!(one["status"]["code"], "STATUS_CODE_UNSET");
    // Sampled, with a remote parent (OTLP span flags).
    assert_eq!(one["flags"], 0x301);

    // The client's _meta.traceparent, when there is no header.
    let two = span_by(&spans, "tools/call echo", Some(META_TRACE));
    assert_eq!(two["parent_span_id"], META_PARENT);
    assert_eq!(two["attributes"]["mcp.session.id"], session.as_str());

    // Neither: a new trace, Berth's span is its root.
    let three = spans
        .iter()
        .find(|s| {
            s["name"] == "tools/call echo"
                && s["attributes"]["berth.era"] == "handshake"
                && s["trace_id"] != HEADER_TRACE
                && s["trace_id"] != META_TRACE
        })
        .expect("the untraced call's span");
    assert_eq!(three["parent_span_id"], "");
    assert_eq!(three["flags"], 0x101);

    // Each server got its request with Berth's span as the parent of its own.
    for (text, span) in [("one", one), ("two", two), ("three", three)] {
        let sent = sent_with(&record, text);
        assert_eq!(
            sent["params"]["_meta"]["traceparent"],
            format!(
                "00-{}-{}-01",
                span["trace_id"].as_str().unwrap(),
                span["span_id"].as_str().unwrap()
            ),
            "{text}: {sent}"
        );
        assert_eq!(sent["params"]["name"], "echo");
        assert_eq!(sent["params"]["arguments"]["text"], text);
    }

    // A JSON-RPC error: its code is the error type, the span an error.
    let nope = span_by(&spans, "tools/call nope", None);
    assert_eq!(nope["attributes"]["error.type"], "-32602");
    assert_eq!(nope["attributes"]["rpc.response.status_code"], "-32602");
    assert_eq!(nope["status"]["code"], "STATUS_CODE_ERROR");

    // The stateless era: no session, the trace from _meta, passed on too.
    let four = span_by(&spans, "tools/call echo", Some(MODERN_TRACE));
    assert_eq!(four["parent_span_id"], MODERN_PARENT);
    assert_eq!(four["attributes"]["berth.era"], "2026-07-28");
    assert!(four["attributes"].get("mcp.session.id").is_none(), "{four}");
    assert_eq!(four["attributes"]["enduser.id"], AGENT_HASH);
    let sent = sent_with(&record, "four");
    assert_eq!(
        sent["params"]["_meta"]["traceparent"],
        format!("00-{MODERN_TRACE}-{}-01", four["span_id"].as_str().unwrap())
    );
    // The rest of the client's _meta reached the server as it was.
    assert_eq!(
        sent["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"],
        "2026-07-28"
    );

    // The refusal: a span of its own, an error, and no principal to name.
    let refused = spans
        .iter()
        .find(|s| s["attributes"]["error.type"] == "401")
        .unwrap();
    assert_eq!(refused["status"]["code"], "STATUS_CODE_ERROR");
    assert!(
        refused["attributes"].get("enduser.id").is_none(),
        "{refused}"
    );
    assert!(
        !std::fs::read_to_string(record.path())
            .unwrap()
            .contains("\"six\""),
        "a refused request reached the server"
    );
}

#[tokio::test]
async fn without_otlp_the_server_gets_the_bytes_the_client_sent() {
    let record = transcript_file();
    let berth = Berth::start("", &recorded_server(&record));
    let mut raw = Raw::new(berth.url("svc"));
    raw.initialize("2025-11-25").await;
    // Odd spacing, an escape, a big number and a traceparent of the client's.
    let body = r#"{"jsonrpc":"2.0", "id":7,"method":"tools/call","params":{ "name":"echo","arguments":{"text":"byte\u0073","n":123456789012345678901234567890},"_meta":{"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}}"#;
    let reply = raw
        .post_with(
            body.to_string(),
            &[(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            )],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let transcript = std::fs::read_to_string(record.path()).unwrap();
    assert!(
        transcript.lines().any(|line| line == body),
        "the request did not reach the server byte for byte:\n{transcript}"
    );
}
