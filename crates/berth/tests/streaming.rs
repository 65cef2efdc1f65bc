//! Streaming behaviour of the gateway, checked over raw HTTP: when a POST
//! answers JSON and when SSE, priming events, event ids and resumption with
//! `Last-Event-ID`, the standalone GET stream, server-to-client requests,
//! progress, cancellation, batches, the protocol version header, the legacy
//! HTTP+SSE transport, idle expiry and graceful shutdown.
//!
//! Every wait is bounded (see [`STEP`]), so a misbehaving gateway fails a
//! test instead of hanging it.

mod common;
use common::*;

use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The longest any single step (an HTTP answer, the next SSE event) may take.
const STEP: Duration = Duration::from_secs(8);
/// How long a stopped child may take to be reaped.
const REAP: Duration = Duration::from_secs(10);
const LATEST: &str = "2025-11-25";

// ===== Helpers =====

/// `f`, or a panic naming `what` once [`STEP`] has passed.
async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP, f)
        .await
        .unwrap_or_else(|_| panic!("timed out after {STEP:?} waiting for {what}"))
}

/// One SSE event.
#[derive(Debug, Clone, Default)]
struct Event {
    id: Option<String>,
    event: Option<String>,
    retry: Option<u64>,
    data: String,
}

impl Event {
    /// Parses one event block; `None` for a block of comments only (keep-alives).
    fn parse(block: &str) -> Option<Event> {
        let mut ev = Event::default();
        let (mut seen, mut data) = (false, Vec::new());
        for line in block.lines() {
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            seen = true;
            match field {
                "id" => ev.id = Some(value.to_string()),
                "event" => ev.event = Some(value.to_string()),
                "retry" => ev.retry = value.parse().ok(),
                "data" => data.push(value),
                _ => {}
            }
        }
        ev.data = data.join("\n");
        seen.then_some(ev)
    }

    /// The event's JSON-RPC message.
    fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {self:?}"))
    }

    fn id(&self) -> &str {
        self.id
            .as_deref()
            .unwrap_or_else(|| panic!("event has no id: {self:?}"))
    }

    /// The `(stream, seq)` of an id of the form `<stream>-<seq>`.
    fn stream_seq(&self) -> (u64, u64) {
        let id = self.id();
        id.split_once('-')
            .and_then(|(s, q)| Some((s.parse().ok()?, q.parse().ok()?)))
            .unwrap_or_else(|| panic!("event id {id:?} is not <stream>-<seq>"))
    }

    /// A priming event: an id, and empty data.
    fn is_priming(&self) -> bool {
        self.id.is_some() && self.data.trim().is_empty()
    }
}

/// Reads SSE events from a streaming response.
struct Events {
    resp: reqwest::Response,
    buf: Vec<u8>,
}

impl Events {
    /// Wraps `resp`, which must be a 200 `text/event-stream` response.
    fn new(resp: reqwest::Response) -> Events {
        assert_eq!(resp.status().as_u16(), 200, "SSE response status");
        let ct = content_type(&resp);
        assert!(
            ct.starts_with("text/event-stream"),
            "expected an SSE stream, got Content-Type {ct:?}"
        );
        Events {
            resp,
            buf: Vec::new(),
        }
    }

    /// The next event; `None` when the stream ended. Panics after [`STEP`].
    async fn next(&mut self) -> Option<Event> {
        within("the next SSE event", self.next_unbounded()).await
    }

    async fn next_unbounded(&mut self) -> Option<Event> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buf.drain(..end + 2).collect();
                match Event::parse(&String::from_utf8_lossy(&block)) {
                    Some(ev) => return Some(ev),
                    None => continue,
                }
            }
            match self.resp.chunk().await {
                Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk),
                Ok(None) | Err(_) => {
                    let rest = String::from_utf8_lossy(&self.buf);
                    assert!(
                        rest.trim().is_empty(),
                        "stream ended inside an event: {rest:?}"
                    );
                    return None;
                }
            }
        }
    }

    /// The next event that carries a message (priming events are skipped).
    async fn message(&mut self) -> (Event, Value) {
        loop {
            let ev = self
                .next()
                .await
                .expect("the stream ended before the next message");
            if !ev.is_priming() {
                let msg = ev.json();
                return (ev, msg);
            }
        }
    }

    /// Asserts that the stream ends with no further message.
    async fn assert_ends(&mut self) {
        if let Some(ev) = self.next().await {
            panic!("expected the stream to end, got {ev:?}");
        }
    }
}

