//! What it takes to start a server.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A stdio MCP server: the command to run and its limits.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSpec {
    pub name: String,
    /// The program, run directly (never through a shell).
    pub command: String,
    pub args: Vec<String>,
    /// Variables set for the child on top of the passed-through ones.
    /// Values (and `args`) may refer to secrets as `${secret:NAME}`.
    pub env: BTreeMap<String, String>,
    /// Names of the gateway's own environment variables the child may see.
    pub env_passthrough: Vec<String>,
    pub cwd: Option<PathBuf>,
    /// The longest stdout line (one JSON-RPC message) accepted from the child.
    pub max_message_bytes: usize,
    pub shutdown: ShutdownGrace,
    pub pool: PoolConfig,
    pub crash: CrashPolicy,
    /// What happens to a session whose process dies under it.
    pub on_crash: OnCrash,
    /// How long Berth waits for a process to answer its `initialize`.
    pub init_timeout: Duration,
    /// Also write the server's log (stderr and lifecycle) to this file, rotated.
    pub log_file: Option<PathBuf>,
    /// How sessions are bound to processes.
    pub binding: Binding,
    /// How the kernel schedules the server's processes against Berth.
    pub scheduling: Scheduling,
    /// Resolves `${secret:NAME}` in `env` and `args` each time a process is
    /// spawned, so the values live only in that child's environment.
    pub secrets: Option<SecretResolver>,
    /// Isolation of each process: `None` runs it as Berth's own user with
    /// Berth's view of the machine.
    pub sandbox: Option<berth_sandbox::Settings>,
    /// Whose filesystem roots the server is told about (MCP `roots`).
    pub roots: Roots,
    /// Who answers for the server (operator metadata: reported and named in
    /// alerts; the fleet does not act on it).
    pub owner: Option<String>,
    /// The p99 latency the server should keep (operator metadata, as `owner`).
    pub latency_budget: Option<Duration>,
    /// A server reached over HTTP instead of a program Berth runs
    /// (`command` and what concerns processes are then unused).
    pub remote: Option<Arc<crate::RemoteSpec>>,
    /// A federated endpoint over other servers of the fleet instead of a
    /// program (see `crate::federation`).
    pub federation: Option<Arc<crate::FederationSpec>>,
}

/// Whose filesystem roots a server gets. Servers such as the reference
/// filesystem server replace the directories they may touch with the
/// roots they are given, so roots are a grant of access: the operator's to
/// make unless the operator hands it to the client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Roots {
    /// No roots from anyone: the server is never told of a `roots`
    /// capability, the client's is stripped from its `initialize`, and a
    /// `roots/list` from the server is answered with "method not found".
    #[default]
    None,
    /// These roots (`file://` URIs), declared by Berth in every `initialize`
    /// the server gets and given by Berth whenever it asks; the client's
    /// never reach it.
    Fixed(Arc<[String]>),
    /// The client's own roots: its `initialize` and the server's
    /// `roots/list` pass through. Only for processes a client initializes
    /// itself (Berth's own `initialize` has no client to ask).
    Client,
}

impl Roots {
    /// Whether the client's roots reach the server.
    pub fn from_client(&self) -> bool {
        matches!(self, Roots::Client)
    }
}

/// Whose secrets a process or remote connection gets: a principal's own
/// values (`berth secret set NAME --principal P`) before the shared ones.
/// Both the principal's full id and its subject are tried, so an operator
/// may name it either way.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SecretOwner {
    pub id: Arc<str>,
    pub subject: Arc<str>,
}

/// A secret's value and whether it is the owner's own (not the shared one).
pub struct Resolved {
    pub value: String,
    pub own: bool,
}

/// A secret that did not resolve. `caller_lacks`: other principals have
/// values of their own, this one has none and there is no shared value, so
/// the caller (not the operator's setup) is what is missing.
#[derive(Debug, Clone)]
pub struct SecretMiss {
    pub message: String,
    pub caller_lacks: bool,
}

/// Looks secrets up by name: `Ok(value)`, or `Err` with a message that names
/// the secret but never holds a value. Bound to an owner, it prefers the
/// owner's own values.
#[derive(Clone)]
pub struct SecretResolver {
    lookup: Arc<SecretLookup>,
    owner: Option<SecretOwner>,
}

type SecretLookup =
    dyn Fn(&str, Option<&SecretOwner>) -> Result<Resolved, SecretMiss> + Send + Sync;

impl SecretResolver {
    /// A resolver of shared values only.
    pub fn new(lookup: impl Fn(&str) -> Result<String, String> + Send + Sync + 'static) -> Self {
        Self::with_owners(move |name, _| {
            lookup(name)
                .map(|value| Resolved { value, own: false })
                .map_err(|message| SecretMiss {
                    message,
                    caller_lacks: false,
                })
        })
    }

    /// A resolver that knows per-principal values.
    pub fn with_owners(
        lookup: impl Fn(&str, Option<&SecretOwner>) -> Result<Resolved, SecretMiss>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        SecretResolver {
            lookup: Arc::new(lookup),
            owner: None,
        }
    }

    /// The same store, resolving for `owner`.
    pub fn for_owner(&self, owner: Option<SecretOwner>) -> SecretResolver {
        SecretResolver {
            lookup: self.lookup.clone(),
            owner,
        }
    }

    pub fn owner(&self) -> Option<&SecretOwner> {
        self.owner.as_ref()
    }

