//! The operator dashboard at `/ui`, served on Berth's admin listener.
//!
//! Server-rendered HTML with live updates over SSE: the servers (status,
//! owner, era, processes by state, sessions, latencies, boot and first-result
//! times, restarts, crashes, calls), a server's page (its live log tail, its
//! tools' calls and latencies, a rolling restart), and usage with the cost
//! chart. The CSS and the one script are compiled into the binary; nothing is
//! built or fetched by the browser from elsewhere.
//!
//! Browsers cannot send the admin API's `Authorization: Bearer` header, so
//! `/ui` has its own login: the admin token, entered once, buys a session
//! cookie (`HttpOnly; SameSite=Strict; Path=/ui`); every POST also carries the
//! session's CSRF token and must come from the dashboard's own origin. Every
//! answer forbids framing and scripts from anywhere but `/ui/static`.
//!
//! The dashboard only reads the gateway (and restarts a server when asked):
//! it holds a [`Weak`] reference, so it never keeps a stopping gateway alive.

mod auth;
mod data;
mod html;
mod pages;
mod stream;

use std::sync::{Arc, Weak};

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::Response;
use axum::routing::{get, post};
use berth_edge::Gateway;

/// What the dashboard needs besides the gateway.
pub struct Dashboard {
    /// The admin token: the login form's password.
    pub token: String,
    /// The usage store the gateway's meter writes (`None`: metering is off).
    pub usage: Option<berth_usage::Store>,
    /// `[cost]`: the prices the cost chart applies.
    pub prices: berth_cost::Prices,
}

pub(crate) struct Ui {
    gateway: Weak<Gateway>,
    token: String,
    usage: Option<berth_usage::Store>,
    prices: berth_cost::Prices,
    sessions: auth::Sessions,
    logins: auth::LoginLimiter,
}

impl Ui {
    fn gateway(&self) -> Option<Arc<Gateway>> {
        self.gateway.upgrade()
    }
}

/// The `/ui` routes, to merge into the admin listener's router. They do
/// their own authentication (the admin API's bearer check must not wrap
/// them). Serve the router with `into_make_service_with_connect_info::<SocketAddr>()`
/// so that login attempts are limited per peer address rather than for
/// all peers together.
pub fn router(gateway: Weak<Gateway>, dashboard: Dashboard) -> Router {
    let ui = Arc::new(Ui {
        gateway,
        token: dashboard.token,
        usage: dashboard.usage,
        prices: dashboard.prices,
        sessions: auth::Sessions::default(),
        logins: auth::LoginLimiter::default(),
    });
    Router::new()
        .route("/ui", get(pages::servers))
        .route("/ui/", get(pages::servers))
        .route("/ui/login", get(auth::login_form).post(auth::login))
        .route("/ui/logout", post(auth::logout))
        .route("/ui/events", get(stream::events))
        .route("/ui/servers/{name}", get(pages::server))
        .route("/ui/servers/{name}/log", get(stream::log))
        .route("/ui/servers/{name}/restart", post(pages::restart))
        .route("/ui/usage", get(pages::usage))
        .route("/ui/cost.svg", get(pages::cost_svg))
        .route("/ui/static/ui.css", get(pages::css))
        .route("/ui/static/ui.js", get(pages::js))
        .route("/ui/{*rest}", get(pages::not_found))
        .with_state(ui)
        .layer(axum::middleware::map_response(security_headers))
}

/// The policy every `/ui` answer carries, unless the handler set its own:
/// scripts, styles and images only from the dashboard itself (no inline
/// script), never framed, nothing cached, no referrer sent to other sites.
pub(crate) const CSP: &str =
    "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let defaults: [(HeaderName, &str); 6] = [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        // Not `no-referrer`: with it, browsers send `Origin: null` on form posts.
        (header::REFERRER_POLICY, "same-origin"),
        (header::CACHE_CONTROL, "no-store"),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
    ];
    for (name, value) in defaults {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode, header};
    use tower::ServiceExt as _;

    use super::*;

    const TOKEN: &str = "admin-token-for-tests";

    fn ui() -> (Arc<Gateway>, Router) {
        let gateway = Gateway::new(berth_edge::EdgeConfig::default(), Vec::new());
        let router = router(
            Arc::downgrade(&gateway),
            Dashboard {
                token: TOKEN.into(),
                usage: None,
                prices: berth_cost::Prices::default(),
            },
        );
        (gateway, router)
    }

    async fn send(router: &Router, request: Request<Body>) -> Response {
        router.clone().oneshot(request).await.unwrap()
    }

    fn login(token: &str) -> Request<Body> {
        Request::post("/ui/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::HOST, "127.0.0.1:9091")
            .header(header::ORIGIN, "http://127.0.0.1:9091")
            .body(Body::from(format!("token={token}")))
            .unwrap()
    }

    async fn text(response: Response) -> String {
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn pages_need_a_login_and_posts_need_the_csrf_token() {
        let (_gateway, router) = ui();
        let page = send(&router, Request::get("/ui").body(Body::empty()).unwrap()).await;
        assert_eq!(page.status(), StatusCode::SEE_OTHER);
        assert_eq!(page.headers()[header::LOCATION], "/ui/login");
        assert_eq!(page.headers()[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(page.headers()[header::CONTENT_SECURITY_POLICY], CSP);
        let events = send(
            &router,
            Request::get("/ui/events").body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(events.status(), StatusCode::UNAUTHORIZED);

        assert_eq!(
            send(&router, login("wrong")).await.status(),
            StatusCode::UNAUTHORIZED
        );
        let ok = send(&router, login(TOKEN)).await;
        assert_eq!(ok.status(), StatusCode::SEE_OTHER);
        let cookie = ok.headers()[header::SET_COOKIE].to_str().unwrap();
        let session = cookie.split(';').next().unwrap().to_owned();
        let page = send(
            &router,
            Request::get("/ui")
                .header(header::COOKIE, &session)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(page.status(), StatusCode::OK);
        let html = text(page).await;
        let csrf = html
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap()
            .to_owned();

        let logout = |body: String, origin: &'static str| {
            Request::post("/ui/logout")
                .header(header::COOKIE, &session)
                .header(header::HOST, "127.0.0.1:9091")
                .header(header::ORIGIN, origin)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(body))
                .unwrap()
        };
        let ours = "http://127.0.0.1:9091";
        for (body, origin) in [
            (String::new(), ours),
            ("csrf=forged".to_owned(), ours),
            (format!("csrf={csrf}"), "http://evil.example"),
        ] {
            let refused = send(&router, logout(body.clone(), origin)).await;
            assert_eq!(
                refused.status(),
                StatusCode::FORBIDDEN,
                "{body} from {origin}"
            );
        }
        let out = send(&router, logout(format!("csrf={csrf}"), ours)).await;
        assert_eq!(out.status(), StatusCode::SEE_OTHER);
        let page = send(
            &router,
            Request::get("/ui")
                .header(header::COOKIE, &session)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(page.status(), StatusCode::SEE_OTHER, "logged out");
    }

    #[tokio::test]
    async fn the_script_is_a_file_and_assets_need_no_login() {
        let (_gateway, router) = ui();
        let js = send(
            &router,
            Request::get("/ui/static/ui.js")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(js.status(), StatusCode::OK);
        assert!(
            js.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/javascript")
        );
        assert!(text(js).await.contains("EventSource"));
        let login = text(
            send(
                &router,
                Request::get("/ui/login").body(Body::empty()).unwrap(),
            )
            .await,
        )
        .await;
        assert!(!login.contains("<script>"), "no inline script");
        assert!(login.contains("<script src=\"/ui/static/ui.js\""));
    }
}
