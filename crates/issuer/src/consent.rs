//! The consent page and the sealed authorization request it carries.
//!
//! The validated request travels in a hidden form field as
//! `base64url(json) "." base64url(HMAC-SHA256)`, keyed with a random key held
//! only in memory: the POST can trust it without server-side state, and
//! nobody can alter the redirect URI, resource or scopes in between. A
//! restart forgets the key, which only invalidates consent pages left open.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac as _};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::util::{self, html_escape};

/// How long a consent page stays valid.
const CONSENT_TTL_SECS: u64 = 600;

/// A validated authorization request, as approved on the consent page and
/// later bound to the code.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct AuthzRequest {
    pub client_id: String,
    pub redirect_uri: String,
    /// Whether the client sent `redirect_uri` (then the token request must
    /// repeat it, RFC 6749 §4.1.3).
    pub redirect_uri_given: bool,
    pub code_challenge: String,
    /// The resource as configured (what becomes `aud`).
    pub resource: String,
    pub scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Sealed {
    req: AuthzRequest,
    exp: u64,
}

/// Seals `req` for the hidden form field.
pub(crate) fn seal(key: &[u8], req: &AuthzRequest) -> String {
    let sealed = Sealed {
        req: req.clone(),
        exp: util::unix_now() + CONSENT_TTL_SECS,
    };
    // Serialising plain strings cannot fail; an empty payload would simply
    // not verify later.
    let json = serde_json::to_vec(&sealed).unwrap_or_default();
    let payload = URL_SAFE_NO_PAD.encode(json);
    let tag = URL_SAFE_NO_PAD.encode(mac(key, payload.as_bytes()));
    format!("{payload}.{tag}")
}

/// Opens a sealed request: `None` if it was altered, forged or is expired.
pub(crate) fn open(key: &[u8], sealed: &str) -> Option<AuthzRequest> {
    let (payload, tag) = sealed.split_once('.')?;
    let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
    let mut m = <Hmac<Sha256>>::new_from_slice(key).ok()?;
    m.update(payload.as_bytes());
    m.verify_slice(&tag).ok()?;
    let json = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let sealed: Sealed = serde_json::from_slice(&json).ok()?;
    (sealed.exp >= util::unix_now()).then_some(sealed.req)
}

fn mac(key: &[u8], data: &[u8]) -> Vec<u8> {
    match <Hmac<Sha256>>::new_from_slice(key) {
        Ok(mut m) => {
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        // HMAC accepts keys of any length; unreachable in practice.
        Err(_) => Vec::new(),
    }
}

/// What the consent page shows.
pub(crate) struct ConsentPage<'a> {
    pub client_name: &'a str,
    pub client_id: &'a str,
    pub req: &'a AuthzRequest,
    pub sealed: &'a str,
    pub error: Option<&'a str>,
}

/// The consent page: who asks, for what, where the answer goes, and the
/// approval secret field.
pub(crate) fn render_consent(status: StatusCode, page: &ConsentPage<'_>) -> Response {
    let scopes = if page.req.scopes.is_empty() {
        "no scopes".to_owned()
    } else {
        page.req
            .scopes
            .iter()
            .map(|s| format!("<code>{}</code>", html_escape(s)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let error = page
        .error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", html_escape(e)))
        .unwrap_or_default();
    let body = format!(
        r#"<h1>Authorize access</h1>
{error}<p><strong>{name}</strong> wants to access <code>{resource}</code> with scopes {scopes}.</p>
<p class="small">Client ID <code>{client_id}</code> (self-registered: the name is the client's own claim). After your decision you will be sent to <code>{redirect}</code>.</p>
<form method="post" action="/oauth/authorize">
<input type="hidden" name="request" value="{sealed}">
<label for="approval_secret">Approval secret (the gateway's admin token)</label>
<input type="password" id="approval_secret" name="approval_secret" autocomplete="current-password" autofocus>
<div class="buttons"><button type="submit" name="decision" value="approve">Approve</button>
<button type="submit" name="decision" value="deny" class="deny">Deny</button></div>
</form>"#,
        name = html_escape(page.client_name),
        resource = html_escape(&page.req.resource),
        client_id = html_escape(page.client_id),
        redirect = html_escape(&page.req.redirect_uri),
        sealed = html_escape(page.sealed),
    );
    html_response(status, "Authorize access · Berth", &body)
}

/// An error page for problems that must not be redirected (unknown client,
/// unregistered redirect URI, a tampered or expired consent form).
pub(crate) fn render_error(status: StatusCode, message: &str) -> Response {
    let body = format!(
        "<h1>Authorization failed</h1>\n<p class=\"error\">{}</p>",
        html_escape(message)
    );
    html_response(status, "Authorization failed · Berth", &body)
}

fn html_response(status: StatusCode, title: &str, body: &str) -> Response {
    let page = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body{{font-family:system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem;line-height:1.5;color:#222}}
code{{background:#f2f2f2;padding:0 .25rem;border-radius:3px;word-break:break-all}}
label{{display:block;margin-top:1rem}}
input[type=password]{{width:100%;padding:.5rem;box-sizing:border-box;font-size:1rem}}
.buttons{{margin-top:1rem;display:flex;gap:.5rem}}
button{{padding:.5rem 1.25rem;font-size:1rem;cursor:pointer}}
.deny{{background:#eee}}
.error{{color:#a00;font-weight:600}}
.small{{font-size:.875rem;color:#555}}
</style></head><body>
{body}
</body></html>
"#,
        title = html_escape(title),
    );
    let mut resp = (status, Html(page)).into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // No framing (clickjacking the Approve button), no scripts, no external
    // loads. No `form-action`: browsers apply it to the redirect that follows
    // the POST, which goes to the client's redirect URI.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> AuthzRequest {
        AuthzRequest {
            client_id: "c".into(),
            redirect_uri: "http://127.0.0.1/cb".into(),
            redirect_uri_given: true,
            code_challenge: "x".repeat(43),
            resource: "http://h/mcp/a".into(),
            scopes: vec!["mcp".into()],
            state: Some("s".into()),
        }
    }

    #[test]
    fn seal_round_trips_and_detects_tampering() {
        let key = [7u8; 32];
        let s = seal(&key, &req());
        assert_eq!(open(&key, &s).unwrap().resource, "http://h/mcp/a");
        assert!(open(&[8u8; 32], &s).is_none());
        let (payload, tag) = s.split_once('.').unwrap();
        let mut forged = req();
        forged.redirect_uri = "https://evil.example/cb".into();
        let forged_payload = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&Sealed {
                req: forged,
                exp: u64::MAX,
            })
            .unwrap(),
        );
        assert!(open(&key, &format!("{forged_payload}.{tag}")).is_none());
        assert!(open(&key, payload).is_none());
    }
}
