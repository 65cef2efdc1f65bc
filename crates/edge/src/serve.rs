//! Serving the gateway over HTTP: the routes (MCP endpoints in both
//! protocol eras, legacy SSE, OAuth metadata, health) with their layers, and
//! the accept loop with its graceful shutdown.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use tokio::net::TcpListener;

use crate::error::EdgeError;
use crate::gateway::{Gateway, reap_idle_sessions};
use crate::server::Server;
use crate::{authz, guard, legacy, streamable};

impl Gateway {
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
            .route_layer(axum::middleware::from_fn_with_state(
                self.clone(),
                authz::authenticate,
            ))
            .layer(axum::middleware::from_fn_with_state(
                self.origin_policy(),
                guard::check_origin,
            ));
        let mut router = Router::new()
            .merge(mcp)
            .route(
                "/.well-known/oauth-protected-resource",
                get(authz::gateway_metadata),
            )
            .route(
                "/.well-known/oauth-protected-resource/mcp/{name}",
                get(authz::server_metadata),
            )
            .route("/healthz", get(|| async { "ok\n" }))
            .fallback(|| async {
                EdgeError::NotFound("Not Found: MCP servers are served at /mcp/<name> (Streamable HTTP) and /sse/<name> (legacy HTTP+SSE)".into()).refusal(None)
            })
            .with_state(self.clone());
        if let Some(extra) = &self.config.extra_routes {
            router = router.merge(extra.clone());
        }
        router
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
            // Stateless requests in flight fail now rather than hold the
            // listener open until their servers answer.
            let servers = gateway.servers();
            futures::future::join_all(servers.iter().map(|s| s.stateless.stop())).await;
        };
        // The peer's address: the issuer's consent form limits wrong
        // approval secrets per peer.
        let app = self
            .router()
            .into_make_service_with_connect_info::<std::net::SocketAddr>();
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(graceful)
            .await;
        reaper.abort();
        // Sessions started while the listener drained.
        self.end_all_sessions("the gateway is shutting down").await;
        let pools: Vec<Arc<Server>> = self.servers();
        futures::future::join_all(pools.iter().map(|s| s.stop())).await;
        served
    }
}
