//! From an `Authorization` header to a [`Principal`], for one server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::introspect::Introspector;
use crate::jwt::JwtVerifier;
use crate::{ApiKey, AuthConfig, AuthMode, Denial, KeySource, Principal, ServerAccess};

/// Verified credentials remembered at once; past this the cache is pruned.
const CACHE_ENTRIES: usize = 16_384;

/// Authenticates requests for every server of one gateway.
pub struct Authenticator {
    config: AuthConfig,
    /// The gateway's canonical base URL, without a trailing slash.
    public_url: String,
    jwt: Option<JwtVerifier>,
    introspector: Option<Introspector>,
    api_keys: HashMap<[u8; 32], ApiKey>,
    access: RwLock<HashMap<String, Arc<ServerAccess>>>,
    cache: Mutex<HashMap<[u8; 32], Cached>>,
}

struct Cached {
    principal: Arc<Principal>,
    /// Remembered until then (the token's `exp`, or `cache_ttl`).
    until: Instant,
}

impl Authenticator {
    /// `keys` verifies JWTs (OAuth mode); `public_url` makes resource URLs.
    pub fn new(config: AuthConfig, public_url: &str, keys: Option<KeySource>) -> Authenticator {
        let jwt = keys.map(|keys| JwtVerifier {
            keys,
            issuer: config.issuer.clone(),
            skew: config.clock_skew,
        });
        let introspector = config.introspection.clone().map(|config| Introspector {
            config,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
        });
        let api_keys = config
            .api_keys
            .iter()
            .map(|k| (k.sha256, k.clone()))
            .collect();
        Authenticator {
            public_url: public_url.trim_end_matches('/').to_string(),
            jwt,
            introspector,
            api_keys,
            config,
            access: RwLock::new(HashMap::new()),
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn mode(&self) -> AuthMode {
        self.config.mode
    }

    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// The canonical URL of server `name`: the audience its tokens carry.
    pub fn resource(&self, name: &str) -> String {
        format!("{}/mcp/{name}", self.public_url)
    }

    /// Where the Protected Resource Metadata of `server` (or of the gateway) is.
    pub fn metadata_url(&self, server: Option<&str>) -> String {
        match server {
            Some(name) => format!(
                "{}/.well-known/oauth-protected-resource/mcp/{name}",
                self.public_url
            ),
            None => format!("{}/.well-known/oauth-protected-resource", self.public_url),
        }
    }

    /// Replaces every server's authorization rules (at start and on reload).
    pub fn set_access(&self, access: HashMap<String, ServerAccess>) {
        let access = access.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
        *self.access.write().unwrap_or_else(|e| e.into_inner()) = access;
    }

    pub fn access(&self, server: &str) -> Arc<ServerAccess> {
        self.access
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(server)
            .cloned()
            .unwrap_or_default()
    }

    /// The RFC 9728 document for `server`, or for the gateway as a whole.
    pub fn resource_metadata(&self, server: Option<&str>) -> serde_json::Value {
        let (resource, scopes) = match server {
            Some(name) => {
                let mut scopes = self.config.scopes_supported.clone();
                for s in self.access(name).all_scopes() {
                    if !scopes.contains(&s) {
                        scopes.push(s);
                    }
                }
                (self.resource(name), scopes)
            }
            None => (
                self.public_url.clone(),
                self.config.scopes_supported.clone(),
            ),
        };
        let mut doc = json!({
            "resource": resource,
            "bearer_methods_supported": ["header"],
            "scopes_supported": scopes,
        });
        if self.config.mode == AuthMode::OAuth {
            doc["authorization_servers"] = json!([self.config.issuer]);
        }
        if let Some(name) = server {
            doc["resource_name"] = json!(format!("MCP server {name} (Berth)"));
        }
        doc
    }

    /// The status and `WWW-Authenticate` value refusing a request to `server`.
    pub fn challenge(&self, server: &str, denial: &Denial) -> Option<String> {
        let scopes = match denial {
            Denial::InsufficientScope(needed) => {
                let mut all = self.access(server).required_scopes.clone();
                all.extend(
                    needed
                        .iter()
                        .filter(|s| !all.contains(s))
                        .cloned()
                        .collect::<Vec<_>>(),
                );
                all
            }
            _ => {
                let required = self.access(server).required_scopes.clone();
                if required.is_empty() {
                    self.config.scopes_supported.clone()
                } else {
                    required
                }
            }
        };
        denial.www_authenticate(&self.metadata_url(Some(server)), &scopes)
    }

    /// Who sent a request to `server` with this `Authorization` header, if
    /// they may use the server at all.
    pub async fn authenticate(
        &self,
        server: &str,
        authorization: Option<&[u8]>,
    ) -> Result<Arc<Principal>, Denial> {
        let token = bearer(authorization)?;
        let principal = self.verify(server, token).await?;
        let required = &self.access(server).required_scopes;
        if !principal.has_all(required) {
            return Err(Denial::InsufficientScope(principal.missing(required)));
        }
        Ok(principal)
    }

    async fn verify(&self, server: &str, token: &str) -> Result<Arc<Principal>, Denial> {
        match self.config.mode {
            AuthMode::None => Ok(Arc::new(Principal {
                id: "anonymous".into(),
                subject: "anonymous".into(),
                client_id: None,
                scopes: Vec::new(),
            })),
            AuthMode::ApiKey => self.api_key(server, token),
            AuthMode::OAuth => {
                let resource = self.resource(server);
                let key = cache_key(&resource, token);
                if let Some(hit) = self.cached(&key) {
                    return Ok(hit);
                }
                let (principal, exp) = self.oauth(&resource, token).await?;
                self.remember(key, &principal, exp);
                Ok(principal)
            }
        }
    }

    fn api_key(&self, server: &str, token: &str) -> Result<Arc<Principal>, Denial> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // The map finds a candidate; the comparison that decides is constant-time.
        let key = self
            .api_keys
            .get(&digest)
            .filter(|k| bool::from(k.sha256.ct_eq(&digest)))
            .ok_or_else(|| Denial::InvalidToken("unknown API key".into()))?;
        if !key.servers.is_empty() && !key.servers.iter().any(|s| s == server) {
            return Err(Denial::InvalidToken(format!(
                "API key {:?} is not allowed on server {server:?}",
                key.name
            )));
        }
        Ok(Arc::new(Principal {
            id: format!("key:{}", key.name).into(),
            subject: key.name.clone(),
            client_id: None,
            scopes: key.scopes.clone(),
        }))
    }

    async fn oauth(&self, resource: &str, token: &str) -> Result<(Arc<Principal>, u64), Denial> {
        let looks_like_jwt = token.bytes().filter(|&b| b == b'.').count() == 2;
        if looks_like_jwt && let Some(jwt) = &self.jwt {
            let claims = jwt.verify(token, resource).await?;
            let client = claims.client_id.clone().or(claims.azp.clone());
            let subject = claims.sub.clone().or(client.clone()).unwrap_or_default();
            let principal = Principal {
                id: principal_id(
                    claims.iss.as_deref().unwrap_or_default(),
                    &subject,
                    client.as_deref(),
                ),
                scopes: claims.scopes(),
                subject,
                client_id: client,
            };
            return Ok((Arc::new(principal), claims.exp.unwrap_or(0)));
        }
        let Some(introspector) = &self.introspector else {
            return Err(Denial::InvalidToken("not a JWT access token".into()));
        };
        let answer = introspector
            .introspect(token, resource, &self.config.issuer)
            .await?;
        let subject = answer
            .sub
            .clone()
            .or(answer.client_id.clone())
            .unwrap_or_default();
        let issuer = answer.iss.as_deref().unwrap_or(&self.config.issuer);
        let principal = Principal {
            id: principal_id(issuer, &subject, answer.client_id.as_deref()),
            scopes: answer
                .scope
                .as_deref()
                .unwrap_or_default()
                .split_ascii_whitespace()
                .map(str::to_owned)
                .collect(),
            subject,
            client_id: answer.client_id,
        };
        Ok((Arc::new(principal), answer.exp.unwrap_or(0)))
    }

    fn cached(&self, key: &[u8; 32]) -> Option<Arc<Principal>> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let hit = cache.get(key)?;
        (hit.until > Instant::now()).then(|| hit.principal.clone())
    }

