//! `berth`: host MCP servers over Streamable HTTP.

mod add;
mod alerts;
mod catalog;
mod cli;
mod config;
mod config_edit;
mod cost;
mod credentials;
mod roots;
mod sandbox;
mod security;
mod traces;
mod usage;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use berth_edge::Gateway;
use berth_telemetry::metrics::ComponentCount;
use clap::{Parser, Subcommand, ValueEnum};

use crate::config::Config;

/// mimalloc instead of glibc's malloc: the request path allocates and frees
/// small buffers per message, where glibc spent ~14% of the gateway's CPU
/// under load (perf, 16 sessions); mimalloc's thread-local free lists cost
/// a fraction of that, and it hands big message buffers (a server may write
/// 16 MiB lines) back to the system when they are freed.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "berth", version, about = "Host MCP servers in production")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the configured MCP servers over HTTP (the built-in demo without --config).
    Serve {
        /// The configuration file (TOML). Without it, Berth serves its built-in servers.
        #[arg(long, short, env = "BERTH_CONFIG")]
        config: Option<PathBuf>,
        /// Listen address, overriding gateway.listen.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Log format on stderr.
        #[arg(long, value_enum, default_value_t = LogFormat::Human)]
        log_format: LogFormat,
    },
    /// Check a configuration file and exit.
    Check { config: PathBuf },
    /// Show each server's processes, sessions, restarts and call latency.
    Ps {
        #[command(flatten)]
        admin: cli::AdminArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print a server's log (its stderr and lifecycle events).
    Logs {
        server: String,
        /// Keep printing new lines.
        #[arg(long, short)]
        follow: bool,
        /// How many recent lines to print first.
        #[arg(long, short = 'n', default_value_t = 100)]
        lines: usize,
        #[command(flatten)]
        admin: cli::AdminArgs,
    },
    /// Rolling restart of a server: new sessions get new processes, existing ones drain.
    Restart {
        server: String,
        #[command(flatten)]
        admin: cli::AdminArgs,
    },
    /// Re-read the configuration file and apply server changes (same as SIGHUP).
    Reload {
        #[command(flatten)]
        admin: cli::AdminArgs,
    },
    /// Manage the encrypted secrets servers get as `${secret:NAME}`.
    Secret {
        #[command(subcommand)]
        action: SecretAction,
        #[command(flatten)]
        place: cli::DataDirArgs,
    },
    /// Create an API key (for `[auth] mode = "api_key"`).
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },
    /// Mint an access token from the running gateway's built-in issuer.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Manage OAuth clients of the built-in issuer (client credentials, for headless agents).
    Client {
        #[command(subcommand)]
        action: ClientAction,
    },
    /// Browse the catalog of ready-made servers.
    Catalog {
        #[command(subcommand)]
        action: CatalogAction,
        #[command(flatten)]
        sources: catalog::SourceArgs,
        /// The configuration whose `[catalog]` sources to read too.
        #[arg(long, short, env = "BERTH_CONFIG", global = true)]
        config: Option<PathBuf>,
    },
    /// Add a server from the catalog: install its pinned package, store its
    /// secrets, write it to the configuration and reload the running gateway.
    Add(add::AddArgs),
    /// Remove a server from the configuration, with its package and the
    /// secrets `berth add` stored for it.
    Remove(add::RemoveArgs),
    /// Move a server added from the catalog to the catalog's current version.
    Upgrade(add::UpgradeArgs),
    /// What hosting costs per-connection, per-request and included with
    /// compute, for recorded usage or a projection (agents × tools per agent).
    Cost(cost::CostArgs),
    /// What each principal, server or tool used (sessions, requests, bytes,
    /// CPU, memory), from the usage store the gateway writes.
    Usage(usage::UsageArgs),
    /// Inspect the sandbox servers run in.
    Sandbox {
        #[command(subcommand)]
        action: SandboxAction,
    },
    /// Run a built-in MCP server on stdin/stdout (Berth runs these as its own children).
    Builtin {
        #[arg(value_parser = clap::builder::PossibleValuesParser::new(berth_servers::BUILTINS))]
        name: String,
    },
}

