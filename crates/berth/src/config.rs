//! `berth.toml`: the configuration file.
//!
//! Every field is documented in `examples/berth.toml`, which the tests load.
//! Unknown keys and bad values are refused with the file, line and key named.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use berth_edge::EdgeConfig;
use berth_fleet::{SecretResolver, ServerSpec};
use berth_secrets::{ExposeSecret, SecretStore};

use crate::sandbox::SandboxConfig;
use serde::{Deserialize, Deserializer};

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub gateway: GatewaySection,
    #[serde(default)]
    pub admin: AdminSection,
    #[serde(default)]
    pub auth: AuthSection,
    #[serde(default)]
    pub servers: BTreeMap<ServerName, ServerSection>,
    /// `[endpoints.NAME]`: one MCP endpoint at `/mcp/NAME` over several servers.
    #[serde(default)]
    pub endpoints: BTreeMap<ServerName, EndpointSection>,
    #[serde(default)]
    pub catalog: CatalogSources,
    /// `[usage]`: usage metering (`berth usage`).
    #[serde(default)]
    pub usage: UsageSection,
    /// `[cost]`: the prices `berth cost` applies (its defaults without the section).
    #[serde(default)]
    pub cost: Option<berth_cost::Prices>,
    /// `[telemetry]`: Prometheus metrics and OpenTelemetry traces.
    #[serde(default)]
    pub telemetry: TelemetrySection,
    /// `[alerts]`: failed, crash-looping and slow servers posted to a webhook.
    #[serde(default)]
    pub alerts: AlertsSection,
    /// The file this was read from (hidden from sandboxed servers).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// `[telemetry]`: what the gateway reports about its work.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySection {
    /// Prometheus metrics at `/metrics` on the admin listener.
    pub metrics: bool,
    /// OTLP/HTTP endpoint spans are exported to (`"http://127.0.0.1:4318"`;
    /// `/v1/traces` is appended). Off when unset.
    pub otlp: Option<String>,
}

impl Default for TelemetrySection {
    fn default() -> Self {
        TelemetrySection {
            metrics: true,
            otlp: None,
        }
    }
}

impl TelemetrySection {
    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        if let Some(otlp) = &self.otlp {
            let ok = reqwest::Url::parse(otlp)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if !ok {
                return Err(ConfigError(format!(
                    "{origin}: telemetry.otlp must be an http(s) URL such as \"http://127.0.0.1:4318\", not {otlp:?}"
                )));
            }
        }
        Ok(())
    }
}

/// `[alerts]`: a server that failed, crash-loops or is over its
/// `latency_budget` is posted to `webhook` (off when unset), and again when
/// it recovered.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsSection {
    /// An http(s) URL; may hold `${secret:NAME}`.
    pub webhook: Option<String>,
    /// The window p99s and crash loops are computed over.
    #[serde(deserialize_with = "duration")]
    pub window: Duration,
    /// This many crashes within `window` is a crash loop.
    pub crash_loop: u64,
    #[serde(deserialize_with = "duration")]
    pub check_every: Duration,
    /// Per delivery attempt.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    /// Retries of a failed delivery, with exponential backoff from 1 s.
    pub retries: u32,
    /// Sent with every delivery; values may hold `${secret:NAME}`.
    pub headers: BTreeMap<String, String>,
}

impl Default for AlertsSection {
    fn default() -> Self {
        let d = berth_alerts::AlertsConfig::default();
        AlertsSection {
            webhook: None,
            window: d.window,
            crash_loop: d.crash_loop,
            check_every: d.check_every,
            timeout: d.timeout,
            retries: d.retries,
            headers: BTreeMap::new(),
        }
    }
}

/// The webhook and header values may be credentials: never printed.
impl fmt::Debug for AlertsSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlertsSection")
            .field("webhook", &self.webhook.as_deref().map(berth_alerts::shown))
            .field("window", &self.window)
            .field("crash_loop", &self.crash_loop)
            .field("check_every", &self.check_every)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Retries at most: with the backoff capped at a minute, 20 is already
/// a quarter of an hour per alert.
const MAX_ALERT_RETRIES: u32 = 20;

impl AlertsSection {
    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let error = |msg: String| Err(ConfigError(format!("{origin}: alerts.{msg}")));
        // A webhook held in the secrets store is checked when it is read.
        if let Some(webhook) = self.webhook.as_deref().filter(|w| !w.contains("${secret:")) {
            let ok = reqwest::Url::parse(webhook)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if !ok {
                return error(format!(
                    "webhook must be an http(s) URL such as \"https://hooks.example.com/berth\", not {}",
                    berth_alerts::shown(webhook)
                ));
            }
        }
        for (key, zero) in [
            ("window", self.window.is_zero()),
            ("check_every", self.check_every.is_zero()),
            ("timeout", self.timeout.is_zero()),
            ("crash_loop", self.crash_loop == 0),
        ] {
            if zero {
                return error(format!("{key} must be greater than zero"));
            }
        }
        if self.check_every > self.window {
            return error(format!(
                "check_every ({}) cannot exceed window ({}): crashes are counted between checks",
                humantime::format_duration(self.check_every),
                humantime::format_duration(self.window)
            ));
        }
        if self.retries > MAX_ALERT_RETRIES {
            return error(format!(
                "retries ({}) must be at most {MAX_ALERT_RETRIES}",
                self.retries
            ));
        }
        for name in self.headers.keys() {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return error(format!("headers: {name:?} is not an HTTP header name"));
            }
        }
        Ok(())
    }
}

/// `[catalog]`: where `berth catalog` and `berth add` find entries besides
/// the ones built into Berth.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogSources {
    /// Directories of `server.json` files (an entry replaces a built-in one of the same key).
    pub directories: Vec<PathBuf>,
    /// Base URLs of registries speaking the MCP Registry API v0.1.
    pub registries: Vec<String>,
}

/// A built-in's option value: text, a number or a flag.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum OptionValue {
    Text(String),
    Integer(i64),
    Float(f64),
    Flag(bool),
}

impl fmt::Display for OptionValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptionValue::Text(text) => f.write_str(text),
            OptionValue::Integer(n) => write!(f, "{n}"),
            OptionValue::Float(n) => write!(f, "{n}"),
            OptionValue::Flag(b) => write!(f, "{b}"),
        }
    }
}

/// `[usage]`: metering of sessions, requests, bytes and the servers' CPU and
/// memory per principal, server, tool and hour (`berth usage` reads it).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsageSection {
    pub enabled: bool,
    /// A PostgreSQL connection string (may hold `${secret:NAME}`); SQLite in
    /// the data dir (`usage.sqlite`) when unset.
    pub postgres: Option<String>,
    /// How often the counts in memory are written.
    #[serde(deserialize_with = "duration")]
    pub flush_interval: Duration,
    /// Hours older than this are deleted.
    #[serde(deserialize_with = "duration")]
    pub retention: Duration,
}

impl Default for UsageSection {
    fn default() -> Self {
        let d = berth_usage::UsageConfig::default();
        UsageSection {
            enabled: d.enabled,
            postgres: d.postgres,
            flush_interval: d.flush_interval,
            retention: d.retention,
        }
    }
}

impl UsageSection {
    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        if self.flush_interval.is_zero() {
            return Err(ConfigError(format!(
                "{origin}: usage.flush_interval must be greater than zero (\"10s\" writes every ten seconds)"
            )));
        }
        if self.retention < Duration::from_secs(3600) {
            return Err(ConfigError(format!(
                "{origin}: usage.retention must be at least \"1h\": usage is kept by the hour"
            )));
        }
        Ok(())
    }
}

/// `[auth]`: who may call the servers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    pub mode: AuthModeConfig,
    /// The external authorization server; without one (mode "oauth"), Berth
    /// is its own issuer at `gateway.public_url`.
    pub issuer: Option<String>,
    /// The issuer's keys; discovered from its metadata when absent.
    pub jwks_uri: Option<String>,
    pub scopes_supported: Vec<String>,
    #[serde(deserialize_with = "duration")]
    pub clock_skew: Duration,
    #[serde(deserialize_with = "duration")]
    pub jwks_min_refresh: Duration,
    #[serde(deserialize_with = "duration")]
    pub jwks_max_age: Duration,
    /// A verified token is remembered this long (never past its expiry).
    #[serde(deserialize_with = "duration")]
    pub token_cache: Duration,
    /// Lifetime of access tokens from the built-in issuer.
    #[serde(deserialize_with = "duration")]
    pub access_token_ttl: Duration,
    pub introspection: Option<IntrospectionConfig>,
    pub api_keys: Vec<ApiKeyConfig>,
}

