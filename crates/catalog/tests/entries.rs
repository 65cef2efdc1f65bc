//! Every catalog entry (`entries/*.json`) is a valid MCP Registry `server.json`
//! (the vendored 2025-12-11 schema) and carries the Berth hosting defaults that
//! `berth add` relies on. Reads only files in this crate: no network.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

const SCHEMA_ID: &str =
    "https://static.modelcontextprotocol.io/schemas/2025-12-11/server.schema.json";
/// Size of the upstream file (see schema/README.md): a cheap guard against an
/// accidental edit or a re-formatted copy.
const SCHEMA_BYTES: usize = 22090;
const HOSTING: &str = "io.github.berth-mcp/hosting";

/// The entries the catalog promises (the task's list); more may exist.
const REQUIRED: &[&str] = &[
    "everything",
    "memory",
    "filesystem",
    "sequential-thinking",
    "git",
    "time",
    "fetch",
    "sqlite",
    "github",
    "gitlab",
    "slack",
    "google-maps",
    "brave-search",
    "redis",
    "puppeteer",
    "postgres",
    "sandbox",
    "demo",
];
const BUILTINS: &[&str] = &["demo", "sandbox", "postgres"];
/// The keys `Hosting` in src/entry.rs accepts (it denies unknown fields).
const HOSTING_KEYS: &[&str] = &[
    "key",
    "bin",
    "builtin",
    "binding",
    "pool",
    "on_crash",
    "sandbox",
    "roots",
    "allow_from",
    "create_dirs",
    "create_files",
    "required_scopes",
    "tool_scopes",
    "install_env",
    "install_scripts",
    "node_proxy",
    "options",
    "secrets",
    "tags",
    "notes",
];
const POOL_KEYS: &[&str] = &[
    "min_ready",
    "max_processes",
    "preinitialize",
    "standby_after",
    "stop_after",
];
const SANDBOX_KEYS: &[&str] = &[
    "network", "allow", "writable", "readable", "profile", "memory", "pids",
];
/// Servers whose state is one file rewritten in place: two processes would
/// overwrite each other's data.
const SINGLE_FILE: &[&str] = &["memory", "sqlite"];

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn validator() -> jsonschema::Validator {
    let text = std::fs::read_to_string(crate_dir().join("schema/server.schema.json")).unwrap();
    assert_eq!(
        text.len(),
        SCHEMA_BYTES,
        "schema/server.schema.json is not the upstream file byte for byte"
    );
    let schema: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(schema["$id"], SCHEMA_ID);
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    jsonschema::draft7::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap()
}

fn schema_errors(validator: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    validator
        .iter_errors(doc)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// (file stem, parsed document) of every entry, sorted by stem.
fn entries() -> Vec<(String, Value)> {
    let dir = crate_dir().join("entries");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            let doc: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: not JSON: {e}", p.display()));
            (stem(p), doc)
        })
        .collect()
}

fn stem(path: &Path) -> String {
    path.file_stem().unwrap().to_str().unwrap().to_string()
}

/// A single, exact version: what `npm install pkg@V` / `pip install pkg==V`
/// resolve to one release. Rejects ranges, wildcards and dist-tags.
fn is_pinned(version: &str) -> bool {
    let mut parts = version.splitn(2, ['-', '+']);
    let core = parts.next().unwrap_or("");
    let numbers: Vec<&str> = core.split('.').collect();
    (2..=4).contains(&numbers.len())
        && numbers
            .iter()
            .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        && parts.next().is_none_or(|rest| {
            !rest.is_empty()
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'+')
        })
}

fn str_list(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Every `{word}` in a template string must be one Berth expands.
fn check_templates(what: &str, text: &str, problems: &mut Vec<String>) {
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else { break };
        let word = &after[..close];
        if !word.is_empty()
            && word.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            && word != "state_dir"
            && word != "name"
        {
            problems.push(format!("{what}: unknown template {{{word}}} in {text:?}"));
        }
        rest = &after[close..];
    }
}

