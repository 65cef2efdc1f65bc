//! Token exchange (RFC 8693) through the router, as the gateway drives it
//! when it calls a remote upstream on a caller's behalf.

use std::time::Duration;

use jsonwebtoken::{EncodingKey, Header};

use super::*;

const UPSTREAM: &str = "https://upstream.example/mcp";
const NAMED_UPSTREAM: &str = "urn:example:upstream";
const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const AT: &str = "urn:ietf:params:oauth:token-type:access_token";
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

fn exchange_config() -> IssuerConfig {
    let mut cfg = config();
    cfg.exchange_audiences = vec![UPSTREAM.into(), NAMED_UPSTREAM.into()];
    cfg
}

/// An issuer allowing [`UPSTREAM`], and the operator client `gateway`.
fn setup_exchange() -> (tempfile::TempDir, Arc<Issuer>, ClientCredentials) {
    let dir = tempfile::tempdir().unwrap();
    let iss = Issuer::open(&dir.path().join("data"), exchange_config()).unwrap();
    let gw = iss.create_client("gateway", &["mcp".into()]).unwrap();
    (dir, iss, gw)
}

/// A caller's access token, as the gateway would have validated it.
fn caller_token(iss: &Issuer, scopes: &[&str], ttl: Duration) -> String {
    iss.mint(&Grant {
        subject: "alice".into(),
        client_id: "claude-desktop".into(),
        audience: RESOURCE.into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        ttl,
    })
    .unwrap()
}

const HOUR: Duration = Duration::from_secs(3600);

/// A token exchange request from `gw` with HTTP Basic, `subject_token` of
/// type access_token, and `extra` parameters.
fn exchange_req(gw: &ClientCredentials, subject: &str, extra: &[(&str, &str)]) -> Request<Body> {
    let mut pairs = vec![
        ("grant_type", EXCHANGE),
        ("subject_token", subject),
        ("subject_token_type", AT),
    ];
    pairs.extend_from_slice(extra);
    form(
        "/oauth/token",
        &pairs,
        Some((&gw.client_id, &gw.client_secret)),
    )
}

