//! Small defences (issue 12, item 6): an off-host admin API is an explicit
//! choice; duplicated MCP headers are refused; Berth's own errors echo the
//! request id byte for byte; every refusal has a JSON-RPC body; an
//! absolute-form request line cannot slip past the Host check.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The protocol revision the tests' sessions negotiate.
const VERSION: &str = "2025-11-25";

/// One HTTP/1.1 exchange over a fresh connection, written byte for byte.
/// Returns the status, the header block (lowercased) and the body.
async fn raw_http(berth: &Berth, request: &str) -> (u16, String, String) {
    let mut tcp = TcpStream::connect(berth.addr).await.expect("connect");
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), tcp.read_to_end(&mut buf))
        .await
        .expect("the reply came in time")
        .expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a header block");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    (status, head.to_ascii_lowercase(), body.to_owned())
}

/// Asserts a JSON-RPC error body with `Content-Type: application/json`;
/// returns the error message.
fn assert_json_rpc_error(status: u16, head: &str, body: &str, expected: u16) -> String {
    assert_eq!(status, expected, "{head}\n\n{body}");
    assert!(
        head.contains("content-type: application/json"),
        "not JSON: {head}\n\n{body}"
    );
    let json: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {body}"));
    assert_eq!(json["jsonrpc"], "2.0", "{body}");
    assert!(json["error"]["code"].is_i64(), "{body}");
    json["error"]["message"]
        .as_str()
        .expect("an error message")
        .to_owned()
}

fn post_request(target: &str, host: &str, extra: &str, body: &str) -> String {
    format!(
        "POST {target} HTTP/1.1\r\nhost: {host}\r\naccept: {ACCEPT_BOTH}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{extra}\r\n{body}",
        body.len()
    )
}

fn berth_check(admin_lines: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("berth.toml");
    let text = format!(
        "[gateway]\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\n\n[admin]\n{admin_lines}\n\n{}",
        dir.path().display().to_string(),
        fixture_server("echo", "echo")
    );
    std::fs::write(&config, text).expect("write config");
    let mut cmd = Command::new(berth_bin());
    cmd.args(["check", config.to_str().expect("utf-8 path")]);
    run_with_timeout(&mut cmd, Duration::from_secs(20))
}

#[test]
fn admin_api_off_host_is_an_explicit_choice() {
    let (ok, out) = berth_check("listen = \"0.0.0.0:0\"");
    assert!(!ok, "an off-host admin API was accepted: {out}");
    assert!(out.contains("allow_remote"), "{out}");
    assert!(out.contains("admin.listen"), "{out}");

    let (ok, out) = berth_check("listen = \"0.0.0.0:0\"\nallow_remote = true");
    assert!(ok, "allow_remote = true was refused: {out}");
    assert!(out.contains("warning:"), "{out}");
    assert!(out.contains("TLS"), "{out}");

    let (ok, out) = berth_check("listen = \"127.0.0.1:0\"");
    assert!(ok, "{out}");
    assert!(!out.contains("admin.listen"), "{out}");
    // Disabled, its address does not matter.
    let (ok, out) = berth_check("enabled = false\nlisten = \"0.0.0.0:0\"");
    assert!(ok, "{out}");
}

