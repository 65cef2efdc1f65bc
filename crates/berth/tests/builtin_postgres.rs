//! The built-in `postgres` server against the real PostgreSQL on
//! 127.0.0.1:5432 (database `test`, trust auth), run by `berth serve` inside
//! its sandbox (network only through the egress proxy, which allows the
//! database's address) and driven over Streamable HTTP.
//!
//! Without a reachable database (or `psql`, used to set up and to watch
//! pg_stat_activity) each test prints why and passes, unless CI=true, where
//! it fails.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Berth, Launch, Raw, Reply};
use serde_json::{Value, json};

const DSN: &str = "postgresql://root@127.0.0.1:5432/test";
const VERSION: &str = "2025-06-18";

/// Whether the database can be used; panics under CI when it cannot.
fn database_ready() -> bool {
    let (ok, out) = common::run_with_timeout(
        Command::new("psql").args([
            "-X",
            "-h",
            "127.0.0.1",
            "-U",
            "root",
            "-d",
            "test",
            "-Atc",
            "SELECT 1",
        ]),
        Duration::from_secs(10),
    );
    if ok && out.trim() == "1" {
        return true;
    }
    let why = format!(
        "PostgreSQL on 127.0.0.1:5432 (database test, user root) is not usable through psql: {}",
        out.trim()
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{why}");
    }
    eprintln!("skipped: {why}");
    false
}

/// Runs `sql` with psql; returns its unaligned output.
fn psql(sql: &str) -> String {
    let (ok, out) = common::run_with_timeout(
        Command::new("psql").args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-U",
            "root",
            "-d",
            "test",
            "-Atc",
            sql,
        ]),
        Duration::from_secs(30),
    );
    assert!(ok, "psql failed on {sql}: {out}");
    out
}

/// A schema of its own for one test, dropped at the end.
struct Schema(String);

impl Schema {
    fn new(tag: &str) -> Schema {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("berth_pg_{tag}_{}_{nanos}", std::process::id());
        psql(&format!("CREATE SCHEMA {name}"));
        Schema(name)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let _ = common::run_with_timeout(
            Command::new("psql").args([
                "-X",
                "-q",
                "-h",
                "127.0.0.1",
                "-U",
                "root",
                "-d",
                "test",
                "-c",
                &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.0),
            ]),
            Duration::from_secs(30),
        );
    }
}

/// A `[servers.NAME]` table running `berth builtin postgres` in its sandbox,
/// allowed to reach the database and nothing else.
fn pg_server(name: &str, env: &[(&str, &str)]) -> String {
    let env: Vec<String> = env.iter().map(|(k, v)| format!("{k} = {v:?}")).collect();
    format!(
        "[servers.{name}]\ncommand = {:?}\nargs = [\"builtin\", \"postgres\"]\nenv = {{ {} }}\n\n[servers.{name}.sandbox]\nallow = [\"127.0.0.1:5432\"]\n",
        common::berth_bin().display().to_string(),
        env.join(", ")
    )
}

fn launch(servers: &str) -> Berth {
    Berth::launch(Launch {
        servers,
        ..Launch::default()
    })
}

async fn session(berth: &Berth, server: &str) -> Raw {
    let mut raw = Raw::new(berth.url(server));
    let init = raw.initialize(VERSION).await;
    assert_eq!(
        init["result"]["serverInfo"]["name"], "berth-postgres",
        "{init}"
    );
    raw
}

/// The JSON-RPC result of a reply (JSON or SSE).
fn result_of(reply: &Reply) -> Value {
    assert_eq!(reply.status, 200, "{}", reply.body);
    let message = if reply.content_type().starts_with("text/event-stream") {
        reply
            .sse_messages()
            .into_iter()
            .find(|m| m.get("result").is_some() || m.get("error").is_some())
            .unwrap_or_else(|| panic!("no answer in {}", reply.body))
    } else {
        reply.json()
    };
    assert!(message.get("error").is_none(), "JSON-RPC error: {message}");
    message["result"].clone()
}

