//! `berth secret set|list|rm` with per-principal values, the real binary,
//! in a data dir of its own; what the CLI stores is read back through
//! berth-secrets the way the gateway reads it.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_secrets::{ExposeSecret, SecretStore};

/// The master key the CLI gets through `BERTH_MASTER_KEY`, as bytes and hex.
const KEY: [u8; 32] = [0x5a; 32];
const SHARED: &str = "shared-CANARY-7d1e";
const ALICE: &str = "alice-CANARY-93b0";
const BOB: &str = "bob-CANARY-c4f2";
const IDP: &str = "idp-CANARY-0a5e";

/// What a run printed and whether it succeeded.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `berth secret ARGS --data-dir DIR`. With `stdin` Some, writes it and
/// closes stdin; with None, holds stdin open and writes nothing (a command
/// that reads it would then hang until the deadline and fail the test).
fn berth(dir: &Path, args: &[&str], stdin: Option<&str>) -> Run {
    let cwd = tempfile::tempdir().unwrap();
    let hex: String = KEY.iter().map(|b| format!("{b:02x}")).collect();
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("secret")
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        // No ./berth.toml and no configuration from the environment.
        .current_dir(cwd.path())
        .env_remove("BERTH_CONFIG")
        .env_remove("BERTH_DATA_DIR")
        .env("BERTH_MASTER_KEY", hex)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut held = child.stdin.take();
    if let Some(value) = stdin {
        held.take().unwrap().write_all(value.as_bytes()).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("berth secret {args:?} did not finish within 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(held);
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    Run {
        ok: status.success(),
        stdout,
        stderr,
    }
}

fn succeeds(dir: &Path, args: &[&str], stdin: Option<&str>) -> Run {
    let run = berth(dir, args, stdin);
    assert!(run.ok, "berth secret {args:?} failed: {}", run.all());
    run
}

fn list(dir: &Path) -> Vec<String> {
    let run = succeeds(dir, &["list"], None);
    run.stdout.lines().map(str::to_owned).collect()
}

fn own(store: &SecretStore, principal: &str) -> Option<String> {
    let value = store.get_for("github_pat", principal).unwrap();
    value.map(|v| v.expose_secret().to_owned())
}

#[test]
fn per_principal_secrets_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let store = SecretStore::with_key(dir, KEY);

    let run = succeeds(dir, &["set", "github_pat"], Some(&format!("{SHARED}\n")));
    assert!(
        run.stderr.contains("stored secret `github_pat` in"),
        "{}",
        run.stderr
    );
    let run = succeeds(
        dir,
        &["set", "github_pat", "--principal", "alice"],
        Some(&format!("{ALICE}\n")),
    );
    assert!(
        run.stderr
            .contains("stored secret `github_pat` for principal `alice` in"),
        "{}",
        run.stderr
    );
    succeeds(
        dir,
        &["set", "--principal", "key:bob", "github_pat"],
        Some(BOB),
    );
    succeeds(
        dir,
        &["set", "github_pat", "--principal=https://idp.example|sub 1"],
        Some(IDP),
    );
    succeeds(dir, &["set", "other", "--principal", "alice"], Some("x"));

    assert_eq!(
        list(dir),
        [
            "github_pat",
            "github_pat (principal alice)",
            "github_pat (principal https://idp.example|sub 1)",
            "github_pat (principal key:bob)",
            "other (principal alice)",
        ]
    );

    // The gateway's view: each principal's own value, and the shared one.
    assert_eq!(
        store.get("github_pat").unwrap().unwrap().expose_secret(),
        SHARED
    );
    assert_eq!(own(&store, "alice").as_deref(), Some(ALICE));
    assert_eq!(own(&store, "key:bob").as_deref(), Some(BOB));
    assert_eq!(
        own(&store, "https://idp.example|sub 1").as_deref(),
        Some(IDP)
    );
    assert_eq!(own(&store, "bob"), None, "no fallback inside the store");
    assert!(store.get("other").unwrap().is_none());

    // Encrypted at rest.
    let file = std::fs::read_to_string(store.path()).unwrap();
    assert!(!file.contains("CANARY"), "{file}");

    // Removing alice's value leaves the shared one and the others.
    let run = succeeds(dir, &["rm", "github_pat", "--principal", "alice"], None);
    assert!(
        run.stderr
            .contains("removed secret `github_pat` for principal `alice`"),
        "{}",
        run.stderr
    );
    assert_eq!(own(&store, "alice"), None);
    assert_eq!(
        store.get("github_pat").unwrap().unwrap().expose_secret(),
        SHARED
    );
    // Again: it says what is there instead.
    let run = berth(dir, &["rm", "github_pat", "--principal", "alice"], None);
    assert!(!run.ok);
    assert!(
        run.stderr
            .contains("no secret `github_pat` for principal `alice` in")
            && run.stderr.contains(
                "`github_pat` has: the shared value (no --principal), \
                 --principal https://idp.example|sub 1, --principal key:bob"
            ),
        "{}",
        run.stderr
    );

    // `remove` is `rm`; without --principal it takes the shared value only.
    let run = succeeds(dir, &["remove", "github_pat"], None);
    assert!(
        run.stderr.contains("removed secret `github_pat`\n"),
        "{}",
        run.stderr
    );
    assert!(store.get("github_pat").unwrap().is_none());
    assert_eq!(own(&store, "key:bob").as_deref(), Some(BOB));
    let run = berth(dir, &["rm", "github_pat"], None);
    assert!(!run.ok);
    assert!(
        run.stderr.contains("no secret `github_pat` in")
            && run
                .stderr
                .contains("has: --principal https://idp.example|sub 1"),
        "{}",
        run.stderr
    );
    let run = berth(dir, &["rm", "never_set"], None);
    assert!(
        !run.ok && run.stderr.contains("no secret named `never_set`"),
        "{}",
        run.stderr
    );

    assert_eq!(
        list(dir),
        [
            "github_pat (principal https://idp.example|sub 1)",
            "github_pat (principal key:bob)",
            "other (principal alice)",
        ]
    );

    // No command printed a value.
    for args in [&["list"][..], &["rm", "nothing", "--principal", "x"][..]] {
        let run = berth(dir, args, None);
        assert!(!run.all().contains("CANARY"), "{}", run.all());
    }
}

#[test]
fn bad_names_and_principals_fail_before_reading_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    // stdin stays open: a command that waited for the value would time out.
    for (args, expected) in [
        (
            &["set", "github_pat", "--principal", ""][..],
            "invalid principal \"\": use 1 to 256 characters and no control characters",
        ),
        (
            &["set", "github_pat", "--principal", "a\u{1}b"][..],
            "invalid principal \"a\\u{1}b\"",
        ),
        (
            &["set", "github pat", "--principal", "alice"][..],
            "invalid secret name `github pat`",
        ),
    ] {
        let run = berth(dir, args, None);
        assert!(!run.ok, "{args:?}");
        assert!(run.stderr.contains(expected), "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains("`key:alice`") || args[1] == "github pat");
    }
    let long = "p".repeat(257);
    let run = berth(dir, &["rm", "github_pat", "--principal", &long], None);
    assert!(
        !run.ok && run.stderr.contains("invalid principal"),
        "{}",
        run.stderr
    );
    assert!(!dir.join("secrets.json").exists());
}

#[test]
fn help_says_what_a_principal_is() {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["set", "rm"] {
        let run = succeeds(dir.path(), &[sub, "--help"], None);
        let help = run.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
        for needed in [
            "--principal <P>",
            "an API key's name, a token's `sub`",
            "as `berth usage` shows it (e.g. `key:alice`)",
        ] {
            assert!(help.contains(needed), "{sub}: {needed}\n{}", run.stdout);
        }
    }
    let run = succeeds(dir.path(), &["--help"], None);
    assert!(
        run.stdout.contains("rm") && run.stdout.contains("remove"),
        "{}",
        run.stdout
    );
}