    fn remember(&self, key: [u8; 32], principal: &Arc<Principal>, exp: u64) {
        let now_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let left = Duration::from_secs(exp.saturating_sub(now_unix));
        let ttl = self.config.cache_ttl.min(left);
        if ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_ENTRIES {
            cache.retain(|_, c| c.until > now);
            if cache.len() >= CACHE_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(
            key,
            Cached {
                principal: principal.clone(),
                until: now + ttl,
            },
        );
    }
}

/// The credential of `Authorization: Bearer <token>`.
fn bearer(header: Option<&[u8]>) -> Result<&str, Denial> {
    let Some(value) = header else {
        return Err(Denial::Missing);
    };
    let value = std::str::from_utf8(value)
        .map_err(|_| Denial::InvalidToken("the Authorization header is not text".into()))?;
    let value = value.trim();
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Denial::InvalidToken(
            "the Authorization header must use the Bearer scheme".into(),
        ));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(Denial::Missing);
    }
    Ok(token)
}

fn principal_id(issuer: &str, subject: &str, client: Option<&str>) -> Arc<str> {
    format!("{issuer}|{subject}|{}", client.unwrap_or_default()).into()
}

fn cache_key(resource: &str, token: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(resource.as_bytes());
    hasher.update([0]);
    hasher.update(token.as_bytes());
    hasher.finalize().into()
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys' digests or cached principals.
        f.debug_struct("Authenticator")
            .field("mode", &self.config.mode)
            .field("issuer", &self.config.issuer)
            .field("public_url", &self.public_url)
            .field("api_keys", &self.api_keys.len())
            .finish_non_exhaustive()
    }
}
