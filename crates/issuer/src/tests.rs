//! End-to-end tests of the router, driven the way the MCP Python SDK's
//! `OAuthClientProvider` and `ClientCredentialsOAuthProvider` drive it.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http_body_util::BodyExt as _;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::*;

mod exchange;

const ISSUER: &str = "http://127.0.0.1:8080";
const RESOURCE: &str = "http://127.0.0.1:8080/mcp/echo";
const OTHER_RESOURCE: &str = "http://127.0.0.1:8080/mcp/other";
const SECRET: &str = "admin-token-0123456789";
const REDIRECT: &str = "http://localhost:3030/callback";

fn config() -> IssuerConfig {
    let mut cfg = IssuerConfig::new(format!("{ISSUER}/"), SECRET);
    cfg.resources = vec![RESOURCE.into(), OTHER_RESOURCE.into()];
    cfg.scopes_supported = vec!["mcp".into(), "admin".into()];
    cfg
}

fn setup() -> (tempfile::TempDir, Arc<Issuer>) {
    let dir = tempfile::tempdir().unwrap();
    let iss = Issuer::open(&dir.path().join("data"), config()).unwrap();
    (dir, iss)
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }
    /// The query parameters of the `Location` redirect.
    fn location(&self) -> HashMap<String, String> {
        let loc = self
            .headers
            .get(header::LOCATION)
            .expect("a Location header")
            .to_str()
            .unwrap();
        url::Url::parse(loc)
            .unwrap()
            .query_pairs()
            .into_owned()
            .collect()
    }
}

async fn call(iss: &Arc<Issuer>, req: Request<Body>) -> Resp {
    let resp = iss.router().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Resp {
        status,
        headers,
        body,
    }
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

fn form(uri: &str, pairs: &[(&str, &str)], basic: Option<(&str, &str)>) -> Request<Body> {
    let mut b =
        Request::post(uri).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some((id, secret)) = basic {
        b = b.header(
            header::AUTHORIZATION,
            format!("Basic {}", STANDARD.encode(format!("{id}:{secret}"))),
        );
    }
    b.body(Body::from(serde_urlencoded::to_string(pairs).unwrap()))
        .unwrap()
}

fn post_json(uri: &str, v: &Value) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(v.to_string()))
        .unwrap()
}

/// What the Python SDK 1.30 sends to the registration endpoint.
fn sdk_registration(auth_method: Option<&str>) -> Value {
    let mut v = json!({
        "redirect_uris": [REDIRECT],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "scope": "mcp admin",
        "client_name": "Test <Client>",
    });
    if let Some(m) = auth_method {
        v["token_endpoint_auth_method"] = json!(m);
    }
    v
}

