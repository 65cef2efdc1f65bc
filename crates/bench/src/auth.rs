//! `auth`: what checking a bearer token costs Berth per request, in process.
//!
//! A token from Berth's built-in issuer (ES256) is checked by the same
//! [`Authenticator`] the gateway runs, for the server it was minted for:
//!
//! * `verify` — full validation with the issuer's keys already in hand (a
//!   cached JWKS): header, key lookup, ES256 signature, claims;
//! * `cached` — a token seen before: a SHA-256 of the token and a map lookup
//!   (what every request of a session after its first costs);
//! * `api-key` — `[auth] mode = "api_key"`: a SHA-256 and a lookup;
//! * `reject` — a token for another server (signature checked, audience refused).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use berth_auth::{AuthConfig, AuthMode, Authenticator, KeySource, ServerAccess};
use berth_issuer::{Grant, Issuer, IssuerConfig};
use hdrhistogram::Histogram;
use serde_json::{Value, json};

const BASE: &str = "http://127.0.0.1:8080";
const EXTERNAL: &str = "https://idp.example.com";

pub struct AuthOptions {
    pub iterations: u64,
    pub out: Option<std::path::PathBuf>,
}

/// One case's latencies, in nanoseconds.
struct Case {
    name: &'static str,
    what: &'static str,
    histogram: Histogram<u64>,
}

