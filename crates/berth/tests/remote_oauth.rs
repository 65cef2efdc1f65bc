//! Downstream OAuth credentials for remote upstreams: Berth fetches a token
//! itself (client credentials at another Berth's built-in issuer acting as
//! the upstream's authorization server, or an RFC 8693 exchange of the
//! caller's own token at Berth's issuer) and sends only that upstream; the
//! caller's credential never travels.

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use serde_json::{Value, json};

/// An upstream recording every request's headers to `file`.
fn recording(file: &tempfile::NamedTempFile) -> Upstream {
    let path = file.path().to_str().expect("utf-8 temp path");
    Upstream::start(&["--transport", "streamable-http", "--record-headers", path])
}

/// A remote `[servers.NAME]` with an `[servers.NAME.oauth]` table.
fn oauth_server(name: &str, url: &str, oauth: &str) -> String {
    format!("[servers.{name}]\nurl = {url:?}\n\n[servers.{name}.oauth]\n{oauth}\n")
}

/// A raw MCP client whose every request is bounded in time.
fn client(url: String, token: &str) -> Raw {
    let mut raw = Raw::new(url);
    raw.http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("HTTP client");
    raw.token = Some(token.to_owned());
    raw
}

/// The headers the upstream's `whoami` tool saw for this call.
async fn whoami(raw: &Raw, id: u64, log: impl Fn() -> String) -> Value {
    let reply = raw.call_tool(id, "whoami", json!({})).await;
    let answer = reply.answer();
    let Some(text) = answer["result"]["content"][0]["text"].as_str() else {
        panic!(
            "whoami gave no text result (HTTP {}): {}\n--- berth log ---\n{}",
            reply.status,
            reply.body,
            log()
        );
    };
    serde_json::from_str(text).unwrap_or_else(|e| panic!("whoami answered {text:?} ({e})"))
}

/// The bearer token of an `Authorization` header value.
fn bearer_of(headers: &Value) -> String {
    let auth = headers["authorization"].as_str().unwrap_or_default();
    auth.strip_prefix("Bearer ")
        .unwrap_or_else(|| panic!("the upstream got no bearer token: {headers}"))
        .to_owned()
}

/// The claims of a JWT (its middle part, base64url-decoded); no verification.
fn claims_of(jwt: &str) -> Value {
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "not a JWT: {jwt:?}");
    let payload = URL_SAFE_NO_PAD
        .decode(parts[1])
        .unwrap_or_else(|e| panic!("JWT payload is not base64url ({e}): {jwt:?}"));
    serde_json::from_slice(&payload).expect("JWT payload is JSON")
}

/// Every request the upstream recorded: (method, headers).
fn recorded(file: &tempfile::NamedTempFile) -> (String, Vec<Value>) {
    let text = std::fs::read_to_string(file.path()).expect("recorded headers");
    let requests = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line"))
        .collect();
    (text, requests)
}

/// `berth client create NAME` on a running gateway: (client_id, secret).
fn create_client(berth: &Berth, name: &str, scope: &str) -> (String, String) {
    let (ok, out) = berth.cli(&["client", "create", name, "--scope", scope]);
    assert!(ok, "berth client create: {out}");
    let field = |label: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(label))
            .unwrap_or_else(|| panic!("no {label} in {out}"))
            .trim()
            .to_string()
    };
    let endpoint = field("token_endpoint:");
    assert_eq!(endpoint, format!("{}/oauth/token", berth.base()), "{out}");
    (field("client_id:"), field("client_secret:"))
}

/// Starts `berth serve` on a port known before it starts (the config
/// `config(base_url)` may name the gateway's own endpoints).
fn start_on_known_port(config: impl Fn(&str) -> String) -> Berth {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("berth.toml");
    let text = format!(
        "[gateway]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = {:?}\n\n{}",
        dir.path().display().to_string(),
        config(&format!("http://127.0.0.1:{port}"))
    );
    std::fs::write(&path, text).expect("write config");
    let berth = Berth::spawn(
        &["serve", "--config", path.to_str().expect("utf-8 path")],
        dir,
    );
    assert_eq!(berth.addr.port(), port, "berth listens elsewhere");
    berth.wait_for_era_probes(Duration::from_secs(30));
    berth
}

/// The downstream authorization server: a Berth whose built-in issuer has
/// an operator client `gateway`; its tokens are for its server `svc`.
struct Issuer {
    berth: Berth,
    token_url: String,
    resource: String,
    client_secret: String,
}

