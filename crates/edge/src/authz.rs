//! Authentication and authorization at the edge: every request to a server
//! carries a credential checked for that server, sessions belong to whoever
//! opened them, and tool calls need their tools' scopes.
//!
//! Credentials stop here: the `Authorization` header and cookies are removed
//! from the request before any handler sees it, and nothing from the HTTP
//! request reaches a server process except the JSON-RPC body.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_auth::{Authenticator, Denial, Principal, ServerAccess};
use berth_telemetry::{AuthRefusal, Observer as _};
use berth_wire::Message;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::EdgeError;
use crate::gateway::Gateway;
use crate::reply::Refusal;

/// Headers that carry credentials: never passed on, whatever the upstream.
const CREDENTIAL_HEADERS: [&str; 4] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
];

/// Authenticates a request to server `name` (on `/mcp/<name>` and
/// `/sse/<name>`) and hands the [`Principal`] to the handler in the
/// request's extensions; credentials leave the request here. Unknown
/// servers pass (the handler answers 404).
pub(crate) async fn authenticate(
    gw: &Gateway,
    name: &str,
    request: &mut Request,
) -> Result<(), Refusal> {
    let Some(auth) = gw.config().auth.as_ref() else {
        return Ok(());
    };
    let Ok(server) = gw.server(name) else {
        return Ok(());
    };
    let credential = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    match auth.authenticate(name, credential).await {
        Ok(principal) => {
            // A remote server whose credential is an exchange of the
            // caller's token: the token goes to the session's connection,
            // which presents it to the authorization server only.
            let exchange = exchanges_caller_token(&server)
                .then(|| {
                    credential
                        .and_then(|c| std::str::from_utf8(c).ok())
                        .and_then(|c| c.strip_prefix("Bearer ").or(c.strip_prefix("bearer ")))
                        .map(|t| ExchangeToken(t.trim().into()))
                })
                .flatten();
            if let Some(token) = exchange {
                request.extensions_mut().insert(token);
            }
            for h in CREDENTIAL_HEADERS {
                request.headers_mut().remove(h);
            }
            request.extensions_mut().insert(principal);
            Ok(())
        }
        Err(denial) => {
            if let Denial::InvalidToken(why) = &denial {
                tracing::debug!(server = name, "refused a token: {why}");
            }
            gw.telemetry().auth_refused(&AuthRefusal {
                server: name,
                reason: match denial {
                    Denial::Missing => "missing",
                    Denial::InvalidToken(_) => "invalid_token",
                    Denial::InsufficientScope(_) => "insufficient_scope",
                    Denial::Unavailable(_) => "unavailable",
                },
            });
            Err(refuse(auth, name, &denial))
        }
    }
}

/// The caller's access token, kept for a remote server whose downstream
/// credential is an exchange of it (RFC 8693); never sent upstream.
#[derive(Clone)]
pub(crate) struct ExchangeToken(pub Arc<str>);

fn exchanges_caller_token(server: &crate::server::Server) -> bool {
    server
        .spec
        .remote
        .as_ref()
        .and_then(|r| r.auth.as_ref())
        .is_some_and(|a| a.grant == berth_fleet::OAuthGrant::TokenExchange)
}

/// The 401/403/503 for `denial`, with its bearer challenge.
pub(crate) fn refuse(auth: &Authenticator, server: &str, denial: &Denial) -> Refusal {
    let error = match denial {
        Denial::Missing | Denial::InvalidToken(_) => EdgeError::Unauthorized(denial.message()),
        Denial::InsufficientScope(_) => EdgeError::Forbidden(denial.message()),
        Denial::Unavailable(_) => EdgeError::Unavailable(denial.message()),
    };
    error
        .refusal(None)
        .with_challenge(auth.challenge(server, denial))
}

/// What a principal may do with one message, decided before it is sent.
pub(crate) enum Verdict {
    Allow,
    /// Allowed; the answer (a `tools/list` result) must be filtered.
    Filter(ToolFilter),
}

