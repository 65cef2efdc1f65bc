//! Wiring the security pieces into a gateway: the authenticator for the
//! configured `[auth]` mode, the built-in issuer when Berth is its own
//! authorization server.

use std::sync::Arc;

use anyhow::Context;
use berth_auth::{AuthConfig, AuthMode, Authenticator, Introspection, KeySource};
use berth_fleet::SecretResolver;
use berth_issuer::{Issuer, IssuerConfig};
use berth_secrets::SecretStore;

use crate::config::{AuthModeConfig, Config};

/// What `[auth]` turns into.
pub struct Security {
    pub auth: Option<Arc<Authenticator>>,
    /// Berth's own authorization server, when `[auth] mode = "oauth"` names no issuer.
    pub issuer: Option<Arc<Issuer>>,
}

/// The canonical base URL: `gateway.public_url`, or the listener's address.
pub fn public_url(config: &Config, listening: std::net::SocketAddr) -> String {
    match &config.gateway.public_url {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => format!("http://{listening}"),
    }
}

pub fn build(
    config: &Config,
    public_url: &str,
    listening: std::net::SocketAddr,
    approval_secret: &str,
    secrets: &SecretResolver,
) -> anyhow::Result<Security> {
    let a = &config.auth;
    if a.mode == AuthModeConfig::None {
        if !listening.ip().is_loopback() {
            anyhow::bail!(
                "auth.mode = \"none\" is allowed only on a loopback listener, and {listening} is not one: set [auth] mode = \"oauth\" or \"api_key\" (see README, Security)"
            );
        }
        tracing::warn!(
            "auth.mode = \"none\": anyone who can reach {listening} can use every server (fine for local use; set [auth] for anything else)"
        );
        return Ok(Security {
            auth: None,
            issuer: None,
        });
    }
    let mut auth_config = AuthConfig {
        mode: match a.mode {
            AuthModeConfig::ApiKey => AuthMode::ApiKey,
            _ => AuthMode::OAuth,
        },
        issuer: a.issuer.clone().unwrap_or_else(|| public_url.to_string()),
        scopes_supported: a.scopes_supported.clone(),
        clock_skew: a.clock_skew,
        jwks_min_refresh: a.jwks_min_refresh,
        jwks_max_age: a.jwks_max_age,
        cache_ttl: a.token_cache,
        ..AuthConfig::default()
    };
    for key in &a.api_keys {
        auth_config.api_keys.push(berth_auth::ApiKey {
            name: key.name.clone(),
            sha256: berth_auth::parse_api_key_digest(&key.hash)
                .context("auth.api_keys: bad hash")?,
            scopes: key.scopes.clone(),
            servers: key.servers.clone(),
        });
    }
    if let Some(i) = &a.introspection {
        let client_secret = secrets
            .expand(&i.client_secret)
            .map_err(|e| anyhow::anyhow!("auth.introspection.client_secret: {e}"))?;
        auth_config.introspection = Some(Introspection {
            endpoint: i.endpoint.clone(),
            client_id: i.client_id.clone(),
            client_secret,
        });
    }
    let mut issuer = None;
    let keys = match (a.mode, &a.issuer) {
        (AuthModeConfig::Oauth, Some(external)) => Some(KeySource::remote(
            external,
            a.jwks_uri.clone(),
            a.jwks_min_refresh,
            a.jwks_max_age,
        )),
        (AuthModeConfig::Oauth, None) => {
            let builtin = Issuer::open(
                &config.gateway.data_dir,
                issuer_config(config, public_url, approval_secret),
            )
            .context("cannot start the built-in authorization server")?;
            let keys = KeySource::from_set(&builtin.jwks());
            issuer = Some(builtin);
            Some(keys)
        }
        _ => None,
    };
    let auth = Arc::new(Authenticator::new(auth_config, public_url, keys));
    auth.set_access(config.server_access());
    Ok(Security {
        auth: Some(auth),
        issuer,
    })
}

/// The built-in issuer's settings for `config`.
/// Remote servers whose credential is an exchange of the caller's token at
/// this issuer: their audiences are what it may mint exchanged tokens for.
pub fn exchange_audiences(config: &Config) -> Vec<String> {
    config
        .servers
        .values()
        .filter_map(|s| {
            let oauth = s.oauth.as_ref()?;
            (oauth.grant == berth_fleet::OAuthGrant::TokenExchange)
                .then(|| oauth.audience.clone().or_else(|| s.url.clone()))
                .flatten()
        })
        .collect()
}

pub fn issuer_config(config: &Config, public_url: &str, approval_secret: &str) -> IssuerConfig {
    let mut issuer = IssuerConfig::new(public_url, approval_secret);
    issuer.resources = resources(config, public_url);
    issuer.exchange_audiences = exchange_audiences(config);
    issuer.access_token_ttl = config.auth.access_token_ttl;
    let mut scopes = config.auth.scopes_supported.clone();
    for access in config.server_access().values() {
        for s in access.all_scopes() {
            if !scopes.contains(&s) {
                scopes.push(s);
            }
        }
    }
    issuer.scopes_supported = scopes;
    issuer
}

/// Every server's resource URL.
pub fn resources(config: &Config, public_url: &str) -> Vec<String> {
    config
        .servers
        .keys()
        .map(|name| format!("{public_url}/mcp/{}", name.0))
        .collect()
}

/// Secrets the configuration refers to that the store does not hold (for
/// `berth check`; the store is only read, never created).
pub fn missing_secrets(config: &Config) -> Vec<String> {
    let dir = &config.gateway.data_dir;
    let store = dir
        .join("secrets.json")
        .exists()
        .then(|| SecretStore::open(dir));
    let mut missing = Vec::new();
    for (name, server) in &config.servers {
        let texts = server
            .env
            .values()
            .chain(server.args.iter())
            .chain(server.headers.values())
            .chain(server.oauth.iter().map(|o| &o.client_secret));
        for reference in texts.flat_map(|t| berth_secrets::references(t)) {
            // A shared value, or at least one principal's own.
            let found = match &store {
                Some(Ok(store)) => {
                    matches!(store.get(reference), Ok(Some(_)))
                        || store.entries().is_ok_and(|e| {
                            e.iter()
                                .any(|e| e.name == reference && e.principal.is_some())
                        })
                }
                _ => false,
            };
            if !found {
                missing.push(format!(
                    "servers.{}: secret `{reference}` is not in the secrets store in {}; add it with `berth secret set {reference}` before the server starts",
                    name.0,
                    dir.display()
                ));
            }
        }
    }
    missing
}
