//! Berth's built-in OAuth 2.1 authorization server for one node.
//!
//! It issues the access tokens that MCP clients present to the gateway's
//! servers at `<public_url>/mcp/<name>`:
//!
//! - metadata (RFC 8414) at `/.well-known/oauth-authorization-server`
//!   (and, same document, `/.well-known/openid-configuration`);
//! - open dynamic client registration (RFC 7591) at `/oauth/register`, for
//!   `authorization_code` + `refresh_token` clients only;
//! - the authorization code grant with PKCE S256 (RFC 7636) and resource
//!   indicators (RFC 8707) at `/oauth/authorize`, where the operator approves
//!   each request on a consent page by typing the approval secret;
//! - the token endpoint at `/oauth/token` (authorization code, rotating
//!   refresh tokens, and, for operator-created clients, `client_credentials`
//!   and RFC 8693 token exchange: see below);
//! - the public signing key at `/oauth/jwks`.
//!
//! Access tokens are ES256 JWTs (`typ: at+jwt`, RFC 9068 style) whose `aud`
//! is the single resource they were granted for. The gateway validates them
//! with [`Issuer::jwks`] and [`AccessTokenClaims`], without HTTP.
//!
//! Token exchange (RFC 8693, `grant_type` [`TOKEN_EXCHANGE_GRANT`]): an
//! operator-created client (the gateway, calling a remote upstream on a
//! caller's behalf) presents an access token this issuer signed as
//! `subject_token` and gets one for another audience: one of the configured
//! resources or of the exchange audiences ([`IssuerConfig::exchange_audiences`],
//! [`Issuer::set_exchange_audiences`]). The new token keeps the subject's
//! `sub`, at most its scopes and its expiry, and names the exchanging client
//! in `act` ([`Actor`]).
//!
//! State: the signing key, registered clients and refresh tokens (as
//! digests, in a journal) live under the data dir, so clients keep their
//! refresh tokens across a restart; authorization codes (valid for a minute)
//! and pending consent forms live in memory only.

mod authorize;
mod clients;
mod consent;
mod error;
mod exchange;
mod keys;
mod metadata;
mod refresh;
mod register;
mod token;
mod util;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

pub use error::IssuerError;

/// Default lifetime of an access token.
pub const DEFAULT_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(60 * 60);
/// Default lifetime of a refresh token (renewed on every rotation).
pub const DEFAULT_REFRESH_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// `sub` of tokens from consent-approved (authorization code) grants: the
/// node has one principal, the operator who typed the approval secret.
pub const OPERATOR_SUBJECT: &str = "berth-operator";
/// JOSE `typ` header of access tokens (RFC 9068).
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";
/// `grant_type` of token exchange (RFC 8693 §2.1).
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// Token type URI of an access token (RFC 8693 §3): accepted as
/// `subject_token_type` and `requested_token_type`, answered as
/// `issued_token_type`.
pub const TOKEN_TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
/// Token type URI of a JWT (RFC 8693 §3): accepted as `subject_token_type`
/// (this issuer's access tokens are JWTs).
pub const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

/// Largest accepted request body (forms and registration JSON).
const MAX_BODY: usize = 64 * 1024;

/// How the issuer is set up; see [`Issuer::open`].
#[derive(Clone)]
pub struct IssuerConfig {
    /// The issuer identifier and base of every endpoint URL, e.g.
    /// `http://127.0.0.1:8080`: the gateway's `public_url`. A trailing `/`
    /// is dropped.
    pub issuer: String,
    /// Resource URLs tokens may be bound to (each server's
    /// `<public_url>/mcp/<name>`); a request for any other `resource` is
    /// refused with `invalid_target`. Replace with [`Issuer::set_resources`].
    pub resources: Vec<String>,
    /// Scopes clients may ask for (advertised as `scopes_supported`).
    pub scopes_supported: Vec<String>,
    /// Lifetime of access tokens; default [`DEFAULT_ACCESS_TOKEN_TTL`].
    pub access_token_ttl: Duration,
    /// Lifetime of refresh tokens; default [`DEFAULT_REFRESH_TOKEN_TTL`].
    pub refresh_token_ttl: Duration,
    /// What the operator types on the consent page to approve a request (the
    /// gateway passes its admin token). Must not be empty.
    pub approval_secret: String,
    /// Audiences, besides [`IssuerConfig::resources`], that token exchange
    /// may mint tokens for: the URLs of remote upstreams that accept this
    /// issuer's tokens. Any other `audience`/`resource` is refused with
    /// `invalid_target`. URLs are compared like resources (RFC 8707
    /// normalisation), other strings exactly; the configured string becomes
    /// `aud`. Replace with [`Issuer::set_exchange_audiences`].
    pub exchange_audiences: Vec<String>,
}

