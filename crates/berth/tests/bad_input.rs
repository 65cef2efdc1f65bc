//! The bad-input table: each way a client or a stdio server can misbehave,
//! one test per row, with the HTTP status Berth must answer with and the
//! JSON-RPC error object in the body (code, and the key words of a message a
//! person can act on). Tests that start server processes end by checking that
//! every one of them was reaped.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use reqwest::Method;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The protocol revision the tests' sessions negotiate.
const VERSION: &str = "2025-11-25";
/// How long a stopped, crashed or killed child may take to be reaped.
const REAP: Duration = Duration::from_secs(15);
const PING: &str = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;

/// A gateway serving one fixture server, named after its mode, with extra
/// `[gateway]` lines.
fn gateway(gateway_lines: &str, mode: &str) -> Berth {
    Berth::start(gateway_lines, &fixture_server(mode, mode))
}

/// An initialized session on `server`.
async fn session(berth: &Berth, server: &str) -> Raw {
    let mut raw = Raw::new(berth.url(server));
    raw.initialize(VERSION).await;
    raw
}

/// Sends a request with exactly `headers` (none of the MCP defaults).
async fn send(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> Reply {
    let mut req = reqwest::Client::new().request(method, url).body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("HTTP request");
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    Reply {
        status,
        headers,
        body: resp.text().await.unwrap_or_default(),
    }
}

/// The JSON-RPC message a reply carries: its JSON body, or the last message
/// of its SSE stream.
fn message_of(reply: &Reply) -> Value {
    if reply.content_type().starts_with("text/event-stream") {
        reply
            .sse_messages()
            .pop()
            .unwrap_or_else(|| panic!("empty SSE stream: {}", reply.body))
    } else {
        assert!(
            reply.content_type().starts_with("application/json"),
            "Content-Type {:?} is not JSON; body: {}",
            reply.content_type(),
            reply.body
        );
        reply.json()
    }
}

/// Asserts that `reply` has HTTP `status` and a JSON-RPC error body whose
/// code is `code` (any integer when `None`) and whose message is a sentence
/// mentioning each of `words` (case-insensitively). Returns the error object.
#[track_caller]
fn assert_rpc_error(reply: &Reply, status: u16, code: Option<i64>, words: &[&str]) -> Value {
    assert_eq!(reply.status, status, "HTTP status; body: {}", reply.body);
    let msg = message_of(reply);
    assert_eq!(msg["jsonrpc"], "2.0", "not a JSON-RPC 2.0 message: {msg}");
    assert!(
        msg.get("id").is_some(),
        "a JSON-RPC error response must carry an id (null if unknown): {msg}"
    );
    assert!(
        msg.get("result").is_none(),
        "an error response carries no result: {msg}"
    );
    let error = &msg["error"];
    let actual = error["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("error.code is not an integer: {msg}"));
    if let Some(code) = code {
        assert_eq!(actual, code, "error.code: {msg}");
    }
    let message = error["message"]
        .as_str()
        .unwrap_or_else(|| panic!("error.message is not a string: {msg}"));
    assert!(
        message.len() >= 20 && message.contains(' '),
        "error.message is not a readable sentence: {message:?}"
    );
    for word in words {
        assert!(
            message.to_lowercase().contains(&word.to_lowercase()),
            "error.message should mention {word:?}: {message:?}"
        );
    }
    error.clone()
}

/// A request body sent with chunked transfer encoding, `size` bytes a chunk.
fn streamed(bytes: &[u8], size: usize) -> reqwest::Body {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(size).map(|c| Ok(c.to_vec())).collect();
    reqwest::Body::wrap_stream(futures::stream::iter(chunks))
}

/// One HTTP/1.1 chunk of a chunked body.
fn chunk(bytes: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", bytes.len()).into_bytes();
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
    out
}

/// Reads one HTTP/1.1 response with a Content-Length body; `None` if the
/// connection ends (or stalls for 5 s) first.
async fn read_response(tcp: &mut TcpStream) -> Option<Reply> {
    let mut buf = Vec::new();
    let mut piece = [0u8; 4096];
    let read = async {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let mut lines = head.split("\r\n");
                let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
                let mut headers = reqwest::header::HeaderMap::new();
                for line in lines {
                    let (name, value) = line.split_once(':')?;
                    headers.append(
                        reqwest::header::HeaderName::from_bytes(name.trim().as_bytes()).ok()?,
                        value.trim().parse().ok()?,
                    );
                }
                let length: usize = headers.get("content-length")?.to_str().ok()?.parse().ok()?;
                if buf.len() >= end + 4 + length {
                    let body =
                        String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).into_owned();
                    return Some(Reply {
                        status,
                        headers,
                        body,
                    });
                }
            }
            match tcp.read(&mut piece).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&piece[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .ok()
        .flatten()
}

/// Asserts that the gateway has no child process left, none a zombie.
fn assert_all_reaped(berth: &Berth) {
    berth.wait_for_children(0, REAP);
}

/// Row 1: a body that is not JSON → 400, -32700.
#[tokio::test]
async fn malformed_json_body_is_a_parse_error() {
    let berth = gateway("", "echo");
    let raw = Raw::new(berth.url("echo"));
    for body in [
        r#"{"jsonrpc":"2.0","id":1,"#,
        "{nope}",
        "not json at all",
        r#"{"jsonrpc":"2.0","id":1,"method":"ping"} trailing"#,
    ] {
        let reply = raw.post(body).await;
        assert_rpc_error(
            &reply,
            400,
            Some(-32700),
            &["Parse error", "not valid JSON"],
        );
    }
    assert_all_reaped(&berth);
}

/// Row 2: JSON that is not an object → 400, -32600.
#[tokio::test]
async fn non_object_body_is_an_invalid_request() {
    let berth = gateway("", "echo");
    let raw = Raw::new(berth.url("echo"));
    for body in ["42", r#""x""#, "true", "null"] {
        let reply = raw.post(body).await;
        assert_rpc_error(&reply, 400, Some(-32600), &["Invalid Request", "object"]);
    }
    assert_all_reaped(&berth);
}

/// Row 3: a message without `"jsonrpc": "2.0"` → 400, -32600.
#[tokio::test]
async fn missing_jsonrpc_member_is_an_invalid_request() {
    let berth = gateway("", "echo");
    let raw = Raw::new(berth.url("echo"));
    let reply = raw.post(r#"{"id":1,"method":"ping"}"#).await;
    assert_rpc_error(
        &reply,
        400,
        Some(-32600),
        &["Invalid Request", "missing", "\"jsonrpc\""],
    );
    let reply = raw
        .post(r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#)
        .await;
    assert_rpc_error(
        &reply,
        400,
        Some(-32600),
        &["Invalid Request", "\"jsonrpc\"", "2.0"],
    );
    assert_all_reaped(&berth);
}

/// Row 4: a body over `max_body_bytes` → 413, whether its length is declared
/// (Content-Length) or streamed (chunked transfer encoding). A client still
/// streaming when refused must be told the connection closes, or be able to
/// keep using it.
#[tokio::test]
async fn oversized_body_is_refused_with_413() {
    let berth = gateway("max_body_bytes = 1024", "echo");
    let raw = Raw::new(berth.url("echo"));
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"pad":"{}"}}}}"#,
        "x".repeat(2048)
    );
    let words = ["Payload Too Large", "1024", "max_body_bytes"];

    let reply = raw.post(&big).await;
    assert_rpc_error(&reply, 413, None, &words);
    let reply = raw.post_with(streamed(big.as_bytes(), 256), &[]).await;
    assert_rpc_error(&reply, 413, None, &words);

    // A streamed body under the limit is read whole and gets past the size
    // check (to the missing-session check). A new client: see below.
    let reply = Raw::new(berth.url("echo"))
        .post_with(streamed(PING.as_bytes(), 8), &[])
        .await;
    assert_rpc_error(&reply, 400, None, &["Mcp-Session-Id"]);

    // Over one connection: the head and 1500 bytes of a chunked body, the
    // rest only once the 413 is in.
    let mut tcp = TcpStream::connect(berth.addr).await.expect("connect");
    let (first, rest) = big.as_bytes().split_at(1500);
    let mut request = format!(
        "POST /mcp/echo HTTP/1.1\r\nhost: {}\r\naccept: {ACCEPT_BOTH}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
        berth.addr
    )
    .into_bytes();
    request.extend(chunk(first));
    tcp.write_all(&request)
        .await
        .expect("send the request head");
    let reply = read_response(&mut tcp)
        .await
        .expect("a response to the streamed body");
    assert_rpc_error(&reply, 413, None, &words);
    let announced_close = reply
        .headers
        .get_all("connection")
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.contains("close")));
    if !announced_close {
        // Keep-alive was not refused: the connection must still serve requests.
        let mut more = chunk(rest);
        more.extend_from_slice(b"0\r\n\r\n");
        more.extend_from_slice(
            format!("GET /healthz HTTP/1.1\r\nhost: {}\r\n\r\n", berth.addr).as_bytes(),
        );
        let next = match tcp.write_all(&more).await {
            Ok(()) => read_response(&mut tcp).await,
            Err(_) => None,
        };
        assert!(
            next.is_some_and(|r| r.status == 200),
            "after a 413 without `Connection: close` (headers: {:?}) the gateway closed the connection: a client's next request on it fails",
            reply.headers
        );
    }
    assert_all_reaped(&berth);
}

