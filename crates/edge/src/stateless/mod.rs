//! What serves one server's 2026-07-28 requests: the era its probe found,
//! and the stateless pool that era calls for (a modern pool, or a bridge of
//! pre-initialized handshake-era processes). Held by [`crate::server`]; the
//! `modern` handlers use it, it knows nothing of them.

mod params;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use berth_fleet::Delivery;
use berth_fleet::{Discovery, Era, Pool, ServerLog, ServerSpec};
use berth_wire::{Envelope, Message};
use bytes::Bytes;

use params::ToolHeaders;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use crate::error::EdgeError;
use crate::reply::Refusal;

/// The longest a probe waits for `server/discover` (or `init_timeout`, if
/// shorter). Some older servers never answer a method they do not know; a
/// slow first start (an npx download) may be judged handshake-only, which
/// the bridge still serves.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Pages of `tools/list` Berth reads to learn the tools' header annotations.
const MAX_TOOL_PAGES: usize = 32;

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
    /// The tools' `x-mcp-header` annotations, from a `tools/list` of Berth's
    /// own; dropped when the server announces a new tool list.
    tool_headers: Arc<ToolHeaderCache>,
}

#[derive(Default)]
struct ToolHeaderCache {
    current: RwLock<Option<Arc<ToolHeaders>>>,
    /// Bumped by every announced change, so a list fetched before one is not kept.
    generation: AtomicU64,
}

impl Ready {
    fn new(era: Era, pool: Pool) -> Ready {
        let tool_headers = Arc::new(ToolHeaderCache::default());
        if let Some(mut announcements) = pool.announcements() {
            let cache = Arc::downgrade(&tool_headers);
            tokio::spawn(async move {
                use tokio::sync::broadcast::error::RecvError;
                loop {
                    let changed = match announcements.recv().await {
                        Ok(msg) => msg.method() == Some("notifications/tools/list_changed"),
                        Err(RecvError::Lagged(_)) => true,
                        Err(RecvError::Closed) => return,
                    };
                    let Some(cache) = cache.upgrade() else { return };
                    if changed {
                        cache.generation.fetch_add(1, Ordering::SeqCst);
                        *cache.current.write().unwrap_or_else(|e| e.into_inner()) = None;
                    }
                }
            });
        }
        Ready {
            era,
            pool,
            discovery: OnceCell::new(),
            tool_headers,
        }
    }

    /// The tools' header annotations; fetched with a `tools/list` of
    /// Berth's own when not known. `None` if the server cannot list its tools.
    pub(crate) async fn tool_headers(&self, timeout: Duration) -> Option<Arc<ToolHeaders>> {
        let cache = &self.tool_headers;
        if let Some(known) = cache
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Some(known);
        }
        let generation = cache.generation.load(Ordering::SeqCst);
        // Every page, up to a bound a server cannot make Berth exceed.
        let mut parsed = ToolHeaders::default();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_TOOL_PAGES {
            let params = match &cursor {
                Some(cursor) => serde_json::json!({ "cursor": cursor }),
                None => serde_json::json!({}),
            };
            let answer = self.own_request("tools/list", params, timeout).await;
            let Some((page, next)) = answer.as_deref().and_then(ToolHeaders::from_list_answer)
            else {
                tracing::warn!(server = %self.pool.spec().name, "could not list the server's tools to check Mcp-Param headers");
                return None;
            };
            parsed.extend(page);
            cursor = next;
            if cursor.is_none() {
                break;
            }
        }
        let parsed = Arc::new(parsed);
        if cache.generation.load(Ordering::SeqCst) == generation {
            *cache.current.write().unwrap_or_else(|e| e.into_inner()) = Some(parsed.clone());
        }
        Some(parsed)
    }

    /// Sends a request of Berth's own to a process of the pool; the answer's bytes.
    async fn own_request(
        &self,
        method: &str,
        params: serde_json::Value,
        timeout: Duration,
    ) -> Option<Bytes> {
        let params = berth_fleet::own_params(params);
        let body = serde_json::json!({"jsonrpc": "2.0", "id": "berth:own", "method": method, "params": params});
        let msg = Message::parse(Bytes::from(body.to_string())).ok()?;
        let (lease, _) = self.pool.acquire().await.ok()?;
        let mut exchange = lease.call(&msg).ok()?;
        let answer = tokio::time::timeout(timeout, async {
            loop {
                match exchange.next().await? {
                    Delivery::Message(_) => continue,
                    Delivery::Response(m) => return Some(m.bytes),
                    Delivery::Failed(_) => return None,
                }
            }
        })
        .await
        .ok()
        .flatten()?;
        Envelope::parse(&answer).ok()?.result?;
        Some(answer)
    }

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
                Discovery::bridged(&init.result(&init.server_version), &init.server_version)
                    .map(Arc::new)
                    .ok_or_else(|| {
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
    EdgeError::Unavailable(format!("Service Unavailable: server `{server}`: {why}")).refusal(None)
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
                let timeout = self.spec.init_timeout.min(PROBE_TIMEOUT);
                let era = berth_fleet::probe(&self.spec, &self.log, timeout).await;
                let bridge = matches!(era, Era::HandshakeOnly(_));
                let pool = Pool::start_stateless(self.spec.clone(), self.log.clone(), bridge);
                Ready::new(era, pool)
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