impl IssuerConfig {
    /// A config with default lifetimes and no resources or scopes yet.
    pub fn new(issuer: impl Into<String>, approval_secret: impl Into<String>) -> Self {
        IssuerConfig {
            issuer: issuer.into(),
            resources: Vec::new(),
            scopes_supported: Vec::new(),
            access_token_ttl: DEFAULT_ACCESS_TOKEN_TTL,
            refresh_token_ttl: DEFAULT_REFRESH_TOKEN_TTL,
            approval_secret: approval_secret.into(),
            exchange_audiences: Vec::new(),
        }
    }
}

impl std::fmt::Debug for IssuerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerConfig")
            .field("issuer", &self.issuer)
            .field("resources", &self.resources)
            .field("scopes_supported", &self.scopes_supported)
            .field("access_token_ttl", &self.access_token_ttl)
            .field("refresh_token_ttl", &self.refresh_token_ttl)
            .field("approval_secret", &"<redacted>")
            .field("exchange_audiences", &self.exchange_audiences)
            .finish()
    }
}

/// What an access token grants; input to [`Issuer::mint`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// `sub`: [`OPERATOR_SUBJECT`] for consent-approved grants, the client id
    /// for `client_credentials`.
    pub subject: String,
    /// `client_id` claim: the client the token was issued to.
    pub client_id: String,
    /// `aud`: the one resource URL the token is for.
    pub audience: String,
    /// `scope` claim (space-joined).
    pub scopes: Vec<String>,
    /// Lifetime (`exp - iat`); at least one second is used.
    pub ttl: Duration,
}

/// A confidential client's credentials, as returned once by
/// [`Issuer::create_client`].
#[derive(Clone, PartialEq, Eq)]
pub struct ClientCredentials {
    /// The client id (the name it was created with).
    pub client_id: String,
    /// The secret; only its SHA-256 is stored, so it cannot be shown again.
    pub client_secret: String,
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .finish()
    }
}

/// The claims of every access token this issuer signs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    /// The issuer identifier.
    pub iss: String,
    /// [`OPERATOR_SUBJECT`] or, for `client_credentials`, the client id.
    pub sub: String,
    /// The single resource URL the token is bound to.
    pub aud: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Not before, seconds since the epoch (= `iat`).
    pub nbf: u64,
    /// Random token id.
    pub jti: String,
    /// Granted scopes, space-separated (may be empty).
    pub scope: String,
    /// The client the token was issued to.
    pub client_id: String,
    /// Who acts on `sub`'s behalf (RFC 8693 §4.1): present only on tokens
    /// from token exchange.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Actor>,
}

/// The `act` claim (RFC 8693 §4.1): the party acting for the subject, and
/// inside it, the one that acted before it when a token was exchanged again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The acting party: the client id of the client that exchanged the token.
    pub sub: String,
    /// The prior actor, if the subject token was itself an exchanged token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Box<Actor>>,
}

impl Actor {
    /// How many actors the chain holds (this one included).
    pub(crate) fn depth(&self) -> usize {
        let mut n = 1;
        let mut cur = self;
        while let Some(prior) = &cur.act {
            n += 1;
            cur = prior;
        }
        n
    }
}

