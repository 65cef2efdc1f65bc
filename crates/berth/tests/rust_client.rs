//! The official Rust SDK (`rmcp`) as a client through Berth: against the npm
//! reference server `server-everything` (what `tests/node/client.mjs
//! everything` does with the TypeScript SDK) and against the embedded `demo`
//! server; closing the client must end the session and reap its process.

// Sampling is deprecated by SEP-2577 in rmcp 3.x but still what server-everything uses.
#![allow(deprecated)]

mod common;
use common::*;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig,
    ClientRequest, CreateMessageRequestParams, CreateMessageResult, ElicitRequestParams,
    ElicitResult, ElicitationAction, ElicitationCapability, GetPromptRequestParams, Implementation,
    JsonObject, ProgressNotificationParam, ReadResourceRequestParams, ResourceContents,
    SamplingCapability, SamplingMessage, ServerResult,
};
use rmcp::service::{
    NotificationContext, PeerRequestOptions, RequestContext, RoleClient, RunningService,
};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{ClientHandler, ErrorData, ServiceExt};
use serde_json::{Value, json};

const SAMPLING_TEXT: &str = "berth-rmcp-sampling-reply-9d41";
const ELICIT_NAME: &str = "Berth Rust Tester";
/// Deadline for each MCP step (connect, one request, close).
const STEP: Duration = Duration::from_secs(20);

/// A client that declares sampling and elicitation, answers both, and records
/// every progress notification it receives.
#[derive(Clone, Default)]
struct TestClient {
    progress: Arc<Mutex<Vec<ProgressNotificationParam>>>,
    sampling_calls: Arc<AtomicUsize>,
    elicit_calls: Arc<AtomicUsize>,
    /// Declare sampling + elicitation (the demo test declares nothing).
    rich: bool,
}

impl ClientHandler for TestClient {
    fn get_info(&self) -> ClientConfig {
        let mut capabilities = ClientCapabilities::default();
        if self.rich {
            capabilities.sampling = Some(SamplingCapability::default());
            capabilities.elicitation = Some(ElicitationCapability::default());
        }
        ClientConfig::new(capabilities, Implementation::new("berth-e2e-rmcp", "0.1.0"))
    }

    async fn create_message(
        &self,
        params: CreateMessageRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, ErrorData> {
        self.sampling_calls.fetch_add(1, Ordering::SeqCst);
        if params.messages.is_empty() {
            return Err(ErrorData::invalid_params(
                "sampling request without messages",
                None,
            ));
        }
        Ok(CreateMessageResult::new(
            SamplingMessage::assistant_text(SAMPLING_TEXT),
            "berth-e2e-model".into(),
        )
        .with_stop_reason(CreateMessageResult::STOP_REASON_END_TURN))
    }

    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        self.elicit_calls.fetch_add(1, Ordering::SeqCst);
        match request {
            ElicitRequestParams::FormElicitationParams {
                requested_schema, ..
            } => {
                let schema = serde_json::to_value(&requested_schema).map_err(|e| {
                    ErrorData::internal_error(format!("cannot encode schema: {e}"), None)
                })?;
                Ok(ElicitResult::new(ElicitationAction::Accept)
                    .with_content(fill_elicitation_schema(&schema)))
            }
            _ => Ok(ElicitResult::new(ElicitationAction::Decline)),
        }
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.progress.lock().unwrap().push(params);
    }
}