impl Default for AuthSection {
    fn default() -> Self {
        let d = berth_auth::AuthConfig::default();
        AuthSection {
            mode: AuthModeConfig::None,
            issuer: None,
            jwks_uri: None,
            scopes_supported: Vec::new(),
            clock_skew: d.clock_skew,
            jwks_min_refresh: d.jwks_min_refresh,
            jwks_max_age: d.jwks_max_age,
            token_cache: d.cache_ttl,
            access_token_ttl: berth_issuer::DEFAULT_ACCESS_TOKEN_TTL,
            introspection: None,
            api_keys: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AuthModeConfig {
    #[default]
    None,
    ApiKey,
    Oauth,
}

/// `[auth.introspection]`: RFC 7662, for opaque tokens.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionConfig {
    pub endpoint: String,
    pub client_id: String,
    /// May be `${secret:NAME}`.
    pub client_secret: String,
}

/// `[[auth.api_keys]]`: a key, by its digest (`berth key create` prints one).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    pub name: String,
    /// `sha256:<hex>` of the key.
    pub hash: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Servers the key may use; all when empty.
    #[serde(default)]
    pub servers: Vec<String>,
}

/// `[admin]`: the admin API behind `berth ps`, `logs`, `restart`, `reload`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    pub enabled: bool,
    /// Port 0 picks a free port; the CLI finds it in `<data_dir>/admin.json`.
    pub listen: SocketAddr,
    /// Bearer token; a random one per start when absent.
    pub token: Option<String>,
    /// Lets `listen` be a non-loopback address. Berth serves the admin API
    /// over plain HTTP (it has no TLS of its own), so off-host it must sit
    /// behind TLS or a trusted network; requiring TLS here would make a
    /// remote admin API impossible, so this is an explicit opt-in instead.
    pub allow_remote: bool,
}

impl Default for AdminSection {
    fn default() -> Self {
        AdminSection {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            token: None,
            allow_remote: false,
        }
    }
}

impl AdminSection {
    /// Whether the admin API would be reachable from other hosts.
    fn is_remote(&self) -> bool {
        self.enabled && !self.listen.ip().is_loopback()
    }

    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        if self.is_remote() && !self.allow_remote {
            return Err(ConfigError(format!(
                "{origin}: admin.listen {} is not a loopback address: the admin API (full control of Berth, plain HTTP) would be reachable from other hosts. Use 127.0.0.1 or [::1], or set [admin] allow_remote = true and put it behind TLS or a trusted network",
                self.listen
            )));
        }
        Ok(())
    }

    /// The warning to give loudly when the admin API listens off-host.
    pub fn remote_warning(&self) -> Option<String> {
        self.is_remote().then(|| {
            format!(
                "admin.listen {} is reachable from other hosts (allow_remote = true): the admin API speaks plain HTTP, Berth has no TLS of its own, so the admin token travels in clear text; put it behind a TLS-terminating proxy or a trusted network",
                self.listen
            )
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySection {
    pub listen: SocketAddr,
    #[serde(deserialize_with = "duration")]
    pub session_idle_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
    pub max_message_bytes: usize,
    #[serde(deserialize_with = "duration")]
    pub sse_retry: Duration,
    #[serde(deserialize_with = "duration")]
    pub sse_keepalive: Duration,
    pub replay_buffer: usize,
    pub allowed_hosts: Vec<String>,
    pub allowed_origins: Vec<String>,
    /// Where Berth keeps its state (admin.json, ...).
    pub data_dir: PathBuf,
    /// The canonical URL clients reach this gateway at; server `x`'s
    /// resource URL (its tokens' audience) is `<public_url>/mcp/x`.
    /// Defaults to `http://<listen address>`.
    pub public_url: Option<String>,
    #[serde(deserialize_with = "duration")]
    pub header_read_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub body_read_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub http2_keepalive_interval: Duration,
    #[serde(deserialize_with = "duration")]
    pub http2_keepalive_timeout: Duration,
    pub http2_max_concurrent_streams: u32,
    pub max_connections: usize,
    pub max_connections_per_peer: usize,
    /// Sessions one client (principal, or non-loopback peer) may hold on one server.
    pub max_sessions_per_client: usize,
    /// Requests per second of one client (bursts of twice as many).
    pub requests_per_second_per_client: f64,
    /// Bytes of events kept per SSE stream for replay.
    pub replay_buffer_bytes: usize,
    /// The async runtime's worker threads (read by `main` before the
    /// runtime starts): unset, one per core; 1, a current-thread runtime.
    pub worker_threads: Option<usize>,
}

/// `$BERTH_DATA_DIR`, else `$XDG_STATE_HOME/berth`, else `~/.local/state/berth`.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BERTH_DATA_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(state) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(state).join("berth");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/state/berth"),
        None => std::env::temp_dir().join("berth"),
    }
}

impl Default for GatewaySection {
    fn default() -> Self {
        let edge = EdgeConfig::default();
        GatewaySection {
            listen: edge.listen,
            session_idle_timeout: edge.session_idle_timeout,
            request_timeout: edge.request_timeout,
            max_body_bytes: edge.max_body_bytes,
            max_message_bytes: ServerSpec::DEFAULT_MAX_MESSAGE_BYTES,
            sse_retry: edge.sse_retry,
            sse_keepalive: edge.sse_keepalive,
            replay_buffer: edge.replay_buffer,
            allowed_hosts: edge.allowed_hosts,
            allowed_origins: edge.allowed_origins,
            data_dir: default_data_dir(),
            public_url: None,
            header_read_timeout: edge.header_read_timeout,
            body_read_timeout: edge.body_read_timeout,
            idle_timeout: edge.idle_timeout,
            http2_keepalive_interval: edge.http2_keepalive_interval,
            http2_keepalive_timeout: edge.http2_keepalive_timeout,
            http2_max_concurrent_streams: edge.http2_max_concurrent_streams,
            max_connections: edge.max_connections,
            max_connections_per_peer: edge.max_connections_per_peer,
            max_sessions_per_client: edge.fairness.max_sessions_per_client,
            requests_per_second_per_client: edge.fairness.requests_per_second,
            replay_buffer_bytes: edge.replay_buffer_bytes,
            worker_threads: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// The program to run; or `builtin` instead.
    pub command: Option<NonEmpty>,
    /// One of Berth's built-in servers (`berth catalog list` shows them),
    /// run as a child of this binary.
    pub builtin: Option<String>,
    /// A built-in's settings (`[servers.NAME.options]`), handed to it as
    /// environment variables, so values may be `${secret:NAME}`.
    #[serde(default)]
    pub options: BTreeMap<String, OptionValue>,
    /// The catalog entry and version this server was added from
    /// (`berth add` writes it; `berth upgrade` reads it).
    pub catalog: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Extra variables of the gateway's own environment the server may see.
    #[serde(default)]
    pub env_passthrough: Vec<String>,
    pub cwd: Option<PathBuf>,
    /// Also write this server's log (stderr and lifecycle events) to a file,
    /// rotated at 10 MiB, five old files kept.
    pub log_file: Option<PathBuf>,
    /// `exclusive`: one process per session. (`shared` is not available yet.)
    #[serde(default)]
    pub binding: Binding,
    /// What happens to a session whose process dies: `end` or `replay`.
    #[serde(default)]
    pub on_crash: OnCrashConfig,
    /// `batch` (default): the server's wake-ups never preempt Berth;
    /// `normal`: the kernel's default policy.
    #[serde(default)]
    pub scheduling: berth_fleet::Scheduling,
    /// This many crashes within `crash_window` mark the server failed.
    #[serde(default = "default_max_crashes")]
    pub max_crashes: usize,
    #[serde(default = "default_crash_window", deserialize_with = "duration")]
    pub crash_window: Duration,
    #[serde(default)]
    pub pool: PoolSection,
    /// Scopes every request to this server needs.
    #[serde(default)]
    pub required_scopes: Vec<String>,
    /// Extra scopes per tool, checked on tools/call; tools/list hides tools
    /// a caller may not call.
    #[serde(default)]
    pub tool_scopes: BTreeMap<String, Vec<String>>,
    /// `[servers.NAME.sandbox]`, on unless `sandbox = false`.
    #[serde(default)]
    pub sandbox: SandboxConfig,
    /// Whose filesystem roots the server gets (see `crate::roots`).
    #[serde(default)]
    pub roots: crate::roots::RootsConfig,
    /// Who answers for this server (a team, a person): shown by `berth ps`,
    /// named in alerts.
    pub owner: Option<String>,
    /// The per-call latency and time to first result this server should
    /// keep (p99 over the alert window): `berth ps` shows it, alerts fire past it.
    #[serde(default, deserialize_with = "optional_duration")]
    pub latency_budget: Option<Duration>,
    /// A remote MCP server's endpoint (`http://` or `https://`), served by
    /// Berth like a hosted one, instead of `command` or `builtin`.
    pub url: Option<String>,
    /// How the remote server is reached: `streamable-http` (default) or
    /// `sse` (the 2024-11-05 HTTP+SSE transport; `url` is its stream).
    #[serde(default)]
    pub transport: RemoteTransportConfig,
    /// Headers sent to the remote server with every request; values may
    /// be `${secret:NAME}` (a caller's own value first, see `berth secret`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// How long Berth waits for the remote server's response headers.
    #[serde(default, deserialize_with = "optional_duration")]
    pub timeout: Option<Duration>,
    /// PEM certificates to trust for the remote server besides the system's.
    pub ca_file: Option<PathBuf>,
    /// `[servers.NAME.oauth]`: a credential Berth obtains for the remote server.
    pub oauth: Option<berth_fleet::OAuthClient>,
}

/// A federated endpoint: one MCP endpoint over several servers, their tool
/// and prompt names prefixed (`github__create_issue`), resource URIs too
/// (`github+repo://...`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSection {
    /// The member servers (names of `[servers.*]`).
    pub servers: Vec<String>,
    /// Between a member's prefix and a name.
    #[serde(default = "default_separator")]
    pub separator: String,
    /// Scopes every request to the endpoint needs (members' own scopes
    /// apply to their tools too).
    #[serde(default)]
    pub required_scopes: Vec<String>,
    /// `[endpoints.NAME.members.SERVER]`: how one member's tools are shown.
    #[serde(default)]
    pub members: BTreeMap<String, MemberSection>,
}

fn default_separator() -> String {
    "__".into()
}

/// How one member of an endpoint is shown.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberSection {
    /// What its names start with (default: the server's name).
    pub prefix: Option<String>,
    /// Only these tools (the server's own names).
    pub allow: Option<Vec<String>>,
    /// Never these tools.
    #[serde(default)]
    pub deny: Vec<String>,
    /// The server's tool name → the name shown (before the prefix).
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    /// The server's tool name → the description shown instead of its own.
    #[serde(default)]
    pub descriptions: BTreeMap<String, String>,
}

impl EndpointSection {
    /// Each member's spec, in the order of `servers`.
    pub fn member_specs(&self) -> Vec<berth_fleet::MemberSpec> {
        self.servers
            .iter()
            .map(|server| {
                let section = self.members.get(server);
                berth_fleet::MemberSpec {
                    server: server.clone(),
                    prefix: section
                        .and_then(|m| m.prefix.clone())
                        .unwrap_or_else(|| server.clone()),
                    allow: section.and_then(|m| m.allow.clone()),
                    deny: section.map(|m| m.deny.clone()).unwrap_or_default(),
                    rename: section.map(|m| m.rename.clone()).unwrap_or_default(),
                    descriptions: section.map(|m| m.descriptions.clone()).unwrap_or_default(),
                }
            })
            .collect()
    }

    fn validate(
        &self,
        origin: &str,
        name: &str,
        servers: &BTreeMap<ServerName, ServerSection>,
    ) -> Result<(), ConfigError> {
        let error = |msg: String| Err(ConfigError(format!("{origin}: endpoints.{name}: {msg}")));
        if servers.keys().any(|s| s.0 == name) {
            return error(format!(
                "a server is also called `{name}`; an endpoint is served at /mcp/{name} too, so give it another name"
            ));
        }
        if self.servers.is_empty() {
            return error("`servers` lists no member".into());
        }
        if self.separator.is_empty() || self.separator.contains('+') {
            return error(
                "`separator` must be non-empty and must not contain `+` (resource URIs use it)"
                    .into(),
            );
        }
        let mut prefixes = std::collections::BTreeSet::new();
        for (i, member) in self.servers.iter().enumerate() {
            if !servers.keys().any(|s| &s.0 == member) {
                return error(format!("member `{member}` is not a configured server"));
            }
            if self.servers[..i].contains(member) {
                return error(format!("member `{member}` is listed twice"));
            }
        }
        for key in self.members.keys() {
            if !self.servers.contains(key) {
                return error(format!(
                    "[endpoints.{name}.members.{key}] names a server that is not in `servers`"
                ));
            }
        }
        for member in self.member_specs() {
            if member.prefix.is_empty()
                || member.prefix.contains(&self.separator)
                || member.prefix.contains('+')
            {
                return error(format!(
                    "member `{}`: prefix {:?} must be non-empty and contain neither the separator nor `+`",
                    member.server, member.prefix
                ));
            }
            if !prefixes.insert(member.prefix.clone()) {
                return error(format!("two members have the prefix {:?}", member.prefix));
            }
        }
        Ok(())
    }
}

/// How a remote server is reached.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RemoteTransportConfig {
    #[default]
    StreamableHttp,
    Sse,
}

