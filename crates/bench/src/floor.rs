//! The HTTP floor: the echo fixture's `tools/call echo` answered in the
//! bench process over the same HTTP stack Berth serves with (hyper behind
//! axum, HTTP/1.1 keep-alive, `TCP_NODELAY`), with no gateway and no child.
//! What Berth costs above it is what the gateway itself adds.
//!
//! The server runs on a runtime of its own whose threads are named
//! [`THREAD_NAME`], so its CPU time can be read apart from the client's
//! (which shares the process) from `/proc/self/task/TID/stat`.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use anyhow::{Context, Result, anyhow};
use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::oneshot;

/// The name of every thread of the floor's runtime (at most 15 bytes: the
/// kernel truncates `comm` there).
pub const THREAD_NAME: &str = "berth-floor";

/// A running floor server; dropping it without [`FloorServer::stop`] also
/// stops it (the runtime thread ends when the stop sender is dropped).
pub struct FloorServer {
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FloorServer {
    /// Starts the server on 127.0.0.1 (any free port) on a runtime shaped
    /// as Berth's `[gateway] worker_threads`: 0, one worker per core (Berth's
    /// default); 1, a current-thread runtime; N, N workers.
    pub async fn start(worker_threads: usize) -> Result<FloorServer> {
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = oneshot::channel::<Result<SocketAddr>>();
        // Its own OS thread and runtime: this one is the client's.
        let thread = std::thread::Builder::new()
            .name(THREAD_NAME.into())
            .spawn(move || serve(worker_threads, ready_tx, stop_rx))
            .context("starting the HTTP floor's thread")?;
        let addr = ready_rx
            .await
            .map_err(|_| anyhow!("the HTTP floor's thread ended before serving"))??;
        Ok(FloorServer {
            url: format!("http://{addr}/mcp"),
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Stops serving (open connections are dropped) and waits for the
    /// runtime's thread to end.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for FloorServer {
    fn drop(&mut self) {
        // Not joined here (no blocking in async code): the thread ends once
        // its runtime has shut down.
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The floor's thread: builds its runtime, binds, reports the address and
/// serves until `stop` fires (or its sender is dropped).
fn serve(
    worker_threads: usize,
    ready: oneshot::Sender<Result<SocketAddr>>,
    stop: oneshot::Receiver<()>,
) {
    let mut builder = match worker_threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    if worker_threads > 1 {
        builder.worker_threads(worker_threads);
    }
    let runtime = match builder.thread_name(THREAD_NAME).enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            let _ = ready.send(Err(anyhow!("building the HTTP floor's runtime: {error}")));
            return;
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(listener) => listener,
            Err(error) => {
                let _ = ready.send(Err(anyhow!("binding the HTTP floor's listener: {error}")));
                return;
            }
        };
        let addr = match listener.local_addr() {
            Ok(addr) => addr,
            Err(error) => {
                let _ = ready.send(Err(anyhow!("the HTTP floor's address: {error}")));
                return;
            }
        };
        let _ = ready.send(Ok(addr));
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            // As Berth's listener: answers leave at once.
            let _ = tcp.set_nodelay(true);
        });
        tokio::select! {
            served = axum::serve(listener, router()).into_future() => {
                if let Err(error) = served {
                    eprintln!("[http floor] server error: {error}");
                }
            }
            _ = stop => {}
        }
    });
    // Dropping the runtime cancels the connection tasks still open.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
}

/// CPU ticks (utime + stime) used so far by this process's threads named
/// [`THREAD_NAME`] (threads that already ended are not counted: the floor's
/// run for the whole measurement).
pub fn cpu_ticks() -> Option<u64> {
    let mut total = 0;
    let mut found = false;
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let path = task.path();
        let Ok(comm) = std::fs::read_to_string(path.join("comm")) else {
            continue;
        };
        if comm.trim_end() != THREAD_NAME {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue;
        };
        total += crate::peers::parse_cpu_ticks(&stat)?;
        found = true;
    }
    found.then_some(total)
}

fn router() -> Router {
    Router::new()
        .route("/mcp", post(mcp_post).delete(|| async { StatusCode::OK }))
        .route("/healthz", get(|| async { "ok" }))
}

#[derive(Deserialize)]
struct Request<'a> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    method: Option<&'a str>,
    #[serde(borrow)]
    params: Option<CallParams<'a>>,
}

#[derive(Deserialize)]
struct CallParams<'a> {
    #[serde(borrow)]
    arguments: Option<Arguments<'a>>,
}