/// Values that satisfy a flat elicitation form schema, preferring declared
/// defaults (the same rules as `fillElicitationSchema` in tests/node/client.mjs).
fn fill_elicitation_schema(schema: &Value) -> Value {
    let mut content = serde_json::Map::new();
    let Some(properties) = schema["properties"].as_object() else {
        return Value::Object(content);
    };
    for (key, prop) in properties {
        let first_const = |v: &Value| {
            v.as_array()
                .and_then(|a| a.first())
                .map(|c| c["const"].clone())
        };
        let value = if key == "name" {
            json!(ELICIT_NAME)
        } else if let Some(default) = prop.get("default") {
            default.clone()
        } else {
            match prop["type"].as_str() {
                Some("boolean") => json!(true),
                Some("integer") => json!(prop["minimum"].as_f64().map_or(1, |m| m.ceil() as i64)),
                Some("number") => json!(prop["minimum"].as_f64().unwrap_or(1.0)),
                Some("array") => {
                    let items = &prop["items"];
                    let first = items["enum"]
                        .as_array()
                        .and_then(|a| a.first().cloned())
                        .or_else(|| first_const(&items["anyOf"]))
                        .or_else(|| first_const(&items["oneOf"]));
                    json!(first.into_iter().collect::<Vec<_>>())
                }
                _ => {
                    if let Some(first) = prop["enum"].as_array().and_then(|a| a.first()) {
                        first.clone()
                    } else if let Some(first) =
                        first_const(&prop["oneOf"]).or_else(|| first_const(&prop["anyOf"]))
                    {
                        first
                    } else {
                        match prop["format"].as_str() {
                            Some("email") => json!("berth@example.com"),
                            Some("uri") => json!("https://example.com/berth"),
                            Some("date") => json!("2000-01-01"),
                            Some("date-time") => json!("2000-01-01T00:00:00Z"),
                            _ => json!(ELICIT_NAME),
                        }
                    }
                }
            }
        };
        content.insert(key.clone(), value);
    }
    Value::Object(content)
}

/// Awaits `fut` for at most [`STEP`]; panics with `what` and the gateway log otherwise.
async fn step<T>(berth: &Berth, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, fut).await {
        Ok(v) => v,
        Err(_) => panic!(
            "{what}: timed out after {STEP:?}; berth log:\n{}",
            berth.log()
        ),
    }
}

fn args(value: Value) -> JsonObject {
    value.as_object().expect("arguments are an object").clone()
}

/// The text blocks of a tool result, joined; panics if it is an error result.
fn tool_text(result: &CallToolResult, what: &str) -> String {
    let text: Vec<&str> = result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.as_str()))
        .collect();
    let text = text.join("\n");
    assert_ne!(
        result.is_error,
        Some(true),
        "{what}: tool returned isError: {text}"
    );
    text
}

async fn connect(
    berth: &Berth,
    url: &str,
    client: TestClient,
) -> RunningService<RoleClient, TestClient> {
    let transport = StreamableHttpClientTransport::from_uri(url.to_string());
    match step(berth, "connect (initialize)", client.serve(transport)).await {
        Ok(running) => running,
        Err(e) => panic!(
            "rmcp client could not initialize at {url}: {e}; berth log:\n{}",
            berth.log()
        ),
    }
}

