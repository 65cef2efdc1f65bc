//! Downstream credentials Berth obtains itself for a remote server: OAuth
//! 2.1 client credentials, or an RFC 8693 exchange of the caller's
//! validated access token for one meant for the upstream. The caller's own
//! token never travels upstream; at most it is the subject of an exchange
//! at the authorization server.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::SecretResolver;

/// An OAuth client Berth acts as toward an upstream's authorization server
/// (`[servers.NAME.oauth]` in the configuration, read as is).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthClient {
    /// `client_credentials` or `token_exchange`.
    pub grant: OAuthGrant,
    /// The authorization server's token endpoint.
    pub token_url: String,
    pub client_id: String,
    /// May hold `${secret:NAME}`.
    pub client_secret: String,
    pub scope: Option<String>,
    /// The audience asked for; token exchange defaults to the upstream's URL.
    pub audience: Option<String>,
    /// RFC 8707 resource indicator, when the server wants one.
    pub resource: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OAuthGrant {
    /// One token for Berth itself, whoever calls.
    ClientCredentials,
    /// A token per caller: the caller's access token exchanged (RFC 8693).
    TokenExchange,
}

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// The access token the caller of a connection's session presented (kept
/// only for an exchange; set by the edge on every request).
#[derive(Clone, Default)]
pub struct CallerToken(Arc<Mutex<Option<Arc<str>>>>);

impl CallerToken {
    pub fn set(&self, token: &str) {
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if held.as_deref() != Some(token) {
            *held = Some(token.into());
        }
    }

    fn get(&self) -> Option<Arc<str>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl std::fmt::Debug for CallerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallerToken")
    }
}

struct Held {
    token: String,
    expires: Instant,
    /// The caller token it was exchanged for (token exchange only).
    subject: Option<Arc<str>>,
}

pub(crate) struct Credentials {
    client: Option<OAuthClient>,
    http: reqwest::Client,
    caller: CallerToken,
    held: tokio::sync::Mutex<Option<Held>>,
}

/// Tokens are renewed this long before they expire.
const RENEW_BEFORE: Duration = Duration::from_secs(30);

impl Credentials {
    pub(crate) fn new(
        client: Option<OAuthClient>,
        http: reqwest::Client,
        caller: CallerToken,
    ) -> Credentials {
        Credentials {
            client,
            http,
            caller,
            held: tokio::sync::Mutex::new(None),
        }
    }

    pub(crate) fn is_configured(&self) -> bool {
        self.client.is_some()
    }

    /// Drops the held token (the upstream refused it).
    pub(crate) fn forget(&self) {
        if let Ok(mut held) = self.held.try_lock() {
            *held = None;
        }
    }

    /// The token to present upstream, fetched or renewed when needed.
    pub(crate) async fn bearer(
        &self,
        secrets: Option<&SecretResolver>,
        upstream_url: &str,
    ) -> Result<Option<String>, String> {
        let Some(client) = &self.client else {
            return Ok(None);
        };
        let subject = match client.grant {
            OAuthGrant::ClientCredentials => None,
            OAuthGrant::TokenExchange => Some(self.caller.get().ok_or(
                "this server's credential is an exchange of the caller's access token, and the caller presented none (token exchange needs [auth] mode = \"oauth\")",
            )?),
        };
        let mut held = self.held.lock().await;
        if let Some(h) = held.as_ref()
            && h.subject == subject
            && h.expires > Instant::now() + RENEW_BEFORE
        {
            return Ok(Some(h.token.clone()));
        }
        let secret = match secrets {
            Some(secrets) => secrets.expand(&client.client_secret)?,
            None => client.client_secret.clone(),
        };
        let mut form: Vec<(&str, String)> = Vec::new();
        match client.grant {
            OAuthGrant::ClientCredentials => {
                form.push(("grant_type", "client_credentials".into()));
                if let Some(audience) = &client.audience {
                    form.push(("audience", audience.clone()));
                }
            }
            OAuthGrant::TokenExchange => {
                form.push(("grant_type", TOKEN_EXCHANGE.into()));
                form.push((
                    "subject_token",
                    subject.as_deref().unwrap_or_default().to_owned(),
                ));
                form.push(("subject_token_type", ACCESS_TOKEN_TYPE.into()));
                form.push((
                    "audience",
                    client
                        .audience
                        .clone()
                        .unwrap_or_else(|| upstream_url.to_owned()),
                ));
            }
        }
        if let Some(scope) = &client.scope {
            form.push(("scope", scope.clone()));
        }
        if let Some(resource) = &client.resource {
            form.push(("resource", resource.clone()));
        }
        let send = self
            .http
            .post(&client.token_url)
            .basic_auth(&client.client_id, Some(&secret))
            .form(&form)
            .send();
        let response = tokio::time::timeout(Duration::from_secs(15), send)
            .await
            .map_err(|_| {
                format!(
                    "the token endpoint {} did not answer within 15s",
                    client.token_url
                )
            })?
            .map_err(|e| format!("cannot reach the token endpoint {}: {e}", client.token_url))?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        if !status.is_success() {
            let error = body
                .get("error")
                .and_then(|v| v.as_str())
                .unwrap_or("no error code");
            let description = body
                .get("error_description")
                .and_then(|v| v.as_str())
                .map(|d| format!(": {d}"))
                .unwrap_or_default();
            return Err(format!(
                "the token endpoint {} refused Berth's {} request (HTTP {}): {error}{description}",
                client.token_url,
                grant_name(client.grant),
                status.as_u16()
            ));
        }
        let token = body
            .get("access_token")
            .and_then(|v| v.as_str())
            .ok_or_else(|| {
                format!(
                    "the token endpoint {} answered without an access_token",
                    client.token_url
                )
            })?
            .to_owned();
        let lifetime = body
            .get("expires_in")
            .and_then(|v| v.as_u64())
            .unwrap_or(300);
        *held = Some(Held {
            token: token.clone(),
            expires: Instant::now() + Duration::from_secs(lifetime),
            subject,
        });
        Ok(Some(token))
    }
}

fn grant_name(grant: OAuthGrant) -> &'static str {
    match grant {
        OAuthGrant::ClientCredentials => "client_credentials",
        OAuthGrant::TokenExchange => "token exchange",
    }
}