#[derive(Subcommand)]
enum CatalogAction {
    /// Every entry.
    List,
    /// Entries whose name, title, description, package or tags contain WORD.
    Search { word: String },
    /// One entry: what it installs, the settings it asks for, how it is hosted.
    Show {
        name: String,
        /// Print the entry's server.json document.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum SandboxAction {
    /// Print a server's effective sandbox policy on this machine: what it
    /// sees, as whom it runs, its network and limits, and what the kernel offers.
    Show {
        server: String,
        /// The configuration file (the embedded default without it).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum SecretAction {
    /// Store a secret; the value is read from stdin (one trailing newline dropped).
    ///
    /// With --principal, the value is that principal's own: its calls to a
    /// server that says `${secret:NAME}` get it, everyone else gets the
    /// shared value (stored without --principal).
    Set {
        /// The secret's name, as servers refer to it: `${secret:NAME}`.
        name: String,
        #[command(flatten)]
        principal: SecretPrincipal,
    },
    /// List stored secrets (never their values): shared ones as `NAME`,
    /// principals' own as `NAME (principal P)`.
    List,
    /// Remove a secret's shared value, or with --principal that principal's own.
    #[command(visible_alias = "remove")]
    Rm {
        /// The secret's name.
        name: String,
        #[command(flatten)]
        principal: SecretPrincipal,
    },
}

#[derive(clap::Args)]
struct SecretPrincipal {
    /// The principal whose own value this is: the caller's subject (an API
    /// key's name, a token's `sub`) or its full id as `berth usage` shows it
    /// (e.g. `key:alice`). Without it, the shared value every other
    /// principal gets.
    #[arg(long, value_name = "P")]
    principal: Option<String>,
}

#[derive(Subcommand)]
enum KeyAction {
    /// Print a new random API key and the `[[auth.api_keys]]` entry (its digest) to configure.
    Create {
        name: String,
        /// Scopes the key grants.
        #[arg(long = "scope", value_delimiter = ' ')]
        scopes: Vec<String>,
        /// Servers the key may use (all when omitted).
        #[arg(long = "server")]
        servers: Vec<String>,
    },
}

#[derive(Subcommand)]
enum TokenAction {
    /// Mint an access token for one server.
    Create {
        /// The client the token is issued to (its `client_id` and `sub`).
        #[arg(long)]
        client: String,
        /// The server the token is for (its audience).
        #[arg(long)]
        server: String,
        /// Scopes to grant (repeat, or space-separated).
        #[arg(long = "scope", value_delimiter = ' ')]
        scopes: Vec<String>,
        /// Lifetime, e.g. 1h, 30m.
        #[arg(long, default_value = "1h")]
        ttl: humantime::Duration,
        #[command(flatten)]
        admin: cli::AdminArgs,
    },
}

#[derive(Subcommand)]
enum ClientAction {
    /// Create (or replace) a confidential client allowed the client_credentials
    /// grant; prints its id and secret once.
    Create {
        name: String,
        /// Scopes the client may ask for (repeat, or space-separated).
        #[arg(long = "scope", value_delimiter = ' ')]
        scopes: Vec<String>,
        #[command(flatten)]
        admin: cli::AdminArgs,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

fn main() -> ExitCode {
    // In the sandbox helper (this binary started again), this never returns.
    berth_sandbox::enter_if_requested();
    let cli = Cli::parse();
    // `serve` reads its configuration before the runtime exists: the
    // runtime's shape (`[gateway] worker_threads`) is part of it.
    let mut preloaded = None;
    if let Command::Serve { config, .. } = &cli.command {
        match load_config(config.as_deref()) {
            Ok(loaded) => preloaded = Some(loaded),
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        }
    }
    let workers = preloaded.as_ref().and_then(|c| c.gateway.worker_threads);
    let runtime = match build_runtime(workers) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve {
                config,
                listen,
                log_format,
            } => serve(config, preloaded, listen, log_format).await,
            Command::Check { config } => {
                let loaded = Config::load(&config)?;
                let from_catalog = loaded
                    .servers
                    .values()
                    .filter(|s| s.catalog.is_some())
                    .count();
                let remote = loaded.servers.values().filter(|s| s.url.is_some()).count();
                println!(
                    "{}: ok ({} server(s), {from_catalog} from the catalog, {remote} remote; {} endpoint(s))",
                    config.display(),
                    loaded.servers.len(),
                    loaded.endpoints.len()
                );
                for warning in security::missing_secrets(&loaded) {
                    println!("warning: {warning}");
                }
                for warning in sandbox::warnings(&loaded.server_specs()) {
                    println!("warning: {warning}");
                }
                if let Some(warning) = loaded.admin.remote_warning() {
                    println!("warning: {warning}");
                }
                Ok(())
            }
            Command::Builtin { name } => berth_servers::run(&name).await,
            Command::Sandbox {
                action: SandboxAction::Show { server, config },
            } => {
                let loaded = match &config {
                    Some(path) => Config::load(path)?,
                    None => Config::embedded(),
                };
                sandbox::show(&loaded.server_specs(), &server)
            }
            Command::Catalog {
                action,
                sources,
                config,
            } => catalog_command(action, &sources, config.as_deref()).await,
            Command::Add(args) => add::add(args).await,
            Command::Remove(args) => add::remove(args).await,
            Command::Upgrade(args) => add::upgrade(args).await,
            Command::Cost(args) => cost::run(&args),
            Command::Usage(args) => usage::run(args).await,
            Command::Ps { admin, json } => cli::ps(&admin, json).await,
            Command::Logs {
                server,
                follow,
                lines,
                admin,
            } => cli::logs(&admin, &server, follow, lines).await,
            Command::Restart { server, admin } => cli::restart(&admin, &server).await,
            Command::Reload { admin } => cli::reload(&admin).await,
            Command::Secret { action, place } => secret(action, &place),
            Command::Key {
                action:
                    KeyAction::Create {
                        name,
                        scopes,
                        servers,
                    },
            } => {
                credentials::key_create(&name, &scopes, &servers);
                Ok(())
            }
            Command::Token {
                action:
                    TokenAction::Create {
                        client,
                        server,
                        scopes,
                        ttl,
                        admin,
                    },
            } => credentials::token_create(&admin, &client, &server, &scopes, ttl.into()).await,
            Command::Client {
                action:
                    ClientAction::Create {
                        name,
                        scopes,
                        admin,
                    },
            } => credentials::client_create(&admin, &name, &scopes).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn catalog_command(
    action: CatalogAction,
    sources: &catalog::SourceArgs,
    config: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let config = match config {
        Some(path) if path.exists() => Some(Config::load(path)?),
        _ => None,
    };
    let catalog = catalog::load(config.as_ref(), sources).await;
    match action {
        CatalogAction::List => catalog::list(catalog.entries().iter()),
        CatalogAction::Search { word } => catalog::list(catalog.search(&word)),
        CatalogAction::Show { name, json } => {
            let entry = catalog.get(&name).ok_or_else(|| {
                anyhow::anyhow!(
                    "no catalog entry named `{name}`; `berth catalog search {name}` looks wider"
                )
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&entry.document)?);
            } else {
                catalog::show(entry);
            }
        }
    }
    Ok(())
}

fn secret(action: SecretAction, place: &cli::DataDirArgs) -> anyhow::Result<()> {
    let data_dir = place.resolve()?;
    let store = berth_secrets::SecretStore::open(&data_dir)?;
    // "`NAME`" or "`NAME` for principal `P`", for messages.
    let label = |name: &str, principal: Option<&str>| match principal {
        Some(p) => format!("`{name}` for principal `{p}`"),
        None => format!("`{name}`"),
    };
    match action {
        SecretAction::Set { name, principal } => {
            use std::io::Read;
            let principal = principal.principal.as_deref();
            // Before reading the value: a typo should not cost a pasted secret.
            berth_secrets::validate_name(&name)?;
            if let Some(p) = principal {
                berth_secrets::validate_principal(p)?;
            }
            let mut value = String::new();
            std::io::stdin()
                .read_to_string(&mut value)
                .context("cannot read the secret's value from stdin")?;
            let value = value
                .strip_suffix('\n')
                .map(|v| v.strip_suffix('\r').unwrap_or(v))
                .unwrap_or(&value);
            store.set_for(&name, principal, value)?;
            let effect = match principal {
                Some(p) => format!(
                    "principal `{p}`'s calls get it as ${{secret:{name}}} in servers started from now on"
                ),
                None => format!("servers started from now on see it as ${{secret:{name}}}"),
            };
            eprintln!(
                "stored secret {} in {} ({effect})",
                label(&name, principal),
                store.path().display()
            );
        }
        SecretAction::List => {
            for entry in store.entries()? {
                match entry.principal {
                    Some(p) => println!("{} (principal {p})", entry.name),
                    None => println!("{}", entry.name),
                }
            }
        }
        SecretAction::Rm { name, principal } => {
            let principal = principal.principal.as_deref();
            if !store.remove_for(&name, principal)? {
                let others: Vec<String> = store
                    .entries()?
                    .into_iter()
                    .filter(|e| e.name == name)
                    .map(|e| match e.principal {
                        Some(p) => format!("--principal {p}"),
                        None => "the shared value (no --principal)".to_owned(),
                    })
                    .collect();
                if others.is_empty() {
                    anyhow::bail!("no secret named `{name}` in {}", store.path().display());
                }
                anyhow::bail!(
                    "no secret {} in {}; `{name}` has: {}",
                    label(&name, principal),
                    store.path().display(),
                    others.join(", ")
                );
            }
            eprintln!("removed secret {}", label(&name, principal));
        }
    }
    Ok(())
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The configuration `serve` runs: the file, or the built-in servers.
fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    Ok(match path {
        Some(path) => Config::load(path)?,
        None => Config::embedded(),
    })
}

/// The runtime of `[gateway] worker_threads`: unset, one worker per core;
/// 1, a current-thread runtime (no cross-thread wake-ups per call, one core
/// at most); N, a multi-thread runtime of N workers.
fn build_runtime(workers: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = match workers {
        None => tokio::runtime::Builder::new_multi_thread(),
        Some(0) => anyhow::bail!(
            "gateway.worker_threads = 0: give at least 1 (1 runs everything on one thread), or leave it unset for one per core"
        ),
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
    };
    Ok(builder.enable_all().build()?)
}

async fn serve(
    config_path: Option<PathBuf>,
    preloaded: Option<Config>,
    listen: Option<std::net::SocketAddr>,
    log_format: LogFormat,
) -> anyhow::Result<()> {
    init_logging(log_format);
    let mut config = match preloaded {
        Some(config) => config,
        None => load_config(config_path.as_deref())?,
    };
    if let Some(listen) = listen {
        config.gateway.listen = listen;
    }
    if config.servers.is_empty() {
        anyhow::bail!("no servers configured: add a [servers.<name>] table with a command");
    }
    sandbox::log_capabilities(&config.server_specs());
    let listener = tokio::net::TcpListener::bind(config.gateway.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.gateway.listen))?;
    let mut edge = config.edge();
    edge.listen = listener.local_addr()?;
    let public_url = security::public_url(&config, edge.listen);
    let admin_token = config
        .admin
        .token
        .clone()
        .unwrap_or_else(|| berth_edge::random_token().to_string());
    let secrets = config::secret_resolver(&config.gateway.data_dir);
    let security = security::build(&config, &public_url, edge.listen, &admin_token, &secrets)?;
    if security.issuer.is_some() && !config.admin.enabled && config.admin.token.is_none() {
        tracing::warn!(
            "the built-in issuer's consent page is approved with the admin token, and with the admin API disabled there is none to read: set [admin] token"
        );
    }
    edge.auth = security.auth.clone();
    edge.extra_routes = security.issuer.as_ref().map(|issuer| issuer.router());
    let usage = berth_usage::start(&config.usage_config()?, &config.gateway.data_dir)
        .await
        .context("cannot start usage metering ([usage])")?;
    let mut telemetry = if config.telemetry.metrics {
        berth_telemetry::Telemetry::new()
    } else {
        berth_telemetry::Telemetry::without_metrics()
    };
    if let Some(meter) = &usage {
        let counted = Arc::downgrade(meter);
        telemetry = telemetry.with(meter.clone()).with_counts(Arc::new(move || {
            counted.upgrade().map_or_else(Vec::new, |m| {
                vec![
                    count("usage", "pending_keys", m.pending_keys() as u64),
                    count("usage", "dropped_keys", m.dropped_keys()),
                ]
            })
        }));
    }
    let spans = traces::start(&config, &public_url)?;
    if let Some(spans) = &spans {
        let counted = Arc::downgrade(spans);
        telemetry = telemetry.with(spans.clone()).with_counts(Arc::new(move || {
            counted.upgrade().map_or_else(Vec::new, |s| {
                let stats = s.stats();
                vec![
                    count("spans", "exported", stats.exported),
                    count("spans", "dropped", stats.dropped),
                    count("spans", "queued", stats.queued),
                ]
            })
        }));
    }
    let alerts = alerts::build(&config, edge.listen)?;
    if let Some(alerts) = &alerts {
        let counted = Arc::downgrade(alerts);
        telemetry = telemetry
            .with(alerts.clone())
            .with_counts(Arc::new(move || {
                counted.upgrade().map_or_else(Vec::new, |a| {
                    let stats = a.stats();
                    vec![
                        count("alerts", "delivered", stats.delivered()),
                        count("alerts", "retried", stats.retried()),
                        count("alerts", "failed", stats.failed()),
                        count("alerts", "dropped", stats.dropped()),
                    ]
                })
            }));
    }
    let gateway = Gateway::with_telemetry(edge.clone(), config.server_specs(), Arc::new(telemetry));
    if let Some(alerts) = &alerts {
        alerts::start(alerts, Arc::downgrade(&gateway));
    }
    let reloader = reloader(
        config_path.clone(),
        Arc::downgrade(&gateway),
        security.auth.clone(),
        security.issuer.clone(),
        public_url.clone(),
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let admin = if config.admin.enabled {
        Some(
            start_admin(
                &config,
                &gateway,
                reloader.clone(),
                admin_token,
                security.issuer.clone(),
                public_url.clone(),
                usage.as_ref().map(|meter| meter.store().clone()),
                stop.clone(),
            )
            .await?,
        )
    } else {
        None
    };
    announce(
        &gateway,
        &edge.listen,
        &public_url,
        config_path.is_none(),
        admin.as_deref(),
    );
    tokio::spawn(reload_on_sighup(reloader));
    let shutdown = {
        let stop = stop.clone();
        async move {
            shutdown_signal().await;
            stop.cancel();
        }
    };
    Arc::clone(&gateway).run(listener, shutdown).await?;
    stop.cancel();
    if let Some(meter) = usage
        && let Err(e) = meter.shutdown().await
    {
        tracing::warn!("the last usage records were not written: {e}");
    }
    if let Some(spans) = spans {
        spans.shutdown().await;
    }
    if let Some(alerts) = alerts {
        alerts.shutdown().await;
    }
    if let Ok(cgroups) = &berth_sandbox::capabilities().cgroups {
        cgroups.tidy(true);
    }
    tracing::info!("stopped; all server processes reaped");
    Ok(())
}

fn count(component: &'static str, count: &'static str, value: u64) -> ComponentCount {
    ComponentCount {
        component,
        count,
        value,
    }
}

/// Re-reads the configuration file and applies its servers.
fn reloader(
    path: Option<PathBuf>,
    gateway: std::sync::Weak<Gateway>,
    auth: Option<Arc<berth_auth::Authenticator>>,
    issuer: Option<Arc<berth_issuer::Issuer>>,
    public_url: String,
) -> berth_edge::Reloader {
    Arc::new(move || {
        let (path, gateway) = (path.clone(), gateway.clone());
        let (auth, issuer, public_url) = (auth.clone(), issuer.clone(), public_url.clone());
        Box::pin(async move {
            let path = path.ok_or(
                "nothing to reload: Berth was started without --config (the embedded default)",
            )?;
            let config = Config::load(&path).map_err(|e| e.to_string())?;
            let gateway = gateway.upgrade().ok_or("the gateway is stopping")?;
            // Scopes and resources follow the servers; [auth] itself needs a restart.
            if let Some(auth) = &auth {
                auth.set_access(config.server_access());
            }
            if let Some(issuer) = &issuer {
                issuer.set_resources(security::resources(&config, &public_url));
                issuer.set_exchange_audiences(security::exchange_audiences(&config));
            }
            let specs = config.server_specs();
            for warning in sandbox::warnings(&specs) {
                tracing::warn!("reload: {warning}");
            }
            Ok(gateway.reload(specs).await)
        })
    })
}

async fn reload_on_sighup(reloader: berth_edge::Reloader) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        match reloader().await {
            Ok(report) => tracing::info!(?report, "SIGHUP: configuration reloaded"),
            Err(e) => tracing::error!("SIGHUP: configuration not reloaded: {e}"),
        }
    }
}

/// Starts the admin API and writes `<data_dir>/admin.json` for the CLI.
// Each argument is one thing the admin listener serves or stops on.
#[allow(clippy::too_many_arguments)]
async fn start_admin(
    config: &Config,
    gateway: &Arc<Gateway>,
    reloader: berth_edge::Reloader,
    token: String,
    issuer: Option<Arc<berth_issuer::Issuer>>,
    public_url: String,
    usage: Option<berth_usage::Store>,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind(config.admin.listen)
        .await
        .with_context(|| format!("cannot listen on {} (admin.listen)", config.admin.listen))?;
    if let Some(warning) = config.admin.remote_warning() {
        tracing::warn!("SECURITY: {warning}");
    }
    let url = format!("http://{}", listener.local_addr()?);
    let path = cli::AdminEndpoint {
        url: url.clone(),
        token: token.clone(),
    }
    .write(&config.gateway.data_dir)?;
    tracing::info!("admin API on {url} (token in {})", path.display());
    let issuer_routes = match issuer {
        Some(issuer) => credentials::issuer_admin_router(issuer, public_url),
        None => axum::Router::new(),
    };
    // The dashboard does its own login: merged outside the bearer-token check.
    let dashboard = berth_ui::router(
        Arc::downgrade(gateway),
        berth_ui::Dashboard {
            token: token.clone(),
            usage,
            prices: config.cost.unwrap_or_default(),
        },
    );
    let router =
        berth_edge::admin_router(gateway.clone(), token, reloader, issuer_routes).merge(dashboard);
    // Peer addresses: the dashboard limits login attempts per peer.
    let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    // Streamed answers (`berth logs -f`, the dashboard's live views) are
    // written in pieces: without TCP_NODELAY each waits on delayed ACKs.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move {
        let served = axum::serve(listener, service)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!("admin API stopped: {e}");
        }
    });
    Ok(url)
}

