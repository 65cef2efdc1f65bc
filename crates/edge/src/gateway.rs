//! The gateway: servers, sessions, routes, and the lifecycle around them.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use berth_fleet::{ServerLog, ServerSpec, Upstream};
use berth_wire::ErrorCode;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::EdgeConfig;
use crate::guard::{OriginPolicy, check_origin};
use crate::reply::{Refusal, rpc_error};
use crate::session::{STANDALONE, Session, new_session_id};
use crate::{legacy, streamable};

/// A configured server and its log.
#[derive(Debug)]
pub struct Server {
    pub spec: ServerSpec,
    pub log: ServerLog,
}

/// Lines kept in each server's log ring.
const LOG_LINES: usize = 2000;

pub struct Gateway {
    config: EdgeConfig,
    policy: OriginPolicy,
    servers: BTreeMap<String, Arc<Server>>,
    sessions: Mutex<HashMap<Arc<str>, Arc<Session>>>,
    shutting_down: CancellationToken,
}

impl Gateway {
    pub fn new(config: EdgeConfig, servers: Vec<ServerSpec>) -> Arc<Gateway> {
        let servers = servers
            .into_iter()
            .map(|spec| {
                let log = ServerLog::new(spec.name.clone(), LOG_LINES);
                (spec.name.clone(), Arc::new(Server { spec, log }))
            })
            .collect();
        Arc::new(Gateway {
            policy: OriginPolicy::new(&config),
            config,
            servers,
            sessions: Mutex::new(HashMap::new()),
            shutting_down: CancellationToken::new(),
        })
    }

    pub fn config(&self) -> &EdgeConfig {
        &self.config
    }

    pub(crate) fn origin_policy(&self) -> &OriginPolicy {
        &self.policy
    }

    pub fn servers(&self) -> impl Iterator<Item = &Arc<Server>> {
        self.servers.values()
    }

