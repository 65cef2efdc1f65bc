//! `berth`: host MCP servers over Streamable HTTP.

mod cli;
mod config;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use berth_edge::Gateway;
use clap::{Parser, Subcommand, ValueEnum};

use crate::config::Config;

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
        #[arg(long, short)]
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
    /// Run a built-in MCP server on stdin/stdout (Berth runs these as its own children).
    Builtin {
        #[arg(value_parser = clap::builder::PossibleValuesParser::new(berth_servers::BUILTINS))]
        name: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve {
                config,
                listen,
                log_format,
            } => serve(config, listen, log_format).await,
            Command::Check { config } => {
                let loaded = Config::load(&config)?;
                println!(
                    "{}: ok ({} server(s))",
                    config.display(),
                    loaded.servers.len()
                );
                Ok(())
            }
            Command::Builtin { name } => berth_servers::run(&name).await,
            Command::Ps { admin, json } => cli::ps(&admin, json).await,
            Command::Logs {
                server,
                follow,
                lines,
                admin,
            } => cli::logs(&admin, &server, follow, lines).await,
            Command::Restart { server, admin } => cli::restart(&admin, &server).await,
            Command::Reload { admin } => cli::reload(&admin).await,
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

async fn serve(
    config_path: Option<PathBuf>,
    listen: Option<std::net::SocketAddr>,
    log_format: LogFormat,
) -> anyhow::Result<()> {
    init_logging(log_format);
    let mut config = match &config_path {
        Some(path) => Config::load(path)?,
        None => Config::embedded(),
    };
    if let Some(listen) = listen {
        config.gateway.listen = listen;
    }
    if config.servers.is_empty() {
        anyhow::bail!("no servers configured: add a [servers.<name>] table with a command");
    }
    let listener = tokio::net::TcpListener::bind(config.gateway.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.gateway.listen))?;
    let mut edge = config.edge();
    edge.listen = listener.local_addr()?;
    if !edge.listen.ip().is_loopback() {
        tracing::warn!(
            "listening on {} (not loopback) without client authentication: anyone who can reach this address can use every server; put an authenticating proxy in front",
            edge.listen
        );
    }
    let gateway = Gateway::new(edge.clone(), config.server_specs());
    let reloader = reloader(config_path.clone(), Arc::downgrade(&gateway));
    let stop = tokio_util::sync::CancellationToken::new();
    let admin = if config.admin.enabled {
        Some(start_admin(&config, &gateway, reloader.clone(), stop.clone()).await?)
    } else {
        None
    };
    announce(
        &gateway,
        &edge.listen,
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
    tracing::info!("stopped; all server processes reaped");
    Ok(())
}

/// Re-reads the configuration file and applies its servers.
fn reloader(path: Option<PathBuf>, gateway: std::sync::Weak<Gateway>) -> berth_edge::Reloader {
    Arc::new(move || {
        let (path, gateway) = (path.clone(), gateway.clone());
        Box::pin(async move {
            let path = path.ok_or(
                "nothing to reload: Berth was started without --config (the embedded default)",
            )?;
            let config = Config::load(&path).map_err(|e| e.to_string())?;
            let gateway = gateway.upgrade().ok_or("the gateway is stopping")?;
            Ok(gateway.reload(config.server_specs()).await)
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
async fn start_admin(
    config: &Config,
    gateway: &Arc<Gateway>,
    reloader: berth_edge::Reloader,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind(config.admin.listen)
        .await
        .with_context(|| format!("cannot listen on {} (admin.listen)", config.admin.listen))?;
    let url = format!("http://{}", listener.local_addr()?);
    let token = config
        .admin
        .token
        .clone()
        .unwrap_or_else(|| berth_edge::random_token().to_string());
    let path = cli::AdminEndpoint {
        url: url.clone(),
        token: token.clone(),
    }
    .write(&config.gateway.data_dir)?;
    tracing::info!("admin API on {url} (token in {})", path.display());
    let router = berth_edge::admin_router(gateway.clone(), token, reloader);
    tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!("admin API stopped: {e}");
        }
    });
    Ok(url)
}

/// Prints where each server is and a client configuration to paste.
fn announce(gateway: &Gateway, addr: &std::net::SocketAddr, embedded: bool, admin: Option<&str>) {
    let base = format!("http://{addr}");
    let mut out = String::new();
    out.push_str(&format!("Berth is listening on {base}\n"));
    if embedded {
        out.push_str("No --config given: serving the built-in servers.\n");
    }
    let mut snippet = serde_json::Map::new();
    for server in gateway.servers() {
        let name = &server.spec.name;
        out.push_str(&format!(
            "  {name:<12} {base}/mcp/{name}   (legacy SSE: {base}/sse/{name})\n"
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
