//! A remote MCP server reached over HTTP: Streamable HTTP (both protocol
//! eras) or the legacy HTTP+SSE transport.
//!
//! A remote connection is an [`Upstream`](crate::Upstream) like a stdio
//! process: the same correlation of requests and answers, the same
//! [`Exchange`](crate::Exchange)s and unsolicited channel, so nothing above
//! the fleet knows which it holds. Only the way bytes travel differs, and
//! that lives here: each message Berth sends becomes a POST; what the
//! server answers (a JSON body, or an SSE stream of messages about that one
//! request) is routed back as if read from a child's stdout.
//!
//! What an operator expects from a proxy is handled here, below the
//! correlation: the upstream's session id and protocol version are carried
//! on every request; an upstream session that expired (HTTP 404) is
//! re-initialized with the client's own `initialize` and the request sent
//! again, so the client's session survives; a response stream that drops
//! is resumed with `Last-Event-ID`; every HTTP failure becomes a JSON-RPC
//! error that names the upstream and what it answered. The client's own
//! credentials never travel: the request headers are built from the
//! server's configuration alone (static headers with `${secret:NAME}`,
//! OAuth client credentials, or an exchange of the caller's token).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use berth_wire::{ErrorCode, IdKey, Kind, Message};
use bytes::Bytes;
use futures::StreamExt;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::credentials::{Credentials, OAuthClient};
use crate::upstream::{Link, Shared, gateway_request_id};
use crate::{RemoteReport, SecretResolver};
use crate::{ServerLog, ServerSpec, SpawnError, Unsolicited, Upstream};

/// How a remote server is reached and what Berth presents to it.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteSpec {
    /// The MCP endpoint (Streamable HTTP) or the SSE stream's URL (legacy).
    pub url: String,
    pub transport: RemoteTransport,
    /// Headers sent with every request; values may hold `${secret:NAME}`,
    /// resolved for the principal whose session the connection serves.
    pub headers: Vec<(String, String)>,
    /// How long Berth waits for the upstream's response headers.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// PEM certificates trusted besides the system's roots.
    pub ca_file: Option<PathBuf>,
    /// A credential Berth obtains itself (never the client's).
    pub auth: Option<OAuthClient>,
}

/// The HTTP transport a remote server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RemoteTransport {
    /// Streamable HTTP (2025-03-26 and later, 2026-07-28 included).
    #[default]
    Streamable,
    /// The 2024-11-05 HTTP+SSE transport: a GET stream and POSTed messages.
    Sse,
}

impl RemoteSpec {
    pub fn new(url: impl Into<String>) -> RemoteSpec {
        RemoteSpec {
            url: url.into(),
            transport: RemoteTransport::Streamable,
            headers: Vec::new(),
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            ca_file: None,
            auth: None,
        }
    }

    /// The templates that may name secrets (headers and the OAuth client's).
    pub fn secret_templates(&self) -> impl Iterator<Item = &str> {
        self.headers
            .iter()
            .map(|(_, v)| v.as_str())
            .chain(self.auth.iter().map(|a| a.client_secret.as_str()))
    }
}

/// HTTP clients, one per trust setting: connections to an upstream are
/// pooled (keep-alive, HTTP/2) across all of Berth's sessions of it.
fn client_for(spec: &RemoteSpec) -> Result<reqwest::Client, String> {
    static CLIENTS: Mutex<Vec<(Option<PathBuf>, Duration, reqwest::Client)>> =
        Mutex::new(Vec::new());
    let mut clients = CLIENTS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, _, client)) = clients
        .iter()
        .find(|(ca, t, _)| *ca == spec.ca_file && *t == spec.connect_timeout)
    {
        return Ok(client.clone());
    }
    let mut builder = reqwest::Client::builder()
        .connect_timeout(spec.connect_timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        // A proxy of the gateway's environment is not the operator's intent
        // for a configured upstream; redirects would carry credentials away.
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none());
    if let Some(path) = &spec.ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read ca_file {}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            format!(
                "ca_file {} holds no usable PEM certificate: {e}",
                path.display()
            )
        })?;
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    let client = builder
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    clients.push((spec.ca_file.clone(), spec.connect_timeout, client.clone()));
    Ok(client)
}

/// Opens a connection to a remote server: an [`Upstream`] whose messages
/// travel as POSTs. Fails (as a process that cannot start) when the URL or
/// the CA file is unusable.
pub(crate) fn connect(
    spec: &ServerSpec,
    remote: Arc<RemoteSpec>,
    log: ServerLog,
) -> Result<(Upstream, Unsolicited), SpawnError> {
    let prepared = prepare(&remote).map_err(|why| SpawnError {
        server: spec.name.clone(),
        command: remote.url.clone(),
        source: std::io::Error::other(why),
    })?;
    let caller = crate::credentials::CallerToken::default();
    let url = remote.url.clone();
    let (upstream, unsolicited) =
        Upstream::with_link(spec, log.clone(), Some(caller.clone()), |shared, stop| {
            open(
                &spec.name,
                spec.max_message_bytes,
                remote,
                prepared,
                spec.secrets.clone(),
                caller,
                shared,
                stop,
            )
        });
    let number = upstream.pid();
    log.push(
        Some(number),
        crate::LogSource::Lifecycle,
        format!("opened connection {number} to {url}"),
    );
    Ok((upstream, unsolicited))
}

