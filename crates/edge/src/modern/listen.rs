//! `subscriptions/listen`: a long-lived POST whose SSE stream carries the
//! list changes (and resource updates) the client opted in to.
//!
//! The edge keeps these streams itself. Each process of a modern pool has
//! one `subscriptions/listen` of Berth's own open (a bridged server announces
//! changes unprompted), and the pool broadcasts what they announce; every
//! client stream takes what its filter admits, tagged with its own
//! subscription id. A client that stops reading falls behind by a bounded
//! number of announcements and then misses some (logged), never holding
//! memory for them. The stream is acknowledged first, is not bound by
//! `request_timeout`, and ends with the closing result when the server
//! stops or the gateway shuts down.

use std::sync::Arc;

use axum::body::Body;
use berth_fleet::{Announcement, Discovery};
use berth_wire::modern::{meta, tag_subscription};
use berth_wire::{Message, SseEvent};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use super::backend::Ready;
use super::relay::sse_response;
use crate::error::EdgeError;
use crate::gateway::{Gateway, Server};
use crate::reply::Reply;

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
    fn honoured(&self, discovery: &Discovery) -> Filter {
        Filter {
            tools_list_changed: self.tools_list_changed
                && discovery.announces("tools", "listChanged"),
            prompts_list_changed: self.prompts_list_changed
                && discovery.announces("prompts", "listChanged"),
            resources_list_changed: self.resources_list_changed
                && discovery.announces("resources", "listChanged"),
            // Resource updates need a subscription per URI on every process,
            // which Berth does not hold yet: not honoured, and so not promised.
            resource_subscriptions: Vec::new(),
        }
    }

    fn admits(&self, msg: &Message) -> bool {
        match msg.method() {
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

/// Opens a listen stream for the request `msg`.
pub(crate) async fn open(
    gw: &Arc<Gateway>,
    server: &Arc<Server>,
    ready: &Ready,
    msg: &Message,
    params: Option<&RawValue>,
) -> Reply {
    let raw_id = msg.raw_id().unwrap_or_else(|| "null".into());
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
    let honoured = requested.honoured(&discovery);
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
    let keepalive = gw.config().sse_keepalive;
    let stream = Stream {
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
    Ok(sse_response(Body::from_stream(body)))
}

struct Stream {
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
                    Ok(msg) if self.filter.admits(&msg) => {
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