/// One resource: its comparison form and the URL as configured (used as `aud`).
#[derive(Clone, Debug)]
struct Resource {
    canonical: String,
    configured: String,
}

/// The authorization server. Cheap to share: handlers hold an `Arc`.
pub struct Issuer {
    issuer: String,
    scopes_supported: Vec<String>,
    access_token_ttl: Duration,
    refresh_token_ttl: Duration,
    approval_secret: String,
    resources: RwLock<Vec<Resource>>,
    /// Extra token-exchange audiences; `canonical` is the URL comparison form
    /// or, for a non-URL audience, the string itself.
    exchange_audiences: RwLock<Vec<Resource>>,
    key: keys::SigningKey,
    clients: clients::ClientStore,
    /// Seals consent forms (see `consent`); lives only in memory.
    consent_key: Vec<u8>,
    codes: Mutex<authorize::Codes>,
    refresh: Mutex<refresh::RefreshTokens>,
    approval_failures: Mutex<authorize::FailureWindows>,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("issuer", &self.issuer)
            .field("kid", &self.key.kid())
            .finish_non_exhaustive()
    }
}

impl Issuer {
    /// Opens the issuer whose key and clients live under `data_dir`.
    ///
    /// Creates `data_dir` (mode 0700) and the signing key
    /// `<data_dir>/issuer-key.pem` (mode 0600) if absent, and refuses a key
    /// file that group or others can read. Loads
    /// `<data_dir>/oauth-clients.json` if present. Both the gateway and the
    /// CLI may open the same data dir at once.
    pub fn open(data_dir: &Path, config: IssuerConfig) -> Result<Arc<Issuer>, IssuerError> {
        let issuer = config.issuer.trim_end_matches('/').to_owned();
        match url::Url::parse(&issuer) {
            Ok(u)
                if matches!(u.scheme(), "http" | "https")
                    && u.host().is_some()
                    && u.query().is_none()
                    && u.fragment().is_none() => {}
            _ => {
                return Err(IssuerError::Config(format!(
                    "issuer `{}` must be an http(s) URL without query or fragment",
                    config.issuer
                )));
            }
        }
        if config.approval_secret.is_empty() {
            return Err(IssuerError::Config(
                "approval_secret must not be empty: anyone could approve consent requests".into(),
            ));
        }
        let key = keys::SigningKey::load_or_create(data_dir)?;
        let clients = clients::ClientStore::open(data_dir)?;
        let mut scopes_supported: Vec<String> = Vec::new();
        for s in config.scopes_supported {
            if s.is_empty() || s.contains(' ') {
                return Err(IssuerError::Config(format!(
                    "scope `{s}` must be one non-empty word"
                )));
            }
            if !scopes_supported.contains(&s) {
                scopes_supported.push(s);
            }
        }
        Ok(Arc::new(Issuer {
            issuer,
            scopes_supported,
            access_token_ttl: config.access_token_ttl,
            refresh_token_ttl: config.refresh_token_ttl,
            approval_secret: config.approval_secret,
            resources: RwLock::new(to_resources(config.resources)),
            exchange_audiences: RwLock::new(to_exchange_audiences(config.exchange_audiences)),
            key,
            clients,
            consent_key: util::random_bytes(32),
            codes: Mutex::new(authorize::Codes::default()),
            refresh: Mutex::new(refresh::RefreshTokens::new(data_dir)),
            approval_failures: Mutex::new(authorize::FailureWindows::default()),
        }))
    }

    /// Replaces the resources tokens may be bound to (on config reload).
    /// Outstanding codes and refresh tokens for a removed resource stop
    /// working; access tokens already issued stay valid until they expire
    /// unless the gateway stops accepting their audience.
    pub fn set_resources(&self, resources: Vec<String>) {
        let resources = to_resources(resources);
        *self.resources.write().unwrap_or_else(|p| p.into_inner()) = resources;
    }