#[test]
fn schema_rejects_broken_documents() {
    let validator = validator();
    let good = json!({
        "$schema": SCHEMA_ID,
        "name": "io.github.example/ok",
        "description": "A fine server",
        "version": "1.0.0",
        "packages": [{
            "registryType": "npm",
            "identifier": "example",
            "version": "1.0.0",
            "transport": {"type": "stdio"}
        }]
    });
    assert!(
        schema_errors(&validator, &good).is_empty(),
        "{:?}",
        schema_errors(&validator, &good)
    );

    let mut broken = Vec::new();
    let mut long = good.clone();
    long["description"] = json!("x".repeat(101));
    broken.push(("description over 100 chars", long));
    let mut latest = good.clone();
    latest["packages"][0]["version"] = json!("latest");
    broken.push(("package version latest", latest));
    let mut no_name = good.clone();
    no_name.as_object_mut().unwrap().remove("name");
    broken.push(("no name", no_name));
    let mut bad_name = good.clone();
    bad_name["name"] = json!("no-slash");
    broken.push(("name without a namespace", bad_name));
    let mut bad_transport = good.clone();
    bad_transport["packages"][0]["transport"] = json!({"type": "carrier-pigeon"});
    broken.push(("unknown transport", bad_transport));
    let mut bad_url = good.clone();
    bad_url["websiteUrl"] = json!("not a uri");
    broken.push(("websiteUrl not a URI", bad_url));
    let mut bad_arg = good.clone();
    bad_arg["packages"][0]["packageArguments"] = json!([{"type": "positional"}]);
    broken.push(("positional argument without value or valueHint", bad_arg));
    for (why, doc) in broken {
        assert!(
            !schema_errors(&validator, &doc).is_empty(),
            "the schema accepted a document with {why}"
        );
    }
}

#[test]
fn version_pinning_rule() {
    for ok in [
        "1.0.2",
        "2026.8.31",
        "0.6.2",
        "2.1.0-alpha.1",
        "0.0.83",
        "1.2.3.4",
    ] {
        assert!(is_pinned(ok), "{ok} should count as pinned");
    }
    for bad in [
        "latest", "^1.2.3", "~1.2.3", ">=1.2.3", "1.x", "1.*", "*", "1", "", "1.2.3 ", "v1.2.3",
        "1..2",
    ] {
        assert!(!is_pinned(bad), "{bad:?} should not count as pinned");
    }
}

