//! Changing the configuration file for `berth add`, `remove` and `upgrade`,
//! keeping the operator's comments and layout (toml_edit), and never writing
//! a file that `Config::parse` would refuse.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::Value;
use toml_edit::{Array, DocumentMut, InlineTable, Item, Table};

use crate::config::Config;

/// A configuration file, read (or new) and ready to change.
pub struct ConfigFile {
    pub path: PathBuf,
    doc: DocumentMut,
    /// The configuration as read (defaults for a new file).
    config: Config,
    /// Whether the file did not exist yet.
    pub created: bool,
}

/// A `[servers.NAME]` table as the catalog would write it.
#[derive(Debug, Default)]
pub struct ServerTable {
    /// `KEY@VERSION` of the catalog entry.
    pub catalog: String,
    pub command: Option<String>,
    pub builtin: Option<String>,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub options: BTreeMap<String, Value>,
    pub binding: Option<String>,
    pub on_crash: Option<String>,
    pub roots: Option<Value>,
    pub required_scopes: Vec<String>,
    pub tool_scopes: BTreeMap<String, Vec<String>>,
    pub pool: serde_json::Map<String, Value>,
    pub sandbox: serde_json::Map<String, Value>,
}

const NEW_FILE_HEADER: &str = "# Berth configuration (see examples/berth.toml for every setting).\n# Servers added with `berth add` are written below; edit them freely.\n";

