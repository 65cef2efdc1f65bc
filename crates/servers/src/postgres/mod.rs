//! `postgres`: a PostgreSQL database as MCP tools.
//!
//! Read-only by default: `query` and `explain` run inside `BEGIN READ ONLY`
//! with `SET LOCAL statement_timeout`, results are fetched through a portal
//! in batches and stop at `row_limit` rows (`truncated: true` says more
//! existed), so a huge result never sits in memory. `execute` (writes,
//! committed) exists only with `allow_writes`. A cancelled MCP request sends
//! Postgres a cancel request at once, so the backend stops too.
//!
//! Options (environment, see the crate docs): `BERTH_POSTGRES_DSN` (required),
//! `BERTH_POSTGRES_ALLOW_WRITES` (false), `BERTH_POSTGRES_STATEMENT_TIMEOUT`
//! ("30s"; a bare number is milliseconds, as in Postgres),
//! `BERTH_POSTGRES_ROW_LIMIT` (1000), `BERTH_POSTGRES_MAX_CELL_BYTES` (65536:
//! longer text cells are cut, and marked). One connection per process (Berth
//! runs one process per session), opened at start and again whenever it
//! drops; calls on it run one at a time.

mod catalog;
mod connect;
mod error;
mod types;

use std::sync::Arc;
use std::time::Duration;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, ServerHandler, ServiceExt, schemars, tool, tool_handler, tool_router};
use serde_json::{Map, Value, json};
use tokio::sync::Mutex;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement, Transaction};
use tokio_util::sync::CancellationToken;

use connect::{Canceller, Target};
use error::{Context, Failure};
use types::{Param, RawCell};

/// The option keys (`BERTH_POSTGRES_<KEY>`).
pub const OPTIONS: &[&str] = &[
    "dsn",
    "allow_writes",
    "statement_timeout",
    "row_limit",
    "max_cell_bytes",
];

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_ROW_LIMIT: usize = 1000;
const MAX_ROW_LIMIT: usize = 100_000;
const DEFAULT_MAX_CELL_BYTES: usize = 64 * 1024;
/// Rows fetched from the portal at a time.
const BATCH: usize = 256;
/// After a cancel request, how long the statement has to end before the
/// connection is given up (and reopened on the next call).
const CANCEL_GRACE: Duration = Duration::from_secs(3);

/// The server's settings, from its options.
#[derive(Clone)]
pub struct Settings {
    target: Target,
    allow_writes: bool,
    statement_timeout: Duration,
    row_limit: usize,
    max_cell_bytes: usize,
}

impl Settings {
    /// Reads the options through `env` (a variable's value by name).
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Settings, String> {
        let var = |key: &str| crate::option_env("postgres", key);
        let get = |key: &str| env(&var(key)).filter(|v| !v.trim().is_empty());
        let dsn = get("dsn").ok_or_else(|| {
            format!(
                "{} is not set: give the server the option `dsn` (a postgresql:// URL or \"host=... user=... dbname=...\"), normally from the secrets store: `berth secret set pg_dsn` (the DSN on stdin), then [servers.NAME.options] dsn = \"${{secret:pg_dsn}}\" (or env = {{ {} = \"${{secret:pg_dsn}}\" }})",
                var("dsn"),
                var("dsn")
            )
        })?;
        let target = Target::new(&dsn, &env)
            .map_err(|e| format!("{} (option `dsn`) is not usable: {e}", var("dsn")))?;
        let allow_writes = match get("allow_writes").map(|v| v.trim().to_ascii_lowercase()) {
            None => false,
            Some(v) if ["true", "1", "yes", "on"].contains(&v.as_str()) => true,
            Some(v) if ["false", "0", "no", "off"].contains(&v.as_str()) => false,
            Some(v) => {
                return Err(format!(
                    "{} (option `allow_writes`) is {v:?}; expected true or false",
                    var("allow_writes")
                ));
            }
        };
        let statement_timeout = match get("statement_timeout") {
            None => DEFAULT_TIMEOUT,
            Some(v) => parse_timeout(v.trim()).ok_or_else(|| {
                format!(
                    "{} (option `statement_timeout`) is {v:?}; expected a duration such as \"30s\", \"2m\" or \"500ms\" (0 for none)",
                    var("statement_timeout")
                )
            })?,
        };
        let count =
            |key: &str, default: usize, range: std::ops::RangeInclusive<usize>| match get(key) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| range.contains(n))
                    .ok_or_else(|| {
                        format!(
                            "{} (option `{key}`) is {v:?}; expected a whole number from {} to {}",
                            var(key),
                            range.start(),
                            range.end()
                        )
                    }),
            };
        Ok(Settings {
            target,
            allow_writes,
            statement_timeout,
            row_limit: count("row_limit", DEFAULT_ROW_LIMIT, 1..=MAX_ROW_LIMIT)?,
            max_cell_bytes: count("max_cell_bytes", DEFAULT_MAX_CELL_BYTES, 16..=64 << 20)?,
        })
    }

    fn context<'a>(&self, sql: Option<&'a str>) -> Context<'a> {
        Context {
            sql,
            statement_timeout: self.statement_timeout,
            allow_writes: self.allow_writes,
        }
    }
}