/// Row 5: an Accept header that leaves out what the transport may answer
/// with → 406 (POST must accept JSON and SSE; GET must accept SSE).
#[tokio::test]
async fn wrong_accept_is_refused_with_406() {
    let berth = gateway("", "echo");
    let raw = Raw::new(berth.url("echo"));
    for accept in ["application/json", "text/event-stream", "text/html"] {
        let reply = raw.post_with(PING.to_string(), &[("accept", accept)]).await;
        assert_rpc_error(
            &reply,
            406,
            None,
            &["Not Acceptable", "application/json", "text/event-stream"],
        );
    }
    let reply = send(
        Method::GET,
        &berth.url("echo"),
        &[("accept", "text/html")],
        "",
    )
    .await;
    assert_rpc_error(&reply, 406, None, &["Not Acceptable", "text/event-stream"]);
    assert_all_reaped(&berth);
}

/// Row 6: a body that is not declared as JSON → 415.
#[tokio::test]
async fn wrong_content_type_is_refused_with_415() {
    let berth = gateway("", "echo");
    let raw = Raw::new(berth.url("echo"));
    let reply = raw
        .post_with(PING.to_string(), &[("content-type", "text/plain")])
        .await;
    assert_rpc_error(
        &reply,
        415,
        None,
        &["Unsupported Media Type", "application/json"],
    );
    let reply = send(
        Method::POST,
        &berth.url("echo"),
        &[("accept", ACCEPT_BOTH)],
        PING,
    )
    .await;
    assert_rpc_error(
        &reply,
        415,
        None,
        &["Unsupported Media Type", "application/json"],
    );
    assert_all_reaped(&berth);
}

