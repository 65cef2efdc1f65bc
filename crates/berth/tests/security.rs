//! Security end to end: tokens from an independent OpenID provider and from
//! Berth's built-in issuer, sessions bound to their principal, the secrets
//! store, and credentials that never reach an upstream.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Berth, Raw, fixture_bin, fixture_server, node_modules, repo};
use serde_json::{Value, json};

/// Node's `oidc-provider` (tests/node/idp.mjs), issuing JWT access tokens
/// with resource indicators; stops when dropped (its stdin closes).
struct Idp {
    child: Child,
    issuer: String,
    http: reqwest::Client,
}

impl Idp {
    fn start() -> Idp {
        node_modules();
        let mut child = Command::new("node")
            .arg(repo().join("tests/node/idp.mjs"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node tests/node/idp.mjs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the IdP's first line");
        let hello: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the IdP printed {line:?} ({e})"));
        Idp {
            child,
            issuer: hello["issuer"].as_str().expect("issuer").to_string(),
            http: reqwest::Client::new(),
        }
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let reply = self
            .http
            .post(format!("{}{path}", self.issuer))
            .json(&body)
            .send()
            .await
            .expect("IdP reachable");
        let status = reply.status();
        let body: Value = reply.json().await.expect("IdP answers JSON");
        assert!(status.is_success(), "IdP {path}: {status} {body}");
        body
    }

    /// A real access token from the provider's token endpoint (client credentials).
    async fn token(&self, client: &str, resource: &str, scope: &str) -> String {
        let answer = self
            .post(
                "/test/token",
                json!({"client": client, "resource": resource, "scope": scope}),
            )
            .await;
        answer["access_token"]
            .as_str()
            .expect("access_token")
            .to_string()
    }

    /// A token signed (or not) as `mode` says, with claims over the defaults.
    async fn forge(&self, mode: &str, claims: Value) -> String {
        let answer = self
            .post("/test/forge", json!({"mode": mode, "claims": claims}))
            .await;
        answer["token"].as_str().expect("token").to_string()
    }

    async fn jwks_requests(&self) -> u64 {
        let state: Value = self
            .http
            .get(format!("{}/test/state", self.issuer))
            .send()
            .await
            .expect("IdP state")
            .json()
            .await
            .expect("JSON");
        state["jwks_requests"].as_u64().expect("jwks_requests")
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An initialize with `token`; returns the reply.
async fn initialize_with(berth: &Berth, server: &str, token: Option<&str>) -> common::Reply {
    let mut raw = Raw::new(berth.url(server));
    raw.token = token.map(str::to_owned);
    raw.post(&common::initialize_body("2025-11-25")).await
}

fn challenge(reply: &common::Reply) -> String {
    reply
        .headers
        .get("www-authenticate")
        .unwrap_or_else(|| panic!("no WWW-Authenticate on {} {}", reply.status, reply.body))
        .to_str()
        .unwrap()
        .to_string()
}

/// Asserts a 401 `invalid_token` challenge pointing at server `a`'s metadata.
fn assert_invalid_token(berth: &Berth, reply: &common::Reply, case: &str) {
    assert_eq!(reply.status, 401, "{case}: {}", reply.body);
    let header = challenge(reply);
    assert!(
        header.starts_with("Bearer ") && header.contains(r#"error="invalid_token""#),
        "{case}: {header}"
    );
    let metadata = format!(
        r#"resource_metadata="{}/.well-known/oauth-protected-resource/mcp/a""#,
        berth.base()
    );
    assert!(header.contains(&metadata), "{case}: {header}");
}

#[tokio::test]
async fn tokens_from_an_independent_openid_provider() {
    let idp = Idp::start();
    let record = tempfile::NamedTempFile::new().unwrap();
    let servers = format!(
        "{}required_scopes = [\"tools:call\"]\n[servers.a.tool_scopes]\necho = [\"github:write\"]\n\n{}",
        fixture_server("a", "echo"),
        fixture_server("b", "echo"),
    );
    let berth = Berth::start(
        &format!(
            "[auth]\nmode = \"oauth\"\nissuer = {:?}\nscopes_supported = [\"tools:read\", \"tools:call\"]\nclock_skew = \"5s\"\njwks_min_refresh = \"1s\"\ntoken_cache = \"0s\"\n",
            idp.issuer
        ),
        &servers,
    );
    drop(record);
    let resource_a = berth.url("a");

    // The metadata names the resource and its authorization server.
    let metadata: Value = reqwest::get(format!(
        "{}/.well-known/oauth-protected-resource/mcp/a",
        berth.base()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(metadata["resource"], resource_a.as_str());
    assert_eq!(metadata["authorization_servers"][0], idp.issuer.as_str());

    // No token: 401 with the bare challenge.
    let reply = initialize_with(&berth, "a", None).await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    let header = challenge(&reply);
    assert!(
        header.contains("resource_metadata=") && header.contains(r#"scope="tools:call""#),
        "{header}"
    );

    // A real token for server a, with the tool's scope: 200 and the call works.
    let full = idp
        .token("agent", &resource_a, "tools:call github:write")
        .await;
    let mut raw = Raw::new(resource_a.clone());
    raw.token = Some(full.clone());
    raw.initialize("2025-11-25").await;
    let reply = raw.call_tool(1, "echo", json!({"text": "hello"})).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["result"]["content"][0]["text"], "hello");

    // Every way a token can be wrong: 401 invalid_token.
    let aud = json!(resource_a);
    let cases = [
        (
            "expired",
            idp.forge("valid", json!({"aud": aud, "exp": now() - 120}))
                .await,
        ),
        (
            "not yet valid",
            idp.forge("valid", json!({"aud": aud, "nbf": now() + 600}))
                .await,
        ),
        (
            "wrong audience (server b's token)",
            idp.token("agent", &berth.url("b"), "tools:call").await,
        ),
        (
            "wrong issuer",
            idp.forge(
                "valid",
                json!({"aud": aud, "iss": "http://127.0.0.1:9/evil"}),
            )
            .await,
        ),
        (
            "bad signature",
            idp.forge("bad-signature", json!({"aud": aud})).await,
        ),
        ("alg none", idp.forge("none", json!({"aud": aud})).await),
        (
            "HS256 signed with the public key",
            idp.forge("hs256-public", json!({"aud": aud})).await,
        ),
        (
            "unknown key",
            idp.forge("unknown-kid", json!({"aud": aud})).await,
        ),
    ];
    for (case, token) in &cases {
        let reply = initialize_with(&berth, "a", Some(token)).await;
        assert_invalid_token(&berth, &reply, case);
    }
    // A forged-but-validly-signed token with good claims passes: the
    // refusals above are about the claims, not the forging.
    let good = idp
        .forge("valid", json!({"aud": aud, "scope": "tools:call"}))
        .await;
    assert_eq!(initialize_with(&berth, "a", Some(&good)).await.status, 200);

    // Missing tool scope: 403 insufficient_scope, and tools/list hides the tool.
    let narrow = idp.token("reader", &resource_a, "tools:call").await;
    let mut reader = Raw::new(resource_a.clone());
    reader.token = Some(narrow);
    reader.initialize("2025-11-25").await;
    let reply = reader.call_tool(2, "echo", json!({"text": "x"})).await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    let header = challenge(&reply);
    assert!(header.contains(r#"error="insufficient_scope""#), "{header}");
    assert!(header.contains("github:write"), "{header}");
    let list = reader
        .post(r#"{"jsonrpc":"2.0","id":3,"method":"tools/list"}"#)
        .await;
    assert_eq!(list.json()["result"]["tools"], json!([]), "{}", list.body);
    let list = raw
        .post(r#"{"jsonrpc":"2.0","id":3,"method":"tools/list"}"#)
        .await;
    assert_eq!(list.json()["result"]["tools"][0]["name"], "echo");
    // The same rules for 2026-07-28 stateless requests with the same token.
    let mut stateless = Raw::new(resource_a.clone());
    stateless.token = reader.token.clone();
    let reply = stateless
        .modern(
            json!(4),
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "x"}}),
        )
        .await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert!(challenge(&reply).contains(r#"error="insufficient_scope""#));
    let list = stateless.modern(json!(5), "tools/list", json!({})).await;
    assert_eq!(list.json()["result"]["tools"], json!([]), "{}", list.body);
    assert_eq!(list.json()["result"]["resultType"], "complete");

    // Without tools:call at all: 403 before any session exists.
    let read_only = idp.token("reader", &resource_a, "tools:read").await;
    let reply = initialize_with(&berth, "a", Some(&read_only)).await;
    assert_eq!(reply.status, 403, "{}", reply.body);

    // Unknown kids don't make Berth hammer the IdP: at most one refetch per second.
    let before = idp.jwks_requests().await;
    for _ in 0..20 {
        let token = idp.forge("unknown-kid", json!({"aud": aud})).await;
        assert_eq!(initialize_with(&berth, "a", Some(&token)).await.status, 401);
    }
    let fetched = idp.jwks_requests().await - before;
    assert!(
        fetched <= 3,
        "20 unknown-kid tokens caused {fetched} JWKS fetches"
    );

    // Key rotation at the IdP: picked up without a restart.
    // The new kid is fetched once the 1 s refetch window (jwks_min_refresh)
    // has passed since the unknown-kid flood above.
    idp.post("/test/rotate", json!({})).await;
    let rotated = idp.token("agent", &resource_a, "tools:call").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let reply = loop {
        let reply = initialize_with(&berth, "a", Some(&rotated)).await;
        if reply.status == 200 || std::time::Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(reply.status, 200, "after rotation: {}", reply.body);
    // The old key is gone from the JWKS, so its tokens no longer pass.
    let reply = initialize_with(&berth, "a", Some(&full)).await;
    assert_invalid_token(&berth, &reply, "token signed with the retired key");
}

#[tokio::test]
async fn a_session_belongs_to_whoever_opened_it() {
    let berth = Berth::start("[auth]\nmode = \"oauth\"\n", &fixture_server("svc", "echo"));
    let alice = berth.cli_token("alice", "svc", "tools:call");
    let bob = berth.cli_token("bob", "svc", "tools:call");

    let mut owner = Raw::new(berth.url("svc"));
    owner.token = Some(alice);
    owner.initialize("2025-11-25").await;
    let reply = owner
        .call_tool(1, "echo", json!({"text": "alice's secret"}))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);

    // Bob, authenticated, presents Alice's session id.
    let mut intruder = Raw::new(berth.url("svc"));
    intruder.token = Some(bob);
    intruder.session = owner.session.clone();
    let reply = intruder.call_tool(2, "echo", json!({"text": "bob"})).await;
    assert_eq!(reply.status, 404, "{}", reply.body);
    assert!(!reply.body.contains("alice"), "{}", reply.body);
    let stream = intruder.get(&[]).await;
    assert_eq!(stream.status(), 404);
    let body = stream.text().await.unwrap();
    assert!(!body.contains("alice"), "{body}");
    let deleted = intruder
        .http
        .delete(&intruder.url)
        .bearer_auth(intruder.token.as_deref().unwrap())
        .header("mcp-session-id", intruder.session.as_deref().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 404);
    // A replayed event id gets nothing either.
    let replay = intruder.get(&[("last-event-id", "0-0")]).await;
    assert_eq!(replay.status(), 404);

    // Alice's session is untouched.
    let reply = owner
        .call_tool(3, "echo", json!({"text": "still mine"}))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["result"]["content"][0]["text"], "still mine");

    // The legacy transport too: Bob cannot post into Alice's SSE session.
    let http = reqwest::Client::new();
    let mut sse = http
        .get(format!("{}/sse/svc", berth.base()))
        .bearer_auth(owner.token.as_deref().unwrap())
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    let mut first = String::new();
    while !first.contains("\n\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), sse.chunk())
            .await
            .expect("endpoint event in time")
            .unwrap()
            .expect("stream open");
        first.push_str(&String::from_utf8_lossy(&chunk));
    }
    let endpoint = first
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("endpoint event")
        .trim()
        .to_string();
    let post = |token: String| {
        http.post(format!("{}{endpoint}", berth.base()))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(common::initialize_body("2024-11-05"))
            .send()
    };
    let hijack = post(intruder.token.clone().unwrap()).await.unwrap();
    assert_eq!(hijack.status(), 404);
    let own = post(owner.token.clone().unwrap()).await.unwrap();
    assert_eq!(own.status(), 202);
    let anonymous_sse = http
        .get(format!("{}/sse/svc", berth.base()))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous_sse.status(), 401);
    drop(sse);

    // And with no token at all: 401, not the session.
    let mut anonymous = Raw::new(berth.url("svc"));
    anonymous.session = owner.session.clone();
    let reply = anonymous.call_tool(4, "echo", json!({"text": "x"})).await;
    assert_eq!(reply.status, 401);
}

#[tokio::test]
async fn secrets_reach_only_their_server_and_never_leak() {
    const SECRET: &str = "ghp_b3rthS3cretValue9f2c";
    const OTHER: &str = "pg_passw0rd_7d1e";
    let servers = format!(
        "{}env = {{ GITHUB_TOKEN = \"${{secret:github_token}}\", PLAIN = \"visible\" }}\n\n{}env = {{ DB = \"${{secret:db_password}}\" }}\n\n{}env = {{ NEEDS = \"${{secret:missing_one}}\" }}\n",
        fixture_server("github", "env"),
        fixture_server("db", "env"),
        fixture_server("broken", "env"),
    );
    let berth = Berth::start("", &servers);
    berth.set_secret("github_token", SECRET);
    berth.set_secret("db_password", OTHER);

    // `berth check` names the secret the configuration lacks, and only that one.
    let (ok, check) = common::run_with_timeout(
        Command::new(common::berth_bin())
            .arg("check")
            .arg(berth.dir.path().join("berth.toml")),
        Duration::from_secs(10),
    );
    assert!(ok, "{check}");
    assert!(
        check.contains("secret `missing_one` is not in the secrets store"),
        "{check}"
    );
    assert!(
        !check.contains("`github_token`") && !check.contains(SECRET),
        "{check}"
    );

    // Encrypted at rest; the names are listed, never the values.
    let store = std::fs::read(berth.dir.path().join("secrets.json")).unwrap();
    let store_text = String::from_utf8_lossy(&store);
    assert!(!store_text.contains(SECRET) && !store_text.contains(OTHER));
    let (ok, list) = berth.cli(&["secret", "list"]);
    assert!(ok, "{list}");
    assert_eq!(
        list.lines().collect::<Vec<_>>(),
        ["db_password", "github_token"]
    );

    // The server sees its own secret, and only its own.
    let mut raw = Raw::new(berth.url("github"));
    raw.initialize("2025-11-25").await;
    let reply = raw.call_tool(1, "env", json!({})).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let env_text = reply.json()["result"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    let env: Value = serde_json::from_str(&env_text).unwrap();
    assert_eq!(env["GITHUB_TOKEN"], SECRET);
    assert_eq!(env["PLAIN"], "visible");
    assert!(!env_text.contains(OTHER), "{env_text}");

    // A missing secret: a clear error naming it, the server does not start.
    let mut broken = Raw::new(berth.url("broken"));
    let reply = broken.post(&common::initialize_body("2025-11-25")).await;
    assert!(reply.status >= 500, "{} {}", reply.status, reply.body);
    assert!(reply.body.contains("missing_one"), "{}", reply.body);
    assert!(
        reply.body.contains("berth secret set missing_one"),
        "{}",
        reply.body
    );
    broken.session = None;

    // Nowhere else: not in ps, ps --json, logs, the admin API or Berth's own log.
    let (_, ps) = berth.cli(&["ps"]);
    let (_, ps_json) = berth.cli(&["ps", "--json"]);
    let (_, logs) = berth.cli(&["logs", "github"]);
    let (_, broken_logs) = berth.cli(&["logs", "broken"]);
    let admin: Value = serde_json::from_str(
        &std::fs::read_to_string(berth.dir.path().join("admin.json")).unwrap(),
    )
    .unwrap();
    let status = reqwest::Client::new()
        .get(format!("{}/v1/status", admin["url"].as_str().unwrap()))
        .bearer_auth(admin["token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(broken_logs.contains("missing_one"), "{broken_logs}");
    for (what, text) in [
        ("berth ps", &ps),
        ("berth ps --json", &ps_json),
        ("berth logs github", &logs),
        ("berth logs broken", &broken_logs),
        ("GET /v1/status", &status),
        ("berth's log", &berth.log()),
    ] {
        assert!(
            !text.contains(SECRET) && !text.contains(OTHER),
            "{what} shows a secret:\n{text}"
        );
    }

    // Removal works and is reported.
    let (ok, out) = berth.cli(&["secret", "rm", "db_password"]);
    assert!(ok, "{out}");
    let (ok, out) = berth.cli(&["secret", "rm", "db_password"]);
    assert!(!ok && out.contains("no secret named"), "{out}");
}

#[tokio::test]
async fn credentials_never_reach_an_upstream() {
    let record = tempfile::NamedTempFile::new().unwrap();
    // The sandboxed server runs as nobody and writes only where it is told.
    std::fs::set_permissions(
        record.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    let servers = format!(
        "{}env = {{ BERTH_FIXTURE_RECORD = {:?} }}\n[servers.svc.sandbox]\nwritable = [{:?}]\n",
        fixture_server("svc", "env"),
        record.path().display().to_string(),
        record.path().display().to_string()
    );
    // Berth's own environment holds credentials too: none may leak through.
    let berth = Berth::start("[auth]\nmode = \"oauth\"\n", &servers);
    let token = berth.cli_token("agent", "svc", "tools:call");

    let mut raw = Raw::new(berth.url("svc"));
    raw.token = Some(token.clone());
    let extra = [
        ("cookie", "session=cookie-credential-77"),
        ("x-api-key", "header-credential-88"),
        ("proxy-authorization", "Basic cHJveHk6Y3JlZGVudGlhbA=="),
    ];
    let reply = raw
        .post_with(common::initialize_body("2025-11-25"), &extra)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    raw.session = reply
        .headers
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_string());
    let call = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"env","arguments":{}}});
    let reply = raw.post_with(call.to_string(), &extra).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let env_text = reply.json()["result"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    let transcript = std::fs::read_to_string(record.path()).unwrap();
    assert!(transcript.contains("tools/call"), "{transcript}");
    let jwt_signature = token.rsplit('.').next().unwrap();
    for (what, text) in [
        ("environment", &env_text),
        ("stdin transcript", &transcript),
    ] {
        for needle in [
            token.as_str(),
            jwt_signature,
            "cookie-credential-77",
            "header-credential-88",
            "cHJveHk6Y3JlZGVudGlhbA",
            "Bearer",
        ] {
            assert!(
                !text.contains(needle),
                "the upstream's {what} holds {needle:?}:\n{text}"
            );
        }
    }
    let env: Value = serde_json::from_str(&env_text).unwrap();
    let names: Vec<&str> = env
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert!(
        names
            .iter()
            .all(|n| !n.starts_with("BERTH_ADMIN") && *n != "BERTH_MASTER_KEY"),
        "{names:?}"
    );
}

#[tokio::test]
async fn api_keys_are_an_alternative_to_oauth() {
    let (ok, out) = common::run_with_timeout(
        Command::new(common::berth_bin()).args([
            "key",
            "create",
            "ci",
            "--scope",
            "tools:call",
            "--server",
            "svc",
        ]),
        Duration::from_secs(10),
    );
    assert!(ok, "{out}");
    let key = out
        .lines()
        .find(|l| l.starts_with("bk_"))
        .expect("key")
        .to_string();
    let hash = out
        .lines()
        .find_map(|l| l.strip_prefix("hash = "))
        .expect("hash line")
        .trim_matches('"')
        .to_string();
    assert!(!out.contains(&format!("hash = \"{key}")));
    let berth = Berth::start(
        &format!(
            "[auth]\nmode = \"api_key\"\n[[auth.api_keys]]\nname = \"ci\"\nhash = {hash:?}\nscopes = [\"tools:call\"]\nservers = [\"svc\"]\n"
        ),
        &format!(
            "{}\n{}",
            fixture_server("svc", "echo"),
            fixture_server("other", "echo")
        ),
    );
    let mut raw = Raw::new(berth.url("svc"));
    raw.token = Some(key.clone());
    raw.initialize("2025-11-25").await;
    assert_eq!(
        raw.call_tool(1, "echo", json!({"text": "k"})).await.status,
        200
    );
    let reply = initialize_with(&berth, "svc", Some("bk_wrong")).await;
    assert_eq!(reply.status, 401);
    let reply = initialize_with(&berth, "other", Some(&key)).await;
    assert_eq!(reply.status, 401, "a key limited to svc: {}", reply.body);
    // 2026-07-28 stateless requests are authenticated exactly the same way.
    let call = json!({"name": "echo", "arguments": {"text": "stateless"}});
    let mut modern = Raw::new(berth.url("svc"));
    let denied = modern.modern(json!(5), "tools/call", call.clone()).await;
    assert_eq!(denied.status, 401, "{}", denied.body);
    assert!(denied.headers.get("www-authenticate").is_some());
    modern.token = Some(key.clone());
    let served = modern.modern(json!(6), "tools/call", call.clone()).await;
    assert_eq!(served.status, 200, "{}", served.body);
    assert_eq!(served.json()["result"]["content"][0]["text"], "stateless");
    assert!(served.headers.get("mcp-session-id").is_none());
    let mut elsewhere = Raw::new(berth.url("other"));
    elsewhere.token = Some(key.clone());
    let refused = elsewhere.modern(json!(7), "tools/call", call).await;
    assert_eq!(
        refused.status, 401,
        "a key limited to svc: {}",
        refused.body
    );
    // The config holds only the digest.
    let config = std::fs::read_to_string(berth.dir.path().join("berth.toml")).unwrap();
    assert!(!config.contains(&key));
}

#[test]
fn no_auth_is_refused_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("berth.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\nlisten = \"0.0.0.0:0\"\ndata_dir = {:?}\n\n{}",
            dir.path().display().to_string(),
            fixture_server("svc", "echo")
        ),
    )
    .unwrap();
    let (ok, out) = common::run_with_timeout(
        Command::new(common::berth_bin()).args(["serve", "--config", config.to_str().unwrap()]),
        Duration::from_secs(10),
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("auth.mode = \"none\" is allowed only on a loopback listener"),
        "{out}"
    );
    let _ = fixture_bin();
}

/// Runs tests/python/oauth_client.py (the official Python SDK's OAuth client).
fn python_oauth(args: &[&str]) -> Value {
    let mut cmd = Command::new(common::python());
    cmd.arg(repo().join("tests/python/oauth_client.py"))
        .args(args);
    let (ok, out) = common::run_with_timeout(&mut cmd, Duration::from_secs(90));
    let line = out
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON line from oauth_client.py:\n{out}"));
    let result: Value = serde_json::from_str(line).unwrap();
    assert!(ok && result["ok"] == true, "oauth_client.py failed:\n{out}");
    result
}

#[tokio::test]
async fn the_python_sdk_completes_oauth_against_the_built_in_issuer() {
    let berth = Berth::start(
        "[auth]\nmode = \"oauth\"\nscopes_supported = [\"tools:read\", \"tools:call\"]\n",
        &format!(
            "{}required_scopes = [\"tools:call\"]\n",
            fixture_server("svc", "echo")
        ),
    );
    let url = berth.url("svc");
    let admin: Value = serde_json::from_str(
        &std::fs::read_to_string(berth.dir.path().join("admin.json")).unwrap(),
    )
    .unwrap();
    let approval = admin["token"].as_str().unwrap();

    // Discovery from the 401, registration, authorization code + PKCE with
    // the consent answered by the script, token, tools/call.
    let result = python_oauth(&[
        "--url",
        &url,
        "--mode",
        "authcode",
        // `=`: a random secret may begin with `-`, which argparse would
        // take for an option.
        &format!("--approval-secret={approval}"),
        "--tool",
        "echo",
        "--args",
        r#"{"text":"via authorization code"}"#,
    ]);
    assert_eq!(
        result["result"]["content"][0]["text"],
        "via authorization code"
    );
    assert_eq!(result["token_audience"], url.as_str());
    assert_eq!(result["tools"], json!(["echo"]));

    // A wrong approval secret: the flow fails cleanly.
    let mut cmd = Command::new(common::python());
    cmd.arg(repo().join("tests/python/oauth_client.py")).args([
        "--url",
        &url,
        "--mode",
        "authcode",
        "--approval-secret",
        "not-the-secret",
        "--tool",
        "echo",
        "--args",
        "{}",
        "--timeout",
        "30",
    ]);
    let (ok, out) = common::run_with_timeout(&mut cmd, Duration::from_secs(60));
    assert!(!ok && out.contains("\"ok\": false"), "{out}");

    // A headless agent with client credentials created by the operator.
    let (ok, out) = berth.cli(&[
        "client",
        "create",
        "agent",
        "--scope",
        "tools:call tools:read",
    ]);
    assert!(ok, "{out}");
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {out}"))
            .trim()
            .to_string()
    };
    let (client_id, client_secret) = (field("client_id:"), field("client_secret:"));
    let result = python_oauth(&[
        "--url",
        &url,
        "--mode",
        "client-credentials",
        &format!("--client-id={client_id}"),
        &format!("--client-secret={client_secret}"),
        "--tool",
        "echo",
        "--args",
        r#"{"text":"headless"}"#,
    ]);
    assert_eq!(result["result"]["content"][0]["text"], "headless");
    assert_eq!(result["token_audience"], url.as_str());
}