#[derive(Deserialize)]
struct Arguments<'a> {
    /// The text, still JSON-escaped as the client wrote it (echoed as is).
    #[serde(borrow)]
    text: Option<&'a RawValue>,
}

static SESSIONS: AtomicU64 = AtomicU64::new(1);

/// What `berth-fixture echo` answers, as JSON bodies (never SSE): enough
/// to serve as Berth's remote upstream too (`initialize` with a session id,
/// `notifications/initialized` → 202, `ping`, `tools/call echo`, `DELETE`;
/// `GET` is 405, so no standalone stream is held open).
async fn mcp_post(body: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<Request<'_>>(&body) else {
        return (StatusCode::BAD_REQUEST, "not a JSON-RPC message").into_response();
    };
    let Some(id) = request.id else {
        // A notification (`notifications/initialized`): accepted.
        return StatusCode::ACCEPTED.into_response();
    };
    let id = id.get();
    match request.method {
        Some("initialize") => {
            let body = format!(
                r#"{{"jsonrpc":"2.0","id":{id},"result":{{"protocolVersion":"{}","capabilities":{{"tools":{{}}}},"serverInfo":{{"name":"berth-bench http floor","version":"{}"}}}}}}"#,
                crate::mcp::PROTOCOL_VERSION,
                env!("CARGO_PKG_VERSION")
            );
            let session = SESSIONS.fetch_add(1, Ordering::Relaxed);
            let mut response = json(body);
            if let Ok(value) = HeaderValue::from_str(&format!("floor-{session}")) {
                response.headers_mut().insert("mcp-session-id", value);
            }
            response
        }
        // What a gateway's health check sends to an idle upstream session.
        Some("ping") => json(format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{}}}}"#)),
        Some("tools/call") => {
            let text = request
                .params
                .and_then(|p| p.arguments)
                .and_then(|a| a.text)
                .map_or("\"\"", RawValue::get);
            json(format!(
                r#"{{"jsonrpc":"2.0","id":{id},"result":{{"content":[{{"type":"text","text":{text}}}]}}}}"#
            ))
        }
        _ => json(format!(
            r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":-32601,"message":"Method not found"}}}}"#
        )),
    }
}

fn json(body: String) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    (StatusCode::OK, headers, body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Berth's remote connection sends, answered as Streamable HTTP
    /// expects: the floor can stand as a remote upstream.
    #[tokio::test]
    async fn answers_what_a_proxy_sends() {
        let server = FloorServer::start(1).await.unwrap();
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .unwrap();
        let post = |body: &'static str, session: Option<String>| {
            let mut request = client
                .post(&server.url)
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .body(body);
            if let Some(session) = session {
                request = request
                    .header("mcp-session-id", session)
                    .header("mcp-protocol-version", crate::mcp::PROTOCOL_VERSION);
            }
            request.send()
        };
        let init = post(
            r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#,
            None,
        )
        .await
        .unwrap();
        assert_eq!(init.status(), StatusCode::OK);
        let session = init.headers()["mcp-session-id"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(session.starts_with("floor-"), "{session}");
        let body: serde_json::Value = init.json().await.unwrap();
        assert_eq!(body["id"], 1);
        assert!(
            body["result"]["capabilities"]["tools"].is_object(),
            "{body}"
        );

        let initialized = post(
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            Some(session.clone()),
        )
        .await
        .unwrap();
        assert_eq!(initialized.status(), StatusCode::ACCEPTED);

        let ping = post(
            r#"{"jsonrpc":"2.0","id":"g-7","method":"ping"}"#,
            Some(session.clone()),
        )
        .await
        .unwrap();
        let body: serde_json::Value = ping.json().await.unwrap();
        assert_eq!(
            body,
            serde_json::json!({"jsonrpc":"2.0","id":"g-7","result":{}})
        );

        let call = post(
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi \"there\""}}}"#,
            Some(session.clone()),
        )
        .await
        .unwrap();
        let body: serde_json::Value = call.json().await.unwrap();
        assert_eq!(body["id"], 2);
        assert_eq!(body["result"]["content"][0]["text"], "hi \"there\"");

        // No standalone stream: the proxy stops asking.
        let get = client
            .get(&server.url)
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(get.status(), StatusCode::METHOD_NOT_ALLOWED);

        let delete = client
            .delete(&server.url)
            .header("mcp-session-id", session)
            .send()
            .await
            .unwrap();
        assert_eq!(delete.status(), StatusCode::OK);
        drop(client);
        server.stop().await;
    }
}
