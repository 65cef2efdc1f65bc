//! The operator's credential commands — `berth key create`, `berth token
//! create`, `berth client create` — and the admin routes of the running
//! gateway's built-in issuer behind the last two.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Json, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use berth_edge::admin_error;
use berth_issuer::{Grant, Issuer};
use serde::{Deserialize, Serialize};

use crate::cli::{AdminArgs, AdminClient};

#[derive(Serialize, Deserialize)]
struct TokenRequest {
    client: String,
    server: String,
    scopes: Vec<String>,
    ttl_secs: u64,
}

#[derive(Serialize, Deserialize)]
struct TokenAnswer {
    access_token: String,
    audience: String,
    expires_in: u64,
}

#[derive(Serialize, Deserialize)]
struct ClientRequest {
    name: String,
    scopes: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct ClientAnswer {
    client_id: String,
    client_secret: String,
    token_endpoint: String,
}

struct IssuerAdmin {
    issuer: Arc<Issuer>,
    public_url: String,
}

/// `POST /v1/tokens` and `POST /v1/clients` on the admin listener (which
/// checks the admin token: see [`berth_edge::admin_router`]).
pub fn issuer_admin_router(issuer: Arc<Issuer>, public_url: String) -> Router {
    Router::new()
        .route("/v1/tokens", post(mint))
        .route("/v1/clients", post(create_client))
        .with_state(Arc::new(IssuerAdmin { issuer, public_url }))
}

async fn mint(State(admin): State<Arc<IssuerAdmin>>, Json(req): Json<TokenRequest>) -> Response {
    let audience = format!("{}/mcp/{}", admin.public_url, req.server);
    let grant = Grant {
        subject: req.client.clone(),
        client_id: req.client,
        audience: audience.clone(),
        scopes: req.scopes,
        ttl: Duration::from_secs(req.ttl_secs.max(1)),
    };
    match admin.issuer.mint(&grant) {
        Ok(access_token) => axum::Json(TokenAnswer {
            access_token,
            audience,
            expires_in: req.ttl_secs,
        })
        .into_response(),
        Err(e) => admin_error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

async fn create_client(
    State(admin): State<Arc<IssuerAdmin>>,
    Json(req): Json<ClientRequest>,
) -> Response {
    match admin.issuer.create_client(&req.name, &req.scopes) {
        Ok(credentials) => axum::Json(ClientAnswer {
            client_id: credentials.client_id.clone(),
            client_secret: credentials.client_secret.clone(),
            token_endpoint: format!("{}/oauth/token", admin.issuer.issuer()),
        })
        .into_response(),
        Err(e) => admin_error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

/// `berth token create`: prints the token alone on stdout (for `$(...)`).
pub async fn token_create(
    args: &AdminArgs,
    client: &str,
    server: &str,
    scopes: &[String],
    ttl: Duration,
) -> anyhow::Result<()> {
    let admin = AdminClient::new(args)?;
    let answer: TokenAnswer = admin
        .post_json(
            "/v1/tokens",
            &TokenRequest {
                client: client.into(),
                server: server.into(),
                scopes: scopes.to_vec(),
                ttl_secs: ttl.as_secs(),
            },
        )
        .await
        .map_err(|e| {
            e.context("token not created (the gateway must run with [auth] mode = \"oauth\" and no external issuer)")
        })?;
    eprintln!(
        "token for {} (client {client}, scopes: {}), valid {}s:",
        answer.audience,
        if scopes.is_empty() {
            "-".to_string()
        } else {
            scopes.join(" ")
        },
        answer.expires_in
    );
    println!("{}", answer.access_token);
    Ok(())
}

/// `berth client create`: a client_credentials client of the built-in issuer.
pub async fn client_create(args: &AdminArgs, name: &str, scopes: &[String]) -> anyhow::Result<()> {
    let admin = AdminClient::new(args)?;
    let answer: ClientAnswer = admin
        .post_json(
            "/v1/clients",
            &ClientRequest {
                name: name.into(),
                scopes: scopes.to_vec(),
            },
        )
        .await?;
    println!("client_id:      {}", answer.client_id);
    println!("client_secret:  {}", answer.client_secret);
    println!("token_endpoint: {}", answer.token_endpoint);
    eprintln!("(the secret is shown once; only its hash is kept)");
    Ok(())
}

/// `berth key create`: a random key and the configuration entry holding its digest.
pub fn key_create(name: &str, scopes: &[String], servers: &[String]) {
    let key = format!("bk_{}", berth_edge::random_token());
    let list = |v: &[String]| {
        v.iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("{key}");
    eprintln!(
        "\nAPI key for {name:?} printed above (shown once). Add to berth.toml:\n\n[[auth.api_keys]]\nname = {name:?}\nhash = \"{}\"\nscopes = [{}]\nservers = [{}]\n",
        berth_auth::hash_api_key(&key),
        list(scopes),
        list(servers)
    );
}