#[test]
fn every_entry_is_valid_and_complete() {
    let validator = validator();
    let entries = entries();
    assert!(entries.len() >= 20, "only {} entries", entries.len());

    let mut problems = Vec::new();
    let mut keys = BTreeSet::new();
    let mut names = BTreeMap::new();
    for (stem, doc) in &entries {
        macro_rules! p {
            ($msg:expr) => {
                problems.push(format!("{stem}: {}", $msg))
            };
        }
        for e in schema_errors(&validator, doc) {
            p!(format!("schema: {e}"));
        }
        if doc["$schema"] != SCHEMA_ID {
            p!(format!("$schema is {}, not {SCHEMA_ID}", doc["$schema"]));
        }
        if let Some(name) = doc["name"].as_str()
            && let Some(other) = names.insert(name.to_string(), stem.clone())
        {
            p!(format!("name {name} is also {other}'s"));
        }
        let version = doc["version"].as_str().unwrap_or("");
        if !is_pinned(version) {
            p!(format!("version {version:?} is not one exact version"));
        }

        let hosting = &doc["_meta"][HOSTING];
        let Some(hosting_map) = hosting.as_object() else {
            p!(format!("no _meta.\"{HOSTING}\" object"));
            continue;
        };
        for k in hosting_map.keys() {
            if !HOSTING_KEYS.contains(&k.as_str()) {
                p!(format!("unknown hosting key {k}"));
            }
        }
        match hosting["key"].as_str() {
            Some(key) if key == stem => {}
            other => p!(format!("hosting key is {other:?}, not the file stem")),
        }
        if !keys.insert(hosting["key"].as_str().unwrap_or(stem).to_string()) {
            p!("duplicate key");
        }

        let packages = doc["packages"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        match hosting["builtin"].as_str() {
            Some(builtin) => {
                if !BUILTINS.contains(&builtin) {
                    p!(format!("unknown built-in {builtin}"));
                }
                if !packages.is_empty() || !hosting["bin"].is_null() {
                    p!("a built-in has neither packages nor bin");
                }
            }
            None => {
                if packages.len() != 1 {
                    p!(format!(
                        "{} packages; a package entry has exactly one",
                        packages.len()
                    ));
                }
                for pkg in packages {
                    let registry = pkg["registryType"].as_str().unwrap_or("");
                    if registry != "npm" && registry != "pypi" {
                        p!(format!(
                            "registryType {registry:?}; Berth installs npm and pypi"
                        ));
                    }
                    let pv = pkg["version"].as_str().unwrap_or("");
                    if pv != version {
                        p!(format!(
                            "package version {pv:?} is not the entry version {version:?}"
                        ));
                    }
                    if !is_pinned(pv) {
                        p!(format!("package version {pv:?} is not pinned"));
                    }
                    for arg in pkg["packageArguments"].as_array().into_iter().flatten() {
                        let shown = arg["name"]
                            .as_str()
                            .or(arg["valueHint"].as_str())
                            .unwrap_or("?");
                        for field in ["value", "default"] {
                            if let Some(text) = arg[field].as_str() {
                                check_templates(
                                    &format!("{stem}: argument {shown}"),
                                    text,
                                    &mut problems,
                                );
                            }
                        }
                        // Arguments show in process listings and cannot carry ${secret:...}.
                        if arg["isSecret"] == true {
                            p!(format!(
                                "argument {shown} is secret: pass secrets in environment variables"
                            ));
                        }
                    }
                    if pkg["transport"]["type"] != "stdio" {
                        p!("package transport is not stdio");
                    }
                    for var in pkg["environmentVariables"].as_array().into_iter().flatten() {
                        let var_name = var["name"].as_str().unwrap_or("");
                        if var["isSecret"] == true && !var["value"].is_null() {
                            p!(format!("secret {var_name} has a fixed value"));
                        }
                        for field in ["value", "default"] {
                            if let Some(text) = var[field].as_str() {
                                check_templates(
                                    &format!("{stem}: env {var_name}"),
                                    text,
                                    &mut problems,
                                );
                            }
                        }
                    }
                }
                match hosting["bin"].as_str() {
                    Some(bin) if !bin.is_empty() && !bin.contains('/') => {}
                    other => p!(format!(
                        "bin {other:?}: a package entry names its executable"
                    )),
                }
            }
        }

        if let Some(binding) = hosting.get("binding")
            && binding != "exclusive"
            && binding != "shared"
        {
            p!(format!("binding {binding}"));
        }
        if let Some(on_crash) = hosting.get("on_crash")
            && on_crash != "end"
            && on_crash != "replay"
        {
            p!(format!("on_crash {on_crash}"));
        }
        for k in hosting["pool"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
        {
            if !POOL_KEYS.contains(&k.as_str()) {
                p!(format!("unknown pool key {k}"));
            }
        }
        let pool = &hosting["pool"];
        if let (Some(min), Some(max)) = (pool["min_ready"].as_u64(), pool["max_processes"].as_u64())
            && (max == 0 || min > max)
        {
            p!(format!("pool min_ready {min} / max_processes {max}"));
        }
        if SINGLE_FILE.contains(&stem.as_str())
            && (hosting["binding"] != "shared" || pool["max_processes"] != 1)
        {
            p!("one state file: needs binding shared and pool.max_processes 1");
        }

        let sandbox = &hosting["sandbox"];
        for k in sandbox.as_object().into_iter().flatten().map(|(k, _)| k) {
            if !SANDBOX_KEYS.contains(&k.as_str()) {
                p!(format!("unknown sandbox key {k}"));
            }
        }
        match sandbox["network"].as_str() {
            Some("none" | "host") if sandbox.get("allow").is_some() => {
                p!("sandbox.allow without network \"allow\"")
            }
            Some("none" | "host") => {}
            // The postgres built-in's list is filled by `berth add` from its DSN.
            Some("allow") if str_list(&sandbox["allow"]).is_empty() && stem != "postgres" => {
                p!("network allow with an empty allow list admits nothing")
            }
            Some("allow") => {
                for host in str_list(&sandbox["allow"]) {
                    if host
                        .rsplit_once(':')
                        .is_none_or(|(h, port)| h.is_empty() || port.is_empty())
                    {
                        p!(format!("allow entry {host:?} is not host:port"));
                    }
                }
            }
            other => p!(format!(
                "sandbox.network {other:?}: say none, allow or host"
            )),
        }

        for (tool, scopes) in hosting["tool_scopes"].as_object().into_iter().flatten() {
            for scope in str_list(scopes) {
                if scope != format!("{stem}:write") {
                    p!(format!(
                        "tool {tool} scope {scope}: writes go behind {stem}:write"
                    ));
                }
            }
        }
        match &hosting["roots"] {
            Value::Null => {}
            Value::String(s) if s == "client" => {}
            Value::Array(roots) if !roots.is_empty() => {
                for root in roots {
                    match root.as_str() {
                        Some(r) => check_templates(&format!("{stem}: roots"), r, &mut problems),
                        None => p!(format!("root {root} is not a string")),
                    }
                }
            }
            other => p!(format!("roots {other}: a list of paths or \"client\"")),
        }
        for dir in str_list(&hosting["create_dirs"]) {
            if dir.is_empty() || dir.starts_with('/') || dir.split('/').any(|c| c == "..") {
                p!(format!(
                    "create_dirs {dir:?} must stay inside the state dir"
                ));
            }
        }
        if hosting["notes"].as_str().is_none_or(str::is_empty) {
            p!("no notes for the operator");
        }
        if str_list(&hosting["tags"]).is_empty() {
            p!("no tags");
        }
    }

    for required in REQUIRED {
        if !keys.contains(*required) {
            problems.push(format!("missing entry {required}"));
        }
    }
    assert!(
        problems.is_empty(),
        "catalog entries:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn built_ins_and_secrets() {
    for (stem, doc) in entries() {
        let hosting = &doc["_meta"][HOSTING];
        if stem == "postgres" {
            assert_eq!(hosting["builtin"], "postgres");
            assert_eq!(hosting["options"]["dsn"], "${secret:{name}.dsn}");
            let secrets = hosting["secrets"].as_array().unwrap();
            assert!(
                secrets
                    .iter()
                    .any(|s| s["name"] == "dsn" && s["isRequired"] == true)
            );
        }
        // Tokens and API keys are asked for as secrets, never written in the entry.
        for var in doc["packages"][0]["environmentVariables"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let name = var["name"].as_str().unwrap();
            if name.ends_with("_TOKEN") || name.ends_with("_API_KEY") || name.ends_with("_KEY") {
                assert_eq!(var["isSecret"], true, "{stem}: {name} must be a secret");
            }
        }
    }
}

#[test]
fn berth_loads_every_entry() {
    // The crate's own reader (it denies unknown hosting keys) accepts each
    // file, and every file is embedded in the binary under its stem.
    let files = entries();
    for (stem, doc) in &files {
        let entry = berth_catalog::Entry::from_document(
            doc.clone(),
            berth_catalog::Origin::Embedded,
            Some(stem),
        )
        .unwrap_or_else(|e| panic!("{stem}: {e}"));
        assert_eq!(&entry.key, stem);
        let kind = entry.kind().unwrap();
        assert_eq!(
            kind == berth_catalog::Kind::Builtin,
            BUILTINS.contains(&stem.as_str()),
            "{stem}: {kind}"
        );
    }
    let catalog = berth_catalog::Catalog::embedded();
    let embedded: BTreeSet<&str> = catalog.entries().iter().map(|e| e.key.as_str()).collect();
    let on_disk: BTreeSet<&str> = files.iter().map(|(stem, _)| stem.as_str()).collect();
    assert_eq!(embedded, on_disk);
}