/// Calls tool `name`; the structured result, which must not be an error.
async fn call_ok(raw: &Raw, id: u64, name: &str, args: Value) -> Value {
    let result = result_of(&raw.call_tool(id, name, args.clone()).await);
    assert_ne!(result["isError"], true, "{name} {args} failed: {result}");
    result["structuredContent"].clone()
}

/// Calls tool `name`, which must fail; its text.
async fn call_err(raw: &Raw, id: u64, name: &str, args: Value) -> String {
    let result = result_of(&raw.call_tool(id, name, args.clone()).await);
    assert_eq!(
        result["isError"], true,
        "{name} {args} should fail: {result}"
    );
    result["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn tool_names(raw: &Raw) -> Vec<String> {
    let reply = raw
        .post(r#"{"jsonrpc":"2.0","id":900,"method":"tools/list","params":{}}"#)
        .await;
    result_of(&reply)["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .map(|t| t["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The host pids of the `berth builtin postgres` processes under `berth`.
fn server_pids(berth: &Berth) -> Vec<u32> {
    common::descendants_of(berth.pid())
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|raw| {
                    String::from_utf8_lossy(&raw)
                        .replace('\0', " ")
                        .contains("builtin postgres")
                })
                .unwrap_or(false)
        })
        .collect()
}

// ===== 1. Catalog =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_schemas_and_tables_and_describes_them_with_the_dsn_from_the_secrets_store() {
    if !database_ready() {
        return;
    }
    let schema = Schema::new("catalog");
    let s = &schema.0;
    psql(&format!(
        "CREATE TABLE {s}.customers (id serial PRIMARY KEY, email text NOT NULL UNIQUE, created_at timestamptz NOT NULL DEFAULT now());
         CREATE TABLE {s}.orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
             customer_id int NOT NULL REFERENCES {s}.customers(id) ON DELETE CASCADE,
             total numeric(10,2) CHECK (total >= 0), note varchar(200));
         CREATE INDEX orders_by_customer ON {s}.orders (customer_id);
         COMMENT ON TABLE {s}.orders IS 'what customers bought';
         CREATE VIEW {s}.big_orders AS SELECT * FROM {s}.orders WHERE total > 100;
         INSERT INTO {s}.customers (email) SELECT 'c' || g || '@example.com' FROM generate_series(1, 50) g;
         ANALYZE {s}.customers;"
    ));

    // The DSN comes from the secrets store, the way an operator configures it.
    let berth = launch(&pg_server("pg", &[("BERTH_POSTGRES_DSN", "${secret:pg}")]));
    berth.set_secret("pg", DSN);
    let raw = session(&berth, "pg").await;
    let mut names = tool_names(&raw).await;
    names.sort();
    assert_eq!(
        names,
        [
            "describe_table",
            "explain",
            "list_schemas",
            "list_tables",
            "query"
        ],
        "read-only: no execute"
    );

    let schemas = call_ok(&raw, 1, "list_schemas", json!({})).await;
    let names: Vec<&str> = schemas["schemas"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert!(
        names.contains(&s.as_str()) && names.contains(&"public"),
        "{schemas}"
    );
    assert!(
        !names.contains(&"pg_catalog") && !names.contains(&"information_schema"),
        "{schemas}"
    );
    let all = call_ok(&raw, 2, "list_schemas", json!({"include_system": true})).await;
    assert!(all.to_string().contains("\"pg_catalog\""), "{all}");

    let tables = call_ok(&raw, 3, "list_tables", json!({"schema": s})).await;
    let listed: Vec<(String, String)> = tables["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().into(),
                t["kind"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("big_orders", "view"),
            ("customers", "table"),
            ("orders", "table")
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let customers = tables["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "customers")
        .unwrap();
    assert_eq!(customers["row_estimate"], 50, "{tables}");
    let missing = call_err(
        &raw,
        4,
        "list_tables",
        json!({"schema": "no_such_schema_here"}),
    )
    .await;
    assert!(missing.contains("no schema named"), "{missing}");

    let orders = call_ok(
        &raw,
        5,
        "describe_table",
        json!({"schema": s, "table": "orders"}),
    )
    .await;
    assert_eq!(orders["kind"], "table");
    assert_eq!(orders["comment"], "what customers bought");
    let columns = orders["columns"].as_array().unwrap();
    let column = |name: &str| {
        columns
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {orders}"))
    };
    assert_eq!(column("id")["type"], "bigint");
    assert_eq!(column("id")["identity"], "always");
    assert_eq!(column("id")["nullable"], false);
    assert_eq!(column("customer_id")["type"], "integer");
    assert_eq!(column("total")["type"], "numeric(10,2)");
    assert_eq!(column("total")["nullable"], true);
    assert_eq!(column("note")["type"], "character varying(200)");
    assert_eq!(orders["primary_key"]["columns"], json!(["id"]));
    let fk = &orders["foreign_keys"][0];
    assert_eq!(fk["columns"], json!(["customer_id"]), "{orders}");
    assert_eq!(fk["references"]["table"], format!("{s}.customers"));
    assert_eq!(fk["references"]["columns"], json!(["id"]));
    assert!(
        fk["definition"]
            .as_str()
            .unwrap()
            .contains("ON DELETE CASCADE"),
        "{fk}"
    );
    assert!(
        orders["check_constraints"]
            .to_string()
            .contains("total >= "),
        "{orders}"
    );
    let indexes = orders["indexes"].as_array().unwrap();
    let by_customer = indexes
        .iter()
        .find(|i| i["name"] == "orders_by_customer")
        .unwrap();
    assert_eq!(
        by_customer["definition"],
        format!("CREATE INDEX orders_by_customer ON {s}.orders USING btree (customer_id)")
    );
    assert!(
        indexes
            .iter()
            .any(|i| i["primary"] == true && i["unique"] == true),
        "{orders}"
    );

    let customers = call_ok(
        &raw,
        6,
        "describe_table",
        json!({"schema": s, "table": "customers"}),
    )
    .await;
    assert_eq!(
        customers["unique_constraints"][0]["columns"],
        json!(["email"]),
        "{customers}"
    );
    assert!(
        customers["columns"][2]["default"]
            .as_str()
            .unwrap()
            .contains("now()"),
        "{customers}"
    );
    assert!(
        customers["columns"][0]["default"]
            .as_str()
            .unwrap()
            .contains("nextval"),
        "{customers}"
    );

    let view = call_ok(
        &raw,
        7,
        "describe_table",
        json!({"schema": s, "table": "big_orders"}),
    )
    .await;
    assert_eq!(view["kind"], "view");
    assert!(
        view["definition"].as_str().unwrap().contains("total > "),
        "{view}"
    );

    let missing = call_err(
        &raw,
        8,
        "describe_table",
        json!({"schema": s, "table": "nope"}),
    )
    .await;
    assert!(
        missing.contains("no table or view named \"nope\""),
        "{missing}"
    );
    // Sandboxed: the database was reached through Berth's egress proxy.
    let log = berth.server_log("pg");
    assert!(
        log.contains("at 127.0.0.1:5432 through the proxy 127.0.0.1:"),
        "{log}"
    );
    berth.stop(Duration::from_secs(10));
}

// ===== 2. Typed rows =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_common_type_comes_back_as_typed_json() {
    if !database_ready() {
        return;
    }
    let schema = Schema::new("types");
    let s = &schema.0;
    psql(&format!(
        "CREATE TYPE {s}.mood AS ENUM ('happy', 'sad');
         CREATE TABLE {s}.everything (
           id int4 PRIMARY KEY, b bool, i2 int2, i8_small int8, i8_big int8, f4 float4, f8 float8,
           f8_nan float8, f8_inf float8, n numeric(20,4), n_big numeric, t text, vc varchar(10), c char(3),
           nm name, u uuid, ip inet, net cidr, mac macaddr, j json, jb jsonb, d date, tm time, ttz timetz,
           ts timestamp, tstz timestamptz, iv interval, by bytea, arr int4[], tarr text[], m {s}.mood,
           tsv tsvector, pt point);
         INSERT INTO {s}.everything VALUES (
           1, true, -7, 42, 9007199254740993, 1.5, 0.1, 'NaN', '-Infinity', 12345.6789,
           123456789012345678901234567890.000000001, 'héllo', 'abc', 'ab', 'pg',
           'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '192.168.0.1', '10.0.0.0/8', '08:00:2b:01:02:03',
           '{{\"a\": [1, 2]}}', '{{\"k\": null}}', '2024-02-29', '13:14:15.5', '01:02:03+05:30',
           '2024-02-29 13:14:15.123456', '2024-02-29 13:14:15.123+02', '1 year 2 months 3 days 04:05:06.5',
           '\\x00ff68', '{{{{1,2}},{{3,NULL}}}}', '{{a,\"b,c\",NULL}}', 'happy', 'a b', '(1,2)');
         INSERT INTO {s}.everything (id) VALUES (2);"
    ));

    let berth = launch(&pg_server("pg", &[("BERTH_POSTGRES_DSN", DSN)]));
    let raw = session(&berth, "pg").await;
    let out = call_ok(
        &raw,
        1,
        "query",
        json!({"sql": format!("SELECT * FROM {s}.everything WHERE id = ANY($1) ORDER BY id;"), "params": [[1, 2]]}),
    )
    .await;
    assert_eq!(out["truncated"], false);
    assert_eq!(out["row_count"], 2);
    let row = &out["rows"][0];
    let expected = json!({
        "id": 1, "b": true, "i2": -7, "i8_small": 42, "i8_big": "9007199254740993",
        "f4": 1.5, "f8": 0.1, "f8_nan": "NaN", "f8_inf": "-Infinity",
        "n": "12345.6789", "n_big": "123456789012345678901234567890.000000001",
        "t": "héllo", "vc": "abc", "c": "ab ", "nm": "pg",
        "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "ip": "192.168.0.1", "net": "10.0.0.0/8",
        "mac": "08:00:2b:01:02:03", "j": {"a": [1, 2]}, "jb": {"k": null},
        "d": "2024-02-29", "tm": "13:14:15.5", "ttz": "01:02:03+05:30",
        "ts": "2024-02-29T13:14:15.123456", "tstz": "2024-02-29T11:14:15.123+00:00",
        "iv": "P1Y2M3DT4H5M6.5S", "by": "AP9o", "arr": [[1, 2], [3, null]], "tarr": ["a", "b,c", null],
        "m": "happy", "tsv": "'a' 'b'", "pt": "(1,2)"
    });
    for (key, want) in expected.as_object().unwrap() {
        assert_eq!(&row[key], want, "column {key} in {row}");
    }
    // The NULL row: null everywhere but the key.
    let nulls = out["rows"][1].as_object().unwrap();
    assert_eq!(nulls.len(), expected.as_object().unwrap().len());
    assert!(
        nulls.iter().all(|(k, v)| k == "id" || v.is_null()),
        "{nulls:?}"
    );

    let types: Vec<(String, String)> = out["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().into(),
                c["type"].as_str().unwrap().into(),
            )
        })
        .collect();
    let type_of = |name: &str| {
        types
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.clone())
            .unwrap()
    };
    assert_eq!(type_of("by"), "bytea (base64)");
    assert_eq!(type_of("tsv"), "tsvector (as text)");
    assert_eq!(type_of("ts"), "timestamp");
    assert_eq!(type_of("m"), "mood");

    // Parameters are parsed by Postgres as the types the statement wants.
    let out = call_ok(
        &raw,
        2,
        "query",
        json!({"sql": "SELECT $1::date + 1 AS next, $2::numeric * 2 AS twice, $3::jsonb -> 'x' AS x, $4::text IS NULL AS none",
               "params": ["2024-12-31", "0.05", {"x": [true]}, null]}),
    )
    .await;
    assert_eq!(
        out["rows"][0],
        json!({"next": "2025-01-01", "twice": "0.10", "x": [true], "none": true})
    );
    let err = call_err(
        &raw,
        3,
        "query",
        json!({"sql": "SELECT $1::int", "params": []}),
    )
    .await;
    assert!(err.contains("1 parameter"), "{err}");
    let err = call_err(&raw, 4, "query", json!({"sql": "SELECT nope FROM nowhere"})).await;
    assert!(
        err.contains("42P01") && err.contains("POSITION: 18"),
        "{err}"
    );
    berth.stop(Duration::from_secs(10));
}

