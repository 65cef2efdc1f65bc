//! MCP 2026-07-28 through Berth, on the wire: stateless requests beside
//! sessions on the same endpoint, the revision's header and `_meta` rules
//! with its status codes, many concurrent clients sharing a small pool, and
//! a handshake-only server (npm `server-everything`) bridged for clients
//! pinned to the new revision.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// Opens a `subscriptions/listen` stream with `filter`; the response is
/// returned unread.
async fn open_listen(raw: &Raw, filter: Value, id: &str) -> reqwest::Response {
    let body = modern_body(
        json!(id),
        "subscriptions/listen",
        json!({ "notifications": filter }),
    );
    let mut request = raw
        .http
        .post(&raw.url)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(body);
    for (k, v) in modern_headers("subscriptions/listen", None) {
        request = request.header(k, v);
    }
    request.send().await.expect("listen")
}

/// Reads an SSE response into `text` until `done(text)` holds; panics after `within`.
async fn read_until(
    response: &mut reqwest::Response,
    text: &mut String,
    done: impl Fn(&str) -> bool,
    within: Duration,
) {
    let deadline = tokio::time::Instant::now() + within;
    while !done(text) {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .unwrap_or_else(|_| panic!("not seen within {within:?}; so far: {text}"))
            .expect("stream readable")
            .unwrap_or_else(|| panic!("the stream ended early: {text}"));
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
}

/// The rest of an SSE response after `text`, once Berth ends the stream.
async fn read_rest(response: reqwest::Response, mut text: String) -> String {
    let rest = tokio::time::timeout(Duration::from_secs(10), response.text())
        .await
        .expect("the stream ends when Berth stops")
        .expect("stream readable");
    text.push_str(&rest);
    text
}

/// The built-in demo server (rmcp 3.x: speaks both eras over stdio).
fn demo(name: &str, pool: &str) -> String {
    format!(
        "[servers.{name}]\ncommand = {:?}\nargs = [\"builtin\", \"demo\"]\n{pool}\n",
        berth_bin().display().to_string()
    )
}

fn result_text(reply: &Reply) -> String {
    let body = if reply.content_type().starts_with("text/event-stream") {
        reply.sse_messages().pop().expect("an answer")
    } else {
        reply.json()
    };
    body["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text in {body}"))
        .to_owned()
}

fn assert_error(reply: &Reply, status: u16, code: i64, id: Value) {
    assert_eq!(reply.status, status, "status of {}", reply.body);
    let body = reply.json();
    assert_eq!(body["error"]["code"], code, "code of {body}");
    assert_eq!(body["id"], id, "id of {body}");
    assert!(
        !body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "an error says why: {body}"
    );
    assert!(
        reply.headers.get("mcp-session-id").is_none(),
        "no session id is minted in the stateless era"
    );
}

#[tokio::test]
async fn both_eras_on_one_endpoint_and_no_session_for_modern_requests() {
    let berth = Berth::start("", &demo("demo", ""));
    let mut raw = Raw::new(berth.url("demo"));

    let discover = raw.modern(json!(1), "server/discover", json!({})).await;
    assert_eq!(discover.status, 200, "{}", discover.body);
    assert!(discover.headers.get("mcp-session-id").is_none());
    let result = &discover.json()["result"];
    assert!(
        result["supportedVersions"]
            .as_array()
            .unwrap()
            .contains(&json!(MODERN)),
        "{result}"
    );
    assert_eq!(result["resultType"], "complete");
    assert!(
        result["ttlMs"].is_u64() && result["cacheScope"].is_string(),
        "{result}"
    );

    let call = raw
        .modern(
            json!("c-1"),
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "modern"}}),
        )
        .await;
    assert_eq!(call.status, 200, "{}", call.body);
    assert_eq!(call.json()["id"], "c-1");
    assert_eq!(result_text(&call), "modern");
    assert_eq!(call.json()["result"]["resultType"], "complete");

    // The same endpoint still serves the handshake era.
    raw.initialize("2025-11-25").await;
    let legacy = raw.call_tool(2, "echo", json!({"text": "legacy"})).await;
    assert_eq!(result_text(&legacy), "legacy");
    // A modern request carrying a session id is still stateless.
    let mixed = raw
        .modern(
            json!(3),
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "both"}}),
        )
        .await;
    assert_eq!(result_text(&mixed), "both");

    let (ok, ps) = berth.cli(&["ps"]);
    assert!(ok && ps.contains("era: 2026-07-28"), "{ps}");
}

