//! The issuer's signing keys: fetched, cached by `kid`, refetched when a
//! token names a key not seen yet (the issuer rotated), at most once per
//! `min_refresh` so a flood of made-up `kid`s cannot turn Berth into a
//! request amplifier against the issuer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

/// Algorithms a token may be signed with: asymmetric only. `none` never
/// parses, and HMAC is excluded so a public key can't be used as a secret.
pub const ALLOWED_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// One verification key and what it may verify.
pub struct VerifyKey {
    pub key: DecodingKey,
    /// The JWK's own `alg`, when it pins one.
    pub alg: Option<Algorithm>,
    /// Algorithms of the key's type (an EC key never verifies RS256).
    pub family: &'static [Algorithm],
}

impl VerifyKey {
    fn from_jwk(jwk: &Jwk) -> Option<VerifyKey> {
        if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
            return None;
        }
        let family: &'static [Algorithm] = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => &ALLOWED_ALGORITHMS[..6],
            AlgorithmParameters::EllipticCurve(_) => &[Algorithm::ES256, Algorithm::ES384],
            AlgorithmParameters::OctetKeyPair(_) => &[Algorithm::EdDSA],
            // Symmetric keys are never accepted from a key set.
            _ => return None,
        };
        let alg = jwk
            .common
            .key_algorithm
            .and_then(|a| a.to_string().parse::<Algorithm>().ok());
        Some(VerifyKey {
            key: DecodingKey::from_jwk(jwk).ok()?,
            alg,
            family,
        })
    }

    /// Whether this key may verify a token whose header says `alg`.
    pub fn admits(&self, alg: Algorithm) -> bool {
        self.family.contains(&alg) && self.alg.is_none_or(|a| a == alg)
    }
}

/// Why no key was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// The issuer does not publish this key (or not any more).
    Unknown(String),
    /// The key set could not be fetched.
    Unavailable(String),
}

/// Where verification keys come from.
pub enum KeySource {
    /// A fixed set: Berth's own built-in issuer.
    Static(HashMap<String, Arc<VerifyKey>>),
    /// An external issuer's JWKS, over HTTP.
    Remote(RemoteJwks),
}

impl KeySource {
    pub fn from_set(set: &JwkSet) -> KeySource {
        KeySource::Static(index(set))
    }

    /// Keys of the issuer at `issuer`, from `jwks_uri` or, without one,
    /// from the issuer's RFC 8414 / OpenID discovery document.
    pub fn remote(
        issuer: &str,
        jwks_uri: Option<String>,
        min_refresh: Duration,
        max_age: Duration,
    ) -> KeySource {
        KeySource::Remote(RemoteJwks {
            issuer: issuer.trim_end_matches('/').to_string(),
            jwks_uri: Mutex::new(jwks_uri),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            keys: RwLock::new(Keys::default()),
            refresh: tokio::sync::Mutex::new(None),
            min_refresh,
            max_age,
            fetches: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The key for a token's `kid` and `alg`.
    pub async fn key_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<VerifyKey>, KeyError> {
        match self {
            KeySource::Static(keys) => {
                pick(keys, kid, alg).ok_or_else(|| KeyError::Unknown(describe(kid)))
            }
            KeySource::Remote(remote) => remote.key_for(kid, alg).await,
        }
    }
}

fn describe(kid: Option<&str>) -> String {
    match kid {
        Some(kid) => format!("the issuer publishes no key with kid {kid:?}"),
        None => "the token names no kid and no single key of its type matches".into(),
    }
}

fn index(set: &JwkSet) -> HashMap<String, Arc<VerifyKey>> {
    let mut keys = HashMap::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        if let Some(key) = VerifyKey::from_jwk(jwk) {
            let kid = jwk.common.key_id.clone().unwrap_or_else(|| format!("#{i}"));
            keys.insert(kid, Arc::new(key));
        }
    }
    keys
}

/// By `kid`; without one, the only key that admits `alg`.
fn pick(
    keys: &HashMap<String, Arc<VerifyKey>>,
    kid: Option<&str>,
    alg: Algorithm,
) -> Option<Arc<VerifyKey>> {
    match kid {
        Some(kid) => keys.get(kid).filter(|k| k.admits(alg)).cloned(),
        None => {
            let mut fitting = keys.values().filter(|k| k.admits(alg));
            let only = fitting.next()?;
            fitting.next().is_none().then(|| only.clone())
        }
    }
}

#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, Arc<VerifyKey>>,
    fetched: Option<Instant>,
}

/// An issuer's JWKS, cached.
pub struct RemoteJwks {
    issuer: String,
    jwks_uri: Mutex<Option<String>>,
    http: reqwest::Client,
    keys: RwLock<Keys>,
    /// Held while fetching; remembers when the last attempt started.
    refresh: tokio::sync::Mutex<Option<Instant>>,
    min_refresh: Duration,
    max_age: Duration,
    fetches: std::sync::atomic::AtomicU64,
}

impl RemoteJwks {
    async fn key_for(&self, kid: Option<&str>, alg: Algorithm) -> Result<Arc<VerifyKey>, KeyError> {
        let (found, fresh) = {
            let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
            let fresh = keys.fetched.is_some_and(|t| t.elapsed() < self.max_age);
            (pick(&keys.by_kid, kid, alg), fresh)
        };
        if let Some(key) = &found
            && fresh
        {
            return Ok(key.clone());
        }
        // Unknown kid, or keys past their age: refetch, unless one was tried
        // moments ago.
        let mut last = self.refresh.lock().await;
        let recent = last.is_some_and(|t| t.elapsed() < self.min_refresh);
        if !recent {
            *last = Some(Instant::now());
            match self.fetch().await {
                Ok(set) => {
                    let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
                    keys.by_kid = index(&set);
                    keys.fetched = Some(Instant::now());
                    tracing::debug!(issuer = %self.issuer, keys = keys.by_kid.len(), "fetched the issuer's signing keys");
                }
                Err(why) => {
                    tracing::warn!(issuer = %self.issuer, "cannot fetch the issuer's signing keys: {why}");
                    let empty = self
                        .keys
                        .read()
                        .unwrap_or_else(|e| e.into_inner())
                        .fetched
                        .is_none();
                    if empty {
                        return Err(KeyError::Unavailable(why));
                    }
                    // Known keys stay usable while the issuer is unreachable.
                    if let Some(key) = found {
                        return Ok(key);
                    }
                }
            }
        }
        drop(last);
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        if keys.fetched.is_none() {
            return Err(KeyError::Unavailable(
                "the issuer's signing keys could not be fetched yet".into(),
            ));
        }
        pick(&keys.by_kid, kid, alg).ok_or_else(|| KeyError::Unknown(describe(kid)))
    }