// ===== 3. Read-only unless allowed =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_need_allow_writes_and_query_stays_read_only() {
    if !database_ready() {
        return;
    }
    let schema = Schema::new("writes");
    let s = &schema.0;
    psql(&format!(
        "CREATE TABLE {s}.notes (id serial PRIMARY KEY, body text NOT NULL)"
    ));
    let servers = format!(
        "{}\n{}",
        pg_server("ro", &[("BERTH_POSTGRES_DSN", DSN)]),
        pg_server(
            "rw",
            &[
                ("BERTH_POSTGRES_DSN", DSN),
                ("BERTH_POSTGRES_ALLOW_WRITES", "true")
            ]
        )
    );
    let berth = launch(&servers);

    let ro = session(&berth, "ro").await;
    assert!(!tool_names(&ro).await.contains(&"execute".to_string()));
    let insert = json!({"sql": format!("INSERT INTO {s}.notes (body) VALUES ('x')")});
    let err = call_err(&ro, 1, "query", insert.clone()).await;
    assert!(
        err.contains("25006") && err.contains("cannot execute INSERT in a read-only transaction"),
        "{err}"
    );
    assert!(
        err.contains("allow_writes"),
        "the hint names the option: {err}"
    );
    let err = call_err(
        &ro,
        2,
        "explain",
        json!({"sql": insert["sql"], "analyze": true}),
    )
    .await;
    assert!(err.contains("read-only transaction"), "{err}");
    let reply = ro.call_tool(3, "execute", insert.clone()).await;
    assert!(reply.body.contains("tool not found"), "{}", reply.body);
    assert_eq!(psql(&format!("SELECT count(*) FROM {s}.notes")).trim(), "0");

    let rw = session(&berth, "rw").await;
    assert!(tool_names(&rw).await.contains(&"execute".to_string()));
    let out = call_ok(
        &rw,
        1,
        "execute",
        json!({"sql": format!("INSERT INTO {s}.notes (body) VALUES ($1), ($2) RETURNING id, body"), "params": ["one", "two"]}),
    )
    .await;
    assert_eq!(out["rows_affected"], 2, "{out}");
    assert_eq!(
        out["rows"],
        json!([{"id": 1, "body": "one"}, {"id": 2, "body": "two"}])
    );
    let out = call_ok(
        &rw,
        2,
        "execute",
        json!({"sql": format!("UPDATE {s}.notes SET body = upper(body)")}),
    )
    .await;
    assert_eq!(out["rows_affected"], 2, "{out}");
    // Committed: visible from another connection.
    assert_eq!(
        psql(&format!(
            "SELECT string_agg(body, ',' ORDER BY id) FROM {s}.notes"
        ))
        .trim(),
        "ONE,TWO"
    );
    let err = call_err(&rw, 3, "query", insert).await;
    assert!(
        err.contains("read-only transaction") && err.contains("`execute`"),
        "{err}"
    );
    let plan = call_ok(
        &rw,
        4,
        "explain",
        json!({"sql": format!("SELECT * FROM {s}.notes WHERE id = $1"), "params": [1]}),
    )
    .await;
    assert!(plan["plan"]["Plan"]["Node Type"].is_string(), "{plan}");
    let err = call_err(
        &rw,
        5,
        "execute",
        json!({"sql": format!("INSERT INTO {s}.notes (body) VALUES (NULL)")}),
    )
    .await;
    assert!(err.contains("23502") && err.contains("body"), "{err}");
    assert_eq!(psql(&format!("SELECT count(*) FROM {s}.notes")).trim(), "2");
    berth.stop(Duration::from_secs(10));
}