#[tokio::test]
async fn bad_input_of_the_new_era_gets_the_specs_status_and_code() {
    let berth = Berth::start("", &demo("demo", ""));
    let raw = Raw::new(berth.url("demo"));
    let echo = json!({"name": "echo", "arguments": {"text": "x"}});
    let body = modern_body(json!(7), "tools/call", echo.clone());

    // Headers: missing or disagreeing with the body → 400, -32020, id echoed.
    let no_headers = raw.post_with(body.clone(), &[]).await;
    assert_error(&no_headers, 400, -32020, json!(7));
    let wrong_method = raw
        .post_with(
            body.clone(),
            &[
                ("mcp-protocol-version", MODERN),
                ("mcp-method", "tools/list"),
                ("mcp-name", "echo"),
            ],
        )
        .await;
    assert_error(&wrong_method, 400, -32020, json!(7));
    let no_name = raw
        .post_with(
            body.clone(),
            &[
                ("mcp-protocol-version", MODERN),
                ("mcp-method", "tools/call"),
            ],
        )
        .await;
    assert_error(&no_name, 400, -32020, json!(7));
    let wrong_name = raw
        .post_with(
            body.clone(),
            &[
                ("MCP-Protocol-Version", MODERN),
                ("MCP-METHOD", "tools/call"),
                ("Mcp-Name", "add"),
            ],
        )
        .await;
    assert_error(&wrong_name, 400, -32020, json!(7));
    let version_mismatch = raw
        .post_with(
            body.clone(),
            &[
                ("mcp-protocol-version", "2025-11-25"),
                ("mcp-method", "tools/call"),
                ("mcp-name", "echo"),
            ],
        )
        .await;
    assert_error(&version_mismatch, 400, -32020, json!(7));

    // _meta: a missing field → -32602; an unknown version → -32022 with the supported list.
    let headers = modern_headers("tools/list", None);
    let extra: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let no_caps = json!({"jsonrpc":"2.0","id":8,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion": MODERN}}});
    assert_error(
        &raw.post_with(no_caps.to_string(), &extra).await,
        400,
        -32602,
        json!(8),
    );
    let no_meta = json!({"jsonrpc":"2.0","id":9,"method":"tools/list","params":{}});
    assert_error(
        &raw.post_with(no_meta.to_string(), &extra).await,
        400,
        -32602,
        json!(9),
    );
    let future = json!({"jsonrpc":"2.0","id":10,"method":"tools/list","params":{"_meta":{
        "io.modelcontextprotocol/protocolVersion":"2099-01-01","io.modelcontextprotocol/clientCapabilities":{}}}});
    // A header that disagrees with _meta is a mismatch first...
    let disagreeing = raw.post_with(future.to_string(), &extra).await;
    assert_error(&disagreeing, 400, -32020, json!(10));
    // ...and a version both name but Berth does not serve is -32022.
    let future_headers = [
        ("mcp-protocol-version", "2099-01-01"),
        ("mcp-method", "tools/list"),
    ];
    let unsupported = raw.post_with(future.to_string(), &future_headers).await;
    assert_error(&unsupported, 400, -32022, json!(10));
    assert_eq!(
        unsupported.json()["error"]["data"]["supported"],
        json!([MODERN])
    );
    assert_eq!(
        unsupported.json()["error"]["data"]["requested"],
        "2099-01-01"
    );

    // Methods the revision removed → 404, -32601; so is a method the server lacks.
    for method in [
        "initialize",
        "ping",
        "logging/setLevel",
        "resources/subscribe",
        "resources/unsubscribe",
    ] {
        let reply = raw.modern(json!(method), method, json!({})).await;
        assert_error(&reply, 404, -32601, json!(method));
    }
    let unknown = raw.modern(json!(11), "no/such-method", json!({})).await;
    assert_error(&unknown, 404, -32601, json!(11));

    // Malformed JSON, notifications, GET and DELETE.
    let garbage = raw.post_with("{not json", &extra).await;
    assert_error(&garbage, 400, -32700, Value::Null);
    let note = json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}});
    assert_eq!(raw.post_with(note.to_string(), &extra).await.status, 202);
    let get = raw.get(&[("mcp-protocol-version", MODERN)]).await;
    assert_eq!(get.status().as_u16(), 405);
    let delete = raw
        .http
        .delete(&raw.url)
        .header("mcp-protocol-version", MODERN)
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status().as_u16(), 405);

    // After all that, a good request is served.
    let good = raw.modern(json!(12), "tools/call", echo).await;
    assert_eq!(result_text(&good), "x");
}

