//! JWT access tokens (RFC 9068 shape): signature, issuer, lifetime, audience.

use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Validation, decode, decode_header};
use serde::Deserialize;

use crate::Denial;
use crate::jwks::{ALLOWED_ALGORITHMS, KeyError, KeySource};

/// The claims Berth reads; the signature covers all of them.
#[derive(Debug, Deserialize)]
pub(crate) struct Claims {
    /// Required; optional here so its absence is reported as such.
    #[serde(default)]
    pub iss: Option<String>,
    #[serde(default)]
    pub sub: Option<String>,
    #[serde(default)]
    pub exp: Option<u64>,
    /// Space-separated (RFC 8693 / RFC 9068).
    #[serde(default)]
    pub scope: Option<String>,
    /// An array, as some issuers (Azure AD, Okta) send it.
    #[serde(default)]
    pub scp: Option<ScopeList>,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub azp: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum ScopeList {
    Many(Vec<String>),
    One(String),
}

impl Claims {
    pub fn scopes(&self) -> Vec<String> {
        let mut scopes: Vec<String> = self
            .scope
            .as_deref()
            .unwrap_or_default()
            .split_ascii_whitespace()
            .map(str::to_owned)
            .collect();
        match &self.scp {
            Some(ScopeList::Many(list)) => scopes.extend(list.iter().cloned()),
            Some(ScopeList::One(s)) => scopes.extend(s.split_ascii_whitespace().map(str::to_owned)),
            None => {}
        }
        scopes
    }
}

/// The `alg` of a header jsonwebtoken would not parse (`none`, say).
fn header_alg(token: &str) -> Option<String> {
    use base64::Engine;
    #[derive(Deserialize)]
    struct Header {
        alg: String,
    }
    let segment = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice::<Header>(&bytes).ok().map(|h| h.alg)
}

pub(crate) struct JwtVerifier {
    pub keys: KeySource,
    pub issuer: String,
    pub skew: Duration,
}

impl JwtVerifier {
    /// The token's claims, if it is valid for `audience`.
    pub async fn verify(&self, token: &str, audience: &str) -> Result<Claims, Denial> {
        let invalid = |why: &str| Denial::InvalidToken(why.to_string());
        let header = decode_header(token).map_err(|_| match header_alg(token) {
            Some(alg) => invalid(&format!(
                "signing algorithm {alg:?} is not accepted (alg none and HMAC are refused)"
            )),
            None => invalid("malformed JWT"),
        })?;
        if !ALLOWED_ALGORITHMS.contains(&header.alg) {
            return Err(invalid(&format!(
                "signing algorithm {:?} is not accepted (alg none and HMAC are refused)",
                header.alg
            )));
        }
        let key = self
            .keys
            .key_for(header.kid.as_deref(), header.alg)
            .await
            .map_err(|e| match e {
                KeyError::Unknown(why) => Denial::InvalidToken(why),
                KeyError::Unavailable(why) => Denial::Unavailable(why),
            })?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = self.skew.as_secs();
        validation.validate_nbf = true;
        decode::<Claims>(token, &key.key, &validation)
            .map(|data| data.claims)
            .map_err(|e| {
                invalid(match e.kind() {
                    ErrorKind::ExpiredSignature => "the token has expired",
                    ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)",
                    ErrorKind::InvalidAudience => {
                        "the token was issued for another resource (aud is not this server's URL)"
                    }
                    ErrorKind::InvalidIssuer => "the token was issued by another issuer",
                    ErrorKind::InvalidSignature => "bad signature",
                    ErrorKind::Base64(_) | ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
                        "malformed JWT (a part is not valid base64url JSON)"
                    }
                    ErrorKind::MissingRequiredClaim(_) => "the token lacks exp, iss or aud",
                    ErrorKind::InvalidAlgorithm => "the key does not match the token's algorithm",
                    _ => "the token cannot be verified",
                })
            })
    }
}
