//! Errors: [`IssuerError`] for the Rust API, [`OAuthError`] for the wire
//! (RFC 6749 §5.2 / RFC 7591 §3.2.2 JSON error bodies).

use std::path::PathBuf;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// What can go wrong opening the issuer or using its Rust API.
#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    /// A file or directory under the data dir could not be read or written.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "reading".
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The signing key file is readable by group or others.
    #[error(
        "issuer signing key {} is accessible by group/others (mode {mode:04o}); \
         it must be private to the owner: run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    KeyPermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The signing key file exists but does not hold a P-256 PKCS#8 PEM key.
    #[error("issuer signing key {}: {reason}", path.display())]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// Why it was rejected.
        reason: String,
    },
    /// The clients file exists but cannot be parsed.
    #[error("OAuth clients file {}: {reason}", path.display())]
    BadClientsFile {
        /// The clients file.
        path: PathBuf,
        /// Why it was rejected.
        reason: String,
    },
    /// The configuration passed to [`crate::Issuer::open`] is unusable.
    #[error("invalid issuer configuration: {0}")]
    Config(String),
    /// An argument to the Rust API was rejected (e.g. a bad client name).
    #[error("{0}")]
    Invalid(String),
    /// Signing a token failed.
    #[error("signing access token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

impl IssuerError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        IssuerError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// An OAuth protocol error answered as JSON `{"error","error_description"}`.
#[derive(Debug)]
pub(crate) struct OAuthError {
    status: StatusCode,
    code: &'static str,
    description: String,
    /// Add `WWW-Authenticate: Basic` (the client authenticated with HTTP Basic).
    basic_challenge: bool,
}

impl OAuthError {
    pub(crate) fn new(code: &'static str, description: impl Into<String>) -> Self {
        let status = match code {
            "invalid_client" => StatusCode::UNAUTHORIZED,
            "server_error" => StatusCode::INTERNAL_SERVER_ERROR,
            "temporarily_unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        };
        OAuthError {
            status,
            code,
            description: description.into(),
            basic_challenge: false,
        }
    }

    pub(crate) fn invalid_request(d: impl Into<String>) -> Self {
        Self::new("invalid_request", d)
    }
    pub(crate) fn invalid_client(d: impl Into<String>) -> Self {
        Self::new("invalid_client", d)
    }
    pub(crate) fn invalid_grant(d: impl Into<String>) -> Self {
        Self::new("invalid_grant", d)
    }
    pub(crate) fn invalid_scope(d: impl Into<String>) -> Self {
        Self::new("invalid_scope", d)
    }
    pub(crate) fn invalid_target(d: impl Into<String>) -> Self {
        Self::new("invalid_target", d)
    }
    pub(crate) fn unauthorized_client(d: impl Into<String>) -> Self {
        Self::new("unauthorized_client", d)
    }
    pub(crate) fn server_error(d: impl Into<String>) -> Self {
        Self::new("server_error", d)
    }

    /// Marks the error as answering an HTTP Basic authentication attempt.
    pub(crate) fn with_basic_challenge(mut self, basic: bool) -> Self {
        self.basic_challenge = basic;
        self
    }

    pub(crate) fn code(&self) -> &'static str {
        self.code
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": self.code,
            "error_description": self.description,
        });
        let mut resp = (self.status, axum::Json(body)).into_response();
        let h = resp.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        // A 401 always carries a challenge (RFC 9110 §15.5.2), whichever way
        // the client tried to authenticate.
        if self.basic_challenge || self.status == StatusCode::UNAUTHORIZED {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"berth\""),
            );
        }
        resp
    }
}