impl ServerSection {
    /// The remote server this section names, if it names one.
    pub fn remote_spec(&self) -> Option<berth_fleet::RemoteSpec> {
        let url = self.url.as_ref()?;
        let mut remote = berth_fleet::RemoteSpec::new(url);
        remote.transport = match self.transport {
            RemoteTransportConfig::StreamableHttp => berth_fleet::RemoteTransport::Streamable,
            RemoteTransportConfig::Sse => berth_fleet::RemoteTransport::Sse,
        };
        remote.headers = self
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(timeout) = self.timeout {
            remote.timeout = timeout;
        }
        remote.ca_file = self.ca_file.clone();
        remote.auth = self.oauth.clone();
        Some(remote)
    }

    fn validate_remote(&self, origin: &str, name: &str) -> Result<(), ConfigError> {
        let error = |msg: String| Err(ConfigError(format!("{origin}: servers.{name}: {msg}")));
        let Some(url) = &self.url else {
            let remote_only = [
                ("headers", !self.headers.is_empty()),
                (
                    "transport",
                    self.transport != RemoteTransportConfig::StreamableHttp,
                ),
                ("timeout", self.timeout.is_some()),
                ("ca_file", self.ca_file.is_some()),
                ("oauth", self.oauth.is_some()),
            ];
            if let Some((key, _)) = remote_only.iter().find(|(_, set)| *set) {
                return error(format!(
                    "`{key}` is a setting of remote servers (those with a `url`)"
                ));
            }
            return Ok(());
        };
        if self.command.is_some() || self.builtin.is_some() {
            return error("give `url` (a remote server) or `command`/`builtin`, not both".into());
        }
        let process_only = [
            ("args", !self.args.is_empty()),
            ("env", !self.env.is_empty()),
            ("env_passthrough", !self.env_passthrough.is_empty()),
            ("cwd", self.cwd.is_some()),
            ("options", !self.options.is_empty()),
        ];
        if let Some((key, _)) = process_only.iter().find(|(_, set)| *set) {
            return error(format!(
                "`{key}` concerns a process Berth runs; a remote server (`url`) has none (send settings as `headers`)"
            ));
        }
        match reqwest::Url::parse(url) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() => {}
            Ok(_) => {
                return error(format!(
                    "url {url:?} must be an http:// or https:// URL of the server's MCP endpoint"
                ));
            }
            Err(e) => {
                return error(format!(
                    "url {url:?} is not a URL ({e}); give the server's MCP endpoint, e.g. https://host/mcp"
                ));
            }
        }
        for (header, value) in &self.headers {
            if reqwest::header::HeaderName::from_bytes(header.as_bytes()).is_err() {
                return error(format!("{header:?} is not a valid HTTP header name"));
            }
            // A value with a secret is checked when the secret is filled in.
            if berth_secrets::references(value).is_empty()
                && reqwest::header::HeaderValue::from_str(value).is_err()
            {
                return error(format!(
                    "the value of header {header:?} is not a valid HTTP header value (no control characters or line breaks)"
                ));
            }
            let lower = header.to_ascii_lowercase();
            if lower.starts_with("mcp-") || lower == "content-type" || lower == "accept" {
                return error(format!(
                    "header {header:?} is set by Berth from the protocol; it cannot be configured"
                ));
            }
            if lower == "authorization" && self.oauth.is_some() {
                return error(
                    "give an `Authorization` header or `[oauth]`, not both: the OAuth token is sent as Authorization".into(),
                );
            }
        }
        if let Some(ca) = &self.ca_file
            && !ca.is_file()
        {
            return error(format!("ca_file {} is not a readable file", ca.display()));
        }
        if let Some(oauth) = &self.oauth
            && !(oauth.token_url.starts_with("http://") || oauth.token_url.starts_with("https://"))
        {
            return error(format!(
                "oauth.token_url {:?} must be an http:// or https:// URL",
                oauth.token_url
            ));
        }
        Ok(())
    }

    /// The program and the arguments before the configured ones: a built-in
    /// is this binary's `builtin NAME`.
    pub fn program(&self) -> (String, Vec<String>) {
        match (&self.builtin, &self.command) {
            (Some(builtin), _) => {
                let exe = std::env::current_exe()
                    .ok()
                    .and_then(|p| p.to_str().map(str::to_owned))
                    .unwrap_or_else(|| "berth".into());
                (exe, vec!["builtin".into(), builtin.clone()])
            }
            (None, Some(command)) => (command.0.clone(), Vec::new()),
            // Refused by validation.
            (None, None) => (String::new(), Vec::new()),
        }
    }

    fn validate_program(&self, origin: &str, name: &str) -> Result<(), ConfigError> {
        let error = |msg: String| Err(ConfigError(format!("{origin}: servers.{name}: {msg}")));
        self.validate_remote(origin, name)?;
        if self.url.is_some() {
            return Ok(());
        }
        match (&self.builtin, &self.command) {
            (Some(_), Some(_)) => {
                return error("give either `command` or `builtin`, not both".into());
            }
            (None, None) => {
                return error(format!(
                    "needs a `command` to run, a remote server's `url`, or `builtin = \"...\"` ({})",
                    berth_servers::BUILTINS.join(", ")
                ));
            }
            (None, Some(_)) if !self.options.is_empty() => {
                return error(
                    "`options` are settings of a built-in server: use `env` for a command".into(),
                );
            }
            _ => {}
        }
        if let Some(builtin) = &self.builtin {
            let Some(known) = berth_servers::options(builtin) else {
                return error(format!(
                    "no built-in server named {builtin:?}; available: {}",
                    berth_servers::BUILTINS.join(", ")
                ));
            };
            if let Some(key) = self.options.keys().find(|k| !known.contains(&k.as_str())) {
                return error(format!(
                    "built-in {builtin:?} has no option {key:?}; its options: {}",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ));
            }
        }
        Ok(())
    }

    /// Processes of this server at most: 64 exclusive, 2 shared, unless set.
    pub fn max_processes(&self) -> usize {
        let default = match self.binding {
            Binding::Exclusive => berth_fleet::PoolConfig::default().max_processes,
            Binding::Shared => 2,
        };
        self.pool.max_processes.unwrap_or(default)
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Binding {
    #[default]
    Exclusive,
    Shared,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnCrashConfig {
    #[default]
    End,
    Replay,
}

fn default_max_crashes() -> usize {
    berth_fleet::CrashPolicy::default().max_crashes
}

fn default_crash_window() -> Duration {
    berth_fleet::CrashPolicy::default().window
}

/// `[servers.NAME.pool]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolSection {
    /// The floor: the pool keeps more ready while sessions arrive faster.
    pub min_ready: usize,
    /// The most processes kept ready because of demand.
    pub max_ready: usize,
    /// Ready target = ceil(arrival rate × measured spawn-to-ready time × headroom).
    pub headroom: f64,
    /// How far back the arrival rate looks.
    #[serde(deserialize_with = "duration")]
    pub demand_window: Duration,
    /// Default: 64 (exclusive), 2 (shared).
    pub max_processes: Option<usize>,
    pub preinitialize: bool,
    #[serde(deserialize_with = "optional_duration")]
    pub standby_after: Option<Duration>,
    #[serde(deserialize_with = "optional_duration")]
    pub stop_after: Option<Duration>,
    #[serde(deserialize_with = "duration")]
    pub health_interval: Duration,
    #[serde(deserialize_with = "duration")]
    pub health_timeout: Duration,
}

impl Default for PoolSection {
    fn default() -> Self {
        let d = berth_fleet::PoolConfig::default();
        PoolSection {
            min_ready: d.min_ready,
            max_ready: d.max_ready,
            headroom: d.headroom,
            demand_window: d.demand_window,
            max_processes: None,
            preinitialize: d.preinitialize,
            standby_after: d.standby_after,
            stop_after: d.stop_after,
            health_interval: d.health_interval,
            health_timeout: d.health_timeout,
        }
    }
}

/// Whether `name` can name a server: it becomes a URL path segment.
pub fn valid_server_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A server name: it becomes a URL path segment.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServerName(pub String);

impl<'de> Deserialize<'de> for ServerName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        if valid_server_name(&name) {
            Ok(ServerName(name))
        } else {
            Err(serde::de::Error::custom(format!(
                "invalid server name {name:?}: use 1-64 letters, digits, '-', '_' or '.' (it becomes the URL path /mcp/<name>)"
            )))
        }
    }
}

