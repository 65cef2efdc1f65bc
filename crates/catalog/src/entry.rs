//! One catalog entry: a `server.json` document of the MCP Registry (schema
//! 2025-12-11) and the hosting defaults Berth keeps in its `_meta`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The `_meta` key under which an entry carries Berth's hosting defaults.
pub const HOSTING_KEY: &str = "io.github.berth-mcp/hosting";

/// The parts of `server.json` Berth reads. Unknown fields are kept in the
/// document (`Entry::document`) but not interpreted.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerJson {
    pub name: String,
    #[serde(default)]
    pub title: Option<String>,
    pub description: String,
    pub version: String,
    #[serde(default)]
    pub website_url: Option<String>,
    #[serde(default)]
    pub packages: Vec<Package>,
    #[serde(default)]
    pub remotes: Vec<Value>,
    #[serde(default, rename = "_meta")]
    pub meta: serde_json::Map<String, Value>,
}

/// `packages[]`: how to obtain and run the server.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Package {
    pub registry_type: String,
    pub identifier: String,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub registry_base_url: Option<String>,
    #[serde(default)]
    pub transport: Option<Transport>,
    #[serde(default)]
    pub environment_variables: Vec<Input>,
    #[serde(default)]
    pub package_arguments: Vec<Argument>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Transport {
    #[serde(rename = "type")]
    pub kind: String,
}

/// An environment variable or argument value the operator may have to give.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Input {
    /// The variable's (or named argument's) name.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub is_required: bool,
    #[serde(default)]
    pub is_secret: bool,
    /// Used when the operator gives nothing.
    #[serde(default)]
    pub default: Option<String>,
    /// Fixed by the entry: not asked for.
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub placeholder: Option<String>,
}

/// `packageArguments[]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Argument {
    Positional {
        #[serde(flatten)]
        input: Input,
        #[serde(default, rename = "valueHint")]
        value_hint: Option<String>,
    },
    Named {
        #[serde(flatten)]
        input: Input,
    },
}

/// Berth's hosting defaults for an entry (`_meta."io.github.berth-mcp/hosting"`).
/// Tables (`pool`, `sandbox`) use the configuration file's own keys.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Hosting {
    /// The catalog name (`berth add KEY`).
    pub key: Option<String>,
    /// The executable the installed package provides.
    pub bin: Option<String>,
    /// A built-in server of Berth's own (no package).
    pub builtin: Option<String>,
    pub binding: Option<String>,
    pub pool: serde_json::Map<String, Value>,
    pub on_crash: Option<String>,
    pub sandbox: serde_json::Map<String, Value>,
    /// Fixed roots (`{state_dir}` expanded) or `"client"`.
    pub roots: Option<Value>,
    /// The setting (a database DSN) whose `host:port` `berth add` puts on the
    /// sandbox's egress allow list.
    pub allow_from: Option<String>,
    /// Directories made under the server's state dir at install time.
    pub create_dirs: Vec<String>,
    /// Empty files made there (an empty file is an empty SQLite database).
    pub create_files: Vec<String>,
    pub required_scopes: Vec<String>,
    pub tool_scopes: BTreeMap<String, Vec<String>>,
    /// Environment of the install step only.
    pub install_env: BTreeMap<String, String>,
    /// Make the server's Node HTTP clients use the sandbox's egress proxy:
    /// Node 20 ignores `HTTPS_PROXY` on its own (see `install`).
    pub node_proxy: bool,
    /// Run the package's install scripts (off by default: they would run
    /// with the operator's rights, outside any sandbox).
    pub install_scripts: bool,
    /// A built-in's option values.
    pub options: BTreeMap<String, Value>,
    /// A built-in's secret options, asked for like secret variables.
    pub secrets: Vec<Input>,
    pub tags: Vec<String>,
    pub notes: Option<String>,
}

/// Where an entry came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Shipped inside Berth.
    Embedded,
    /// A `server.json` file (a catalog directory, or `berth add --from`).
    File(std::path::PathBuf),
    /// A registry speaking the MCP Registry API.
    Registry(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Embedded => f.write_str("built into Berth"),
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::Registry(url) => write!(f, "registry {url}"),
        }
    }
}

/// What kind of thing installing an entry means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Npm,
    Pypi,
    Builtin,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Npm => "npm",
            Kind::Pypi => "pypi",
            Kind::Builtin => "built-in",
        })
    }
}

/// A catalog entry, ready to install.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The name `berth add` takes.
    pub key: String,
    pub server: ServerJson,
    pub hosting: Hosting,
    pub origin: Origin,
    /// The document as read, for `berth catalog show`.
    pub document: Value,
}

/// An entry that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: {reason}")]
pub struct EntryError {
    pub origin: String,
    pub reason: String,
}

impl Entry {
    /// Reads a `server.json` document. `key` is used when the document has
    /// no hosting key of its own (the file stem, or derived from its name).
    pub fn parse(text: &str, origin: Origin, key: Option<&str>) -> Result<Entry, EntryError> {
        let document: Value = serde_json::from_str(text).map_err(|e| EntryError {
            origin: origin.to_string(),
            reason: format!("not valid JSON: {e}"),
        })?;
        Entry::from_document(document, origin, key)
    }