    /// Replaces the extra audiences token exchange may mint tokens for (see
    /// [`IssuerConfig::exchange_audiences`]), e.g. on config reload. Tokens
    /// already issued for a removed audience stay valid until they expire.
    pub fn set_exchange_audiences(&self, audiences: Vec<String>) {
        let audiences = to_exchange_audiences(audiences);
        *self
            .exchange_audiences
            .write()
            .unwrap_or_else(|p| p.into_inner()) = audiences;
    }

    /// Adds one audience token exchange may mint tokens for (no-op if it is
    /// already allowed; an empty string is ignored).
    pub fn allow_exchange_audience(&self, audience: impl Into<String>) {
        let Some(new) = to_exchange_audiences(vec![audience.into()]).pop() else {
            return;
        };
        let mut list = self
            .exchange_audiences
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if !list.iter().any(|a| a.canonical == new.canonical) {
            list.push(new);
        }
    }

    /// The router serving every endpoint, at absolute paths (the gateway
    /// merges it into its own):
    /// `GET /.well-known/oauth-authorization-server` (and
    /// `/.well-known/openid-configuration`, same document),
    /// `POST /oauth/register`, `GET`+`POST /oauth/authorize`,
    /// `POST /oauth/token`, `GET /oauth/jwks`. Bodies are capped at 64 KiB.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route(
                "/.well-known/oauth-authorization-server",
                get(metadata::metadata),
            )
            .route("/.well-known/openid-configuration", get(metadata::metadata))
            .route("/oauth/register", post(register::register))
            .route(
                "/oauth/authorize",
                get(authorize::authorize_get).post(authorize::authorize_post),
            )
            .route("/oauth/token", post(token::token))
            .route("/oauth/jwks", get(metadata::jwks))
            .layer(DefaultBodyLimit::max(MAX_BODY))
            .with_state(Arc::clone(self))
    }

    /// The public signing keys as a JWK set (the gateway's token validator
    /// uses these directly, without HTTP). Every key has `kid`, `alg: ES256`
    /// and `use: sig`.
    pub fn jwks(&self) -> jsonwebtoken::jwk::JwkSet {
        self.key.jwks()
    }

    /// Mints an access token for `grant` (used by `berth token create` and
    /// by the token endpoint). The audience is not checked against the
    /// configured resources: that is the caller's business.
    pub fn mint(&self, grant: &Grant) -> Result<String, IssuerError> {
        self.sign_access_token(grant, None, None)
            .map(|(token, _)| token)
    }

    /// Signs an access token for `grant` with `act`, expiring after
    /// `grant.ttl` but no later than `not_after` (seconds since the epoch).
    /// Returns it with its remaining lifetime in seconds (0 if `not_after`
    /// has passed).
    pub(crate) fn sign_access_token(
        &self,
        grant: &Grant,
        act: Option<Actor>,
        not_after: Option<u64>,
    ) -> Result<(String, u64), IssuerError> {
        let now = util::unix_now();
        let mut exp = now.saturating_add(grant.ttl.as_secs().max(1));
        if let Some(limit) = not_after {
            exp = exp.min(limit);
        }
        let claims = AccessTokenClaims {
            iss: self.issuer.clone(),
            sub: grant.subject.clone(),
            aud: grant.audience.clone(),
            exp,
            iat: now,
            nbf: now,
            jti: util::random_token(16),
            scope: grant.scopes.join(" "),
            client_id: grant.client_id.clone(),
            act,
        };
        Ok((self.key.sign(&claims)?, exp.saturating_sub(now)))
    }

    /// Creates, or replaces (new secret), the confidential client `name`,
    /// allowed the `client_credentials` grant with `scopes` (empty = every
    /// supported scope) and the token-exchange grant ([`TOKEN_EXCHANGE_GRANT`];
    /// there `scopes` do not apply: an exchanged token carries at most the
    /// subject token's scopes). Returns its secret, which is shown once: only a
    /// SHA-256 hash is stored. A running gateway picks the change up on the
    /// client's next request.
    ///
    /// `name` becomes the client id: 1–64 characters of `A-Z a-z 0-9 . _ -`.
    /// A dynamically registered client with that id is never replaced.
    pub fn create_client(
        &self,
        name: &str,
        scopes: &[String],
    ) -> Result<ClientCredentials, IssuerError> {
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !valid_name {
            return Err(IssuerError::Invalid(format!(
                "client name `{name}` must be 1-64 characters of A-Z a-z 0-9 . _ -"
            )));
        }
        let mut granted: Vec<String> = Vec::new();
        for s in scopes {
            if !self.scopes_supported.contains(s) {
                return Err(IssuerError::Invalid(format!(
                    "scope `{s}` is not supported (supported: {})",
                    self.scopes_supported.join(" ")
                )));
            }
            if !granted.contains(s) {
                granted.push(s.clone());
            }
        }
        if scopes.is_empty() {
            granted = self.scopes_supported.clone();
        }
        let secret = util::random_token(32);
        let client = clients::Client {
            client_id: name.to_owned(),
            client_secret_sha256: Some(util::sha256_hex(secret.as_bytes())),
            token_endpoint_auth_method: "client_secret_basic".into(),
            redirect_uris: Vec::new(),
            grant_types: vec!["client_credentials".into(), TOKEN_EXCHANGE_GRANT.into()],
            response_types: Vec::new(),
            scope: Some(granted.join(" ")),
            client_name: Some(name.to_owned()),
            client_uri: None,
            software_id: None,
            software_version: None,
            client_id_issued_at: util::unix_now(),
            origin: clients::Origin::Operator,
        };
        self.clients.upsert(client, |existing| {
            if existing.origin == clients::Origin::Operator {
                Ok(())
            } else {
                Err(IssuerError::Invalid(format!(
                    "client id `{name}` belongs to a dynamically registered client; choose another name"
                )))
            }
        })?;
        tracing::info!(client_id = %name, "created operator OAuth client");
        Ok(ClientCredentials {
            client_id: name.to_owned(),
            client_secret: secret,
        })
    }

    /// The issuer identifier (no trailing slash).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The configured resource matching `requested` (RFC 8707 comparison),
    /// as configured: that string becomes `aud`.
    fn resolve_resource(&self, requested: &str) -> Option<String> {
        let canonical = util::canonical_resource(requested)?;
        self.resources
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|r| r.canonical == canonical)
            .map(|r| r.configured.clone())
    }

    /// What token exchange may bind a token to for `requested`: a configured
    /// resource or an exchange audience, as configured (that becomes `aud`).
    fn resolve_exchange_target(&self, requested: &str) -> Option<String> {
        if let Some(r) = self.resolve_resource(requested) {
            return Some(r);
        }
        let key = exchange_key(requested);
        self.exchange_audiences
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|a| a.canonical == key)
            .map(|a| a.configured.clone())
    }

    /// The allowed exchange audiences as configured, for error messages.
    fn exchange_audience_list(&self) -> Vec<String> {
        self.exchange_audiences
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|a| a.configured.clone())
            .collect()
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }
}

fn to_resources(list: Vec<String>) -> Vec<Resource> {
    list.into_iter()
        .filter_map(|configured| match util::canonical_resource(&configured) {
            Some(canonical) => Some(Resource {
                canonical,
                configured,
            }),
            None => {
                tracing::warn!(resource = %configured, "ignoring resource that is not an absolute http(s) URL");
                None
            }
        })
        .collect()
}

/// How an exchange audience is compared: URLs in their RFC 8707 form (so the
/// comparison agrees with resources), anything else as given.
fn exchange_key(audience: &str) -> String {
    util::canonical_resource(audience).unwrap_or_else(|| audience.to_owned())
}

fn to_exchange_audiences(list: Vec<String>) -> Vec<Resource> {
    let mut out: Vec<Resource> = Vec::new();
    for configured in list {
        if configured.trim().is_empty() {
            tracing::warn!("ignoring empty token-exchange audience");
            continue;
        }
        let canonical = exchange_key(&configured);
        if !out.iter().any(|a| a.canonical == canonical) {
            out.push(Resource {
                canonical,
                configured,
            });
        }
    }
    out
}