/// A remote connection as its [`Upstream`] holds it: messages go to the
/// connection's driver task.
struct RemoteLink {
    tx: mpsc::UnboundedSender<Message>,
    conn: Arc<Conn>,
}

impl Link for RemoteLink {
    fn hand_over(&self, bytes: Bytes, params: Option<berth_wire::ParamHeaders>) -> bool {
        if self.conn.stop.is_cancelled() {
            return false;
        }
        // Not JSON-RPC: nothing a server could read (Berth sends none).
        let Ok(msg) = Message::parse(bytes) else {
            return true;
        };
        let msg = msg.with_param_headers(params);
        // A request with nothing queued before it goes out at once, on a
        // task of its own: the driver's turn costs a wake-up per call, and
        // only order matters (a notification must not be overtaken).
        if msg.kind == Kind::Request
            && msg.method() != Some("initialize")
            && self.conn.queued.load(std::sync::atomic::Ordering::Acquire) == 0
        {
            self.conn.start_request(msg);
            return true;
        }
        self.conn
            .queued
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        if self.tx.send(msg).is_err() {
            self.conn
                .queued
                .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            return false;
        }
        true
    }

    fn remote_report(&self) -> Option<RemoteReport> {
        Some(self.conn.report())
    }
}

/// The upstream session as the connection knows it.
#[derive(Default)]
struct SessionState {
    /// `Mcp-Session-Id` the upstream gave (Streamable HTTP).
    id: Option<String>,
    /// The version `initialize` settled on, sent as `MCP-Protocol-Version`.
    version: Option<String>,
    /// The client's `initialize`, replayed when the upstream loses the session.
    initialize: Option<Bytes>,
    /// Bumped at every (re-)initialization; listeners of older ones stop.
    generation: u64,
}

/// One connection to a remote server.
struct Conn {
    server: String,
    /// The largest message (a JSON body, an SSE event) taken from the
    /// upstream: `max_message_bytes`, as for a process's stdout line.
    max_message_bytes: usize,
    /// `spec.url`, parsed once.
    url: reqwest::Url,
    spec: Arc<RemoteSpec>,
    client: reqwest::Client,
    secrets: Option<SecretResolver>,
    credentials: Credentials,
    session: Mutex<SessionState>,
    /// Messages handed to the driver and not yet dealt with.
    queued: std::sync::atomic::AtomicUsize,
    /// Legacy SSE: where messages are POSTed (from the stream's `endpoint`
    /// event; `None` while no stream is open). Senders wait on it.
    post_url: tokio::sync::watch::Sender<Option<reqwest::Url>>,
    /// Wakes a standalone stream waiting for its session's version.
    version_known: tokio::sync::Notify,
    /// Serializes re-initializations: one per lost session.
    reinit: tokio::sync::Mutex<()>,
    /// Requests on the wire (by the id Berth sent), to stop their streams
    /// when they are cancelled.
    streams: Mutex<HashMap<IdKey, tokio::task::AbortHandle>>,
    /// Answers to Berth's own requests that arrive on the legacy stream.
    waiters: Mutex<HashMap<String, tokio::sync::oneshot::Sender<Message>>>,
    stats: Mutex<Stats>,
    stop: CancellationToken,
    shared: Weak<Shared>,
}

/// What a connection needs that can fail: checked before it is opened.
struct Prepared {
    client: reqwest::Client,
    url: reqwest::Url,
}

fn prepare(spec: &RemoteSpec) -> Result<Prepared, String> {
    let url = reqwest::Url::parse(&spec.url).map_err(|e| format!("url {:?}: {e}", spec.url))?;
    Ok(Prepared {
        client: client_for(spec)?,
        url,
    })
}

/// Starts a connection's driver; `shared` gets what it receives.
/// Nothing is sent until the first message (for the legacy transport, the
/// stream is opened first and messages wait for its endpoint).
#[allow(clippy::too_many_arguments)]
fn open(
    server: &str,
    max_message_bytes: usize,
    spec: Arc<RemoteSpec>,
    prepared: Prepared,
    secrets: Option<SecretResolver>,
    caller_token: crate::credentials::CallerToken,
    shared: Weak<Shared>,
    stop: CancellationToken,
) -> Arc<dyn Link> {
    let Prepared { client, url } = prepared;
    let endpoint = url.clone();
    let (tx, rx) = mpsc::unbounded_channel();
    let conn = Arc::new(Conn {
        url: endpoint,
        max_message_bytes,
        server: server.to_owned(),
        credentials: Credentials::new(spec.auth.clone(), client.clone(), caller_token),
        stats: Mutex::new(Stats {
            report: RemoteReport {
                url: spec.url.clone(),
                ..RemoteReport::default()
            },
            waited: Duration::ZERO,
            answered: 0,
        }),
        spec,
        client,
        secrets,
        session: Mutex::default(),
        reinit: tokio::sync::Mutex::new(()),
        version_known: tokio::sync::Notify::new(),
        post_url: tokio::sync::watch::Sender::new(None),
        queued: std::sync::atomic::AtomicUsize::new(0),
        streams: Mutex::default(),
        waiters: Mutex::default(),
        stop,
        shared,
    });
    let driver = conn.clone();
    tokio::spawn(async move {
        if driver.spec.transport == RemoteTransport::Sse
            && let Err(failure) = driver.open_legacy_stream(url).await
        {
            driver.log(format!("cannot open the SSE stream: {failure}"));
        }
        driver.drive(rx).await;
    });
    Arc::new(RemoteLink { tx, conn })
}

