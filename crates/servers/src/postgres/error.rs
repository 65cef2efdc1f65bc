//! Why a tool call failed, told the way a person fixing the SQL needs it:
//! Postgres's SQLSTATE, message, detail, hint and position.

use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio_postgres::error::{DbError, ErrorPosition, SqlState};

use super::connect::chain;

pub enum Failure {
    /// From the database or the driver.
    Db(tokio_postgres::Error),
    /// Ours (bad arguments, nothing found).
    Message(String),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        Failure::Db(e)
    }
}

impl From<String> for Failure {
    fn from(e: String) -> Self {
        Failure::Message(e)
    }
}

/// What the tool answers about a failure: readable text and the same as fields.
pub struct Report {
    pub text: String,
    pub fields: Value,
}

/// What a failed statement's report needs beyond the error itself.
pub struct Context<'a> {
    pub sql: Option<&'a str>,
    pub statement_timeout: Duration,
    pub allow_writes: bool,
}

impl Failure {
    pub fn report(&self, cx: &Context) -> Report {
        match self {
            Failure::Message(text) => Report {
                text: text.clone(),
                fields: json!({ "error": { "message": text } }),
            },
            Failure::Db(e) => match e.as_db_error() {
                Some(db) => db_report(db, cx),
                None if e.is_closed() => {
                    let text = format!(
                        "the connection to the database was lost ({}); the next call reconnects",
                        chain(e)
                    );
                    Report {
                        fields: json!({ "error": { "message": text } }),
                        text,
                    }
                }
                None => {
                    let text = format!("database client error: {}", chain(e));
                    Report {
                        fields: json!({ "error": { "message": text } }),
                        text,
                    }
                }
            },
        }
    }
}

fn db_report(db: &DbError, cx: &Context) -> Report {
    let code = db.code();
    let timeout = humantime::format_duration(cx.statement_timeout).to_string();
    let mut message = db.message().to_string();
    let mut hint = db.hint().map(str::to_string);
    if *code == SqlState::QUERY_CANCELED && message.contains("statement timeout") {
        message = format!("statement timeout ({timeout}) reached: {message}");
        hint.get_or_insert_with(|| {
            "make the query cheaper (a narrower WHERE, a LIMIT, an index), or raise the server's statement_timeout option".to_string()
        });
    }
    if *code == SqlState::READ_ONLY_SQL_TRANSACTION {
        hint = Some(if cx.allow_writes {
            "`query` and `explain` are read-only; run writes with the `execute` tool".to_string()
        } else {
            "this server is read-only: `query` runs in a READ ONLY transaction; writes need the server option allow_writes = true, which adds an `execute` tool".to_string()
        });
    }
    let position = match db.position() {
        Some(ErrorPosition::Original(p)) => Some(*p),
        _ => None,
    };
    let mut text = format!("ERROR {}: {message}", code.code());
    if let Some(detail) = db.detail() {
        text.push_str(&format!("\nDETAIL: {detail}"));
    }
    if let Some(hint) = &hint {
        text.push_str(&format!("\nHINT: {hint}"));
    }
    if let (Some(p), Some(sql)) = (position, cx.sql) {
        text.push_str(&format!("\nPOSITION: {p}{}", near(sql, p)));
    }
    if let Some(place) = db.where_() {
        text.push_str(&format!("\nWHERE: {place}"));
    }
    let mut fields = Map::new();
    fields.insert("sqlstate".into(), code.code().into());
    fields.insert("message".into(), message.into());
    fields.insert("severity".into(), db.severity().into());
    let optional = [
        ("detail", db.detail()),
        ("hint", hint.as_deref()),
        ("where", db.where_()),
        ("schema", db.schema()),
        ("table", db.table()),
        ("column", db.column()),
        ("constraint", db.constraint()),
    ];
    for (key, value) in optional {
        if let Some(value) = value {
            fields.insert(key.into(), value.into());
        }
    }
    if let Some(p) = position {
        fields.insert("position".into(), p.into());
    }
    Report {
        text,
        fields: json!({ "error": Value::Object(fields) }),
    }
}

/// ` (near "...")`: the SQL from the 1-based character position `p`.
fn near(sql: &str, p: u32) -> String {
    let start = usize::try_from(p.saturating_sub(1)).unwrap_or(usize::MAX);
    let snippet: String = sql.chars().skip(start).take(30).collect();
    let snippet = snippet.split('\n').next().unwrap_or_default().trim_end();
    if snippet.is_empty() {
        String::new()
    } else {
        format!(" (near \"{snippet}\")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_position_points_into_the_sql() {
        assert_eq!(near("SELEC 1", 1), " (near \"SELEC 1\")");
        assert_eq!(near("SELECT x FROM nope", 15), " (near \"nope\")");
        assert_eq!(near("SELECT", 99), "");
    }
}
