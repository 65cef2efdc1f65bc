//! The gateway: servers, sessions, routes, and the lifecycle around them.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use berth_auth::Principal;
use berth_fleet::{Delivery, Failure, Lease, OnCrash, PoolStatus, ServerSpec, Unsolicited};
use berth_telemetry::{Observer as _, ServerState, SessionEnded, SessionOpened, Telemetry};
use berth_wire::{ErrorCode, Message};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::EdgeConfig;
use crate::error::EdgeError;
use crate::fairness::{RateLimiter, current_client};
use crate::guard::OriginPolicy;
use crate::reply::Refusal;
use crate::server::Server;
use crate::session::{STANDALONE, Session, SessionRegistry, new_session_id};

/// What a configuration reload changed.
#[derive(Debug, Default, Serialize, serde::Deserialize)]
pub struct ReloadReport {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    pub unchanged: Vec<String>,
}

pub struct Gateway {
    pub(crate) config: EdgeConfig,
    policy: Arc<OriginPolicy>,
    servers: RwLock<BTreeMap<String, Arc<Server>>>,
    sessions: Mutex<HashMap<Arc<str>, Arc<Session>>>,
    pub(crate) shutting_down: CancellationToken,
    /// Sessions ended so far (for returning freed memory once churn settles).
    ended: std::sync::atomic::AtomicU64,
    /// Each client's request budget ([`crate::fairness`]).
    rate_limiter: Arc<RateLimiter>,
    /// Sessions ended by the death of their process, and how it died.
    deaths: Mutex<Deaths>,
    /// Where requests, sessions and process samples are reported.
    telemetry: Arc<Telemetry>,
    /// How federated endpoints find their members' pools: this gateway's
    /// servers as they are at each use (reloads included).
    members: berth_fleet::PoolLookup,
}

/// How many sessions ended by a dead process are remembered, so the client's
/// next request is told why its session is gone rather than a bare 404.
const DEATHS_KEPT: usize = 256;

/// Recently ended sessions whose process died, oldest first.
#[derive(Default)]
struct Deaths {
    order: VecDeque<Arc<str>>,
    by_id: HashMap<Arc<str>, Death>,
}

struct Death {
    server: String,
    legacy: bool,
    /// The principal the session belonged to: nobody else learns of it.
    owner: Option<Arc<str>>,
    failure: Failure,
}

impl Deaths {
    fn record(&mut self, session: &Session, failure: Failure) {
        let death = Death {
            server: session.server.spec.name.clone(),
            legacy: session.legacy,
            owner: session.owner.as_ref().map(|p| p.id.clone()),
            failure,
        };
        if self.by_id.insert(session.id.clone(), death).is_none() {
            self.order.push_back(session.id.clone());
        }
        while self.order.len() > DEATHS_KEPT {
            if let Some(old) = self.order.pop_front() {
                self.by_id.remove(&old);
            }
        }
    }
}

impl Gateway {
    pub fn new(config: EdgeConfig, servers: Vec<ServerSpec>) -> Arc<Gateway> {
        Gateway::with_telemetry(config, servers, Arc::new(Telemetry::new()))
    }

    /// A gateway reporting to `telemetry` (its metrics, and the observers
    /// added to it: usage metering...).
    pub fn with_telemetry(
        config: EdgeConfig,
        servers: Vec<ServerSpec>,
        telemetry: Arc<Telemetry>,
    ) -> Arc<Gateway> {
        // The gateway does not exist yet when its servers start; endpoints
        // look their members up through it once it does.
        let this: Arc<std::sync::OnceLock<std::sync::Weak<Gateway>>> = Arc::default();
        let members = {
            let this = this.clone();
            berth_fleet::PoolLookup::pools(move |name| {
                let gateway = this.get()?.upgrade()?;
                let server = gateway.server(name).ok()?;
                Some(server.pool.clone())
            })
        };
        let servers = servers
            .into_iter()
            .map(|spec| {
                let spec = with_members(spec, &members);
                (spec.name.clone(), Server::start(spec, telemetry.clone()))
            })
            .collect();
        let gateway = Arc::new(Gateway {
            members,
            telemetry,
            policy: Arc::new(OriginPolicy::new(&config)),
            rate_limiter: Arc::new(RateLimiter::new(config.fairness.requests_per_second)),
            deaths: Mutex::default(),
            config,
            servers: RwLock::new(servers),
            sessions: Mutex::new(HashMap::new()),
            shutting_down: CancellationToken::new(),
            ended: std::sync::atomic::AtomicU64::new(0),
        });
        let _ = this.set(Arc::downgrade(&gateway));
        gateway
    }

