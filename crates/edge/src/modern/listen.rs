//! `subscriptions/listen`: a long-lived POST whose SSE stream carries the
//! list changes (and resource updates) the client opted in to.
//!
//! The edge keeps these streams itself. Each process of a modern pool has
//! one `subscriptions/listen` of Berth's own open for list changes (a bridged
//! server announces them unprompted), and the pool broadcasts what they
//! announce; every client stream takes what its filter admits, tagged with
//! its own subscription id. Resource URIs are per client: Berth opens a
//! listen for them on every process and takes only the updates tagged with
//! those requests' ids. A client that stops reading falls behind by a bounded
//! number of announcements and then misses some (logged), never holding
//! memory for them. The stream is acknowledged first, is not bound by
//! `request_timeout`, and ends with the closing result when the server
//! stops or the gateway shuts down.

use std::sync::Arc;

use axum::body::Body;
use berth_fleet::{Announcement, Discovery};
use std::collections::HashSet;

use berth_wire::modern::{meta, subscription_id, tag_subscription, updated_uri};
use berth_wire::{IdKey, Message, SseEvent};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use super::relay::InFlight;
use crate::error::EdgeError;
use crate::gateway::Gateway;
use crate::reply::Reply;
use crate::server::Server;
use crate::stateless::Ready;

/// What a client opts in to (`params.notifications`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    tools_list_changed: bool,
    #[serde(default)]
    prompts_list_changed: bool,
    #[serde(default)]
    resources_list_changed: bool,
    #[serde(default)]
    resource_subscriptions: Vec<String>,
}

impl Filter {
    /// The part of `self` this server can deliver.
    fn honoured(&self, discovery: &Discovery, bridged: bool) -> Filter {
        Filter {
            tools_list_changed: self.tools_list_changed
                && discovery.announces("tools", "listChanged"),
            prompts_list_changed: self.prompts_list_changed
                && discovery.announces("prompts", "listChanged"),
            resources_list_changed: self.resources_list_changed
                && discovery.announces("resources", "listChanged"),
            // A modern server's processes are each asked to listen for these
            // URIs; a bridged server would need resources/subscribe on each
            // of its processes, which Berth does not do yet: not promised.
            resource_subscriptions: if bridged || !discovery.announces("resources", "subscribe") {
                Vec::new()
            } else {
                self.resource_subscriptions.clone()
            },
        }
    }

    /// Whether an announcement belongs on this stream; resource updates
    /// only from the listen requests opened for it (`own`).
    fn admits(&self, msg: &Message, own: &HashSet<IdKey>) -> bool {
        match msg.method() {
            Some("notifications/resources/updated") => {
                subscription_id(&msg.bytes).is_some_and(|id| own.contains(&id))
                    && updated_uri(&msg.bytes)
                        .is_some_and(|uri| self.resource_subscriptions.contains(&uri))
            }
            Some("notifications/tools/list_changed") => self.tools_list_changed,
            Some("notifications/prompts/list_changed") => self.prompts_list_changed,
            Some("notifications/resources/list_changed") => self.resources_list_changed,
            _ => false,
        }
    }

    fn to_json(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        for (key, on) in [
            ("toolsListChanged", self.tools_list_changed),
            ("promptsListChanged", self.prompts_list_changed),
            ("resourcesListChanged", self.resources_list_changed),
        ] {
            if on {
                out.insert(key.into(), true.into());
            }
        }
        if !self.resource_subscriptions.is_empty() {
            out.insert(
                "resourceSubscriptions".into(),
                self.resource_subscriptions.clone().into(),
            );
        }
        out.into()
    }
}

/// Opens a listen stream for the request whose id is written `raw_id`.
pub(crate) async fn open(
    gw: &Arc<Gateway>,
    server: &Arc<Server>,
    ready: &Ready,
    raw_id: String,
    params: Option<&RawValue>,
) -> Reply {
    #[derive(Deserialize)]
    struct Params {
        notifications: Option<Filter>,
    }
    let requested = params
        .and_then(|p| serde_json::from_str::<Params>(p.get()).ok())
        .and_then(|p| p.notifications)
        .ok_or_else(|| {
            EdgeError::InvalidParams(
                "Invalid params: subscriptions/listen needs params.notifications (the notification types to receive)".into(),
            )
            .refusal(Some(&raw_id))
        })?;
    let discovery = ready.discovery().await?;
    let honoured = requested.honoured(&discovery, ready.bridged());
    let announcements = ready.pool.announcements().ok_or_else(|| {
        EdgeError::Unavailable(format!(
            "Service Unavailable: server `{}` has no stateless pool to listen to",
            server.spec.name
        ))
        .refusal(Some(&raw_id))
    })?;
    let ack = serde_json::json!({
        "jsonrpc": "2.0",
        "method": "notifications/subscriptions/acknowledged",
        "params": {
            "notifications": honoured.to_json(),
            "_meta": { meta::SUBSCRIPTION_ID: serde_json::from_str::<serde_json::Value>(&raw_id).unwrap_or_default() },
        }
    });
    let closing = Bytes::from(format!(
        r#"{{"jsonrpc":"2.0","id":{raw_id},"result":{{"resultType":"complete","_meta":{{"{}":{raw_id}}}}}}}"#,
        meta::SUBSCRIPTION_ID
    ));
    let watches = watch_resources(ready, &honoured.resource_subscriptions).await;
    let keepalive = gw.config().sse_keepalive;
    let stream = Stream {
        own: watches.iter().map(|w| w.id().clone()).collect(),
        _watches: watches,
        ack: Some(Bytes::from(ack.to_string())),
        closing: Some(closing),
        filter: honoured,
        raw_id,
        announcements,
        server: server.clone(),
        stopping: gw.stopping(),
        tick: tokio::time::interval_at(Instant::now() + keepalive, keepalive),
    };
    let body = futures::stream::unfold(stream, |mut stream| async move {
        let event = stream.next().await?;
        Some((Ok::<_, std::convert::Infallible>(event), stream))
    });
    Ok(crate::reply::sse(Body::from_stream(body)))
}