/// Closes the client (rmcp's streamable HTTP transport sends DELETE for the
/// session on close) and checks that Berth ended the session and reaped its process.
async fn close_and_check_reaped(berth: &Berth, mut client: RunningService<RoleClient, TestClient>) {
    let quit = step(berth, "close", client.close()).await;
    assert!(quit.is_ok(), "closing the rmcp client failed: {quit:?}");
    // wait_for_children polls with thread::sleep: keep it off the async workers.
    tokio::task::block_in_place(|| berth.wait_for_children(0, Duration::from_secs(10)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_sdk_client_through_berth() {
    let berth = Berth::start(
        "",
        &npm_server(
            "everything",
            "@modelcontextprotocol/server-everything",
            &["stdio"],
            &[],
        ),
    );
    let handler = TestClient {
        rich: true,
        ..TestClient::default()
    };
    let client = connect(&berth, &berth.url("everything"), handler.clone()).await;
    let server = client.peer_info().expect("server info after initialize");
    println!(
        "connected: server {:?}, protocol {}",
        server.server_info, server.protocol_version
    );

    // list-tools
    let tools = step(&berth, "tools/list", client.list_all_tools())
        .await
        .expect("tools/list failed");
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    for wanted in [
        "echo",
        "trigger-long-running-operation",
        "trigger-sampling-request",
        "trigger-elicitation-request",
    ] {
        assert!(
            names.contains(&wanted),
            "tools/list lacks {wanted} (sampling/elicitation tools appear only if the client's capabilities reached the server): {names:?}"
        );
    }

    // call-echo
    let message = format!("hello from rmcp through berth {}", std::process::id());
    let echo = step(
        &berth,
        "tools/call echo",
        client.call_tool(
            CallToolRequestParams::new("echo").with_arguments(args(json!({ "message": message }))),
        ),
    )
    .await
    .expect("tools/call echo failed");
    let text = tool_text(&echo, "echo");
    assert!(
        text.contains(&message),
        "echo result does not contain the message: {text}"
    );

    // call-progress: every rmcp request carries a progress token; use the
    // request handle to learn this call's token.
    let request = ClientRequest::CallToolRequest(CallToolRequest::new(
        CallToolRequestParams::new("trigger-long-running-operation")
            .with_arguments(args(json!({ "duration": 2, "steps": 4 }))),
    ));
    let handle = step(
        &berth,
        "send long-running operation",
        client.send_cancellable_request(request, PeerRequestOptions::no_options()),
    )
    .await
    .expect("sending tools/call trigger-long-running-operation failed");
    let token = handle.progress_token.clone();
    let response = step(
        &berth,
        "tools/call trigger-long-running-operation",
        handle.await_response(),
    )
    .await
    .expect("tools/call trigger-long-running-operation failed");
    let ServerResult::CallToolResult(result) = response else {
        panic!("trigger-long-running-operation: unexpected response {response:?}")
    };
    let text = tool_text(&result, "trigger-long-running-operation");
    assert!(
        text.contains("completed"),
        "long-running operation result: {text}"
    );
    let progress = handler.progress.lock().unwrap().clone();
    let ours: Vec<&ProgressNotificationParam> = progress
        .iter()
        .filter(|p| p.progress_token == token)
        .collect();
    assert!(
        !ours.is_empty(),
        "no notifications/progress for token {token:?} while trigger-long-running-operation ran (all progress received: {progress:?})"
    );
    assert!(
        ours.windows(2).all(|w| w[0].progress < w[1].progress),
        "progress did not increase: {ours:?}"
    );

    // call-sampling
    let sampled = step(
        &berth,
        "tools/call trigger-sampling-request",
        client.call_tool(
            CallToolRequestParams::new("trigger-sampling-request").with_arguments(args(
                json!({ "prompt": "Say something for Berth", "maxTokens": 50 }),
            )),
        ),
    )
    .await
    .expect("tools/call trigger-sampling-request failed");
    let text = tool_text(&sampled, "trigger-sampling-request");
    assert!(
        handler.sampling_calls.load(Ordering::SeqCst) >= 1,
        "client never received a sampling/createMessage request"
    );
    assert!(
        text.contains(SAMPLING_TEXT),
        "sampling tool result lacks the client's reply {SAMPLING_TEXT}: {text}"
    );

    // call-elicitation
    let elicited = step(
        &berth,
        "tools/call trigger-elicitation-request",
        client.call_tool(
            CallToolRequestParams::new("trigger-elicitation-request")
                .with_arguments(JsonObject::new()),
        ),
    )
    .await
    .expect("tools/call trigger-elicitation-request failed");
    let text = tool_text(&elicited, "trigger-elicitation-request");
    assert!(
        handler.elicit_calls.load(Ordering::SeqCst) >= 1,
        "client never received an elicitation/create request"
    );
    assert!(
        text.to_lowercase().contains("accept"),
        "elicitation result does not report action accept: {text}"
    );
    assert!(
        text.contains(ELICIT_NAME),
        "elicitation result does not echo the accepted content ({ELICIT_NAME}): {text}"
    );

    // list-resources + read-resource
    let resources = step(&berth, "resources/list", client.list_resources(None))
        .await
        .expect("resources/list failed")
        .resources;
    let first = resources
        .first()
        .unwrap_or_else(|| panic!("resources/list returned no resources"));
    let read = step(
        &berth,
        "resources/read",
        client.read_resource(ReadResourceRequestParams::new(first.uri.clone())),
    )
    .await
    .unwrap_or_else(|e| panic!("resources/read {} failed: {e}", first.uri));
    let content = read
        .contents
        .first()
        .unwrap_or_else(|| panic!("resources/read {} returned no contents", first.uri));
    let (uri, size) = match content {
        ResourceContents::TextResourceContents { uri, text, .. } => (uri, text.len()),
        ResourceContents::BlobResourceContents { uri, blob, .. } => (uri, blob.len()),
        other => panic!(
            "resources/read {} returned unknown contents {other:?}",
            first.uri
        ),
    };
    assert_eq!(uri, &first.uri, "resources/read returned another uri");
    assert!(size > 0, "resource {} is empty", first.uri);

    // list-prompts + get-prompt
    let prompts = step(&berth, "prompts/list", client.list_all_prompts())
        .await
        .expect("prompts/list failed");
    let prompt_names: Vec<&str> = prompts.iter().map(|p| p.name.as_str()).collect();
    assert!(
        prompt_names.contains(&"args-prompt"),
        "prompts/list lacks args-prompt: {prompt_names:?}"
    );
    let prompt = step(
        &berth,
        "prompts/get args-prompt",
        client.get_prompt(
            GetPromptRequestParams::new("args-prompt")
                .with_arguments(args(json!({ "city": "Hamburg", "state": "HH" }))),
        ),
    )
    .await
    .expect("prompts/get args-prompt failed");
    let text: Vec<&str> = prompt
        .messages
        .iter()
        .filter_map(|m| m.content.as_text().map(|t| t.text.as_str()))
        .collect();
    assert!(
        text.join("\n").contains("Hamburg, HH"),
        "prompt text does not contain the arguments: {text:?}"
    );

    // close: DELETE ends the session, and Berth reaps the server process.
    close_and_check_reaped(&berth, client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_demo_serves_rmcp_client() {
    let berth = Berth::spawn(
        &["serve", "--listen", "127.0.0.1:0"],
        tempfile::tempdir().unwrap(),
    );
    let client = connect(
        &berth,
        &format!("{}/mcp/demo", berth.base()),
        TestClient::default(),
    )
    .await;
    let server = client.peer_info().expect("server info after initialize");
    println!(
        "connected: server {:?}, protocol {}",
        server.server_info, server.protocol_version
    );

    let tools = step(&berth, "tools/list", client.list_all_tools())
        .await
        .expect("tools/list failed");
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert!(
        names.contains(&"echo") && names.contains(&"add"),
        "demo tools/list lacks echo or add: {names:?}"
    );

    let echo = step(
        &berth,
        "tools/call echo",
        client.call_tool(
            CallToolRequestParams::new("echo")
                .with_arguments(args(json!({ "text": "ahoy from rmcp" }))),
        ),
    )
    .await
    .expect("tools/call echo failed");
    assert_eq!(
        tool_text(&echo, "echo"),
        "ahoy from rmcp",
        "demo echo must return its text unchanged"
    );

    let sum = step(
        &berth,
        "tools/call add",
        client.call_tool(
            CallToolRequestParams::new("add").with_arguments(args(json!({ "a": 2, "b": 3 }))),
        ),
    )
    .await
    .expect("tools/call add failed");
    assert_eq!(tool_text(&sum, "add"), "5", "demo add(2, 3)");

    close_and_check_reaped(&berth, client).await;
}
