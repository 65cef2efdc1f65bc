//! Federated endpoints: one MCP endpoint over several servers (npm
//! reference servers, a PyPI one, Berth's fixture), with stable prefixed
//! names, members opened lazily, and a member's failure confined to its
//! own tools.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// The memory server writes its graph here (in the gateway's temp dir).
fn members(berth_dir: &std::path::Path) -> String {
    let memory_file = berth_dir.join("memory.json");
    format!(
        "{}\n{}\n{}\n{}",
        npm_server(
            "everything",
            "@modelcontextprotocol/server-everything",
            &[],
            &[]
        ),
        npm_server(
            "memory",
            "@modelcontextprotocol/server-memory",
            &[],
            &[("MEMORY_FILE_PATH", memory_file.to_str().expect("utf-8"))]
        ),
        pypi_server("time", "mcp-server-time", &[], &[]),
        fixture_server("fixture", "everything"),
    )
}

const ENDPOINTS: &str = r#"
[endpoints.work]
servers = ["everything", "memory", "time", "fixture"]
[endpoints.work.members.memory]
rename = { read_graph = "graph" }
deny = ["delete_entities"]
descriptions = { search_nodes = "Search the team's knowledge graph." }

[endpoints.small]
servers = ["time"]
"#;

/// The gateway, and the directory memory's graph lives in (kept with it).
fn start() -> (Berth, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let servers = format!("{}\n{ENDPOINTS}", members(dir.path()));
    (Berth::start("", &servers), dir)
}