/// Opens, on every process of a modern pool, a `subscriptions/listen` for
/// `uris` on the client's behalf (a change may be seen by any of them), and
/// waits (a few seconds at most) until each process has acknowledged it, so
/// the client's acknowledgement means the watch is in place. Dropping the
/// returned requests cancels them on their processes.
async fn watch_resources(ready: &Ready, uris: &[String]) -> Vec<InFlight> {
    if uris.is_empty() {
        return Vec::new();
    }
    // A cold pool gets its processes first.
    drop(ready.pool.acquire().await);
    let params = berth_fleet::own_params(serde_json::json!({
        "notifications": { "resourceSubscriptions": uris }
    }));
    let body = serde_json::json!({"jsonrpc": "2.0", "id": "berth:watch", "method": "subscriptions/listen", "params": params});
    let Ok(msg) = Message::parse(Bytes::from(body.to_string())) else {
        return Vec::new();
    };
    let Some(mut announcements) = ready.pool.announcements() else {
        return Vec::new();
    };
    let watches: Vec<InFlight> = ready
        .pool
        .lease_each()
        .into_iter()
        .filter_map(|lease| {
            let exchange = lease.call(&msg).ok()?;
            Some(InFlight::new(exchange, lease))
        })
        .collect();
    let mut waiting: HashSet<IdKey> = watches.iter().map(|w| w.id().clone()).collect();
    let acknowledged = async {
        while !waiting.is_empty() {
            match announcements.recv().await {
                Ok(m) if m.method() == Some("notifications/subscriptions/acknowledged") => {
                    if let Some(id) = subscription_id(&m.bytes) {
                        waiting.remove(&id);
                    }
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            }
        }
    };
    if tokio::time::timeout(WATCH_ACK_TIMEOUT, acknowledged)
        .await
        .is_err()
    {
        tracing::warn!(server = %ready.pool.spec().name, "a process did not acknowledge a resource watch in time; updates it sees may be missed");
    }
    watches
}

/// How long a new listen stream waits for the processes to acknowledge its resource watches.
const WATCH_ACK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

struct Stream {
    /// The listen requests Berth holds for this stream's resource URIs, and their ids.
    _watches: Vec<InFlight>,
    own: HashSet<IdKey>,
    ack: Option<Bytes>,
    /// Sent once, when the stream ends from Berth's side.
    closing: Option<Bytes>,
    filter: Filter,
    raw_id: String,
    announcements: tokio::sync::broadcast::Receiver<Announcement>,
    server: Arc<Server>,
    stopping: tokio_util::sync::CancellationToken,
    tick: tokio::time::Interval,
}

impl Stream {
    async fn next(&mut self) -> Option<Bytes> {
        if let Some(ack) = self.ack.take() {
            return Some(SseEvent::frame(None, None, &ack));
        }
        loop {
            self.closing.as_ref()?;
            tokio::select! {
                _ = self.stopping.cancelled() => return self.close(),
                _ = self.server.stateless.stopped.cancelled() => return self.close(),
                _ = self.tick.tick() => return Some(Bytes::from_static(b": keep-alive\n\n")),
                got = self.announcements.recv() => match got {
                    Ok(msg) if self.filter.admits(&msg, &self.own) => {
                        if let Some(tagged) = tag_subscription(&msg.bytes, &self.raw_id) {
                            return Some(SseEvent::frame(None, None, &tagged));
                        }
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(server = %self.server.spec.name, subscription = %self.raw_id, missed, "a subscriptions/listen client is not reading; it missed announcements");
                    }
                    Err(RecvError::Closed) => return self.close(),
                },
            }
        }
    }

    fn close(&mut self) -> Option<Bytes> {
        self.closing
            .take()
            .map(|closing| SseEvent::frame(None, None, &closing))
    }
}
