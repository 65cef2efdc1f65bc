//! The authorization endpoint: validates the request, shows the consent page
//! (GET) and turns the operator's decision into a redirect (POST).
//!
//! Until the client and redirect URI are verified, errors are shown as a
//! page: redirecting to an unverified URI would make this an open
//! redirector. After that, errors go back to the client per RFC 6749 §4.1.2.1.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{Extensions, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::Issuer;
use crate::clients::Client;
use crate::consent::{self, AuthzRequest, ConsentPage};
use crate::util::{self, Params};

/// How long an authorization code can be redeemed.
pub(crate) const CODE_TTL: Duration = Duration::from_secs(60);
/// At most this many codes are outstanding (redeemed ones are remembered
/// until they expire, to detect replays).
pub(crate) const MAX_CODES: usize = 10_000;
/// Wrong approval secrets tolerated per minute from one network peer before
/// the consent form answers it 429: the secret is the admin token. Counted per
/// peer so that a stranger's guesses cannot lock the operator out.
const MAX_APPROVAL_FAILURES_PER_MINUTE: u32 = 20;
/// Peers whose failures are remembered at once; past this, lapsed windows
/// are pruned, then the oldest.
const MAX_FAILURE_PEERS: usize = 10_000;

/// One issued authorization code.
pub(crate) struct CodeEntry {
    pub req: AuthzRequest,
    expires: Instant,
    /// Presented once already.
    used: bool,
    /// The refresh token family issued from it, revoked if it is replayed.
    pub family: Option<u64>,
}

/// What presenting a code found.
pub(crate) enum Redeem {
    /// Unknown or expired.
    Invalid,
    /// Presented before: replay. Carries the refresh family to revoke.
    Replayed(Option<u64>),
    /// First presentation; the code is now spent whatever happens next.
    Fresh(AuthzRequest),
}

/// Outstanding authorization codes, in memory.
#[derive(Default)]
pub(crate) struct Codes {
    map: HashMap<String, CodeEntry>,
}

impl Codes {
    /// Issues a code for `req`; `None` if too many are outstanding.
    fn issue(&mut self, req: AuthzRequest) -> Option<String> {
        let now = Instant::now();
        if self.map.len() >= MAX_CODES {
            self.map.retain(|_, e| e.expires > now);
            if self.map.len() >= MAX_CODES {
                return None;
            }
        }
        let code = util::random_token(32);
        self.map.insert(
            code.clone(),
            CodeEntry {
                req,
                expires: now + CODE_TTL,
                used: false,
                family: None,
            },
        );
        Some(code)
    }

    /// Presents `code`, spending it.
    pub(crate) fn redeem(&mut self, code: &str) -> Redeem {
        let now = Instant::now();
        let Some(entry) = self.map.get_mut(code) else {
            return Redeem::Invalid;
        };
        if entry.expires <= now {
            self.map.remove(code);
            return Redeem::Invalid;
        }
        if entry.used {
            return Redeem::Replayed(entry.family);
        }
        entry.used = true;
        Redeem::Fresh(entry.req.clone())
    }

    /// Records the refresh family issued from `code`.
    pub(crate) fn set_family(&mut self, code: &str, family: u64) {
        if let Some(e) = self.map.get_mut(code) {
            e.family = Some(family);
        }
    }
}

/// Who is guessing: an IPv4 address, or an IPv6 /64 (one host's usual
/// allocation); `None` when the server was not told the peer's address.
type Peer = Option<IpAddr>;

fn peer_of(extensions: &Extensions) -> Peer {
    let ip = extensions.get::<ConnectInfo<SocketAddr>>()?.0.ip();
    Some(match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    })
}

/// Wrong approval secrets per peer in the current minute.
#[derive(Default)]
pub(crate) struct FailureWindows {
    by_peer: HashMap<Peer, (Instant, u32)>,
}

impl FailureWindows {
    const WINDOW: Duration = Duration::from_secs(60);