/// Prints where each server is and a client configuration to paste.
fn announce(
    gateway: &Gateway,
    addr: &std::net::SocketAddr,
    base: &str,
    embedded: bool,
    admin: Option<&str>,
) {
    let mut out = String::new();
    out.push_str(&format!("Berth is listening on http://{addr}\n"));
    if embedded {
        out.push_str("No --config given: serving the built-in servers.\n");
    }
    let mut snippet = serde_json::Map::new();
    let servers = gateway.servers();
    let w = servers
        .iter()
        .map(|s| s.spec.name.len())
        .max()
        .unwrap_or(0)
        .max(12);
    for server in servers {
        let name = &server.spec.name;
        out.push_str(&format!(
            "  {name:<w$} {base}/mcp/{name}   (legacy SSE: {base}/sse/{name})\n"
        ));
        snippet.insert(
            name.clone(),
            serde_json::json!({ "type": "http", "url": format!("{base}/mcp/{name}") }),
        );
    }
    let snippet = serde_json::json!({ "mcpServers": snippet });
    if let Some(admin) = admin {
        out.push_str(&format!(
            "Admin API: {admin}   (berth ps | logs NAME | restart NAME | reload)\n"
        ));
    }
    out.push_str("Client configuration (mcpServers):\n");
    out.push_str(&serde_json::to_string_pretty(&snippet).unwrap_or_default());
    println!("{out}");
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot listen for SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = term.recv() => tracing::info!("SIGTERM received"),
    }
}