pub async fn run(options: &AuthOptions) -> Result<bool> {
    let dir = tempfile::tempdir().context("temp dir")?;
    let mut config = IssuerConfig::new(BASE, "approval");
    config.resources = vec![format!("{BASE}/mcp/github"), format!("{BASE}/mcp/other")];
    config.scopes_supported = vec!["tools:call".into()];
    let issuer = Issuer::open(dir.path(), config).context("built-in issuer")?;
    let grant = |server: &str| Grant {
        subject: "agent".into(),
        client_id: "agent".into(),
        audience: format!("{BASE}/mcp/{server}"),
        scopes: vec!["tools:call".into()],
        ttl: Duration::from_secs(3600),
    };
    let token = issuer.mint(&grant("github"))?;
    let foreign = issuer.mint(&grant("other"))?;
    let header = format!("Bearer {token}");
    let foreign_header = format!("Bearer {foreign}");

    let oauth = |cache: Duration| {
        let config = AuthConfig {
            mode: AuthMode::OAuth,
            issuer: BASE.into(),
            cache_ttl: cache,
            ..AuthConfig::default()
        };
        let auth = Authenticator::new(config, BASE, Some(KeySource::from_set(&issuer.jwks())));
        auth.set_access(HashMap::from([(
            "github".to_string(),
            ServerAccess {
                required_scopes: vec!["tools:call".into()],
                ..ServerAccess::default()
            },
        )]));
        auth
    };
    let verifying = oauth(Duration::ZERO);
    let caching = oauth(Duration::from_secs(60));
    let key = "bk_benchmark_key_0123456789abcdef";
    let api = Authenticator::new(
        AuthConfig {
            mode: AuthMode::ApiKey,
            api_keys: vec![berth_auth::ApiKey {
                name: "bench".into(),
                sha256: berth_auth::parse_api_key_digest(&berth_auth::hash_api_key(key))
                    .context("digest")?,
                scopes: vec![],
                servers: vec![],
            }],
            ..AuthConfig::default()
        },
        BASE,
        None,
    );
    let api_header = format!("Bearer {key}");

    // Tokens of external issuers are often RS256 or EdDSA: the same
    // validation with those keys.
    let (rsa_set, rsa_token) = foreign_issuer_token(jsonwebtoken::Algorithm::RS256)?;
    let (ed_set, ed_token) = foreign_issuer_token(jsonwebtoken::Algorithm::EdDSA)?;
    let with_keys = |set: &jsonwebtoken::jwk::JwkSet| {
        Authenticator::new(
            AuthConfig {
                mode: AuthMode::OAuth,
                issuer: EXTERNAL.into(),
                cache_ttl: Duration::ZERO,
                ..AuthConfig::default()
            },
            BASE,
            Some(KeySource::from_set(set)),
        )
    };
    let rsa = with_keys(&rsa_set);
    let ed = with_keys(&ed_set);
    let rsa_header = format!("Bearer {rsa_token}");
    let ed_header = format!("Bearer {ed_token}");

    let n = options.iterations;
    let mut cases = Vec::new();
    cases.push(
        measure(
            "verify-rs256",
            "RS256 (2048-bit) JWT, full validation, keys cached",
            n,
            || rsa.authenticate("github", Some(rsa_header.as_bytes())),
            true,
        )
        .await?,
    );
    cases.push(
        measure(
            "verify-eddsa",
            "EdDSA (Ed25519) JWT, full validation, keys cached",
            n,
            || ed.authenticate("github", Some(ed_header.as_bytes())),
            true,
        )
        .await?,
    );
    cases.push(
        measure(
            "verify",
            "ES256 JWT, full validation, keys cached",
            n,
            || verifying.authenticate("github", Some(header.as_bytes())),
            true,
        )
        .await?,
    );
    cases.push(
        measure(
            "cached",
            "ES256 JWT seen before (token cache)",
            n,
            || caching.authenticate("github", Some(header.as_bytes())),
            true,
        )
        .await?,
    );
    cases.push(
        measure(
            "api-key",
            "API key (SHA-256 digest lookup)",
            n,
            || api.authenticate("github", Some(api_header.as_bytes())),
            true,
        )
        .await?,
    );
    cases.push(
        measure(
            "reject",
            "JWT for another server (refused)",
            n,
            || verifying.authenticate("github", Some(foreign_header.as_bytes())),
            false,
        )
        .await?,
    );

    println!("Token validation per request, in process ({n} iterations each):\n");
    println!("| case | what | p50 | p90 | p99 |");
    println!("|---|---|---|---|---|");
    let mut results = Vec::new();
    for case in &cases {
        let q = |p: f64| case.histogram.value_at_quantile(p);
        println!(
            "| {} | {} | {} | {} | {} |",
            case.name,
            case.what,
            us(q(0.5)),
            us(q(0.9)),
            us(q(0.99))
        );
        results.push(json!({
            "case": case.name,
            "what": case.what,
            "iterations": n,
            "p50_ns": q(0.5), "p90_ns": q(0.9), "p99_ns": q(0.99),
            "mean_ns": case.histogram.mean().round(),
        }));
    }
    if let Some(path) = &options.out {
        let doc: Value = json!({ "benchmark": "auth", "results": results });
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(true)
}

/// A key set and a token for server `github` from an issuer signing with `alg`.
fn foreign_issuer_token(
    alg: jsonwebtoken::Algorithm,
) -> Result<(jsonwebtoken::jwk::JwkSet, String)> {
    use aws_lc_rs::signature::KeyPair;
    use base64::Engine;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let now = jsonwebtoken::get_current_timestamp();
    let claims = json!({"iss": EXTERNAL, "sub": "agent", "aud": format!("{BASE}/mcp/github"),
                        "iat": now, "nbf": now, "exp": now + 3600, "scope": "tools:call"});
    let (token, jwk) = match alg {
        jsonwebtoken::Algorithm::RS256 => {
            let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .map_err(|_| anyhow::anyhow!("RSA key generation"))?;
            // Signed here: jsonwebtoken wants PKCS#1, aws-lc exports PKCS#8.
            let input = format!(
                "{}.{}",
                b64(br#"{"alg":"RS256","typ":"JWT","kid":"rsa"}"#),
                b64(claims.to_string().as_bytes())
            );
            let mut signature = vec![0; pair.public_modulus_len()];
            pair.sign(
                &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                &aws_lc_rs::rand::SystemRandom::new(),
                input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| anyhow::anyhow!("RSA signing"))?;
            let public = pair.public_key();
            let n = public.modulus().big_endian_without_leading_zero();
            let e = public.exponent().big_endian_without_leading_zero();
            (
                format!("{input}.{}", b64(&signature)),
                json!({"kty": "RSA", "kid": "rsa", "alg": "RS256", "n": b64(n), "e": b64(e)}),
            )
        }
        _ => {
            let pair = aws_lc_rs::signature::Ed25519KeyPair::generate()
                .map_err(|_| anyhow::anyhow!("Ed25519 key generation"))?;
            let der = pair
                .to_pkcs8()
                .map_err(|_| anyhow::anyhow!("Ed25519 key export"))?;
            let mut header = jsonwebtoken::Header::new(alg);
            header.kid = Some("ed".into());
            let key = jsonwebtoken::EncodingKey::from_ed_der(der.as_ref());
            (
                jsonwebtoken::encode(&header, &claims, &key)?,
                json!({"kty": "OKP", "crv": "Ed25519", "kid": "ed", "alg": "EdDSA",
                       "x": b64(pair.public_key().as_ref())}),
            )
        }
    };
    let set = serde_json::from_value(json!({ "keys": [jwk] }))?;
    Ok((set, token))
}

async fn measure<F, Fut, T, E>(
    name: &'static str,
    what: &'static str,
    iterations: u64,
    mut check: F,
    expect_ok: bool,
) -> Result<Case>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Debug,
{
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3)?;
    // Warm caches (and the token cache for `cached`) first.
    for _ in 0..iterations.min(200) {
        let _ = check().await;
    }
    for _ in 0..iterations {
        let start = Instant::now();
        let outcome = check().await;
        let elapsed = start.elapsed();
        if outcome.is_ok() != expect_ok {
            anyhow::bail!("{name}: unexpected outcome {:?}", outcome.err());
        }
        histogram.saturating_record(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX).max(1));
    }
    Ok(Case {
        name,
        what,
        histogram,
    })
}

fn us(ns: u64) -> String {
    if ns < 10_000 {
        format!("{:.2} µs", ns as f64 / 1000.0)
    } else {
        format!("{:.1} µs", ns as f64 / 1000.0)
    }
}
