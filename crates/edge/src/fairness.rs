//! Fairness between clients: a request rate and a number of open sessions
//! per server for each client, so one client cannot take every slot of a
//! server or all of the gateway's attention.
//!
//! A client is its principal when the gateway authenticates, otherwise its
//! peer address; loopback peers without authentication are one local user
//! and are not limited.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request};
use berth_auth::Principal;

use crate::error::EdgeError;
use crate::reply::Refusal;

tokio::task_local! {
    /// The client of the request being handled, for the session count
    /// (set by [`for_client`] around the handler, read when a session starts).
    static CLIENT: Option<Arc<str>>;
}

/// The client of the request being handled, if it is limited.
pub(crate) fn current_client() -> Option<Arc<str>> {
    CLIENT.try_with(Clone::clone).ok().flatten()
}

/// Who a request counts against, or `None` for an unlimited local caller.
fn client_of(principal: Option<&Principal>, peer: Option<SocketAddr>) -> Option<Arc<str>> {
    match (principal, peer) {
        (Some(p), _) => Some(p.id.clone()),
        (None, Some(peer)) if !peer.ip().is_loopback() => Some(peer.ip().to_string().into()),
        _ => None,
    }
}

/// Token buckets, one per client, filled at `rate` requests per second (0:
/// no limit).
pub(crate) struct RateLimiter {
    rate: f64,
    buckets: Mutex<HashMap<Arc<str>, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    pub(crate) fn new(requests_per_second: f64) -> RateLimiter {
        RateLimiter {
            rate: requests_per_second,
            buckets: Mutex::default(),
        }
    }

    /// Takes one token for `client`; `Err(wait)` when there is none.
    fn take(&self, client: &Arc<str>) -> Result<(), Duration> {
        let rate = self.rate;
        let burst = rate * 2.0;
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        // Forget clients idle long enough to be full again (bounded memory).
        if buckets.len() > 10_000 {
            buckets.retain(|_, b| now.duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let bucket = buckets.entry(client.clone()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }
}

/// Counts a request (after authentication) against its client's rate:
/// 429 with Retry-After when the client has none left. `Ok` carries who the
/// request is for the session count: run the handler inside [`for_client`].
pub(crate) fn admit(limiter: &RateLimiter, request: &Request) -> Result<Option<Arc<str>>, Refusal> {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let client = client_of(
        request
            .extensions()
            .get::<Arc<Principal>>()
            .map(|p| p.as_ref()),
        peer,
    );
    if let Some(client) = &client
        && limiter.rate > 0.0
        && let Err(wait) = limiter.take(client)
    {
        return Err(EdgeError::too_many(
            format!(
                "Too Many Requests: more than {} requests per second from this client; retry after the time in Retry-After",
                limiter.rate
            ),
            wait,
        ));
    }
    Ok(client)
}

/// Runs `handler` with `client` as the request's client ([`current_client`]).
pub(crate) async fn for_client<F: Future>(client: Option<Arc<str>>, handler: F) -> F::Output {
    CLIENT.scope(client, handler).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_a_burst_then_the_rate() {
        let limiter = RateLimiter::new(5.0);
        let client: Arc<str> = "a".into();
        for _ in 0..10 {
            limiter.take(&client).unwrap();
        }
        let wait = limiter.take(&client).unwrap_err();
        assert!(wait <= Duration::from_millis(200), "{wait:?}");
        let other: Arc<str> = "b".into();
        limiter.take(&other).unwrap();
    }

    #[test]
    fn local_callers_without_a_principal_are_not_limited() {
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let remote: SocketAddr = "10.1.2.3:5000".parse().unwrap();
        assert_eq!(client_of(None, Some(local)), None);
        assert_eq!(client_of(None, Some(remote)).as_deref(), Some("10.1.2.3"));
    }
}