/// Row 7: a request other than initialize without Mcp-Session-Id → 400.
#[tokio::test]
async fn missing_session_header_is_refused_with_400() {
    let berth = gateway("", "echo");
    let raw = Raw::new(berth.url("echo"));
    let words = ["missing", "Mcp-Session-Id", "initialize"];
    assert_rpc_error(&raw.post(PING).await, 400, None, &words);
    let notification = raw
        .post(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
        .await;
    assert_rpc_error(&notification, 400, None, &words);
    assert_all_reaped(&berth);
}

/// Row 8: an Mcp-Session-Id the gateway does not know → 404, -32001.
#[tokio::test]
async fn unknown_session_is_404() {
    let berth = gateway("", "echo");
    let mut raw = Raw::new(berth.url("echo"));
    raw.session = Some("no-such-session".into());
    let reply = raw.post(PING).await;
    assert_rpc_error(
        &reply,
        404,
        Some(-32001),
        &["Session not found", "initialize"],
    );
    let get = send(
        Method::GET,
        &raw.url,
        &[
            ("accept", "text/event-stream"),
            ("mcp-session-id", "no-such-session"),
        ],
        "",
    )
    .await;
    assert_rpc_error(&get, 404, Some(-32001), &["Session not found"]);
    assert_all_reaped(&berth);
}

/// Row 9: an MCP-Protocol-Version header naming no supported revision → 400,
/// with the supported revisions listed.
#[tokio::test]
async fn unsupported_protocol_version_header_is_400() {
    let berth = gateway("", "echo");
    let raw = session(&berth, "echo").await;
    let reply = raw
        .post_with(PING.to_string(), &[("mcp-protocol-version", "1999-01-01")])
        .await;
    assert_rpc_error(
        &reply,
        400,
        None,
        &[
            "MCP-Protocol-Version",
            "1999-01-01",
            "supports",
            "2025-11-25",
            "2025-06-18",
            "2025-03-26",
        ],
    );
    // The session is untouched, and a supported version is accepted.
    let ok = raw
        .post_with(PING.to_string(), &[("mcp-protocol-version", VERSION)])
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(raw.delete().await, 200);
    assert_all_reaped(&berth);
}

/// Row 10: DNS-rebinding protection. A foreign Origin or Host → 403 (and no
/// process is started); no Origin (non-browser agents) and loopback Origins
/// are served.
#[tokio::test]
async fn disallowed_origin_or_host_is_403() {
    let berth = gateway("", "echo");
    let raw = Raw::new(berth.url("echo"));
    let init = initialize_body(VERSION);

    let reply = raw
        .post_with(init.clone(), &[("origin", "http://evil.example.com")])
        .await;
    assert_rpc_error(
        &reply,
        403,
        None,
        &["Forbidden", "Origin", "evil.example.com", "allowed_origins"],
    );
    let reply = raw
        .post_with(init.clone(), &[("host", "evil.example.com")])
        .await;
    assert_rpc_error(
        &reply,
        403,
        None,
        &["Forbidden", "Host", "evil.example.com", "allowed_hosts"],
    );
    let reply = raw
        .post_with(
            init.clone(),
            &[(
                "host",
                format!("evil.example.com:{}", berth.addr.port()).as_str(),
            )],
        )
        .await;
    assert_rpc_error(
        &reply,
        403,
        None,
        &["Forbidden", "Host", "evil.example.com"],
    );
    assert!(
        berth.children().is_empty(),
        "a refused request started a process: {:?}",
        berth.children()
    );

    let port = berth.addr.port();
    let loopback = [
        format!("http://localhost:{port}"),
        format!("http://127.0.0.1:{port}"),
        "http://localhost:3000".to_string(),
    ];
    let mut sessions = vec![session(&berth, "echo").await];
    for origin in &loopback {
        let reply = raw
            .post_with(init.clone(), &[("origin", origin.as_str())])
            .await;
        assert_eq!(reply.status, 200, "Origin {origin}: {}", reply.body);
        let mut s = Raw::new(berth.url("echo"));
        s.session = Some(
            reply.headers["mcp-session-id"]
                .to_str()
                .unwrap()
                .to_string(),
        );
        sessions.push(s);
    }
    for s in &sessions {
        assert_eq!(s.delete().await, 200);
    }
    assert_all_reaped(&berth);
}

/// Row 11: a server name that is not configured → 404 naming the servers
/// that are.
#[tokio::test]
async fn unknown_server_is_404_and_lists_servers() {
    let berth = Berth::start(
        "",
        &format!(
            "{}\n{}",
            fixture_server("echo", "echo"),
            fixture_server("other", "echo")
        ),
    );
    let url = berth.url("nope");
    let words = ["no server named", "nope", "echo", "other"];
    let raw = Raw::new(url.clone());
    assert_rpc_error(
        &raw.post(&initialize_body(VERSION)).await,
        404,
        None,
        &words,
    );
    let get = send(Method::GET, &url, &[("accept", "text/event-stream")], "").await;
    assert_rpc_error(&get, 404, None, &words);
    let delete = send(Method::DELETE, &url, &[("mcp-session-id", "x")], "").await;
    assert_rpc_error(&delete, 404, None, &words);
    assert_all_reaped(&berth);
}

/// Row 12: the server process crashes while a request is in flight → that
/// request gets a JSON-RPC error at once saying how the process ended, with
/// its stderr; the session is gone (404) and the process is reaped.
#[tokio::test]
async fn child_crash_fails_the_call_and_ends_the_session() {
    let berth = gateway("", "crash");
    let raw = session(&berth, "crash").await;
    let sent = Instant::now();
    let reply = raw.call_tool(7, "boom", serde_json::json!({})).await;
    let took = sent.elapsed();
    let error = assert_rpc_error(&reply, 200, Some(-32000), &["crash", "exited", "status 3"]);
    assert_eq!(message_of(&reply)["id"], 7, "{}", reply.body);
    assert!(
        took < Duration::from_secs(1),
        "the crash was reported after {took:?}"
    );
    assert!(
        error
            .to_string()
            .contains("fixture crash: exiting on purpose"),
        "the error should carry the server's stderr: {error}"
    );

    let next = raw.post(PING).await;
    assert_rpc_error(&next, 404, Some(-32001), &["Session not found"]);
    assert_all_reaped(&berth);
}

/// Row 13: the server never answers → after request_timeout a JSON-RPC
/// error -32004 naming the timeout; the session still serves other requests.
#[tokio::test]
async fn hanging_child_times_out_and_session_survives() {
    let berth = gateway("request_timeout = \"1s\"", "hang");
    let raw = session(&berth, "hang").await;
    let sent = Instant::now();
    let reply = raw.call_tool(7, "boom", serde_json::json!({})).await;
    let took = sent.elapsed();
    assert_rpc_error(
        &reply,
        200,
        Some(-32004),
        &["timed out", "hang", "1s", "request_timeout"],
    );
    assert_eq!(message_of(&reply)["id"], 7, "{}", reply.body);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "the timeout came after {took:?}"
    );

    // The fixture answers ping: the session and its process are still usable.
    let ping = raw.post(PING).await;
    assert_eq!(ping.status, 200, "{}", ping.body);
    assert_eq!(
        message_of(&ping)["result"],
        serde_json::json!({}),
        "{}",
        ping.body
    );
    assert_eq!(raw.delete().await, 200);
    assert_all_reaped(&berth);
}

