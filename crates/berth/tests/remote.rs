//! Remote upstreams: MCP servers reached over HTTP (the official Python
//! SDK's Streamable HTTP server, stateful and stateless, and its legacy
//! HTTP+SSE server), served by Berth like hosted ones, with credentials
//! that are Berth's (static headers with per-principal secrets), never the
//! client's.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn remote_server(name: &str, url: &str, extra: &str) -> String {
    format!("[servers.{name}]\nurl = {url:?}\n{extra}\n")
}

fn python_client(berth: &Berth, path: &str, mode: &str) {
    let (ok, out) = run_with_timeout(
        Command::new(python())
            .arg(repo().join("tests/python/client.py"))
            .arg(format!("{}{path}", berth.base()))
            .arg(mode),
        Duration::from_secs(90),
    );
    assert!(
        ok,
        "Python SDK client ({mode} at {path}) failed:\n{out}\n--- berth log ---\n{}",
        berth.log()
    );
}

fn error_of(reply: &Reply) -> String {
    let value = reply.answer();
    match value["error"]["message"].as_str() {
        Some(message) => message.to_string(),
        None => panic!("no error: {value}"),
    }
}

fn text_of(reply: &Reply) -> String {
    let value = reply.answer();
    match value["result"]["content"][0]["text"].as_str() {
        Some(text) => text.to_string(),
        None => panic!("no text result: {value}"),
    }
}

#[test]
fn python_sdk_client_through_a_remote_streamable_http_server() {
    let upstream = Upstream::start(&["--transport", "streamable-http"]);
    let berth = Berth::start("", &remote_server("remote", &upstream.url, ""));
    // tools, progress, sampling and elicitation relayed both ways.
    python_client(&berth, "/mcp/remote", "everything");
}