    pub fn config(&self) -> &EdgeConfig {
        &self.config
    }

    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    /// Each server's state now, as metrics and alerts read it: processes by
    /// state, sessions, lifecycle counts (both pools of a server summed).
    pub fn fleet_state(&self) -> Vec<ServerState> {
        let sessions = self.sessions_by_server();
        self.servers()
            .iter()
            .map(|s| {
                let mut reports = vec![s.pool.report()];
                reports.extend(s.stateless_pool().map(|p| p.report()));
                let mut state = ServerState {
                    server: s.spec.name.clone(),
                    sessions: sessions.get(&s.spec.name).copied().unwrap_or(0) as u64,
                    failed: reports[0].status == PoolStatus::Failed,
                    owner: s.spec.owner.clone(),
                    latency_budget: s.spec.latency_budget,
                    ..ServerState::default()
                };
                let mut by_state: BTreeMap<String, u64> = BTreeMap::new();
                for report in &reports {
                    state.spawns += report.spawns;
                    state.crashes += report.crashes;
                    state.restarts += report.restarts;
                    state.oom_kills += report.oom_kills;
                    for p in &report.processes {
                        *by_state.entry(p.state.as_str().to_owned()).or_default() += 1;
                    }
                }
                state.processes = by_state.into_iter().collect();
                state
            })
            .collect()
    }

    pub(crate) fn origin_policy(&self) -> &OriginPolicy {
        &self.policy
    }

    /// The per-client request rate limit.
    pub(crate) fn rate_limiter(&self) -> &RateLimiter {
        &self.rate_limiter
    }

    /// Cancelled when the gateway starts shutting down.
    pub(crate) fn stopping(&self) -> CancellationToken {
        self.shutting_down.clone()
    }

