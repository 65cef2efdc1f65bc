//! A minimal MCP Streamable HTTP client: just enough to open a session, call
//! one tool and end the session, with answers as JSON or as SSE streams.
//!
//! It also speaks the stateless revision 2026-07-28 ([`Session::stateless`]):
//! no `initialize`, no session and no `DELETE`; every request carries
//! `params._meta` (protocol version, client capabilities and info) and the
//! headers `MCP-Protocol-Version`, `Mcp-Method` and, for `tools/call`,
//! `Mcp-Name`; a result must say `"resultType":"complete"`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use reqwest::{StatusCode, Url};
use serde_json::{Value, json};

/// The protocol revision offered in `initialize`.
pub const PROTOCOL_VERSION: &str = "2025-11-25";

/// The stateless revision: no handshake, no session.
pub const MODERN_VERSION: &str = "2026-07-28";

/// How long an SSE answer's stream is read after our response arrived, so
/// that the connection can go back to the keep-alive pool (off the clock).
const SSE_DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// One HTTP/1.1 keep-alive client bound to one MCP endpoint.
pub struct McpHttp {
    http: reqwest::Client,
    url: Url,
}

/// An open MCP session, or a 2026-07-28 client that needs none.
pub struct Session {
    /// `Mcp-Session-Id`, absent for a stateless server.
    pub id: Option<String>,
    /// The version the server chose, sent back as `MCP-Protocol-Version`.
    pub protocol_version: String,
    /// 2026-07-28: every request carries `_meta` and the revision's headers.
    pub stateless: bool,
}

impl Session {
    /// A 2026-07-28 client: nothing to open and nothing to end.
    pub fn stateless() -> Session {
        Session {
            id: None,
            protocol_version: MODERN_VERSION.to_string(),
            stateless: true,
        }
    }
}

/// `params` of a 2026-07-28 request: `params` with the revision's `_meta`.
fn with_modern_meta(mut params: Value) -> Value {
    if let Value::Object(fields) = &mut params {
        fields.insert(
            "_meta".into(),
            json!({
                "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": {
                    "name": "berth-bench",
                    "version": env!("CARGO_PKG_VERSION")
                }
            }),
        );
    }
    params
}

/// A JSON-RPC response and the moment it was fully received.
pub struct Reply {
    pub message: Value,
    pub arrived: Instant,
}