async fn register(iss: &Arc<Issuer>, auth_method: Option<&str>) -> Value {
    let r = call(
        iss,
        post_json("/oauth/register", &sdk_registration(auth_method)),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    r.json()
}

fn pkce() -> (String, String) {
    let verifier = crate::util::random_token(48);
    let challenge = URL_SAFE_NO_PAD.encode(crate::util::sha256(verifier.as_bytes()));
    (verifier, challenge)
}

fn authorize_uri(client_id: &str, challenge: &str, resource: &str, scope: Option<&str>) -> String {
    let mut pairs = vec![
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", REDIRECT),
        ("state", "st-123"),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
        ("resource", resource),
    ];
    if let Some(s) = scope {
        pairs.push(("scope", s));
    }
    format!(
        "/oauth/authorize?{}",
        serde_urlencoded::to_string(&pairs).unwrap()
    )
}

/// The sealed request in the consent page's hidden field.
fn sealed_request(html: &str) -> String {
    let marker = "name=\"request\" value=\"";
    let start = html.find(marker).expect("hidden request field") + marker.len();
    let end = start + html[start..].find('"').unwrap();
    html[start..end].to_owned()
}

async fn consent_page(iss: &Arc<Issuer>, client_id: &str, challenge: &str) -> String {
    let r = call(
        iss,
        get(&authorize_uri(client_id, challenge, RESOURCE, Some("mcp"))),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.text()
}

async fn approve(iss: &Arc<Issuer>, client_id: &str, challenge: &str) -> String {
    let html = consent_page(iss, client_id, challenge).await;
    let r = call(
        iss,
        form(
            "/oauth/authorize",
            &[
                ("request", &sealed_request(&html)),
                ("approval_secret", SECRET),
                ("decision", "approve"),
            ],
            None,
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.text());
    let q = r.location();
    assert_eq!(q["state"], "st-123");
    assert_eq!(q["iss"], ISSUER);
    q["code"].clone()
}

/// The authorization code exchange as the SDK builds it.
fn exchange_request(
    client_id: &str,
    secret: Option<&str>,
    code: &str,
    verifier: &str,
    resource: &str,
) -> Request<Body> {
    let mut pairs = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT),
        ("client_id", client_id),
        ("code_verifier", verifier),
        ("resource", resource),
    ];
    if let Some(s) = secret {
        pairs.push(("client_secret", s));
    }
    form("/oauth/token", &pairs, None)
}

fn decode(iss: &Issuer, token: &str, audience: &str) -> AccessTokenClaims {
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, Algorithm::ES256);
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    let kid = header.kid.expect("kid");
    let jwks = iss.jwks();
    let jwk = jwks.find(&kid).expect("kid in jwks");
    let mut v = Validation::new(Algorithm::ES256);
    v.set_audience(&[audience]);
    v.set_issuer(&[ISSUER]);
    jsonwebtoken::decode::<AccessTokenClaims>(token, &DecodingKey::from_jwk(jwk).unwrap(), &v)
        .unwrap()
        .claims
}

#[tokio::test]
async fn metadata_document() {
    let (_d, iss) = setup();
    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ] {
        let r = call(&iss, get(path)).await;
        assert_eq!(r.status, StatusCode::OK);
        let m = r.json();
        assert_eq!(m["issuer"], ISSUER);
        assert_eq!(
            m["authorization_endpoint"],
            format!("{ISSUER}/oauth/authorize")
        );
        assert_eq!(m["token_endpoint"], format!("{ISSUER}/oauth/token"));
        assert_eq!(
            m["registration_endpoint"],
            format!("{ISSUER}/oauth/register")
        );
        assert_eq!(m["jwks_uri"], format!("{ISSUER}/oauth/jwks"));
        assert_eq!(m["scopes_supported"], json!(["mcp", "admin"]));
        assert_eq!(m["response_types_supported"], json!(["code"]));
        assert_eq!(
            m["grant_types_supported"],
            json!([
                "authorization_code",
                "refresh_token",
                "client_credentials",
                "urn:ietf:params:oauth:grant-type:token-exchange"
            ])
        );
        assert_eq!(m["code_challenge_methods_supported"], json!(["S256"]));
        assert_eq!(
            m["token_endpoint_auth_methods_supported"],
            json!(["none", "client_secret_post", "client_secret_basic"])
        );
    }
    let r = call(&iss, get("/oauth/jwks")).await;
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(jwks, iss.jwks());
    let k = &r.json()["keys"][0];
    assert_eq!(k["kty"], "EC");
    assert_eq!(k["crv"], "P-256");
    assert_eq!(k["alg"], "ES256");
    assert_eq!(k["use"], "sig");
    assert_eq!(k["kid"].as_str().unwrap().len(), 16);
}

#[tokio::test]
async fn dcr_public_client() {
    let (dir, iss) = setup();
    let c = register(&iss, Some("none")).await;
    assert!(c["client_id"].as_str().unwrap().len() >= 16);
    assert!(c["client_id_issued_at"].as_u64().unwrap() > 0);
    assert!(c.get("client_secret").is_none());
    assert_eq!(c["token_endpoint_auth_method"], "none");
    assert_eq!(c["redirect_uris"], json!([REDIRECT]));
    assert_eq!(
        c["grant_types"],
        json!(["authorization_code", "refresh_token"])
    );
    assert_eq!(c["response_types"], json!(["code"]));
    assert_eq!(c["scope"], "mcp admin");
    assert_eq!(c["client_name"], "Test <Client>");

    let file = dir.path().join("data/oauth-clients.json");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let stored: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(stored["clients"][0]["client_id"], c["client_id"]);
}

