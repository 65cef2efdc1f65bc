//! Open dynamic client registration (RFC 7591), as MCP clients expect.
//!
//! Anyone may register, so registration only ever yields clients for the
//! authorization code flow, where the operator still approves every grant on
//! the consent page. A `client_credentials` client would get tokens with no
//! human in the loop, so those are made only by the operator
//! (`berth client create` → [`crate::Issuer::create_client`]).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::Issuer;
use crate::clients::{Client, Origin};
use crate::error::{IssuerError, OAuthError};
use crate::util;

const MAX_REDIRECT_URIS: usize = 10;
const MAX_URI_LEN: usize = 2048;
const MAX_TEXT_LEN: usize = 200;

/// The RFC 7591 §2 fields this server acts on; others are ignored.
#[derive(Deserialize)]
struct RegistrationRequest {
    redirect_uris: Option<Vec<String>>,
    token_endpoint_auth_method: Option<String>,
    grant_types: Option<Vec<String>>,
    response_types: Option<Vec<String>>,
    scope: Option<String>,
    client_name: Option<String>,
    client_uri: Option<String>,
    software_id: Option<String>,
    software_version: Option<String>,
}

fn invalid_metadata(d: impl Into<String>) -> OAuthError {
    OAuthError::new("invalid_client_metadata", d)
}

pub(crate) async fn register(State(iss): State<Arc<Issuer>>, body: Bytes) -> Response {
    let req: RegistrationRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return invalid_metadata(format!(
                "the body must be a JSON object of client metadata (RFC 7591): {e}"
            ))
            .into_response();
        }
    };
    let mut client = match validate(&iss, req) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let secret = (client.token_endpoint_auth_method != "none").then(|| util::random_token(32));
    client.client_secret_sha256 = secret.as_ref().map(|s| util::sha256_hex(s.as_bytes()));

    // The clients file is shared with the CLI under a file lock: keep the
    // blocking I/O off the async workers.
    let store = Arc::clone(&iss);
    let to_store = client.clone();
    let stored = tokio::task::spawn_blocking(move || {
        store.clients.upsert(to_store, |_| {
            Err(IssuerError::Invalid("client id collision".into()))
        })
    })
    .await;
    match stored {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::error!(error = %e, "storing dynamically registered OAuth client");
            return OAuthError::server_error("could not store the client registration")
                .into_response();
        }
        Err(e) => {
            tracing::error!(error = %e, "client registration task failed");
            return OAuthError::server_error("could not store the client registration")
                .into_response();
        }
    }
    tracing::info!(
        client_id = %client.client_id,
        client_name = client.client_name.as_deref().unwrap_or(""),
        auth_method = %client.token_endpoint_auth_method,
        "registered OAuth client"
    );

    let mut out = Map::new();
    out.insert("client_id".into(), json!(client.client_id));
    out.insert(
        "client_id_issued_at".into(),
        json!(client.client_id_issued_at),
    );
    if let Some(secret) = secret {
        out.insert("client_secret".into(), json!(secret));
        // 0 = never expires (RFC 7591 §3.2.1).
        out.insert("client_secret_expires_at".into(), json!(0));
    }
    out.insert("redirect_uris".into(), json!(client.redirect_uris));
    out.insert(
        "token_endpoint_auth_method".into(),
        json!(client.token_endpoint_auth_method),
    );
    out.insert("grant_types".into(), json!(client.grant_types));
    out.insert("response_types".into(), json!(client.response_types));
    for (k, v) in [
        ("scope", &client.scope),
        ("client_name", &client.client_name),
        ("client_uri", &client.client_uri),
        ("software_id", &client.software_id),
        ("software_version", &client.software_version),
    ] {
        if let Some(v) = v {
            out.insert(k.into(), json!(v));
        }
    }
    let mut resp = (StatusCode::CREATED, Json(Value::Object(out))).into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