impl McpHttp {
    /// `timeout` bounds every request, body included.
    /// `bearer` is sent as `Authorization: Bearer <token>` on every request.
    pub fn new(url: &str, timeout: Duration, bearer: Option<&str>) -> Result<Self> {
        let url = Url::parse(url).with_context(|| format!("invalid URL {url:?}"))?;
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = bearer {
            let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .context("the bearer token is not a valid header value")?;
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .http1_only()
            .tcp_nodelay(true)
            .no_proxy()
            .pool_idle_timeout(Duration::from_secs(600))
            .timeout(timeout)
            .build()
            .context("building the HTTP client")?;
        Ok(McpHttp { http, url })
    }

    /// Opens the keep-alive connection before anything is timed (a GET of
    /// `/healthz` on the same origin; any answer will do).
    pub async fn preconnect(&self) {
        let mut health = self.url.clone();
        health.set_path("/healthz");
        health.set_query(None);
        if let Ok(response) = self.http.get(health).send().await {
            let _ = response.bytes().await;
        }
    }

    /// POSTs `initialize`; returns the session and the reply.
    pub async fn initialize(&self) -> Result<(Session, Reply)> {
        let params = json!({
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": { "name": "berth-bench", "version": env!("CARGO_PKG_VERSION") }
        });
        let (headers, reply) = self.request(None, 0, "initialize", params).await?;
        let result = result_of("initialize", &reply.message)?;
        let protocol_version = result
            .get("protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or(PROTOCOL_VERSION)
            .to_string();
        let id = headers
            .get("mcp-session-id")
            .map(|v| v.to_str().map(str::to_string))
            .transpose()
            .context("initialize: Mcp-Session-Id is not visible ASCII")?;
        Ok((
            Session {
                id,
                protocol_version,
                stateless: false,
            },
            reply,
        ))
    }

    /// POSTs `notifications/initialized`; the server must answer 202.
    pub async fn initialized(&self, session: &Session) -> Result<()> {
        let body = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
        let response = self.post(Some(session), &body).await?;
        let status = response.status();
        if status != StatusCode::ACCEPTED {
            let text = response.text().await.unwrap_or_default();
            bail!("notifications/initialized: expected 202, got {status}: {text}");
        }
        let _ = response.bytes().await;
        Ok(())
    }

    /// POSTs `tools/call`; returns the reply, failing on a JSON-RPC error or
    /// a tool result marked `isError` (or, stateless, not `complete`).
    pub async fn call_tool(
        &self,
        session: &Session,
        id: u64,
        name: &str,
        arguments: Value,
    ) -> Result<Reply> {
        let params = json!({ "name": name, "arguments": arguments });
        let (_, reply) = self
            .request(Some(session), id, "tools/call", params)
            .await?;
        let result = result_of("tools/call", &reply.message)?;
        if result.get("isError") == Some(&Value::Bool(true)) {
            bail!("tools/call {name}: the tool failed: {result}");
        }
        if session.stateless && result.get("resultType") != Some(&json!("complete")) {
            bail!("tools/call {name}: a 2026-07-28 result that is not complete: {result}");
        }
        Ok(reply)
    }

    /// DELETEs the session (nothing to do for a stateless server).
    pub async fn delete(&self, session: &Session) -> Result<()> {
        let Some(id) = &session.id else {
            return Ok(());
        };
        let response = self
            .http
            .delete(self.url.clone())
            .header("mcp-session-id", id)
            .header("mcp-protocol-version", &session.protocol_version)
            .send()
            .await
            .context("DELETE")?;
        let status = response.status();
        let _ = response.bytes().await;
        // 405: the server does not let clients end sessions; allowed by the spec.
        if !status.is_success() && status != StatusCode::METHOD_NOT_ALLOWED {
            bail!("DELETE: HTTP {status}");
        }
        Ok(())
    }

    async fn post(&self, session: Option<&Session>, body: &Value) -> Result<reqwest::Response> {
        let mut request = self
            .http
            .post(self.url.clone())
            .header("accept", "application/json, text/event-stream")
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string());
        if let Some(session) = session {
            if let Some(id) = &session.id {
                request = request.header("mcp-session-id", id);
            }
            request = request.header("mcp-protocol-version", &session.protocol_version);
            if session.stateless
                && let Some(method) = body["method"].as_str()
            {
                request = request.header("mcp-method", method);
                if method == "tools/call"
                    && let Some(name) = body["params"]["name"].as_str()
                {
                    request = request.header("mcp-name", name);
                }
            }
        }
        let method = body["method"].as_str().unwrap_or("POST");
        request.send().await.with_context(|| method.to_string())
    }

    /// Sends a request and waits for the response with its id, from a JSON
    /// body or from an SSE stream.
    async fn request(
        &self,
        session: Option<&Session>,
        id: u64,
        method: &str,
        params: Value,
    ) -> Result<(HeaderMap, Reply)> {
        let params = match session {
            Some(session) if session.stateless => with_modern_meta(params),
            _ => params,
        };
        let body = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        let response = self.post(session, &body).await?;
        let status = response.status();
        let headers = response.headers().clone();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            bail!("{method}: HTTP {status}: {}", error_text(&text));
        }
        let content_type = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        let reply = if content_type.starts_with("application/json") {
            let bytes = response
                .bytes()
                .await
                .with_context(|| format!("{method}: reading the body"))?;
            let arrived = Instant::now();
            let value: Value = serde_json::from_slice(&bytes)
                .with_context(|| format!("{method}: the body is not JSON"))?;
            let message = find_response(value, id)
                .ok_or_else(|| anyhow!("{method}: the body holds no response with id {id}"))?;
            Reply { message, arrived }
        } else if content_type.starts_with("text/event-stream") {
            read_sse_response(response.bytes_stream(), id)
                .await
                .with_context(|| format!("{method}: SSE answer"))?
        } else {
            bail!("{method}: unexpected content type {content_type:?}");
        };
        Ok((headers, reply))
    }
}

/// Reads SSE events until the JSON-RPC response with `id`; the rest of the
/// stream is drained in the background so the connection can be reused.
async fn read_sse_response<S>(mut stream: S, id: u64) -> Result<Reply>
where
    S: Stream<Item = reqwest::Result<Bytes>> + Unpin + Send + 'static,
{
    let mut parser = SseParser::default();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.context("reading the stream")?;
        for data in parser.push(&chunk) {
            if data.trim().is_empty() {
                continue;
            }
            let value: Value = serde_json::from_str(&data)
                .with_context(|| format!("an event is not JSON: {data}"))?;
            if let Some(message) = find_response(value, id) {
                let arrived = Instant::now();
                tokio::spawn(async move {
                    let drain = async { while stream.next().await.is_some() {} };
                    let _ = tokio::time::timeout(SSE_DRAIN_LIMIT, drain).await;
                });
                return Ok(Reply { message, arrived });
            }
        }
    }
    bail!("the stream ended without a response with id {id}")
}