#[tokio::test]
async fn dcr_confidential_client_stores_only_a_hash() {
    let (dir, iss) = setup();
    // No token_endpoint_auth_method: RFC 7591 default, client_secret_basic.
    let c = register(&iss, None).await;
    assert_eq!(c["token_endpoint_auth_method"], "client_secret_basic");
    let secret = c["client_secret"].as_str().unwrap();
    assert_eq!(c["client_secret_expires_at"], 0);
    let file = std::fs::read_to_string(dir.path().join("data/oauth-clients.json")).unwrap();
    assert!(!file.contains(secret));
    assert!(file.contains(&crate::util::sha256_hex(secret.as_bytes())));
}

#[tokio::test]
async fn dcr_refuses_client_credentials_and_bad_metadata() {
    let (_d, iss) = setup();
    let mut req = sdk_registration(Some("client_secret_basic"));
    req["grant_types"] = json!(["client_credentials"]);
    let r = call(&iss, post_json("/oauth/register", &req)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error(), "invalid_client_metadata");
    assert!(
        r.json()["error_description"]
            .as_str()
            .unwrap()
            .contains("berth client create")
    );

    let mut req = sdk_registration(Some("none"));
    req["redirect_uris"] = json!(["http://evil.example/cb"]);
    let r = call(&iss, post_json("/oauth/register", &req)).await;
    assert_eq!(r.error(), "invalid_redirect_uri");

    let mut req = sdk_registration(Some("private_key_jwt"));
    req["redirect_uris"] = json!(["https://app.example/cb"]);
    let r = call(&iss, post_json("/oauth/register", &req)).await;
    assert_eq!(r.error(), "invalid_client_metadata");

    let r = call(
        &iss,
        post_json("/oauth/register", &json!(["not an object"])),
    )
    .await;
    assert_eq!(r.error(), "invalid_client_metadata");
}

#[tokio::test]
async fn full_authorization_code_flow() {
    let (_d, iss) = setup();
    let c = register(&iss, Some("none")).await;
    let id = c["client_id"].as_str().unwrap();
    let (verifier, challenge) = pkce();

    let html = consent_page(&iss, id, &challenge).await;
    assert!(html.contains("<form method=\"post\" action=\"/oauth/authorize\">"));
    assert!(html.contains("name=\"approval_secret\""));
    assert!(html.contains("name=\"decision\" value=\"approve\""));
    assert!(html.contains("name=\"decision\" value=\"deny\""));
    assert!(html.contains("Test &lt;Client&gt;"), "client name escaped");
    assert!(html.contains(RESOURCE));
    assert!(!html.contains("<script"));

    let code = approve(&iss, id, &challenge).await;
    let r = call(&iss, exchange_request(id, None, &code, &verifier, RESOURCE)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
    let t = r.json();
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["expires_in"], 3600);
    assert_eq!(t["scope"], "mcp");
    assert!(t["refresh_token"].as_str().unwrap().len() >= 40);

    let claims = decode(&iss, t["access_token"].as_str().unwrap(), RESOURCE);
    assert_eq!(claims.iss, ISSUER);
    assert_eq!(claims.aud, RESOURCE);
    assert_eq!(claims.sub, OPERATOR_SUBJECT);
    assert_eq!(claims.scope, "mcp");
    assert_eq!(claims.client_id, id);
    assert_eq!(claims.exp, claims.iat + 3600);
    assert_eq!(claims.nbf, claims.iat);
    assert!(!claims.jti.is_empty());
    let header = jsonwebtoken::decode_header(t["access_token"].as_str().unwrap()).unwrap();
    assert_eq!(
        header.kid.as_deref(),
        iss.jwks().keys[0].common.key_id.as_deref()
    );
}