    fn exhausted(&self, peer: Peer) -> bool {
        self.by_peer.get(&peer).is_some_and(|(start, count)| {
            start.elapsed() < Self::WINDOW && *count >= MAX_APPROVAL_FAILURES_PER_MINUTE
        })
    }

    fn record(&mut self, peer: Peer) {
        let now = Instant::now();
        if self.by_peer.len() >= MAX_FAILURE_PEERS && !self.by_peer.contains_key(&peer) {
            self.by_peer
                .retain(|_, (start, _)| now.duration_since(*start) < Self::WINDOW);
            if self.by_peer.len() >= MAX_FAILURE_PEERS
                && let Some(oldest) = self
                    .by_peer
                    .iter()
                    .min_by_key(|(_, (start, _))| *start)
                    .map(|(p, _)| *p)
            {
                self.by_peer.remove(&oldest);
            }
        }
        let (start, count) = self.by_peer.entry(peer).or_insert((now, 0));
        if now.duration_since(*start) >= Self::WINDOW {
            (*start, *count) = (now, 0);
        }
        *count += 1;
    }
}

/// Why a request cannot proceed.
enum Failure {
    /// Shown as an error page (client or redirect URI not verified).
    Page(String),
    /// Sent back to the verified redirect URI.
    Redirect {
        redirect_uri: String,
        state: Option<String>,
        error: &'static str,
        description: String,
    },
}

pub(crate) async fn authorize_get(
    State(iss): State<Arc<Issuer>>,
    RawQuery(query): RawQuery,
) -> Response {
    let params = match Params::parse(query.unwrap_or_default().as_bytes()) {
        Ok(p) => p,
        Err(e) => return consent::render_error(StatusCode::BAD_REQUEST, &e),
    };
    match validate(&iss, &params) {
        Ok((client, req)) => {
            let sealed = consent::seal(&iss.consent_key, &req);
            consent::render_consent(
                StatusCode::OK,
                &ConsentPage {
                    client_name: client.display_name(),
                    client_id: &client.client_id,
                    req: &req,
                    sealed: &sealed,
                    error: None,
                },
            )
        }
        Err(f) => failure_response(&iss, f),
    }
}