/// Row 14: the server writes a 100 MiB line → a JSON-RPC error naming the
/// line limit (max_message_bytes, 16 MiB by default) while the gateway's
/// memory stays bounded; the session is gone (404) and the process reaped.
#[tokio::test]
async fn flooding_child_hits_the_line_limit_with_bounded_memory() {
    const CEILING_KIB: u64 = 100 * 1024;
    let berth = gateway("", "flood");
    let raw = session(&berth, "flood").await;
    let pid = berth.pid();
    let before = rss_kib(pid);

    // Sample the gateway's RSS while the call is in flight.
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !done.load(Ordering::Relaxed) {
                peak = peak.max(rss_kib(pid));
                std::thread::sleep(Duration::from_millis(5));
            }
            peak
        })
    };
    let reply = raw.call_tool(7, "boom", serde_json::json!({})).await;
    done.store(true, Ordering::Relaxed);
    let peak = sampler.join().expect("sampler");

    assert_rpc_error(
        &reply,
        200,
        Some(-32000),
        &["flood", "16777216-byte limit", "max_message_bytes"],
    );
    assert_eq!(message_of(&reply)["id"], 7, "{}", reply.body);
    let after = rss_kib(pid);
    println!("gateway RSS: before {before} KiB, peak {peak} KiB, after {after} KiB");
    assert!(before > 0 && peak > 0, "could not read the gateway's RSS");
    assert!(
        peak < CEILING_KIB,
        "gateway RSS peaked at {peak} KiB (before: {before} KiB)"
    );
    assert!(
        after < CEILING_KIB,
        "gateway RSS is {after} KiB after the flood (before: {before} KiB)"
    );

    let next = raw.post(PING).await;
    assert_rpc_error(&next, 404, Some(-32001), &["Session not found"]);
    assert_all_reaped(&berth);
}