#[tokio::test]
async fn listeners_that_never_read_leave_other_clients_unaffected() {
    let berth = Berth::start("sse_keepalive = \"50ms\"", &demo("demo", ""));
    let raw = Raw::new(berth.url("demo"));
    // Stalled listeners: the streams are opened and never read.
    let mut stalled = Vec::new();
    for i in 0..8 {
        let filter = json!({"toolsListChanged": true});
        let response = open_listen(&raw, filter, &format!("listen-{i}")).await;
        assert_eq!(response.status().as_u16(), 200);
        stalled.push(response);
    }
    let started = Instant::now();
    let calls = (0..32).map(|i| {
        let raw = Raw::new(berth.url("demo"));
        async move {
            raw.modern(
                json!(i),
                "tools/call",
                json!({"name": "echo", "arguments": {"text": format!("t{i}")}}),
            )
            .await
        }
    });
    for (i, reply) in futures::future::join_all(calls).await.iter().enumerate() {
        assert_eq!(result_text(reply), format!("t{i}"));
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(stalled);
}

#[tokio::test]
async fn sixty_four_concurrent_clients_share_a_pool_of_two_each_answer_and_progress_to_its_caller()
{
    let berth = Berth::start(
        "",
        &demo(
            "demo",
            "[servers.demo.pool]\nmin_ready = 2\nmax_processes = 2",
        ),
    );
    let baseline_deadline = Instant::now() + Duration::from_secs(10);
    // Every client uses the same id: answers must still reach their own caller.
    for round in 0..3 {
        let calls = (0..64).map(|i| {
            let raw = Raw::new(berth.url("demo"));
            async move {
                let text = format!("client-{i}-round-{round}");
                let reply = raw
                    .modern(
                        json!(1),
                        "tools/call",
                        json!({"name": "echo", "arguments": {"text": text}}),
                    )
                    .await;
                (text, reply)
            }
        });
        for (text, reply) in futures::future::join_all(calls).await {
            assert_eq!(reply.status, 200, "{}", reply.body);
            assert_eq!(reply.json()["id"], 1);
            assert_eq!(result_text(&reply), text);
        }
    }
    // Progress: every client uses the same id and the same token too; each
    // stream must carry exactly its own call's progress, then its answer.
    let calls = (0..64u32).map(|i| {
        let raw = Raw::new(berth.url("demo"));
        async move {
            let params = json!({"name": "countdown", "arguments": {"seconds": 0.3 + f64::from(i % 4) / 10.0},
                                "_meta": {"progressToken": "p"}});
            (i, raw.modern(json!(1), "tools/call", params).await)
        }
    });
    for (i, reply) in futures::future::join_all(calls).await {
        let steps = 3 + u64::from(i % 4);
        let messages = reply.sse_messages();
        let progress: Vec<&Value> = messages
            .iter()
            .filter(|m| m["method"] == "notifications/progress")
            .collect();
        assert_eq!(progress.len() as u64, steps, "client {i}: {messages:?}");
        assert!(
            progress.iter().all(|p| p["params"]["progressToken"] == "p"
                && p["params"]["total"].as_f64() == Some(steps as f64)),
            "client {i}: {progress:?}"
        );
        let answer = messages.last().unwrap();
        assert_eq!(answer["id"], 1);
        assert!(
            answer["result"]["content"][0]["text"]
                .as_str()
                .unwrap()
                .starts_with("counted down")
        );
    }
    let servers = berth.status();
    let stateless = &servers[0]["stateless"];
    assert_eq!(
        stateless["processes"].as_array().map(Vec::len),
        Some(2),
        "{stateless}"
    );
    assert!(stateless["calls"].as_u64().unwrap() >= 192, "{stateless}");
    // Two warm handshake processes + two stateless ones, nothing else.
    while berth.children().len() > 4 && Instant::now() < baseline_deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(berth.children().len() <= 4, "{:?}", berth.children());
    let pid = berth.pid();
    let status = berth.stop(Duration::from_secs(10));
    assert!(status.success());
    assert!(children_of(pid).is_empty());
}

#[tokio::test]
async fn handshake_only_npm_server_is_bridged_for_pinned_clients() {
    let berth = Berth::start(
        "",
        &npm_server(
            "everything",
            "@modelcontextprotocol/server-everything",
            &["stdio"],
            &[],
        ),
    );
    let raw = Raw::new(berth.url("everything"));

    let discover = raw.modern(json!(1), "server/discover", json!({})).await;
    assert_eq!(discover.status, 200, "{}", discover.body);
    let result = &discover.json()["result"];
    assert!(
        result["supportedVersions"]
            .as_array()
            .unwrap()
            .contains(&json!(MODERN))
    );
    assert_eq!(
        result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "mcp-servers/everything"
    );

    let tools = raw.modern(json!(2), "tools/list", json!({})).await;
    let tools = tools.json()["result"].clone();
    assert_eq!(tools["resultType"], "complete");
    assert_eq!(tools["ttlMs"], 0);
    assert_eq!(tools["cacheScope"], "private");
    let names: Vec<&str> = tools["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(names.contains(&"echo"), "{names:?}");
    // The bridge declares no client capability, so tools that need one stay hidden.
    assert!(!names.contains(&"trigger-sampling-request"), "{names:?}");

    let call = raw
        .modern(
            json!(3),
            "tools/call",
            json!({"name": "echo", "arguments": {"message": "bridged"}}),
        )
        .await;
    assert_eq!(result_text(&call), "Echo: bridged");
    assert_eq!(call.json()["result"]["resultType"], "complete");

    let read = raw
        .modern(
            json!(4),
            "resources/read",
            json!({"uri": "demo://resource/static/document/architecture.md"}),
        )
        .await;
    let read = read.json()["result"].clone();
    assert_eq!(
        (read["resultType"].as_str(), read["cacheScope"].as_str()),
        (Some("complete"), Some("private"))
    );
    assert!(read["contents"][0]["text"].is_string(), "{read}");
    let missing = raw
        .modern(
            json!(5),
            "resources/read",
            json!({"uri": "demo://nothing/here"}),
        )
        .await;
    assert_error(&missing, 400, -32602, json!(5));

    let prompt = raw
        .modern(json!(6), "prompts/get", json!({"name": "simple-prompt"}))
        .await;
    assert_eq!(
        prompt.json()["result"]["resultType"],
        "complete",
        "{}",
        prompt.body
    );
    assert!(prompt.json()["result"]["messages"].is_array());

    // Progress travels on the POST's stream, under the client's own token.
    let progress = raw
        .modern(
            json!(7),
            "tools/call",
            json!({"name": "trigger-long-running-operation", "arguments": {"duration": 1, "steps": 3},
                   "_meta": {"progressToken": "my-token"}}),
        )
        .await;
    assert!(progress.content_type().starts_with("text/event-stream"));
    let events = progress.sse_messages();
    let tokens: Vec<&Value> = events
        .iter()
        .filter_map(|m| m["params"].get("progressToken"))
        .collect();
    assert_eq!(tokens, vec![&json!("my-token"); 3], "{events:?}");
    assert_eq!(events.last().unwrap()["id"], 7);

    // The sampling tool is not there for a stateless client: the answer comes at once.
    let started = Instant::now();
    let sampling = raw
        .modern(
            json!(8),
            "tools/call",
            json!({"name": "trigger-sampling-request", "arguments": {"prompt": "hi"}}),
        )
        .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    let body = sampling.json();
    assert!(
        body["result"]["isError"] == true || body["error"].is_object(),
        "{body}"
    );

    // Methods a handshake-era server cannot serve statelessly are refused.
    let listen_tasks = raw
        .modern(json!(9), "tasks/get", json!({"taskId": "t"}))
        .await;
    assert_error(&listen_tasks, 404, -32601, json!(9));
    let (ok, ps) = berth.cli(&["ps"]);
    assert!(ok && ps.contains("era: handshake-only"), "{ps}");
}

#[tokio::test]
async fn listen_streams_acknowledge_filter_tag_and_close_when_berth_stops() {
    let berth = Berth::start("", &fixture_server("fixture", "everything"));
    let raw = Raw::new(berth.url("fixture"));
    let prompts = open_listen(&raw, json!({"promptsListChanged": true}), "only-prompts").await;
    let tools = open_listen(&raw, json!({"toolsListChanged": true}), "only-tools").await;
    assert_eq!(prompts.status().as_u16(), 200);
    assert!(
        prompts.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    // The 200 came once each stream was subscribed: trigger at once.
    let trigger = raw
        .modern(
            json!(1),
            "tools/call",
            json!({"name": "test_trigger_prompt_change", "arguments": {}}),
        )
        .await;
    assert_eq!(trigger.status, 200, "{}", trigger.body);
    let mut prompts = prompts;
    let mut prompts_text = String::new();
    let changed = |t: &str| t.contains("notifications/prompts/list_changed");
    read_until(
        &mut prompts,
        &mut prompts_text,
        changed,
        Duration::from_secs(10),
    )
    .await;
    // Stopping Berth ends every listen stream with its closing result.
    let pid = berth.pid();
    let stopping = std::thread::spawn(move || berth.stop(Duration::from_secs(10)));
    let (prompts, tools) = tokio::join!(
        read_rest(prompts, prompts_text),
        read_rest(tools, String::new())
    );
    assert!(stopping.join().unwrap().success());
    assert!(children_of(pid).is_empty());

    let prompts = sse_messages(&prompts);
    assert_eq!(
        prompts[0]["method"], "notifications/subscriptions/acknowledged",
        "{prompts:?}"
    );
    assert_eq!(
        prompts[0]["params"]["notifications"],
        json!({"promptsListChanged": true})
    );
    assert_eq!(
        prompts[1]["method"], "notifications/prompts/list_changed",
        "{prompts:?}"
    );
    for m in &prompts {
        let tag = m["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"].clone();
        let tag = if tag.is_null() {
            m["result"]["_meta"]["io.modelcontextprotocol/subscriptionId"].clone()
        } else {
            tag
        };
        assert_eq!(tag, "only-prompts", "{m}");
    }
    let last = prompts.last().unwrap();
    assert_eq!(
        (last["id"].as_str(), last["result"]["resultType"].as_str()),
        (Some("only-prompts"), Some("complete"))
    );
    // The tools-only stream heard no prompt change: acknowledgement, then the closing result.
    let tools = sse_messages(&tools);
    assert_eq!(tools.len(), 2, "{tools:?}");
    assert_eq!(tools[1]["id"], "only-tools");
}

#[tokio::test]
async fn resource_subscriptions_reach_only_the_listeners_that_asked() {
    let berth = Berth::start(
        "",
        &(fixture_server("fixture", "everything") + "[servers.fixture.pool]\nmin_ready = 2\n"),
    );
    let raw = Raw::new(berth.url("fixture"));
    // Both stateless processes up before anyone listens (the watches go to every process).
    raw.modern(json!("warm"), "tools/list", json!({})).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let servers = berth.status();
        let up = servers[0]["stateless"]["processes"]
            .as_array()
            .map_or(0, |ps| ps.iter().filter(|p| p["state"] == "shared").count());
        if up == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stateless pool never reached 2 processes: {servers:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let watched = open_listen(
        &raw,
        json!({"resourceSubscriptions": ["test://watched-resource"]}),
        "watched",
    )
    .await;
    let other = open_listen(
        &raw,
        json!({"resourceSubscriptions": ["test://other"]}),
        "other",
    )
    .await;
    let tools = open_listen(&raw, json!({"toolsListChanged": true}), "tools").await;
    // Each 200 came once every process had acknowledged the stream's watch.
    for id in 0..4 {
        let reply = raw
            .modern(
                json!(id),
                "tools/call",
                json!({"name": "test_trigger_resource_update", "arguments": {}}),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    let (mut watched, mut watched_text) = (watched, String::new());
    let four = |t: &str| t.matches("notifications/resources/updated").count() >= 4;
    read_until(
        &mut watched,
        &mut watched_text,
        four,
        Duration::from_secs(10),
    )
    .await;
    let stopping = std::thread::spawn(move || berth.stop(Duration::from_secs(10)));
    let (watched, other, tools) = tokio::join!(
        read_rest(watched, watched_text),
        read_rest(other, String::new()),
        read_rest(tools, String::new())
    );
    let (watched, other, tools) = (
        sse_messages(&watched),
        sse_messages(&other),
        sse_messages(&tools),
    );
    assert!(stopping.join().unwrap().success());

    assert_eq!(
        watched[0]["params"]["notifications"]["resourceSubscriptions"],
        json!(["test://watched-resource"]),
        "{watched:?}"
    );
    let updates: Vec<&Value> = watched
        .iter()
        .filter(|m| m["method"] == "notifications/resources/updated")
        .collect();
    // Four triggers, spread over two processes: each reaches this stream once.
    assert_eq!(updates.len(), 4, "{watched:?}");
    for update in updates {
        assert_eq!(update["params"]["uri"], "test://watched-resource");
        assert_eq!(
            update["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
            "watched"
        );
    }
    for (name, stream) in [("other", &other), ("tools", &tools)] {
        assert!(
            stream
                .iter()
                .all(|m| m["method"] != "notifications/resources/updated"),
            "{name} heard an update it did not ask for: {stream:?}"
        );
    }
}

/// A handshake-only server in `sh` whose tool `ask` sends
/// `sampling/createMessage` whatever the client declared, then reports the
/// error code it was answered with.
const ASKER: &str = r#"
while IFS= read -r line; do
  id=$(printf '%s\n' "$line" | sed -n 's/^.*"id":\("[^"]*"\|[0-9][0-9]*\).*$/\1/p')
  case "$line" in
    *'"method":"initialize"'*)
      printf '{"jsonrpc":"2.0","id":%s,"result":{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"asker","version":"1"}}}\n' "$id" ;;
    *'"method":"tools/call"'*)
      printf '{"jsonrpc":"2.0","id":"ask-1","method":"sampling/createMessage","params":{"messages":[],"maxTokens":1}}\n'
      IFS= read -r reply
      code=$(printf '%s\n' "$reply" | sed -n 's/^.*"code":\(-[0-9]*\).*$/\1/p')
      printf '{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":"sampling answered with %s"}],"isError":true}}\n' "$id" "$code" ;;
    *'"method":"notifications/'*) ;;
    *'"method":"server/discover"'*)
      printf '{"jsonrpc":"2.0","id":%s,"error":{"code":-32601,"message":"Method not found"}}\n' "$id" ;;
    *) [ -n "$id" ] && printf '{"jsonrpc":"2.0","id":%s,"result":{}}\n' "$id" ;;
  esac
done
"#;

#[tokio::test]
async fn a_bridged_servers_own_request_is_refused_at_once() {
    let server = format!("[servers.asker]\ncommand = \"/bin/sh\"\nargs = [\"-c\", {ASKER:?}]\n");
    let berth = Berth::start("", &server);
    let raw = Raw::new(berth.url("asker"));
    let started = Instant::now();
    let reply = raw
        .modern(
            json!(1),
            "tools/call",
            json!({"name": "ask", "arguments": {}}),
        )
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = reply.json();
    assert_eq!(
        body["result"]["content"][0]["text"], "sampling answered with -32601",
        "{body}"
    );
    assert_eq!(body["result"]["resultType"], "complete");
    // Nothing but the answer reached the client: no server request on its stream.
    assert!(reply.content_type().starts_with("application/json"));
}

#[tokio::test]
async fn idle_stateless_processes_go_to_standby_and_wake_for_the_next_request() {
    let berth = Berth::start(
        "",
        &demo(
            "demo",
            "[servers.demo.pool]\nstandby_after = \"200ms\"\nhealth_interval = \"100ms\"",
        ),
    );
    let raw = Raw::new(berth.url("demo"));
    let echo = |text: &str| json!({"name": "echo", "arguments": {"text": text}});
    assert_eq!(
        result_text(&raw.modern(json!(1), "tools/call", echo("first")).await),
        "first"
    );
    let stateless_states = || {
        berth.status()[0]["stateless"]["processes"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .map(|p| p["state"].as_str().unwrap_or_default().to_owned())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while stateless_states() != ["standby"] {
        assert!(
            Instant::now() < deadline,
            "never went to standby: {:?}",
            stateless_states()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Frozen (SIGSTOP), and health-checked only while awake.
    let started = Instant::now();
    assert_eq!(
        result_text(&raw.modern(json!(2), "tools/call", echo("again")).await),
        "again"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    let (_, logs) = berth.cli(&["logs", "demo"]);
    assert!(!logs.contains("unresponsive"), "{logs}");
}