fn description(r: &Resp) -> String {
    r.json()["error_description"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Asserts `r` is the error `code`, its description mentions `needle`, and
/// it does not quote `token`.
fn assert_refused(r: &Resp, code: &str, needle: &str, token: &str) {
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert_eq!(r.error(), code, "{}", r.text());
    let d = description(r);
    assert!(d.contains(needle), "`{needle}` not in: {d}");
    assert!(!r.text().contains(token), "the token was echoed: {d}");
}

#[tokio::test]
async fn exchange_for_an_allowed_audience() {
    let (_d, iss, gw) = setup_exchange();
    let subject = caller_token(&iss, &["mcp", "admin"], HOUR);
    let r = call(&iss, exchange_req(&gw, &subject, &[("audience", UPSTREAM)])).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
    let t = r.json();
    assert_eq!(t["issued_token_type"], AT);
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["scope"], "mcp admin", "default: the subject's scopes");
    assert!(t.get("refresh_token").is_none());
    let expires_in = t["expires_in"].as_u64().unwrap();
    assert!((3590..=3600).contains(&expires_in), "{expires_in}");

    let token = t["access_token"].as_str().unwrap();
    let claims = decode(&iss, token, UPSTREAM);
    assert_eq!(claims.sub, "alice");
    assert_eq!(claims.aud, UPSTREAM);
    assert_eq!(claims.scope, "mcp admin");
    assert_eq!(claims.client_id, "gateway");
    assert_eq!(
        claims.act,
        Some(Actor {
            sub: "gateway".into(),
            act: None
        })
    );
    let raw: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(raw["act"], json!({"sub": "gateway"}));

    // client_secret_post and the jwt token type work as well, and a
    // non-URL audience from the allowlist is used as given.
    let r = call(
        &iss,
        form(
            "/oauth/token",
            &[
                ("grant_type", EXCHANGE),
                ("client_id", "gateway"),
                ("client_secret", &gw.client_secret),
                ("subject_token", &subject),
                ("subject_token_type", JWT),
                ("requested_token_type", AT),
                ("audience", NAMED_UPSTREAM),
            ],
            None,
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let claims = decode(
        &iss,
        r.json()["access_token"].as_str().unwrap(),
        NAMED_UPSTREAM,
    );
    assert_eq!(claims.aud, NAMED_UPSTREAM);

    // Plain tokens (client_credentials, authorization code) carry no `act`.
    let raw: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(subject.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert!(raw.get("act").is_none(), "{raw}");
}

#[tokio::test]
async fn exchange_with_resource() {
    let (_d, iss, gw) = setup_exchange();
    // A token from the real consent flow as the subject.
    let c = register(&iss, Some("none")).await;
    let id = c["client_id"].as_str().unwrap();
    let (verifier, challenge) = pkce();
    let code = approve(&iss, id, &challenge).await;
    let r = call(&iss, exchange_request(id, None, &code, &verifier, RESOURCE)).await;
    let subject = r.json()["access_token"].as_str().unwrap().to_owned();

    // RFC 8707 comparison: an equivalent spelling of the allowed URL; `aud`
    // is the URL as configured.
    let r = call(
        &iss,
        exchange_req(
            &gw,
            &subject,
            &[("resource", "HTTPS://Upstream.Example:443/mcp/")],
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let claims = decode(&iss, r.json()["access_token"].as_str().unwrap(), UPSTREAM);
    assert_eq!(claims.sub, OPERATOR_SUBJECT);
    assert_eq!(claims.scope, "mcp");

    // One of the issuer's own resources is a valid target too.
    let r = call(
        &iss,
        exchange_req(&gw, &subject, &[("resource", OTHER_RESOURCE)]),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let claims = decode(
        &iss,
        r.json()["access_token"].as_str().unwrap(),
        OTHER_RESOURCE,
    );
    assert_eq!(claims.aud, OTHER_RESOURCE);

    // audience and resource together must agree.
    let r = call(
        &iss,
        exchange_req(
            &gw,
            &subject,
            &[
                ("audience", UPSTREAM),
                ("resource", &format!("{UPSTREAM}/")),
            ],
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = call(
        &iss,
        exchange_req(
            &gw,
            &subject,
            &[("audience", UPSTREAM), ("resource", OTHER_RESOURCE)],
        ),
    )
    .await;
    assert_refused(&r, "invalid_target", "different targets", &subject);

    // Neither: nothing to bind the token to.
    let r = call(&iss, exchange_req(&gw, &subject, &[])).await;
    assert_refused(&r, "invalid_request", "audience or resource", &subject);
    // Two audiences: one target per token.
    let r = call(
        &iss,
        exchange_req(
            &gw,
            &subject,
            &[("audience", UPSTREAM), ("audience", NAMED_UPSTREAM)],
        ),
    )
    .await;
    assert_refused(&r, "invalid_target", "only one", &subject);
    let r = call(
        &iss,
        exchange_req(&gw, &subject, &[("resource", "not a uri")]),
    )
    .await;
    assert_refused(&r, "invalid_target", "absolute URI", &subject);
}

#[tokio::test]
async fn scopes_narrow_but_never_widen() {
    let (_d, iss, gw) = setup_exchange();
    let subject = caller_token(&iss, &["mcp", "admin"], HOUR);
    let r = call(
        &iss,
        exchange_req(&gw, &subject, &[("audience", UPSTREAM), ("scope", "mcp")]),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["scope"], "mcp");
    let narrowed = r.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(decode(&iss, &narrowed, UPSTREAM).scope, "mcp");

    // The narrowed token cannot be exchanged back up.
    let r = call(
        &iss,
        exchange_req(
            &gw,
            &narrowed,
            &[("audience", UPSTREAM), ("scope", "mcp admin")],
        ),
    )
    .await;
    assert_refused(&r, "invalid_scope", "`admin` exceeds", &narrowed);

    // Nor may the gateway ask for a scope the caller never had, even one
    // its own client is allowed.
    let subject = caller_token(&iss, &[], HOUR);
    let r = call(
        &iss,
        exchange_req(&gw, &subject, &[("audience", UPSTREAM), ("scope", "mcp")]),
    )
    .await;
    assert_refused(&r, "invalid_scope", "(none)", &subject);
    let r = call(&iss, exchange_req(&gw, &subject, &[("audience", UPSTREAM)])).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["scope"], "");
}

#[tokio::test]
async fn unsupported_token_types_and_actor_tokens_are_refused() {
    let (_d, iss, gw) = setup_exchange();
    let subject = caller_token(&iss, &["mcp"], HOUR);
    for t in [
        "urn:ietf:params:oauth:token-type:refresh_token",
        "urn:ietf:params:oauth:token-type:id_token",
        "urn:ietf:params:oauth:token-type:saml2",
    ] {
        let r = call(
            &iss,
            form(
                "/oauth/token",
                &[
                    ("grant_type", EXCHANGE),
                    ("subject_token", &subject),
                    ("subject_token_type", t),
                    ("audience", UPSTREAM),
                ],
                Some(("gateway", &gw.client_secret)),
            ),
        )
        .await;
        assert_refused(&r, "invalid_request", "is not supported", &subject);
    }
    let r = call(
        &iss,
        form(
            "/oauth/token",
            &[
                ("grant_type", EXCHANGE),
                ("subject_token", &subject),
                ("audience", UPSTREAM),
            ],
            Some(("gateway", &gw.client_secret)),
        ),
    )
    .await;
    assert_refused(
        &r,
        "invalid_request",
        "subject_token_type is required",
        &subject,
    );
    let r = call(
        &iss,
        form(
            "/oauth/token",
            &[
                ("grant_type", EXCHANGE),
                ("subject_token_type", AT),
                ("audience", UPSTREAM),
            ],
            Some(("gateway", &gw.client_secret)),
        ),
    )
    .await;
    assert_refused(
        &r,
        "invalid_request",
        "subject_token is required",
        "NO-TOKEN-SENT",
    );
    let r = call(
        &iss,
        exchange_req(
            &gw,
            &subject,
            &[
                ("audience", UPSTREAM),
                (
                    "requested_token_type",
                    "urn:ietf:params:oauth:token-type:refresh_token",
                ),
            ],
        ),
    )
    .await;
    assert_refused(&r, "invalid_request", "requested_token_type", &subject);
    let r = call(
        &iss,
        exchange_req(
            &gw,
            &subject,
            &[
                ("audience", UPSTREAM),
                ("actor_token", &subject),
                ("actor_token_type", AT),
            ],
        ),
    )
    .await;
    assert_refused(&r, "invalid_request", "actor_token", &subject);
}

/// Signs `claims` with the key in `data` under `typ`, bypassing the issuer.
fn forge(data: &std::path::Path, typ: &str, claims: &Value) -> String {
    use p256::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
    let pem = std::fs::read_to_string(data.join("issuer-key.pem")).unwrap();
    let der = p256::SecretKey::from_pkcs8_pem(&pem)
        .unwrap()
        .to_pkcs8_der()
        .unwrap();
    let mut header = Header::new(Algorithm::ES256);
    header.typ = Some(typ.into());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_der(der.as_bytes())).unwrap()
}

fn claims_json(iss: &str, exp: u64) -> Value {
    let now = crate::util::unix_now();
    json!({
        "iss": iss, "sub": "alice", "aud": RESOURCE, "exp": exp, "iat": now - 100,
        "nbf": now - 100, "jti": "j", "scope": "mcp", "client_id": "c",
    })
}

#[tokio::test]
async fn subject_tokens_not_from_this_issuer_are_refused() {
    let (dir, iss, gw) = setup_exchange();
    let data = dir.path().join("data");
    let now = crate::util::unix_now();
    let target = [("audience", UPSTREAM)];

    // Signed by another issuer's key.
    let other_dir = tempfile::tempdir().unwrap();
    let other = Issuer::open(other_dir.path(), exchange_config()).unwrap();
    let foreign = caller_token(&other, &["mcp"], HOUR);
    let r = call(&iss, exchange_req(&gw, &foreign, &target)).await;
    assert_refused(&r, "invalid_grant", "signature does not verify", &foreign);

    // Our key, but another issuer identifier (same data dir, other URL).
    let mut cfg = exchange_config();
    cfg.issuer = "http://127.0.0.1:9999".into();
    let renamed = Issuer::open(&data, cfg).unwrap();
    let wrong_iss = caller_token(&renamed, &["mcp"], HOUR);
    let r = call(&iss, exchange_req(&gw, &wrong_iss, &target)).await;
    assert_refused(&r, "invalid_grant", "another issuer", &wrong_iss);

    // Expired (no leeway).
    let expired = forge(&data, "at+jwt", &claims_json(ISSUER, now - 5));
    let r = call(&iss, exchange_req(&gw, &expired, &target)).await;
    assert_refused(&r, "invalid_grant", "expired", &expired);

    // Ours and valid, but its payload altered (scope widened).
    let good = caller_token(&iss, &["mcp"], HOUR);
    let parts: Vec<&str> = good.split('.').collect();
    let mut payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    payload["scope"] = json!("mcp admin");
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        parts[2]
    );
    let r = call(&iss, exchange_req(&gw, &tampered, &target)).await;
    assert_refused(&r, "invalid_grant", "signature does not verify", &tampered);
    // Or its signature altered.
    let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    sig[10] ^= 1;
    let bad_sig = format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(sig));
    let r = call(&iss, exchange_req(&gw, &bad_sig, &target)).await;
    assert_refused(&r, "invalid_grant", "signature does not verify", &bad_sig);

    // Our key, but not an access token (typ JWT, e.g. some other artefact).
    let not_at = forge(&data, "JWT", &claims_json(ISSUER, now + 600));
    let r = call(&iss, exchange_req(&gw, &not_at, &target)).await;
    assert_refused(&r, "invalid_grant", "typ", &not_at);

    // Not a JWT at all.
    let r = call(&iss, exchange_req(&gw, "opaque-token-value", &target)).await;
    assert_refused(&r, "invalid_grant", "not a JWT", "opaque-token-value");

    // The genuine token still works: the refusals were about the tokens.
    let r = call(&iss, exchange_req(&gw, &good, &target)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

#[tokio::test]
async fn audiences_outside_the_allowlist_are_refused() {
    let (_d, iss, gw) = setup_exchange();
    let subject = caller_token(&iss, &["mcp"], HOUR);
    let r = call(
        &iss,
        exchange_req(&gw, &subject, &[("audience", "https://evil.example/mcp")]),
    )
    .await;
    assert_refused(
        &r,
        "invalid_target",
        "audience `https://evil.example/mcp` is not one this issuer mints exchanged tokens for; allowed: https://upstream.example/mcp, urn:example:upstream",
        &subject,
    );

    // A reload replaces the list; a single audience can be added.
    iss.set_exchange_audiences(vec!["https://evil.example/mcp".into()]);
    let r = call(
        &iss,
        exchange_req(&gw, &subject, &[("audience", "https://evil.example/mcp")]),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = call(&iss, exchange_req(&gw, &subject, &[("audience", UPSTREAM)])).await;
    assert_refused(&r, "invalid_target", "not one this issuer", &subject);
    iss.allow_exchange_audience(UPSTREAM);
    iss.allow_exchange_audience(UPSTREAM);
    iss.allow_exchange_audience("");
    let r = call(&iss, exchange_req(&gw, &subject, &[("audience", UPSTREAM)])).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    iss.set_exchange_audiences(Vec::new());
    let r = call(&iss, exchange_req(&gw, &subject, &[("audience", UPSTREAM)])).await;
    assert_refused(&r, "invalid_target", "allowed: none configured", &subject);
    // The issuer's own resources stay allowed.
    let r = call(&iss, exchange_req(&gw, &subject, &[("resource", RESOURCE)])).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

#[tokio::test]
async fn only_operator_clients_with_the_grant_may_exchange() {
    let (dir, iss, gw) = setup_exchange();
    let subject = caller_token(&iss, &["mcp"], HOUR);
    let target = [
        ("grant_type", EXCHANGE),
        ("subject_token", subject.as_str()),
        ("subject_token_type", AT),
        ("audience", UPSTREAM),
    ];

    // A dynamically registered confidential client.
    let c = register(&iss, Some("client_secret_post")).await;
    let mut pairs = target.to_vec();
    pairs.push(("client_id", c["client_id"].as_str().unwrap()));
    pairs.push(("client_secret", c["client_secret"].as_str().unwrap()));
    let r = call(&iss, form("/oauth/token", &pairs, None)).await;
    assert_refused(
        &r,
        "unauthorized_client",
        "only for clients created by the operator",
        &subject,
    );
    // Registration does not hand out the grant either.
    let mut req = sdk_registration(Some("client_secret_post"));
    req["grant_types"] = json!(["authorization_code", EXCHANGE]);
    let r = call(&iss, post_json("/oauth/register", &req)).await;
    assert_eq!(r.error(), "invalid_client_metadata", "{}", r.text());
    // A public one.
    let c = register(&iss, Some("none")).await;
    let mut pairs = target.to_vec();
    pairs.push(("client_id", c["client_id"].as_str().unwrap()));
    let r = call(&iss, form("/oauth/token", &pairs, None)).await;
    assert_eq!(r.error(), "unauthorized_client", "{}", r.text());

    // The operator client with a wrong secret.
    let r = call(
        &iss,
        form("/oauth/token", &target, Some(("gateway", "wrong"))),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.error(), "invalid_client");
    // No client authentication at all.
    let r = call(&iss, form("/oauth/token", &target, None)).await;
    assert_eq!(r.error(), "invalid_client");

    // An operator client stored before the grant existed lacks it, and is
    // told how to get it.
    let path = dir.path().join("data/oauth-clients.json");
    let mut file: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for c in file["clients"].as_array_mut().unwrap() {
        if c["client_id"] == "gateway" {
            assert_eq!(c["grant_types"], json!(["client_credentials", EXCHANGE]));
            c["grant_types"] = json!(["client_credentials"]);
        }
    }
    std::fs::write(&path, file.to_string()).unwrap();
    let stale = Issuer::open(&dir.path().join("data"), exchange_config()).unwrap();
    let r = call(
        &stale,
        form(
            "/oauth/token",
            &target,
            Some(("gateway", &gw.client_secret)),
        ),
    )
    .await;
    assert_refused(&r, "unauthorized_client", "berth client create", &subject);
    // It still has client_credentials.
    let r = call(
        &stale,
        form(
            "/oauth/token",
            &[("grant_type", "client_credentials"), ("resource", RESOURCE)],
            Some(("gateway", &gw.client_secret)),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

#[tokio::test]
async fn re_exchange_nests_the_prior_actor() {
    let (_d, iss, gw) = setup_exchange();
    let other = iss.create_client("gateway-2", &[]).unwrap();
    let subject = caller_token(&iss, &["mcp"], HOUR);
    let r = call(&iss, exchange_req(&gw, &subject, &[("audience", UPSTREAM)])).await;
    let first = r.json()["access_token"].as_str().unwrap().to_owned();

    // The upstream-bound token exchanged again, by another client.
    let r = call(
        &iss,
        exchange_req(&other, &first, &[("audience", NAMED_UPSTREAM)]),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let token = r.json()["access_token"].as_str().unwrap().to_owned();
    let claims = decode(&iss, &token, NAMED_UPSTREAM);
    assert_eq!(claims.sub, "alice", "the subject survives every hop");
    assert_eq!(claims.client_id, "gateway-2");
    let raw: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        raw["act"],
        json!({"sub": "gateway-2", "act": {"sub": "gateway"}})
    );

    // The chain is bounded: keep exchanging until refused.
    let mut token = token;
    let mut hops = 2;
    loop {
        let r = call(&iss, exchange_req(&gw, &token, &[("audience", UPSTREAM)])).await;
        if r.status != StatusCode::OK {
            assert_refused(&r, "invalid_grant", "already been exchanged", &token);
            break;
        }
        hops += 1;
        assert!(hops <= 8, "exchanged {hops} times");
        token = r.json()["access_token"].as_str().unwrap().to_owned();
        let claims = decode(&iss, &token, UPSTREAM);
        assert_eq!(claims.act.unwrap().depth(), hops);
    }
    assert_eq!(hops, 8);
}

#[tokio::test]
async fn exchanged_tokens_never_outlive_the_subject() {
    let (_d, iss, gw) = setup_exchange();
    let short = caller_token(&iss, &["mcp"], Duration::from_secs(120));
    let short_exp = decode(&iss, &short, RESOURCE).exp;
    let r = call(&iss, exchange_req(&gw, &short, &[("audience", UPSTREAM)])).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let t = r.json();
    let claims = decode(&iss, t["access_token"].as_str().unwrap(), UPSTREAM);
    assert_eq!(claims.exp, short_exp);
    let expires_in = t["expires_in"].as_u64().unwrap();
    assert!((1..=120).contains(&expires_in), "{expires_in}");
    assert_eq!(claims.exp - claims.iat, expires_in);

    // A long-lived subject: the normal lifetime applies.
    let long = caller_token(&iss, &["mcp"], Duration::from_secs(7200));
    let r = call(&iss, exchange_req(&gw, &long, &[("audience", UPSTREAM)])).await;
    let claims = decode(&iss, r.json()["access_token"].as_str().unwrap(), UPSTREAM);
    assert_eq!(claims.exp - claims.iat, 3600);
    assert!(claims.exp < decode(&iss, &long, RESOURCE).exp);
}
