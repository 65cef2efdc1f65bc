//! DNS-rebinding protection: which Host and Origin headers are accepted.

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::config::EdgeConfig;
use crate::error::EdgeError;
use crate::headers::{SESSION_HEADER, VERSION_HEADER};
use crate::reply::Refusal;

/// Headers a request may carry once: with two, which one a server (or a
/// proxy in front of it) reads is a guess, so neither is trusted.
const SINGLE_HEADERS: [(&str, &str); 2] = [
    (SESSION_HEADER, "Mcp-Session-Id"),
    (VERSION_HEADER, "MCP-Protocol-Version"),
];

/// The largest plain-text error body quoted in its JSON-RPC replacement.
const PLAIN_ERROR_LIMIT: usize = 4096;

const LOOPBACK_NAMES: [&str; 4] = ["localhost", "127.0.0.1", "[::1]", "::1"];

/// The Host and Origin allowlists, settled once from the configuration.
#[derive(Debug, Clone)]
pub(crate) struct OriginPolicy {
    /// `None`: any host.
    hosts: Option<Vec<String>>,
    origins: Vec<String>,
    loopback_origins: bool,
}

impl OriginPolicy {
    pub(crate) fn new(config: &EdgeConfig) -> OriginPolicy {
        let loopback = config.listen.ip().is_loopback();
        let mut hosts: Vec<String> = config
            .allowed_hosts
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        if loopback {
            hosts.extend(LOOPBACK_NAMES.iter().map(|s| s.to_string()));
        }
        OriginPolicy {
            hosts: if hosts.is_empty() { None } else { Some(hosts) },
            origins: config
                .allowed_origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
            loopback_origins: loopback,
        }
    }

    /// `authority` is the request URI's (absolute-form request lines, and
    /// HTTP/2's `:authority`). `Err` is the refusal to give the client.
    pub(crate) fn check(
        &self,
        headers: &HeaderMap,
        authority: Option<&str>,
    ) -> Result<(), EdgeError> {
        let mut host_headers = headers.get_all(header::HOST).iter();
        let host_header = match (host_headers.next(), host_headers.next()) {
            (_, Some(_)) => {
                return Err(EdgeError::InvalidRequest(
                    "Bad Request: more than one Host header".into(),
                ));
            }
            (Some(value), None) => Some(value.to_str().map_err(|_| {
                EdgeError::InvalidRequest("Bad Request: the Host header is not valid".into())
            })?),
            (None, None) => None,
        };
        // An absolute-form request line (`POST http://evil.com/mcp/x`) names
        // its target in the URI, and HTTP says that, not Host, is the target:
        // both must name the same (allowed) host. A disagreement is a 400, not
        // a 421: the request itself is contradictory (RFC 9112 answers Host
        // problems with 400), and 421 would invite a retry elsewhere.
        if let (Some(authority), Some(host)) = (authority, host_header)
            && !authority.eq_ignore_ascii_case(host)
        {
            return Err(EdgeError::InvalidRequest(format!(
                "Bad Request: the request target names {authority:?} but the Host header says {host:?}; send the path alone (origin-form) or make them agree"
            )));
        }
        let host = authority
            .or(host_header)
            .unwrap_or_default()
            .to_ascii_lowercase();
        if let Some(hosts) = &self.hosts {
            let name = host_name(&host);
            if !hosts.iter().any(|h| h == name) {
                return Err(EdgeError::Forbidden(format!(
                    "Forbidden: Host {host:?} is not allowed (DNS rebinding protection); add it to gateway.allowed_hosts if this gateway is meant to be reached by that name"
                )));
            }
        }
        let Some(origin) = headers.get(header::ORIGIN) else {
            // Non-browser agents send no Origin; there is nothing to rebind.
            return Ok(());
        };
        let origin = origin
            .to_str()
            .unwrap_or("<invalid>")
            .trim_end_matches('/')
            .to_ascii_lowercase();
        let same_origin = origin
            .split_once("://")
            .is_some_and(|(_, authority)| authority == host);
        let loopback = self.loopback_origins
            && origin.split_once("://").is_some_and(|(scheme, authority)| {
                matches!(scheme, "http" | "https") && LOOPBACK_NAMES.contains(&host_name(authority))
            });
        if same_origin || loopback || self.origins.contains(&origin) {
            Ok(())
        } else {
            Err(EdgeError::Forbidden(format!(
                "Forbidden: Origin {origin:?} is not allowed; add it to gateway.allowed_origins to let browsers on that origin connect"
            )))
        }
    }
}

/// `host[:port]` → `host`, keeping IPv6 brackets.
fn host_name(authority: &str) -> &str {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        };
    }
    match authority.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => authority,
    }
}