    /// The servers, by name.
    pub fn servers(&self) -> Vec<Arc<Server>> {
        self.servers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Sessions per server name.
    pub fn sessions_by_server(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for session in self.sessions().values() {
            *counts.entry(session.server.spec.name.clone()).or_insert(0) += 1;
        }
        counts
    }

    pub fn session_count(&self) -> usize {
        self.sessions().len()
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The sessions open now.
    pub(crate) fn sessions_snapshot(&self) -> Vec<Arc<Session>> {
        self.sessions().values().cloned().collect()
    }

    /// The server called `name`, or the 404 to answer with.
    pub(crate) fn server(&self, name: &str) -> Result<Arc<Server>, Refusal> {
        let servers = self.servers.read().unwrap_or_else(|e| e.into_inner());
        servers.get(name).cloned().ok_or_else(|| {
            // Callers who must authenticate don't learn the other names.
            let known = match self.config.auth {
                Some(_) => "see your gateway's documentation".to_string(),
                None => {
                    let known: Vec<&str> = servers.keys().map(String::as_str).collect();
                    format!("this gateway serves: {}", known.join(", "))
                }
            };
            EdgeError::NotFound(format!("Not Found: no server named `{name}`; {known}"))
                .refusal(None)
        })
    }

    pub(crate) fn session(&self, id: &str) -> Option<Arc<Session>> {
        self.sessions().get(id).cloned()
    }

    /// Why session `id` (of `server`, legacy or not, owned by `caller`) is
    /// gone, when it ended because its process died.
    pub(crate) fn process_death(
        &self,
        id: &str,
        server: &str,
        legacy: bool,
        caller: Option<&Principal>,
    ) -> Option<EdgeError> {
        let deaths = self.deaths.lock().unwrap_or_else(|e| e.into_inner());
        let death = deaths.by_id.get(id)?;
        let owner_matches = death.owner.as_deref() == caller.map(|p| &*p.id);
        (death.server == server && death.legacy == legacy && owner_matches)
            .then(|| EdgeError::ProcessDied(death.failure.clone()))
    }

    /// Starts a process for a new session of `server`. The session is not
    /// registered until [`Gateway::register`]: a failed initialize leaves no trace.
    /// Takes a process for a new session of `server`. The session is not
    /// registered until [`Gateway::register`]: a failed initialize leaves no trace.
    pub(crate) async fn start_session(
        self: &Arc<Self>,
        server: &Arc<Server>,
        legacy: bool,
        owner: Option<Arc<Principal>>,
    ) -> Result<Arc<Session>, Refusal> {
        if self.shutting_down.is_cancelled() {
            return Err(EdgeError::Unavailable(
                "Service Unavailable: the gateway is shutting down".into(),
            )
            .refusal(None));
        }
        let client = current_client();
        self.check_session_share(server, client.as_ref())?;
        let secrets_of = secret_owner(owner.as_deref());
        let (lease, unsolicited) = server
            .pool
            .acquire_as(secrets_of.as_ref())
            .await
            .map_err(|e| EdgeError::acquire(&server.spec.name, e).refusal(None))?;
        lease.bind_owner(secrets_of);
        let session = Session::new(
            new_session_id(),
            server.clone(),
            lease,
            legacy,
            crate::session::Caller { owner, client },
            self.config.sse_keepalive,
            Arc::downgrade(self) as std::sync::Weak<dyn SessionRegistry>,
        );
        self.watch_lease(&session, session.lease(), unsolicited);
        Ok(session)
    }

    /// Refuses a new session to a client that holds its share of `server`
    /// already (429: it can end one, or wait for one to expire).
    fn check_session_share(
        &self,
        server: &Server,
        client: Option<&Arc<str>>,
    ) -> Result<(), Refusal> {
        let max = self.config.fairness.max_sessions_per_client;
        let Some(client) = client.filter(|_| max > 0) else {
            return Ok(());
        };
        let held = self
            .sessions()
            .values()
            .filter(|s| s.server.spec.name == server.spec.name && s.client.as_ref() == Some(client))
            .count();
        if held < max {
            return Ok(());
        }
        Err(EdgeError::too_many(
            format!(
                "Too Many Requests: this client holds {held} session(s) of `{}`, its share (max_sessions_per_client = {max}); end one (DELETE) or let one expire",
                server.spec.name
            ),
            self.config
                .session_idle_timeout
                .min(Duration::from_secs(60)),
        ))
    }

    /// Forwards what a process says outside any request to the session's
    /// standalone stream; when the process is gone, re-binds the session
    /// (on_crash = "replay") or ends it.
    fn watch_lease(
        self: &Arc<Self>,
        session: &Arc<Session>,
        lease: Arc<Lease>,
        mut unsolicited: Unsolicited,
    ) {
        let (gateway, session) = (Arc::downgrade(self), session.clone());
        tokio::spawn(async move {
            while let Some(msg) = unsolicited.recv().await {
                let Some(gateway) = gateway.upgrade() else {
                    return;
                };
                if let Some(msg) = session.screen(&lease, *msg) {
                    session.push(STANDALONE, &msg.bytes, gateway.config.replay());
                }
            }
            let Some(gateway) = gateway.upgrade() else {
                return;
            };
            if session.ended.is_cancelled() || !Arc::ptr_eq(&session.lease(), &lease) {
                return;
            }
            let failure = lease
                .closed()
                .unwrap_or_else(|| Failure::new(ErrorCode::UPSTREAM_CLOSED, "server exited"));
            if !lease.crashed() {
                gateway.end_session(&session, &failure.message).await;
                return;
            }
            if session.server.spec.on_crash == OnCrash::Replay {
                match gateway.replace_crashed(&session, &lease).await {
                    Ok(()) => return,
                    Err(why) => {
                        tracing::warn!(session = %session.id, "could not re-bind the session after a crash: {why}")
                    }
                }
            }
            gateway.end_session_died(&session, failure).await;
        });
    }

    /// Re-binds `session` to a fresh process after `dead` crashed, replaying
    /// the client's `initialize` and `initialized`. Idempotent: a session
    /// already re-bound is left alone.
    pub(crate) async fn replace_crashed(
        self: &Arc<Self>,
        session: &Arc<Session>,
        dead: &Arc<Lease>,
    ) -> Result<(), String> {
        let _rebinding = session.rebinding.lock().await;
        if !Arc::ptr_eq(&session.lease(), dead) {
            return Ok(());
        }
        if session.ended.is_cancelled() {
            return Err("the session ended".into());
        }
        // The replacement is the owner's as the dead process was: its own secrets.
        let secrets_of = secret_owner(session.owner.as_deref());
        let (lease, unsolicited) = session
            .server
            .pool
            .acquire_as(secrets_of.as_ref())
            .await
            .map_err(|e| e.to_string())?;
        lease.bind_owner(secrets_of);
        if lease.init.is_none() {
            let initialize = session
                .initialize_request()
                .ok_or("the client never initialized")?;
            let msg = Message::parse(initialize).map_err(|e| e.to_string())?;
            let mut exchange = lease.call(&msg).map_err(|f| f.message)?;
            let answer = tokio::time::timeout(self.config.request_timeout, async {
                loop {
                    match exchange.next().await {
                        Some(Delivery::Message(_)) => continue,
                        Some(Delivery::Response(m)) => return Ok(m),
                        Some(Delivery::Failed(f)) => return Err(f.message),
                        None => return Err("initialize abandoned".to_string()),
                    }
                }
            })
            .await
            .map_err(|_| "the new process did not answer initialize in time".to_string())??;
            if berth_wire::Envelope::parse(&answer.bytes)
                .map(|e| e.result.is_none())
                .unwrap_or(true)
            {
                lease.release("refused the replayed initialize").await;
                return Err("the new process refused the replayed initialize".into());
            }
            lease
                .notify("notifications/initialized")
                .map_err(|f| f.message)?;
        }
        let lease = Arc::new(lease);
        tracing::info!(
            server = %session.server.spec.name,
            session = %session.id,
            old = dead.pid(),
            new = lease.pid(),
            "process crashed; session re-bound to a fresh process (on_crash = replay)"
        );
        session.rebind(lease.clone());
        self.watch_lease(session, lease, unsolicited);
        dead.release("crashed; replaced").await;
        Ok(())
    }

    pub(crate) fn register(&self, session: &Arc<Session>) {
        session.touch();
        self.telemetry.session_opened(&SessionOpened {
            server: &session.server.spec.name,
            principal: session.owner.as_ref().map(|p| &*p.id),
            start: session.start,
        });
        self.sessions().insert(session.id.clone(), session.clone());
        tracing::info!(server = %session.server.spec.name, session = %session.id, pid = session.lease().pid(), "session started");
    }

    /// Ends a session: removes it at once (later requests get 404) and
    /// returns the rest of the work: closing its streams, stopping its process
    /// and waiting until it is reaped.
    pub(crate) fn end_session(
        &self,
        session: &Arc<Session>,
        reason: &str,
    ) -> impl Future<Output = ()> + Send + 'static + use<> {
        if !session.ended.is_cancelled() {
            session.ended.cancel();
            self.sessions().remove(&session.id);
            self.ended
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.telemetry.session_ended(&SessionEnded {
                server: &session.server.spec.name,
                principal: session.owner.as_ref().map(|p| &*p.id),
                open_for: session.age(),
            });
            tracing::info!(server = %session.server.spec.name, session = %session.id, "session ended: {reason}");
        }
        let (session, reason) = (session.clone(), reason.to_owned());
        async move {
            session.lease().release(&reason).await;
            session.close_streams();
        }
    }

    /// Ends a session because its process died, remembering how, for the
    /// client's next request.
    pub(crate) fn end_session_died(
        &self,
        session: &Arc<Session>,
        failure: Failure,
    ) -> impl Future<Output = ()> + Send + 'static + use<> {
        if !session.ended.is_cancelled() {
            self.deaths
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .record(session, failure.clone());
        }
        self.end_session(session, &failure.message)
    }

