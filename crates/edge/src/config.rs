//! Settings of the HTTP edge.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use berth_auth::Authenticator;

#[derive(Debug, Clone)]
pub struct EdgeConfig {
    pub listen: SocketAddr,
    /// How long a request may wait for the server's answer.
    pub request_timeout: Duration,
    /// Sessions with no request and no open stream for this long are ended.
    pub session_idle_timeout: Duration,
    /// The largest HTTP request body accepted.
    pub max_body_bytes: usize,
    /// Reconnection delay advertised in SSE priming events.
    pub sse_retry: Duration,
    /// Interval of SSE keep-alive comments on idle streams.
    pub sse_keepalive: Duration,
    /// Events kept per SSE stream for `Last-Event-ID` replay.
    pub replay_buffer: usize,
    /// Host names (without port) accepted in the `Host` header; empty means
    /// loopback names when listening on loopback, anything otherwise.
    pub allowed_hosts: Vec<String>,
    /// Origins (`scheme://host[:port]`) accepted from browsers; loopback
    /// origins are accepted when listening on loopback, and a request whose
    /// Origin matches its own Host is always accepted.
    pub allowed_origins: Vec<String>,
    /// Who may call the servers; `None` lets anyone who reaches the listener.
    pub auth: Option<Arc<Authenticator>>,
    /// Extra routes served beside the MCP endpoints (the built-in
    /// authorization server).
    pub extra_routes: Option<axum::Router>,
    /// An HTTP/1 request's headers must arrive within this (it also bounds
    /// the wait for the next request on a keep-alive connection); zero: no limit.
    pub header_read_timeout: Duration,
    /// A request body must arrive in full within this, counted from its
    /// headers; a late one gets 408 and the connection is closed. Zero: no limit.
    pub body_read_timeout: Duration,
    /// A connection with no request in flight (open SSE streams and pending
    /// answers are in flight) is closed after this long; zero: never.
    pub idle_timeout: Duration,
    /// HTTP/2 keep-alive ping interval (zero: no pings) and how long a ping's
    /// answer may take before the connection is closed.
    pub http2_keepalive_interval: Duration,
    pub http2_keepalive_timeout: Duration,
    /// Concurrent streams per HTTP/2 connection.
    pub http2_max_concurrent_streams: u32,
    /// Open connections in all, and from one peer address; beyond them a new
    /// connection is answered 503 and closed at once.
    pub max_connections: usize,
    pub max_connections_per_peer: usize,
    /// Per-client limits (rate, sessions per server).
    pub fairness: Fairness,
    /// Bytes of events kept per SSE stream for replay (besides their count):
    /// a few huge messages cannot pin gigabytes.
    pub replay_buffer_bytes: usize,
    /// Trace each request (W3C trace context from the `traceparent` header
    /// or `params._meta.traceparent`, passed on to the server in
    /// `params._meta.traceparent`). Off: requests reach servers byte for byte.
    pub tracing: bool,
}

/// Per-client limits; 0 turns one off. Enforced by [`crate::fairness`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fairness {
    /// Sessions one client may hold open on one server.
    pub max_sessions_per_client: usize,
    /// Sustained requests per second of one client (a burst of twice as
    /// many is allowed).
    pub requests_per_second: f64,
}

impl Default for Fairness {
    fn default() -> Self {
        Fairness {
            max_sessions_per_client: 32,
            requests_per_second: 50.0,
        }
    }
}

/// How much of a stream is kept for `Last-Event-ID` replay.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Replay {
    pub(crate) events: usize,
    pub(crate) bytes: usize,
}

impl EdgeConfig {
    pub(crate) fn replay(&self) -> Replay {
        Replay {
            events: self.replay_buffer.max(1),
            bytes: self.replay_buffer_bytes.max(1),
        }
    }
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            request_timeout: Duration::from_secs(60),
            session_idle_timeout: Duration::from_secs(30 * 60),
            max_body_bytes: 4 * 1024 * 1024,
            sse_retry: Duration::from_secs(1),
            sse_keepalive: Duration::from_secs(15),
            replay_buffer: 256,
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            auth: None,
            extra_routes: None,
            fairness: Fairness::default(),
            replay_buffer_bytes: 8 << 20,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            http2_keepalive_interval: Duration::from_secs(30),
            http2_keepalive_timeout: Duration::from_secs(20),
            http2_max_concurrent_streams: 100,
            max_connections: 10_000,
            max_connections_per_peer: 256,
            tracing: false,
        }
    }
}