/// Checks a request against the server's tool scopes.
pub(crate) fn authorize(
    gw: &Gateway,
    server: &str,
    principal: Option<&Arc<Principal>>,
    msg: &Message,
) -> Result<Verdict, Refusal> {
    let (Some(auth), Some(principal)) = (&gw.config().auth, principal) else {
        return Ok(Verdict::Allow);
    };
    let access = auth.access(server);
    if access.tool_scopes.is_empty() && access.tool_prefix_scopes.is_empty() {
        return Ok(Verdict::Allow);
    }
    match msg.method() {
        Some("tools/call") => {
            let tool = msg.tool().unwrap_or_default();
            let missing = access.missing_for_tool(principal, tool);
            if missing.is_empty() {
                Ok(Verdict::Allow)
            } else {
                let denial = Denial::InsufficientScope(missing);
                let refusal =
                    EdgeError::Forbidden(format!("{} (to call tool `{tool}`)", denial.message()))
                        .refusal(msg.raw_id().as_deref())
                        .with_challenge(auth.challenge(server, &denial));
                Err(refusal)
            }
        }
        Some("tools/list") if access.hides_tools_from(principal) => {
            Ok(Verdict::Filter(ToolFilter {
                access,
                principal: principal.clone(),
            }))
        }
        _ => Ok(Verdict::Allow),
    }
}

/// Removes from a `tools/list` result the tools a principal may not call.
#[derive(Clone)]
pub(crate) struct ToolFilter {
    access: Arc<ServerAccess>,
    principal: Arc<Principal>,
}

impl ToolFilter {
    /// The answer without the hidden tools; unchanged (same bytes) when
    /// nothing is hidden or it is not a tools result.
    pub(crate) fn apply(&self, answer: Bytes) -> Bytes {
        self.filtered(&answer).unwrap_or(answer)
    }

    fn filtered(&self, answer: &[u8]) -> Option<Bytes> {
        type Object<'a> = serde_json::Map<String, serde_json::Value>;
        #[derive(Deserialize)]
        struct Named<'a> {
            #[serde(borrow)]
            name: &'a str,
        }
        let mut envelope: Object = serde_json::from_slice(answer).ok()?;
        let result = envelope.get_mut("result")?.as_object_mut()?;
        let tools: Vec<Box<RawValue>> =
            serde_json::from_value(result.get("tools")?.clone()).ok()?;
        let before = tools.len();
        let kept: Vec<Box<RawValue>> = tools
            .into_iter()
            .filter(|tool| {
                serde_json::from_str::<Named>(tool.get()).is_ok_and(|t| {
                    self.access
                        .missing_for_tool(&self.principal, t.name)
                        .is_empty()
                })
            })
            .collect();
        if kept.len() == before {
            return None;
        }
        result.insert("tools".into(), serde_json::to_value(kept).ok()?);
        serde_json::to_vec(&envelope).ok().map(Bytes::from)
    }
}

/// RFC 9728 metadata of one server.
pub(crate) async fn server_metadata(
    State(gw): State<Arc<Gateway>>,
    Path(name): Path<String>,
) -> Response {
    let Some(auth) = &gw.config().auth else {
        return not_protected();
    };
    if gw.server(&name).is_err() {
        return EdgeError::NotFound(format!("Not Found: no server named `{name}`"))
            .refusal(None)
            .into_response();
    }
    metadata_response(auth.resource_metadata(Some(&name)))
}

/// RFC 9728 metadata of the gateway as a whole.
pub(crate) async fn gateway_metadata(State(gw): State<Arc<Gateway>>) -> Response {
    match &gw.config().auth {
        Some(auth) => metadata_response(auth.resource_metadata(None)),
        None => not_protected(),
    }
}

fn not_protected() -> Response {
    EdgeError::NotFound(
        "Not Found: this gateway does not require authorization (auth.mode = \"none\")".into(),
    )
    .refusal(None)
    .into_response()
}

fn metadata_response(doc: serde_json::Value) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            // Public documents, fetched by browser-based clients too.
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        doc.to_string(),
    )
        .into_response()
}
