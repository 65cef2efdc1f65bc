//! How a gateway authenticates its callers.

use std::time::Duration;

use crate::ApiKey;

/// Which credentials are accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Anyone who can reach the listener (loopback only).
    None,
    /// `Authorization: Bearer <key>` with a configured API key.
    ApiKey,
    /// OAuth 2.1 access tokens from `issuer` (or Berth's built-in issuer).
    OAuth,
}

/// RFC 7662 token introspection, for opaque (non-JWT) access tokens.
#[derive(Debug, Clone)]
pub struct Introspection {
    pub endpoint: String,
    pub client_id: String,
    pub client_secret: String,
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub mode: AuthMode,
    /// The authorization server named in resource metadata; tokens must carry
    /// it as `iss`.
    pub issuer: String,
    /// Scopes advertised in resource metadata.
    pub scopes_supported: Vec<String>,
    /// Tolerated clock difference for `exp` and `nbf`.
    pub clock_skew: Duration,
    /// An unknown `kid` refetches the issuer's keys at most this often.
    pub jwks_min_refresh: Duration,
    /// Keys are refetched at least this often even when every `kid` is known.
    pub jwks_max_age: Duration,
    pub introspection: Option<Introspection>,
    pub api_keys: Vec<ApiKey>,
    /// A verified token is remembered this long (never past its `exp`), so
    /// a session's later requests skip signature verification.
    pub cache_ttl: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            mode: AuthMode::None,
            issuer: String::new(),
            scopes_supported: Vec::new(),
            clock_skew: Duration::from_secs(30),
            jwks_min_refresh: Duration::from_secs(10),
            jwks_max_age: Duration::from_secs(3600),
            introspection: None,
            api_keys: Vec::new(),
            cache_ttl: Duration::from_secs(60),
        }
    }
}
