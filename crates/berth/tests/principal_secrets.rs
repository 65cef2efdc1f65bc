//! Per-principal secrets reach stdio servers as environment variables of
//! that principal's own processes (`berth secret set NAME --principal P`),
//! never of a process another caller gets.

mod common;

use common::*;

/// The text of a tools/call answer.
fn text_of(reply: &Reply) -> String {
    let value = reply.answer();
    value["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text: {value}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_principal_gets_a_process_with_its_own_secret() {
    let (alice_key, alice) = api_key("alice");
    let (bob_key, bob) = api_key("bob");
    let (carol_key, carol) = api_key("carol");
    let servers = format!(
        "[auth]\nmode = \"api_key\"\n{alice}\n{bob}\n{carol}\n\n{}[servers.everything.pool]\nmin_ready = 1\n\n[endpoints.work]\nservers = [\"everything\"]\n",
        npm_server(
            "everything",
            "@modelcontextprotocol/server-everything",
            &[],
            &[("GITHUB_TOKEN", "${secret:github_pat}")]
        ),
    );
    let berth = Berth::start("", &servers);
    berth.set_secret_for("github_pat", "alice", "ghp_alice_own");
    berth.set_secret_for("github_pat", "key:bob", "ghp_bob_own");
    berth.set_secret("github_pat", "ghp_shared");

    let mut seen = Vec::new();
    for (key, expected) in [
        (&alice_key, "ghp_alice_own"),
        (&bob_key, "ghp_bob_own"),
        (&carol_key, "ghp_shared"),
    ] {
        let mut client = Raw::new(berth.url("everything"));
        client.token = Some(key.clone());
        client.initialize("2025-11-25").await;
        let env = client.call_tool(2, "get-env", serde_json::json!({})).await;
        let text = text_of(&env);
        assert!(
            text.contains(&format!("\"GITHUB_TOKEN\": \"{expected}\""))
                || text.contains(&format!("\"GITHUB_TOKEN\":\"{expected}\"")),
            "{expected} expected in the process's environment: {text}"
        );
        for other in ["ghp_alice_own", "ghp_bob_own", "ghp_shared"] {
            if other != expected {
                assert!(
                    !text.contains(other),
                    "{other} leaked into {expected}'s process"
                );
            }
        }
        seen.push(text);
        let _ = client.delete().await;
        // A 2026-07-28 request is served by processes shared between
        // callers: one with a value of its own is refused, never served
        // with another's (carol, who has none, is served with the shared one).
        let mut stateless = Raw::new(berth.url("everything"));
        stateless.token = Some(key.clone());
        let modern = stateless
            .modern(
                serde_json::json!(9),
                "tools/call",
                serde_json::json!({"name": "get-env", "arguments": {}}),
            )
            .await;
        if expected == "ghp_shared" {
            assert!(text_of(&modern).contains("ghp_shared"), "{}", modern.body);
        } else {
            assert_eq!(modern.status, 403, "{}", modern.body);
            assert!(modern.body.contains("open a session"), "{}", modern.body);
        }
        // Through a federated endpoint too: the member is opened for this caller.
        let mut client = Raw::new(berth.url("work"));
        client.token = Some(key.clone());
        client.initialize("2025-11-25").await;
        let env = client
            .call_tool(3, "everything__get-env", serde_json::json!({}))
            .await;
        let text = text_of(&env);
        assert!(
            text.contains(expected),
            "{expected} expected through the endpoint: {text}"
        );
        let _ = client.delete().await;
    }
}
