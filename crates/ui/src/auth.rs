//! Login with the admin token, session cookies, CSRF tokens, same-origin
//! checks and the per-peer limit on login attempts.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Form;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::rejection::FormRejection;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use subtle::ConstantTimeEq as _;

use crate::Ui;
use crate::html::{Nav, esc, page};

/// The session cookie's name.
const COOKIE: &str = "berth_ui";
/// A session lasts this long from login, however active.
pub(crate) const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at once; past that, the one closest to expiry goes.
const MAX_SESSIONS: usize = 256;
/// Login attempts one peer address may make per window.
pub(crate) const LOGIN_ATTEMPTS: u32 = 10;
pub(crate) const LOGIN_WINDOW: Duration = Duration::from_secs(60);
/// Peers tracked at once; more share one budget.
const MAX_PEERS: usize = 4096;

/// A logged-in browser.
#[derive(Clone)]
pub(crate) struct Session {
    pub id: Arc<str>,
    /// Sent back with every POST (synchronizer token).
    pub csrf: Arc<str>,
}

struct Entry {
    csrf: Arc<str>,
    expires: Instant,
}

/// Sessions by id, in memory: a restart of Berth (which also changes the
/// admin token) logs everyone out.
#[derive(Default)]
pub(crate) struct Sessions {
    by_id: Mutex<HashMap<Arc<str>, Entry>>,
}

impl Sessions {
    fn create(&self) -> Session {
        let (id, csrf) = (berth_edge::random_token(), berth_edge::random_token());
        let now = Instant::now();
        let mut map = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, e| e.expires > now);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, e)| e.expires)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(
            id.clone(),
            Entry {
                csrf: csrf.clone(),
                expires: now + SESSION_TTL,
            },
        );
        Session { id, csrf }
    }

    /// The live session `id` names.
    pub fn get(&self, id: &str) -> Option<Session> {
        let map = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        let (key, entry) = map.get_key_value(id)?;
        (entry.expires > Instant::now()).then(|| Session {
            id: key.clone(),
            csrf: entry.csrf.clone(),
        })
    }

    /// Whether `id` still names a live session (streams check it as they go).
    pub fn alive(&self, id: &str) -> bool {
        self.get(id).is_some()
    }

    fn remove(&self, id: &str) {
        self.by_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }
}

/// At most [`LOGIN_ATTEMPTS`] per peer address per [`LOGIN_WINDOW`].
#[derive(Default)]
pub(crate) struct LoginLimiter {
    /// Peer (None: unknown, or past [`MAX_PEERS`]) → (window start, attempts).
    by_peer: Mutex<HashMap<Option<IpAddr>, (Instant, u32)>>,
}

impl LoginLimiter {
    /// Counts an attempt; `Err(wait)` when the peer is over its budget.
    pub fn attempt(&self, peer: Option<IpAddr>, now: Instant) -> Result<(), Duration> {
        let mut map = self.by_peer.lock().unwrap_or_else(|p| p.into_inner());
        let mut key = peer;
        if !map.contains_key(&key) && map.len() >= MAX_PEERS {
            map.retain(|_, (start, _)| now.duration_since(*start) < LOGIN_WINDOW);
            if map.len() >= MAX_PEERS {
                key = None;
            }
        }
        let (start, count) = map.entry(key).or_insert((now, 0));
        if now.duration_since(*start) >= LOGIN_WINDOW {
            (*start, *count) = (now, 0);
        }
        if *count >= LOGIN_ATTEMPTS {
            return Err(LOGIN_WINDOW.saturating_sub(now.duration_since(*start)));
        }
        *count += 1;
        Ok(())
    }
}