/// A connection's counts, for its report.
struct Stats {
    report: RemoteReport,
    /// Time to the upstream's response headers, summed over `answered`.
    waited: Duration,
    answered: u64,
}

/// Why a POST brought no usable answer.
struct Trouble {
    message: String,
    status: Option<u16>,
}

impl Trouble {
    fn new(message: impl Into<String>) -> Trouble {
        Trouble {
            message: message.into(),
            status: None,
        }
    }
}

impl Conn {
    fn log(&self, line: String) {
        if let Some(shared) = self.shared.upgrade() {
            shared.log_line(line);
        }
    }

    fn lock_session(&self) -> std::sync::MutexGuard<'_, SessionState> {
        self.session.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stats(&self) -> std::sync::MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn report(&self) -> RemoteReport {
        let stats = self.stats();
        let mut report = stats.report.clone();
        report.mean_latency_ms = (stats.answered > 0)
            .then(|| stats.waited.as_secs_f64() * 1000.0 / stats.answered as f64);
        drop(stats);
        report.session = self.lock_session().id.clone();
        report
    }

    fn note(&self, status: Option<u16>, error: Option<&str>, took: Option<Duration>) {
        let mut stats = self.stats();
        stats.report.requests += 1;
        if status.is_some() {
            stats.report.last_status = status;
        }
        if let Some(error) = error {
            stats.report.errors += 1;
            stats.report.last_error = Some(error.to_owned());
        }
        if let Some(took) = took {
            stats.waited += took;
            stats.answered += 1;
        }
    }

    /// Sends what Berth hands over, in order: notifications and responses
    /// are delivered before the next message goes (a server must see
    /// `notifications/initialized` before the requests that follow it);
    /// requests run side by side, each on its own POST.
    async fn drive(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<Message>) {
        loop {
            let msg = tokio::select! {
                biased;
                _ = self.stop.cancelled() => break,
                msg = rx.recv() => match msg {
                    Some(msg) => msg,
                    None => break,
                },
            };
            self.deliver(msg).await;
            self.queued
                .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        }
        self.end_session().await;
    }

    /// A request on a task of its own, cancellable by its id (the lock is
    /// held across the spawn, so a task that ends at once still finds its
    /// entry to remove).
    fn start_request(self: &Arc<Self>, msg: Message) {
        let Some(id) = msg.id.clone() else { return };
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        let task = tokio::spawn(self.clone().request(msg));
        streams.insert(id, task.abort_handle());
    }

