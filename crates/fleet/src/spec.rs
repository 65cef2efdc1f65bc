//! What it takes to start a server.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// A stdio MCP server: the command to run and its limits.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    pub name: String,
    /// The program, run directly (never through a shell).
    pub command: String,
    pub args: Vec<String>,
    /// Variables set for the child on top of the passed-through ones.
    pub env: BTreeMap<String, String>,
    /// Names of the gateway's own environment variables the child may see.
    pub env_passthrough: Vec<String>,
    pub cwd: Option<PathBuf>,
    /// The longest stdout line (one JSON-RPC message) accepted from the child.
    pub max_message_bytes: usize,
    pub shutdown: ShutdownGrace,
}

/// How long each step of the stdio shutdown sequence may take.
#[derive(Debug, Clone, Copy)]
pub struct ShutdownGrace {
    /// After stdin is closed, before SIGTERM.
    pub after_close: Duration,
    /// After SIGTERM, before SIGKILL.
    pub after_term: Duration,
}

impl Default for ShutdownGrace {
    fn default() -> Self {
        ShutdownGrace {
            after_close: Duration::from_secs(2),
            after_term: Duration::from_secs(3),
        }
    }
}

impl ServerSpec {
    /// Variables every child gets from the gateway unless configured otherwise:
    /// what programs need to run, and nothing that could carry a secret.
    pub const DEFAULT_PASSTHROUGH: &'static [&'static str] = &[
        "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "TERM",
    ];

    pub fn new(name: impl Into<String>, command: impl Into<String>) -> ServerSpec {
        ServerSpec {
            name: name.into(),
            command: command.into(),
            args: Vec::new(),
            env: BTreeMap::new(),
            env_passthrough: Self::DEFAULT_PASSTHROUGH
                .iter()
                .map(|s| s.to_string())
                .collect(),
            cwd: None,
            max_message_bytes: 16 * 1024 * 1024,
            shutdown: ShutdownGrace::default(),
        }
    }
}
