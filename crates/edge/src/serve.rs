//! Serving the gateway over HTTP: the routes (MCP endpoints in both
//! protocol eras, legacy SSE, OAuth metadata, health) with their layers, and
//! the accept loop with its graceful shutdown.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response, Version, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;

use crate::config::EdgeConfig;
use crate::error::EdgeError;
use crate::gateway::{Gateway, reap_idle_sessions};
use crate::server::Server;
use crate::{admission, authz, legacy, streamable};

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
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                admission::admit,
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
        let sampler = tokio::spawn(crate::sampler::sample_processes(Arc::downgrade(&self)));
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
        let served = serve_connections(self.router(), listener, &self.config, graceful).await;
        reaper.abort();
        sampler.abort();
        // Sessions started while the listener drained.
        self.end_all_sessions("the gateway is shutting down").await;
        let pools: Vec<Arc<Server>> = self.servers();
        futures::future::join_all(pools.iter().map(|s| s.stop())).await;
        served
    }
}

/// The accept loop: each connection is served by hyper with the edge's
/// timers and limits, and `ConnectInfo<SocketAddr>` in every request's
/// extensions (the issuer's consent form limits wrong approval secrets per
/// peer). Once `graceful` has run, no connection is accepted any more, the
/// open ones are asked to close after their requests in flight, and this
/// returns when they have.
async fn serve_connections(
    router: Router,
    listener: TcpListener,
    config: &EdgeConfig,
    graceful: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(nonzero(config.header_read_timeout));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(nonzero(config.http2_keepalive_interval))
        .keep_alive_timeout(config.http2_keepalive_timeout)
        .max_concurrent_streams(config.http2_max_concurrent_streams);
    let builder = Arc::new(builder);
    let limits = Arc::new(Limits {
        open: Mutex::new((0, HashMap::new())),
        max: config.max_connections,
        max_per_peer: config.max_connections_per_peer,
    });
    let header_timeout = nonzero(config.header_read_timeout);
    let idle_timeout = nonzero(config.idle_timeout);
    let body_timeout = nonzero(config.body_read_timeout);
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let refusals = RateLimited::default();
    let accept_errors = RateLimited::default();
    tokio::pin!(graceful);
    'accept: loop {
        let accepted = tokio::select! {
            _ = &mut graceful => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // A connection reset before it was accepted is the peer's
                // business; anything else (EMFILE, ENFILE, ENOMEM, ENOBUFS)
                // is ours: back off, then keep accepting.
                if is_peer_error(&e) {
                    tracing::debug!("accept: {e}");
                    continue;
                }
                accept_errors.warn(|suppressed| {
                    tracing::warn!(
                        "accepting a connection failed: {e} ({suppressed} more since the last report); retrying in 50 ms"
                    )
                });
                tokio::select! {
                    _ = &mut graceful => break 'accept,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
                }
            }
        };
        // Without it, an SSE answer's second event waits for the client's
        // ACK of the first, which a kept-alive client delays up to 40 ms
        // (Nagle against delayed ACK): every call with progress or logging
        // before its result would take 40 ms more.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY on the connection from {peer}: {e}");
        }
        let slot = match limits.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(limit) => {
                refusals.warn(|suppressed| {
                    tracing::warn!(
                        "refused a connection from {peer}: gateway.{limit} reached ({suppressed} more refused since the last report)"
                    )
                });
                // Best effort, never waits: the socket's buffer is empty.
                let _ = stream.try_write(REFUSED);
                continue;
            }
        };
        let builder = builder.clone();
        let router = router.clone();
        let stop = stop.clone();
        tracker.spawn(async move {
            let _slot = slot;
            let mut stream = stream;
            // Hyper gets the connection once its first request's head is
            // in: a slow or silent client costs a small buffer until then,
            // not hyper's 16 KiB of buffers.
            let head = tokio::select! {
                head = read_first_head(&mut stream, header_timeout) => head,
                _ = stop.cancelled() => None,
            };
            let Some(head) = head else {
                tracing::debug!("closing the connection from {peer}: no request head in time");
                return;
            };
            let service = ConnService {
                router,
                peer,
                activity: Arc::new(Activity::new()),
                body_timeout,
            };
            let activity = service.activity.clone();
            let io = Prefixed { head, read: 0, io: stream };
            let conn = builder.serve_connection(TokioIo::new(io), service);
            tokio::pin!(conn);
            let idle_check = tokio::time::sleep(idle_timeout.unwrap_or(Duration::MAX / 4));
            tokio::pin!(idle_check);
            let mut closing = false;
            loop {
                tokio::select! {
                    served = conn.as_mut() => {
                        if let Err(e) = served {
                            tracing::debug!("connection from {peer}: {e}");
                        }
                        break;
                    }
                    _ = stop.cancelled(), if !closing => {
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                    _ = &mut idle_check, if idle_timeout.is_some() => {
                        let Some(limit) = idle_timeout else { break };
                        match activity.idle_for() {
                            Some(idle) if closing && idle >= limit => {
                                // Asked to close an idle while ago and still
                                // open (an HTTP/2 peer ignoring GOAWAY).
                                break;
                            }
                            Some(idle) if idle >= limit => {
                                tracing::debug!("closing the idle connection from {peer}");
                                conn.as_mut().graceful_shutdown();
                                closing = true;
                                idle_check.as_mut().reset(tokio::time::Instant::now() + limit);
                            }
                            Some(idle) => {
                                idle_check.as_mut().reset(tokio::time::Instant::now() + (limit - idle));
                            }
                            None => {
                                idle_check.as_mut().reset(tokio::time::Instant::now() + limit);
                            }
                        }
                    }
                }
            }
        });
    }
    drop(listener);
    stop.cancel();
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// The largest first request head buffered before hyper takes over (and
/// applies its own limit).
const FIRST_HEAD_LIMIT: usize = 16 * 1024;