/// Checks the requested metadata and turns it into a client (without secret).
fn validate(iss: &Issuer, req: RegistrationRequest) -> Result<Client, OAuthError> {
    let redirect_uris = req.redirect_uris.unwrap_or_default();
    if redirect_uris.is_empty() {
        return Err(OAuthError::new(
            "invalid_redirect_uri",
            "redirect_uris is required: this server registers authorization_code clients only",
        ));
    }
    if redirect_uris.len() > MAX_REDIRECT_URIS {
        return Err(OAuthError::new(
            "invalid_redirect_uri",
            format!("at most {MAX_REDIRECT_URIS} redirect_uris"),
        ));
    }
    for uri in &redirect_uris {
        if uri.len() > MAX_URI_LEN {
            return Err(OAuthError::new(
                "invalid_redirect_uri",
                "redirect_uri is too long",
            ));
        }
        util::check_redirect_uri(uri).map_err(|e| OAuthError::new("invalid_redirect_uri", e))?;
    }

    // RFC 7591 §2: the default method is client_secret_basic.
    let auth_method = req
        .token_endpoint_auth_method
        .unwrap_or_else(|| "client_secret_basic".into());
    if !matches!(
        auth_method.as_str(),
        "none" | "client_secret_post" | "client_secret_basic"
    ) {
        return Err(invalid_metadata(format!(
            "token_endpoint_auth_method `{auth_method}` is not supported; use none, client_secret_post or client_secret_basic"
        )));
    }

    let mut grant_types: Vec<String> = Vec::new();
    for g in req
        .grant_types
        .unwrap_or_else(|| vec!["authorization_code".into()])
    {
        match g.as_str() {
            "authorization_code" | "refresh_token" => {}
            "client_credentials" => {
                return Err(invalid_metadata(
                    "client_credentials clients cannot self-register: the operator creates them with `berth client create`",
                ));
            }
            other => {
                return Err(invalid_metadata(format!(
                    "grant type `{other}` is not supported; register authorization_code and refresh_token"
                )));
            }
        }
        if !grant_types.contains(&g) {
            grant_types.push(g);
        }
    }
    if !grant_types.iter().any(|g| g == "authorization_code") {
        return Err(invalid_metadata(
            "grant_types must include authorization_code",
        ));
    }

    let response_types = req.response_types.unwrap_or_else(|| vec!["code".into()]);
    if response_types.is_empty() || response_types.iter().any(|r| r != "code") {
        return Err(invalid_metadata("response_types must be [\"code\"]"));
    }

    // Unsupported scopes are dropped (RFC 7591 §2 lets the server narrow the
    // registration); what was kept is returned in the response.
    let scope = match req.scope.as_deref().map(util::split_scopes) {
        None => None,
        Some(asked) if asked.is_empty() => None,
        Some(asked) => {
            let kept: Vec<String> = asked
                .iter()
                .filter(|s| iss.scopes_supported.contains(s))
                .cloned()
                .collect();
            if kept.is_empty() {
                return Err(invalid_metadata(format!(
                    "none of the requested scopes are supported (supported: {})",
                    iss.scopes_supported.join(" ")
                )));
            }
            Some(kept.join(" "))
        }
    };

    for (name, v) in [
        ("client_name", &req.client_name),
        ("software_id", &req.software_id),
        ("software_version", &req.software_version),
    ] {
        if v.as_ref().is_some_and(|v| v.chars().count() > MAX_TEXT_LEN) {
            return Err(invalid_metadata(format!(
                "{name} is longer than {MAX_TEXT_LEN} characters"
            )));
        }
    }
    if req
        .client_uri
        .as_ref()
        .is_some_and(|u| u.len() > MAX_URI_LEN)
    {
        return Err(invalid_metadata("client_uri is too long"));
    }

    Ok(Client {
        client_id: util::random_token(18),
        client_secret_sha256: None,
        token_endpoint_auth_method: auth_method,
        redirect_uris,
        grant_types,
        response_types: vec!["code".into()],
        scope,
        client_name: req.client_name.filter(|n| !n.trim().is_empty()),
        client_uri: req.client_uri,
        software_id: req.software_id,
        software_version: req.software_version,
        client_id_issued_at: util::unix_now(),
        origin: Origin::Dynamic,
    })
}