fn downstream_issuer() -> Issuer {
    let berth = Berth::start(
        "[auth]\nmode = \"oauth\"\nscopes_supported = [\"tools:call\"]\n",
        &fixture_server("svc", "echo"),
    );
    let (client_id, client_secret) = create_client(&berth, "gateway", "tools:call");
    assert_eq!(client_id, "gateway");
    Issuer {
        token_url: format!("{}/oauth/token", berth.base()),
        resource: berth.url("svc"),
        client_secret,
        berth,
    }
}

/// The gateway in front of the upstream: API keys for its callers, and a
/// remote server `NAME` for each (name, secret name) whose credential is
/// the client credentials of `gateway` at `issuer`.
fn gateway_with_client_credentials(
    issuer: &Issuer,
    upstream: &Upstream,
    servers: &[(&str, &str)],
    keys: &str,
) -> Berth {
    let tables: Vec<String> = servers
        .iter()
        .map(|(name, secret)| {
            oauth_server(
                name,
                &upstream.url,
                &format!(
                    "grant = \"client_credentials\"\ntoken_url = {:?}\nclient_id = \"gateway\"\nclient_secret = \"${{secret:{secret}}}\"\nscope = \"tools:call\"\nresource = {:?}\n",
                    issuer.token_url, issuer.resource
                ),
            )
        })
        .collect();
    Berth::start(
        "",
        &format!(
            "[auth]\nmode = \"api_key\"\n{keys}\n\n{}",
            tables.join("\n")
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_from_another_berths_issuer_reach_the_upstream_instead_of_the_callers_key()
 {
    let record = tempfile::NamedTempFile::new().expect("temp file");
    let upstream = recording(&record);
    let issuer = downstream_issuer();
    let (alice_key, alice) = api_key("alice");
    let berth =
        gateway_with_client_credentials(&issuer, &upstream, &[("github", "gh_client")], &alice);
    berth.set_secret("gh_client", &issuer.client_secret);

    let mut raw = client(berth.url("github"), &alice_key);
    raw.initialize("2025-11-25").await;
    let log = || {
        format!(
            "{}\n--- issuer log ---\n{}",
            berth.log(),
            issuer.berth.log()
        )
    };
    let first = whoami(&raw, 2, log).await;
    let token = bearer_of(&first);
    let claims = claims_of(&token);
    assert_eq!(claims["iss"], issuer.berth.base(), "{claims}");
    assert_eq!(claims["sub"], "gateway", "{claims}");
    assert_eq!(claims["client_id"], "gateway", "{claims}");
    assert_eq!(claims["aud"], issuer.resource.as_str(), "{claims}");
    assert_eq!(claims["scope"], "tools:call", "{claims}");
    assert!(claims.get("act").is_none(), "{claims}");

    // A real token of that issuer: its own gateway accepts it for `svc`.
    let mut check = client(issuer.resource.clone(), &token);
    let init = check.initialize("2025-11-25").await;
    assert!(init["result"]["serverInfo"].is_object(), "{init}");

    // Cached: the next call carries the same token (each mint has a new jti).
    let second = whoami(&raw, 3, log).await;
    assert_eq!(bearer_of(&second), token);

    // Every request the upstream received: Berth's token, never alice's key.
    let (text, requests) = recorded(&record);
    assert!(requests.len() >= 4, "{text}");
    assert!(
        !text.contains(&alice_key),
        "the upstream saw the caller's key:\n{text}"
    );
    for request in &requests {
        assert_eq!(
            bearer_of(&request["headers"]),
            token,
            "a request without Berth's token: {request}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_client_secret_is_a_clear_error_naming_the_token_endpoint() {
    const WRONG: &str = "not-the-client-secret-4f1e";
    let record = tempfile::NamedTempFile::new().expect("temp file");
    let upstream = recording(&record);
    let issuer = downstream_issuer();
    let (alice_key, alice) = api_key("alice");
    let berth =
        gateway_with_client_credentials(&issuer, &upstream, &[("github", "gh_client")], &alice);
    berth.set_secret("gh_client", WRONG);

    let raw = client(berth.url("github"), &alice_key);
    let started = Instant::now();
    let reply = raw.post(&initialize_body("2025-11-25")).await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the refusal took {:?}",
        started.elapsed()
    );
    let answer = reply.answer();
    let message = answer["error"]["message"].as_str().unwrap_or_else(|| {
        panic!(
            "no JSON-RPC error (HTTP {}): {}\n--- berth log ---\n{}",
            reply.status,
            reply.body,
            berth.log()
        )
    });
    assert!(
        message.contains(&issuer.token_url) && message.contains("invalid_client"),
        "the error should name the token endpoint and invalid_client: {message}"
    );
    for (what, text) in [
        ("the error", reply.body.clone()),
        ("berth's log", berth.log()),
    ] {
        assert!(!text.contains(WRONG), "{what} shows the client secret");
    }
    // Nothing reached the upstream without a credential.
    let (text, _) = recorded(&record);
    assert!(text.is_empty(), "the upstream was called:\n{text}");
    assert!(
        !berth.log().contains("panicked"),
        "berth panicked:\n{}",
        berth.log()
    );

    // The operator fixes the secret: the next session works, no restart.
    berth.set_secret("gh_client", &issuer.client_secret);
    let mut raw = client(berth.url("github"), &alice_key);
    raw.initialize("2025-11-25").await;
    let seen = whoami(&raw, 2, || berth.log()).await;
    assert_eq!(claims_of(&bearer_of(&seen))["sub"], "gateway");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_exchange_gives_the_upstream_the_callers_identity_acted_on_by_berth() {
    const PARTNER: &str = "https://partner.example.test/mcp";
    let record = tempfile::NamedTempFile::new().expect("temp file");
    let upstream = recording(&record);
    let berth = start_on_known_port(|base| {
        let exchange = |extra: &str| {
            format!(
                "grant = \"token_exchange\"\ntoken_url = \"{base}/oauth/token\"\nclient_id = \"gateway\"\nclient_secret = \"${{secret:gateway_client}}\"\n{extra}"
            )
        };
        format!(
            "[auth]\nmode = \"oauth\"\nscopes_supported = [\"tools:call\"]\n\n{}\n{}",
            oauth_server("github", &upstream.url, &exchange("")),
            oauth_server(
                "partner",
                &upstream.url,
                &exchange(&format!("audience = {PARTNER:?}\n"))
            ),
        )
    });
    let (_, secret) = create_client(&berth, "gateway", "tools:call");
    berth.set_secret("gateway_client", &secret);
    let alice = berth.cli_token("alice", "github", "tools:call");
    let bob = berth.cli_token("bob", "github", "tools:call");
    let alice_partner = berth.cli_token("alice", "partner", "tools:call");
    let log = || berth.log();

    let mut seen = Vec::new();
    for (who, server, token, audience) in [
        ("alice", "github", &alice, upstream.url.as_str()),
        ("bob", "github", &bob, upstream.url.as_str()),
        ("alice", "partner", &alice_partner, PARTNER),
    ] {
        let mut raw = client(berth.url(server), token);
        raw.initialize("2025-11-25").await;
        let headers = whoami(&raw, 2, log).await;
        let exchanged = bearer_of(&headers);
        assert_ne!(
            &exchanged, token,
            "{who}@{server}: the caller's own token went upstream"
        );
        let claims = claims_of(&exchanged);
        let subject = claims_of(token);
        assert_eq!(claims["iss"], berth.base(), "{who}@{server}: {claims}");
        assert_eq!(claims["sub"], who, "{who}@{server}: {claims}");
        assert_eq!(claims["aud"], audience, "{who}@{server}: {claims}");
        assert_eq!(claims["act"]["sub"], "gateway", "{who}@{server}: {claims}");
        assert_eq!(claims["client_id"], "gateway", "{who}@{server}: {claims}");
        assert_eq!(claims["scope"], "tools:call", "{who}@{server}: {claims}");
        let (exp, limit) = (claims["exp"].as_u64(), subject["exp"].as_u64());
        assert!(
            exp.is_some() && exp <= limit,
            "{who}@{server}: outlives the caller's token: {claims} vs {subject}"
        );
        // The same session's next call reuses the exchanged token.
        let again = whoami(&raw, 3, log).await;
        assert_eq!(bearer_of(&again), exchanged, "{who}@{server}");
        seen.push(exchanged);
    }

    // Every request the upstream received carries an exchanged token, and
    // no caller's token ever got there.
    let (text, requests) = recorded(&record);
    assert!(requests.len() >= 12, "{text}");
    for token in [&alice, &bob, &alice_partner] {
        let signature = token.rsplit('.').next().expect("JWT signature");
        assert!(
            !text.contains(token.as_str()) && !text.contains(signature),
            "the upstream saw a caller's token:\n{text}"
        );
    }
    for request in &requests {
        let token = bearer_of(&request["headers"]);
        assert!(
            seen.contains(&token),
            "an unexpected token upstream: {request}"
        );
    }
}
