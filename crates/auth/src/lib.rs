//! Berth as an OAuth 2.1 resource server.
//!
//! Every request to a hosted MCP server carries a bearer credential; this
//! crate turns it into a [`Principal`] or a [`Denial`]:
//!
//! - JWT access tokens, verified against the issuer's keys ([`jwks`]): the
//!   signature with an allowlisted asymmetric algorithm, `iss`, `exp`/`nbf`
//!   with a small skew, and `aud` = the server's own resource URL, so a token
//!   minted for one server is refused by every other;
//! - opaque tokens through RFC 7662 introspection, when configured;
//! - API keys, compared by SHA-256 digest (only digests are configured).
//!
//! It also answers what a client needs to find its authorization server: the
//! Protected Resource Metadata of RFC 9728 and the `WWW-Authenticate`
//! challenges that point at it ([`challenge`]).

mod access;
mod apikey;
mod authenticator;
pub mod challenge;
mod config;
mod introspect;
pub mod jwks;
mod jwt;
mod principal;

pub use access::ServerAccess;
pub use apikey::{ApiKey, hash_api_key, parse_digest as parse_api_key_digest};
pub use authenticator::Authenticator;
pub use challenge::Denial;
pub use config::{AuthConfig, AuthMode, Introspection};
pub use jwks::KeySource;
pub use principal::Principal;