#[test]
fn python_sdk_client_through_a_remote_json_response_server() {
    let upstream = Upstream::start(&["--transport", "streamable-http", "--json-response"]);
    let berth = Berth::start("", &remote_server("remote", &upstream.url, ""));
    python_client(&berth, "/mcp/remote", "everything");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stateless_remote_server_is_served_with_berth_sessions() {
    let upstream = Upstream::start(&["--transport", "streamable-http", "--stateless"]);
    let berth = Berth::start("", &remote_server("remote", &upstream.url, ""));
    let mut client = Raw::new(berth.url("remote"));
    let init = client.initialize("2025-06-18").await;
    assert!(init["result"]["serverInfo"].is_object(), "{init}");
    let list = client
        .post(r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#)
        .await;
    let text = list.answer().to_string();
    assert!(text.contains("\"add\""), "{text}");
    let sum = client
        .call_tool(3, "add", serde_json::json!({"a": 2, "b": 3}))
        .await;
    assert_eq!(text_of(&sum), "5");
}

#[test]
fn legacy_sse_remote_server_through_berth() {
    let upstream = Upstream::start(&["--transport", "sse"]);
    let berth = Berth::start(
        "",
        &remote_server("remote", &upstream.url, "transport = \"sse\""),
    );
    python_client(&berth, "/mcp/remote", "everything");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_session_survives_an_upstream_restart() {
    let mut upstream = Upstream::start(&["--transport", "streamable-http"]);
    let berth = Berth::start("", &remote_server("remote", &upstream.url, ""));
    let mut client = Raw::new(berth.url("remote"));
    client.initialize("2025-11-25").await;
    let first = client
        .call_tool(2, "add", serde_json::json!({"a": 1, "b": 1}))
        .await;
    assert_eq!(text_of(&first), "2");
    // The upstream loses every session it had.
    upstream.restart();
    let second = client
        .call_tool(3, "add", serde_json::json!({"a": 20, "b": 22}))
        .await;
    assert_eq!(text_of(&second), "42", "{}", berth.log());
    let log = berth.server_log("remote");
    assert!(
        log.contains("re-initialized"),
        "the log should say the upstream session was re-initialized:\n{log}"
    );
    // `berth ps` and the admin API show the connection and how it fares.
    let status = berth.status();
    let connections: Vec<&serde_json::Value> = status
        .iter()
        .filter(|s| s["server"] == "remote")
        .flat_map(|s| s["processes"].as_array().into_iter().flatten())
        .filter_map(|p| p.get("remote"))
        .collect();
    assert!(
        connections.iter().any(|r| r["url"] == upstream.url
            && r["reinitialized"].as_u64() >= Some(1)
            && r["last_status"] == 200
            && r["requests"].as_u64() >= Some(4)),
        "{status:?}"
    );
    let (ok, ps) = berth.cli(&["ps"]);
    assert!(
        ok && ps.contains(&upstream.url) && ps.contains("re-initialized 1x"),
        "{ps}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_hangs_gets_the_timeout_error() {
    let upstream = Upstream::start(&["--transport", "streamable-http", "--json-response"]);
    let berth = Berth::start(
        "request_timeout = \"2s\"",
        &remote_server("remote", &upstream.url, "timeout = \"1s\""),
    );
    let mut client = Raw::new(berth.url("remote"));
    client.initialize("2025-11-25").await;
    let started = Instant::now();
    let reply = client
        .call_tool(2, "sleep", serde_json::json!({"seconds": 30}))
        .await;
    let message = error_of(&reply);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the hang was not cut short"
    );
    assert!(
        message.contains("remote") && message.contains("timeout"),
        "the error should name the upstream and the timeout: {message}"
    );
    // The session still works.
    let sum = client
        .call_tool(3, "add", serde_json::json!({"a": 2, "b": 2}))
        .await;
    assert_eq!(text_of(&sum), "4");
}

/// A plain HTTP server (Python's standard library) that answers every POST
/// with `status` and `body`.
fn broken_upstream(status: u16, body: &str) -> (Child, String) {
    broken_upstream_with(status, "application/json", &format!("{body:?}"))
}

/// As [`broken_upstream`], with a content type and the body as a Python
/// expression (`'x' * 3000000`).
fn broken_upstream_with(status: u16, content_type: &str, body: &str) -> (Child, String) {
    let script = format!(
        r#"
import http.server, socketserver, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get('content-length') or 0))
        body = ({body}).encode()
        self.send_response({status})
        self.send_header('content-type', {content_type:?})
        self.send_header('content-length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
s = socketserver.TCPServer(('127.0.0.1', 0), H)
print('READY http://127.0.0.1:%d/mcp' % s.server_address[1], flush=True)
s.serve_forever()
"#
    );
    let mut child = Command::new("python3")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("READY line");
    let url = line
        .trim()
        .strip_prefix("READY ")
        .expect("READY")
        .to_string();
    (child, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_answering_more_than_max_message_bytes_is_cut_off() {
    let (mut json_flood, json_url) = broken_upstream_with(200, "application/json", "'x' * 3000000");
    let (mut sse_flood, sse_url) =
        broken_upstream_with(200, "text/event-stream", "'data: ' + 'y' * 3000000");
    let servers = format!(
        "{}\n{}",
        remote_server("json", &json_url, ""),
        remote_server("sse", &sse_url, "")
    );
    let berth = Berth::start("max_message_bytes = 1048576", &servers);
    for name in ["json", "sse"] {
        let client = Raw::new(berth.url(name));
        let reply = client.post(&initialize_body("2025-11-25")).await;
        let message = error_of(&reply);
        assert!(
            message.contains(&format!("upstream `{name}`"))
                && message.contains("1048576-byte limit"),
            "{name}: {message}"
        );
    }
    for child in [&mut json_flood, &mut sse_flood] {
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_answering_500_or_garbage_gets_a_clear_error() {
    let (mut failing, failing_url) = broken_upstream(500, "database on fire");
    let (mut garbage, garbage_url) = broken_upstream(200, "<html>not json-rpc</html>");
    let servers = format!(
        "{}\n{}",
        remote_server("failing", &failing_url, ""),
        remote_server("garbage", &garbage_url, "")
    );
    let berth = Berth::start("", &servers);
    for (name, expected) in [
        ("failing", "HTTP 500"),
        ("garbage", "not a JSON-RPC message"),
    ] {
        let client = Raw::new(berth.url(name));
        let reply = client.post(&initialize_body("2025-11-25")).await;
        let message = error_of(&reply);
        assert!(
            message.contains(&format!("upstream `{name}`")) && message.contains(expected),
            "{name}: the error should name the upstream and say {expected:?}: {message}"
        );
    }
    let _ = failing.kill();
    let _ = garbage.kill();
    let _ = failing.wait();
    let _ = garbage.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_sees_each_principals_own_credential_and_never_the_clients() {
    let recorded = tempfile::NamedTempFile::new().expect("temp file");
    let record = recorded.path().to_str().expect("utf-8").to_string();
    let upstream = Upstream::start(&[
        "--transport",
        "streamable-http",
        "--record-headers",
        &record,
    ]);
    let (alice_key, alice) = api_key("alice");
    let (bob_key, bob) = api_key("bob");
    let (carol_key, carol) = api_key("carol");
    let gateway = "";
    let servers = format!(
        "[auth]\nmode = \"api_key\"\n{alice}\n{bob}\n{carol}\n\n{}",
        remote_server(
            "github",
            &upstream.url,
            "headers = { Authorization = \"Bearer ${secret:github_pat}\", X-Team = \"berth\" }\n[servers.github.pool]\nmin_ready = 0"
        )
    );
    let berth = Berth::start(gateway, &servers);
    berth.set_secret_for("github_pat", "alice", "ghp_alice_own");
    berth.set_secret_for("github_pat", "bob", "ghp_bob_own");

    let leaks = [
        ("cookie", "session=client-cookie-secret"),
        ("x-api-key", "client-x-api-key-secret"),
    ];
    for (key, own) in [(&alice_key, "ghp_alice_own"), (&bob_key, "ghp_bob_own")] {
        let mut client = Raw::new(berth.url("github"));
        client.token = Some(key.clone());
        let init = client
            .post_with(initialize_body("2025-11-25"), &leaks)
            .await;
        assert_eq!(init.status, 200, "{}", init.body);
        client.session = init
            .headers
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let ack = client
            .post_with(
                r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
                &leaks,
            )
            .await;
        assert_eq!(ack.status, 202, "{}", ack.body);
        let call = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"whoami","arguments":{}}}"#;
        let who = client.post_with(call, &leaks).await;
        let seen: serde_json::Value = serde_json::from_str(&text_of(&who)).expect("whoami JSON");
        assert_eq!(seen["authorization"], format!("Bearer {own}"), "{seen}");
        assert_eq!(seen["x-team"], "berth");
    }
    // Every request the upstream received: the configured credential only.
    let lines = std::fs::read_to_string(recorded.path()).expect("recorded headers");
    assert!(lines.lines().count() >= 6, "{lines}");
    for forbidden in [
        alice_key.as_str(),
        bob_key.as_str(),
        "client-cookie-secret",
        "client-x-api-key-secret",
    ] {
        assert!(
            !lines.contains(forbidden),
            "the upstream saw the client's credential {forbidden:?}:\n{lines}"
        );
    }
    for line in lines.lines() {
        let request: serde_json::Value = serde_json::from_str(line).expect("JSON line");
        let auth = request["headers"]["authorization"]
            .as_str()
            .unwrap_or_default();
        assert!(
            auth == "Bearer ghp_alice_own" || auth == "Bearer ghp_bob_own",
            "{line}"
        );
        assert!(request["headers"].get("cookie").is_none(), "{line}");
        // After its initialize, every request carries the upstream session
        // and the version it settled on.
        let initialize = request["headers"].get("mcp-session-id").is_none();
        if !initialize {
            assert_eq!(
                request["headers"]["mcp-protocol-version"], "2025-11-25",
                "{line}"
            );
        }
    }
    // Carol has no value of her own and there is no shared one: 403 naming it.
    let mut client = Raw::new(berth.url("github"));
    client.token = Some(carol_key);
    let reply = client.post(&initialize_body("2025-11-25")).await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    let message = error_of(&reply);
    assert!(
        message.contains("github_pat") && message.contains("--principal"),
        "the refusal should name the missing secret and how to store it: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_server_of_both_eras_serves_modern_and_handshake_clients() {
    let upstream = Upstream::modern();
    let berth = Berth::start("", &remote_server("modern", &upstream.url, ""));
    // The 2026-07-28 client, probing and pinned: era, calls, progress,
    // cancellation and subscriptions/listen, all through the remote.
    for negotiation in ["auto", "pinned"] {
        let (ok, out) = run_with_timeout(
            Command::new(python_modern())
                .arg(repo().join("tests/python-modern/client.py"))
                .args(["--negotiation", negotiation, "--timeout", "60"])
                .arg(berth.url("modern"))
                .arg("all"),
            Duration::from_secs(90),
        );
        let summary = out
            .lines()
            .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .unwrap_or_default();
        assert!(
            ok && summary["ok"] == true && summary["era"] == "modern",
            "{negotiation}: {out}\n--- berth log ---\n{}",
            berth.log()
        );
    }
    // A 2025 client of the same server: initialize, then a call.
    let mut client = Raw::new(berth.url("modern"));
    client.initialize("2025-11-25").await;
    let sum = client
        .call_tool(2, "add", serde_json::json!({"a": 2, "b": 3}))
        .await;
    assert_eq!(text_of(&sum), "5");
}

/// A test CA and a certificate it signed for 127.0.0.1 (openssl):
/// (CA certificate, server certificate, server key) paths.
fn test_pki(dir: &std::path::Path) -> (String, String, String) {
    let path = |name: &str| dir.join(name).to_str().expect("utf-8").to_string();
    let (ca, ca_key, cert, key, csr, ext) = (
        path("ca.pem"),
        path("ca-key.pem"),
        path("cert.pem"),
        path("key.pem"),
        path("cert.csr"),
        path("ext.cnf"),
    );
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .expect("ext");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let steps: [Vec<&str>; 3] = [
        [
            &["req", "-x509"][..],
            &ec,
            &[
                "-days",
                "1",
                "-subj",
                "/CN=Berth test CA",
                "-keyout",
                &ca_key,
                "-out",
                &ca,
            ],
        ]
        .concat(),
        [
            &["req"][..],
            &ec,
            &["-subj", "/CN=127.0.0.1", "-keyout", &key, "-out", &csr],
        ]
        .concat(),
        vec![
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ],
    ];
    for args in steps {
        let (ok, out) =
            run_with_timeout(Command::new("openssl").args(&args), Duration::from_secs(30));
        assert!(ok, "openssl {args:?}: {out}");
    }
    (ca, cert, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_is_trusted_with_its_ca_file_and_refused_without() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (ca, cert, key) = test_pki(dir.path());
    let upstream = Upstream::start(&[
        "--transport",
        "streamable-http",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ]);
    assert!(upstream.url.starts_with("https://"), "{}", upstream.url);
    let servers = format!(
        "{}\n{}",
        remote_server("trusted", &upstream.url, &format!("ca_file = {ca:?}")),
        remote_server("untrusted", &upstream.url, "")
    );
    let berth = Berth::start("", &servers);
    let mut client = Raw::new(berth.url("trusted"));
    client.initialize("2025-11-25").await;
    let sum = client
        .call_tool(2, "add", serde_json::json!({"a": 1, "b": 2}))
        .await;
    assert_eq!(text_of(&sum), "3");
    // Without the CA, the system's roots do not know it: a clear refusal.
    let client = Raw::new(berth.url("untrusted"));
    let reply = client.post(&initialize_body("2025-11-25")).await;
    let message = error_of(&reply);
    assert!(
        message.contains("upstream `untrusted`") && message.contains("cannot reach"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_stream_the_upstream_drops_is_resumed_with_last_event_id() {
    let upstream = Upstream::start(&["--transport", "streamable-http", "--event-store"]);
    let berth = Berth::start("", &remote_server("remote", &upstream.url, ""));
    let mut client = Raw::new(berth.url("remote"));
    client.initialize("2025-11-25").await;
    let body = serde_json::json!({
        "jsonrpc": "2.0", "id": 5, "method": "tools/call",
        "params": {"name": "interrupted", "arguments": {}, "_meta": {"progressToken": "p5"}},
    });
    let reply = client.post(&body.to_string()).await;
    // The answer and the progress sent after the drop arrived all the same.
    assert_eq!(text_of(&reply), "resumed", "{}", reply.body);
    let progress = reply
        .sse_messages()
        .into_iter()
        .filter(|m| m["method"] == "notifications/progress")
        .count();
    assert_eq!(progress, 2, "{}", reply.body);
}

/// `berth-fixture everything --http`: rmcp's own Streamable HTTP server,
/// which holds `Mcp-Param-*` headers to the `x-mcp-header` annotations of
/// its tools. Killed when dropped.
struct RmcpUpstream {
    child: Child,
    url: String,
}

impl RmcpUpstream {
    fn start() -> RmcpUpstream {
        let mut child = Command::new(fixture_bin())
            .args(["everything", "--http", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("berth-fixture everything --http");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the endpoint URL");
        let url = line.trim().to_string();
        assert!(url.starts_with("http://"), "{url:?}");
        RmcpUpstream { child, url }
    }
}

impl Drop for RmcpUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_param_headers_reach_a_remote_2026_server() {
    let upstream = RmcpUpstream::start();
    let berth = Berth::start("", &remote_server("rmcp", &upstream.url, ""));
    let client = Raw::new(berth.url("rmcp"));
    let call = |region: &'static str, header: Option<&'static str>| {
        let client = &client;
        async move {
            let params = serde_json::json!({
                "name": "test_custom_header",
                "arguments": {"region": region},
            });
            let mut headers = modern_headers("tools/call", Some("test_custom_header"));
            if let Some(header) = header {
                headers.push(("mcp-param-region", header.to_string()));
            }
            let extra: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            client
                .post_with(modern_body(1.into(), "tools/call", params), &extra)
                .await
        }
    };
    // The client's Mcp-Param-Region reaches the upstream, which checks it
    // against the argument: the call succeeds.
    let reply = call("eu-west-1", Some("eu-west-1")).await;
    let answer = reply.answer();
    assert!(
        answer["result"]["content"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("eu-west-1")),
        "{answer}\n--- berth log ---\n{}",
        berth.log()
    );
    // Without the header, Berth itself refuses it (the upstream's schema
    // says the argument is mirrored), before the upstream is bothered.
    let reply = call("eu-west-1", None).await;
    assert_eq!(reply.status, 400, "{}", reply.answer());
    assert_eq!(reply.answer()["error"]["code"], -32020);
}