fn content_type(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// A POST of `body` on `raw`'s session with the MCP headers plus `extra`.
fn post_request(raw: &Raw, body: &Value, extra: &[(&str, &str)]) -> reqwest::RequestBuilder {
    let mut req = raw
        .http
        .post(&raw.url)
        .header("accept", ACCEPT_BOTH)
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(s) = &raw.session {
        req = req.header("mcp-session-id", s);
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    req
}

/// POSTs `body` (see [`post_request`]) and returns the response unread, to stream it.
async fn open_post(raw: &Raw, body: &Value, extra: &[(&str, &str)]) -> reqwest::Response {
    within(
        "the POST's response headers",
        post_request(raw, body, extra).send(),
    )
    .await
    .expect("POST")
}

/// GET on `raw`'s session (Accept: text/event-stream) with `extra` headers.
async fn open_get(raw: &Raw, extra: &[(&str, &str)]) -> reqwest::Response {
    within("the GET's response headers", raw.get(extra)).await
}

/// POST whose whole body is read (for short answers).
async fn post(raw: &Raw, body: &Value) -> Reply {
    within("a POST's answer", raw.post(&body.to_string())).await
}

fn tool_call(id: u64, name: &str, arguments: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": name, "arguments": arguments}})
}

/// The first text of a tools/call result message.
fn result_text(msg: &Value) -> &str {
    msg["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text result in {msg}"))
}

/// An initialized session on `server` negotiating `version`.
async fn session(berth: &Berth, server: &str, version: &str) -> Raw {
    let mut raw = Raw::new(berth.url(server));
    let init = within("initialize", raw.initialize(version)).await;
    assert_eq!(
        init["result"]["protocolVersion"], version,
        "negotiated version: {init}"
    );
    raw
}

fn everything() -> Berth {
    Berth::start("", &fixture_server("everything", "everything"))
}

/// A stdio MCP server in `sh` named `name`, declaring `capabilities`: it
/// answers `initialize`, runs `arms` (`case` arms on the request line, with
/// `$id` its id as written), ignores notifications and answers any other
/// request with "method not found" (so Berth's era probe is answered at once).
fn sh_server(name: &str, capabilities: &str, arms: &str) -> String {
    let script = format!(
        r#"
while IFS= read -r line; do
  id=$(printf '%s\n' "$line" | sed -n 's/^.*"id":\("[^"]*"\|[0-9][0-9]*\).*$/\1/p')
  case "$line" in
    *'"method":"initialize"'*)
      v=$(printf '%s\n' "$line" | sed -n 's/^.*"protocolVersion":"\([^"]*\)".*$/\1/p')
      printf '{{"jsonrpc":"2.0","id":%s,"result":{{"protocolVersion":"%s","capabilities":{capabilities},"serverInfo":{{"name":"{name}","version":"1"}}}}}}\n' "$id" "$v" ;;
{arms}
    *'"method":"notifications/'*) ;;
    *) [ -n "$id" ] && printf '{{"jsonrpc":"2.0","id":%s,"error":{{"code":-32601,"message":"Method not found"}}}}\n' "$id" ;;
  esac
done
"#
    );
    format!("[servers.{name}]\ncommand = \"/bin/sh\"\nargs = [\"-c\", {script:?}]\n")
}

/// A server that, after `resources/subscribe`, sends
/// `notifications/resources/updated` for the URI every 200 ms, ten times.
/// (The `everything` fixture advertises updates for test://watched-resource
/// but, like the reference TypeScript fixture, never sends any.)
fn notifier_server(name: &str) -> String {
    sh_server(
        name,
        r#"{"resources":{"subscribe":true}}"#,
        r#"    *'"method":"resources/subscribe"'*)
      printf '{"jsonrpc":"2.0","id":%s,"result":{}}\n' "$id"
      ( for n in 1 2 3 4 5 6 7 8 9 10; do
          sleep 0.2
          printf '{"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"test://watched-resource","n":%s}}\n' "$n"
        done ) & ;;"#,
    )
}

