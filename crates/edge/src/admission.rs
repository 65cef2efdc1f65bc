//! What every MCP request passes before its handler, in one layer: the
//! Host/Origin and header checks ([`guard`]), authentication ([`authz`]),
//! then the client's request rate ([`fairness`]); on the way back, JSON-RPC
//! bodies for bare errors and CORS headers.
//!
//! One layer rather than one per check: each axum layer clones the inner
//! service and boxes a future per request, which showed in the gateway's
//! CPU profile under load.

use std::borrow::Cow;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::gateway::Gateway;
use crate::reply::Refusal;
use crate::{authz, fairness, guard};

pub(crate) async fn admit(
    State(gw): State<Arc<Gateway>>,
    mut request: Request,
    next: Next,
) -> Response {
    let screened = match guard::screen(gw.origin_policy(), &request) {
        Ok(screened) => screened,
        Err(refusal) => return refusal.into_response(),
    };
    if let Some(preflight) = screened.preflight() {
        return preflight;
    }
    let response = match checked(&gw, &mut request).await {
        Ok(client) => fairness::for_client(client, next.run(request)).await,
        Err(refusal) => refusal.into_response(),
    };
    guard::finish(screened, response).await
}

/// Authentication, then the client's rate; `Ok` with the client to count
/// sessions against.
async fn checked(gw: &Gateway, request: &mut Request) -> Result<Option<Arc<str>>, Refusal> {
    if gw.config().auth.is_some() {
        // A Uri clone shares its bytes; the name borrows from it.
        let uri = request.uri().clone();
        authz::authenticate(gw, &server_name(uri.path()), request).await?;
    }
    fairness::admit(gw.rate_limiter(), request)
}

/// The server a request is for: the segment after `/mcp/` or `/sse/`
/// (percent-decoded, as the router's `{name}` is).
fn server_name(path: &str) -> Cow<'_, str> {
    let rest = path
        .strip_prefix("/mcp/")
        .or_else(|| path.strip_prefix("/sse/"))
        .unwrap_or_default();
    let segment = rest.split('/').next().unwrap_or_default();
    percent_encoding::percent_decode_str(segment).decode_utf8_lossy()
}

#[cfg(test)]
mod tests {
    use super::server_name;

    #[test]
    fn the_server_name_is_the_segment_after_the_endpoint() {
        assert_eq!(server_name("/mcp/echo"), "echo");
        assert_eq!(server_name("/sse/echo"), "echo");
        assert_eq!(server_name("/sse/echo/messages"), "echo");
        assert_eq!(server_name("/mcp/my%2Dserver"), "my-server");
        assert_eq!(server_name("/healthz"), "");
    }
}