    /// `text` with every `${secret:NAME}` replaced.
    pub fn expand(&self, text: &str) -> Result<String, String> {
        if berth_secrets::references(text).is_empty() && !text.contains("$${") {
            return Ok(text.to_owned());
        }
        let mut failure = None;
        let expanded = berth_secrets::expand(text, |name| {
            match (self.lookup)(name, self.owner.as_ref()) {
                Ok(found) => Some(found.value),
                Err(why) => {
                    failure.get_or_insert(why.message);
                    None
                }
            }
        });
        match (expanded, failure) {
            (Ok(text), _) => Ok(text),
            (Err(_), Some(why)) => Err(why),
            (Err(missing), None) => Err(missing.to_string()),
        }
    }

    /// Whether a secret one of `texts` refers to has a value of the owner's
    /// own: a process started with it is that owner's alone. `Err` names a
    /// secret that resolves for nobody.
    pub fn owns_any<'a>(
        &self,
        texts: impl IntoIterator<Item = &'a str>,
    ) -> Result<bool, SecretMiss> {
        let mut own = false;
        for text in texts {
            for name in berth_secrets::references(text) {
                own |= (self.lookup)(name, self.owner.as_ref())?.own;
            }
        }
        Ok(own)
    }
}

impl fmt::Debug for SecretResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretResolver")
    }
}

/// Resolvers are not configuration: two specs that differ only in their
/// resolver are the same server.
impl PartialEq for SecretResolver {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// How a server's sessions are bound to its processes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Binding {
    /// One process per session, taken from the warm pool.
    #[default]
    Exclusive,
    /// Sessions multiplexed over `pool.max_processes` processes (for
    /// servers declared stateless), one request on the wire per process at a
    /// time, ids rewritten.
    Shared,
}

/// The Linux scheduling policy a server's processes run under.
///
/// Every message Berth writes to a server wakes it; under the normal
/// policy a woken server preempts Berth's thread on the spot, so on a
/// busy machine Berth is switched out and back in about once per call,
/// with every other session's traffic waiting behind it. `batch`
/// (`SCHED_BATCH`) only stops a server's wake-up from preempting whoever
/// runs: it still gets its full fair share of CPU, and an idle CPU runs
/// it at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheduling {
    /// `SCHED_BATCH`: no preemption on wake-up.
    #[default]
    Batch,
    /// `SCHED_OTHER`, as the server would get if started by hand.
    Normal,
}

/// What happens to a session when its server process dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnCrash {
    /// The next request gets 404: the client re-initializes.
    End,
    /// The session is re-bound to a fresh process by replaying the client's
    /// `initialize` and `initialized`, and goes on under the same id.
    Replay,
}

/// How many processes to keep, and how to keep them.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// The floor of processes kept spawned and waiting for a session; the
    /// pool keeps more while sessions arrive faster than this many can be
    /// replaced (see `max_ready`, `headroom`).
    pub min_ready: usize,
    /// The most processes kept waiting because of demand (`min_ready` wins
    /// if it is higher): bounds the memory an idle-but-recently-busy server holds.
    pub max_ready: usize,
    /// How many boot times' worth of arrivals the pool keeps ready or
    /// starting: ready target = ceil(arrival rate × spawn-to-ready time × headroom).
    pub headroom: f64,
    /// How far back the arrival rate looks, so a dip of a second does not
    /// lower the target. Waiting processes beyond the target are frozen after
    /// `standby_after` like any other and stopped once they have waited
    /// `stop_after` (a minute if unset) unused.
    pub demand_window: Duration,
    /// Processes of this server alive at once, ready and leased together.
    pub max_processes: usize,
    /// Berth initializes waiting processes itself, ahead of any client.
    pub preinitialize: bool,
    /// Waiting processes idle this long are frozen (SIGSTOP), thawed on demand.
    pub standby_after: Option<Duration>,
    /// With no session for this long, waiting processes are stopped (scale to zero).
    pub stop_after: Option<Duration>,
    /// Waiting processes are pinged this often; one that does not answer
    /// within `health_timeout` is replaced.
    pub health_interval: Duration,
    pub health_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            min_ready: 0,
            max_ready: 16,
            headroom: 1.5,
            demand_window: Duration::from_secs(3),
            max_processes: 64,
            preinitialize: false,
            standby_after: None,
            stop_after: None,
            health_interval: Duration::from_secs(30),
            health_timeout: Duration::from_secs(5),
        }
    }
}

/// When a crashing server is given up on, and how restarts back off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CrashPolicy {
    /// This many crashes within `window` mark the server failed.
    pub max_crashes: usize,
    pub window: Duration,
    /// First restart delay after a crash; doubles per consecutive crash.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl Default for CrashPolicy {
    fn default() -> Self {
        CrashPolicy {
            max_crashes: 5,
            window: Duration::from_secs(60),
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// How long each step of the stdio shutdown sequence may take.
#[derive(Debug, Clone, Copy, PartialEq)]
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
    /// The longest stdout line (one JSON-RPC message) accepted by default.
    pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

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
            max_message_bytes: Self::DEFAULT_MAX_MESSAGE_BYTES,
            shutdown: ShutdownGrace::default(),
            pool: PoolConfig::default(),
            crash: CrashPolicy::default(),
            on_crash: OnCrash::End,
            init_timeout: Duration::from_secs(60),
            log_file: None,
            binding: Binding::Exclusive,
            scheduling: Scheduling::default(),
            sandbox: None,
            secrets: None,
            roots: Roots::None,
            owner: None,
            latency_budget: None,
            remote: None,
            federation: None,
        }
    }

    /// Every text that may name a secret: args, env values, and a remote
    /// server's headers and OAuth client secret.
    pub fn secret_templates(&self) -> impl Iterator<Item = &str> {
        self.args
            .iter()
            .map(String::as_str)
            .chain(self.env.values().map(String::as_str))
            .chain(self.remote.iter().flat_map(|r| r.secret_templates()))
    }
}