    /// Ends every session, concurrently; returns once all processes are reaped.
    pub(crate) async fn end_all_sessions(&self, reason: &str) {
        let sessions: Vec<Arc<Session>> = self.sessions().values().cloned().collect();
        futures::future::join_all(sessions.iter().map(|s| self.end_session(s, reason))).await;
    }

    /// Applies a new set of servers without touching the others: added ones
    /// start, removed ones stop (their sessions end), changed ones get a new
    /// pool for new sessions while existing sessions keep their processes.
    pub async fn reload(&self, specs: Vec<ServerSpec>) -> ReloadReport {
        let mut report = ReloadReport::default();
        let mut retired: Vec<Arc<Server>> = Vec::new();
        {
            let mut servers = self.servers.write().unwrap_or_else(|e| e.into_inner());
            let mut next = BTreeMap::new();
            for spec in specs {
                let spec = with_members(spec, &self.members);
                let name = spec.name.clone();
                match servers.remove(&name) {
                    Some(old) if old.spec == spec => {
                        report.unchanged.push(name.clone());
                        next.insert(name, old);
                    }
                    Some(old) => {
                        report.changed.push(name.clone());
                        retired.push(old);
                        next.insert(name, Server::start(spec, self.telemetry.clone()));
                    }
                    None => {
                        report.added.push(name.clone());
                        next.insert(name, Server::start(spec, self.telemetry.clone()));
                    }
                }
            }
            for (name, old) in std::mem::take(&mut *servers) {
                report.removed.push(name);
                retired.push(old);
            }
            *servers = next;
        }
        // Sessions of removed servers end; those of changed servers drain.
        let doomed: Vec<Arc<Session>> = self
            .sessions()
            .values()
            .filter(|s| report.removed.contains(&s.server.spec.name))
            .cloned()
            .collect();
        futures::future::join_all(
            doomed
                .iter()
                .map(|s| self.end_session(s, "the server was removed from the configuration")),
        )
        .await;
        futures::future::join_all(retired.iter().map(|s| s.stop())).await;
        tracing::info!(?report, "configuration reloaded");
        report
    }