    pub fn from_document(
        document: Value,
        origin: Origin,
        key: Option<&str>,
    ) -> Result<Entry, EntryError> {
        let shown = origin.to_string();
        let fail = |reason: String| EntryError {
            origin: shown.clone(),
            reason,
        };
        let server: ServerJson = serde_json::from_value(document.clone())
            .map_err(|e| fail(format!("not a server.json document: {e}")))?;
        let hosting: Hosting = match server.meta.get(HOSTING_KEY) {
            Some(meta) => serde_json::from_value(meta.clone())
                .map_err(|e| fail(format!("_meta.\"{HOSTING_KEY}\": {e}")))?,
            None => Hosting::default(),
        };
        let key = hosting
            .key
            .clone()
            .or_else(|| key.map(str::to_owned))
            .unwrap_or_else(|| key_from_name(&server.name));
        if !valid_key(&key) {
            return Err(fail(format!(
                "catalog key {key:?} must be 1-64 letters, digits, '-', '_' or '.'"
            )));
        }
        let entry = Entry {
            key,
            server,
            hosting,
            origin,
            document,
        };
        entry.kind().map_err(fail)?;
        Ok(entry)
    }

    /// npm, PyPI or built-in; an entry Berth cannot run is an error.
    pub fn kind(&self) -> Result<Kind, String> {
        if let Some(builtin) = &self.hosting.builtin {
            if !self.server.packages.is_empty() {
                return Err(format!("built-in `{builtin}` cannot also list packages"));
            }
            return Ok(Kind::Builtin);
        }
        let package = self.package().ok_or_else(|| {
            if self.server.remotes.is_empty() {
                "lists no package to install".to_string()
            } else {
                "only lists remotes (hosted elsewhere); Berth hosts packages it can install (npm, PyPI)".to_string()
            }
        })?;
        if let Some(t) = &package.transport
            && t.kind != "stdio"
        {
            return Err(format!(
                "package transport is {:?}; Berth hosts stdio packages",
                t.kind
            ));
        }
        match package.registry_type.as_str() {
            "npm" => Ok(Kind::Npm),
            "pypi" => Ok(Kind::Pypi),
            other => Err(format!(
                "package registryType {other:?} is not supported (npm and pypi are)"
            )),
        }
    }

    /// The first npm or PyPI package (the one Berth installs).
    pub fn package(&self) -> Option<&Package> {
        self.server
            .packages
            .iter()
            .find(|p| matches!(p.registry_type.as_str(), "npm" | "pypi"))
            .or_else(|| self.server.packages.first())
    }

    /// The version Berth installs: the package's pin, else the entry's.
    pub fn pinned_version(&self) -> &str {
        self.package()
            .and_then(|p| p.version.as_deref())
            .unwrap_or(&self.server.version)
    }

    /// Words `berth catalog search` matches against.
    pub fn matches(&self, word: &str) -> bool {
        let word = word.to_lowercase();
        let fields = [
            Some(self.key.as_str()),
            Some(self.server.name.as_str()),
            self.server.title.as_deref(),
            Some(self.server.description.as_str()),
            self.package().map(|p| p.identifier.as_str()),
        ];
        fields
            .into_iter()
            .flatten()
            .chain(self.hosting.tags.iter().map(String::as_str))
            .any(|field| field.to_lowercase().contains(&word))
    }

    /// Settings the operator must (or may) give: variables, arguments
    /// without a fixed value (a positional one by its `valueHint`), a
    /// built-in's secret options. Owned, since a positional argument's name
    /// is its hint.
    pub fn inputs(&self) -> Vec<Input> {
        let mut inputs: Vec<Input> = Vec::new();
        if let Some(package) = self.package() {
            inputs.extend(package.environment_variables.iter().cloned());
            for argument in &package.package_arguments {
                match argument {
                    Argument::Positional { input, value_hint } if input.value.is_none() => {
                        let mut input = input.clone();
                        if let Some(hint) = value_hint {
                            input.name = hint.clone();
                        }
                        inputs.push(input);
                    }
                    Argument::Named { input } if input.value.is_none() => {
                        inputs.push(input.clone())
                    }
                    _ => {}
                }
            }
        }
        inputs.extend(self.hosting.secrets.iter().cloned());
        inputs
    }
}

/// `io.github.someone/weather-mcp` → `weather-mcp`.
pub fn key_from_name(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    last.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(64)
        .collect()
}

fn valid_key(key: &str) -> bool {
    (1..=64).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{
        "name": "io.github.example/weather",
        "description": "Weather",
        "version": "1.2.3",
        "packages": [{"registryType": "npm", "identifier": "weather-mcp", "version": "1.2.3",
                      "transport": {"type": "stdio"},
                      "environmentVariables": [{"name": "API_KEY", "isSecret": true, "isRequired": true}]}]
    }"#;

    #[test]
    fn a_registry_document_without_hosting_gets_a_key_from_its_name() {
        let entry = Entry::parse(MINIMAL, Origin::Embedded, None).unwrap();
        assert_eq!(entry.key, "weather");
        assert_eq!(entry.kind().unwrap(), Kind::Npm);
        assert_eq!(entry.pinned_version(), "1.2.3");
        assert!(entry.inputs()[0].is_secret);
        assert!(entry.matches("WEATH"));
    }

    #[test]
    fn unusable_entries_say_why() {
        let remote = r#"{"name":"a/b","description":"d","version":"1","remotes":[{"type":"streamable-http","url":"https://x"}]}"#;
        let err = Entry::parse(remote, Origin::Embedded, None).unwrap_err();
        assert!(err.to_string().contains("only lists remotes"), "{err}");
        let oci = r#"{"name":"a/b","description":"d","version":"1","packages":[{"registryType":"oci","identifier":"x:1","transport":{"type":"stdio"}}]}"#;
        let err = Entry::parse(oci, Origin::Embedded, None).unwrap_err();
        assert!(
            err.to_string().contains("\"oci\" is not supported"),
            "{err}"
        );
        let typo = r#"{"name":"a/b","description":"d","version":"1","_meta":{"io.github.berth-mcp/hosting":{"bindng":"shared"}}}"#;
        let err = Entry::parse(typo, Origin::Embedded, None).unwrap_err();
        assert!(err.to_string().contains("unknown field `bindng`"), "{err}");
    }
}