/// Row 15: the server writes a line that is not JSON-RPC on stdout → a
/// JSON-RPC error saying so; the session is gone (404) and the process reaped.
#[tokio::test]
async fn garbage_on_stdout_is_reported() {
    let berth = gateway("", "garbage");
    let raw = session(&berth, "garbage").await;
    let reply = raw.call_tool(7, "boom", serde_json::json!({})).await;
    assert_rpc_error(
        &reply,
        200,
        Some(-32000),
        &["garbage", "not a JSON-RPC message", "this is not json"],
    );
    assert_eq!(message_of(&reply)["id"], 7, "{}", reply.body);

    let next = raw.post(PING).await;
    assert_rpc_error(&next, 404, Some(-32001), &["Session not found"]);
    assert_all_reaped(&berth);
}

/// Row 16: the server exits before answering initialize → 502 with a
/// JSON-RPC error giving its exit status and stderr; no session is created.
#[tokio::test]
async fn child_exiting_at_start_fails_initialize_with_502() {
    let berth = gateway("", "exit-at-start");
    let raw = Raw::new(berth.url("exit-at-start"));
    let reply = raw.post(&initialize_body(VERSION)).await;
    let error = assert_rpc_error(
        &reply,
        502,
        Some(-32000),
        &["exit-at-start", "exited", "status 1", "failing at start"],
    );
    assert_eq!(message_of(&reply)["id"], 0, "{}", reply.body);
    assert!(
        reply.headers.get("mcp-session-id").is_none(),
        "a failed initialize must not start a session"
    );
    assert!(
        error.to_string().contains("fixture: failing at start"),
        "{error}"
    );
    assert_all_reaped(&berth);
}