fn subscribe(id: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "resources/subscribe",
           "params": {"uri": "test://watched-resource"}})
}

/// Runs the blocking `f` (a harness helper that sleeps) off the async workers.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

fn pid_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// A server whose every tool call logs one message and answers 5 ms later:
/// an SSE answer whose last event is written after the others went out.
fn logger_server(name: &str) -> String {
    sh_server(
        name,
        r#"{"tools":{},"logging":{}}"#,
        r#"    *'"method":"tools/call"'*)
      printf '{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"working"}}\n'
      sleep 0.005
      printf '{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":"done"}]}}\n' "$id" ;;"#,
    )
}

// ===== POST: JSON or SSE =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_answers_json_when_the_answer_comes_first() {
    let berth = everything();
    let raw = session(&berth, "everything", LATEST).await;
    let resp = open_post(&raw, &tool_call(1, "test_simple_text", json!({})), &[]).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert!(
        content_type(&resp).starts_with("application/json"),
        "Content-Type {:?}",
        content_type(&resp)
    );
    let msg: Value = within("the JSON body", resp.json()).await.expect("JSON");
    assert_eq!(msg["id"], 1);
    assert_eq!(
        result_text(&msg),
        "This is a simple text response for testing."
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_switches_to_sse_with_priming_event_on_2025_11_25() {
    let berth = everything();
    let raw = session(&berth, "everything", LATEST).await;
    let mut all_ids = Vec::new();
    let mut streams = Vec::new();
    for call in 1..=2u64 {
        let resp = open_post(
            &raw,
            &tool_call(call, "test_tool_with_logging", json!({})),
            &[],
        )
        .await;
        let mut events = Events::new(resp);

        let priming = events.next().await.expect("a priming event");
        assert!(
            priming.is_priming(),
            "first event is not priming: {priming:?}"
        );
        let (stream, seq) = priming.stream_seq();
        assert_eq!(seq, 0, "priming id is <stream>-0: {priming:?}");
        assert!(priming.retry.is_some(), "priming has retry: {priming:?}");
        streams.push(stream);
        all_ids.push(priming.id().to_string());

        let mut logs = 0;
        let mut expected_seq = 1;
        loop {
            let (ev, msg) = events.message().await;
            assert_eq!(
                ev.stream_seq(),
                (stream, expected_seq),
                "event ids count up on one stream: {ev:?}"
            );
            expected_seq += 1;
            all_ids.push(ev.id().to_string());
            if msg.get("id").is_some() {
                assert_eq!(msg["id"], call);
                assert_eq!(result_text(&msg), "Tool with logging executed successfully");
                break;
            }
            assert_eq!(msg["method"], "notifications/message", "{msg}");
            logs += 1;
        }
        assert_eq!(logs, 3, "three log notifications precede the answer");
        events.assert_ends().await;
    }
    assert_ne!(streams[0], streams[1], "each POST gets a stream of its own");
    let mut unique = all_ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), all_ids.len(), "event ids repeat: {all_ids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_sse_has_no_priming_event_before_2025_11_25() {
    let berth = everything();
    for version in ["2025-06-18", "2025-03-26"] {
        let raw = session(&berth, "everything", version).await;
        let resp = open_post(
            &raw,
            &tool_call(1, "test_tool_with_logging", json!({})),
            &[],
        )
        .await;
        let mut events = Events::new(resp);
        let first = events.next().await.expect("an event");
        assert!(
            !first.is_priming() && !first.data.trim().is_empty(),
            "{version}: no priming event expected, got {first:?}"
        );
        assert_eq!(first.json()["method"], "notifications/message");
        assert_eq!(first.stream_seq().1, 1, "{version}: {first:?}");
        let mut last = first;
        while let Some(ev) = events.next().await {
            assert!(!ev.is_priming(), "{version}: {ev:?}");
            last = ev;
        }
        assert_eq!(
            last.json()["id"],
            1,
            "{version}: the stream ends with the answer"
        );
    }
}