/// "30s", "1m 30s", "500ms"; a bare number is milliseconds (Postgres's unit).
fn parse_timeout(v: &str) -> Option<Duration> {
    if let Ok(ms) = v.parse::<u64>() {
        return Some(Duration::from_millis(ms));
    }
    humantime::parse_duration(v).ok()
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct ListSchemasRequest {
    /// Also list pg_catalog, information_schema, pg_toast and temporary schemas.
    #[serde(default)]
    pub include_system: bool,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct ListTablesRequest {
    /// The schema (default "public").
    pub schema: Option<String>,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct DescribeTableRequest {
    /// The table or view name, as stored (case-sensitive, unquoted).
    pub table: String,
    /// Its schema (default "public").
    pub schema: Option<String>,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct QueryRequest {
    /// One SQL statement; use $1, $2... for parameters.
    pub sql: String,
    /// Values for $1, $2...: each is sent as text and parsed by Postgres as the type the
    /// statement expects (a JSON array for an array parameter, an object for json/jsonb).
    #[serde(default)]
    pub params: Vec<Value>,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct ExplainRequest {
    /// The statement to explain.
    pub sql: String,
    /// Values for $1, $2..., as for `query`.
    #[serde(default)]
    pub params: Vec<Value>,
    /// Run it too (EXPLAIN ANALYZE), inside a read-only transaction that is rolled back.
    #[serde(default)]
    pub analyze: bool,
}

/// One unit of work on the connection.
#[derive(Clone)]
enum Work {
    Schemas {
        include_system: bool,
    },
    Tables {
        schema: String,
    },
    Describe {
        schema: String,
        table: String,
    },
    Query {
        sql: String,
        params: Vec<Value>,
    },
    Explain {
        sql: String,
        params: Vec<Value>,
        analyze: bool,
    },
    Execute {
        sql: String,
        params: Vec<Value>,
    },
}

impl Work {
    fn sql(&self) -> Option<&str> {
        match self {
            Work::Query { sql, .. } | Work::Execute { sql, .. } => Some(sql),
            _ => None,
        }
    }
}

struct Connection {
    client: Client,
    canceller: Canceller,
}

struct Inner {
    settings: Settings,
    /// `None` until connected, and again after the connection is lost.
    connection: Mutex<Option<Connection>>,
}

#[derive(Clone)]
pub struct Postgres {
    inner: Arc<Inner>,
    tool_router: ToolRouter<Self>,
}

#[tool_router]
impl Postgres {
    pub fn new(settings: Settings) -> Postgres {
        let mut tool_router = Self::tool_router();
        if !settings.allow_writes {
            tool_router.remove_route("execute");
        }
        Postgres {
            inner: Arc::new(Inner {
                settings,
                connection: Mutex::new(None),
            }),
            tool_router,
        }
    }

    #[tool(
        description = "List the schemas of the database (without pg_catalog, information_schema and pg_toast unless include_system)"
    )]
    async fn list_schemas(
        &self,
        Parameters(ListSchemasRequest { include_system }): Parameters<ListSchemasRequest>,
        context: RequestContext<RoleServer>,
    ) -> CallToolResult {
        self.run(Work::Schemas { include_system }, context.ct).await
    }

    #[tool(
        description = "List the tables, views, materialized views and foreign tables of a schema (default public), with the planner's row estimates"
    )]
    async fn list_tables(
        &self,
        Parameters(ListTablesRequest { schema }): Parameters<ListTablesRequest>,
        context: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let schema = schema.unwrap_or_else(|| "public".into());
        self.run(Work::Tables { schema }, context.ct).await
    }

    #[tool(
        description = "Describe a table or view: columns (type, nullability, default), primary key, foreign keys, unique and check constraints, indexes with their definitions"
    )]
    async fn describe_table(
        &self,
        Parameters(DescribeTableRequest { table, schema }): Parameters<DescribeTableRequest>,
        context: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let schema = schema.unwrap_or_else(|| "public".into());
        self.run(Work::Describe { schema, table }, context.ct).await
    }

    #[tool(
        description = "Run one read-only SQL statement (inside a READ ONLY transaction, with the server's statement timeout) and return its columns and rows as typed JSON. At most row_limit rows are returned; `truncated: true` means there were more (add a LIMIT or narrow the query). Writes fail."
    )]
    async fn query(
        &self,
        Parameters(QueryRequest { sql, params }): Parameters<QueryRequest>,
        context: RequestContext<RoleServer>,
    ) -> CallToolResult {
        self.run(Work::Query { sql, params }, context.ct).await
    }

    #[tool(
        description = "Show the plan of a statement (EXPLAIN (FORMAT JSON)) in a read-only transaction; analyze = true also runs it (EXPLAIN ANALYZE), still read-only and rolled back"
    )]
    async fn explain(
        &self,
        Parameters(ExplainRequest {
            sql,
            params,
            analyze,
        }): Parameters<ExplainRequest>,
        context: RequestContext<RoleServer>,
    ) -> CallToolResult {
        self.run(
            Work::Explain {
                sql,
                params,
                analyze,
            },
            context.ct,
        )
        .await
    }

    #[tool(
        description = "Run one SQL statement that changes data or schema (INSERT, UPDATE, DELETE, DDL...) in its own transaction, committed when it succeeds. Returns rows_affected, and the RETURNING rows as typed JSON."
    )]
    async fn execute(
        &self,
        Parameters(QueryRequest { sql, params }): Parameters<QueryRequest>,
        context: RequestContext<RoleServer>,
    ) -> CallToolResult {
        self.run(Work::Execute { sql, params }, context.ct).await
    }
}