#[tokio::test]
async fn duplicated_mcp_headers_are_refused() {
    let berth = Berth::start("", &fixture_server("echo", "echo"));
    let host = berth.addr.to_string();
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let mut raw = Raw::new(berth.url("echo"));
    raw.initialize(VERSION).await;
    let session = raw.session.clone().expect("a session");

    // The same session twice is still two header lines: refused, not "first wins".
    for second in [session.as_str(), "another-session"] {
        let extra = format!("mcp-session-id: {session}\r\nmcp-session-id: {second}\r\n");
        let (status, head, body) =
            raw_http(&berth, &post_request("/mcp/echo", &host, &extra, ping)).await;
        let message = assert_json_rpc_error(status, &head, &body, 400);
        assert!(message.contains("Mcp-Session-Id"), "{message}");
    }
    let extra = format!(
        "mcp-session-id: {session}\r\nmcp-protocol-version: {VERSION}\r\nmcp-protocol-version: 2025-06-18\r\n"
    );
    let (status, head, body) =
        raw_http(&berth, &post_request("/mcp/echo", &host, &extra, ping)).await;
    let message = assert_json_rpc_error(status, &head, &body, 400);
    assert!(message.contains("MCP-Protocol-Version"), "{message}");

    // Once each is fine.
    let extra = format!("mcp-session-id: {session}\r\nmcp-protocol-version: {VERSION}\r\n");
    let (status, _, body) = raw_http(&berth, &post_request("/mcp/echo", &host, &extra, ping)).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn berths_own_errors_echo_the_id_as_written() {
    let berth = Berth::start("", &fixture_server("echo", "echo"));
    let mut live = Raw::new(berth.url("echo"));
    live.initialize(VERSION).await;
    let mut gone = Raw::new(berth.url("echo"));
    gone.session = Some("no-such-session".into());
    for id in [
        "123456789012345678901234567890123456789",
        "1.5",
        "-0",
        "1.0",
        "1e3",
    ] {
        let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#);
        // Unknown session: 404.
        let reply = gone.post(&body).await;
        assert_eq!(reply.status, 404, "{}", reply.body);
        assert!(
            reply.body.contains(&format!(r#""id":{id},"#)),
            "id {id} not echoed as written: {}",
            reply.body
        );
        // A live session with a version header Berth refuses itself: 400.
        let reply = live
            .post_with(body.clone(), &[("mcp-protocol-version", "1999-01-01")])
            .await;
        assert_eq!(reply.status, 400, "{}", reply.body);
        assert!(
            reply.body.contains(&format!(r#""id":{id},"#)),
            "id {id} not echoed as written: {}",
            reply.body
        );
    }
}

#[tokio::test]
async fn every_refusal_has_a_json_rpc_body() {
    let berth = Berth::start("", &fixture_server("echo", "echo"));
    let host = berth.addr.to_string();
    let init = initialize_body(VERSION);

    // A Content-Type that is not JSON, and one that is not even a media type.
    for content_type in ["text/plain", "application/json/x; ===", ";"] {
        let request = format!(
            "POST /mcp/echo HTTP/1.1\r\nhost: {host}\r\naccept: {ACCEPT_BOTH}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{init}",
            init.len()
        );
        let (status, head, body) = raw_http(&berth, &request).await;
        assert_json_rpc_error(status, &head, &body, 415);
    }
    // No body at all.
    let (status, head, body) = raw_http(&berth, &post_request("/mcp/echo", &host, "", "")).await;
    assert_json_rpc_error(status, &head, &body, 400);
    // A path segment that is not UTF-8 once decoded (axum's rejection is plain text).
    for target in ["/mcp/%FF", "/sse/%FF/messages?sessionId=x"] {
        let (status, head, body) = raw_http(&berth, &post_request(target, &host, "", &init)).await;
        let message = assert_json_rpc_error(status, &head, &body, 400);
        assert!(message.starts_with("Bad Request"), "{message}");
    }
    // A method the route does not take (axum's 405 has no body).
    for method in ["PUT", "PATCH"] {
        let request = format!(
            "{method} /mcp/echo HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{init}",
            init.len()
        );
        let (status, head, body) = raw_http(&berth, &request).await;
        let message = assert_json_rpc_error(status, &head, &body, 405);
        assert!(head.contains("allow: "), "{head}");
        assert!(message.contains(method), "{message}");
    }
    // A legacy session id that is not UTF-8 once decoded (a query rejection).
    let (status, head, body) = raw_http(
        &berth,
        &post_request("/sse/echo/messages?sessionId=%FF", &host, "", &init),
    )
    .await;
    assert!(status >= 400, "{body}");
    assert!(head.contains("content-type: application/json"), "{head}");
}

#[tokio::test]
async fn absolute_form_request_lines_meet_the_host_check() {
    let berth = Berth::start("", &fixture_server("echo", "echo"));
    let host = berth.addr.to_string();
    let init = initialize_body(VERSION);

    // The URI names another host than the Host header: 400.
    let (status, head, body) = raw_http(
        &berth,
        &post_request("http://evil.com/mcp/echo", &host, "", &init),
    )
    .await;
    let message = assert_json_rpc_error(status, &head, &body, 400);
    assert!(message.contains("evil.com"), "{message}");
    // Both name the other host: the DNS-rebinding refusal, 403.
    let (status, head, body) = raw_http(
        &berth,
        &post_request("http://evil.com/mcp/echo", "evil.com", "", &init),
    )
    .await;
    let message = assert_json_rpc_error(status, &head, &body, 403);
    assert!(message.contains("evil.com"), "{message}");
    // Two Host headers: 400.
    let (status, head, body) = raw_http(
        &berth,
        &post_request("/mcp/echo", &host, "host: evil.com\r\n", &init),
    )
    .await;
    assert_json_rpc_error(status, &head, &body, 400);
    // An absolute-form line that agrees with Host (and is allowed) is served.
    let (status, _, body) = raw_http(
        &berth,
        &post_request(&format!("http://{host}/mcp/echo"), &host, "", &init),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn admin_api_rejections_are_json() {
    let berth = Berth::start("", &fixture_server("echo", "echo"));
    let endpoint: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(berth.dir.path().join("admin.json")).expect("admin.json"),
    )
    .expect("admin.json is JSON");
    let (url, token) = (
        endpoint["url"].as_str().expect("url"),
        endpoint["token"].as_str().expect("token"),
    );
    let http = reqwest::Client::new();
    for (path, expected) in [
        ("/v1/servers/%FF/logs", 400),
        ("/v1/servers/echo/logs?lines=many", 400),
        ("/v1/no-such-route", 404),
    ] {
        let resp = http
            .get(format!("{url}{path}"))
            .bearer_auth(token)
            .send()
            .await
            .expect("GET");
        assert_eq!(resp.status().as_u16(), expected, "{path}");
        let json: serde_json::Value = resp.json().await.expect("a JSON body");
        assert!(json["error"].is_string(), "{path}: {json}");
    }
    // The method is wrong: 405, JSON, and Allow kept.
    let resp = http
        .delete(format!("{url}/v1/status"))
        .bearer_auth(token)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(resp.status().as_u16(), 405);
    assert!(resp.headers().contains_key("allow"));
    let json: serde_json::Value = resp.json().await.expect("a JSON body");
    assert!(json["error"].is_string(), "{json}");
}
