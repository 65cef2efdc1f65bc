//! Small helpers shared by the endpoints: randomness, hashing, constant-time
//! comparison, form parsing and resource/URL canonicalisation. Private
//! files are `berth_files`'.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// `n` random bytes from the thread-local CSPRNG, base64url without padding.
pub(crate) fn random_token(n: usize) -> String {
    URL_SAFE_NO_PAD.encode(random_bytes(n))
}

/// `n` random bytes from the thread-local CSPRNG (ChaCha, seeded from the OS).
pub(crate) fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    rand::rng().fill_bytes(&mut buf);
    buf
}

/// SHA-256 of `data`.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Lower-case hex SHA-256 of `data` (how client secrets are stored on disk).
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    sha256(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares two secrets without leaking where they differ or how long they
/// are: both sides are hashed first, so only equal-length digests are compared.
pub(crate) fn secrets_equal(a: impl AsRef<[u8]>, b: impl AsRef<[u8]>) -> bool {
    sha256(a.as_ref()).ct_eq(&sha256(b.as_ref())).into()
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Parameters of a query string or `application/x-www-form-urlencoded` body.
///
/// RFC 6749 §3.1: parameters without a value count as omitted, and a
/// parameter must not appear more than once, so [`Params::get`] reports
/// duplicates instead of silently picking one.
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    /// Parses a urlencoded string; `None` input (no query at all) is empty.
    pub(crate) fn parse(input: &[u8]) -> Result<Self, String> {
        serde_urlencoded::from_bytes::<Vec<(String, String)>>(input)
            .map(Params)
            .map_err(|e| format!("malformed form parameters: {e}"))
    }

    /// The single non-empty value of `name`, or an error naming the
    /// parameter if it was sent more than once.
    pub(crate) fn get(&self, name: &str) -> Result<Option<&str>, String> {
        let mut found = None;
        for (k, v) in &self.0 {
            if k == name && !v.is_empty() {
                if found.is_some() {
                    return Err(format!("parameter `{name}` must not be repeated"));
                }
                found = Some(v.as_str());
            }
        }
        Ok(found)
    }

    /// Every non-empty value of `name` (for `resource`, which RFC 8707 lets
    /// a client repeat).
    pub(crate) fn get_all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// Splits a space-separated scope string into distinct scope tokens,
/// keeping their order.
pub(crate) fn split_scopes(scope: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in scope.split(' ').filter(|s| !s.is_empty()) {
        if !out.iter().any(|o| o == s) {
            out.push(s.to_owned());
        }
    }
    out
}

/// The comparison form of a resource indicator (RFC 8707): an absolute
/// http(s) URL without fragment, scheme and host lower-cased, default port
/// dropped, and one trailing `/` ignored, so `http://H:80/mcp/a/` and
/// `http://h/mcp/a` name the same resource. `None` if it is not such a URL.
pub(crate) fn canonical_resource(s: &str) -> Option<String> {
    let url = url::Url::parse(s).ok()?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() || url.fragment().is_some()
    {
        return None;
    }
    let mut text = url.to_string();
    if url.query().is_none() && text.ends_with('/') {
        text.pop();
    }
    Some(text)
}

/// Whether a redirect URI may be registered: https with a host, or plain http
/// only to a loopback host (a native app's local listener), and no fragment
/// (RFC 6749 §3.1.2, OAuth 2.1 §2.3.1).
pub(crate) fn check_redirect_uri(uri: &str) -> Result<(), String> {
    let url =
        url::Url::parse(uri).map_err(|e| format!("redirect_uri `{uri}` is not a URL: {e}"))?;
    if url.fragment().is_some() {
        return Err(format!("redirect_uri `{uri}` must not contain a fragment"));
    }
    match url.scheme() {
        "https" if url.host().is_some() => Ok(()),
        "http" if is_loopback(&url) => Ok(()),
        "http" => Err(format!(
            "redirect_uri `{uri}`: plain http is allowed only for loopback hosts (127.0.0.1, localhost, [::1]); use https"
        )),
        _ => Err(format!(
            "redirect_uri `{uri}` must use https (or http to a loopback host)"
        )),
    }
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Whether `requested` matches the registered redirect URI `registered`.
///
/// Exact string match, except that OAuth 2.1 §8.4.2 (RFC 8252 §7.3) requires
/// ignoring the port of a loopback *IP literal* redirect URI: native apps
/// listen on whatever ephemeral port is free at the time.
pub(crate) fn redirect_uri_matches(registered: &str, requested: &str) -> bool {
    if registered == requested {
        return true;
    }
    let (Ok(mut a), Ok(mut b)) = (url::Url::parse(registered), url::Url::parse(requested)) else {
        return false;
    };
    let loopback_ip = |u: &url::Url| {
        let ip = match u.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            _ => false,
        };
        u.scheme() == "http" && ip
    };
    if !(loopback_ip(&a) && loopback_ip(&b)) {
        return false;
    }
    if a.set_port(None).is_err() || b.set_port(None).is_err() {
        return false;
    }
    a == b
}

/// HTML-escapes text for element content and double-quoted attributes.
pub(crate) fn html_escape(s: &str) -> String {
    html_escape::encode_quoted_attribute(s).into_owned()
}

/// A JSON token response that no cache may keep (RFC 6749 §5.1).
pub(crate) fn no_store(body: serde_json::Value) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let mut resp = axum::Json(body).into_response();
    let h = resp.headers_mut();
    h.insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    h.insert(
        axum::http::header::PRAGMA,
        axum::http::HeaderValue::from_static("no-cache"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_resource_normalises() {
        assert_eq!(
            canonical_resource("HTTP://Example.COM:80/mcp/a/").as_deref(),
            Some("http://example.com/mcp/a")
        );
        assert_eq!(
            canonical_resource("http://127.0.0.1:8080").as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert!(canonical_resource("http://h/a#frag").is_none());
        assert!(canonical_resource("urn:x").is_none());
    }

    #[test]
    fn redirect_uris() {
        assert!(check_redirect_uri("https://app.example/cb").is_ok());
        assert!(check_redirect_uri("http://127.0.0.1:3000/cb").is_ok());
        assert!(check_redirect_uri("http://localhost/cb").is_ok());
        assert!(check_redirect_uri("http://[::1]:9/cb").is_ok());
        assert!(check_redirect_uri("http://evil.example/cb").is_err());
        assert!(check_redirect_uri("https://app.example/cb#x").is_err());
        assert!(check_redirect_uri("javascript:alert(1)").is_err());
        assert!(redirect_uri_matches(
            "http://127.0.0.1:3000/cb",
            "http://127.0.0.1:4000/cb"
        ));
        assert!(!redirect_uri_matches(
            "http://localhost:3000/cb",
            "http://localhost:4000/cb"
        ));
        assert!(!redirect_uri_matches(
            "http://127.0.0.1:3000/cb",
            "http://127.0.0.1:3000/other"
        ));
    }

    #[test]
    fn params_reject_duplicates() {
        let p = Params::parse(b"a=1&b=&a=2&c=3").unwrap();
        assert!(p.get("a").is_err());
        assert_eq!(p.get("b").unwrap(), None);
        assert_eq!(p.get("c").unwrap(), Some("3"));
    }
}