    /// Rolling restart of one server; `false` if there is no such server.
    pub fn restart(&self, name: &str) -> bool {
        match self
            .servers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            Some(server) => {
                server.pool.restart();
                // A failed stateless pool is retried too.
                if let Some(stateless) = server.stateless_pool() {
                    stateless.restart();
                }
                true
            }
            None => false,
        }
    }
}

/// Returns freed heap memory to the system (glibc keeps it otherwise).
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The refusal for a session that could not get a process.
/// Whose secrets a caller's processes get (see `berth secret set --principal`).
pub(crate) fn secret_owner(principal: Option<&Principal>) -> Option<berth_fleet::SecretOwner> {
    principal.map(|p| berth_fleet::SecretOwner {
        id: p.id.clone(),
        subject: p.subject.as_str().into(),
    })
}

/// A federated endpoint's spec, finding its members through `members`.
fn with_members(mut spec: ServerSpec, members: &berth_fleet::PoolLookup) -> ServerSpec {
    if let Some(federation) = &spec.federation {
        let mut federation = (**federation).clone();
        federation.pools = members.clone();
        spec.federation = Some(Arc::new(federation));
    }
    spec
}

/// Ends sessions that have been idle longer than `session_idle_timeout`.
pub(crate) async fn reap_idle_sessions(gateway: std::sync::Weak<Gateway>) {
    let period = match gateway.upgrade() {
        Some(g) => (g.config.session_idle_timeout / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(30)),
        None => return,
    };
    let mut tick = tokio::time::interval(period);
    let (mut previous, mut trimmed) = (0, 0);
    loop {
        tick.tick().await;
        let Some(gateway) = gateway.upgrade() else {
            return;
        };
        // Once sessions have stopped ending (a burst is over), hand the memory
        // they used back to the system, so RSS follows the live sessions
        // rather than the high-water mark of the last burst.
        let ended = gateway.ended.load(std::sync::atomic::Ordering::Relaxed);
        if ended == previous && ended != trimmed {
            release_free_memory();
            trimmed = ended;
        }
        previous = ended;
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

impl SessionRegistry for Gateway {
    fn end_detached(&self, session: &Arc<Session>, reason: &str) {
        tokio::spawn(self.end_session(session, reason));
    }
}
