//! Which scopes a server and each of its tools require.

use std::collections::BTreeMap;

use crate::Principal;

/// A server's authorization rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerAccess {
    /// Scopes every request to the server needs.
    pub required_scopes: Vec<String>,
    /// Extra scopes per tool, checked on `tools/call`; `tools/list` shows a
    /// caller only the tools it may call.
    pub tool_scopes: BTreeMap<String, Vec<String>>,
    /// Scopes every tool whose name starts with the prefix needs (a member
    /// server's own required scopes, through a federated endpoint).
    pub tool_prefix_scopes: Vec<(String, Vec<String>)>,
}

impl ServerAccess {
    /// The scopes `principal` lacks to call `tool` (empty: allowed).
    pub fn missing_for_tool(&self, principal: &Principal, tool: &str) -> Vec<String> {
        let mut missing = match self.tool_scopes.get(tool) {
            Some(needed) => principal.missing(needed),
            None => Vec::new(),
        };
        for (prefix, needed) in &self.tool_prefix_scopes {
            if tool.starts_with(prefix.as_str()) {
                for scope in principal.missing(needed) {
                    if !missing.contains(&scope) {
                        missing.push(scope);
                    }
                }
            }
        }
        missing
    }

    /// Whether `tools/list` answers must be filtered for `principal`.
    pub fn hides_tools_from(&self, principal: &Principal) -> bool {
        self.tool_scopes.values().any(|s| !principal.has_all(s))
            || self
                .tool_prefix_scopes
                .iter()
                .any(|(_, s)| !principal.has_all(s))
    }

    /// Every scope this server can ask for, for its metadata.
    pub fn all_scopes(&self) -> Vec<String> {
        let mut all: Vec<String> = self.required_scopes.clone();
        for scopes in self.tool_scopes.values() {
            for s in scopes {
                if !all.contains(s) {
                    all.push(s.clone());
                }
            }
        }
        all
    }
}
