//! Schema introspection from the system catalogs (pg_namespace, pg_class,
//! pg_attribute, pg_constraint, pg_index), which see every object the
//! connected role can see, unlike information_schema's privilege filters.

use serde_json::{Map, Value, json};
use tokio_postgres::Row;
use tokio_postgres::Transaction;
use tokio_postgres::types::FromSql;

use super::error::Failure;

/// A column of a catalog row (these queries fix the types, but a mismatch
/// must be an error, not a panic).
fn get<'a, T: FromSql<'a>>(row: &'a Row, idx: usize) -> Result<T, Failure> {
    row.try_get(idx).map_err(Failure::from)
}

const SCHEMAS: &str = "
SELECT n.nspname::text, pg_get_userbyid(n.nspowner)::text, obj_description(n.oid, 'pg_namespace')
FROM pg_namespace n
WHERE $1 OR (n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
             AND n.nspname NOT LIKE 'pg\\_temp\\_%' AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%')
ORDER BY 1";

pub async fn schemas(tx: &Transaction<'_>, include_system: bool) -> Result<Value, Failure> {
    let rows = tx.query(SCHEMAS, &[&include_system]).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        out.push(json!({
            "name": get::<String>(row, 0)?,
            "owner": get::<String>(row, 1)?,
            "comment": get::<Option<String>>(row, 2)?,
        }));
    }
    Ok(json!({ "schemas": out }))
}

const TABLES: &str = "
SELECT c.relname::text,
       CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'partitioned table' WHEN 'v' THEN 'view'
                      WHEN 'm' THEN 'materialized view' WHEN 'f' THEN 'foreign table' END,
       CASE WHEN c.relkind IN ('v', 'f') OR c.reltuples < 0 THEN NULL ELSE c.reltuples::int8 END,
       obj_description(c.oid, 'pg_class')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
ORDER BY 1";

pub async fn tables(tx: &Transaction<'_>, schema: &str) -> Result<Value, Failure> {
    let exists = tx
        .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema])
        .await?;
    if exists.is_none() {
        return Err(Failure::Message(format!(
            "no schema named {schema:?} (list_schemas lists them)"
        )));
    }
    let rows = tx.query(TABLES, &[&schema]).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        out.push(json!({
            "name": get::<String>(row, 0)?,
            "kind": get::<String>(row, 1)?,
            // pg_class.reltuples: the planner's estimate, null until the table is first analyzed.
            "row_estimate": get::<Option<i64>>(row, 2)?,
            "comment": get::<Option<String>>(row, 3)?,
        }));
    }
    Ok(json!({ "schema": schema, "tables": out }))
}

const RELATION: &str = "
SELECT c.oid, CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'partitioned table' WHEN 'v' THEN 'view'
                      WHEN 'm' THEN 'materialized view' WHEN 'f' THEN 'foreign table' ELSE c.relkind::text END,
       obj_description(c.oid, 'pg_class'),
       CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid, true) END
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p', 'v', 'm', 'f')";

const COLUMNS: &str = "
SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid), a.attidentity::text, a.attgenerated::text,
       col_description(a.attrelid, a.attnum)
FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum";

const CONSTRAINTS: &str = "
SELECT con.conname::text, con.contype::text, pg_get_constraintdef(con.oid, true),
       ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY k(num, i)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.num ORDER BY k.i),
       CASE WHEN con.confrelid <> 0 THEN con.confrelid::regclass::text END,
       ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY k(num, i)
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.num ORDER BY k.i)
FROM pg_constraint con
WHERE con.conrelid = $1
ORDER BY con.contype, con.conname";

const INDEXES: &str = "
SELECT i.relname::text, pg_get_indexdef(x.indexrelid), x.indisunique, x.indisprimary
FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
WHERE x.indrelid = $1
ORDER BY 1";

pub async fn describe(tx: &Transaction<'_>, schema: &str, table: &str) -> Result<Value, Failure> {
    let Some(rel) = tx.query_opt(RELATION, &[&schema, &table]).await? else {
        return Err(Failure::Message(format!(
            "no table or view named {table:?} in schema {schema:?} (list_tables lists them; names are case-sensitive here, as stored)"
        )));
    };
    let oid: u32 = get(&rel, 0)?;
    let mut out = Map::new();
    out.insert("schema".into(), schema.into());
    out.insert("name".into(), table.into());
    out.insert("kind".into(), get::<String>(&rel, 1)?.into());
    out.insert("comment".into(), get::<Option<String>>(&rel, 2)?.into());
    if let Some(definition) = get::<Option<String>>(&rel, 3)? {
        out.insert("definition".into(), definition.trim().into());
    }

    let mut columns = Vec::new();
    for row in &tx.query(COLUMNS, &[&oid]).await? {
        let mut column = Map::new();
        column.insert("name".into(), get::<String>(row, 0)?.into());
        column.insert("type".into(), get::<String>(row, 1)?.into());
        column.insert("nullable".into(), get::<bool>(row, 2)?.into());
        column.insert("default".into(), get::<Option<String>>(row, 3)?.into());
        match get::<String>(row, 4)?.as_str() {
            "a" => column.insert("identity".into(), "always".into()),
            "d" => column.insert("identity".into(), "by default".into()),
            _ => None,
        };
        if get::<String>(row, 5)? == "s" {
            column.insert("generated".into(), "stored".into());
        }
        if let Some(comment) = get::<Option<String>>(row, 6)? {
            column.insert("comment".into(), comment.into());
        }
        columns.push(Value::Object(column));
    }
    out.insert("columns".into(), columns.into());

    let (mut primary, mut foreign, mut unique, mut checks) = (Value::Null, vec![], vec![], vec![]);
    for row in &tx.query(CONSTRAINTS, &[&oid]).await? {
        let name: String = get(row, 0)?;
        let kind: String = get(row, 1)?;
        let definition: String = get(row, 2)?;
        let cols: Vec<String> = get(row, 3)?;
        match kind.as_str() {
            "p" => primary = json!({ "name": name, "columns": cols }),
            "f" => foreign.push(json!({
                "name": name,
                "columns": cols,
                "references": {
                    "table": get::<Option<String>>(row, 4)?,
                    "columns": get::<Vec<String>>(row, 5)?,
                },
                "definition": definition,
            })),
            "u" => unique.push(json!({ "name": name, "columns": cols, "definition": definition })),
            "c" => checks.push(json!({ "name": name, "definition": definition })),
            // Exclusion constraints and the like: their definition says it all.
            _ => checks.push(json!({ "name": name, "definition": definition })),
        }
    }
    out.insert("primary_key".into(), primary);
    out.insert("foreign_keys".into(), foreign.into());
    out.insert("unique_constraints".into(), unique.into());
    out.insert("check_constraints".into(), checks.into());

    let mut indexes = Vec::new();
    for row in &tx.query(INDEXES, &[&oid]).await? {
        indexes.push(json!({
            "name": get::<String>(row, 0)?,
            "definition": get::<String>(row, 1)?,
            "unique": get::<bool>(row, 2)?,
            "primary": get::<bool>(row, 3)?,
        }));
    }
    out.insert("indexes".into(), indexes.into());
    Ok(Value::Object(out))
}
