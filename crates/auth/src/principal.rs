//! Who is calling, as established from a credential.

use std::sync::Arc;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// What sessions are bound to: the issuer, subject and client together
    /// (or the API key's name), so two callers never share a session.
    pub id: Arc<str>,
    /// `sub` of a token, or the API key's name.
    pub subject: String,
    /// `client_id` (or `azp`) of a token, when it names one.
    pub client_id: Option<String>,
    /// Granted scopes.
    pub scopes: Vec<String>,
}

impl Principal {
    /// Whether every scope in `needed` was granted.
    pub fn has_all(&self, needed: &[String]) -> bool {
        needed.iter().all(|s| self.scopes.iter().any(|g| g == s))
    }

    /// The scopes of `needed` that were not granted.
    pub fn missing(&self, needed: &[String]) -> Vec<String> {
        needed
            .iter()
            .filter(|s| !self.scopes.iter().any(|g| g == *s))
            .cloned()
            .collect()
    }
}