/// The first check of every MCP request: 403 with a JSON-RPC error for a
/// disallowed Host or Origin, 400 for a contradictory target or a duplicated
/// MCP header. `Ok` carries what [`finish`] needs, or a browser's CORS
/// preflight to answer at once ([`Screened::preflight`]).
pub(crate) fn screen(policy: &OriginPolicy, request: &Request) -> Result<Screened, Refusal> {
    let authority = request.uri().authority().map(|a| a.as_str());
    let checked = policy
        .check(request.headers(), authority)
        .and_then(|()| single_headers(request.headers()));
    if let Err(refused) = checked {
        tracing::warn!("refused request: {refused:?}");
        return Err(refused.refusal(None));
    }
    Ok(Screened {
        method: request.method().clone(),
        origin: request.headers().get(header::ORIGIN).cloned(),
    })
}

/// What [`screen`] passes on to [`finish`].
pub(crate) struct Screened {
    method: Method,
    origin: Option<HeaderValue>,
}

impl Screened {
    /// The answer to a browser's CORS preflight on an allowed origin, which
    /// goes no further.
    pub(crate) fn preflight(&self) -> Option<Response> {
        if self.origin.is_none() || self.method != Method::OPTIONS {
            return None;
        }
        let mut preflight = StatusCode::NO_CONTENT.into_response();
        let headers = preflight.headers_mut();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, DELETE, OPTIONS"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("content-type, accept, authorization, mcp-session-id, mcp-protocol-version, last-event-id"),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        Some(with_cors(preflight, self.origin.clone()))
    }
}

/// The last step of every MCP response: errors written without a JSON-RPC
/// body (axum's rejections) get one, and a browser on an allowed origin may
/// read the session headers (CORS).
pub(crate) async fn finish(screened: Screened, response: Response) -> Response {
    let response = json_rpc_errors(&screened.method, response).await;
    with_cors(response, screened.origin)
}

fn with_cors(mut response: Response, origin: Option<HeaderValue>) -> Response {
    let Some(origin) = origin else {
        return response;
    };
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("mcp-session-id, mcp-protocol-version"),
    );
    headers.append(header::VARY, HeaderValue::from_static("origin"));
    response
}

/// 400 when a header that must be single appears twice (not "first wins").
fn single_headers(headers: &HeaderMap) -> Result<(), EdgeError> {
    for (name, display) in SINGLE_HEADERS {
        if headers.get_all(name).iter().nth(1).is_some() {
            return Err(EdgeError::InvalidRequest(format!(
                "Bad Request: more than one {display} header; send it once"
            )));
        }
    }
    Ok(())
}

/// An error response without a JSON body (axum's path, query and method
/// rejections are plain text or empty) becomes a JSON-RPC error with the
/// same status, quoting the text. (axum adds a 405's `Allow` header after
/// this layer.)
async fn json_rpc_errors(method: &Method, response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, PLAIN_ERROR_LIMIT)
        .await
        .unwrap_or_default();
    let mut detail = String::from_utf8_lossy(&text).trim().to_owned();
    if detail.is_empty() && status == StatusCode::METHOD_NOT_ALLOWED {
        detail = format!(
            "this endpoint does not take {method}; MCP endpoints take POST, GET and DELETE (see the Allow header)"
        );
    }
    let mut replaced = EdgeError::from_plain(status, &detail)
        .refusal(None)
        .into_response();
    *replaced.status_mut() = status;
    for name in [header::ALLOW, header::WWW_AUTHENTICATE] {
        if let Some(value) = parts.headers.get(&name) {
            replaced.headers_mut().insert(name, value.clone());
        }
    }
    replaced
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(host: &str, origin: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        if let Some(o) = origin {
            h.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
        }
        h
    }

    #[test]
    fn loopback_listener_accepts_only_loopback_names() {
        let policy = OriginPolicy::new(&EdgeConfig::default());
        assert!(policy.check(&headers("localhost:8080", None), None).is_ok());
        assert!(
            policy
                .check(
                    &headers("127.0.0.1:8080", Some("http://localhost:8080")),
                    None
                )
                .is_ok()
        );
        assert!(policy.check(&headers("[::1]:8080", None), None).is_ok());
        assert!(
            policy
                .check(&headers("evil.example.com", None), None)
                .is_err()
        );
        assert!(
            policy
                .check(
                    &headers("localhost:8080", Some("http://evil.example.com")),
                    None
                )
                .is_err()
        );
    }

    #[test]
    fn public_listener_accepts_same_origin_and_allowlist() {
        let config = EdgeConfig {
            listen: "0.0.0.0:8080".parse().unwrap(),
            allowed_origins: vec!["https://app.example.com".into()],
            ..EdgeConfig::default()
        };
        let policy = OriginPolicy::new(&config);
        assert!(
            policy
                .check(&headers("mcp.example.com", None), None)
                .is_ok()
        );
        assert!(
            policy
                .check(
                    &headers("mcp.example.com", Some("https://mcp.example.com")),
                    None
                )
                .is_ok()
        );
        assert!(
            policy
                .check(
                    &headers("mcp.example.com", Some("https://app.example.com/")),
                    None
                )
                .is_ok()
        );
        assert!(
            policy
                .check(
                    &headers("mcp.example.com", Some("http://localhost:3000")),
                    None
                )
                .is_err()
        );
    }
}