/// The JSON-RPC response with `id` in a message or a batch.
fn find_response(value: Value, id: u64) -> Option<Value> {
    match value {
        Value::Array(batch) => batch.into_iter().find_map(|v| find_response(v, id)),
        Value::Object(ref object)
            if object.get("id").and_then(Value::as_u64) == Some(id)
                && (object.contains_key("result") || object.contains_key("error")) =>
        {
            Some(value)
        }
        _ => None,
    }
}

/// The `result` of a response, or its JSON-RPC error as an error.
fn result_of<'a>(method: &str, message: &'a Value) -> Result<&'a Value> {
    if let Some(error) = message.get("error") {
        bail!(
            "{method}: JSON-RPC error {}: {}",
            error["code"],
            error["message"].as_str().unwrap_or_default()
        );
    }
    message
        .get("result")
        .ok_or_else(|| anyhow!("{method}: response without result: {message}"))
}

/// The JSON-RPC error message of an HTTP error body, or the body itself.
fn error_text(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.trim().chars().take(500).collect())
}

/// Incremental `text/event-stream` parser that yields each event's data
/// (its `data:` lines joined with newlines). Lines may end in LF or CRLF.
#[derive(Default)]
pub struct SseParser {
    buffer: Vec<u8>,
    data: Option<String>,
}

impl SseParser {
    /// Feeds bytes; returns the data of every event they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        let mut start = 0;
        while let Some(end) = self.buffer[start..].iter().position(|&b| b == b'\n') {
            let mut line = &self.buffer[start..start + end];
            start += end + 1;
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
            let line = String::from_utf8_lossy(line);
            if line.is_empty() {
                // Blank line: end of event. Events without data (such as
                // priming events) are not dispatched.
                events.extend(self.data.take().filter(|data| !data.is_empty()));
            } else if let Some(value) = line.strip_prefix("data") {
                let value = match value.strip_prefix(':') {
                    Some(value) => value.strip_prefix(' ').unwrap_or(value),
                    None if value.is_empty() => "",
                    None => continue, // a field merely starting with "data"
                };
                match &mut self.data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(value);
                    }
                    None => self.data = Some(value.to_string()),
                }
            }
            // id, event, retry and comments do not matter here.
        }
        self.buffer.drain(..start);
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_split_across_chunks() {
        let mut parser = SseParser::default();
        assert!(parser.push(b"id: 1\nretry: 1000\ndata:\n\n").is_empty());
        assert!(
            parser
                .push(b": comment\n\nevent: message\ndata: {\"a\"")
                .is_empty()
        );
        assert_eq!(parser.push(b":1}\r\n\r\n"), vec![r#"{"a":1}"#.to_string()]);
        assert_eq!(
            parser.push(b"data: one\ndata:two\n\ndata: x\n"),
            vec!["one\ntwo".to_string()]
        );
        assert!(parser.push(b"datax: y\n").is_empty());
        assert_eq!(parser.push(b"\n"), vec!["x".to_string()]);
    }

    #[test]
    fn finds_response_by_id_in_messages_and_batches() {
        let ok = json!({ "jsonrpc": "2.0", "id": 1, "result": {} });
        let note = json!({ "jsonrpc": "2.0", "method": "notifications/message" });
        let request = json!({ "jsonrpc": "2.0", "id": 1, "method": "sampling/createMessage" });
        assert_eq!(find_response(ok.clone(), 1), Some(ok.clone()));
        assert_eq!(find_response(ok.clone(), 2), None);
        assert_eq!(find_response(note.clone(), 1), None);
        assert_eq!(find_response(request, 1), None);
        assert_eq!(find_response(json!([note, ok.clone()]), 1), Some(ok));
    }

    #[test]
    fn stateless_params_carry_the_revisions_meta() {
        let params = with_modern_meta(json!({ "name": "echo" }));
        assert_eq!(params["name"], "echo");
        let meta = &params["_meta"];
        assert_eq!(
            meta["io.modelcontextprotocol/protocolVersion"],
            "2026-07-28"
        );
        assert!(meta["io.modelcontextprotocol/clientCapabilities"].is_object());
        assert_eq!(
            meta["io.modelcontextprotocol/clientInfo"]["name"],
            "berth-bench"
        );
        assert!(Session::stateless().stateless && Session::stateless().id.is_none());
    }

    #[test]
    fn results_and_errors() {
        let error = json!({ "id": 1, "error": { "code": -32000, "message": "it crashed" } });
        let message = result_of("tools/call", &error).unwrap_err().to_string();
        assert_eq!(message, "tools/call: JSON-RPC error -32000: it crashed");
        assert_eq!(error_text(&error.to_string()), "it crashed");
        assert_eq!(error_text(" plain \n"), "plain");
    }
}
