//! MCP sessions and their resumable SSE streams.
//!
//! A session owns one upstream process. What the process sends reaches the
//! client through numbered streams: stream 0 is the session's standalone
//! stream (HTTP GET, or the single stream of a legacy HTTP+SSE session); each
//! POST that needs more than a single JSON reply gets a stream of its own.
//! Events are kept in a bounded per-stream buffer, so a client that lost its
//! connection can reconnect with `Last-Event-ID` and miss nothing. Event ids
//! are `<stream>-<seq>`, unique within the session and naming their stream.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;
use berth_auth::Principal;
use berth_fleet::{Lease, LeaseStart};
use berth_telemetry::{FirstResult, Observer as _, Start};
use berth_wire::{
    ClientHello, ErrorCode, Kind, Message, ProtocolVersion, SseEvent, error_response, priming_event,
};
use bytes::{Bytes, BytesMut};
use memchr::memmem::Finder;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::server::Server;

/// Who ends sessions (the gateway). A session ends itself through it when its
/// legacy SSE connection closes.
pub(crate) trait SessionRegistry: Send + Sync {
    /// Ends `session` in the background.
    fn end_detached(&self, session: &Arc<Session>, reason: &str);
}

/// The standalone stream of a session.
pub(crate) const STANDALONE: u64 = 0;

/// How many finished POST streams a session keeps for late reconnects.
const FINISHED_STREAMS_KEPT: usize = 16;

pub(crate) struct Session {
    pub(crate) id: Arc<str>,
    pub(crate) server: Arc<Server>,
    /// The process serving the session; replaced if it crashes and the
    /// server's policy is to replay.
    binding: Mutex<Arc<Lease>>,
    /// Held while the session is being re-bound to a fresh process.
    pub(crate) rebinding: tokio::sync::Mutex<()>,
    /// The client's initialize request and what it declared (`None` until it came).
    hello: Mutex<Option<(ClientHello, Bytes)>>,
    /// Legacy HTTP+SSE (2024-11-05): one stream, `event: message` framing.
    pub(crate) legacy: bool,
    /// Interval of keep-alive comments on idle streams.
    keepalive: Duration,
    /// Ends the session when its legacy SSE connection closes.
    registry: Weak<dyn SessionRegistry>,
    state: Mutex<State>,
    /// Woken whenever any stream of the session changes.
    notify: Notify,
    created: Instant,
    /// Milliseconds since `created` of the last request.
    last_active_ms: AtomicU64,
    /// When the server last sent this session something (ms since `created`).
    last_server_ms: AtomicU64,
    /// Server messages a slow reader never got (evicted unread).
    pub(crate) dropped: AtomicU64,
    /// Open SSE connections.
    connections: AtomicUsize,
    pub(crate) ended: CancellationToken,
    /// Who opened the session: only they may use it (`None` without auth).
    pub(crate) owner: Option<Arc<Principal>>,
    /// The client it counts against ([`crate::fairness`]), if limited.
    pub(crate) client: Option<Arc<str>>,
    /// How its first process was had (cold, warm, standby, shared).
    pub(crate) start: Start,
    /// Its first tool result was reported.
    first_result: AtomicBool,
}

struct State {
    version: ProtocolVersion,
    streams: HashMap<u64, Stream>,
    next_stream: u64,
    finished: VecDeque<u64>,
}

struct Stream {
    /// (seq, framed event), oldest first, within the replay limit.
    events: VecDeque<(u64, Bytes)>,
    /// Their total size.
    bytes: usize,
    next_seq: u64,
    /// The last seq handed to a connection.
    delivered: u64,
    /// No more events will come.
    done: bool,
    /// A connection is reading this stream now.
    attached: bool,
}

/// The `data:` payload of a framed event (MCP messages are one line).
fn sse_data(frame: &[u8]) -> &[u8] {
    static DATA: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"data: "));
    let Some(start) = DATA.find(frame) else {
        return &[];
    };
    let rest = &frame[start + 6..];
    &rest[..memchr::memchr(b'\n', rest).unwrap_or(rest.len())]
}

/// The id of `data` if it is a request from the server (sampling,
/// elicitation, roots...), as written. Large messages are not looked into:
/// requests are small, floods are not.
fn server_request_id(data: &[u8]) -> Option<String> {
    if data.len() > 256 << 10 {
        return None;
    }
    let envelope = berth_wire::Envelope::parse(data).ok()?;
    envelope.method.as_ref()?;
    envelope.id.map(|id| id.get().to_owned())
}

/// Who opens a session: the principal it is bound to, and the client it
/// counts against ([`crate::fairness`]).
pub(crate) struct Caller {
    pub(crate) owner: Option<Arc<Principal>>,
    pub(crate) client: Option<Arc<str>>,
}