/// Reads until the end of the first request's head (`\r\n\r\n`, which the
/// HTTP/2 preface has too) within `limit`; `None` when the connection ended
/// or was too slow.
async fn read_first_head(stream: &mut TcpStream, limit: Option<Duration>) -> Option<Vec<u8>> {
    let mut head = Vec::with_capacity(256);
    let read = async {
        loop {
            if head.len() >= FIRST_HEAD_LIMIT || memchr::memmem::find(&head, b"\r\n\r\n").is_some()
            {
                return true;
            }
            if head.capacity() - head.len() < 128 {
                head.reserve(head.capacity());
            }
            match stream.read_buf(&mut head).await {
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            }
        }
    };
    let complete = match limit {
        Some(limit) => tokio::time::timeout(limit, read).await.unwrap_or(false),
        None => read.await,
    };
    complete.then_some(head)
}

/// A connection whose first bytes were already read.
struct Prefixed {
    head: Vec<u8>,
    read: usize,
    io: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.read < self.head.len() {
            let n = buf.remaining().min(self.head.len() - self.read);
            let start = self.read;
            buf.put_slice(&self.head[start..start + n]);
            self.read += n;
            if self.read == self.head.len() {
                self.head = Vec::new();
                self.read = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The answer to a connection over a limit.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: 106\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32005,\"message\":\"Service Unavailable: too many connections\"}}\n";

fn nonzero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

fn is_peer_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted | WouldBlock
    ) || e.raw_os_error() == Some(libc::EPROTO)
}

/// At most one log line a second; the lines skipped are counted in the next.
#[derive(Default)]
struct RateLimited {
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl RateLimited {
    fn warn(&self, log: impl FnOnce(u64)) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *last = Some(Instant::now());
        log(self.suppressed.swap(0, Ordering::Relaxed));
    }
}

/// Open connections, in all and per peer address.
struct Limits {
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
    max: usize,
    max_per_peer: usize,
}

/// One admitted connection; dropping it frees its place.
struct Slot {
    limits: Arc<Limits>,
    ip: IpAddr,
}

impl Limits {
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, &'static str> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.0 >= self.max {
            return Err("max_connections");
        }
        let from_peer = open.1.entry(ip).or_insert(0);
        if *from_peer >= self.max_per_peer {
            return Err("max_connections_per_peer");
        }
        *from_peer += 1;
        open.0 += 1;
        Ok(Slot {
            limits: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(|p| p.into_inner());
        open.0 -= 1;
        if let Some(n) = open.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.ip);
            }
        }
    }
}

