//! What serves one server's 2026-07-28 requests: the era its probe found,
//! and the stateless pool that era calls for (a modern pool, or a bridge of
//! pre-initialized handshake-era processes).

use std::sync::Arc;

use axum::http::StatusCode;
use berth_fleet::{Discovery, Era, Pool, ServerLog, ServerSpec};
use berth_wire::ErrorCode;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use crate::reply::{Refusal, failure_body, rpc_error};

/// Era probes running at once, gateway-wide.
static PROBES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// The stateless side of one server. Probes the server's era once, in the
/// background from the moment the server is configured; requests that come
/// before the verdict wait for it.
pub(crate) struct Stateless {
    spec: ServerSpec,
    log: ServerLog,
    ready: OnceCell<Ready>,
    /// The server was removed or the gateway is stopping.
    pub(crate) stopped: CancellationToken,
}

/// The era verdict and the pool serving it.
pub(crate) struct Ready {
    pub(crate) era: Era,
    pub(crate) pool: Pool,
    /// The answer to `server/discover` (for a bridge: made from the first
    /// process's `initialize` result).
    discovery: OnceCell<Arc<Discovery>>,
}

impl Ready {
    /// Whether requests are relayed to handshake-era processes.
    pub(crate) fn bridged(&self) -> bool {
        matches!(self.era, Era::HandshakeOnly(_))
    }

    /// What `server/discover` answers.
    pub(crate) async fn discovery(&self) -> Result<Arc<Discovery>, Refusal> {
        if let Era::Modern(discovery) = &self.era {
            return Ok(discovery.clone());
        }
        self.discovery
            .get_or_try_init(|| async {
                let (lease, _) = self
                    .pool
                    .acquire()
                    .await
                    .map_err(|e| unavailable(&self.pool.spec().name, &e.to_string()))?;
                let init = lease.init.clone().ok_or_else(|| {
                    unavailable(&self.pool.spec().name, "the process was not initialized")
                })?;
                Discovery::bridged(&init).map(Arc::new).ok_or_else(|| {
                    unavailable(
                        &self.pool.spec().name,
                        "its initialize result could not be read",
                    )
                })
            })
            .await
            .cloned()
    }
}

fn unavailable(server: &str, why: &str) -> Refusal {
    rpc_error(
        StatusCode::SERVICE_UNAVAILABLE,
        None,
        ErrorCode::UNAVAILABLE,
        format!("Service Unavailable: server `{server}`: {why}"),
    )
}

impl Stateless {
    pub(crate) fn start(spec: ServerSpec, log: ServerLog) -> Arc<Stateless> {
        let stateless = Arc::new(Stateless {
            spec,
            log,
            ready: OnceCell::new(),
            stopped: CancellationToken::new(),
        });
        let probing = stateless.clone();
        tokio::spawn(async move {
            let _ = probing.ready().await;
        });
        stateless
    }

    /// The verdict and pool, once the probe is done.
    pub(crate) async fn ready(&self) -> Result<&Ready, Refusal> {
        if self.stopped.is_cancelled() {
            return Err(unavailable(&self.spec.name, "the server is being stopped"));
        }
        let ready = self
            .ready
            .get_or_init(|| async {
                // A gateway starting with many servers probes a few at a time.
                let _turn = PROBES.acquire().await;
                let era = berth_fleet::probe(&self.spec, &self.log, self.spec.init_timeout).await;
                let bridge = matches!(era, Era::HandshakeOnly(_));
                let pool = Pool::start_stateless(self.spec.clone(), self.log.clone(), bridge);
                Ready {
                    era,
                    pool,
                    discovery: OnceCell::new(),
                }
            })
            .await;
        if self.stopped.is_cancelled() {
            // Stopped while the probe ran: nothing else will stop this pool.
            ready.pool.stop().await;
            return Err(unavailable(&self.spec.name, "the server is being stopped"));
        }
        Ok(ready)
    }

    /// The verdict, if the probe is done.
    pub(crate) fn era(&self) -> Option<&Era> {
        self.ready.get().map(|r| &r.era)
    }

    pub(crate) fn pool(&self) -> Option<&Pool> {
        self.ready.get().map(|r| &r.pool)
    }

    /// Stops the pool; listeners get their closing result.
    pub(crate) async fn stop(&self) {
        self.stopped.cancel();
        if let Some(ready) = self.ready.get() {
            ready.pool.stop().await;
        }
    }
}

/// The refusal for a request that got no process.
pub(crate) fn acquire_refusal(
    server: &str,
    id: Option<&str>,
    error: berth_fleet::AcquireError,
) -> Refusal {
    match error {
        berth_fleet::AcquireError::Failed(failure) => {
            Refusal::new(StatusCode::SERVICE_UNAVAILABLE, failure_body(id, &failure))
        }
        other => rpc_error(
            StatusCode::SERVICE_UNAVAILABLE,
            id,
            ErrorCode::UNAVAILABLE,
            format!("Service Unavailable: server `{server}`: {other}"),
        ),
    }
}