#[derive(Debug, Clone)]
pub struct NonEmpty(pub String);

impl<'de> Deserialize<'de> for NonEmpty {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.trim().is_empty() {
            return Err(serde::de::Error::custom("must not be empty"));
        }
        Ok(NonEmpty(s))
    }
}

fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {s:?} ({e}); write it like \"300ms\", \"30s\" or \"10m\""
        ))
    })
}

/// A config file that could not be used, with where and why.
#[derive(Debug)]
pub struct ConfigError(String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
        let mut config = Config::parse(&text, &path.display().to_string())?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// Parses `text`; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|span| {
                    let before = &text[..span.start.min(text.len())];
                    (
                        before.matches('\n').count() + 1,
                        before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1,
                    )
                })
                .unwrap_or((0, 0));
            ConfigError(format!("{origin}:{line}:{column}: {}", e.message()))
        })?;
        config.validate(origin)?;
        Ok(config)
    }

    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let g = &self.gateway;
        let positive = [
            ("gateway.request_timeout", g.request_timeout.is_zero()),
            (
                "gateway.session_idle_timeout",
                g.session_idle_timeout.is_zero(),
            ),
            ("gateway.max_body_bytes", g.max_body_bytes == 0),
            ("gateway.max_message_bytes", g.max_message_bytes == 0),
            ("gateway.replay_buffer", g.replay_buffer == 0),
            ("gateway.replay_buffer_bytes", g.replay_buffer_bytes == 0),
            ("gateway.sse_keepalive", g.sse_keepalive.is_zero()),
        ];
        for (key, zero) in positive {
            if zero {
                return Err(ConfigError(format!(
                    "{origin}: {key} must be greater than zero"
                )));
            }
        }
        self.admin.validate(origin)?;
        self.usage.validate(origin)?;
        self.telemetry.validate(origin)?;
        self.alerts.validate(origin)?;
        if let Some(prices) = &self.cost {
            prices
                .validate()
                .map_err(|e| ConfigError(format!("{origin}: {e}")))?;
        }
        self.validate_auth(origin)?;
        for (name, server) in &self.servers {
            let name = &name.0;
            server.validate_program(origin, name)?;
            let pool = &server.pool;
            if server.max_processes() == 0 {
                return Err(ConfigError(format!(
                    "{origin}: servers.{name}.pool.max_processes must be greater than zero"
                )));
            }
            if pool.min_ready > server.max_processes() {
                return Err(ConfigError(format!(
                    "{origin}: servers.{name}.pool.min_ready ({}) cannot exceed max_processes ({})",
                    pool.min_ready,
                    server.max_processes()
                )));
            }
            if let SandboxConfig::On(table) = &server.sandbox {
                table
                    .validate(&format!("servers.{name}.sandbox"))
                    .map_err(|e| ConfigError(format!("{origin}: {e}")))?;
            }
            if !(pool.headroom.is_finite() && pool.headroom >= 1.0) {
                return Err(ConfigError(format!(
                    "{origin}: servers.{name}.pool.headroom ({}) must be a number of at least 1.0",
                    pool.headroom
                )));
            }
            if pool.demand_window.is_zero() {
                return Err(ConfigError(format!(
                    "{origin}: servers.{name}.pool.demand_window must be greater than zero"
                )));
            }
            if server.max_crashes == 0 {
                return Err(ConfigError(format!(
                    "{origin}: servers.{name}.max_crashes must be greater than zero"
                )));
            }
            server
                .roots
                .validate(name, pool.preinitialize, server.binding == Binding::Shared)
                .map_err(|e| ConfigError(format!("{origin}: {e}")))?;
        }
        for (name, endpoint) in &self.endpoints {
            if !valid_server_name(&name.0) {
                return Err(ConfigError(format!(
                    "{origin}: endpoints.{}: not a valid name",
                    name.0
                )));
            }
            endpoint.validate(origin, &name.0, &self.servers)?;
        }
        Ok(())
    }

    fn validate_auth(&self, origin: &str) -> Result<(), ConfigError> {
        let auth = &self.auth;
        let error = |msg: String| Err(ConfigError(format!("{origin}: {msg}")));
        if let Some(url) = &self.gateway.public_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return error(format!(
                "gateway.public_url {url:?} must be an http(s) URL such as \"https://mcp.example.com\""
            ));
        }
        match auth.mode {
            AuthModeConfig::None => {}
            AuthModeConfig::ApiKey => {
                if auth.api_keys.is_empty() {
                    return error(
                        "auth.mode = \"api_key\" needs at least one [[auth.api_keys]] entry (create one with `berth key create NAME`)".into(),
                    );
                }
                for key in &auth.api_keys {
                    if berth_auth::parse_api_key_digest(&key.hash).is_none() {
                        return error(format!(
                            "auth.api_keys {:?}: hash must be \"sha256:<64 hex digits>\" as printed by `berth key create`",
                            key.name
                        ));
                    }
                }
            }
            AuthModeConfig::Oauth => {
                if auth.issuer.is_none() && auth.jwks_uri.is_some() {
                    return error(
                        "auth.jwks_uri needs auth.issuer (the iss its tokens carry)".into(),
                    );
                }
            }
        }
        Ok(())
    }

    /// The embedded default: Berth's service-free built-in servers, run as
    /// children of this binary.
    pub fn embedded() -> Config {
        let mut servers = BTreeMap::new();
        for name in berth_servers::EMBEDDED {
            servers.insert(
                ServerName(name.to_string()),
                ServerSection {
                    command: None,
                    builtin: Some(name.to_string()),
                    options: BTreeMap::new(),
                    catalog: None,
                    args: Vec::new(),
                    env: BTreeMap::new(),
                    env_passthrough: Vec::new(),
                    cwd: None,
                    log_file: None,
                    binding: Binding::Exclusive,
                    on_crash: OnCrashConfig::End,
                    scheduling: Default::default(),
                    max_crashes: default_max_crashes(),
                    crash_window: default_crash_window(),
                    pool: PoolSection::default(),
                    required_scopes: Vec::new(),
                    tool_scopes: BTreeMap::new(),
                    sandbox: SandboxConfig::default(),
                    roots: Default::default(),
                    owner: None,
                    latency_budget: None,
                    url: None,
                    transport: RemoteTransportConfig::default(),
                    headers: BTreeMap::new(),
                    timeout: None,
                    ca_file: None,
                    oauth: None,
                },
            );
        }
        Config {
            gateway: GatewaySection::default(),
            admin: AdminSection::default(),
            auth: AuthSection::default(),
            servers,
            endpoints: BTreeMap::new(),
            catalog: CatalogSources::default(),
            usage: UsageSection::default(),
            cost: None,
            telemetry: TelemetrySection::default(),
            alerts: AlertsSection::default(),
            source: None,
        }
    }

    pub fn edge(&self) -> EdgeConfig {
        let g = &self.gateway;
        EdgeConfig {
            listen: g.listen,
            request_timeout: g.request_timeout,
            session_idle_timeout: g.session_idle_timeout,
            max_body_bytes: g.max_body_bytes,
            sse_retry: g.sse_retry,
            sse_keepalive: g.sse_keepalive,
            replay_buffer: g.replay_buffer,
            allowed_hosts: g.allowed_hosts.clone(),
            allowed_origins: g.allowed_origins.clone(),
            header_read_timeout: g.header_read_timeout,
            body_read_timeout: g.body_read_timeout,
            idle_timeout: g.idle_timeout,
            http2_keepalive_interval: g.http2_keepalive_interval,
            http2_keepalive_timeout: g.http2_keepalive_timeout,
            http2_max_concurrent_streams: g.http2_max_concurrent_streams,
            max_connections: g.max_connections,
            max_connections_per_peer: g.max_connections_per_peer,
            fairness: berth_edge::Fairness {
                max_sessions_per_client: g.max_sessions_per_client,
                requests_per_second: g.requests_per_second_per_client,
            },
            replay_buffer_bytes: g.replay_buffer_bytes,
            tracing: self.telemetry.otlp.is_some(),
            ..EdgeConfig::default()
        }
    }

    /// The `[usage]` settings for `berth_usage::open`/`start`, with any
    /// `${secret:NAME}` in the DSN resolved from the secrets store.
    pub fn usage_config(&self) -> Result<berth_usage::UsageConfig, ConfigError> {
        let u = &self.usage;
        let postgres = match &u.postgres {
            Some(dsn) => Some(
                secret_resolver(&self.gateway.data_dir)
                    .expand(dsn)
                    .map_err(|e| ConfigError(format!("usage.postgres: {e}")))?,
            ),
            None => None,
        };
        Ok(berth_usage::UsageConfig {
            enabled: u.enabled,
            postgres,
            flush_interval: u.flush_interval,
            retention: u.retention,
        })
    }

    /// The `[alerts]` settings for `berth_alerts::Alerts`, `None` without a
    /// webhook; `${secret:NAME}` in the webhook and headers resolved.
    /// `gateway` names this gateway in the alerts.
    pub fn alerts_config(
        &self,
        gateway: &str,
    ) -> Result<Option<berth_alerts::AlertsConfig>, ConfigError> {
        let a = &self.alerts;
        let Some(webhook) = &a.webhook else {
            return Ok(None);
        };
        let secrets = secret_resolver(&self.gateway.data_dir);
        let webhook = secrets
            .expand(webhook)
            .map_err(|e| ConfigError(format!("alerts.webhook: {e}")))?;
        let headers = a
            .headers
            .iter()
            .map(|(name, value)| match secrets.expand(value) {
                Ok(value) => Ok((name.clone(), value)),
                Err(e) => Err(ConfigError(format!("alerts.headers.{name}: {e}"))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(berth_alerts::AlertsConfig {
            webhook,
            window: a.window,
            crash_loop: a.crash_loop,
            check_every: a.check_every,
            timeout: a.timeout,
            retries: a.retries,
            headers,
            gateway: gateway.to_owned(),
            ..berth_alerts::AlertsConfig::default()
        }))
    }

    /// Each server's authorization rules.
    pub fn server_access(&self) -> std::collections::HashMap<String, berth_auth::ServerAccess> {
        self.servers
            .iter()
            .map(|(name, s)| {
                let access = berth_auth::ServerAccess {
                    required_scopes: s.required_scopes.clone(),
                    tool_scopes: s.tool_scopes.clone(),
                    ..Default::default()
                };
                (name.0.clone(), access)
            })
            .chain(self.endpoints.iter().map(|(name, e)| {
                // A member's scopes hold for its tools through the endpoint.
                let mut access = berth_auth::ServerAccess {
                    required_scopes: e.required_scopes.clone(),
                    ..Default::default()
                };
                for member in e.member_specs() {
                    let Some(server) = self
                        .servers
                        .iter()
                        .find(|(n, _)| n.0 == member.server)
                        .map(|(_, s)| s)
                    else {
                        continue;
                    };
                    let prefix = format!("{}{}", member.prefix, e.separator);
                    if !server.required_scopes.is_empty() {
                        access
                            .tool_prefix_scopes
                            .push((prefix.clone(), server.required_scopes.clone()));
                    }
                    for (tool, scopes) in &server.tool_scopes {
                        let shown = member.rename.get(tool).unwrap_or(tool);
                        access
                            .tool_scopes
                            .insert(format!("{prefix}{shown}"), scopes.clone());
                    }
                }
                (name.0.clone(), access)
            }))
            .collect()
    }

    pub fn server_specs(&self) -> Vec<ServerSpec> {
        let mut specs = self.process_specs();
        specs.extend(self.endpoints.iter().map(|(name, e)| {
            let mut spec =
                ServerSpec::new(&name.0, format!("endpoint over {}", e.servers.join(", ")));
            spec.federation = Some(std::sync::Arc::new(berth_fleet::FederationSpec {
                separator: e.separator.clone(),
                members: e.member_specs(),
                pools: berth_fleet::PoolLookup::none(),
            }));
            spec.max_message_bytes = self.gateway.max_message_bytes;
            spec.init_timeout = self.gateway.request_timeout;
            // A connection costs nothing to open, and its members are
            // initialized with the client's own initialize: never Berth's.
            spec.pool.min_ready = 0;
            spec.pool.preinitialize = false;
            spec.roots = berth_fleet::Roots::Client;
            spec
        }));
        specs
    }

    /// The specs of `[servers.*]`: processes, built-ins and remote servers.
    fn process_specs(&self) -> Vec<ServerSpec> {
        let secrets = secret_resolver(&self.gateway.data_dir);
        self.servers
            .iter()
            .map(|(name, s)| {
                let (command, mut args) = s.program();
                args.extend(s.args.iter().cloned());
                let mut spec = ServerSpec::new(&name.0, &command);
                spec.secrets = Some(secrets.clone());
                spec.args = args;
                spec.env = s.env.clone();
                if let Some(builtin) = &s.builtin {
                    for (key, value) in &s.options {
                        spec.env
                            .insert(berth_servers::option_env(builtin, key), value.to_string());
                    }
                    // Where the built-in keeps what it writes, as it sees it:
                    // /state in its sandbox, Berth's state dir for it without.
                    let state = match s.sandbox {
                        SandboxConfig::On(_) => PathBuf::from(berth_sandbox::STATE_DIR),
                        SandboxConfig::Off => {
                            crate::sandbox::state_dir(&self.gateway.data_dir, &name.0)
                        }
                    };
                    spec.env.insert(
                        berth_servers::STATE_DIR_ENV.into(),
                        state.display().to_string(),
                    );
                }
                spec.env_passthrough
                    .extend(s.env_passthrough.iter().cloned());
                spec.cwd = s.cwd.clone();
                spec.max_message_bytes = self.gateway.max_message_bytes;
                spec.init_timeout = self.gateway.request_timeout;
                spec.log_file = s.log_file.clone();
                spec.binding = match s.binding {
                    Binding::Exclusive => berth_fleet::Binding::Exclusive,
                    Binding::Shared => berth_fleet::Binding::Shared,
                };
                spec.sandbox = match &s.sandbox {
                    SandboxConfig::On(table) => Some(table.settings(
                        &name.0,
                        &self.gateway.data_dir,
                        self.source.as_deref(),
                    )),
                    SandboxConfig::Off => None,
                };
                if let Some(remote) = s.remote_spec() {
                    // Nothing runs here: no program, no sandbox.
                    spec.command = remote.url.clone();
                    spec.sandbox = None;
                    spec.remote = Some(std::sync::Arc::new(remote));
                }
                spec.on_crash = match s.on_crash {
                    OnCrashConfig::End => berth_fleet::OnCrash::End,
                    OnCrashConfig::Replay => berth_fleet::OnCrash::Replay,
                };
                spec.scheduling = s.scheduling;
                spec.crash.max_crashes = s.max_crashes;
                spec.crash.window = s.crash_window;
                spec.roots = s.roots.to_fleet();
                spec.owner = s.owner.clone();
                spec.latency_budget = s.latency_budget;
                spec.pool = berth_fleet::PoolConfig {
                    min_ready: s.pool.min_ready,
                    max_processes: s.max_processes(),
                    preinitialize: s.pool.preinitialize,
                    standby_after: s.pool.standby_after,
                    stop_after: s.pool.stop_after,
                    health_interval: s.pool.health_interval,
                    health_timeout: s.pool.health_timeout,
                    max_ready: s.pool.max_ready,
                    headroom: s.pool.headroom,
                    demand_window: s.pool.demand_window,
                };
                spec
            })
            .collect()
    }
}

/// Resolves `${secret:NAME}` from the store in `data_dir`, opened on first
/// use (a gateway that uses no secret never creates a key): a principal's
/// own value (stored under its full id or its subject) before the shared one.
pub fn secret_resolver(data_dir: &Path) -> SecretResolver {
    let data_dir = data_dir.to_path_buf();
    let store: OnceLock<Result<SecretStore, String>> = OnceLock::new();
    SecretResolver::with_owners(move |name, owner| {
        let miss = |message: String, caller_lacks: bool| berth_fleet::SecretMiss {
            message,
            caller_lacks,
        };
        let store = store
            .get_or_init(|| SecretStore::open(&data_dir).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| miss(format!("cannot open the secrets store: {e}"), false))?;
        if let Some(owner) = owner {
            for principal in [&*owner.id, &*owner.subject] {
                let own = store
                    .get_for(name, principal)
                    .map_err(|e| miss(e.to_string(), false))?;
                if let Some(value) = own {
                    return Ok(berth_fleet::Resolved {
                        value: value.expose_secret().to_owned(),
                        own: true,
                    });
                }
            }
        }
        match store.get(name) {
            Ok(Some(value)) => Ok(berth_fleet::Resolved {
                value: value.expose_secret().to_owned(),
                own: false,
            }),
            Ok(None) => {
                let others_have_theirs = store
                    .entries()
                    .is_ok_and(|e| e.iter().any(|e| e.name == name && e.principal.is_some()));
                Err(match owner {
                    Some(owner) if others_have_theirs => miss(
                        format!(
                            "secret `{name}` has no value for principal `{}` and no shared value; store one with `berth secret set {name} --principal {}` (or a shared one without --principal)",
                            owner.subject, owner.subject
                        ),
                        true,
                    ),
                    _ => miss(
                        format!(
                            "secret `{name}` is not in the secrets store ({}); add it with `berth secret set {name}`",
                            store.path().display()
                        ),
                        false,
                    ),
                })
            }
            Err(e) => Err(miss(e.to_string(), false)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn federation_example_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/federation.toml");
        let config = Config::load(&path).unwrap();
        let specs = config.server_specs();
        let github = specs.iter().find(|s| s.name == "github").unwrap();
        let remote = github.remote.as_ref().unwrap();
        assert_eq!(remote.url, "https://api.githubcopilot.com/mcp/");
        assert_eq!(remote.timeout, Duration::from_secs(20));
        let docs = specs.iter().find(|s| s.name == "docs").unwrap();
        let docs = docs.remote.as_ref().unwrap();
        assert_eq!(docs.transport, berth_fleet::RemoteTransport::Sse);
        assert_eq!(
            docs.auth.as_ref().unwrap().grant,
            berth_fleet::OAuthGrant::ClientCredentials
        );
        let work = specs.iter().find(|s| s.name == "work").unwrap();
        let federation = work.federation.as_ref().unwrap();
        assert_eq!(federation.members.len(), 3);
        assert_eq!(
            federation.member_tool("github__search"),
            Some(("github", "search_issues".to_string()))
        );
        assert_eq!(federation.member_tool("github__delete_repository"), None);
        // github's tool scopes hold through the endpoint under the shown name.
        let access = &config.server_access()["work"];
        assert_eq!(access.tool_scopes["github__create_issue"], ["github:write"]);
    }

    #[test]
    fn scheduling_defaults_to_batch_and_can_be_normal() {
        let config = Config::parse(
            "[servers.a]\ncommand = \"x\"\n[servers.b]\ncommand = \"x\"\nscheduling = \"normal\"\n",
            "test.toml",
        )
        .unwrap();
        let specs = config.server_specs();
        let of = |name: &str| specs.iter().find(|s| s.name == name).unwrap().scheduling;
        assert_eq!(of("a"), berth_fleet::Scheduling::Batch);
        assert_eq!(of("b"), berth_fleet::Scheduling::Normal);
        let error = Config::parse(
            "[servers.a]\ncommand = \"x\"\nscheduling = \"realtime\"\n",
            "test.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("batch") && error.contains("normal"),
            "{error}"
        );
    }

    #[test]
    fn remote_servers_and_endpoints_are_checked() {
        let cases = [
            (
                "[servers.a]\nurl = \"ftp://x\"\n",
                "must be an http:// or https:// URL",
            ),
            (
                "[servers.a]\nurl = \"http://x/mcp\"\ncommand = \"x\"\n",
                "not both",
            ),
            (
                "[servers.a]\nurl = \"http://x/mcp\"\nenv = { A = \"b\" }\n",
                "has none",
            ),
            (
                "[servers.a]\ncommand = \"x\"\nheaders = { A = \"b\" }\n",
                "setting of remote servers",
            ),
            (
                "[servers.a]\nurl = \"http://x/mcp\"\nheaders = { Mcp-Session-Id = \"b\" }\n",
                "set by Berth",
            ),
            (
                "[servers.a]\ncommand = \"x\"\n[endpoints.e]\nservers = [\"b\"]\n",
                "not a configured server",
            ),
            (
                "[servers.a]\ncommand = \"x\"\n[endpoints.a]\nservers = [\"a\"]\n",
                "a server is also called",
            ),
            (
                "[servers.a]\ncommand = \"x\"\n[endpoints.e]\nservers = []\n",
                "no member",
            ),
            (
                "[servers.a]\ncommand = \"x\"\n[servers.b]\ncommand = \"x\"\n[endpoints.e]\nservers = [\"a\", \"b\"]\n[endpoints.e.members.b]\nprefix = \"a\"\n",
                "two members have the prefix",
            ),
            (
                "[servers.a]\ncommand = \"x\"\n[endpoints.e]\nservers = [\"a\"]\nseparator = \"+\"\n",
                "separator",
            ),
        ];
        for (text, expected) in cases {
            let error = Config::parse(text, "test.toml").unwrap_err().to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn secure_example_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/secure.toml");
        let config = Config::load(&path).unwrap();
        assert_eq!(config.auth.mode, AuthModeConfig::Oauth);
        assert_eq!(config.auth.issuer, None);
        assert_eq!(
            config.gateway.public_url.as_deref(),
            Some("https://mcp.example.com")
        );
        let access = &config.server_access()["github"];
        assert_eq!(access.required_scopes, ["tools:call"]);
        assert_eq!(access.tool_scopes["create_issue"], ["github:write"]);
        let spec = &config.server_specs()[0];
        assert_eq!(
            spec.env["GITHUB_PERSONAL_ACCESS_TOKEN"],
            "${secret:github_token}"
        );
        assert!(spec.secrets.is_some());
    }

    #[test]
    fn auth_settings_are_checked() {
        let bad_key = Config::parse(
            "[auth]\nmode = \"api_key\"\n[[auth.api_keys]]\nname = \"ci\"\nhash = \"plain-key\"\n",
            "t.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(bad_key.contains("sha256:<64 hex digits>"), "{bad_key}");
        let no_keys = Config::parse("[auth]\nmode = \"api_key\"\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(no_keys.contains("berth key create"), "{no_keys}");
        let mode = Config::parse("[auth]\nmode = \"basic\"\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(mode.starts_with("t.toml:2:8:"), "{mode}");
    }

    #[test]
    fn example_config_shows_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/berth.toml");
        let config = Config::load(&path).unwrap();
        let (t, dt) = (&config.telemetry, TelemetrySection::default());
        assert_eq!((t.metrics, &t.otlp), (dt.metrics, &dt.otlp));
        let (g, d) = (&config.gateway, GatewaySection::default());
        // Every [gateway] value the file sets is the default (data_dir and
        // public_url are commented out there).
        assert_eq!(
            (
                g.listen,
                g.session_idle_timeout,
                g.request_timeout,
                g.max_body_bytes
            ),
            (
                d.listen,
                d.session_idle_timeout,
                d.request_timeout,
                d.max_body_bytes
            )
        );
        assert_eq!(
            (
                g.max_message_bytes,
                g.sse_retry,
                g.sse_keepalive,
                g.replay_buffer,
                g.replay_buffer_bytes
            ),
            (
                d.max_message_bytes,
                d.sse_retry,
                d.sse_keepalive,
                d.replay_buffer,
                d.replay_buffer_bytes
            )
        );
        assert_eq!(
            (g.header_read_timeout, g.body_read_timeout, g.idle_timeout),
            (d.header_read_timeout, d.body_read_timeout, d.idle_timeout)
        );
        assert_eq!(
            (
                g.http2_keepalive_interval,
                g.http2_keepalive_timeout,
                g.http2_max_concurrent_streams
            ),
            (
                d.http2_keepalive_interval,
                d.http2_keepalive_timeout,
                d.http2_max_concurrent_streams
            )
        );
        assert_eq!(
            (
                g.max_connections,
                g.max_connections_per_peer,
                g.max_sessions_per_client
            ),
            (
                d.max_connections,
                d.max_connections_per_peer,
                d.max_sessions_per_client
            )
        );
        assert_eq!(
            g.requests_per_second_per_client,
            d.requests_per_second_per_client
        );
        let (a, da) = (&config.admin, AdminSection::default());
        assert_eq!(
            (a.enabled, a.listen, a.allow_remote),
            (da.enabled, da.listen, da.allow_remote)
        );
        let (u, du) = (&config.usage, UsageSection::default());
        assert_eq!(
            (u.enabled, &u.postgres, u.flush_interval, u.retention),
            (du.enabled, &du.postgres, du.flush_interval, du.retention)
        );
        let (al, dal) = (&config.alerts, AlertsSection::default());
        assert_eq!(
            (
                &al.webhook,
                al.window,
                al.crash_loop,
                al.check_every,
                al.timeout,
                al.retries,
                &al.headers
            ),
            (
                &dal.webhook,
                dal.window,
                dal.crash_loop,
                dal.check_every,
                dal.timeout,
                dal.retries,
                &dal.headers
            )
        );
        let memory = &config.servers[&ServerName("memory".into())];
        let (p, dp) = (&memory.pool, PoolSection::default());
        assert_eq!(
            (
                p.min_ready,
                p.max_processes,
                p.preinitialize,
                p.standby_after,
                p.stop_after
            ),
            (
                dp.min_ready,
                Some(64),
                dp.preinitialize,
                dp.standby_after,
                dp.stop_after
            )
        );
        assert_eq!(
            (p.health_interval, p.health_timeout),
            (dp.health_interval, dp.health_timeout)
        );
        assert_eq!(
            (p.max_ready, p.headroom, p.demand_window),
            (dp.max_ready, dp.headroom, dp.demand_window)
        );
        assert_eq!(memory.binding, Binding::default());
        assert_eq!(memory.on_crash, OnCrashConfig::default());
        assert_eq!(memory.max_crashes, default_max_crashes());
        assert_eq!(memory.crash_window, default_crash_window());
        let workspace = config
            .server_specs()
            .into_iter()
            .find(|s| s.name == "workspace")
            .unwrap();
        assert_eq!(workspace.args, ["builtin", "sandbox"]);
        assert_eq!(workspace.env["BERTH_SANDBOX_EXEC_TIMEOUT"], "30s");
        assert_eq!(workspace.env["BERTH_SANDBOX_KEEP_WORKSPACE"], "false");
    }

    #[test]
    fn usage_settings_are_checked() {
        let config = Config::parse("", "u.toml").unwrap();
        let d = config.usage_config().unwrap();
        assert_eq!(d, berth_usage::UsageConfig::default());
        assert_eq!(d.flush_interval, Duration::from_secs(10));
        assert_eq!(d.retention, Duration::from_secs(90 * 86400));
        let config = Config::parse(
            "[usage]\nenabled = false\nflush_interval = \"1m\"\nretention = \"30d\"\n",
            "u.toml",
        )
        .unwrap();
        let u = config.usage_config().unwrap();
        assert!(!u.enabled);
        assert_eq!(u.flush_interval, Duration::from_secs(60));
        assert_eq!(u.retention, Duration::from_secs(30 * 86400));
        let err = Config::parse("[usage]\nflush_interval = \"often\"\n", "u.toml").unwrap_err();
        assert!(
            err.to_string()
                .contains("u.toml:2:18: invalid duration \"often\""),
            "{err}"
        );
        let err = Config::parse("[usage]\nflush_interval = \"0s\"\n", "u.toml").unwrap_err();
        assert!(
            err.to_string()
                .contains("usage.flush_interval must be greater than zero"),
            "{err}"
        );
        let err = Config::parse("[usage]\nretention = \"10m\"\n", "u.toml").unwrap_err();
        assert!(
            err.to_string().contains("usage.retention must be at least"),
            "{err}"
        );
        let err = Config::parse("[usage]\npostgress = \"x\"\n", "u.toml").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("u.toml:2:1: unknown field `postgress`"),
            "{err}"
        );
    }

    #[test]
    fn the_usage_dsn_may_be_a_secret() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[gateway]\ndata_dir = {:?}\n[usage]\npostgres = \"${{secret:usage_dsn}}\"\n",
            dir.path().display().to_string()
        );
        let config = Config::parse(&text, "u.toml").unwrap();
        let err = config.usage_config().unwrap_err().to_string();
        assert!(
            err.starts_with("usage.postgres: secret `usage_dsn` is not in the secrets store"),
            "{err}"
        );
        SecretStore::open(dir.path())
            .unwrap()
            .set("usage_dsn", "postgresql://berth:pw@db:5432/usage")
            .unwrap();
        let usage = config.usage_config().unwrap();
        assert_eq!(
            usage.postgres.as_deref(),
            Some("postgresql://berth:pw@db:5432/usage")
        );
        // The password never shows in debug output.
        assert!(!format!("{usage:?}").contains("pw"));
    }

    #[test]
    fn alerts_settings_are_checked() {
        let config = Config::parse("", "a.toml").unwrap();
        assert!(config.alerts_config("gw").unwrap().is_none());
        let d = berth_alerts::AlertsConfig::default();
        assert_eq!(
            (d.window, d.crash_loop, d.check_every, d.timeout, d.retries),
            (
                Duration::from_secs(300),
                3,
                Duration::from_secs(10),
                Duration::from_secs(5),
                5
            )
        );
        let config = Config::parse(
            "[alerts]\nwebhook = \"https://hooks.example.com/b\"\nwindow = \"2s\"\ncheck_every = \"200ms\"\ncrash_loop = 4\n[alerts.headers]\nx-team = \"sre\"\n",
            "a.toml",
        )
        .unwrap();
        let a = config.alerts_config("gw").unwrap().unwrap();
        assert_eq!(a.webhook, "https://hooks.example.com/b");
        assert_eq!(
            (a.window, a.check_every, a.crash_loop, a.retries),
            (Duration::from_secs(2), Duration::from_millis(200), 4, 5)
        );
        assert_eq!(a.headers, [("x-team".to_string(), "sre".to_string())]);
        assert_eq!(a.gateway, "gw");
        for (text, expected) in [
            (
                "webhook = \"ftp://x\"",
                "alerts.webhook must be an http(s) URL",
            ),
            (
                "webhook = \"https://u:pw@\"",
                "alerts.webhook must be an http(s) URL",
            ),
            ("window = \"0s\"", "alerts.window must be greater than zero"),
            (
                "crash_loop = 0",
                "alerts.crash_loop must be greater than zero",
            ),
            (
                "window = \"5s\"\ncheck_every = \"10s\"",
                "alerts.check_every (10s) cannot exceed window (5s)",
            ),
            ("retries = 99", "alerts.retries (99) must be at most 20"),
            (
                "[alerts.headers]\n\"bad name\" = \"x\"",
                "alerts.headers: \"bad name\" is not an HTTP header name",
            ),
            ("hook = \"x\"", "unknown field `hook`"),
        ] {
            let err = Config::parse(&format!("[alerts]\n{text}\n"), "a.toml")
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{text}: {err}");
            assert!(!err.contains("pw"), "{err}");
        }
    }

    #[test]
    fn the_alerts_webhook_and_headers_may_be_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[gateway]\ndata_dir = {:?}\n[alerts]\nwebhook = \"${{secret:hook}}\"\n[alerts.headers]\nauthorization = \"Bearer ${{secret:hook_token}}\"\n",
            dir.path().display().to_string()
        );
        let config = Config::parse(&text, "a.toml").unwrap();
        let err = config.alerts_config("gw").unwrap_err().to_string();
        assert!(
            err.starts_with("alerts.webhook: secret `hook` is not in the secrets store"),
            "{err}"
        );
        let store = SecretStore::open(dir.path()).unwrap();
        store
            .set("hook", "https://hooks.example.com/services/T0/B0/s3cret")
            .unwrap();
        let err = config.alerts_config("gw").unwrap_err().to_string();
        assert!(
            err.starts_with("alerts.headers.authorization: secret `hook_token`"),
            "{err}"
        );
        store.set("hook_token", "tok3n").unwrap();
        let a = config.alerts_config("gw").unwrap().unwrap();
        assert_eq!(a.webhook, "https://hooks.example.com/services/T0/B0/s3cret");
        assert_eq!(
            a.headers,
            [("authorization".to_string(), "Bearer tok3n".to_string())]
        );
        let shown = format!("{a:?} {:?}", config.alerts);
        assert!(
            !shown.contains("s3cret") && !shown.contains("tok3n"),
            "{shown}"
        );
    }

    #[test]
    fn production_example_loads_with_the_recommended_values() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/production.toml");
        let config = Config::load(&path).unwrap();
        let memory = &config.servers[&ServerName("memory".into())];
        assert_eq!(memory.binding, Binding::Shared);
        assert_eq!(memory.on_crash, OnCrashConfig::Replay);
        assert_eq!(memory.pool.max_processes, Some(1));
        assert!(memory.pool.preinitialize);
        assert_eq!(memory.pool.standby_after, Some(Duration::from_secs(30)));
        let specs = config.server_specs();
        let time = specs.iter().find(|s| s.name == "time").unwrap();
        assert_eq!(time.pool.min_ready, 2);
        assert_eq!(time.pool.stop_after, Some(Duration::from_secs(600)));
        assert_eq!(
            config.gateway.session_idle_timeout,
            Duration::from_secs(600)
        );
    }

    #[test]
    fn builtins_and_their_options_are_checked() {
        let both = Config::parse(
            "[servers.a]\ncommand = \"x\"\nbuiltin = \"demo\"\n",
            "b.toml",
        )
        .unwrap_err();
        assert!(
            both.to_string().contains("either `command` or `builtin`"),
            "{both}"
        );
        let neither = Config::parse("[servers.a]\nargs = []\n", "b.toml").unwrap_err();
        assert!(
            neither.to_string().contains("needs a `command`"),
            "{neither}"
        );
        let unknown = Config::parse("[servers.a]\nbuiltin = \"mysql\"\n", "b.toml").unwrap_err();
        assert!(
            unknown
                .to_string()
                .contains("no built-in server named \"mysql\""),
            "{unknown}"
        );
        let option = Config::parse(
            "[servers.a]\nbuiltin = \"postgres\"\n[servers.a.options]\ndsn = \"x\"\nrow_limt = 5\n",
            "b.toml",
        )
        .unwrap_err();
        assert!(
            option.to_string().contains("has no option \"row_limt\""),
            "{option}"
        );
        let on_command = Config::parse(
            "[servers.a]\ncommand = \"x\"\n[servers.a.options]\nk = 1\n",
            "b.toml",
        )
        .unwrap_err();
        assert!(
            on_command.to_string().contains("use `env` for a command"),
            "{on_command}"
        );
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        let err = Config::parse(
            "[gateway]\nlisten = \"127.0.0.1:1\"\nlisten_port = 3\n",
            "b.toml",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("b.toml:3:1: unknown field `listen_port`"),
            "{msg}"
        );
        let err = Config::parse("[servers.x]\ncommand = \"a\"\nargz = []\n", "b.toml").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("b.toml:3:1: unknown field `argz`"),
            "{err}"
        );
    }

    #[test]
    fn shared_binding_defaults_to_two_processes() {
        let config = Config::parse(
            "[servers.s]\ncommand = \"x\"\nbinding = \"shared\"\n",
            "b.toml",
        )
        .unwrap();
        let spec = &config.server_specs()[0];
        assert_eq!(spec.binding, berth_fleet::Binding::Shared);
        assert_eq!(spec.pool.max_processes, 2);
        let err = Config::parse(
            "[servers.s]\ncommand = \"x\"\nbinding = \"pooled\"\n",
            "b.toml",
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("unknown variant `pooled`"),
            "{err}"
        );
        let err = Config::parse(
            "[servers.s]\ncommand = \"x\"\n[servers.s.pool]\nmin_ready = 9\nmax_processes = 2\n",
            "b.toml",
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("min_ready (9) cannot exceed max_processes (2)"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_are_explained() {
        let err = Config::parse("[gateway]\nrequest_timeout = \"soon\"\n", "b.toml").unwrap_err();
        assert!(
            err.to_string()
                .contains("b.toml:2:19: invalid duration \"soon\""),
            "{err}"
        );
        let err = Config::parse("[servers.\"a b\"]\ncommand = \"x\"\n", "b.toml").unwrap_err();
        assert!(
            err.to_string().contains("invalid server name \"a b\""),
            "{err}"
        );
        let err = Config::parse("[servers.a]\ncommand = \"\"\n", "b.toml").unwrap_err();
        assert!(
            err.to_string().contains("b.toml:2:11: must not be empty"),
            "{err}"
        );
        let err = Config::parse("[gateway]\nlisten = \"nowhere\"\n", "b.toml").unwrap_err();
        assert!(err.to_string().starts_with("b.toml:2:10:"), "{err}");
    }
}