async fn tool_names(client: &Raw) -> Vec<String> {
    let reply = client
        .post(r#"{"jsonrpc":"2.0","id":"list","method":"tools/list"}"#)
        .await;
    let answer = reply.answer();
    answer["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tools: {answer}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

async fn call_text(
    client: &Raw,
    id: u64,
    tool: &str,
    args: serde_json::Value,
) -> Result<String, String> {
    let reply = client.call_tool(id, tool, args).await;
    let answer = reply.answer();
    match answer["result"]["content"][0]["text"].as_str() {
        Some(text) if answer["result"]["isError"] != true => Ok(text.to_string()),
        _ => Err(answer.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_session_reaches_every_member_under_stable_names() {
    let (berth, _memory) = start();
    let mut client = Raw::new(berth.url("work"));
    let init = client.initialize("2025-11-25").await;
    assert_eq!(init["result"]["serverInfo"]["name"], "work", "{init}");
    // Lazily: no member process was started by the endpoint's initialize.
    let status = berth.status();
    for member in ["everything", "memory", "time"] {
        let s = status
            .iter()
            .find(|s| s["server"] == member)
            .expect("member");
        assert_eq!(s["sessions"], 0, "{member} was opened before use: {s}");
    }
    let endpoint_members = |status: &[serde_json::Value]| -> Vec<(String, bool)> {
        status
            .iter()
            .filter(|s| s["server"] == "work")
            .flat_map(|s| s["processes"].as_array().into_iter().flatten())
            .filter_map(|p| p["endpoint"]["members"].as_array())
            .flatten()
            .map(|m| {
                (
                    m["server"].as_str().unwrap_or_default().to_string(),
                    m["open"] == true,
                )
            })
            .collect()
    };
    assert_eq!(
        endpoint_members(&status),
        vec![
            ("everything".to_string(), false),
            ("memory".to_string(), false),
            ("time".to_string(), false),
            ("fixture".to_string(), false)
        ]
    );
    let names = tool_names(&client).await;
    for expected in [
        "everything__echo",
        "memory__graph",
        "memory__search_nodes",
        "time__get_current_time",
        "fixture__test_simple_text",
    ] {
        assert!(
            names.contains(&expected.to_string()),
            "{expected} missing: {names:?}"
        );
    }
    // Renamed and denied tools are not shown under their own names.
    assert!(
        !names
            .iter()
            .any(|n| n == "memory__read_graph" || n == "memory__delete_entities"),
        "{names:?}"
    );
    let list = client
        .post(r#"{"jsonrpc":"2.0","id":"l2","method":"tools/list"}"#)
        .await
        .answer();
    let search = list["result"]["tools"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == "memory__search_nodes"))
        .expect("search_nodes");
    assert_eq!(search["description"], "Search the team's knowledge graph.");

    assert_eq!(
        call_text(
            &client,
            1,
            "everything__echo",
            serde_json::json!({"message": "hi"})
        )
        .await,
        Ok("Echo: hi".to_string())
    );
    let time = call_text(
        &client,
        2,
        "time__get_current_time",
        serde_json::json!({"timezone": "UTC"}),
    )
    .await
    .expect("time");
    assert!(time.contains("UTC"), "{time}");
    let graph = call_text(&client, 3, "memory__graph", serde_json::json!({}))
        .await
        .expect("graph");
    assert!(graph.contains("entities"), "{graph}");
    // `berth ps` and the admin API show the members this session opened.
    assert!(
        endpoint_members(&berth.status())
            .iter()
            .all(|(_, open)| *open)
    );
    let (ok, ps) = berth.cli(&["ps"]);
    assert!(ok && ps.contains("members: everything (open, pid"), "{ps}");
    // A denied tool cannot be called under its own name either.
    let denied = call_text(
        &client,
        4,
        "memory__delete_entities",
        serde_json::json!({"entityNames": []}),
    )
    .await;
    assert!(
        denied.is_err_and(|e| e.contains("Unknown tool")),
        "denied tool was callable"
    );

    // A name never depends on the other members: the smaller endpoint
    // shows time's tools under the same names.
    let mut small = Raw::new(berth.url("small"));
    small.initialize("2025-11-25").await;
    let small_names = tool_names(&small).await;
    let time_names: Vec<&String> = names.iter().filter(|n| n.starts_with("time__")).collect();
    assert_eq!(small_names.iter().collect::<Vec<_>>(), time_names);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_member_costs_only_its_own_tools_and_recovers() {
    let (berth, _memory) = start();
    let mut client = Raw::new(berth.url("work"));
    client.initialize("2025-11-25").await;
    call_text(&client, 1, "memory__graph", serde_json::json!({}))
        .await
        .expect("graph");
    call_text(
        &client,
        2,
        "time__get_current_time",
        serde_json::json!({"timezone": "UTC"}),
    )
    .await
    .expect("time");
    // memory's process dies.
    let status = berth.status();
    let memory = status
        .iter()
        .find(|s| s["server"] == "memory")
        .expect("memory");
    let pid = memory["processes"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["state"] == "leased"))
        .and_then(|p| p["pid"].as_u64())
        .unwrap_or_else(|| panic!("no leased memory process: {memory}"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill memory");
    // The other members go on as if nothing happened.
    let echo = call_text(
        &client,
        3,
        "everything__echo",
        serde_json::json!({"message": "still here"}),
    )
    .await;
    assert_eq!(echo, Ok("Echo: still here".to_string()));
    // memory's tools come back on the same endpoint session.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut id = 10;
    loop {
        id += 1;
        match call_text(&client, id, "memory__graph", serde_json::json!({})).await {
            Ok(graph) => {
                assert!(graph.contains("entities"), "{graph}");
                break;
            }
            Err(e) if Instant::now() < deadline => {
                assert!(
                    e.contains("memory"),
                    "the error should name the member: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("memory did not recover within 20 s: {e}\n{}", berth.log()),
        }
    }
    let time = call_text(
        &client,
        99,
        "time__get_current_time",
        serde_json::json!({"timezone": "UTC"}),
    )
    .await;
    assert!(time.is_ok(), "{time:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_notifications_reach_the_endpoints_client() {
    let (berth, _memory) = start();
    let mut client = Raw::new(berth.url("work"));
    client.initialize("2025-11-25").await;
    let mut stream = client.get(&[]).await;
    assert_eq!(stream.status(), 200);
    // A subscription to one of everything's resources, by its endpoint URI.
    let uri = "everything+demo://resource/static/document/architecture.md";
    let subscribe = client
        .post(&format!(
            r#"{{"jsonrpc":"2.0","id":"s","method":"resources/subscribe","params":{{"uri":"{uri}"}}}}"#
        ))
        .await;
    assert!(
        subscribe.answer().get("result").is_some(),
        "{}",
        subscribe.body
    );
    let toggled = call_text(
        &client,
        1,
        "everything__toggle-subscriber-updates",
        serde_json::json!({}),
    )
    .await;
    assert!(toggled.is_ok(), "{toggled:?}");
    // everything announces updates every 5 s, outside any request.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = String::new();
    while Instant::now() < deadline && !seen.contains("notifications/resources/updated") {
        match tokio::time::timeout(Duration::from_secs(1), stream.chunk()).await {
            Ok(Ok(Some(chunk))) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(_) => break,
            Err(_) => {}
        }
    }
    assert!(
        seen.contains("notifications/resources/updated") && seen.contains(uri),
        "the client never heard of the member's update under the endpoint URI: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_scopes_hold_through_the_endpoint() {
    let (reader_key, reader) = api_key("reader");
    let servers = format!(
        "[auth]\nmode = \"api_key\"\n{reader}\n{}\nrequired_scopes = [\"time:read\"]\n{}\n[endpoints.work]\nservers = [\"time\", \"everything\"]\n",
        pypi_server("time", "mcp-server-time", &[], &[]),
        npm_server(
            "everything",
            "@modelcontextprotocol/server-everything",
            &[],
            &[]
        ),
    );
    let berth = Berth::start("", &servers);
    let mut client = Raw::new(berth.url("work"));
    client.token = Some(reader_key);
    client.initialize("2025-11-25").await;
    // The key lacks time:read: time's tools are hidden and refused.
    let names = tool_names(&client).await;
    assert!(names.iter().any(|n| n == "everything__echo"), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("time__")), "{names:?}");
    let reply = client
        .call_tool(
            2,
            "time__get_current_time",
            serde_json::json!({"timezone": "UTC"}),
        )
        .await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert!(reply.body.contains("time:read"), "{}", reply.body);
}

/// Runs a plan-driven SDK client (tests/python/federated_client.py,
/// tests/node/federated_client.mjs, tests/python/agents_client.py) against
/// `url`; returns its JSON summary.
fn plan_client(
    program: std::path::PathBuf,
    script: &str,
    url: &str,
    plan: &serde_json::Value,
) -> serde_json::Value {
    let (ok, out) = run_with_timeout(
        std::process::Command::new(program)
            .arg(repo().join(script))
            .arg(url)
            .arg(plan.to_string()),
        Duration::from_secs(90),
    );
    let summary = out
        .lines()
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .unwrap_or_default();
    assert!(ok && summary["ok"] == true, "{script}: {out}");
    summary
}

#[test]
fn sdk_clients_see_one_merged_stable_list_and_call_every_member() {
    let upstream = Upstream::start(&["--transport", "streamable-http"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let servers = format!(
        "{}\n[servers.remote]\nurl = {:?}\n\n[endpoints.work]\nservers = [\"everything\", \"memory\", \"time\", \"remote\"]\n",
        members(dir.path()),
        upstream.url
    );
    let berth = Berth::start("", &servers);
    let url = berth.url("work");
    let plan = serde_json::json!({
        "expect_tools": [
            "everything__echo", "memory__read_graph", "time__get_current_time", "remote__add",
            "everything__trigger-sampling-request"
        ],
        "calls": [
            {"tool": "everything__echo", "args": {"message": "federated"}, "expect": "Echo: federated"},
            {"tool": "memory__read_graph", "args": {}, "expect": "entities"},
            {"tool": "time__get_current_time", "args": {"timezone": "UTC"}, "expect": "UTC"},
            {"tool": "remote__add", "args": {"a": 40, "b": 2}, "expect": "42"},
        ],
        "sampling": {
            "tool": "everything__trigger-sampling-request",
            "args": {"prompt": "say something", "maxTokens": 5},
            "expect": "berth-sampling-reply-7f3a",
        },
    });
    let python_run = plan_client(python(), "tests/python/federated_client.py", &url, &plan);
    let node_run = plan_client(
        "node".into(),
        "tests/node/federated_client.mjs",
        &url,
        &plan,
    );
    let agents_run = plan_client(python(), "tests/python/agents_client.py", &url, &plan);
    // Sampling from `everything` reached the client, and its answer everything.
    for run in [&python_run, &node_run] {
        assert!(
            run["sampling"]
                .as_str()
                .is_some_and(|s| s.contains("berth-sampling-reply-7f3a")),
            "{run}"
        );
    }
    // One list, the same names in the same order for every client (the
    // Agents SDK declares no sampling, so everything hides that one tool).
    let names = |run: &serde_json::Value| -> Vec<String> {
        run["tools"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str())
            .filter(|t| *t != "everything__trigger-sampling-request")
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(names(&python_run), names(&node_run));
    assert_eq!(names(&python_run), names(&agents_run));
    assert_eq!(agents_run["sampling"], "unsupported", "{agents_run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_reaches_the_client_on_its_request_and_modern_clients_are_served() {
    let (berth, _memory) = start();
    let mut client = Raw::new(berth.url("work"));
    client.initialize("2025-11-25").await;
    let body = serde_json::json!({
        "jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {
            "name": "everything__trigger-long-running-operation",
            "arguments": {"duration": 1, "steps": 3},
            "_meta": {"progressToken": "tok-7"},
        },
    });
    let reply = client.post(&body.to_string()).await;
    let messages = reply.sse_messages();
    let progress: Vec<&serde_json::Value> = messages
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .collect();
    assert!(progress.len() >= 3, "{}", reply.body);
    assert!(
        progress
            .iter()
            .all(|p| p["params"]["progressToken"] == "tok-7")
    );
    let answer = messages.iter().find(|m| m["id"] == 7).expect("answer");
    assert!(
        answer["result"]["content"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("completed")),
        "{answer}"
    );

    // A 2026-07-28 client, probing then pinned, is served through the
    // handshake bridge: one list, calls to two members.
    for negotiation in ["auto", "pinned"] {
        for (tool, args, expect) in [
            (
                "everything__echo",
                r#"{"message":"modern"}"#,
                "Echo: modern",
            ),
            ("time__get_current_time", r#"{"timezone":"UTC"}"#, ""),
        ] {
            let options = format!(
                r#"{{"tool":"{tool}","args":{args}{}}}"#,
                if expect.is_empty() {
                    String::new()
                } else {
                    format!(r#","expect":"{expect}""#)
                }
            );
            let (ok, out) = run_with_timeout(
                std::process::Command::new(python_modern())
                    .arg(repo().join("tests/python-modern/client.py"))
                    .args(["--negotiation", negotiation, "--timeout", "60"])
                    .arg(berth.url("work"))
                    .arg("call")
                    .arg(&options),
                Duration::from_secs(90),
            );
            assert!(
                ok && out.contains(r#""ok": true"#),
                "{negotiation} {tool}: {out}"
            );
        }
    }
}

/// Reads `call`'s stream into `seen` until a message matches `wanted`
/// (returned), within `limit`.
async fn read_until(
    call: &mut reqwest::Response,
    seen: &mut String,
    limit: Duration,
    wanted: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(found) = sse_messages(seen).into_iter().find(&wanted) {
            return found;
        }
        let chunk = tokio::time::timeout_at(deadline, call.chunk())
            .await
            .unwrap_or_else(|_| panic!("nothing wanted within {limit:?}: {seen}"))
            .expect("stream")
            .unwrap_or_else(|| panic!("the stream ended first: {seen}"));
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_call_stops_at_its_member() {
    let (berth, _memory) = start();
    let mut client = Raw::new(berth.url("work"));
    client.initialize("2025-11-25").await;
    let body = serde_json::json!({
        "jsonrpc": "2.0", "id": 41, "method": "tools/call",
        "params": {
            "name": "everything__trigger-long-running-operation",
            "arguments": {"duration": 30, "steps": 30},
            "_meta": {"progressToken": "long"},
        },
    });
    let started = Instant::now();
    let mut call = client.open(body.to_string()).await;
    // Cancelled once the member is at work: its first progress is out.
    let mut seen = String::new();
    read_until(&mut call, &mut seen, Duration::from_secs(15), |m| {
        m["method"] == "notifications/progress"
    })
    .await;
    let cancel = client
        .post(r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":41,"reason":"changed my mind"}}"#)
        .await;
    assert_eq!(cancel.status, 202, "{}", cancel.body);
    let rest = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(chunk)) = call.chunk().await {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;
    assert!(rest.is_ok(), "the cancelled call still runs: {seen}");
    assert!(started.elapsed() < Duration::from_secs(25));
    // No answer for a cancelled request; the session goes on.
    assert!(!sse_messages(&seen).iter().any(|m| m["id"] == 41), "{seen}");
    let echo = call_text(
        &client,
        42,
        "everything__echo",
        serde_json::json!({"message": "after"}),
    )
    .await;
    assert_eq!(echo, Ok("Echo: after".to_string()));
}

/// A member that floods the client with sampling requests on `go` and
/// answers the call once `refusals` of them came back refused (never, if
/// nothing refuses them: the call then times out).
const FLOODING_MEMBER: &str = r#"
import json, sys
requests, refusals = int(sys.argv[1]), int(sys.argv[2])
def send(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()
call, refused, reason = None, 0, ""
for line in sys.stdin:
    message = json.loads(line)
    method = message.get("method")
    if method == "initialize":
        send({"jsonrpc": "2.0", "id": message["id"], "result": {
            "protocolVersion": message["params"]["protocolVersion"],
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "flood", "version": "1"}}})
    elif method == "tools/list":
        send({"jsonrpc": "2.0", "id": message["id"], "result": {"tools": [
            {"name": "go", "inputSchema": {"type": "object"}}]}})
    elif method == "tools/call":
        call = message["id"]
        for i in range(requests):
            send({"jsonrpc": "2.0", "id": "ask-%d" % i, "method": "sampling/createMessage",
                  "params": {"messages": [], "maxTokens": 1}})
    elif method is not None and "id" in message:
        send({"jsonrpc": "2.0", "id": message["id"],
              "error": {"code": -32601, "message": "Method not found"}})
    elif method is None and "error" in message:
        refused += 1
        reason = message["error"]["message"]
        if refused == refusals:
            send({"jsonrpc": "2.0", "id": call, "result": {"content": [
                {"type": "text", "text": "refused %d: %s" % (refused, reason)}]}})
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_flooding_a_silent_client_with_requests_is_refused_past_a_bound() {
    let dir = tempfile::tempdir().expect("temp dir");
    let script = dir.path().join("flood.py");
    std::fs::write(&script, FLOODING_MEMBER).expect("write the member");
    // 256 may wait for the client; the 44 past them are refused at once.
    let servers = format!(
        "[servers.flood]\ncommand = \"python3\"\nargs = [{:?}, \"300\", \"44\"]\nsandbox = false\n\n[endpoints.work]\nservers = [\"flood\"]\n",
        script.display().to_string()
    );
    let berth = Berth::start("request_timeout = \"20s\"", &servers);
    let mut client = Raw::new(berth.url("work"));
    client.initialize("2025-11-25").await;
    // The client declared sampling but answers none of them.
    let reply = client
        .call_tool(1, "flood__go", serde_json::json!({}))
        .await;
    let asked = sse_messages(&reply.body)
        .iter()
        .filter(|m| m["method"] == "sampling/createMessage")
        .count();
    assert_eq!(asked, 256, "requests the client saw");
    let answer = reply.answer();
    let text = answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no answer: {answer}\n--- berth log ---\n{}", berth.log()));
    assert!(
        text.starts_with("refused 44:") && text.contains("256 requests") && text.contains("`work`"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_elicitation_reaches_the_client_and_its_answer_the_member() {
    let (berth, _memory) = start();
    let mut client = Raw::new(berth.url("work"));
    client.initialize("2025-11-25").await;
    let body = serde_json::json!({
        "jsonrpc": "2.0", "id": 51, "method": "tools/call",
        "params": {"name": "everything__trigger-elicitation-request", "arguments": {}},
    });
    let mut call = client.open(body.to_string()).await;
    // The member's elicitation/create arrives on the call's stream, under
    // an id the endpoint chose.
    let mut seen = String::new();
    let request = read_until(&mut call, &mut seen, Duration::from_secs(20), |m| {
        m["method"] == "elicitation/create"
    })
    .await;
    assert!(
        request["params"]["requestedSchema"]["properties"]["name"].is_object(),
        "{request}"
    );
    let answer = serde_json::json!({
        "jsonrpc": "2.0", "id": request["id"],
        "result": {"action": "accept", "content": {"name": "Berth Tester", "check": true}},
    });
    let accepted = client.post(&answer.to_string()).await;
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    // The member got the answer under its own id: the call ends with what
    // the client accepted.
    let result = read_until(&mut call, &mut seen, Duration::from_secs(20), |m| {
        m["id"] == 51
    })
    .await;
    let text: String = result["result"]["content"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["text"].as_str())
        .collect();
    assert!(
        text.contains("- Name: Berth Tester") && text.contains("- Agreed to terms: true"),
        "{result}"
    );
}