impl Stream {
    fn new() -> Stream {
        Stream {
            events: VecDeque::new(),
            bytes: 0,
            next_seq: 1,
            delivered: 0,
            done: false,
            attached: false,
        }
    }

    /// Every buffered event after `cursor`, as one chunk, and the last seq in it.
    fn after(&self, cursor: u64) -> Option<(Bytes, u64)> {
        let first = self.events.front()?.0;
        let skip = cursor.saturating_add(1).saturating_sub(first) as usize;
        let mut pending = self.events.range(skip.min(self.events.len())..);
        let (seq, bytes) = pending.next()?;
        let (mut last, mut chunk) = (*seq, None::<BytesMut>);
        for (seq, more) in pending {
            let buf = chunk.get_or_insert_with(|| BytesMut::from(&bytes[..]));
            buf.extend_from_slice(more);
            last = *seq;
        }
        Some((
            chunk.map(BytesMut::freeze).unwrap_or_else(|| bytes.clone()),
            last,
        ))
    }
}

impl Session {
    /// Whether `principal` is the one who opened this session.
    pub(crate) fn owned_by(&self, principal: Option<&Principal>) -> bool {
        match (&self.owner, principal) {
            (None, None) => true,
            (Some(owner), Some(p)) => owner.id == p.id,
            _ => false,
        }
    }

    pub(crate) fn new(
        id: Arc<str>,
        server: Arc<Server>,
        lease: Lease,
        legacy: bool,
        caller: Caller,
        keepalive: Duration,
        registry: Weak<dyn SessionRegistry>,
    ) -> Arc<Session> {
        let mut streams = HashMap::new();
        streams.insert(STANDALONE, Stream::new());
        let start = match lease.start {
            LeaseStart::Cold => Start::Cold,
            LeaseStart::Warm => Start::Warm,
            LeaseStart::Standby => Start::Standby,
            LeaseStart::Shared => Start::Shared,
        };
        Arc::new(Session {
            start,
            first_result: AtomicBool::new(false),
            id,
            server,
            binding: Mutex::new(Arc::new(lease)),
            rebinding: tokio::sync::Mutex::new(()),
            hello: Mutex::new(None),
            legacy,
            keepalive,
            registry,
            state: Mutex::new(State {
                version: ProtocolVersion::HTTP_DEFAULT,
                streams,
                next_stream: 1,
                finished: VecDeque::new(),
            }),
            notify: Notify::new(),
            created: Instant::now(),
            last_active_ms: AtomicU64::new(0),
            last_server_ms: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            connections: AtomicUsize::new(0),
            owner: caller.owner,
            client: caller.client,
            ended: CancellationToken::new(),
        })
    }

    /// How long ago the session was created.
    pub(crate) fn age(&self) -> Duration {
        self.created.elapsed()
    }