impl Postgres {
    /// Opens the connection now, so the first call does not wait for it; a
    /// failure is only logged (each call retries and reports its own).
    pub fn warm_up(&self) {
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let mut slot = inner.connection.lock().await;
            if slot.is_none() {
                match inner.settings.target.connect().await {
                    Ok((client, canceller)) => *slot = Some(Connection { client, canceller }),
                    Err(e) => eprintln!("postgres: {e}"),
                }
            }
        });
    }

    /// Runs `work` on the connection (opened or reopened as needed), one call
    /// at a time; `ct` cancelled cancels the statement on the server too.
    async fn run(&self, work: Work, ct: CancellationToken) -> CallToolResult {
        let settings = &self.inner.settings;
        let mut slot = tokio::select! {
            slot = self.inner.connection.lock() => slot,
            _ = ct.cancelled() => return cancelled(),
        };
        let sql = work.sql().map(str::to_owned);
        let mut outcome = self.attempt(&mut slot, work.clone(), &ct).await;
        // A connection found dead on use (the database restarted, an admin
        // ended the backend) is replaced once for work that writes nothing;
        // `execute` is not retried, as its commit may have happened.
        if !matches!(work, Work::Execute { .. })
            && matches!(&outcome, Outcome::Done(Err(Failure::Db(e))) if e.is_closed())
        {
            eprintln!("postgres: the connection was lost; reconnecting");
            outcome = self.attempt(&mut slot, work, &ct).await;
        }
        match outcome {
            Outcome::Cancelled => cancelled(),
            Outcome::Unreachable(e) => failed(e, Value::Null),
            Outcome::Done(Ok(value)) => CallToolResult::structured(value),
            Outcome::Done(Err(failure)) => {
                let report = failure.report(&settings.context(sql.as_deref()));
                failed(report.text, report.fields)
            }
        }
    }

    async fn attempt(
        &self,
        slot: &mut Option<Connection>,
        work: Work,
        ct: &CancellationToken,
    ) -> Outcome {
        let settings = &self.inner.settings;
        if slot.as_ref().is_some_and(|c| c.client.is_closed()) {
            *slot = None;
        }
        let connection = match slot {
            Some(connection) => connection,
            None => {
                let connected = tokio::select! {
                    connected = settings.target.connect() => connected,
                    _ = ct.cancelled() => return Outcome::Cancelled,
                };
                match connected {
                    Ok((client, canceller)) => slot.insert(Connection { client, canceller }),
                    Err(e) => return Outcome::Unreachable(e),
                }
            }
        };
        let canceller = connection.canceller.clone();
        let (outcome, keep) = {
            let running = perform(&mut connection.client, settings, work);
            tokio::pin!(running);
            tokio::select! {
                outcome = &mut running => (Outcome::Done(outcome), true),
                _ = ct.cancelled() => {
                    // Stop the backend now; the statement then ends with
                    // query_canceled and the connection stays usable.
                    if let Err(e) = canceller.cancel().await {
                        eprintln!("postgres: the cancel request failed: {e}");
                    }
                    let ended = tokio::time::timeout(CANCEL_GRACE, &mut running).await.is_ok();
                    (Outcome::Cancelled, ended)
                }
            }
        };
        if !keep || connection.client.is_closed() {
            // Dropping the client closes the connection; the next call reconnects.
            *slot = None;
        }
        outcome
    }
}