/// Validates an authorization request (RFC 6749 §4.1.1, RFC 7636 §4.3,
/// RFC 8707 §2).
fn validate(iss: &Issuer, params: &Params) -> Result<(Client, AuthzRequest), Failure> {
    let page = |m: String| Failure::Page(m);
    let client_id = params
        .get("client_id")
        .map_err(page)?
        .ok_or_else(|| page("The request has no client_id.".into()))?;
    let client = iss.clients.get(client_id).ok_or_else(|| {
        page(format!(
            "Unknown client `{client_id}`. If it registered before the gateway's data dir was reset, it must register again."
        ))
    })?;
    let given = params.get("redirect_uri").map_err(page)?;
    let redirect_uri = match given {
        Some(r)
            if client
                .redirect_uris
                .iter()
                .any(|reg| util::redirect_uri_matches(reg, r)) =>
        {
            r.to_owned()
        }
        Some(r) => {
            return Err(page(format!(
                "The redirect_uri `{r}` is not registered for this client."
            )));
        }
        // OAuth 2.1 §4.1.1: optional only when exactly one is registered.
        None if client.redirect_uris.len() == 1 => client.redirect_uris[0].clone(),
        None => {
            return Err(page(
                "The request has no redirect_uri and the client registered several.".into(),
            ));
        }
    };

    // From here on errors go back to the client. A repeated `state` cannot
    // be echoed; the error then goes without it.
    let state = params.get("state").ok().flatten().map(str::to_owned);
    let back = |error: &'static str, description: String| Failure::Redirect {
        redirect_uri: redirect_uri.clone(),
        state: state.clone(),
        error,
        description,
    };
    let get = |name: &str| params.get(name).map_err(|e| back("invalid_request", e));
    get("state")?;

    match get("response_type")? {
        Some("code") => {}
        Some(other) => {
            return Err(back(
                "unsupported_response_type",
                format!("response_type `{other}` is not supported; use code"),
            ));
        }
        None => {
            return Err(back("invalid_request", "response_type is required".into()));
        }
    }
    if !client.allows_grant("authorization_code") {
        return Err(back(
            "unauthorized_client",
            "this client is not registered for the authorization_code grant".into(),
        ));
    }

    let challenge = get("code_challenge")?.ok_or_else(|| {
        back(
            "invalid_request",
            "code_challenge is required (PKCE S256)".into(),
        )
    })?;
    match get("code_challenge_method")? {
        Some("S256") => {}
        Some(m) => {
            return Err(back(
                "invalid_request",
                format!("code_challenge_method `{m}` is not supported; use S256"),
            ));
        }
        // RFC 7636 would default to `plain`, which this server refuses.
        None => {
            return Err(back(
                "invalid_request",
                "code_challenge_method=S256 is required".into(),
            ));
        }
    }
    if !is_pkce_string(challenge) {
        return Err(back(
            "invalid_request",
            "code_challenge must be 43-128 characters of [A-Za-z0-9-._~]".into(),
        ));
    }

    let resources = params.get_all("resource");
    let resource = match resources.as_slice() {
        [] => {
            return Err(back(
                "invalid_target",
                "resource is required: the URL of the MCP server the token is for".into(),
            ));
        }
        [one] => iss.resolve_resource(one).ok_or_else(|| {
            back(
                "invalid_target",
                format!("resource `{one}` is not served by this gateway"),
            )
        })?,
        _ => {
            return Err(back(
                "invalid_target",
                "only one resource per request is supported".into(),
            ));
        }
    };

    let allowed = client.allowed_scopes(&iss.scopes_supported);
    let scopes = match get("scope")? {
        None => allowed,
        Some(s) => {
            let asked = util::split_scopes(s);
            if let Some(bad) = asked.iter().find(|s| !allowed.contains(s)) {
                return Err(back(
                    "invalid_scope",
                    format!(
                        "scope `{bad}` is not available to this client (available: {})",
                        allowed.join(" ")
                    ),
                ));
            }
            asked
        }
    };

    let req = AuthzRequest {
        client_id: client.client_id.clone(),
        redirect_uri: redirect_uri.clone(),
        redirect_uri_given: given.is_some(),
        code_challenge: challenge.to_owned(),
        resource,
        scopes,
        state,
    };
    Ok((client, req))
}