#[tokio::test]
async fn confidential_client_post_and_basic() {
    let (_d, iss) = setup();
    // client_secret_post, as the SDK does when registered so.
    let c = register(&iss, Some("client_secret_post")).await;
    let id = c["client_id"].as_str().unwrap();
    let secret = c["client_secret"].as_str().unwrap();
    let (verifier, challenge) = pkce();
    let code = approve(&iss, id, &challenge).await;
    let r = call(
        &iss,
        exchange_request(id, Some(secret), &code, &verifier, RESOURCE),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    // Without its secret a confidential client is refused.
    let (verifier, challenge) = pkce();
    let code = approve(&iss, id, &challenge).await;
    let r = call(&iss, exchange_request(id, None, &code, &verifier, RESOURCE)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.error(), "invalid_client");

    // client_secret_basic, with client_id also in the body as the SDK sends it.
    let c = register(&iss, None).await;
    let id = c["client_id"].as_str().unwrap();
    let secret = c["client_secret"].as_str().unwrap();
    let (verifier, challenge) = pkce();
    let code = approve(&iss, id, &challenge).await;
    let r = call(
        &iss,
        form(
            "/oauth/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("client_id", id),
                ("code_verifier", &verifier),
                ("resource", RESOURCE),
            ],
            Some((id, secret)),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

#[tokio::test]
async fn wrong_verifier_then_reuse_are_invalid_grant() {
    let (_d, iss) = setup();
    let c = register(&iss, Some("none")).await;
    let id = c["client_id"].as_str().unwrap();
    let (verifier, challenge) = pkce();
    let code = approve(&iss, id, &challenge).await;
    let (wrong, _) = pkce();
    let r = call(&iss, exchange_request(id, None, &code, &wrong, RESOURCE)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error(), "invalid_grant");
    // The code is spent even by a failed attempt.
    let r = call(&iss, exchange_request(id, None, &code, &verifier, RESOURCE)).await;
    assert_eq!(r.error(), "invalid_grant");
}

#[tokio::test]
async fn code_reuse_is_refused_and_revokes_refresh_token() {
    let (_d, iss) = setup();
    let c = register(&iss, Some("none")).await;
    let id = c["client_id"].as_str().unwrap();
    let (verifier, challenge) = pkce();
    let code = approve(&iss, id, &challenge).await;
    let r = call(&iss, exchange_request(id, None, &code, &verifier, RESOURCE)).await;
    assert_eq!(r.status, StatusCode::OK);
    let refresh = r.json()["refresh_token"].as_str().unwrap().to_owned();

    let r = call(&iss, exchange_request(id, None, &code, &verifier, RESOURCE)).await;
    assert_eq!(r.error(), "invalid_grant");

    let r = call(
        &iss,
        form(
            "/oauth/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh),
                ("client_id", id),
            ],
            None,
        ),
    )
    .await;
    assert_eq!(r.error(), "invalid_grant");
}

#[tokio::test]
async fn wrong_approval_secret_is_401_with_the_form_again() {
    let (_d, iss) = setup();
    let c = register(&iss, Some("none")).await;
    let id = c["client_id"].as_str().unwrap();
    let (_, challenge) = pkce();
    let html = consent_page(&iss, id, &challenge).await;
    let sealed = sealed_request(&html);
    let r = call(
        &iss,
        form(
            "/oauth/authorize",
            &[
                ("request", &sealed),
                ("approval_secret", "guess"),
                ("decision", "approve"),
            ],
            None,
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.headers.get(header::LOCATION).is_none());
    let page = r.text();
    assert!(page.contains("Wrong approval secret"));
    assert_eq!(sealed_request(&page), sealed);

    // A tampered form is refused outright.
    let r = call(
        &iss,
        form(
            "/oauth/authorize",
            &[
                ("request", &format!("x{sealed}")),
                ("approval_secret", SECRET),
                ("decision", "approve"),
            ],
            None,
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.headers.get(header::LOCATION).is_none());
}

#[tokio::test]
async fn deny_redirects_access_denied() {
    let (_d, iss) = setup();
    let c = register(&iss, Some("none")).await;
    let id = c["client_id"].as_str().unwrap();
    let (_, challenge) = pkce();
    let html = consent_page(&iss, id, &challenge).await;
    let r = call(
        &iss,
        form(
            "/oauth/authorize",
            &[("request", &sealed_request(&html)), ("decision", "deny")],
            None,
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::FOUND);
    let q = r.location();
    assert_eq!(q["error"], "access_denied");
    assert_eq!(q["state"], "st-123");
    assert!(!q.contains_key("code"));
}

#[tokio::test]
async fn bad_resource_is_invalid_target() {
    let (_d, iss) = setup();
    let c = register(&iss, Some("none")).await;
    let id = c["client_id"].as_str().unwrap();
    let (verifier, challenge) = pkce();

    let uri = authorize_uri(id, &challenge, "http://127.0.0.1:8080/mcp/nope", None);
    let r = call(&iss, get(&uri)).await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(r.location()["error"], "invalid_target");

    // Trailing slash and host case do not matter (RFC 8707 comparison).
    let uri = authorize_uri(id, &challenge, "HTTP://127.0.0.1:8080/mcp/echo/", None);
    assert_eq!(call(&iss, get(&uri)).await.status, StatusCode::OK);

    // A different (even configured) resource at the token endpoint.
    let code = approve(&iss, id, &challenge).await;
    let r = call(
        &iss,
        exchange_request(id, None, &code, &verifier, OTHER_RESOURCE),
    )
    .await;
    assert_eq!(r.error(), "invalid_target");

    // A resource removed by a reload.
    iss.set_resources(vec![OTHER_RESOURCE.into()]);
    let uri = authorize_uri(id, &challenge, RESOURCE, None);
    assert_eq!(
        call(&iss, get(&uri)).await.location()["error"],
        "invalid_target"
    );
}

#[tokio::test]
async fn unverified_client_or_redirect_gets_a_page_not_a_redirect() {
    let (_d, iss) = setup();
    let (_, challenge) = pkce();
    let r = call(
        &iss,
        get(&authorize_uri("nobody", &challenge, RESOURCE, None)),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.headers.get(header::LOCATION).is_none());
    assert!(r.text().contains("Unknown client"));

    let c = register(&iss, Some("none")).await;
    let id = c["client_id"].as_str().unwrap();
    let uri = authorize_uri(id, &challenge, RESOURCE, None)
        .replace("localhost%3A3030", "localhost%3A9999");
    let r = call(&iss, get(&uri)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.headers.get(header::LOCATION).is_none());

    // PKCE is mandatory, and only S256.
    let uri = authorize_uri(id, &challenge, RESOURCE, None).replace("S256", "plain");
    assert_eq!(
        call(&iss, get(&uri)).await.location()["error"],
        "invalid_request"
    );
    let uri = authorize_uri(id, "", RESOURCE, None);
    assert_eq!(
        call(&iss, get(&uri)).await.location()["error"],
        "invalid_request"
    );
    // Scope beyond the supported set.
    let uri = authorize_uri(id, &challenge, RESOURCE, Some("mcp root"));
    assert_eq!(
        call(&iss, get(&uri)).await.location()["error"],
        "invalid_scope"
    );
}

#[tokio::test]
async fn client_credentials_basic_and_post() {
    let (_d, iss) = setup();
    let creds = iss.create_client("ci-bot", &["mcp".into()]).unwrap();
    assert_eq!(creds.client_id, "ci-bot");

    // The SDK's ClientCredentialsOAuthProvider default: client_secret_basic.
    let r = call(
        &iss,
        form(
            "/oauth/token",
            &[
                ("grant_type", "client_credentials"),
                ("resource", RESOURCE),
                ("scope", "mcp"),
            ],
            Some(("ci-bot", &creds.client_secret)),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let t = r.json();
    assert!(t.get("refresh_token").is_none());
    let claims = decode(&iss, t["access_token"].as_str().unwrap(), RESOURCE);
    assert_eq!(claims.sub, "ci-bot");
    assert_eq!(claims.client_id, "ci-bot");
    assert_eq!(claims.scope, "mcp");

    // client_secret_post, default scope.
    let r = call(
        &iss,
        form(
            "/oauth/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "ci-bot"),
                ("client_secret", &creds.client_secret),
                ("resource", OTHER_RESOURCE),
            ],
            None,
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["scope"], "mcp");

    // `audience` names the target as well as `resource` (what Berth's own
    // `[servers.NAME.oauth] audience` sends); both must then agree.
    let target = |pairs: &[(&str, &str)]| {
        let mut all = vec![("grant_type", "client_credentials")];
        all.extend_from_slice(pairs);
        form("/oauth/token", &all, Some(("ci-bot", &creds.client_secret)))
    };
    let r = call(&iss, target(&[("audience", RESOURCE)])).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    decode(&iss, r.json()["access_token"].as_str().unwrap(), RESOURCE);
    let r = call(
        &iss,
        target(&[("audience", RESOURCE), ("resource", RESOURCE)]),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = call(
        &iss,
        target(&[("audience", RESOURCE), ("resource", OTHER_RESOURCE)]),
    )
    .await;
    assert_eq!(r.error(), "invalid_target");
    assert!(r.text().contains("name different targets"), "{}", r.text());
    let r = call(
        &iss,
        target(&[("audience", "https://elsewhere.example/api")]),
    )
    .await;
    assert_eq!(r.error(), "invalid_target");
    assert!(
        r.text().contains("https://elsewhere.example/api") && r.text().contains("/mcp/"),
        "{}",
        r.text()
    );

    // What the SDK's ClientCredentialsOAuthProvider sends with
    // client_secret_post: the secret without client_id.
    let sdk_post = |secret: &str| {
        form(
            "/oauth/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_secret", secret),
                ("resource", RESOURCE),
                ("scope", "mcp"),
            ],
            None,
        )
    };
    let r = call(&iss, sdk_post(&creds.client_secret)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let claims = decode(&iss, r.json()["access_token"].as_str().unwrap(), RESOURCE);
    assert_eq!(claims.client_id, "ci-bot");
    assert_eq!(
        call(&iss, sdk_post("wrong")).await.error(),
        "invalid_client"
    );

    // Wrong secret, basic: 401 with a Basic challenge.
    let r = call(
        &iss,
        form(
            "/oauth/token",
            &[("grant_type", "client_credentials"), ("resource", RESOURCE)],
            Some(("ci-bot", "wrong")),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.error(), "invalid_client");
    assert!(
        r.headers[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );

    // Wrong secret, post.
    let r = call(
        &iss,
        form(
            "/oauth/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "ci-bot"),
                ("client_secret", "wrong"),
                ("resource", RESOURCE),
            ],
            None,
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.error(), "invalid_client");

    let basic = Some(("ci-bot", creds.client_secret.as_str()));
    let r = call(
        &iss,
        form(
            "/oauth/token",
            &[("grant_type", "client_credentials")],
            basic,
        ),
    )
    .await;
    assert_eq!(r.error(), "invalid_target");
    let r = call(
        &iss,
        form(
            "/oauth/token",
            &[
                ("grant_type", "client_credentials"),
                ("resource", RESOURCE),
                ("scope", "admin"),
            ],
            basic,
        ),
    )
    .await;
    assert_eq!(r.error(), "invalid_scope");

    // Rotating the secret invalidates the old one.
    let new = iss.create_client("ci-bot", &[]).unwrap();
    let r = call(
        &iss,
        form(
            "/oauth/token",
            &[("grant_type", "client_credentials"), ("resource", RESOURCE)],
            basic,
        ),
    )
    .await;
    assert_eq!(r.error(), "invalid_client");
    let r = call(
        &iss,
        form(
            "/oauth/token",
            &[("grant_type", "client_credentials"), ("resource", RESOURCE)],
            Some(("ci-bot", &new.client_secret)),
        ),
    )
    .await;
    assert_eq!(r.json()["scope"], "mcp admin");

    // A dynamically registered client may not use client_credentials.
    let c = register(&iss, Some("client_secret_post")).await;
    let r = call(
        &iss,
        form(
            "/oauth/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", c["client_id"].as_str().unwrap()),
                ("client_secret", c["client_secret"].as_str().unwrap()),
                ("resource", RESOURCE),
            ],
            None,
        ),
    )
    .await;
    assert_eq!(r.error(), "unauthorized_client");

    assert!(iss.create_client("bad name", &[]).is_err());
    assert!(iss.create_client("x", &["root".into()]).is_err());
}

#[tokio::test]
async fn client_created_by_another_process_is_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let gateway = Issuer::open(&data, config()).unwrap();
    // Registered through the running gateway first, so it has a loaded file.
    register(&gateway, Some("none")).await;
    // `berth client create` opens the same data dir in another process.
    let cli = Issuer::open(&data, config()).unwrap();
    let creds = cli.create_client("deploy", &[]).unwrap();
    let r = call(
        &gateway,
        form(
            "/oauth/token",
            &[("grant_type", "client_credentials"), ("resource", RESOURCE)],
            Some(("deploy", &creds.client_secret)),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    // And the CLI's write kept the gateway's registration.
    let file: Value =
        serde_json::from_slice(&std::fs::read(data.join("oauth-clients.json")).unwrap()).unwrap();
    assert_eq!(file["clients"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn refresh_rotates_and_old_token_fails() {
    let (_d, iss) = setup();
    let c = register(&iss, Some("client_secret_post")).await;
    let id = c["client_id"].as_str().unwrap();
    let secret = c["client_secret"].as_str().unwrap();
    let (verifier, challenge) = pkce();
    let code = approve(&iss, id, &challenge).await;
    let r = call(
        &iss,
        exchange_request(id, Some(secret), &code, &verifier, RESOURCE),
    )
    .await;
    let first = r.json()["refresh_token"].as_str().unwrap().to_owned();

    let refresh = |token: String, extra: Vec<(&'static str, &'static str)>| {
        let mut pairs: Vec<(&str, String)> = vec![
            ("grant_type", "refresh_token".into()),
            ("refresh_token", token),
            ("client_id", id.to_owned()),
            ("client_secret", secret.to_owned()),
            ("resource", RESOURCE.into()),
        ];
        pairs.extend(extra.into_iter().map(|(k, v)| (k, v.to_owned())));
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        form("/oauth/token", &pairs, None)
    };

    // Widening the scope is refused and does not spend the token.
    let r = call(&iss, refresh(first.clone(), vec![("scope", "mcp admin")])).await;
    assert_eq!(r.error(), "invalid_scope");

    let r = call(&iss, refresh(first.clone(), vec![])).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let t = r.json();
    let second = t["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    assert_eq!(t["scope"], "mcp");
    let claims = decode(&iss, t["access_token"].as_str().unwrap(), RESOURCE);
    assert_eq!(claims.sub, OPERATOR_SUBJECT);

    // The superseded token is refused, and its reuse revokes the new one too.
    let r = call(&iss, refresh(first, vec![])).await;
    assert_eq!(r.error(), "invalid_grant");
    let r = call(&iss, refresh(second, vec![])).await;
    assert_eq!(r.error(), "invalid_grant");
}

#[tokio::test]
async fn key_file_is_private_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("nested/data");
    let a = Issuer::open(&data, config()).unwrap();
    let key = data.join("issuer-key.pem");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(&data), 0o700);
    assert!(
        std::fs::read_to_string(&key)
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );

    let b = Issuer::open(&data, config()).unwrap();
    assert_eq!(a.jwks(), b.jwks());
    // A token minted by one verifies with the other's keys.
    let token = a
        .mint(&Grant {
            subject: "s".into(),
            client_id: "c".into(),
            audience: RESOURCE.into(),
            scopes: vec![],
            ttl: std::time::Duration::from_secs(60),
        })
        .unwrap();
    assert_eq!(decode(&b, &token, RESOURCE).scope, "");

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = Issuer::open(&data, config()).unwrap_err().to_string();
    assert!(err.contains("chmod 600"), "{err}");
}

#[tokio::test]
async fn config_and_body_limits() {
    let dir = tempfile::tempdir().unwrap();
    assert!(Issuer::open(dir.path(), IssuerConfig::new(ISSUER, "")).is_err());
    assert!(Issuer::open(dir.path(), IssuerConfig::new("not a url", SECRET)).is_err());

    let (_d, iss) = setup();
    let big = "a".repeat(70 * 1024);
    let r = call(
        &iss,
        form("/oauth/token", &[("grant_type", big.as_str())], None),
    )
    .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);

    let r = call(
        &iss,
        form("/oauth/token", &[("grant_type", "password")], None),
    )
    .await;
    assert_eq!(r.error(), "invalid_client");
    let c = register(&iss, Some("none")).await;
    let r = call(
        &iss,
        form(
            "/oauth/token",
            &[
                ("grant_type", "password"),
                ("client_id", c["client_id"].as_str().unwrap()),
            ],
            None,
        ),
    )
    .await;
    assert_eq!(r.error(), "unsupported_grant_type");
}

#[tokio::test]
async fn refresh_tokens_survive_a_restart() {
    let (dir, iss) = setup();
    let c = register(&iss, Some("client_secret_post")).await;
    let id = c["client_id"].as_str().unwrap().to_owned();
    let secret = c["client_secret"].as_str().unwrap().to_owned();
    let (verifier, challenge) = pkce();
    let code = approve(&iss, &id, &challenge).await;
    let r = call(
        &iss,
        exchange_request(&id, Some(&secret), &code, &verifier, RESOURCE),
    )
    .await;
    let first = r.json()["refresh_token"].as_str().unwrap().to_owned();
    drop(iss);

    // A new process on the same data dir: the client refreshes as if
    // nothing happened, and the grant is the one that was approved.
    let iss = Issuer::open(&dir.path().join("data"), config()).unwrap();
    let refresh = |token: &str| {
        form(
            "/oauth/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", token),
                ("client_id", &id),
                ("client_secret", &secret),
            ],
            None,
        )
    };
    let r = call(&iss, refresh(&first)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let t = r.json();
    let claims = decode(&iss, t["access_token"].as_str().unwrap(), RESOURCE);
    assert_eq!(claims.sub, OPERATOR_SUBJECT);
    assert_eq!(t["scope"], "mcp");
    drop(iss);

    // The rotation was kept too: the first token is now a replay.
    let iss = Issuer::open(&dir.path().join("data"), config()).unwrap();
    let r = call(&iss, refresh(&first)).await;
    assert_eq!(r.error(), "invalid_grant", "{}", r.text());
}

/// The consent form, submitted from network address `peer`.
fn consent_from(peer: &str, sealed: &str, secret: &str) -> Request<Body> {
    let mut req = form(
        "/oauth/authorize",
        &[
            ("request", sealed),
            ("approval_secret", secret),
            ("decision", "approve"),
        ],
        None,
    );
    let addr: std::net::SocketAddr = peer.parse().unwrap();
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(addr));
    req
}

async fn sealed_consent(iss: &Arc<Issuer>) -> String {
    let c = register(iss, Some("none")).await;
    let (_, challenge) = pkce();
    sealed_request(&consent_page(iss, c["client_id"].as_str().unwrap(), &challenge).await)
}

#[tokio::test]
async fn wrong_approval_secrets_lock_out_only_the_peer_that_guessed() {
    let (_d, iss) = setup();
    let sealed = sealed_consent(&iss).await;
    let guesser = "198.51.100.7:40000";
    for i in 0..20 {
        let r = call(&iss, consent_from(guesser, &sealed, &format!("guess-{i}"))).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "guess {i}");
    }
    // The guesser is refused even with the right secret now...
    let r = call(&iss, consent_from(guesser, &sealed, SECRET)).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text());
    assert!(r.text().contains("Too many wrong approval secrets"));
    // ...but the operator, elsewhere, approves as usual.
    let r = call(&iss, consent_from("203.0.113.9:50000", &sealed, SECRET)).await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.text());
}

#[tokio::test]
async fn an_ipv6_slash_64_counts_as_one_peer() {
    let (_d, iss) = setup();
    let sealed = sealed_consent(&iss).await;
    // Twenty guesses from twenty addresses of one /64...
    for i in 0..20 {
        let peer = format!("[2001:db8:0:1::{:x}]:1", i + 1);
        let r = call(&iss, consent_from(&peer, &sealed, "guess")).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
    }
    // ...exhaust that /64, not the next one.
    let r = call(
        &iss,
        consent_from("[2001:db8:0:1:ffff::1]:1", &sealed, "guess"),
    )
    .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let r = call(&iss, consent_from("[2001:db8:0:2::1]:1", &sealed, "guess")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}