    pub fn session_count(&self) -> usize {
        self.sessions().len()
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The server called `name`, or the 404 to answer with.
    pub(crate) fn server(&self, name: &str) -> Result<&Arc<Server>, Refusal> {
        self.servers.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.servers.keys().map(String::as_str).collect();
            rpc_error(
                StatusCode::NOT_FOUND,
                None,
                ErrorCode::INVALID_REQUEST,
                format!(
                    "Not Found: no server named `{name}`; this gateway serves: {}",
                    known.join(", ")
                ),
            )
        })
    }

    pub(crate) fn session(&self, id: &str) -> Option<Arc<Session>> {
        self.sessions().get(id).cloned()
    }

    /// Starts a process for a new session of `server`. The session is not
    /// registered until [`Gateway::register`]: a failed initialize leaves no trace.
    pub(crate) fn start_session(
        self: &Arc<Self>,
        server: &Arc<Server>,
        legacy: bool,
    ) -> Result<Arc<Session>, Refusal> {
        if self.shutting_down.is_cancelled() {
            return Err(rpc_error(
                StatusCode::SERVICE_UNAVAILABLE,
                None,
                ErrorCode::UNAVAILABLE,
                "Service Unavailable: the gateway is shutting down",
            ));
        }
        let (upstream, mut unsolicited) = Upstream::spawn(&server.spec, server.log.clone())
            .map_err(|e| {
                tracing::error!("{e}");
                rpc_error(
                    StatusCode::BAD_GATEWAY,
                    None,
                    ErrorCode::UPSTREAM_CLOSED,
                    format!("Bad Gateway: {e}"),
                )
            })?;
        let session = Session::new(new_session_id(), server.clone(), upstream, legacy, self);
        // Messages about no request go to the standalone stream; when the
        // process is gone the channel closes and the session ends with it.
        let (gateway, watched) = (Arc::downgrade(self), session.clone());
        tokio::spawn(async move {
            while let Some(msg) = unsolicited.recv().await {
                let Some(gateway) = gateway.upgrade() else {
                    break;
                };
                watched.push(STANDALONE, &msg.bytes, gateway.config.replay_buffer);
            }
            if let Some(gateway) = gateway.upgrade() {
                let reason = watched
                    .upstream
                    .closed()
                    .map(|f| f.message)
                    .unwrap_or_else(|| "server exited".into());
                gateway.end_session(&watched, &reason).await;
            }
        });
        Ok(session)
    }

    pub(crate) fn register(&self, session: &Arc<Session>) {
        session.touch();
        self.sessions().insert(session.id.clone(), session.clone());
        tracing::info!(server = %session.server.spec.name, session = %session.id, pid = session.upstream.pid(), "session started");
    }

    /// Ends a session: removes it at once (later requests get 404) and
    /// returns the rest of the work: closing its streams, stopping its process
    /// and waiting until it is reaped.
    pub(crate) fn end_session(
        &self,
        session: &Arc<Session>,
        reason: &str,
    ) -> impl Future<Output = ()> + Send + 'static {
        if !session.ended.is_cancelled() {
            session.ended.cancel();
            self.sessions().remove(&session.id);
            tracing::info!(server = %session.server.spec.name, session = %session.id, "session ended: {reason}");
        }
        let (session, reason) = (session.clone(), reason.to_owned());
        async move {
            session.upstream.shutdown(&reason).await;
            session.close_streams();
        }
    }

    /// Ends every session, concurrently; returns once all processes are reaped.
    async fn end_all_sessions(&self, reason: &str) {
        let sessions: Vec<Arc<Session>> = self.sessions().values().cloned().collect();
        futures::future::join_all(sessions.iter().map(|s| self.end_session(s, reason))).await;
    }

    pub fn router(self: &Arc<Self>) -> Router {
        let mcp = Router::new()
            .route(
                "/mcp/{name}",
                post(streamable::post)
                    .get(streamable::get)
                    .delete(streamable::delete),
            )
            .route("/sse/{name}", get(legacy::connect))
            .route("/sse/{name}/messages", post(legacy::message))
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                check_origin,
            ));
        Router::new()
            .merge(mcp)
            .route("/healthz", get(|| async { "ok\n" }))
            .fallback(|| async {
                rpc_error(
                    StatusCode::NOT_FOUND,
                    None,
                    ErrorCode::INVALID_REQUEST,
                    "Not Found: MCP servers are served at /mcp/<name> (Streamable HTTP) and /sse/<name> (legacy HTTP+SSE)",
                )
            })
            .with_state(self.clone())
    }

    /// Serves until `shutdown` resolves, then stops accepting, ends every
    /// session and returns once every child process has been reaped.
    pub async fn run(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let reaper = tokio::spawn(reap_idle_sessions(Arc::downgrade(&self)));
        let gateway = self.clone();
        let graceful = async move {
            shutdown.await;
            tracing::info!(
                "shutting down: ending {} session(s)",
                gateway.session_count()
            );
            gateway.shutting_down.cancel();
            gateway
                .end_all_sessions("the gateway is shutting down")
                .await;
        };
        let served = axum::serve(listener, self.router())
            .with_graceful_shutdown(graceful)
            .await;
        reaper.abort();
        // Sessions started while the listener drained.
        self.end_all_sessions("the gateway is shutting down").await;
        served
    }
}

/// Ends sessions that have been idle longer than `session_idle_timeout`.
async fn reap_idle_sessions(gateway: std::sync::Weak<Gateway>) {
    let period = match gateway.upgrade() {
        Some(g) => (g.config.session_idle_timeout / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(30)),
        None => return,
    };
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        let Some(gateway) = gateway.upgrade() else {
            return;
        };
        let timeout = gateway.config.session_idle_timeout;
        let idle: Vec<Arc<Session>> = gateway
            .sessions()
            .values()
            .filter(|s| s.idle_for(timeout))
            .cloned()
            .collect();
        for session in idle {
            let gateway = gateway.clone();
            tokio::spawn(async move {
                gateway
                    .end_session(&session, "idle timeout (session_idle_timeout)")
                    .await;
            });
        }
    }
}