    /// How many times the key set was requested from the issuer.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn fetch(&self) -> Result<JwkSet, String> {
        let uri = self
            .jwks_uri
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let uri = match uri {
            Some(uri) => uri,
            None => {
                let uri = self.discover().await?;
                *self.jwks_uri.lock().unwrap_or_else(|e| e.into_inner()) = Some(uri.clone());
                uri
            }
        };
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let response = self
            .http
            .get(&uri)
            .send()
            .await
            .map_err(|e| format!("GET {uri}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("GET {uri}: HTTP {}", response.status()));
        }
        response
            .json::<JwkSet>()
            .await
            .map_err(|e| format!("GET {uri}: not a JWK set ({e})"))
    }

    /// `jwks_uri` from the issuer's metadata: RFC 8414 first, then OpenID
    /// Connect discovery.
    async fn discover(&self) -> Result<String, String> {
        #[derive(Deserialize)]
        struct Metadata {
            issuer: Option<String>,
            jwks_uri: Option<String>,
        }
        let mut tried = Vec::new();
        for url in discovery_urls(&self.issuer) {
            let Ok(response) = self.http.get(&url).send().await else {
                tried.push(format!("{url} (unreachable)"));
                continue;
            };
            if !response.status().is_success() {
                tried.push(format!("{url} (HTTP {})", response.status()));
                continue;
            }
            match response.json::<Metadata>().await {
                Ok(Metadata {
                    issuer,
                    jwks_uri: Some(jwks),
                }) => {
                    if issuer.is_some_and(|i| i.trim_end_matches('/') != self.issuer) {
                        return Err(format!(
                            "{url} describes another issuer than {}",
                            self.issuer
                        ));
                    }
                    return Ok(jwks);
                }
                _ => tried.push(format!("{url} (no jwks_uri)")),
            }
        }
        Err(format!(
            "no authorization server metadata with a jwks_uri; tried {}; set auth.jwks_uri",
            tried.join(", ")
        ))
    }
}

/// RFC 8414 §3.1 inserts the well-known segment before the issuer's path;
/// OpenID Connect appends it.
fn discovery_urls(issuer: &str) -> Vec<String> {
    let (origin, path) = match issuer.find("://").map(|i| i + 3) {
        Some(start) => match issuer[start..].find('/') {
            Some(slash) => issuer.split_at(start + slash),
            None => (issuer, ""),
        },
        None => (issuer, ""),
    };
    let mut urls = vec![format!(
        "{origin}/.well-known/oauth-authorization-server{path}"
    )];
    if path.is_empty() {
        urls.push(format!("{origin}/.well-known/openid-configuration"));
    } else {
        urls.push(format!("{origin}/.well-known/openid-configuration{path}"));
        urls.push(format!("{issuer}/.well-known/openid-configuration"));
    }
    urls
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_urls_follow_rfc8414_and_oidc() {
        assert_eq!(
            discovery_urls("https://idp.example.com"),
            [
                "https://idp.example.com/.well-known/oauth-authorization-server",
                "https://idp.example.com/.well-known/openid-configuration"
            ]
        );
        assert_eq!(
            discovery_urls("https://idp.example.com/tenant1"),
            [
                "https://idp.example.com/.well-known/oauth-authorization-server/tenant1",
                "https://idp.example.com/.well-known/openid-configuration/tenant1",
                "https://idp.example.com/tenant1/.well-known/openid-configuration"
            ]
        );
    }

    #[test]
    fn symmetric_keys_are_never_taken_from_a_key_set() {
        let set: JwkSet = serde_json::from_value(serde_json::json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "h"},
        ]}))
        .unwrap();
        assert!(index(&set).is_empty());
    }
}
