//! The HTTP+SSE transport of protocol revision 2024-11-05, for old clients.
//!
//! `GET /sse/<name>` opens a session and its one SSE stream; the first event
//! (`endpoint`) names the URL the client POSTs its messages to. Every answer
//! and server message travels on that stream. The session ends when the
//! stream's connection closes.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_wire::{Kind, Message, SseEvent, to_single_line};
use serde::Deserialize;

use crate::authz::ExchangeToken;
use crate::engine::{Calls, call, forward, pump};
use crate::error::EdgeError;
use crate::gateway::Gateway;
use crate::inbound::{Caller, check_content_type, read_body};
use crate::observe;
use crate::reply::{Reply, echo_id};
use crate::session::STANDALONE;
use berth_telemetry::Era;

pub(crate) async fn connect(
    State(gw): State<Arc<Gateway>>,
    Path(name): Path<String>,
    caller: Caller,
    token: Option<Extension<ExchangeToken>>,
) -> Response {
    let caller = caller.map(|Extension(p)| p);
    observe::note(|n| n.era = Era::Legacy);
    let run = async {
        let server = gw.server(&name)?.clone();
        let session = gw.start_session(&server, true, caller).await?;
        if let Some(Extension(token)) = &token {
            session.lease().present_caller_token(&token.0);
        }
        gw.register(&session);
        let endpoint = format!("/sse/{name}/messages?sessionId={}", session.id);
        let first = SseEvent::frame(None, Some("endpoint"), endpoint.as_bytes());
        Reply::Ok(session.sse(STANDALONE, 0, Some(first)))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Deserialize)]
pub(crate) struct SessionQuery {
    #[serde(rename = "sessionId")]
    session_id: Option<String>,
}

pub(crate) async fn message(
    State(gw): State<Arc<Gateway>>,
    Path(name): Path<String>,
    Query(query): Query<SessionQuery>,
    caller: Caller,
    token: Option<Extension<ExchangeToken>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let caller = caller.map(|Extension(p)| p);
    let run = async {
        let server = gw.server(&name)?.clone();
        check_content_type(&headers)?;
        let id = query.session_id.as_deref().unwrap_or_default();
        let session = gw
            .session(id)
            .filter(|s| {
                s.legacy && s.server.spec.name == server.spec.name && s.owned_by(caller.as_deref())
            })
            .ok_or_else(|| {
                gw.process_death(id, &server.spec.name, true, caller.as_deref())
                    .unwrap_or_else(|| {
                        EdgeError::SessionNotFound(
                            "Session not found: unknown or ended sessionId; open a new SSE connection"
                                .into(),
                        )
                    })
                    .refusal(None)
            })?;
        let body = to_single_line(read_body(&headers, body, gw.config().max_body_bytes).await?);
        let msg = Message::parse(body).map_err(|e| EdgeError::from(e).refusal(None))?;
        observe::note_message(&msg);
        session.touch();
        if let Some(Extension(token)) = &token {
            session.lease().present_caller_token(&token.0);
        }
        if msg.kind == Kind::Request && msg.method() == Some("initialize") {
            let hello = session.set_hello(&msg);
            let lease = session.lease();
            if let Some(init) = &lease.init {
                // A pre-initialized process: answer from its initialize result.
                let version = init.negotiate(hello.protocol_version.as_deref());
                let answer = init.response(echo_id(&msg).as_deref().unwrap_or("null"), &version);
                session.push(STANDALONE, &answer, gw.config().replay());
                lease.mark_healthy();
                return Ok((StatusCode::ACCEPTED, "Accepted").into_response());
            }
        }
        if msg.kind == Kind::Request {
            let call = call(&gw, &session, caller.as_ref(), &msg).await?;
            let calls = Calls::new(vec![call], gw.config().request_timeout);
            tokio::spawn(pump(
                session.clone(),
                STANDALONE,
                calls,
                gw.config().replay(),
                false,
            ));
        } else {
            forward(&gw, &session, &msg).await?;
        }
        Ok::<_, crate::reply::Refusal>((StatusCode::ACCEPTED, "Accepted").into_response())
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}