// ===== 4. Statement timeout =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_past_the_timeout_is_stopped_with_a_clear_error() {
    if !database_ready() {
        return;
    }
    let berth = launch(&pg_server(
        "pg",
        &[
            ("BERTH_POSTGRES_DSN", DSN),
            ("BERTH_POSTGRES_STATEMENT_TIMEOUT", "1s"),
        ],
    ));
    let raw = session(&berth, "pg").await;
    let err = call_err(&raw, 1, "query", json!({"sql": "SELECT pg_sleep(5)"})).await;
    assert!(
        err.contains("statement timeout (1s) reached") && err.contains("57014"),
        "{err}"
    );
    // The connection is still good.
    let out = call_ok(&raw, 2, "query", json!({"sql": "SELECT 1 AS one"})).await;
    assert_eq!(out["rows"], json!([{"one": 1}]));
    berth.stop(Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_is_replaced_on_the_next_call() {
    if !database_ready() {
        return;
    }
    let berth = launch(&pg_server("pg", &[("BERTH_POSTGRES_DSN", DSN)]));
    let raw = session(&berth, "pg").await;
    let out = call_ok(
        &raw,
        1,
        "query",
        json!({"sql": "SELECT pg_backend_pid() AS pid, current_setting('application_name') AS app"}),
    )
    .await;
    assert_eq!(out["rows"][0]["app"], "berth-postgres", "{out}");
    let pid = out["rows"][0]["pid"].as_i64().unwrap();
    assert_eq!(
        psql(&format!("SELECT pg_terminate_backend({pid})")).trim(),
        "t"
    );
    let out = call_ok(
        &raw,
        2,
        "query",
        json!({"sql": "SELECT pg_backend_pid() AS pid"}),
    )
    .await;
    assert_ne!(out["rows"][0]["pid"], pid, "{out}");
    berth.stop(Duration::from_secs(10));
}

// ===== 5. Cancellation =====

/// pids of backends running a statement containing `marker` (not this probe).
fn active_backends(marker: &str) -> Vec<String> {
    psql(&format!(
        "SELECT pid FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%{marker}%' AND pid <> pg_backend_pid()"
    ))
    .lines()
    .map(str::to_string)
    .filter(|l| !l.is_empty())
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_request_stops_the_backend_at_once() {
    if !database_ready() {
        return;
    }
    let berth = launch(&pg_server("pg", &[("BERTH_POSTGRES_DSN", DSN)]));
    let raw = session(&berth, "pg").await;
    let marker = format!("berth_cancel_{}", std::process::id());
    let call = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "query", "arguments": {"sql": format!("SELECT pg_sleep(30) AS {marker}")}}});
    let (http, url, session_id) = (
        raw.http.clone(),
        raw.url.clone(),
        raw.session.clone().unwrap(),
    );
    let running = tokio::spawn(async move {
        let reply = http
            .post(&url)
            .header("accept", common::ACCEPT_BOTH)
            .header("content-type", "application/json")
            .header("mcp-session-id", session_id)
            .body(call.to_string())
            .send()
            .await
            .expect("POST");
        let body = reply.text().await.unwrap_or_default();
        (Instant::now(), body)
    });

    let deadline = Instant::now() + Duration::from_secs(20);
    while active_backends(&marker).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the query never showed in pg_stat_activity"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": 7, "reason": "the agent gave up"}});
    let cancelled_at = Instant::now();
    let ack = raw.post(&cancel.to_string()).await;
    assert_eq!(ack.status, 202, "{}", ack.body);

    let backend_gone = loop {
        if active_backends(&marker).is_empty() {
            break cancelled_at.elapsed();
        }
        assert!(
            cancelled_at.elapsed() < Duration::from_secs(5),
            "the backend still runs the query 5 s after the cancel"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let (answered, body) = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the cancelled call's POST never ended")
        .unwrap();
    let answered = answered.duration_since(cancelled_at);
    eprintln!("cancel → POST ended: {answered:?}, backend stopped: {backend_gone:?}");
    assert!(
        !body.contains("\"result\""),
        "a cancelled request gets no result: {body}"
    );
    assert!(
        answered < Duration::from_secs(1),
        "the POST ended {answered:?} after the cancel"
    );
    assert!(
        backend_gone < Duration::from_secs(1),
        "the backend stopped {backend_gone:?} after the cancel"
    );

    // The session, and its connection, go on.
    let out = call_ok(&raw, 8, "query", json!({"sql": "SELECT 2 AS two"})).await;
    assert_eq!(out["rows"], json!([{"two": 2}]));
    berth.stop(Duration::from_secs(10));
}

// ===== 6. A huge result stays bounded =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_rows_stop_at_the_row_limit_in_bounded_memory() {
    if !database_ready() {
        return;
    }
    let berth = launch(&pg_server("pg", &[("BERTH_POSTGRES_DSN", DSN)]));
    let raw = session(&berth, "pg").await;
    call_ok(&raw, 1, "query", json!({"sql": "SELECT 1"})).await;
    let pids = server_pids(&berth);
    assert!(
        !pids.is_empty(),
        "no berth builtin postgres process under Berth"
    );
    let before: u64 = pids.iter().map(|&p| common::rss_kib(p)).max().unwrap();

    let out = call_ok(
        &raw,
        2,
        "query",
        json!({"sql": "SELECT g AS n, md5(g::text) AS hash, repeat('x', 200) AS pad FROM generate_series(1, 1000000) g"}),
    )
    .await;
    assert_eq!(out["truncated"], true);
    assert_eq!(out["row_count"], 1000);
    assert_eq!(out["rows"].as_array().unwrap().len(), 1000);
    assert_eq!(out["rows"][999]["n"], 1000);

    let after: u64 = server_pids(&berth)
        .iter()
        .map(|&p| common::rss_kib(p))
        .max()
        .unwrap();
    eprintln!("server RSS: {before} KiB before, {after} KiB after the query");
    assert!(after < 100 * 1024, "the server uses {after} KiB");
    assert!(
        after.saturating_sub(before) < 50 * 1024,
        "the server grew from {before} to {after} KiB"
    );
    berth.stop(Duration::from_secs(10));
}

// ===== Start-up errors =====

#[test]
fn a_missing_or_unusable_dsn_stops_the_server_at_start_with_the_fix() {
    let (ok, out) = common::run_with_timeout(
        Command::new(common::berth_bin())
            .args(["builtin", "postgres"])
            .env_remove("BERTH_POSTGRES_DSN")
            .stdin(Stdio::null()),
        Duration::from_secs(10),
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("BERTH_POSTGRES_DSN")
            && out.contains("`dsn`")
            && out.contains("berth secret set"),
        "{out}"
    );
    let (ok, out) = common::run_with_timeout(
        Command::new(common::berth_bin())
            .args(["builtin", "postgres"])
            .env(
                "BERTH_POSTGRES_DSN",
                "postgresql://root@db.example/x?sslmode=require",
            )
            .stdin(Stdio::null()),
        Duration::from_secs(10),
    );
    assert!(!ok && out.contains("sslmode=require"), "{out}");
}
