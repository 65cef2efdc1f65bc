//! The admin API: a JSON API on its own listener, for `berth ps`, `berth
//! logs`, `berth restart` and `berth reload`, and the Prometheus metrics at
//! `/metrics`. Every request must carry the admin token
//! (`Authorization: Bearer <token>`; Prometheus: `authorization.credentials_file`).

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use berth_fleet::{LogLine, PoolReport};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq as _;

use crate::gateway::{Gateway, ReloadReport};

/// Re-reads the configuration and applies it (the binary owns the file).
pub type Reloader = Arc<dyn Fn() -> BoxFuture<'static, Result<ReloadReport, String>> + Send + Sync>;

struct Admin {
    gateway: Arc<Gateway>,
    token: String,
    reload: Reloader,
}

/// One server in `GET /v1/status`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ServerStatus {
    #[serde(flatten)]
    pub pool: PoolReport,
    pub sessions: usize,
    /// The era the server's probe found: `2026-07-28` or `handshake-only`
    /// (`None` while the probe runs).
    #[serde(default)]
    pub era: Option<String>,
    /// Why the probe judged it handshake-only.
    #[serde(default)]
    pub era_reason: Option<String>,
    /// Server messages slow readers never got (evicted unread from full
    /// replay buffers), since start.
    #[serde(default)]
    pub dropped_messages: u64,
    /// Log lines that never reached the server's `log_file` (its writer
    /// fell behind a slow disk, or writing failed), since start.
    #[serde(default)]
    pub log_lines_unwritten: u64,
    /// The pool serving 2026-07-28 requests (modern, or a bridge).
    #[serde(default)]
    pub stateless: Option<PoolReport>,
    /// Who answers for the server (config `owner`).
    #[serde(default)]
    pub owner: Option<String>,
    /// The p99 the server should keep (config `latency_budget`), in ms.
    #[serde(default)]
    pub latency_budget_ms: Option<f64>,
}

/// The admin API. `extra` routes (the built-in issuer's, say) are served
/// beside it, behind the same admin token check.
pub fn admin_router(
    gateway: Arc<Gateway>,
    token: String,
    reloader: Reloader,
    extra: Router,
) -> Router {
    let admin = Arc::new(Admin {
        gateway,
        token,
        reload: reloader,
    });
    Router::new()
        .route("/v1/status", get(status))
        .route("/metrics", get(metrics))
        .route("/v1/servers/{name}/logs", get(logs))
        .route("/v1/servers/{name}/restart", post(restart))
        .route("/v1/reload", post(reload))
        .with_state(admin.clone())
        .merge(extra)
        // Its own fallback, so routers merged beside this one (the
        // dashboard's) keep the JSON 404 behind the token check.
        .fallback(|| async {
            admin_error(
                StatusCode::NOT_FOUND,
                "Not Found: no such admin API route (GET /v1/status lists the servers)",
            )
        })
        .layer(axum::middleware::from_fn_with_state(admin, authorize))
        .layer(axum::middleware::map_response(json_errors))
}

/// axum's own rejections (bad path or query, unknown route, wrong method)
/// are plain text or empty: they become this API's `{"error": ...}` too.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let plain = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.starts_with("text/plain"));
    if !(status.is_client_error() || status.is_server_error()) || !plain {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_owned();
    let reason = status.canonical_reason().unwrap_or("Error");
    let message = if text.is_empty() {
        reason.to_owned()
    } else {
        format!("{reason}: {text}")
    };
    let mut replaced = admin_error(status, message);
    for name in [header::ALLOW, header::WWW_AUTHENTICATE] {
        if let Some(value) = parts.headers.get(&name) {
            replaced.headers_mut().insert(name, value.clone());
        }
    }
    replaced
}

/// An admin API error: `status` with `{"error": message}`. Every admin
/// route answers errors this way (the binary's issuer routes too).
pub fn admin_error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "error": message.into() })),
    )
        .into_response()
}