    /// One message the driver took, in order.
    async fn deliver(self: &Arc<Self>, msg: Message) {
        match msg.kind {
            Kind::Request if msg.method() == Some("initialize") => {
                self.lock_session().initialize = Some(msg.bytes.clone());
                // Whatever follows needs the session this opens.
                self.clone().request(msg).await;
            }
            Kind::Request => self.start_request(msg),
            _ => {
                if msg.method() == Some("notifications/cancelled")
                    && let Some(id) = berth_wire::Envelope::parse(&msg.bytes)
                        .ok()
                        .and_then(|e| e.cancelled_request())
                {
                    // Closing the request's stream is Streamable HTTP's
                    // own cancellation; the notification says why.
                    let task = self
                        .streams
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&id);
                    if let Some(task) = task {
                        task.abort();
                    }
                }
                if let Err(trouble) = self.post_one_way(&msg).await {
                    self.log(format!(
                        "could not deliver a {} to the upstream: {}",
                        msg.method().unwrap_or("response"),
                        trouble.message
                    ));
                }
            }
        }
    }

    /// Best effort: tells the upstream the session is over.
    async fn end_session(&self) {
        let session = self.lock_session().id.clone();
        if let Some(session) = session
            && self.spec.transport == RemoteTransport::Streamable
        {
            let mut headers = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&session) {
                headers.insert("mcp-session-id", v);
            }
            if let Ok(extra) = self.configured_headers().await {
                headers.extend(extra);
            }
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                self.client.delete(&self.spec.url).headers(headers).send(),
            )
            .await;
        }
    }

    /// A request: POSTs it and routes what comes back; every failure is
    /// answered to the caller as a JSON-RPC error naming the upstream. Ends
    /// when the connection stops, whatever the upstream is doing.
    async fn request(self: Arc<Self>, msg: Message) {
        let stop = self.stop.clone();
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = self.request_until_answered(msg) => {}
        }
    }

    async fn request_until_answered(self: Arc<Self>, msg: Message) {
        let Some(id) = msg.id.clone() else { return };
        let mut retried = false;
        let outcome = loop {
            let sent_on = self.lock_session().generation;
            match self.exchange(&msg, &id).await {
                Err(trouble) if trouble.status == Some(404) && !retried && self.had_session() => {
                    retried = true;
                    if let Err(why) = self.reinitialize(sent_on).await {
                        break Err(Trouble::new(format!(
                            "the upstream lost its session (HTTP 404) and re-initializing failed: {why}"
                        )));
                    }
                }
                Err(trouble)
                    if trouble.status == Some(401)
                        && !retried
                        && self.credentials.is_configured() =>
                {
                    // The token Berth held may have been revoked early.
                    retried = true;
                    self.credentials.forget();
                }
                other => break other,
            }
        };
        self.streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        if let Err(trouble) = outcome {
            self.answer_failure(&msg, &trouble);
        }
    }

    fn had_session(&self) -> bool {
        self.lock_session().id.is_some()
    }

    /// Settles the request with an error of Berth's that names the upstream.
    fn answer_failure(&self, msg: &Message, trouble: &Trouble) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let data = serde_json::json!({
            "upstream": self.server,
            "url": self.spec.url,
            "status": trouble.status,
        });
        let text = format!("upstream `{}`: {}", self.server, trouble.message);
        let reply = berth_wire::error_response(
            msg.raw_id().as_deref(),
            ErrorCode::UNAVAILABLE,
            &text,
            Some(&data),
        );
        if let Ok(reply) = Message::parse(reply) {
            shared.route_about(reply, None);
        }
    }

    /// One POST of a request and everything the upstream sends about it.
    async fn exchange(self: &Arc<Self>, msg: &Message, id: &IdKey) -> Result<(), Trouble> {
        let response = self.post(msg).await?;
        if self.spec.transport == RemoteTransport::Sse {
            // The answer comes on the stream.
            return match response.status().as_u16() {
                200..=299 => Ok(()),
                status => Err(self.http_trouble(status, response).await),
            };
        }
        let status = response.status().as_u16();
        if !(200..=299).contains(&status) {
            return Err(self.http_trouble(status, response).await);
        }
        let initialize = msg.method() == Some("initialize");
        if initialize {
            self.adopt_session(response.headers());
        }
        let sse = is_event_stream(response.headers());
        if !sse {
            let body = self.body_within_limit(response).await?;
            if status == 202 || body.iter().all(u8::is_ascii_whitespace) {
                return Err(Trouble::new(format!(
                    "answered HTTP {status} with no JSON-RPC response"
                )));
            }
            return self.deliver_json(body, Some(id), initialize);
        }
        let mut last_event = None;
        let answered = self
            .read_stream(response, Some(id), initialize, &mut last_event)
            .await?;
        if answered {
            return Ok(());
        }
        // The stream ended before the answer: resume it where it broke, if
        // the upstream gave event ids to resume from.
        for attempt in 0..3 {
            let Some(from) = last_event.clone() else {
                break;
            };
            tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            let response = match self.get_stream(Some(&from)).await {
                Ok(r) if r.status().is_success() && is_event_stream(r.headers()) => r,
                _ => continue,
            };
            if self
                .read_stream(response, Some(id), initialize, &mut last_event)
                .await?
            {
                return Ok(());
            }
        }
        Err(Trouble::new(
            "closed the response stream before answering the request",
        ))
    }

    /// Reads an SSE stream of messages about request `about` (`None`: the
    /// standalone stream); `true` once its answer arrived.
    async fn read_stream(
        &self,
        response: reqwest::Response,
        about: Option<&IdKey>,
        initialize: bool,
        last_event: &mut Option<String>,
    ) -> Result<bool, Trouble> {
        let too_big = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let body = bounded_events(response, self.max_message_bytes, too_big.clone());
        let mut events = sse_stream::SseStream::from_bytes_stream(body);
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => event,
                // A stream that broke may be resumed; one that overflowed not.
                Err(_) if too_big.load(std::sync::atomic::Ordering::Relaxed) => {
                    return Err(Trouble::new(format!(
                        "sent an SSE event larger than the {}-byte limit (max_message_bytes); the stream was dropped",
                        self.max_message_bytes
                    )));
                }
                Err(_) => return Ok(false),
            };
            if let Some(id) = event.id.filter(|id| !id.is_empty()) {
                *last_event = Some(id);
            }
            let Some(data) = event.data.filter(|d| !d.trim().is_empty()) else {
                continue;
            };
            if event.event.as_deref().is_some_and(|e| e != "message") {
                continue;
            }
            let msg = match Message::parse(Bytes::from(data.clone())) {
                Ok(msg) => msg,
                Err(e) => {
                    return Err(Trouble::new(format!(
                        "sent an event that is not a JSON-RPC message ({e}): {:?}",
                        snippet(data.as_bytes())
                    )));
                }
            };
            let answers = msg.kind == Kind::Response && msg.id.as_ref() == about;
            if answers && initialize {
                // An initialize answered on a stream settles the version too.
                self.adopt_version(&msg);
            }
            self.route(msg, about);
            if answers {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn route(&self, msg: Message, about: Option<&IdKey>) {
        if msg.kind == Kind::Response
            && let Some(id) = &msg.id
            && let IdKey::Str(text) = id
            && let Some(waiter) = self
                .waiters
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&**text)
        {
            let _ = waiter.send(msg);
            return;
        }
        if let Some(shared) = self.shared.upgrade() {
            shared.route_about(msg, about);
        }
    }

    /// A JSON body: one message (or, from older servers, a batch).
    fn deliver_json(
        &self,
        body: Bytes,
        about: Option<&IdKey>,
        initialize: bool,
    ) -> Result<(), Trouble> {
        let trimmed = body.trim_ascii_start();
        let messages: Vec<Bytes> = if trimmed.starts_with(b"[") {
            let parts: Vec<&serde_json::value::RawValue> =
                serde_json::from_slice(trimmed).map_err(|e| self.garbage(&body, &e.to_string()))?;
            parts
                .into_iter()
                .map(|p| Bytes::copy_from_slice(p.get().as_bytes()))
                .collect()
        } else {
            vec![body.clone()]
        };
        for bytes in messages {
            let msg = Message::parse(bytes).map_err(|e| self.garbage(&body, &e.to_string()))?;
            if initialize {
                self.adopt_version(&msg);
            }
            self.route(msg, about);
        }
        Ok(())
    }

    fn garbage(&self, body: &[u8], why: &str) -> Trouble {
        Trouble::new(format!(
            "answered with a body that is not a JSON-RPC message ({why}): {:?}",
            snippet(body)
        ))
    }

    /// Takes the session id an `initialize` answer carries, and opens the
    /// standalone stream for it.
    fn adopt_session(self: &Arc<Self>, headers: &HeaderMap) {
        let id = headers
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut session = self.lock_session();
        session.id = id;
        session.generation += 1;
        let generation = session.generation;
        let has_session = session.id.is_some();
        drop(session);
        if has_session {
            tokio::spawn(self.clone().listen(generation));
        }
    }

    /// Takes the protocol version an `initialize` answer settled on (any
    /// other answer names none and changes nothing).
    fn adopt_version(&self, msg: &Message) {
        let version = berth_wire::Envelope::parse(&msg.bytes)
            .ok()
            .and_then(|e| e.result)
            .and_then(berth_wire::initialize_result_version);
        if let Some(version) = version {
            self.lock_session().version = Some(version);
            self.version_known.notify_waiters();
        }
    }

    /// The standalone GET stream of one upstream session: what the server
    /// says outside any request. Reconnects (resuming with `Last-Event-ID`)
    /// until the session changes or the connection stops.
    pub(crate) async fn listen(self: Arc<Self>, generation: u64) {
        // Opened with the session's headers, the version included: the
        // initialize answer that settles it may still be on its way.
        let known = self.version_known.notified();
        tokio::pin!(known);
        known.as_mut().enable();
        if self.lock_session().version.is_none() {
            let _ = tokio::time::timeout(self.spec.timeout, known).await;
        }
        let mut last_event: Option<String> = None;
        let mut failures = 0u32;
        loop {
            if self.stop.is_cancelled() || self.lock_session().generation != generation {
                return;
            }
            let response = tokio::select! {
                _ = self.stop.cancelled() => return,
                r = self.get_stream(last_event.as_deref()) => r,
            };
            match response {
                Ok(r) if r.status().is_success() && is_event_stream(r.headers()) => {
                    failures = 0;
                    let read = tokio::select! {
                        _ = self.stop.cancelled() => return,
                        read = self.read_stream(r, None, false, &mut last_event) => read,
                    };
                    if let Err(trouble) = read {
                        self.log(format!("standalone stream: {}", trouble.message));
                    }
                }
                // The upstream offers no standalone stream (405), or the
                // session is gone (404: the next request re-initializes).
                Ok(r) if matches!(r.status().as_u16(), 404 | 405) => return,
                Ok(_) | Err(_) => failures += 1,
            }
            if !self.back_off(failures).await {
                return;
            }
        }
    }

    async fn get_stream(&self, last_event: Option<&str>) -> Result<reqwest::Response, Trouble> {
        let mut headers = self.session_headers(None);
        headers.insert(
            reqwest::header::ACCEPT,
            HeaderValue::from_static("text/event-stream"),
        );
        if let Some(from) = last_event.and_then(|v| HeaderValue::from_str(v).ok()) {
            headers.insert("last-event-id", from);
        }
        headers.extend(self.configured_headers().await.map_err(Trouble::new)?);
        let send = self.client.get(self.url.clone()).headers(headers).send();
        match tokio::time::timeout(self.spec.timeout, send).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(Trouble::new(reach_error(&self.spec.url, &e))),
            Err(_) => Err(Trouble::new("the standalone stream did not open in time")),
        }
    }

    /// Re-initializes an upstream session the upstream lost, replaying the
    /// client's `initialize` (its answer is Berth's, not the client's).
    async fn reinitialize(self: &Arc<Self>, lost_generation: u64) -> Result<(), String> {
        let _one = self.reinit.lock().await;
        if self.lock_session().generation != lost_generation {
            return Ok(()); // Another request did it meanwhile.
        }
        let (_, msg) = self.replayed_initialize()?;
        self.lock_session().id = None;
        let response = self.post(&msg).await.map_err(|t| t.message)?;
        let status = response.status().as_u16();
        if !(200..=299).contains(&status) {
            return Err(self.http_trouble(status, response).await.message);
        }
        self.adopt_session(response.headers());
        let answer = if is_event_stream(response.headers()) {
            let mut events = sse_stream::SseStream::from_bytes_stream(bounded_events(
                response,
                self.max_message_bytes,
                Arc::default(),
            ));
            let mut answer = None;
            while let Some(Ok(event)) = events.next().await {
                if let Some(data) = event.data
                    && let Ok(m) = Message::parse(Bytes::from(data))
                    && m.kind == Kind::Response
                {
                    answer = Some(m);
                    break;
                }
            }
            answer
        } else {
            response
                .bytes()
                .await
                .ok()
                .and_then(|b| Message::parse(b).ok())
        };
        let Some(answer) = answer else {
            return Err("the upstream gave no answer to initialize".into());
        };
        if berth_wire::Envelope::parse(&answer.bytes)
            .ok()
            .is_some_and(|e| e.is_error)
        {
            return Err(format!(
                "the upstream refused initialize: {}",
                snippet(&answer.bytes)
            ));
        }
        self.adopt_version(&answer);
        let initialized = initialized_notification().map_err(|e| e.to_string())?;
        // Straight to the new session (no second re-initialization).
        let response = self.post(&initialized).await.map_err(|t| t.message)?;
        let status = response.status().as_u16();
        if !(200..=299).contains(&status) {
            return Err(self.http_trouble(status, response).await.message);
        }
        self.stats().report.reinitialized += 1;
        let session = self.lock_session().id.clone().unwrap_or_default();
        self.log(format!(
            "the upstream lost its session; re-initialized as session {session:?} (the client's session goes on)"
        ));
        Ok(())
    }

    /// A notification or a response: POSTed, 202 expected.
    async fn post_one_way(self: &Arc<Self>, msg: &Message) -> Result<(), Trouble> {
        let mut retried = false;
        loop {
            let sent_on = self.lock_session().generation;
            let response = self.post(msg).await?;
            let status = response.status().as_u16();
            if (200..=299).contains(&status) {
                // Some servers answer a notification with 200 and a stream
                // that ends at once; nothing in it concerns anyone.
                return Ok(());
            }
            if status == 404 && !retried && self.had_session() {
                retried = true;
                // A response to a request of the lost session is moot.
                if msg.kind == Kind::Response {
                    return Ok(());
                }
                self.reinitialize(sent_on).await.map_err(Trouble::new)?;
                continue;
            }
            return Err(self.http_trouble(status, response).await);
        }
    }

    /// POSTs one message with the session's headers and the configured
    /// credential; waits for the response headers (bounded by `timeout`).
    async fn post(&self, msg: &Message) -> Result<reqwest::Response, Trouble> {
        let url = match self.spec.transport {
            RemoteTransport::Streamable => self.url.clone(),
            RemoteTransport::Sse => self.legacy_post_url().await?,
        };
        let mut headers = self.session_headers(Some(msg));
        headers.insert(
            reqwest::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            reqwest::header::ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        headers.extend(self.configured_headers().await.map_err(Trouble::new)?);
        let started = Instant::now();
        let send = self
            .client
            .post(url)
            .headers(headers)
            .body(msg.bytes.clone())
            .send();
        let result = tokio::time::timeout(self.spec.timeout, send).await;
        match result {
            Ok(Ok(response)) => {
                let status = response.status().as_u16();
                let error = (!response.status().is_success()).then(|| format!("HTTP {status}"));
                self.note(Some(status), error.as_deref(), Some(started.elapsed()));
                Ok(response)
            }
            Ok(Err(e)) => {
                let why = reach_error(&self.spec.url, &e);
                self.note(None, Some(&why), None);
                Err(Trouble::new(why))
            }
            Err(_) => {
                let why = format!(
                    "did not answer within {} (timeout)",
                    humantime::format_duration(self.spec.timeout)
                );
                self.note(None, Some(&why), None);
                Err(Trouble {
                    message: why,
                    status: None,
                })
            }
        }
    }

    /// Waits before a stream is opened again after `failures` failures
    /// (250 ms doubling, at most 8 s); `false` once the connection stops.
    async fn back_off(&self, failures: u32) -> bool {
        let pause = Duration::from_millis(250u64 << failures.min(5));
        tokio::select! {
            _ = self.stop.cancelled() => false,
            _ = tokio::time::sleep(pause) => true,
        }
    }

    /// `Mcp-Session-Id` and `MCP-Protocol-Version` (Streamable HTTP), and for
    /// a 2026-07-28 request the headers that mirror its body.
    fn session_headers(&self, msg: Option<&Message>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if self.spec.transport == RemoteTransport::Sse {
            return headers;
        }
        let session = self.lock_session();
        if let Some(id) = session
            .id
            .as_deref()
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            headers.insert("mcp-session-id", id);
        }
        let mut version = session.version.clone();
        drop(session);
        // Only a 2026-07-28 request carries the envelope its headers mirror;
        // a handshake-era one is not parsed again to find that out.
        static MODERN_META: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
            std::sync::LazyLock::new(|| {
                memchr::memmem::Finder::new(berth_wire::modern::meta::PROTOCOL_VERSION)
            });
        if let Some(msg) = msg
            && MODERN_META.find(&msg.bytes).is_some()
            && let Ok(env) = berth_wire::Envelope::parse(&msg.bytes)
        {
            let facts = berth_wire::modern::RequestFacts::read(env.params);
            if let Some(modern) = facts.version() {
                version = Some(modern.to_owned());
                if let Some(method) = msg.method().and_then(|m| HeaderValue::from_str(m).ok()) {
                    headers.insert("mcp-method", method);
                }
                let name = match msg.method() {
                    Some("tools/call" | "prompts/get") => facts.name.as_deref(),
                    Some("resources/read") => facts.uri.as_deref(),
                    _ => None,
                };
                if let Some(value) = name.map(header_value) {
                    headers.insert("mcp-name", value);
                }
                // The client's own, checked by Berth against the tool's
                // schema: the upstream checks them against the body too.
                for (name, value) in msg.param_headers().into_iter().flat_map(|p| p.iter()) {
                    if let (Ok(name), Ok(value)) = (
                        HeaderName::from_bytes(name.as_bytes()),
                        HeaderValue::from_str(value),
                    ) {
                        headers.insert(name, value);
                    }
                }
            }
        }
        if let Some(v) = version.and_then(|v| HeaderValue::from_str(&v).ok()) {
            headers.insert("mcp-protocol-version", v);
        }
        headers
    }

    /// The operator's headers (secrets resolved for the connection's owner)
    /// and the OAuth credential Berth holds, if configured.
    async fn configured_headers(&self) -> Result<HeaderMap, String> {
        let mut headers = HeaderMap::new();
        for (name, template) in &self.spec.headers {
            let value = match &self.secrets {
                Some(secrets) => secrets.expand(template)?,
                None => template.clone(),
            };
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("header name {name:?} is not valid"))?;
            let mut value = HeaderValue::from_str(&value)
                .map_err(|_| format!("the value of header {name} is not a valid header value"))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        if let Some(token) = self
            .credentials
            .bearer(self.secrets.as_ref(), &self.spec.url)
            .await?
        {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| "the OAuth token is not a valid header value".to_owned())?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        Ok(headers)
    }

    async fn http_trouble(&self, status: u16, response: reqwest::Response) -> Trouble {
        let reason = response
            .status()
            .canonical_reason()
            .unwrap_or("")
            .to_owned();
        let challenge = response
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(|v| format!(" (WWW-Authenticate: {v})"))
            .unwrap_or_default();
        // Enough of it to quote; an error page is not read to its end.
        let body = tokio::time::timeout(Duration::from_secs(2), read_at_most(response, 4096))
            .await
            .unwrap_or_default();
        let body = if body.is_empty() {
            String::new()
        } else {
            format!(": {:?}", snippet(&body))
        };
        Trouble {
            message: format!("answered HTTP {status} {reason}{challenge}{body}"),
            status: Some(status),
        }
    }

    // ---- the legacy HTTP+SSE transport ----------------------------------

    /// Opens the SSE stream, waits for its `endpoint` event, then keeps
    /// routing what arrives on it. A stream that drops loses the upstream
    /// session: requests in flight fail, and a new stream is opened and
    /// initialized again with the client's `initialize`.
    async fn open_legacy_stream(self: &Arc<Self>, url: reqwest::Url) -> Result<(), String> {
        let (endpoint_tx, endpoint_rx) = tokio::sync::oneshot::channel();
        let conn = self.clone();
        tokio::spawn(async move { conn.legacy_loop(url, Some(endpoint_tx)).await });
        match tokio::time::timeout(self.spec.timeout, endpoint_rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err("the SSE stream ended before naming its endpoint".into()),
            Err(_) => Err(format!(
                "the SSE stream named no endpoint within {}",
                humantime::format_duration(self.spec.timeout)
            )),
        }
    }

    async fn legacy_loop(
        self: Arc<Self>,
        url: reqwest::Url,
        mut first: Option<tokio::sync::oneshot::Sender<Result<(), String>>>,
    ) {
        let mut failures = 0u32;
        let mut reopened = false;
        while !self.stop.is_cancelled() {
            let outcome = self.legacy_stream_once(&url, &mut first, reopened).await;
            if let Err(why) = &outcome {
                if let Some(first) = first.take() {
                    let _ = first.send(Err(why.clone()));
                }
                failures += 1;
                self.log(format!("SSE stream: {why}"));
            } else {
                failures = 0;
            }
            if self.stop.is_cancelled() {
                return;
            }
            // Whatever was in flight on the lost stream will not be answered.
            if let Some(shared) = self.shared.upgrade() {
                shared.fail_in_flight(crate::Failure::new(
                    ErrorCode::UNAVAILABLE,
                    format!(
                        "upstream `{}`: the SSE stream closed before the answer came",
                        self.server
                    ),
                ));
            }
            self.post_url.send_replace(None);
            self.lock_session().generation += 1;
            reopened = true;
            if !self.back_off(failures).await {
                return;
            }
        }
    }

    async fn legacy_stream_once(
        self: &Arc<Self>,
        url: &reqwest::Url,
        first: &mut Option<tokio::sync::oneshot::Sender<Result<(), String>>>,
        reopened: bool,
    ) -> Result<(), String> {
        let mut headers = self.configured_headers().await?;
        headers.insert(
            reqwest::header::ACCEPT,
            HeaderValue::from_static("text/event-stream"),
        );
        let send = self.client.get(url.clone()).headers(headers).send();
        let response = match tokio::time::timeout(self.spec.timeout, send).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(reach_error(url.as_str(), &e)),
            Err(_) => return Err("the SSE stream did not open in time".into()),
        };
        let status = response.status().as_u16();
        if !response.status().is_success() {
            return Err(self.http_trouble(status, response).await.message);
        }
        let mut events = sse_stream::SseStream::from_bytes_stream(bounded_events(
            response,
            self.max_message_bytes,
            Arc::default(),
        ));
        while let Some(event) = tokio::select! {
            _ = self.stop.cancelled() => None,
            e = events.next() => e,
        } {
            let Ok(event) = event else { break };
            let Some(data) = event.data else { continue };
            if event.event.as_deref() == Some("endpoint") {
                let post = url
                    .join(data.trim())
                    .map_err(|e| format!("the endpoint event {data:?} is not a URL: {e}"))?;
                self.post_url.send_replace(Some(post));
                if let Some(first) = first.take() {
                    let _ = first.send(Ok(()));
                }
                if reopened {
                    // Answered on this very stream: waited for elsewhere.
                    tokio::spawn({
                        let conn = self.clone();
                        async move { conn.legacy_reinitialize().await }
                    });
                }
                continue;
            }
            match Message::parse(Bytes::from(data.clone())) {
                Ok(msg) => self.route(msg, None),
                Err(e) => self.log(format!(
                    "SSE stream: an event that is not a JSON-RPC message ({e}): {:?}",
                    snippet(data.as_bytes())
                )),
            }
        }
        Err("the SSE stream closed".into())
    }

    /// After a new legacy stream: the client's `initialize` again, answered
    /// to Berth (the client's session goes on).
    async fn legacy_reinitialize(self: &Arc<Self>) {
        let Ok((own_id, msg)) = self.replayed_initialize() else {
            return;
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(own_id.clone(), tx);
        let conn_ok = match self.post(&msg).await {
            Ok(r) if r.status().is_success() => true,
            Ok(r) => {
                let status = r.status().as_u16();
                self.log(self.http_trouble(status, r).await.message);
                false
            }
            Err(t) => {
                self.log(t.message);
                false
            }
        };
        if conn_ok {
            let waited = tokio::time::timeout(self.spec.timeout, rx).await;
            if let Ok(Ok(_answer)) = waited
                && let Ok(initialized) = initialized_notification()
            {
                let _ = self.post_one_way(&initialized).await;
                self.stats().report.reinitialized += 1;
                self.log("the SSE stream was reopened and the session initialized again".into());
            }
        }
        self.waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&own_id);
    }

    /// The client's `initialize` under an id of Berth's (its answer is not
    /// the client's), to open a new upstream session for the same client.
    fn replayed_initialize(&self) -> Result<(String, Message), String> {
        let initialize = self
            .lock_session()
            .initialize
            .clone()
            .ok_or("Berth never saw this session's initialize")?;
        let own_id = gateway_request_id();
        let bytes = berth_wire::with_id(
            &initialize,
            &serde_json::Value::from(own_id.clone()).to_string(),
        )
        .ok_or("the initialize request could not be re-addressed")?;
        let msg = Message::parse(bytes).map_err(|e| e.to_string())?;
        Ok((own_id, msg))
    }

    /// Where to POST, once the stream has named it (within `timeout`).
    async fn legacy_post_url(&self) -> Result<reqwest::Url, Trouble> {
        let mut named = self.post_url.subscribe();
        let wait = async {
            tokio::select! {
                _ = self.stop.cancelled() => None,
                url = named.wait_for(Option::is_some) => url.ok().and_then(|u| u.clone()),
            }
        };
        tokio::time::timeout(self.spec.timeout, wait)
            .await
            .ok()
            .flatten()
            .ok_or_else(|| Trouble::new("its SSE stream is not open (no endpoint to POST to)"))
    }
}