    /// Reports the session's first tool result (once): the time from its
    /// `initialize` to it, by how its process was had.
    pub(crate) fn first_tool_result(&self) {
        if self.first_result.swap(true, Ordering::Relaxed) {
            return;
        }
        self.server.telemetry.first_result(&FirstResult {
            server: &self.server.spec.name,
            start: self.start,
            after: self.age(),
        });
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn version(&self) -> ProtocolVersion {
        self.state().version
    }

    pub(crate) fn set_version(&self, version: ProtocolVersion) {
        self.state().version = version;
    }

    /// The process serving the session now.
    pub(crate) fn lease(&self) -> Arc<Lease> {
        self.binding
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn rebind(&self, lease: Arc<Lease>) {
        *self.binding.lock().unwrap_or_else(|e| e.into_inner()) = lease;
    }

    /// Remembers the client's `initialize`, to honour its capabilities and
    /// to replay it on a fresh process.
    pub(crate) fn set_hello(&self, initialize: &Message) -> ClientHello {
        let env = berth_wire::Envelope::parse(&initialize.bytes).ok();
        let hello = ClientHello::from_params(env.as_ref().and_then(|e| e.params));
        *self.hello.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((hello.clone(), initialize.bytes.clone()));
        hello
    }

    /// The client's `initialize` request, as it sent it.
    pub(crate) fn initialize_request(&self) -> Option<Bytes> {
        self.hello
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(_, bytes)| bytes.clone())
    }

    /// Keeps capabilities honest: a server request the client did not declare
    /// support for (sampling, elicitation, roots) is answered by Berth with an
    /// error instead of reaching a client that cannot handle it.
    pub(crate) fn screen(&self, lease: &Lease, msg: Message) -> Option<Message> {
        if msg.kind != Kind::Request {
            return Some(msg);
        }
        let lacking = {
            let hello = self.hello.lock().unwrap_or_else(|e| e.into_inner());
            let method = msg.method().unwrap_or_default();
            hello
                .as_ref()
                .and_then(|(hello, _)| hello.lacks_capability_for(method))
        };
        let Some(capability) = lacking else {
            return Some(msg);
        };
        let reply = error_response(
            msg.raw_id().as_deref(),
            ErrorCode::METHOD_NOT_FOUND,
            &format!(
                "the client did not declare the `{capability}` capability; Berth answered on its behalf"
            ),
            None,
        );
        if let Ok(reply) = Message::parse(reply) {
            let _ = lease.send(&reply);
        }
        None
    }

    /// Milliseconds since the session was created (its activity clock).
    fn now_ms(&self) -> u64 {
        self.created.elapsed().as_millis() as u64
    }

    pub(crate) fn touch(&self) {
        let now = self.now_ms();
        self.last_active_ms.store(now, Ordering::Relaxed);
    }

    /// Idle: nothing in flight and no request for `timeout`; and either no
    /// open stream, or open streams the server has sent nothing on for
    /// `timeout` (a GET held open alone does not keep a session, and its
    /// process, forever).
    pub(crate) fn idle_for(&self, timeout: Duration) -> bool {
        let now = self.now_ms();
        let timeout = timeout.as_millis() as u64;
        let quiet = |last: &AtomicU64| now.saturating_sub(last.load(Ordering::Relaxed)) >= timeout;
        self.lease().in_flight() == 0
            && quiet(&self.last_active_ms)
            && (self.connections.load(Ordering::Relaxed) == 0 || quiet(&self.last_server_ms))
    }

    /// A new stream for a POST's interim messages and final answer.
    pub(crate) fn open_stream(&self) -> u64 {
        let mut state = self.state();
        let n = state.next_stream;
        state.next_stream += 1;
        state.streams.insert(n, Stream::new());
        n
    }

    /// Appends a message to a stream and wakes its reader.
    /// Past the replay limit the oldest events go; one no connection has
    /// read yet is lost to a slow reader, which is counted and logged.
    pub(crate) fn push(&self, stream: u64, data: &[u8], replay: crate::config::Replay) {
        // Server requests the client will never see, answered below.
        let mut unanswerable: Vec<String> = Vec::new();
        let now = self.now_ms();
        self.last_server_ms.store(now, Ordering::Relaxed);
        {
            let mut state = self.state();
            let Some(s) = state.streams.get_mut(&stream) else {
                return;
            };
            if s.done {
                return;
            }
            let seq = s.next_seq;
            s.next_seq += 1;
            let event = if self.legacy {
                SseEvent::frame(None, Some("message"), data)
            } else {
                SseEvent::frame(Some(&format!("{stream}-{seq}")), None, data)
            };
            s.bytes += event.len();
            s.events.push_back((seq, event));
            let mut lost = 0;
            while s.events.len() > 1 && (s.events.len() > replay.events || s.bytes > replay.bytes) {
                if let Some((old, gone)) = s.events.pop_front() {
                    s.bytes -= gone.len();
                    if old > s.delivered {
                        lost += 1;
                        // Looked into only now, on this rare path: the
                        // per-message path stays free of a second parse.
                        unanswerable.extend(server_request_id(sse_data(&gone)));
                    }
                }
            }
            if lost > 0 {
                self.server.dropped.fetch_add(lost, Ordering::Relaxed);
                let before = self.dropped.fetch_add(lost, Ordering::Relaxed);
                // The first loss, then every 1,000th: a flood must not flood the log too.
                if before == 0 || (before + lost) / 1000 > before / 1000 {
                    tracing::warn!(
                        server = %self.server.spec.name,
                        session = %self.id,
                        dropped = before + lost,
                        "a slow reader missed server messages: the stream's replay buffer (replay_buffer, replay_buffer_bytes) was full"
                    );
                }
            }
        }
        // A request dropped in silence would leave the server waiting forever.
        for id in unanswerable {
            let reply = error_response(
                Some(&id),
                ErrorCode::INTERNAL_ERROR,
                "Berth could not deliver this request: the client was not reading its stream and the replay buffer overflowed",
                None,
            );
            if let Ok(reply) = Message::parse(reply) {
                let _ = self.lease().send(&reply);
            }
        }
        self.notify.notify_waiters();
    }

    /// Marks a stream complete: its reader ends once it has sent everything.
    pub(crate) fn finish(&self, stream: u64) {
        {
            let mut state = self.state();
            if let Some(s) = state.streams.get_mut(&stream) {
                s.done = true;
            }
            if stream != STANDALONE {
                state.finished.push_back(stream);
                while state.finished.len() > FINISHED_STREAMS_KEPT {
                    if let Some(old) = state.finished.pop_front() {
                        state.streams.remove(&old);
                    }
                }
            }
        }
        self.notify.notify_waiters();
    }

    /// Ends the session's streams; called once the session is over.
    pub(crate) fn close_streams(&self) {
        self.finish(STANDALONE);
    }

    pub(crate) fn has_stream(&self, stream: u64) -> bool {
        self.state().streams.contains_key(&stream)
    }

    /// Where a fresh reader of the standalone stream starts: after what was
    /// already delivered. `None` if another reader is attached.
    pub(crate) fn standalone_cursor(&self) -> Option<u64> {
        let state = self.state();
        let s = state.streams.get(&STANDALONE)?;
        (!s.attached).then_some(s.delivered)
    }

    /// An SSE response reading `stream` from after `cursor`.
    pub(crate) fn sse(
        self: &Arc<Self>,
        stream: u64,
        cursor: u64,
        first: Option<Bytes>,
    ) -> Response {
        let reader = Reader::attach(self.clone(), stream, cursor, first, self.keepalive);
        let body = futures::stream::unfold(reader, |mut reader| async move {
            let chunk = reader.next().await?;
            Some((Ok::<_, Infallible>(chunk), reader))
        });
        crate::reply::sse(Body::from_stream(body))
    }

    /// The priming event for a stream read from `cursor`, when the client's
    /// protocol revision expects one.
    pub(crate) fn priming(&self, stream: u64, cursor: u64, retry: Duration) -> Option<Bytes> {
        (!self.legacy && self.version().primes_streams())
            .then(|| priming_event(&format!("{stream}-{cursor}"), retry.as_millis() as u64))
    }
}

/// One SSE connection reading one stream.
struct Reader {
    session: Arc<Session>,
    stream: u64,
    cursor: u64,
    first: Option<Bytes>,
    keepalive: Duration,
}

impl Reader {
    fn attach(
        session: Arc<Session>,
        stream: u64,
        cursor: u64,
        first: Option<Bytes>,
        keepalive: Duration,
    ) -> Reader {
        session.connections.fetch_add(1, Ordering::Relaxed);
        if let Some(s) = session.state().streams.get_mut(&stream) {
            s.attached = true;
        }
        session.touch();
        Reader {
            session,
            stream,
            cursor,
            first,
            keepalive,
        }
    }

