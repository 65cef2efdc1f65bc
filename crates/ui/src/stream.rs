//! The live parts: the servers' figures every second, and a server's log
//! lines as they come, both over SSE. A stream ends when its session ends
//! (logout, expiry) or the gateway stops.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::Deserialize;

use crate::Ui;
use crate::auth::refuse;
use crate::data;

/// How often `/ui/events` sends the servers' figures.
const TICK: Duration = Duration::from_secs(1);
/// How often an idle log stream checks that its session and the gateway live.
const LOG_CHECK: Duration = Duration::from_secs(5);
/// Lines sent at most per event burst (a log that floods is cut, not queued).
const LOG_BURST: usize = 500;

fn sse(stream: impl Stream<Item = Result<Event, Infallible>> + Send + 'static) -> Response {
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// `GET /ui/events`: `event: servers` with a [`data::Snapshot`] each second.
pub(crate) async fn events(State(ui): State<Arc<Ui>>, headers: HeaderMap) -> Response {
    let session = match ui.data_session(&headers) {
        Ok(s) => s,
        Err(refused) => return refused.into_response(),
    };
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let stream = futures::stream::unfold((ui, tick), move |(ui, mut tick)| {
        let id = session.id.clone();
        async move {
            tick.tick().await;
            if !ui.sessions.alive(&id) {
                return None;
            }
            let gateway = ui.gateway()?;
            let snapshot = data::snapshot(&gateway);
            drop(gateway);
            let json = serde_json::to_string(&snapshot).ok()?;
            Some((Ok(Event::default().event("servers").data(json)), (ui, tick)))
        }
    });
    sse(stream)
}

#[derive(Deserialize)]
pub(crate) struct LogQuery {
    /// The newest line the page already shows.
    #[serde(default)]
    after: u64,
}

/// `GET /ui/servers/{name}/log?after=SEQ`: `event: line` with
/// `{"seq", "text"}` per line newer than `after` (or than `Last-Event-ID`,
/// when the browser reconnects), as the server's log gets them.
pub(crate) async fn log(
    State(ui): State<Arc<Ui>>,
    Path(name): Path<String>,
    Query(query): Query<LogQuery>,
    headers: HeaderMap,
) -> Response {
    let session = match ui.data_session(&headers) {
        Ok(s) => s,
        Err(refused) => return refused.into_response(),
    };
    let Some(server) = ui
        .gateway()
        .and_then(|g| g.servers().into_iter().find(|s| s.spec.name == name))
    else {
        return refuse(StatusCode::NOT_FOUND, &format!("no server named `{name}`"));
    };
    let resumed = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let log = server.log().clone();
    drop(server);
    // Subscribed before reading, so no line falls between.
    let newest = log.subscribe();
    let queue: Vec<(u64, String)> = Vec::new();
    let state = (ui, log, newest, query.after.max(resumed), queue);
    let stream =
        futures::stream::unfold(state, move |(ui, log, mut newest, mut last, mut queue)| {
            let id = session.id.clone();
            async move {
                loop {
                    // The queue is kept newest first: pop gives the oldest.
                    if let Some(line) = queue.pop() {
                        let event = Event::default()
                            .event("line")
                            .id(line.0.to_string())
                            .data(serde_json::json!({ "seq": line.0, "text": line.1 }).to_string());
                        return Some((Ok(event), (ui, log, newest, last, queue)));
                    }
                    let fresh = log.since(last, LOG_BURST);
                    if let Some(newest_line) = fresh.last() {
                        last = newest_line.seq;
                        queue = fresh.iter().rev().map(|l| (l.seq, l.to_string())).collect();
                        continue;
                    }
                    // Woken by each new line; checks now and then that the
                    // session and the gateway are still there.
                    let changed = tokio::time::timeout(LOG_CHECK, newest.changed()).await;
                    if !ui.sessions.alive(&id) || ui.gateway().is_none() {
                        return None;
                    }
                    if let Ok(Err(_)) = changed {
                        return None;
                    }
                }
            }
        });
    sse(stream)
}