impl ConfigFile {
    /// Reads `path`, or starts an empty file there when it does not exist.
    pub fn open(path: &Path) -> anyhow::Result<ConfigFile> {
        let (text, created) = match std::fs::read_to_string(path) {
            Ok(text) => (text, false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (String::new(), true),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        // Refuse to edit a file Berth itself would not load.
        let mut config = Config::parse(&text, &path.display().to_string())?;
        config.source = Some(path.to_path_buf());
        let doc = text
            .parse::<DocumentMut>()
            .with_context(|| format!("{} is not valid TOML", path.display()))?;
        Ok(ConfigFile {
            path: path.to_path_buf(),
            doc,
            config,
            created,
        })
    }

    /// The configuration as read, with the file's path as its source.
    pub fn config(&self) -> &Config {
        &self.config
    }

    fn servers(&mut self) -> &mut Table {
        let servers = self.doc.entry("servers").or_insert_with(|| {
            let mut table = Table::new();
            table.set_implicit(true);
            Item::Table(table)
        });
        if !servers.is_table() {
            // An inline `servers = {}`: make it a table so entries nest.
            let inline = servers.as_inline_table().cloned().unwrap_or_default();
            let mut table = inline.into_table();
            table.set_implicit(true);
            *servers = Item::Table(table);
        }
        servers.as_table_mut().expect("made a table above")
    }

    pub fn has_server(&self, name: &str) -> bool {
        self.doc.get("servers").and_then(|s| s.get(name)).is_some()
    }

    /// The `[servers.NAME]` table, if there is one.
    pub fn server(&self, name: &str) -> Option<&Table> {
        self.doc
            .get("servers")
            .and_then(|s| s.get(name))
            .and_then(Item::as_table)
    }

    pub fn set_server(&mut self, name: &str, table: &ServerTable) {
        let item = Item::Table(table.to_toml());
        self.servers().insert(name, item);
    }

    /// Replaces only the keys `berth upgrade` owns: catalog, command, args.
    pub fn set_program(&mut self, name: &str, table: &ServerTable) -> anyhow::Result<()> {
        let Some(existing) = self.servers().get_mut(name).and_then(Item::as_table_mut) else {
            bail!("{} has no [servers.{name}] table", self.path.display());
        };
        existing.insert("catalog", toml_edit::value(table.catalog.as_str()));
        if let Some(command) = &table.command {
            existing.insert("command", toml_edit::value(command.as_str()));
        }
        existing.insert("args", toml_edit::value(string_array(&table.args)));
        // Variables the install itself set (a preload's path names the version).
        if !table.env.is_empty() {
            let env = existing
                .entry("env")
                .or_insert_with(|| toml_edit::value(InlineTable::new()));
            if let Some(env) = env.as_table_like_mut() {
                for (key, value) in &table.env {
                    env.insert(key, toml_edit::value(value.as_str()));
                }
            }
        }
        Ok(())
    }

    pub fn remove_server(&mut self, name: &str) -> Option<Table> {
        match self.servers().remove(name) {
            Some(Item::Table(table)) => Some(table),
            _ => None,
        }
    }

    /// Checks the result with Berth's own loader, then replaces the file
    /// atomically (owner-only permissions for a new file).
    pub fn save(&self) -> anyhow::Result<Config> {
        let text = if self.created {
            format!("{NEW_FILE_HEADER}\n{}", self.doc)
        } else {
            self.doc.to_string()
        };
        let mut config = Config::parse(&text, &self.path.display().to_string())
            .context("the changed configuration would not load; nothing was written")?;
        config.source = Some(self.path.clone());
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        // Atomic and fsynced like every private file; an existing file keeps
        // the permissions its operator gave it.
        let previous = std::fs::metadata(&self.path).ok().map(|m| m.permissions());
        berth_files::write_private(&self.path, text.as_bytes())
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        if let Some(permissions) = previous {
            let _ = std::fs::set_permissions(&self.path, permissions);
        }
        Ok(config)
    }
}

impl ServerTable {
    fn to_toml(&self) -> Table {
        let mut t = Table::new();
        t.insert("catalog", toml_edit::value(self.catalog.as_str()));
        if let Some(builtin) = &self.builtin {
            t.insert("builtin", toml_edit::value(builtin.as_str()));
        }
        if let Some(command) = &self.command {
            t.insert("command", toml_edit::value(command.as_str()));
        }
        if !self.args.is_empty() {
            t.insert("args", toml_edit::value(string_array(&self.args)));
        }
        if let Some(binding) = &self.binding {
            t.insert("binding", toml_edit::value(binding.as_str()));
        }
        if let Some(on_crash) = &self.on_crash {
            t.insert("on_crash", toml_edit::value(on_crash.as_str()));
        }
        if let Some(roots) = &self.roots {
            t.insert("roots", Item::Value(json_to_toml(roots)));
        }
        if !self.required_scopes.is_empty() {
            t.insert(
                "required_scopes",
                toml_edit::value(string_array(&self.required_scopes)),
            );
        }
        if !self.env.is_empty() {
            let mut env = InlineTable::new();
            for (k, v) in &self.env {
                env.insert(k, v.as_str().into());
            }
            t.insert("env", toml_edit::value(env));
        }
        let sub = |map: &serde_json::Map<String, Value>| {
            let mut table = Table::new();
            for (k, v) in map {
                table.insert(k, Item::Value(json_to_toml(v)));
            }
            table
        };
        if !self.options.is_empty() {
            let map = self.options.clone().into_iter().collect();
            t.insert("options", Item::Table(sub(&map)));
        }
        if !self.pool.is_empty() {
            t.insert("pool", Item::Table(sub(&self.pool)));
        }
        if !self.sandbox.is_empty() {
            t.insert("sandbox", Item::Table(sub(&self.sandbox)));
        }
        if !self.tool_scopes.is_empty() {
            let mut scopes = Table::new();
            for (tool, list) in &self.tool_scopes {
                scopes.insert(tool, toml_edit::value(string_array(list)));
            }
            t.insert("tool_scopes", Item::Table(scopes));
        }
        t
    }
}

fn string_array(items: &[String]) -> Array {
    items.iter().map(String::as_str).collect()
}

/// JSON from a catalog entry as a TOML value (objects become inline tables;
/// TOML has no null, so nulls are dropped).
fn json_to_toml(value: &Value) -> toml_edit::Value {
    match value {
        Value::String(s) => s.as_str().into(),
        Value::Bool(b) => (*b).into(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.into(),
            None => n.as_f64().unwrap_or_default().into(),
        },
        Value::Array(items) => items
            .iter()
            .filter(|v| !v.is_null())
            .map(json_to_toml)
            .collect::<Array>()
            .into(),
        Value::Object(map) => {
            let mut table = InlineTable::new();
            for (k, v) in map.iter().filter(|(_, v)| !v.is_null()) {
                table.insert(k, json_to_toml(v));
            }
            table.into()
        }
        Value::Null => "".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adding_keeps_the_operators_comments_and_refuses_what_would_not_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("berth.toml");
        std::fs::write(
            &path,
            "# my gateway\n[gateway]\nlisten = \"127.0.0.1:9000\" # fixed port\n",
        )
        .unwrap();
        let mut file = ConfigFile::open(&path).unwrap();
        let mut table = ServerTable {
            catalog: "memory@1.0.0".into(),
            command: Some("/usr/bin/node".into()),
            args: vec!["/x/index.js".into()],
            binding: Some("shared".into()),
            ..ServerTable::default()
        };
        table.pool.insert("max_processes".into(), 1.into());
        table
            .env
            .insert("MEMORY_FILE_PATH".into(), "/state/memory.json".into());
        file.set_server("memory", &table);
        let config = file.save().unwrap();
        assert_eq!(config.servers.len(), 1);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# my gateway\n"), "{text}");
        assert!(text.contains("# fixed port"), "{text}");
        assert!(text.contains("[servers.memory.pool]"), "{text}");

        table.binding = Some("pooled".into());
        file.set_server("bad", &table);
        let err = file.save().unwrap_err();
        assert!(
            format!("{err:#}").contains("unknown variant `pooled`"),
            "{err:#}"
        );
        assert!(!std::fs::read_to_string(&path).unwrap().contains("bad"));
    }
}