/// Row 17: session-header misuse. initialize with a session id → 400 (and
/// no process); DELETE or GET without one → 400; DELETE of an unknown one → 404.
#[tokio::test]
async fn session_header_misuse() {
    let berth = gateway("", "echo");
    let url = berth.url("echo");
    let mut raw = Raw::new(url.clone());
    raw.session = Some("some-session".into());
    let reply = raw.post(&initialize_body(VERSION)).await;
    assert_rpc_error(
        &reply,
        400,
        None,
        &["initialize", "without", "Mcp-Session-Id"],
    );
    assert_eq!(
        reply.json()["id"],
        0,
        "the error answers the initialize request: {}",
        reply.body
    );
    assert!(
        berth.children().is_empty(),
        "a refused initialize started a process: {:?}",
        berth.children()
    );

    let missing = ["missing", "Mcp-Session-Id"];
    let delete = send(Method::DELETE, &url, &[], "").await;
    assert_rpc_error(&delete, 400, None, &missing);
    let get = send(Method::GET, &url, &[("accept", "text/event-stream")], "").await;
    assert_rpc_error(&get, 400, None, &missing);
    let delete = send(
        Method::DELETE,
        &url,
        &[("mcp-session-id", "no-such-session")],
        "",
    )
    .await;
    assert_rpc_error(&delete, 404, Some(-32001), &["Session not found"]);
    assert_all_reaped(&berth);
}

/// Row 18: a JSON-RPC batch on a 2025-11-25 session → 400: batches were
/// removed from the protocol after 2025-03-26 (where they still work).
#[tokio::test]
async fn batch_on_2025_11_25_session_is_400() {
    let berth = gateway("", "echo");
    let batch =
        r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"ping"}]"#;
    let raw = session(&berth, "echo").await;
    let reply = raw.post(batch).await;
    assert_rpc_error(
        &reply,
        400,
        Some(-32600),
        &["batches", "not part of", "2025-11-25"],
    );
    let ping = raw.post(PING).await;
    assert_eq!(
        ping.status, 200,
        "the session survives a refused batch: {}",
        ping.body
    );

    let mut old = Raw::new(berth.url("echo"));
    old.initialize("2025-03-26").await;
    let reply = old.post(batch).await;
    assert_eq!(
        reply.status, 200,
        "batches are part of 2025-03-26: {}",
        reply.body
    );
    assert_eq!(
        reply.json().as_array().map(Vec::len),
        Some(2),
        "{}",
        reply.body
    );

    assert_eq!(raw.delete().await, 200);
    assert_eq!(old.delete().await, 200);
    assert_all_reaped(&berth);
}

/// A server that stops reading its stdin: requests queue up to the message
/// limit, then further ones get 503 at once instead of growing the gateway.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_stops_reading_gets_503_not_unbounded_memory() {
    // Answers initialize, then never reads again.
    let deaf = "[servers.deaf]\ncommand = \"sh\"\nargs = [\"-c\", \"read line; echo '{\\\"jsonrpc\\\":\\\"2.0\\\",\\\"id\\\":0,\\\"result\\\":{\\\"protocolVersion\\\":\\\"2025-11-25\\\",\\\"capabilities\\\":{},\\\"serverInfo\\\":{\\\"name\\\":\\\"deaf\\\",\\\"version\\\":\\\"1\\\"}}}'; sleep 30\"]\n";
    let berth = Berth::start(
        "request_timeout = \"3s\"\nmax_message_bytes = 1048576\nmax_body_bytes = 1048576",
        deaf,
    );
    let mut raw = Raw::new(berth.url("deaf"));
    raw.initialize("2025-11-25").await;
    let raw = std::sync::Arc::new(raw);
    // 200 KiB requests: the pipe takes ~64 KiB, the queue 1 MiB, then refusals.
    let padding = "x".repeat(200 * 1024);
    let calls: Vec<_> = (1..=12)
        .map(|i| {
            let (raw, padding) = (raw.clone(), padding.clone());
            tokio::spawn(async move {
                raw.call_tool(i, "any", serde_json::json!({ "pad": padding }))
                    .await
            })
        })
        .collect();
    let mut refused = 0;
    for call in calls {
        let reply = call.await.unwrap();
        if reply.status == 503 {
            assert_rpc_error(&reply, 503, Some(-32005), &["not reading its input"]);
            refused += 1;
        }
    }
    assert!(refused > 0, "no request was refused");
}