    async fn next(&mut self) -> Option<Bytes> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        loop {
            let notified = self.session.notify.notified();
            {
                let mut state = self.session.state();
                let s = state.streams.get_mut(&self.stream)?;
                if let Some((chunk, last)) = s.after(self.cursor) {
                    self.cursor = last;
                    s.delivered = s.delivered.max(last);
                    return Some(chunk);
                }
                if s.done {
                    return None;
                }
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(self.keepalive) => return Some(Bytes::from_static(b": keepalive\n\n")),
            }
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let session = &self.session;
        session.connections.fetch_sub(1, Ordering::Relaxed);
        if let Some(s) = session.state().streams.get_mut(&self.stream) {
            s.attached = false;
        }
        session.touch();
        // A legacy session lives exactly as long as its SSE connection.
        if session.legacy
            && !session.ended.is_cancelled()
            && let Some(registry) = session.registry.upgrade()
        {
            registry.end_detached(session, "the client closed its SSE connection");
        }
    }
}

/// A cryptographically random session id: 32 bytes, base64url (visible ASCII).
pub fn new_session_id() -> Arc<str> {
    use base64::Engine;
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(bytes)
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_visible_ascii_and_distinct() {
        let a = new_session_id();
        let b = new_session_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(a.bytes().all(|c| (0x21..=0x7e).contains(&c)));
    }

    #[test]
    fn stream_replays_after_cursor() {
        let mut s = Stream::new();
        for seq in 1..=3u64 {
            s.events.push_back((seq, Bytes::from(format!("e{seq};"))));
        }
        assert_eq!(s.after(0).unwrap(), (Bytes::from("e1;e2;e3;"), 3));
        assert_eq!(s.after(2).unwrap(), (Bytes::from("e3;"), 3));
        assert!(s.after(3).is_none());
        s.events.pop_front();
        // Evicted events are gone; the reader gets what is left.
        assert_eq!(s.after(0).unwrap(), (Bytes::from("e2;e3;"), 3));
    }
}

#[cfg(test)]
mod request_ids {
    #[test]
    fn a_server_request_is_recognised_by_its_id_and_method() {
        let request = br#"{"jsonrpc":"2.0","id":"notify-sampling","method":"sampling/createMessage","params":{"maxTokens":10}}"#;
        assert_eq!(
            super::server_request_id(request).as_deref(),
            Some("\"notify-sampling\"")
        );
        let notification = br#"{"jsonrpc":"2.0","method":"notifications/message","params":{}}"#;
        assert_eq!(super::server_request_id(notification), None);
        let framed = berth_wire::SseEvent::frame(Some("0-1"), None, request);
        assert_eq!(super::sse_data(&framed), &request[..]);
    }
}