async fn authorize(State(admin): State<Arc<Admin>>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !bool::from(presented.as_bytes().ct_eq(admin.token.as_bytes())) {
        let mut response = admin_error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong admin token (Authorization: Bearer <token>)",
        );
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    next.run(request).await
}

async fn status(State(admin): State<Arc<Admin>>) -> Response {
    let sessions = admin.gateway.sessions_by_server();
    let servers: Vec<ServerStatus> = admin
        .gateway
        .servers()
        .iter()
        .map(|s| {
            let (era, era_reason) = s
                .era()
                .map_or((None, None), |(label, why)| (Some(label.to_owned()), why));
            ServerStatus {
                pool: s.pool.report(),
                sessions: sessions.get(&s.spec.name).copied().unwrap_or(0),
                era,
                era_reason,
                dropped_messages: s.dropped.load(std::sync::atomic::Ordering::Relaxed),
                log_lines_unwritten: s.log().unwritten(),
                stateless: s.stateless_pool().map(|p| p.report()),
                owner: s.spec.owner.clone(),
                latency_budget_ms: s.spec.latency_budget.map(|b| b.as_secs_f64() * 1000.0),
            }
        })
        .collect();
    axum::Json(serde_json::json!({ "servers": servers })).into_response()
}

/// `GET /metrics`: the gateway's Prometheus metrics (OpenMetrics text),
/// with each server's processes, sessions and lifecycle counts read now.
async fn metrics(State(admin): State<Arc<Admin>>) -> Response {
    let gw = &admin.gateway;
    let Some(metrics) = gw.telemetry().metrics() else {
        return admin_error(
            StatusCode::NOT_FOUND,
            "metrics are off ([telemetry] metrics = false)",
        );
    };
    let text = metrics.render_with(&gw.fleet_state(), &gw.telemetry().counts());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(berth_telemetry::metrics::CONTENT_TYPE),
        )],
        text,
    )
        .into_response()
}

#[derive(Deserialize)]
struct LogsQuery {
    #[serde(default = "default_lines")]
    lines: usize,
    #[serde(default)]
    follow: bool,
}

fn default_lines() -> usize {
    100
}

async fn logs(
    State(admin): State<Arc<Admin>>,
    Path(name): Path<String>,
    Query(query): Query<LogsQuery>,
) -> Response {
    let Ok(server) = admin.gateway.server(&name) else {
        return admin_error(StatusCode::NOT_FOUND, format!("no server named `{name}`"));
    };
    let log = server.log().clone();
    // Subscribed before the first read, so no line falls between the two.
    let newest = log.subscribe();
    let first = log.since(0, query.lines);
    let last = first.last().map_or(0, |l| l.seq);
    let text = render(&first);
    if !query.follow {
        return ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response();
    }
    // Follow: what is there now, then new lines as they come.
    let stream =
        futures::stream::once(async move { Ok::<_, Infallible>(bytes::Bytes::from(text)) }).chain(
            futures::stream::unfold((last, newest), move |(last, mut newest)| {
                let log = log.clone();
                async move {
                    loop {
                        // Woken by each push instead of polling.
                        newest.changed().await.ok()?;
                        let new = log.since(last, usize::MAX);
                        if let Some(line) = new.last() {
                            let seq = line.seq;
                            return Some((Ok(bytes::Bytes::from(render(&new))), (seq, newest)));
                        }
                    }
                }
            }),
        );
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(stream),
    )
        .into_response()
}

use futures::StreamExt;

fn render(lines: &[LogLine]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

async fn restart(State(admin): State<Arc<Admin>>, Path(name): Path<String>) -> Response {
    if admin.gateway.restart(&name) {
        axum::Json(serde_json::json!({ "restarted": name })).into_response()
    } else {
        admin_error(StatusCode::NOT_FOUND, format!("no server named `{name}`"))
    }
}

async fn reload(State(admin): State<Arc<Admin>>) -> Response {
    match (admin.reload)().await {
        Ok(report) => axum::Json(report).into_response(),
        Err(e) => admin_error(StatusCode::BAD_REQUEST, e),
    }
}