enum Outcome {
    Done(Result<Value, Failure>),
    Cancelled,
    /// No connection could be made.
    Unreachable(String),
}

fn cancelled() -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(
        "cancelled: the statement was cancelled on the server",
    )])
}

fn failed(text: String, fields: Value) -> CallToolResult {
    let mut result = CallToolResult::error(vec![ContentBlock::text(text)]);
    if !fields.is_null() {
        result.structured_content = Some(fields);
    }
    result
}

async fn perform(client: &mut Client, s: &Settings, work: Work) -> Result<Value, Failure> {
    match work {
        Work::Schemas { include_system } => {
            let tx = read_only(client, s).await?;
            let out = catalog::schemas(&tx, include_system).await?;
            tx.rollback().await?;
            Ok(out)
        }
        Work::Tables { schema } => {
            let tx = read_only(client, s).await?;
            let out = catalog::tables(&tx, &schema).await?;
            tx.rollback().await?;
            Ok(out)
        }
        Work::Describe { schema, table } => {
            let tx = read_only(client, s).await?;
            let out = catalog::describe(&tx, &schema, &table).await?;
            tx.rollback().await?;
            Ok(out)
        }
        Work::Query { sql, params } => {
            let sql = statement(&sql)?;
            let prepared = prepare(client, sql, &params).await?;
            let tx = read_only(client, s).await?;
            let fetched = fetch(&tx, &prepared, &params, s, false).await?;
            tx.rollback().await?;
            Ok(fetched.into_json(&prepared, None))
        }
        Work::Explain {
            sql,
            params,
            analyze,
        } => {
            let sql = statement(&sql)?;
            let options = if analyze {
                "FORMAT JSON, ANALYZE, BUFFERS"
            } else {
                "FORMAT JSON"
            };
            let explain = format!("EXPLAIN ({options}) {sql}");
            let stmt = client.prepare(&explain).await?;
            check_params(&stmt, &params)?;
            let tx = read_only(client, s).await?;
            let params = param_refs(&params);
            let rows = tx.query(&stmt, &dyn_refs(&params)).await?;
            tx.rollback().await?;
            let mut plan = Vec::new();
            for row in &rows {
                let RawCell(raw) = row.try_get(0)?;
                plan.push(types::to_json(&row.columns()[0].type_().clone(), raw)?);
            }
            // FORMAT JSON gives one row holding a one-element array.
            let plan = match plan.pop() {
                Some(Value::Array(mut items)) if items.len() == 1 && plan.is_empty() => {
                    items.pop().unwrap_or(Value::Null)
                }
                Some(other) => other,
                None => Value::Null,
            };
            Ok(json!({ "analyzed": analyze, "plan": plan }))
        }
        Work::Execute { sql, params } => {
            let sql = statement(&sql)?;
            let prepared = prepare(client, sql, &params).await?;
            let tx = client.transaction().await?;
            tx.batch_execute(&set_timeout(s)).await?;
            if prepared.run.columns().is_empty() {
                let params = param_refs(&params);
                let affected = tx.execute(&prepared.run, &dyn_refs(&params)).await?;
                tx.commit().await?;
                return Ok(json!({ "rows_affected": affected, "committed": true }));
            }
            let fetched = fetch(&tx, &prepared, &params, s, true).await?;
            tx.commit().await?;
            let seen = fetched.seen;
            Ok(fetched.into_json(&prepared, Some(seen)))
        }
    }
}

