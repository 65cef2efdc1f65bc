//! DNS-rebinding protection: which Host and Origin headers are accepted.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::EdgeConfig;
use crate::error::EdgeError;

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

    /// `Err` carries the reason to give the client.
    pub(crate) fn check(&self, headers: &HeaderMap, authority: Option<&str>) -> Result<(), String> {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or(authority)
            .unwrap_or_default()
            .to_ascii_lowercase();
        if let Some(hosts) = &self.hosts {
            let name = host_name(&host);
            if !hosts.iter().any(|h| h == name) {
                return Err(format!(
                    "Host {host:?} is not allowed (DNS rebinding protection); add it to gateway.allowed_hosts if this gateway is meant to be reached by that name"
                ));
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
            Err(format!(
                "Origin {origin:?} is not allowed; add it to gateway.allowed_origins to let browsers on that origin connect"
            ))
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

/// Middleware: 403 with a JSON-RPC error for a disallowed Host or Origin.
/// A browser on an allowed origin gets CORS: its preflight is answered here,
/// and responses let it read the session headers.
pub(crate) async fn check_origin(
    State(policy): State<Arc<OriginPolicy>>,
    request: Request,
    next: Next,
) -> Response {
    let authority = request.uri().authority().map(|a| a.as_str().to_owned());
    if let Err(why) = policy.check(request.headers(), authority.as_deref()) {
        tracing::warn!("refused request: {why}");
        return EdgeError::Forbidden(format!("Forbidden: {why}"))
            .refusal(None)
            .into_response();
    }
    let Some(origin) = request.headers().get(header::ORIGIN).cloned() else {
        return next.run(request).await;
    };
    let mut response = if request.method() == Method::OPTIONS {
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
        preflight
    } else {
        next.run(request).await
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