// ===== Resumability =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_a_dropped_post_stream_with_last_event_id() {
    let berth = everything();
    let raw = session(&berth, "everything", LATEST).await;
    let resp = open_post(&raw, &tool_call(7, "test_reconnection", json!({})), &[]).await;
    let mut events = Events::new(resp);
    let (log, msg) = events.message().await;
    assert_eq!(msg["method"], "notifications/message", "{msg}");
    let (stream, seq) = log.stream_seq();
    // Disconnect before the answer (it comes ~1 s later).
    drop(events);

    let resumed = open_get(&raw, &[("last-event-id", log.id())]).await;
    let mut events = Events::new(resumed);
    let (ev, msg) = events.message().await;
    assert_eq!(
        ev.stream_seq(),
        (stream, seq + 1),
        "resumption starts right after {}",
        log.id()
    );
    assert_eq!(msg["id"], 7, "the answer is replayed: {msg}");
    assert!(result_text(&msg).starts_with("Reconnection test completed successfully"));
    events.assert_ends().await;

    // From the priming id, the whole stream is replayed, and nothing else.
    let again = open_get(&raw, &[("last-event-id", &format!("{stream}-0"))]).await;
    let mut events = Events::new(again);
    let mut replayed = Vec::new();
    while let Some(ev) = events.next().await {
        replayed.push(ev.stream_seq());
    }
    assert_eq!(replayed, vec![(stream, seq), (stream, seq + 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_a_progress_stream_after_its_first_event() {
    let berth = everything();
    let raw = session(&berth, "everything", LATEST).await;
    let mut call = tool_call(3, "test_tool_with_progress", json!({}));
    call["params"]["_meta"] = json!({"progressToken": "resume-me"});
    let mut events = Events::new(open_post(&raw, &call, &[]).await);
    let (first, msg) = events.message().await;
    assert_eq!(msg["params"]["progress"].as_f64(), Some(0.0), "{msg}");
    drop(events);

    let mut events = Events::new(open_get(&raw, &[("last-event-id", first.id())]).await);
    let mut progress = Vec::new();
    let mut answer = None;
    while let Some(ev) = events.next().await {
        assert!(
            ev.stream_seq().0 == first.stream_seq().0 && ev.stream_seq().1 > first.stream_seq().1,
            "replayed {ev:?} is not after {first:?}"
        );
        let msg = ev.json();
        if msg.get("id").is_some() {
            answer = Some(msg);
        } else {
            progress.push(msg["params"]["progress"].as_f64().expect("progress"));
        }
    }
    assert_eq!(progress, vec![50.0, 100.0]);
    let answer = answer.expect("the answer is replayed");
    assert_eq!(answer["id"], 3);
    assert_eq!(result_text(&answer), "resume-me");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_event_id_naming_no_stream_is_400() {
    let berth = everything();
    let raw = session(&berth, "everything", LATEST).await;
    for bad in ["99-1", "not-an-id", "12"] {
        let resp = open_get(&raw, &[("last-event-id", bad)]).await;
        assert_eq!(resp.status().as_u16(), 400, "Last-Event-ID {bad:?}");
    }
    // The session is unharmed.
    let reply = post(&raw, &tool_call(1, "test_simple_text", json!({}))).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
}

// ===== The standalone GET stream =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_concurrent_get_conflicts() {
    let berth = everything();
    let raw = session(&berth, "everything", LATEST).await;
    let mut first = Events::new(open_get(&raw, &[]).await);
    let priming = first.next().await.expect("priming event");
    assert!(priming.is_priming(), "{priming:?}");
    assert_eq!(priming.stream_seq().0, 0, "the standalone stream is 0");

    let second = open_get(&raw, &[]).await;
    assert_eq!(second.status().as_u16(), 409);
    drop(first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrelated_server_messages_arrive_on_the_get_stream() {
    let berth = Berth::start("", &notifier_server("notifier"));
    let raw = session(&berth, "notifier", LATEST).await;
    let mut standalone = Events::new(open_get(&raw, &[]).await);
    assert!(standalone.next().await.expect("priming").is_priming());

    let reply = post(&raw, &subscribe(2)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["id"], 2, "subscribe is answered on its POST");

    let mut last_seq = 0;
    for _ in 0..3 {
        let (ev, msg) = standalone.message().await;
        assert_eq!(msg["method"], "notifications/resources/updated", "{msg}");
        assert_eq!(msg["params"]["uri"], "test://watched-resource");
        let (stream, seq) = ev.stream_seq();
        assert_eq!(stream, 0, "{ev:?}");
        assert!(seq > last_seq, "{ev:?}");
        last_seq = seq;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_stream_resumes_after_last_event_id() {
    let berth = Berth::start("", &notifier_server("notifier"));
    let raw = session(&berth, "notifier", LATEST).await;
    let mut standalone = Events::new(open_get(&raw, &[]).await);
    assert_eq!(post(&raw, &subscribe(2)).await.status, 200);
    let (first, msg) = standalone.message().await;
    assert_eq!(msg["params"]["n"], 1, "{msg}");
    drop(standalone);

    // More updates arrive while no one listens.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut resumed = Events::new(open_get(&raw, &[("last-event-id", first.id())]).await);
    let (ev, msg) = resumed.message().await;
    assert_eq!(
        ev.stream_seq(),
        (0, first.stream_seq().1 + 1),
        "resumption starts right after {}: {ev:?}",
        first.id()
    );
    assert_eq!(msg["params"]["n"], 2, "{msg}");
    let (ev, msg) = resumed.message().await;
    assert_eq!(ev.stream_seq(), (0, first.stream_seq().1 + 2));
    assert_eq!(msg["params"]["n"], 3, "{msg}");
}

// ===== Server-to-client requests, progress, cancellation =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_round_trip_over_raw_http() {
    let berth = everything();
    let raw = session(&berth, "everything", LATEST).await;
    let call = tool_call(11, "test_sampling", json!({"prompt": "Say hi"}));
    let resp = match tokio::time::timeout(STEP, post_request(&raw, &call, &[]).send()).await {
        Ok(resp) => resp.expect("POST"),
        Err(_) => {
            // Say where the server's request went instead.
            let mut standalone = Events::new(open_get(&raw, &[]).await);
            let mut seen = Vec::new();
            while let Ok(Some(ev)) =
                tokio::time::timeout(Duration::from_millis(500), standalone.next_unbounded()).await
            {
                seen.push(ev.data);
            }
            panic!(
                "the POST of test_sampling did not open a stream within {STEP:?}; \
                 the session's GET stream holds: {seen:?}"
            );
        }
    };
    let mut events = Events::new(resp);
    let (_, request) = events.message().await;
    assert_eq!(request["method"], "sampling/createMessage", "{request}");
    assert_eq!(
        request["params"]["messages"][0]["content"]["text"],
        "Say hi"
    );
    let answer = json!({"jsonrpc": "2.0", "id": request["id"], "result": {
        "role": "assistant", "model": "berth-test", "stopReason": "endTurn",
        "content": {"type": "text", "text": "hello from the client"}}});
    let ack = post(&raw, &answer).await;
    assert_eq!(ack.status, 202, "{}", ack.body);

    let (_, result) = events.message().await;
    assert_eq!(result["id"], 11, "{result}");
    assert_eq!(result_text(&result), "LLM response: hello from the client");
    events.assert_ends().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_notifications_carry_the_clients_token() {
    let berth = everything();
    let raw = session(&berth, "everything", LATEST).await;
    for (id, token) in [(1u64, json!("tok-Berth-7")), (2, json!(424242))] {
        let mut call = tool_call(id, "test_tool_with_progress", json!({}));
        call["params"]["_meta"] = json!({"progressToken": token});
        let mut events = Events::new(open_post(&raw, &call, &[]).await);
        let mut progress = Vec::new();
        loop {
            let (_, msg) = events.message().await;
            if msg.get("id").is_some() {
                assert_eq!(msg["id"], id);
                break;
            }
            assert_eq!(msg["method"], "notifications/progress", "{msg}");
            assert_eq!(msg["params"]["progressToken"], token, "{msg}");
            progress.push(msg["params"]["progress"].as_f64().expect("progress"));
        }
        assert_eq!(progress, vec![0.0, 50.0, 100.0]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_request_ends_its_stream_and_the_session_goes_on() {
    let berth = everything();
    let raw = session(&berth, "everything", LATEST).await;
    let resp = open_post(&raw, &tool_call(5, "test_reconnection", json!({})), &[]).await;
    let mut events = Events::new(resp);
    let (_, log) = events.message().await;
    assert_eq!(log["method"], "notifications/message", "{log}");

    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                        "params": {"requestId": 5, "reason": "the user changed their mind"}});
    let ack = post(&raw, &cancel).await;
    assert_eq!(ack.status, 202, "{}", ack.body);

    let started = Instant::now();
    while let Some(ev) = events.next().await {
        let msg = ev.json();
        assert!(
            msg.get("result").is_none() && msg.get("error").is_none(),
            "a cancelled request gets no response: {msg}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the stream ended only after {:?}",
        started.elapsed()
    );

    let reply = post(&raw, &tool_call(6, "test_simple_text", json!({}))).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["id"], 6);
}

// ===== Batches and the version header =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_on_2025_03_26_sessions() {
    let berth = Berth::start("", &fixture_server("echo", "echo"));
    let raw = session(&berth, "echo", "2025-03-26").await;
    let batch = json!([
        tool_call(1, "echo", json!({"text": "one"})),
        {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "x"}},
        tool_call(2, "echo", json!({"text": "two"})),
    ]);
    let reply = post(&raw, &batch).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.content_type().starts_with("application/json"));
    let answers = reply.json();
    let answers = answers.as_array().expect("a JSON array");
    assert_eq!(answers.len(), 2, "{answers:?}");
    for (id, text) in [(1, "one"), (2, "two")] {
        let answer = answers
            .iter()
            .find(|a| a["id"] == id)
            .unwrap_or_else(|| panic!("no answer for id {id}: {answers:?}"));
        assert_eq!(result_text(answer), text);
    }

    let with_init = json!([
        serde_json::from_str::<Value>(&initialize_body("2025-03-26")).unwrap(),
        tool_call(3, "echo", json!({"text": "three"})),
    ]);
    let reply = post(&raw, &with_init).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let answers = reply.json();
    let answers = answers.as_array().expect("a JSON array");
    assert_eq!(answers.len(), 2, "{answers:?}");
    let init = answers
        .iter()
        .find(|a| a["id"] == 0)
        .expect("initialize's entry");
    assert!(
        init["error"]["code"].is_i64(),
        "initialize gets an error: {init}"
    );
    let three = answers.iter().find(|a| a["id"] == 3).expect("id 3's entry");
    assert_eq!(result_text(three), "three");

    // Later revisions refuse batches.
    let newer = session(&berth, "echo", "2025-06-18").await;
    let reply = post(&newer, &batch).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_version_header() {
    let berth = Berth::start("", &fixture_server("echo", "echo"));
    let raw = session(&berth, "echo", "2025-06-18").await;
    let call = tool_call(1, "echo", json!({"text": "with header"}));
    let resp = open_post(&raw, &call, &[("mcp-protocol-version", "2025-06-18")]).await;
    assert_eq!(resp.status().as_u16(), 200);
    let msg: Value = within("the JSON body", resp.json()).await.expect("JSON");
    assert_eq!(result_text(&msg), "with header");

    let reply = post(&raw, &tool_call(2, "echo", json!({"text": "without"}))).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(result_text(&reply.json()), "without");

    let resp = open_post(&raw, &call, &[("mcp-protocol-version", "1999-01-01")]).await;
    assert_eq!(
        resp.status().as_u16(),
        400,
        "an unsupported version is refused"
    );
}

// ===== Legacy HTTP+SSE =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_http_sse_session() {
    let berth = Berth::start("", &fixture_server("echo", "echo"));
    let http = reqwest::Client::new();
    let resp = within(
        "GET /sse/echo",
        http.get(format!("{}/sse/echo", berth.base()))
            .header("accept", "text/event-stream")
            .send(),
    )
    .await
    .expect("GET /sse/echo");
    let mut events = Events::new(resp);
    let endpoint = events.next().await.expect("the endpoint event");
    assert_eq!(endpoint.event.as_deref(), Some("endpoint"), "{endpoint:?}");
    assert!(endpoint.data.contains("sessionId="), "{endpoint:?}");
    let url = if endpoint.data.starts_with('/') {
        format!("{}{}", berth.base(), endpoint.data)
    } else {
        endpoint.data.clone()
    };

    let send = |body: Value| {
        let req = http
            .post(&url)
            .header("content-type", "application/json")
            .body(body.to_string());
        async move { within("a legacy POST", req.send()).await.expect("POST") }
    };
    let init: Value = serde_json::from_str(&initialize_body("2024-11-05")).unwrap();
    let requests = [
        (init, 0),
        (
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
            1,
        ),
        (tool_call(2, "echo", json!({"text": "legacy"})), 2),
    ];
    for (i, (request, id)) in requests.into_iter().enumerate() {
        assert_eq!(send(request).await.status().as_u16(), 202);
        let ev = events.next().await.expect("an answer on the SSE stream");
        assert_eq!(ev.event.as_deref(), Some("message"), "{ev:?}");
        let msg = ev.json();
        assert_eq!(msg["id"], id, "{msg}");
        match i {
            0 => {
                assert!(msg["result"]["protocolVersion"].is_string(), "{msg}");
                let ack = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
                assert_eq!(send(ack).await.status().as_u16(), 202);
            }
            1 => assert_eq!(msg["result"]["tools"][0]["name"], "echo", "{msg}"),
            _ => assert_eq!(result_text(&msg), "legacy"),
        }
    }

    let unknown = within(
        "a POST with an unknown sessionId",
        http.post(format!("{}/sse/echo/messages?sessionId=nope", berth.base()))
            .header("content-type", "application/json")
            .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
            .send(),
    )
    .await
    .expect("POST");
    assert_eq!(unknown.status().as_u16(), 404);

    blocking(|| berth.wait_for_children(1, REAP));
    drop(events);
    blocking(|| berth.wait_for_children(0, REAP));
    let after = send(tool_call(3, "echo", json!({"text": "late"}))).await;
    assert_eq!(
        after.status().as_u16(),
        404,
        "the session ended with its stream"
    );
}

// ===== Session lifetime =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_expire_and_busy_ones_survive() {
    let berth = Berth::start(
        "session_idle_timeout = \"1s\"",
        &fixture_server("echo", "echo"),
    );
    let idle = session(&berth, "echo", LATEST).await;
    let busy = session(&berth, "echo", LATEST).await;
    blocking(|| berth.wait_for_children(2, REAP));

    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_secs(3) {
        n += 1;
        let reply = post(&busy, &tool_call(n, "echo", json!({"text": "still here"}))).await;
        assert_eq!(reply.status, 200, "busy session, call {n}: {}", reply.body);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    blocking(|| berth.wait_for_children(1, REAP));
    let reply = post(&idle, &tool_call(1, "echo", json!({"text": "hello?"}))).await;
    assert_eq!(reply.status, 404, "the idle session ended: {}", reply.body);
    let reply = post(&busy, &tool_call(999, "echo", json!({"text": "yes"}))).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
}

/// A GET stream held open alone does not keep a session (and its process)
/// forever: with no request and nothing from the server for
/// `session_idle_timeout`, the session ends and its stream with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_get_stream_alone_does_not_keep_a_session() {
    let berth = Berth::start(
        "session_idle_timeout = \"1s\"",
        &fixture_server("echo", "echo"),
    );
    let watcher = session(&berth, "echo", LATEST).await;
    let mut standalone = Events::new(open_get(&watcher, &[]).await);
    assert!(standalone.next().await.expect("priming").is_priming());
    blocking(|| berth.wait_for_children(1, REAP));
    // The reaper ends it; the stream ends (keep-alive comments aside).
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while standalone.next().await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the GET stream outlived the idle session");
    blocking(|| berth.wait_for_children(0, REAP));
    let reply = post(&watcher, &tool_call(1, "echo", json!({"text": "hello?"}))).await;
    assert_eq!(reply.status, 404, "the idle session ended: {}", reply.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_with_live_sessions() {
    let servers = format!(
        "{}\n{}",
        fixture_server("everything", "everything"),
        fixture_server("hang", "hang")
    );
    let berth = Berth::start("", &servers);
    let pid = berth.pid();

    // One session with its GET stream open...
    let watcher = session(&berth, "everything", LATEST).await;
    let mut standalone = Events::new(open_get(&watcher, &[]).await);
    assert!(standalone.next().await.expect("priming").is_priming());
    // ...one with a request the server never answers...
    let hung = session(&berth, "hang", LATEST).await;
    let hang_call = post_request(&hung, &tool_call(1, "hang", json!({})), &[]).send();
    let in_flight = tokio::spawn(async move {
        match hang_call.await {
            Ok(resp) => format!(
                "HTTP {}: {}",
                resp.status(),
                resp.text().await.unwrap_or_default()
            ),
            Err(e) => format!("connection error: {e}"),
        }
    });
    // ...and one request mid-stream.
    let slow = session(&berth, "everything", LATEST).await;
    let mut slow_events =
        Events::new(open_post(&slow, &tool_call(2, "test_reconnection", json!({})), &[]).await);
    let (_, log) = slow_events.message().await;
    assert_eq!(log["method"], "notifications/message");

    let children: Vec<u32> = blocking(|| berth.wait_for_children(3, REAP))
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let status = blocking(|| berth.stop(Duration::from_secs(15)));
    assert_eq!(status.code(), Some(0), "berth exit status: {status:?}");
    assert!(
        children_of(pid).is_empty(),
        "children left: {:?}",
        children_of(pid)
    );
    for child in &children {
        assert!(
            !pid_exists(*child),
            "child {child} still exists after shutdown"
        );
    }

    // Open streams and requests in flight ended with the gateway.
    let outcome = within("the in-flight POST to finish", in_flight)
        .await
        .expect("task");
    eprintln!("the request in flight at shutdown got: {outcome}");
    while standalone.next().await.is_some() {}
    while slow_events.next().await.is_some() {}
}

/// A browser page on an allowed origin (here loopback) can call the gateway:
/// its preflight is answered and it may read the session id; other origins get 403.
#[tokio::test]
async fn browsers_on_allowed_origins_get_cors() {
    let berth = Berth::start("", &fixture_server("svc", "echo"));
    let http = reqwest::Client::new();
    let preflight = http
        .request(reqwest::Method::OPTIONS, berth.url("svc"))
        .header("origin", "http://localhost:6274")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type, mcp-session-id",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    let h = preflight.headers();
    assert_eq!(h["access-control-allow-origin"], "http://localhost:6274");
    assert!(
        h["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("mcp-session-id")
    );
    assert!(
        h["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("DELETE")
    );

    let raw = Raw::new(berth.url("svc"));
    let reply = raw
        .post_with(
            initialize_body("2025-11-25"),
            &[("origin", "http://localhost:6274")],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.headers["access-control-allow-origin"],
        "http://localhost:6274"
    );
    assert!(
        reply.headers["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("mcp-session-id")
    );

    let refused = http
        .request(reqwest::Method::OPTIONS, berth.url("svc"))
        .header("origin", "http://evil.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

// ===== TCP =====

/// An SSE answer is written event by event. Without TCP_NODELAY on the
/// client's connection, an event written while the one before is not yet
/// ACKed waits for that ACK, and a kept-alive client delays its ACKs (40
/// ms on Linux): most calls whose server logs or reports progress before
/// its result took 40 ms more (7 of 10 here before the fix). Not a speed
/// test: the median of 15 calls is held to 30 ms where a stalled call takes
/// 45 ms and a healthy one ~10 ms (the server's own 5 ms included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_answers_on_a_kept_alive_connection_never_wait_for_delayed_acks() {
    let berth = Berth::start("", &logger_server("logger"));
    let raw = session(&berth, "logger", LATEST).await;
    let mut took = Vec::new();
    for id in 1..=15 {
        let started = Instant::now();
        let reply = post(&raw, &tool_call(id, "any", json!({}))).await;
        took.push(started.elapsed());
        assert!(
            reply.content_type().starts_with("text/event-stream"),
            "{}",
            reply.body
        );
        assert_eq!(result_text(&reply.answer()), "done");
    }
    took.sort();
    let median = took[took.len() / 2];
    assert!(
        median < Duration::from_millis(30),
        "calls on a kept-alive connection took {took:?}: SSE events wait on delayed ACKs"
    );
}