/// The statement without trailing semicolons and blanks; empty is an error.
fn statement(sql: &str) -> Result<&str, Failure> {
    let sql = sql.trim_end_matches(|c: char| c == ';' || c.is_whitespace());
    if sql.trim().is_empty() {
        return Err(Failure::Message(
            "sql is empty: give one SQL statement".into(),
        ));
    }
    Ok(sql)
}

fn set_timeout(s: &Settings) -> String {
    format!(
        "SET LOCAL statement_timeout = {}",
        s.statement_timeout.as_millis()
    )
}

async fn read_only<'c>(client: &'c mut Client, s: &Settings) -> Result<Transaction<'c>, Failure> {
    let tx = client.build_transaction().read_only(true).start().await?;
    tx.batch_execute(&set_timeout(s)).await?;
    Ok(tx)
}

fn check_params(stmt: &Statement, params: &[Value]) -> Result<(), Failure> {
    let wanted = stmt.params().len();
    if wanted != params.len() {
        return Err(Failure::Message(format!(
            "the statement has {wanted} parameter(s) ($1..${wanted}) but {} value(s) were given in params",
            params.len()
        )));
    }
    Ok(())
}

fn param_refs(params: &[Value]) -> Vec<Param> {
    params.iter().cloned().map(Param).collect()
}