impl Conn {
    /// A JSON body, refused past `max_message_bytes` (read no further).
    async fn body_within_limit(&self, mut response: reqwest::Response) -> Result<Bytes, Trouble> {
        let mut body = bytes::BytesMut::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > self.max_message_bytes {
                        return Err(Trouble::new(format!(
                            "answered with a body larger than the {}-byte limit (max_message_bytes); the rest was not read",
                            self.max_message_bytes
                        )));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(body.freeze()),
                Err(e) => return Err(Trouble::new(format!("the response body broke off: {e}"))),
            }
        }
    }
}

/// Up to `most` bytes of a body (the rest is not read).
async fn read_at_most(mut response: reqwest::Response, most: usize) -> Bytes {
    let mut body = bytes::BytesMut::new();
    while body.len() < most {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk[..chunk.len().min(most - body.len())]),
            _ => break,
        }
    }
    body.freeze()
}

/// An SSE body whose events may not grow past `limit` bytes: an upstream
/// that never ends an event would otherwise grow Berth's memory without
/// bound. Counts the bytes since the last blank line (an event's end).
fn bounded_events(
    response: reqwest::Response,
    limit: usize,
    too_big: Arc<std::sync::atomic::AtomicBool>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    let mut pending = 0usize;
    response.bytes_stream().map(move |chunk| {
        let chunk = chunk.map_err(std::io::Error::other)?;
        pending = match memchr::memmem::rfind(&chunk, b"\n\n") {
            Some(end) => chunk.len() - (end + 2),
            None => pending + chunk.len(),
        };
        if pending > limit {
            too_big.store(true, std::sync::atomic::Ordering::Relaxed);
            return Err(std::io::Error::other(format!(
                "an event larger than the {limit}-byte limit (max_message_bytes)"
            )));
        }
        Ok(chunk)
    })
}

/// What follows a (re-)initialization.
fn initialized_notification() -> Result<Message, berth_wire::ParseError> {
    Message::parse(Bytes::from_static(
        br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    ))
}

/// Whether a response is an SSE stream.
fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"))
}

/// A header value for `Mcp-Name`: plain visible ASCII as is, anything else
/// in the `=?base64?…?=` form 2026-07-28 defines.
fn header_value(text: &str) -> HeaderValue {
    use base64::Engine as _;
    let plain = !text.is_empty()
        && text.bytes().all(|b| (0x20..0x7f).contains(&b))
        && !text.starts_with(' ')
        && !text.ends_with(' ');
    let encoded;
    let text = if plain {
        text
    } else {
        encoded = format!(
            "=?base64?{}?=",
            base64::engine::general_purpose::STANDARD.encode(text)
        );
        &encoded
    };
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn reach_error(url: &str, e: &reqwest::Error) -> String {
    let mut why = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        why.push_str(": ");
        why.push_str(&s.to_string());
        source = s.source();
    }
    format!("cannot reach {url}: {why}")
}

fn snippet(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned()
}
