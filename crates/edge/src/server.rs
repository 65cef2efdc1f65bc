//! A configured server: its spec, the pool of processes its sessions use,
//! and the stateless side that serves its 2026-07-28 requests.

use std::sync::Arc;

use berth_fleet::{Era, Pool, ServerLog, ServerSpec};
use berth_telemetry::Telemetry;

use crate::stateless::Stateless;

/// A configured server: its spec, the pool of processes its sessions use,
/// and the stateless side that serves 2026-07-28 requests.
pub struct Server {
    pub spec: ServerSpec,
    pub pool: Pool,
    pub(crate) stateless: Arc<Stateless>,
    /// Server messages slow readers of its sessions never got (evicted
    /// unread from full replay buffers), since start.
    pub(crate) dropped: std::sync::atomic::AtomicU64,
    /// Where the server's sessions report their first results.
    pub(crate) telemetry: Arc<Telemetry>,
}

impl Server {
    pub(crate) fn start(spec: ServerSpec, telemetry: Arc<Telemetry>) -> Arc<Server> {
        let mut log = ServerLog::new(spec.name.clone(), LOG_LINES);
        if let Some(path) = &spec.log_file {
            log = match log.clone().with_file(path, LOG_FILE_BYTES, LOG_FILES_KEPT) {
                Ok(log) => log,
                Err(e) => {
                    tracing::error!(server = %spec.name, "cannot write log file {}: {e}", path.display());
                    log
                }
            };
        }
        Arc::new(Server {
            pool: Pool::start(spec.clone(), log.clone()),
            stateless: Stateless::start(spec.clone(), log),
            spec,
            dropped: std::sync::atomic::AtomicU64::new(0),
            telemetry,
        })
    }

    pub fn log(&self) -> &ServerLog {
        self.pool.log()
    }

    /// The era the server's probe found (`None` while it runs), and why
    /// for a handshake-only verdict.
    pub fn era(&self) -> Option<(&'static str, Option<String>)> {
        self.stateless.era().map(|era| {
            let why = match era {
                Era::HandshakeOnly(why) => Some(why.clone()),
                Era::Modern(_) => None,
            };
            (era.label(), why)
        })
    }

    /// The pool serving stateless requests, once the probe is done.
    pub fn stateless_pool(&self) -> Option<&Pool> {
        self.stateless.pool()
    }

    /// Stops every process of the server.
    pub(crate) async fn stop(&self) {
        futures::future::join(self.pool.stop(), self.stateless.stop()).await;
    }
}

/// Lines kept in each server's log ring.
const LOG_LINES: usize = 2000;
/// A server's log file is rotated past this size, keeping this many old files.
const LOG_FILE_BYTES: u64 = 10 * 1024 * 1024;
const LOG_FILES_KEPT: usize = 5;