/// A connection's requests in flight and when the last one ended.
struct Activity {
    start: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds from `start` to the end of the last request.
    last: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last: AtomicU64::new(0),
        }
    }

    /// How long the connection has had nothing in flight; `None` while it has.
    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last.load(Ordering::Acquire));
        Some(self.start.elapsed().saturating_sub(last))
    }
}

/// A request in flight, from its headers until its response's body has been
/// sent (or dropped): an SSE stream is in flight as long as it is open.
struct Busy(Arc<Activity>);

impl Busy {
    fn new(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        Busy(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let now = self.0.start.elapsed().as_millis() as u64;
        self.0.last.fetch_max(now, Ordering::AcqRel);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The router, served on one connection.
#[derive(Clone)]
struct ConnService {
    router: Router,
    peer: SocketAddr,
    activity: Arc<Activity>,
    body_timeout: Option<Duration>,
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        let busy = Busy::new(self.activity.clone());
        req.extensions_mut().insert(ConnectInfo(self.peer));
        let http1 = req.version() < Version::HTTP_2;
        let mut timed_out = None;
        let req = match self.body_timeout {
            Some(limit) if !req.body().is_end_stream() => {
                let flag = Arc::new(AtomicBool::new(false));
                timed_out = Some(flag.clone());
                req.map(|inner| {
                    Body::new(TimedBody {
                        inner,
                        deadline: Deadline::Unarmed(tokio::time::Instant::now() + limit),
                        timed_out: flag,
                    })
                })
            }
            _ => req.map(Body::new),
        };
        let mut router = self.router.clone();
        Box::pin(async move {
            let response = match router.call(req).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            let response = if timed_out.is_some_and(|t| t.load(Ordering::Acquire)) {
                body_timeout_response(http1)
            } else {
                response
            };
            Ok(response.map(|inner| Body::new(TrackedBody { inner, _busy: busy })))
        })
    }
}

/// 408 with a JSON-RPC error body; HTTP/1 connections are closed after it
/// (the rest of the body is not worth waiting for).
fn body_timeout_response(http1: bool) -> Response<Body> {
    let mut response = EdgeError::BodyTimeout(
        "Request Timeout: the request body did not arrive within gateway.body_read_timeout".into(),
    )
    .refusal(None)
    .into_response();
    if !http1 {
        // HTTP/2 has no Connection header; the stream alone ends.
        response.headers_mut().remove(header::CONNECTION);
    }
    response
}

/// A request body that must end before its deadline.
struct TimedBody {
    inner: Incoming,
    deadline: Deadline,
    timed_out: Arc<AtomicBool>,
}

/// The timer is armed only when the body has to be waited for: most
/// request bodies arrive with their head, and a timer per request costs a
/// timer-wheel entry.
enum Deadline {
    Unarmed(tokio::time::Instant),
    Armed(Pin<Box<tokio::time::Sleep>>),
    /// The body ended, or its time ran out.
    Done,
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if frame.is_none() || self.inner.is_end_stream() {
                    self.deadline = Deadline::Done;
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                if let Deadline::Unarmed(at) = self.deadline {
                    self.deadline = Deadline::Armed(Box::pin(tokio::time::sleep_until(at)));
                }
                let expired = match &mut self.deadline {
                    Deadline::Armed(sleep) => sleep.as_mut().poll(cx).is_ready(),
                    Deadline::Unarmed(_) | Deadline::Done => false,
                };
                if !expired {
                    return Poll::Pending;
                }
                self.timed_out.store(true, Ordering::Release);
                self.deadline = Deadline::Done;
                Poll::Ready(Some(Err(
                    "the body did not arrive within gateway.body_read_timeout".into(),
                )))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that keeps its request in flight until it is dropped.
struct TrackedBody {
    inner: Body,
    _busy: Busy,
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The over-limit answer is written as raw bytes before hyper has the
    /// connection; it must stay what EdgeError says of such a refusal.
    #[test]
    fn the_connection_refusal_is_the_typed_error() {
        let text = std::str::from_utf8(REFUSED).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let error = EdgeError::Unavailable("Service Unavailable: too many connections".into());
        assert!(
            head.starts_with(&format!("HTTP/1.1 {}", error.status())),
            "{head}"
        );
        let expected = error.body(None);
        assert_eq!(body.trim_end().as_bytes(), &expected[..]);
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
    }
}