/// RFC 7636 §4.1/§4.2 syntax of a code verifier or challenge.
pub(crate) fn is_pkce_string(s: &str) -> bool {
    (43..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

pub(crate) async fn authorize_post(
    State(iss): State<Arc<Issuer>>,
    extensions: Extensions,
    body: Bytes,
) -> Response {
    let peer = peer_of(&extensions);
    let params = match Params::parse(&body) {
        Ok(p) => p,
        Err(e) => return consent::render_error(StatusCode::BAD_REQUEST, &e),
    };
    let field = |name: &str| params.get(name).ok().flatten();
    let Some(sealed) = field("request") else {
        return consent::render_error(
            StatusCode::BAD_REQUEST,
            "This is not a consent form submission.",
        );
    };
    let Some(req) = consent::open(&iss.consent_key, sealed) else {
        return consent::render_error(
            StatusCode::BAD_REQUEST,
            "This consent form is invalid or has expired (forms are valid for 10 minutes, and until the gateway restarts). Start the authorization again from the client.",
        );
    };
    // The client may have been removed or replaced since the page was shown.
    let Some(client) = iss.clients.get(&req.client_id) else {
        return consent::render_error(
            StatusCode::BAD_REQUEST,
            "The client is no longer registered.",
        );
    };
    if !client
        .redirect_uris
        .iter()
        .any(|r| util::redirect_uri_matches(r, &req.redirect_uri))
    {
        return consent::render_error(
            StatusCode::BAD_REQUEST,
            "The client's redirect URI is no longer registered.",
        );
    }

    match field("decision") {
        Some("deny") => {
            tracing::info!(client_id = %req.client_id, resource = %req.resource, "authorization denied by operator");
            return failure_response(
                &iss,
                Failure::Redirect {
                    redirect_uri: req.redirect_uri.clone(),
                    state: req.state.clone(),
                    error: "access_denied",
                    description: "the operator denied the request".into(),
                },
            );
        }
        Some("approve") => {}
        _ => {
            return consent::render_error(StatusCode::BAD_REQUEST, "Choose Approve or Deny.");
        }
    }

    let too_many = iss
        .approval_failures
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .exhausted(peer);
    let secret_ok = !too_many
        && field("approval_secret").is_some_and(|s| util::secrets_equal(s, &iss.approval_secret));
    if !secret_ok {
        let message = if too_many {
            "Too many wrong approval secrets in the last minute. Wait a minute, then try again."
        } else {
            iss.approval_failures
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .record(peer);
            tracing::warn!(client_id = %req.client_id, peer = ?peer, "consent approval with a wrong approval secret");
            "Wrong approval secret."
        };
        // 403, not 401: the consent form is not an HTTP authentication scheme.
        let status = if too_many {
            StatusCode::TOO_MANY_REQUESTS
        } else {
            StatusCode::FORBIDDEN
        };
        return consent::render_consent(
            status,
            &ConsentPage {
                client_name: client.display_name(),
                client_id: &client.client_id,
                req: &req,
                sealed,
                error: Some(message),
            },
        );
    }

    // The resource may have been removed by a config reload since.
    if iss.resolve_resource(&req.resource).is_none() {
        return failure_response(
            &iss,
            Failure::Redirect {
                redirect_uri: req.redirect_uri.clone(),
                state: req.state.clone(),
                error: "invalid_target",
                description: format!("resource `{}` is no longer served", req.resource),
            },
        );
    }

    let issued = iss
        .codes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .issue(req.clone());
    let Some(code) = issued else {
        return failure_response(
            &iss,
            Failure::Redirect {
                redirect_uri: req.redirect_uri.clone(),
                state: req.state.clone(),
                error: "temporarily_unavailable",
                description: "too many pending authorization codes; try again shortly".into(),
            },
        );
    };
    tracing::info!(
        client_id = %req.client_id,
        resource = %req.resource,
        scope = %req.scopes.join(" "),
        "authorization approved by operator"
    );
    let mut pairs = vec![("code", code.as_str())];
    if let Some(s) = &req.state {
        pairs.push(("state", s));
    }
    pairs.push(("iss", iss.issuer()));
    redirect(&req.redirect_uri, &pairs)
}

fn failure_response(iss: &Issuer, f: Failure) -> Response {
    match f {
        Failure::Page(m) => consent::render_error(StatusCode::BAD_REQUEST, &m),
        Failure::Redirect {
            redirect_uri,
            state,
            error,
            description,
        } => {
            let mut pairs = vec![
                ("error", error),
                ("error_description", description.as_str()),
            ];
            if let Some(s) = &state {
                pairs.push(("state", s));
            }
            pairs.push(("iss", iss.issuer()));
            redirect(&redirect_uri, &pairs)
        }
    }
}

/// 302 to `redirect_uri` with `pairs` appended to its query.
fn redirect(redirect_uri: &str, pairs: &[(&str, &str)]) -> Response {
    let Ok(mut url) = url::Url::parse(redirect_uri) else {
        return consent::render_error(StatusCode::BAD_REQUEST, "The redirect URI is invalid.");
    };
    url.query_pairs_mut().extend_pairs(pairs);
    let Ok(location) = HeaderValue::from_str(url.as_str()) else {
        return consent::render_error(StatusCode::BAD_REQUEST, "The redirect URI is invalid.");
    };
    let mut resp = StatusCode::FOUND.into_response();
    let h = resp.headers_mut();
    h.insert(header::LOCATION, location);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}
