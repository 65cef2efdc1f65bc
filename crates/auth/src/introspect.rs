//! RFC 7662 introspection of opaque access tokens.

use serde::Deserialize;

use crate::{Denial, Introspection};

#[derive(Debug, Deserialize)]
pub(crate) struct Introspected {
    pub active: bool,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub sub: Option<String>,
    #[serde(default)]
    pub aud: Option<Audience>,
    #[serde(default)]
    pub iss: Option<String>,
    #[serde(default)]
    pub exp: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, resource: &str) -> bool {
        match self {
            Audience::One(a) => a == resource,
            Audience::Many(all) => all.iter().any(|a| a == resource),
        }
    }
}

pub(crate) struct Introspector {
    pub config: Introspection,
    pub http: reqwest::Client,
}

impl Introspector {
    pub async fn introspect(
        &self,
        token: &str,
        audience: &str,
        issuer: &str,
    ) -> Result<Introspected, Denial> {
        let endpoint = &self.config.endpoint;
        let response = self
            .http
            .post(endpoint)
            .basic_auth(&self.config.client_id, Some(&self.config.client_secret))
            .form(&[("token", token), ("token_type_hint", "access_token")])
            .send()
            .await
            .map_err(|e| Denial::Unavailable(format!("introspection at {endpoint}: {e}")))?;
        if !response.status().is_success() {
            return Err(Denial::Unavailable(format!(
                "introspection at {endpoint}: HTTP {}",
                response.status()
            )));
        }
        let answer: Introspected = response.json().await.map_err(|e| {
            Denial::Unavailable(format!("introspection at {endpoint}: bad answer ({e})"))
        })?;
        if !answer.active {
            return Err(Denial::InvalidToken(
                "the issuer reports the token inactive (expired or revoked)".into(),
            ));
        }
        if !answer.aud.as_ref().is_some_and(|a| a.contains(audience)) {
            return Err(Denial::InvalidToken(
                "the token was issued for another resource (aud is not this server's URL)".into(),
            ));
        }
        if answer.iss.as_deref().is_some_and(|i| i != issuer) {
            return Err(Denial::InvalidToken(
                "the token was issued by another issuer".into(),
            ));
        }
        Ok(answer)
    }
}
