//! Token validation against a static key set, case by case.

use std::collections::{BTreeMap, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use berth_auth::{
    ApiKey, AuthConfig, AuthMode, Authenticator, Denial, KeySource, ServerAccess, hash_api_key,
};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use p256::ecdsa::SigningKey;
use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use serde_json::{Value, json};

const ISSUER: &str = "https://idp.test";
const BASE: &str = "https://mcp.test";

struct Idp {
    pem: String,
    public_pem: String,
    jwks: JwkSet,
}

fn idp() -> Idp {
    let key = SigningKey::random(&mut rand_core::OsRng);
    let point = key.verifying_key().to_encoded_point(false);
    let jwks = serde_json::from_value(json!({"keys": [{
        "kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
        "x": B64.encode(point.x().unwrap()), "y": B64.encode(point.y().unwrap()),
    }]}))
    .unwrap();
    Idp {
        pem: key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
        public_pem: key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap(),
        jwks,
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(aud: &str) -> Value {
    json!({"iss": ISSUER, "sub": "alice", "aud": aud, "exp": now() + 300, "iat": now(),
           "nbf": now(), "scope": "tools:read tools:call", "client_id": "agent"})
}

fn sign(idp: &Idp, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("k1".into());
    encode(
        &header,
        claims,
        &EncodingKey::from_ec_pem(idp.pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn authenticator(idp: &Idp) -> Authenticator {
    let config = AuthConfig {
        mode: AuthMode::OAuth,
        issuer: ISSUER.into(),
        scopes_supported: vec!["tools:read".into(), "tools:call".into()],
        ..AuthConfig::default()
    };
    let auth = Authenticator::new(config, BASE, Some(KeySource::from_set(&idp.jwks)));
    let mut tool_scopes = BTreeMap::new();
    tool_scopes.insert("create_issue".to_string(), vec!["github:write".to_string()]);
    auth.set_access(HashMap::from([
        (
            "github".to_string(),
            ServerAccess {
                required_scopes: vec!["tools:call".into()],
                tool_scopes,
                ..ServerAccess::default()
            },
        ),
        ("other".to_string(), ServerAccess::default()),
    ]));
    auth
}

async fn check(auth: &Authenticator, server: &str, token: &str) -> Result<String, Denial> {
    let header = format!("Bearer {token}");
    auth.authenticate(server, Some(header.as_bytes()))
        .await
        .map(|p| p.subject.clone())
}

fn invalid(result: Result<String, Denial>, why: &str) {
    match result {
        Err(Denial::InvalidToken(message)) => {
            assert!(message.contains(why), "{message:?} should say {why:?}")
        }
        other => panic!("expected invalid_token ({why}), got {other:?}"),
    }
}

#[tokio::test]
async fn a_token_is_valid_only_for_its_own_server() {
    let idp = idp();
    let auth = authenticator(&idp);
    let token = sign(&idp, &claims("https://mcp.test/mcp/github"));
    assert_eq!(check(&auth, "github", &token).await.unwrap(), "alice");
    invalid(check(&auth, "other", &token).await, "another resource");
}

#[tokio::test]
async fn lifetime_issuer_and_signature_are_checked() {
    let idp = idp();
    let auth = authenticator(&idp);
    let aud = "https://mcp.test/mcp/github";
    let mut expired = claims(aud);
    expired["exp"] = json!(now() - 120);
    invalid(
        check(&auth, "github", &sign(&idp, &expired)).await,
        "expired",
    );
    let mut early = claims(aud);
    early["nbf"] = json!(now() + 600);
    invalid(
        check(&auth, "github", &sign(&idp, &early)).await,
        "not valid yet",
    );
    let mut foreign = claims(aud);
    foreign["iss"] = json!("https://evil.test");
    invalid(
        check(&auth, "github", &sign(&idp, &foreign)).await,
        "another issuer",
    );
    // Alter a character inside the signature (the last one may carry only
    // padding bits).
    let mut token = sign(&idp, &claims(aud)).into_bytes();
    let at = token.len() - 10;
    token[at] = if token[at] == b'A' { b'B' } else { b'A' };
    let token = String::from_utf8(token).unwrap();
    invalid(check(&auth, "github", &token).await, "signature");
    let mut no_exp = claims(aud);
    no_exp.as_object_mut().unwrap().remove("exp");
    invalid(
        check(&auth, "github", &sign(&idp, &no_exp)).await,
        "lacks exp",
    );
}

#[tokio::test]
async fn none_and_hmac_with_the_public_key_are_refused() {
    let idp = idp();
    let auth = authenticator(&idp);
    let body = claims("https://mcp.test/mcp/github");
    let unsigned = format!(
        "{}.{}.",
        B64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        B64.encode(body.to_string())
    );
    invalid(check(&auth, "github", &unsigned).await, "alg none");
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k1".into());
    let confused = encode(
        &header,
        &body,
        &EncodingKey::from_secret(idp.public_pem.as_bytes()),
    )
    .unwrap();
    invalid(check(&auth, "github", &confused).await, "HS256");
}

#[tokio::test]
async fn scopes_gate_the_server_and_the_challenge_names_them() {
    let idp = idp();
    let auth = authenticator(&idp);
    let mut reader = claims("https://mcp.test/mcp/github");
    reader["scope"] = json!("tools:read");
    let denial = check(&auth, "github", &sign(&idp, &reader))
        .await
        .unwrap_err();
    assert_eq!(denial, Denial::InsufficientScope(vec!["tools:call".into()]));
    let header = auth.challenge("github", &denial).unwrap();
    assert!(header.contains(r#"error="insufficient_scope""#), "{header}");
    assert!(
        header.contains(r#"resource_metadata="https://mcp.test/.well-known/oauth-protected-resource/mcp/github""#),
        "{header}"
    );
    assert_eq!(check(&auth, "github", "").await, Err(Denial::Missing));
    let missing = auth.challenge("github", &Denial::Missing).unwrap();
    assert!(missing.ends_with(r#"scope="tools:call""#), "{missing}");
    let doc = auth.resource_metadata(Some("github"));
    assert_eq!(doc["resource"], "https://mcp.test/mcp/github");
    assert_eq!(doc["authorization_servers"][0], ISSUER);
}

#[tokio::test]
async fn api_keys_are_matched_by_digest_and_server() {
    let config = AuthConfig {
        mode: AuthMode::ApiKey,
        api_keys: vec![ApiKey {
            name: "ci".into(),
            sha256: berth_auth::parse_api_key_digest(&hash_api_key("bk_test_123")).unwrap(),
            scopes: vec!["tools:call".into()],
            servers: vec!["github".into()],
        }],
        ..AuthConfig::default()
    };
    let auth = Authenticator::new(config, BASE, None);
    assert_eq!(check(&auth, "github", "bk_test_123").await.unwrap(), "ci");
    invalid(
        check(&auth, "github", "bk_test_124").await,
        "unknown API key",
    );
    invalid(check(&auth, "other", "bk_test_123").await, "not allowed");
}

#[tokio::test]
async fn opaque_tokens_are_introspected() {
    use axum::Form;
    use axum::http::HeaderMap;
    async fn introspect(
        headers: HeaderMap,
        Form(form): Form<HashMap<String, String>>,
    ) -> axum::Json<Value> {
        // Berth authenticates to the endpoint as its configured client.
        let basic = headers["authorization"].to_str().unwrap();
        if basic != format!("Basic {}", B64_STD.encode("berth:s3cret")) {
            return axum::Json(json!({"active": false}));
        }
        let aud = "https://mcp.test/mcp/github";
        axum::Json(match form["token"].as_str() {
            "opaque-good" => json!({"active": true, "aud": aud, "iss": ISSUER, "sub": "carol",
                                    "client_id": "agent", "scope": "tools:call", "exp": now() + 60}),
            "opaque-other" => {
                json!({"active": true, "aud": ["https://mcp.test/mcp/other"], "scope": "tools:call"})
            }
            "opaque-foreign" => {
                json!({"active": true, "aud": aud, "iss": "https://evil.test", "scope": "tools:call"})
            }
            _ => json!({"active": false}),
        })
    }
    use base64::engine::general_purpose::STANDARD as B64_STD;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}/introspect", listener.local_addr().unwrap());
    let app = axum::Router::new().route("/introspect", axum::routing::post(introspect));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let config = |endpoint: String| AuthConfig {
        mode: AuthMode::OAuth,
        issuer: ISSUER.into(),
        introspection: Some(berth_auth::Introspection {
            endpoint,
            client_id: "berth".into(),
            client_secret: "s3cret".into(),
        }),
        ..AuthConfig::default()
    };
    let auth = Authenticator::new(
        config(endpoint),
        BASE,
        Some(KeySource::from_set(&idp().jwks)),
    );
    assert_eq!(
        check(&auth, "github", "opaque-good").await.unwrap(),
        "carol"
    );
    invalid(
        check(&auth, "github", "opaque-other").await,
        "another resource",
    );
    invalid(
        check(&auth, "github", "opaque-foreign").await,
        "another issuer",
    );
    invalid(check(&auth, "github", "opaque-revoked").await, "inactive");
    // An unreachable endpoint is a 503, not a refusal of the token.
    let down = Authenticator::new(config("http://127.0.0.1:9/introspect".into()), BASE, None);
    assert!(matches!(
        check(&down, "github", "opaque-good").await,
        Err(Denial::Unavailable(_))
    ));
}
