//! Authorization server metadata (RFC 8414) and the JWK set.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::Issuer;

/// The metadata document. Served at both well-known paths; the MCP Python
/// SDK tries `oauth-authorization-server` first and `openid-configuration`
/// second, and checks that `issuer` is the URL it discovered from.
pub(crate) fn document(iss: &Issuer) -> Value {
    json!({
        "issuer": iss.issuer,
        "authorization_endpoint": iss.endpoint("/oauth/authorize"),
        "token_endpoint": iss.endpoint("/oauth/token"),
        "registration_endpoint": iss.endpoint("/oauth/register"),
        "jwks_uri": iss.endpoint("/oauth/jwks"),
        "scopes_supported": iss.scopes_supported,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": [
            "authorization_code",
            "refresh_token",
            "client_credentials",
            crate::TOKEN_EXCHANGE_GRANT,
        ],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none", "client_secret_post", "client_secret_basic"],
        // RFC 9207: authorization responses carry `iss`.
        "authorization_response_iss_parameter_supported": true,
    })
}

pub(crate) async fn metadata(State(iss): State<Arc<Issuer>>) -> Response {
    let mut resp = Json(document(&iss)).into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    resp
}

pub(crate) async fn jwks(State(iss): State<Arc<Issuer>>) -> Response {
    let mut resp = Json(iss.jwks()).into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    resp
}