fn dyn_refs(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

/// A statement ready to run, and how its columns are shown.
struct Prepared {
    /// What runs: the statement itself, or it wrapped so that columns of
    /// types not decoded here come back as their text form.
    run: Statement,
    /// (name, type label) per column, from the statement as written.
    columns: Vec<(String, String)>,
}

async fn prepare(client: &Client, sql: &str, params: &[Value]) -> Result<Prepared, Failure> {
    let stmt = client.prepare(sql).await?;
    check_params(&stmt, params)?;
    let mut names = Vec::with_capacity(stmt.columns().len());
    for column in stmt.columns() {
        // Two columns of one name would collide as keys of a row object.
        let mut name = column.name().to_string();
        let mut n = 2;
        while names.contains(&name) {
            name = format!("{} ({n})", column.name());
            n += 1;
        }
        names.push(name);
    }
    let opaque: Vec<bool> = stmt
        .columns()
        .iter()
        .map(|c| !types::decodable(c.type_()))
        .collect();
    let labels = |text: bool| -> Vec<String> {
        stmt.columns()
            .iter()
            .zip(&opaque)
            .map(|(c, &o)| match (o, text) {
                (false, _) => types::type_label(c.type_()),
                (true, true) => format!("{} (as text)", c.type_().name()),
                (true, false) => format!(
                    "{} (binary form, base64: cast it to text in the SQL for its text form)",
                    c.type_().name()
                ),
            })
            .collect()
    };
    if !opaque.contains(&true) {
        let columns = names.into_iter().zip(labels(false)).collect();
        return Ok(Prepared { run: stmt, columns });
    }
    // WITH q(c1, c2...) AS (<sql>) SELECT c1, c2::text... works for SELECT,
    // VALUES, TABLE and DML ... RETURNING; when it doesn't (SHOW, say), the
    // raw bytes are shown instead.
    let aliases: Vec<String> = (1..=opaque.len()).map(|i| format!("c{i}")).collect();
    let select: Vec<String> = aliases
        .iter()
        .zip(&opaque)
        .map(|(a, &o)| {
            if o {
                format!("q.{a}::text")
            } else {
                format!("q.{a}")
            }
        })
        .collect();
    let wrapped = format!(
        "WITH q({}) AS (\n{sql}\n) SELECT {} FROM q",
        aliases.join(", "),
        select.join(", ")
    );
    match client.prepare(&wrapped).await {
        Ok(run) => {
            let columns = names.into_iter().zip(labels(true)).collect();
            Ok(Prepared { run, columns })
        }
        Err(_) => {
            let columns = names.into_iter().zip(labels(false)).collect();
            Ok(Prepared { run: stmt, columns })
        }
    }
}

/// Rows read from a portal.
struct Fetched {
    rows: Vec<Value>,
    /// Rows the statement produced as far as read (all of them when draining).
    seen: u64,
    truncated: bool,
    cells_cut: usize,
    row_limit: usize,
}

impl Fetched {
    fn into_json(self, prepared: &Prepared, rows_affected: Option<u64>) -> Value {
        let columns: Vec<Value> = prepared
            .columns
            .iter()
            .map(|(name, ty)| json!({ "name": name, "type": ty }))
            .collect();
        let mut out = Map::new();
        if let Some(n) = rows_affected {
            out.insert("rows_affected".into(), n.into());
            out.insert("committed".into(), true.into());
        }
        out.insert("columns".into(), columns.into());
        out.insert("row_count".into(), self.rows.len().into());
        out.insert("truncated".into(), self.truncated.into());
        if self.truncated {
            out.insert(
                "note".into(),
                format!(
                    "only the first {} rows are shown (the server's row_limit); add a LIMIT, an aggregate or a narrower WHERE",
                    self.row_limit
                )
                .into(),
            );
        }
        if self.cells_cut > 0 {
            out.insert("cells_cut".into(), self.cells_cut.into());
        }
        out.insert("rows".into(), self.rows.into());
        Value::Object(out)
    }
}

/// Reads the statement's rows through a portal, `BATCH` at a time, keeping
/// `row_limit`; reads one more to know whether it was cut, or (`drain`) all
/// of them, counted but not kept.
async fn fetch(
    tx: &Transaction<'_>,
    prepared: &Prepared,
    params: &[Value],
    s: &Settings,
    drain: bool,
) -> Result<Fetched, Failure> {
    let params = param_refs(params);
    let portal = tx.bind(&prepared.run, &dyn_refs(&params)).await?;
    let mut fetched = Fetched {
        rows: Vec::new(),
        seen: 0,
        truncated: false,
        cells_cut: 0,
        row_limit: s.row_limit,
    };
    loop {
        let want = if drain {
            BATCH
        } else {
            BATCH.min(s.row_limit + 1 - fetched.rows.len())
        };
        let batch = tx
            .query_portal(&portal, i32::try_from(want).unwrap_or(i32::MAX))
            .await?;
        let done = batch.len() < want;
        for row in &batch {
            fetched.seen += 1;
            if fetched.rows.len() >= s.row_limit {
                fetched.truncated = true;
                continue;
            }
            let mut object = Map::new();
            for (i, (name, _)) in prepared.columns.iter().enumerate() {
                let RawCell(raw) = row.try_get(i)?;
                let mut value = types::to_json(row.columns()[i].type_(), raw)?;
                if types::clip(&mut value, s.max_cell_bytes) {
                    fetched.cells_cut += 1;
                }
                object.insert(name.clone(), value);
            }
            fetched.rows.push(Value::Object(object));
        }
        if done || (!drain && fetched.truncated) {
            break;
        }
    }
    Ok(fetched)
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Postgres {
    fn get_info(&self) -> ServerConfig {
        let writes = if self.inner.settings.allow_writes {
            "`execute` runs one writing statement and commits it."
        } else {
            "This server is read-only (writes need the option allow_writes = true, which adds `execute`)."
        };
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("berth-postgres", env!("CARGO_PKG_VERSION")))
            .with_instructions(format!(
                "A PostgreSQL database ({}). Explore with `list_schemas`, `list_tables` and `describe_table`; \
                 read with `query` (one statement, $1.. parameters in `params`, read-only, at most {} rows, \
                 statement timeout {}) and `explain`. {writes} Values come back as typed JSON: numeric and \
                 large int8 as strings, timestamps as ISO 8601, bytea as base64.",
                self.inner.settings.target.describe(),
                self.inner.settings.row_limit,
                humantime::format_duration(self.inner.settings.statement_timeout),
            ))
    }
}

/// Serves the database named by the options on stdin/stdout.
pub async fn run() -> anyhow::Result<()> {
    let settings = Settings::from_env(|k| std::env::var(k).ok()).map_err(anyhow::Error::msg)?;
    eprintln!(
        "postgres: serving {} ({}, statement timeout {}, row limit {})",
        settings.target.describe(),
        if settings.allow_writes {
            "writes allowed"
        } else {
            "read-only"
        },
        humantime::format_duration(settings.statement_timeout),
        settings.row_limit
    );
    let server = Postgres::new(settings);
    server.warm_up();
    let service = server.serve(rmcp::transport::stdio()).await?;
    service.waiting().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_env(move |k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
    }

    #[test]
    fn options_have_defaults_and_clear_errors() {
        let err = settings(&[]).err().unwrap();
        assert!(
            err.contains("BERTH_POSTGRES_DSN")
                && err.contains("dsn")
                && err.contains("berth secret set"),
            "{err}"
        );
        let s = settings(&[("BERTH_POSTGRES_DSN", "postgresql://root@127.0.0.1/test")]).unwrap();
        assert!(!s.allow_writes);
        assert_eq!(s.statement_timeout, Duration::from_secs(30));
        assert_eq!(s.row_limit, 1000);
        let s = settings(&[
            ("BERTH_POSTGRES_DSN", "host=127.0.0.1 user=root"),
            ("BERTH_POSTGRES_ALLOW_WRITES", "true"),
            ("BERTH_POSTGRES_STATEMENT_TIMEOUT", "1s"),
            ("BERTH_POSTGRES_ROW_LIMIT", "50"),
        ])
        .unwrap();
        assert!(s.allow_writes);
        assert_eq!(s.statement_timeout, Duration::from_secs(1));
        assert_eq!(s.row_limit, 50);
        assert_eq!(parse_timeout("1500"), Some(Duration::from_millis(1500)));
        let err = settings(&[
            ("BERTH_POSTGRES_DSN", "host=127.0.0.1 user=root"),
            ("BERTH_POSTGRES_ROW_LIMIT", "0"),
        ])
        .err()
        .unwrap();
        assert!(err.contains("row_limit"), "{err}");
        let err = settings(&[(
            "BERTH_POSTGRES_DSN",
            "postgresql://root@h/db?sslmode=require",
        )])
        .err()
        .unwrap();
        assert!(
            err.contains("sslmode=require") && err.contains("`dsn`"),
            "{err}"
        );
        assert_eq!(statement("SELECT 1;; \n").ok(), Some("SELECT 1"));
        assert!(statement(" ; ").is_err());
    }
}