/// The peer's address, when the listener records it (`ConnectInfo`).
pub(crate) struct Peer(Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Peer, Infallible> {
        Ok(Peer(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

impl Ui {
    /// The request's session, if it has a live one.
    pub(crate) fn session(&self, headers: &HeaderMap) -> Option<Session> {
        self.sessions.get(cookie(headers)?)
    }

    /// A page's session, or the redirect to the login form.
    pub(crate) fn page_session(&self, headers: &HeaderMap) -> Result<Session, Denied> {
        self.session(headers).ok_or(Denied::ToLogin)
    }

    /// A stream's or an image's session, or 401.
    pub(crate) fn data_session(&self, headers: &HeaderMap) -> Result<Session, Denied> {
        self.session(headers).ok_or(Denied::Refused(
            StatusCode::UNAUTHORIZED,
            "log in at /ui/login first",
        ))
    }

    /// A state-changing request's session: from the dashboard's own origin,
    /// with the session's CSRF token. Anything else is 403.
    pub(crate) fn post_session(&self, headers: &HeaderMap, csrf: &str) -> Result<Session, Denied> {
        same_origin(headers)?;
        let session = self.session(headers).ok_or(Denied::Refused(
            StatusCode::FORBIDDEN,
            "no dashboard session: log in at /ui/login first",
        ))?;
        if csrf.is_empty() || !bool::from(csrf.as_bytes().ct_eq(session.csrf.as_bytes())) {
            return Err(Denied::Refused(
                StatusCode::FORBIDDEN,
                "missing or wrong CSRF token: reload the page and try again",
            ));
        }
        Ok(session)
    }
}

/// Why a request gets no further.
#[derive(Debug)]
pub(crate) enum Denied {
    /// A page without a session: to the login form.
    ToLogin,
    Refused(StatusCode, &'static str),
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        match self {
            Denied::ToLogin => Redirect::to("/ui/login").into_response(),
            Denied::Refused(status, message) => refuse(status, message),
        }
    }
}

/// Refuses a request a browser made on another site's behalf: `Sec-Fetch-Site`
/// (when sent) must say same-origin, and `Origin` (when sent) must be this
/// host's. Clients that send neither (curl) still need the CSRF token.
pub(crate) fn same_origin(headers: &HeaderMap) -> Result<(), Denied> {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site"))
        && !matches!(site, "same-origin" | "none")
    {
        return Err(Denied::Refused(
            StatusCode::FORBIDDEN,
            "cross-site request refused (Sec-Fetch-Site)",
        ));
    }
    if let Some(origin) = text(header::ORIGIN) {
        let host = text(header::HOST).unwrap_or_default();
        let ours = !host.is_empty()
            && [("http://", host), ("https://", host)]
                .iter()
                .any(|(scheme, host)| origin.strip_prefix(scheme) == Some(*host));
        if !ours {
            return Err(Denied::Refused(
                StatusCode::FORBIDDEN,
                "cross-origin request refused (Origin is not this dashboard's)",
            ));
        }
    }
    Ok(())
}

/// A plain-text refusal.
pub(crate) fn refuse(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{message}\n"),
    )
        .into_response()
}

fn login_page(status: StatusCode, error: Option<&str>) -> Response {
    let error = error
        .map(|e| {
            format!(
                "<p class=\"error\" id=\"login-error\" role=\"alert\">{}</p>",
                esc(e)
            )
        })
        .unwrap_or_default();
    let main = format!(
        "<section class=\"login\"><h1>Berth dashboard</h1>{error}\
         <form method=\"post\" action=\"/ui/login\" id=\"login\">\
         <label for=\"token\">Admin token</label>\
         <input type=\"password\" id=\"token\" name=\"token\" autocomplete=\"current-password\" required autofocus>\
         <button type=\"submit\">Log in</button></form>\
         <p class=\"hint\">The token is in <code>admin.json</code> in Berth's data directory \
         (written at each start).</p></section>"
    );
    (
        status,
        Html(page("Log in", "login", Nav::None, None, &main)),
    )
        .into_response()
}

pub(crate) async fn login_form(State(ui): State<Arc<Ui>>, headers: HeaderMap) -> Response {
    if ui.session(&headers).is_some() {
        return Redirect::to("/ui").into_response();
    }
    login_page(StatusCode::OK, None)
}

#[derive(Deserialize, Default)]
pub(crate) struct LoginForm {
    #[serde(default)]
    token: String,
}

pub(crate) async fn login(
    State(ui): State<Arc<Ui>>,
    Peer(peer): Peer,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let form = form.map(|Form(f)| f).unwrap_or_default();
    // No session yet to carry a CSRF token: the origin checks keep other
    // sites from logging a browser in.
    if let Err(refused) = same_origin(&headers) {
        return refused.into_response();
    }
    if let Err(wait) = ui.logins.attempt(peer, Instant::now()) {
        let mut response = login_page(
            StatusCode::TOO_MANY_REQUESTS,
            Some(&format!(
                "Too many login attempts from this address: try again in {} s.",
                wait.as_secs().max(1)
            )),
        );
        if let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return response;
    }
    let token = form.token.trim();
    if !bool::from(token.as_bytes().ct_eq(ui.token.as_bytes())) {
        tracing::warn!(peer = ?peer, "dashboard login refused: wrong admin token");
        return login_page(
            StatusCode::UNAUTHORIZED,
            Some("Wrong admin token (it changes each time Berth starts)."),
        );
    }
    let session = ui.sessions.create();
    let mut response = Redirect::to("/ui").into_response();
    let cookie = format!(
        "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/ui; Max-Age={}",
        session.id,
        SESSION_TTL.as_secs()
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

#[derive(Deserialize, Default)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

pub(crate) async fn logout(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    let form = form.map(|Form(f)| f).unwrap_or_default();
    let session = match ui.post_session(&headers, &form.csrf) {
        Ok(s) => s,
        Err(refused) => return refused.into_response(),
    };
    ui.sessions.remove(&session.id);
    let mut response = Redirect::to("/ui/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("berth_ui=; HttpOnly; SameSite=Strict; Path=/ui; Max-Age=0"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_attempts_are_limited_per_peer() {
        let limiter = LoginLimiter::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..LOGIN_ATTEMPTS {
            assert!(limiter.attempt(Some(a), t0).is_ok());
        }
        let wait = limiter.attempt(Some(a), t0).unwrap_err();
        assert_eq!(wait, LOGIN_WINDOW);
        // Another peer is not affected; the window passing restores the first.
        assert!(limiter.attempt(Some(b), t0).is_ok());
        assert!(limiter.attempt(Some(a), t0 + LOGIN_WINDOW).is_ok());
    }

    #[test]
    fn sessions_are_found_by_cookie_and_forgotten_on_removal() {
        let sessions = Sessions::default();
        let s = sessions.create();
        assert_eq!(s.id.len(), 43, "32 random bytes, base64url");
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {COOKIE}={}", s.id)).unwrap(),
        );
        let found = sessions.get(cookie(&headers).unwrap()).unwrap();
        assert_eq!(found.csrf, s.csrf);
        sessions.remove(&s.id);
        assert!(!sessions.alive(&s.id));
    }

    #[test]
    fn cross_site_requests_are_refused() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            h
        };
        let host = ("host", "127.0.0.1:9000");
        assert!(same_origin(&headers(&[host])).is_ok());
        assert!(same_origin(&headers(&[host, ("origin", "http://127.0.0.1:9000")])).is_ok());
        assert!(same_origin(&headers(&[host, ("origin", "http://evil.example")])).is_err());
        assert!(same_origin(&headers(&[host, ("origin", "null")])).is_err());
        assert!(same_origin(&headers(&[host, ("sec-fetch-site", "cross-site")])).is_err());
        assert!(same_origin(&headers(&[host, ("sec-fetch-site", "same-site")])).is_err());
        assert!(same_origin(&headers(&[host, ("sec-fetch-site", "same-origin")])).is_ok());
    }
}
