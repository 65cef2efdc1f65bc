//! `berth add`, `berth remove`, `berth upgrade`: a catalog entry becomes a
//! configured server — its package installed under the data dir, its
//! secrets in the encrypted store, its table in the configuration — and the
//! running gateway reloads.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use berth_catalog::{Entry, Input, Kind};

use crate::catalog::SourceArgs;
use crate::config_edit::{ConfigFile, ServerTable};

/// The configuration file `add`, `remove` and `upgrade` change.
#[derive(clap::Args, Debug, Clone)]
pub struct ConfigPath {
    /// The configuration file to change (created when missing).
    #[arg(long, short, env = "BERTH_CONFIG", default_value = "berth.toml")]
    pub config: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct AddArgs {
    /// The catalog entry (`berth catalog list`), by its name or its full server.json name.
    #[arg(required_unless_present = "from")]
    pub entry: Option<String>,
    /// Add the server under this name (its URL becomes /mcp/NAME).
    #[arg(long = "as")]
    pub as_name: Option<String>,
    /// Add from a server.json file instead of the catalog.
    #[arg(long, conflicts_with = "entry")]
    pub from: Option<PathBuf>,
    /// A secret setting, read from a file (`-` for stdin): KEY=@FILE. Asked
    /// for on the terminal when not given.
    #[arg(long = "secret", value_name = "KEY=@FILE")]
    pub secrets: Vec<String>,
    /// A setting that is not secret: KEY=VALUE.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Do not ask the running gateway to reload.
    #[arg(long)]
    pub no_reload: bool,
    #[command(flatten)]
    pub config: ConfigPath,
    #[command(flatten)]
    pub sources: SourceArgs,
}

pub async fn add(args: AddArgs) -> anyhow::Result<()> {
    let mut file = ConfigFile::open(&args.config.config)?;
    let config = file.config();
    let entry = match &args.from {
        Some(path) => Entry::load_file(path)?,
        None => {
            let wanted = args.entry.as_deref().unwrap_or_default();
            let catalog = crate::catalog::load(Some(config), &args.sources).await;
            match catalog.get(wanted) {
                Some(entry) => entry.clone(),
                None => {
                    let similar: Vec<&str> =
                        catalog.search(wanted).map(|e| e.key.as_str()).collect();
                    bail!(
                        "no catalog entry named `{wanted}`{}; `berth catalog list` shows them all",
                        if similar.is_empty() {
                            String::new()
                        } else {
                            format!(" (similar: {})", similar.join(", "))
                        }
                    );
                }
            }
        }
    };
    let kind = entry
        .kind()
        .map_err(|why| anyhow::anyhow!("`{}` cannot be added: {why}", entry.key))?;
    let name = args.as_name.clone().unwrap_or_else(|| entry.key.clone());
    if !crate::config::valid_server_name(&name) {
        bail!(
            "`{name}` cannot be a server name: use 1-64 letters, digits, '-', '_' or '.' (or pick one with --as NAME)"
        );
    }
    if file.has_server(&name) {
        bail!(
            "{} already has a server `{name}`: `berth upgrade {name}` updates it, `--as OTHER` adds a second one",
            file.path.display()
        );
    }
    let data_dir = config.gateway.data_dir.clone();
    let given = Given::parse(&args.secrets, &args.env)?;
    let values = collect_inputs(&entry, &name, &given)?;

    let installed = match kind {
        Kind::Builtin => None,
        Kind::Npm | Kind::Pypi => {
            let (identifier, version) = (
                entry
                    .package()
                    .map(|p| p.identifier.clone())
                    .unwrap_or_default(),
                entry.pinned_version().to_string(),
            );
            eprintln!("installing {kind} package {identifier} {version} …");
            let packages = packages_dir(&data_dir, &name);
            let entry = entry.clone();
            let installed = tokio::task::spawn_blocking(move || {
                berth_catalog::install::install(&entry, &packages)
            })
            .await
            .context("the installer stopped")??;
            Some(installed)
        }
    };

    let table = server_table(&entry, &name, installed.as_ref(), &values);
    // Another `berth add` may have changed the file while this one installed:
    // read it again under the lock and change only the fresh copy.
    let _lock = lock(&args.config.config)?;
    let saved = ConfigFile::open(&args.config.config).and_then(|fresh| {
        file = fresh;
        if file.has_server(&name) {
            bail!(
                "{} got a server `{name}` while installing",
                file.path.display()
            );
        }
        Ok(())
    });
    let saved = saved.and_then(|()| {
        let stored = store_secrets(&data_dir, &values)?;
        make_dirs(&entry, &data_dir, &name)?;
        file.set_server(&name, &table);
        file.save()
            .map(|_| stored.clone())
            .inspect_err(|_| forget_secrets(&data_dir, &stored))
    });
    let stored = match saved {
        Ok(stored) => stored,
        Err(e) => {
            // Leave nothing half-added behind.
            if installed.is_some() {
                let _ = std::fs::remove_dir_all(packages_dir(&data_dir, &name));
            }
            return Err(e);
        }
    };
    drop(_lock);
    eprintln!(
        "added `{name}` ({} {}) to {}{}{}",
        entry.key,
        entry.pinned_version(),
        file.path.display(),
        if file.created { " (new file)" } else { "" },
        if stored.is_empty() {
            String::new()
        } else {
            format!("; secrets stored encrypted: {}", stored.join(", "))
        }
    );
    if let Some(notes) = &entry.hosting.notes {
        eprintln!("note: {notes}");
    }
    reload_running(&args.config.config, &data_dir, args.no_reload).await;
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct RemoveArgs {
    pub name: String,
    /// Also delete the server's state directory (its data).
    #[arg(long)]
    pub purge: bool,
    #[arg(long)]
    pub no_reload: bool,
    #[command(flatten)]
    pub config: ConfigPath,
}

pub async fn remove(args: RemoveArgs) -> anyhow::Result<()> {
    let lock_guard = lock(&args.config.config)?;
    let mut file = ConfigFile::open(&args.config.config)?;
    let data_dir = file.config().gateway.data_dir.clone();
    let name = &args.name;
    let Some(table) = file.remove_server(name) else {
        bail!("{} has no server `{name}`", file.path.display());
    };
    file.save()?;
    drop(lock_guard);
    // Secrets `berth add` stored for this server (named `NAME.KEY`).
    let prefix = format!("{name}.");
    let owned: Vec<String> = secret_references(&table)
        .into_iter()
        .filter(|s| s.starts_with(&prefix))
        .collect();
    forget_secrets(&data_dir, &owned);
    let packages = packages_dir(&data_dir, name);
    if packages.exists() {
        std::fs::remove_dir_all(&packages)
            .with_context(|| format!("cannot delete {}", packages.display()))?;
    }
    if args.purge {
        let state = data_dir.join("state").join(name);
        if state.exists() {
            std::fs::remove_dir_all(&state)
                .with_context(|| format!("cannot delete {}", state.display()))?;
        }
    }
    eprintln!(
        "removed `{name}` from {}{}",
        file.path.display(),
        if owned.is_empty() {
            String::new()
        } else {
            format!(" and its secrets ({})", owned.join(", "))
        }
    );
    reload_running(&args.config.config, &data_dir, args.no_reload).await;
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct UpgradeArgs {
    pub name: String,
    #[arg(long)]
    pub no_reload: bool,
    #[command(flatten)]
    pub config: ConfigPath,
    #[command(flatten)]
    pub sources: SourceArgs,
}

/// Installs the catalog's current pin of the entry a server was added from,
/// switches the configuration to it (keeping every other setting the operator
/// changed), reloads, then deletes the old version.
pub async fn upgrade(args: UpgradeArgs) -> anyhow::Result<()> {
    let file = ConfigFile::open(&args.config.config)?;
    let config = file.config();
    let name = &args.name;
    let origin = file
        .server(name)
        .ok_or_else(|| anyhow::anyhow!("{} has no server `{name}`", file.path.display()))?
        .get("catalog")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .ok_or_else(|| {
            anyhow::anyhow!("`{name}` was not added from the catalog (no `catalog` key): upgrade it by editing its command")
        })?;
    let (key, current) = origin.split_once('@').unwrap_or((&origin, ""));
    let catalog = crate::catalog::load(Some(config), &args.sources).await;
    let entry = catalog
        .get(key)
        .ok_or_else(|| anyhow::anyhow!("the catalog no longer has an entry `{key}`"))?
        .clone();
    let kind = entry.kind().map_err(|why| anyhow::anyhow!("{why}"))?;
    if entry.pinned_version() == current {
        eprintln!("`{name}` is already at {key} {current}, the catalog's version");
        return Ok(());
    }
    let data_dir = config.gateway.data_dir.clone();
    let installed = match kind {
        Kind::Builtin => None,
        _ => {
            eprintln!(
                "installing {key} {} (was {current}) …",
                entry.pinned_version()
            );
            let packages = packages_dir(&data_dir, name);
            let to_install = entry.clone();
            Some(
                tokio::task::spawn_blocking(move || {
                    berth_catalog::install::install(&to_install, &packages)
                })
                .await
                .context("the installer stopped")??,
            )
        }
    };
    let mut table = server_table(&entry, name, installed.as_ref(), &Values::default());
    // Only what the install itself needs changes; the operator's env stays.
    table.env = installed
        .as_ref()
        .map(|i| i.env.clone())
        .unwrap_or_default();
    let lock_guard = lock(&args.config.config)?;
    let mut file = ConfigFile::open(&args.config.config)?;
    file.set_program(name, &table)?;
    file.save()?;
    drop(lock_guard);
    eprintln!(
        "upgraded `{name}`: {key} {current} → {}",
        entry.pinned_version()
    );
    reload_running(&args.config.config, &data_dir, args.no_reload).await;
    let old = packages_dir(&data_dir, name).join(current);
    if !current.is_empty() && old.exists() {
        let _ = std::fs::remove_dir_all(&old);
    }
    Ok(())
}

/// An exclusive lock on `<config>.lock`, held while the file is read,
/// changed and written, so concurrent `berth add`s don't lose each other's servers.
fn lock(config: &Path) -> anyhow::Result<berth_files::LockFile> {
    let path = config.with_extension("toml.lock");
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    berth_files::lock_exclusive(&path).with_context(|| format!("cannot lock {}", path.display()))
}

/// `<data_dir>/packages/NAME`: every installed version of a server's package.
fn packages_dir(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join("packages").join(name)
}

/// What the operator passed on the command line.
#[derive(Default)]
struct Given {
    secrets: BTreeMap<String, String>,
    env: BTreeMap<String, String>,
}

impl Given {
    fn parse(secrets: &[String], env: &[String]) -> anyhow::Result<Given> {
        let mut given = Given::default();
        for item in secrets {
            let Some((key, source)) = item.split_once('=') else {
                bail!("--secret {item}: write it as KEY=@FILE");
            };
            let Some(path) = source.strip_prefix('@') else {
                bail!(
                    "--secret {key}=…: give the value in a file, --secret {key}=@FILE (or @- for stdin): a value on the command line would show in the process list and the shell's history"
                );
            };
            let value = if path == "-" {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                    .context("cannot read the secret from stdin")?;
                text
            } else {
                std::fs::read_to_string(path)
                    .with_context(|| format!("--secret {key}: cannot read {path}"))?
            };
            let value = value.strip_suffix('\n').unwrap_or(&value);
            let value = value.strip_suffix('\r').unwrap_or(value);
            given.secrets.insert(key.to_string(), value.to_string());
        }
        for item in env {
            let Some((key, value)) = item.split_once('=') else {
                bail!("--env {item}: write it as KEY=VALUE");
            };
            given.env.insert(key.to_string(), value.to_string());
        }
        Ok(given)
    }
}

/// The settings' values: plain ones, and secrets to store.
#[derive(Default)]
struct Values {
    /// Variable or option name → value as written in the configuration
    /// (a secret as `${secret:NAME.KEY}`).
    settings: BTreeMap<String, String>,
    /// Secret store name → value.
    secrets: BTreeMap<String, String>,
}

/// Every input of the entry, from the command line, the terminal, or its
/// default; all missing required ones are named at once.
fn collect_inputs(entry: &Entry, name: &str, given: &Given) -> anyhow::Result<Values> {
    let inputs = entry.inputs();
    let known: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
    for key in given.secrets.keys().chain(given.env.keys()) {
        if !known.contains(&key.as_str()) {
            bail!(
                "`{}` has no setting `{key}`; its settings: {}",
                entry.key,
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            );
        }
    }
    let terminal = std::io::stdin().is_terminal();
    let mut values = Values::default();
    let mut missing = Vec::new();
    for input in &inputs {
        if input.value.is_some() {
            continue; // fixed by the entry
        }
        let key = &input.name;
        if input.is_secret && given.env.contains_key(key) {
            bail!("`{key}` is a secret: give it with --secret {key}=@FILE");
        }
        let value = if input.is_secret {
            given.secrets.get(key).cloned()
        } else {
            given.env.get(key).cloned()
        };
        let value = match value {
            Some(v) => Some(v),
            None if input.is_required && terminal => Some(ask(entry, input)?),
            None => input.default.clone(),
        };
        match value {
            Some(v) if input.is_secret => {
                let secret = format!("{name}.{key}");
                values
                    .settings
                    .insert(key.clone(), format!("${{secret:{secret}}}"));
                values.secrets.insert(secret, v);
            }
            Some(v) => {
                values.settings.insert(key.clone(), v);
            }
            None if input.is_required => missing.push(if input.is_secret {
                format!("{key} (secret: --secret {key}=@FILE)")
            } else {
                format!("{key} (--env {key}=VALUE)")
            }),
            None => {}
        }
    }
    if !missing.is_empty() {
        bail!(
            "`{}` needs settings that were not given{}: {}",
            entry.key,
            if terminal {
                ""
            } else {
                " (no terminal to ask on)"
            },
            missing.join(", ")
        );
    }
    Ok(values)
}

/// Asks on the terminal; secrets without echo.
fn ask(entry: &Entry, input: &Input) -> anyhow::Result<String> {
    let about = input
        .description
        .as_deref()
        .map(|d| format!(" — {d}"))
        .unwrap_or_default();
    let prompt = format!("{} {}{about}: ", entry.key, input.name);
    let value = if input.is_secret {
        rpassword::prompt_password(prompt).context("cannot read from the terminal")?
    } else {
        use std::io::Write;
        eprint!("{prompt}");
        std::io::stderr().flush()?;
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("cannot read from the terminal")?;
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    if value.is_empty() {
        bail!("no value given for {} (required)", input.name);
    }
    Ok(value)
}

/// `{state_dir}` and `{name}` in an entry's values.
fn expand(template: &str, name: &str) -> String {
    template
        .replace("{state_dir}", berth_sandbox::STATE_DIR)
        .replace("{name}", name)
}

fn expand_json(value: &serde_json::Value, name: &str) -> serde_json::Value {
    match value {
        serde_json::Value::String(s) => serde_json::Value::String(expand(s, name)),
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.iter().map(|v| expand_json(v, name)).collect())
        }
        other => other.clone(),
    }
}

/// The `[servers.NAME]` table for `entry`.
fn server_table(
    entry: &Entry,
    name: &str,
    installed: Option<&berth_catalog::Installed>,
    values: &Values,
) -> ServerTable {
    let h = &entry.hosting;
    let mut table = ServerTable {
        catalog: format!("{}@{}", entry.key, entry.pinned_version()),
        builtin: h.builtin.clone(),
        binding: h.binding.clone(),
        on_crash: h.on_crash.clone(),
        roots: h.roots.as_ref().map(|r| expand_json(r, name)),
        required_scopes: h.required_scopes.clone(),
        tool_scopes: h.tool_scopes.clone(),
        pool: h.pool.clone(),
        sandbox: h.sandbox.clone(),
        ..ServerTable::default()
    };
    if let Some(installed) = installed {
        table.command = Some(installed.command.display().to_string());
        table.args = installed.args.clone();
        table.env.extend(installed.env.clone());
    }
    if let Some(package) = entry.package() {
        for input in &package.environment_variables {
            // Secrets are `${secret:…}` references: only plain values are templates.
            let value = match &input.value {
                Some(fixed) => Some(expand(fixed, name)),
                None if input.is_secret => values.settings.get(&input.name).cloned(),
                None => values.settings.get(&input.name).map(|v| expand(v, name)),
            };
            if let Some(value) = value {
                table.env.insert(input.name.clone(), value);
            }
        }
        for argument in &package.package_arguments {
            match argument {
                berth_catalog::entry::Argument::Positional { input, value_hint } => {
                    let key = value_hint.as_deref().unwrap_or(&input.name);
                    let value = input
                        .value
                        .clone()
                        .or_else(|| values.settings.get(key).cloned())
                        .or_else(|| input.default.clone());
                    if let Some(value) = value {
                        table.args.push(expand(&value, name));
                    }
                }
                berth_catalog::entry::Argument::Named { input } => {
                    let value = input
                        .value
                        .clone()
                        .or_else(|| values.settings.get(&input.name).cloned())
                        .or_else(|| input.default.clone());
                    if let Some(value) = value {
                        table.args.push(input.name.clone());
                        table.args.push(expand(&value, name));
                    }
                }
            }
        }
    }
    for (key, value) in &h.options {
        let value = expand_json(value, name);
        table.options.insert(key.clone(), value);
    }
    for secret in &h.secrets {
        if let Some(value) = values.settings.get(&secret.name) {
            table.options.insert(
                secret.name.clone(),
                serde_json::Value::String(value.clone()),
            );
        }
    }
    // A setting that names the one place the server must reach (a database
    // DSN): the sandbox's egress allows exactly that.
    let named_target = h.allow_from.as_ref().and_then(|key| {
        let secret = values.secrets.get(&format!("{name}.{key}"));
        secret.or_else(|| values.settings.get(key))
    });
    if let Some(target) = named_target.and_then(|value| dsn_target(value)) {
        let allow = table
            .sandbox
            .entry("allow")
            .or_insert_with(|| serde_json::Value::Array(Vec::new()));
        if let Some(list) = allow.as_array_mut()
            && !list.iter().any(|v| v.as_str() == Some(&target))
        {
            list.push(serde_json::Value::String(target));
        }
    }
    table
}

/// `host:port` of a `postgres://user@host:port/db` or `host=… port=…` DSN.
fn dsn_target(dsn: &str) -> Option<String> {
    if let Some(rest) = dsn
        .strip_prefix("postgres://")
        .or_else(|| dsn.strip_prefix("postgresql://"))
    {
        let authority = rest.split(['/', '?']).next()?;
        let host_port = authority.rsplit('@').next()?;
        if host_port.is_empty() || host_port.contains(',') {
            return None;
        }
        return Some(if host_port.contains(':') && !host_port.ends_with(']') {
            host_port.to_string()
        } else {
            format!("{host_port}:5432")
        });
    }
    let field = |name: &str| {
        dsn.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
    };
    let host = field("host")?;
    if host.starts_with('/') {
        return None; // a Unix socket: no network at all
    }
    Some(format!("{host}:{}", field("port").unwrap_or("5432")))
}

fn store_secrets(data_dir: &Path, values: &Values) -> anyhow::Result<Vec<String>> {
    if values.secrets.is_empty() {
        return Ok(Vec::new());
    }
    let store = berth_secrets::SecretStore::open(data_dir)?;
    let mut stored = Vec::new();
    for (name, value) in &values.secrets {
        if let Err(e) = store.set(name, value) {
            forget_secrets(data_dir, &stored);
            return Err(e.into());
        }
        stored.push(name.clone());
    }
    Ok(stored)
}

fn forget_secrets(data_dir: &Path, names: &[String]) {
    if names.is_empty() {
        return;
    }
    if let Ok(store) = berth_secrets::SecretStore::open(data_dir) {
        for name in names {
            let _ = store.remove(name);
        }
    }
}

/// `${secret:NAME}` references in a server table's env and options.
fn secret_references(table: &toml_edit::Table) -> Vec<String> {
    let mut names = Vec::new();
    for key in ["env", "options"] {
        let Some(item) = table.get(key) else { continue };
        let values: Vec<String> = match item {
            toml_edit::Item::Table(t) => t
                .iter()
                .filter_map(|(_, v)| v.as_str().map(str::to_owned))
                .collect(),
            toml_edit::Item::Value(toml_edit::Value::InlineTable(t)) => t
                .iter()
                .filter_map(|(_, v)| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        for value in values {
            names.extend(
                berth_secrets::references(&value)
                    .into_iter()
                    .map(str::to_owned),
            );
        }
    }
    names
}

/// The entry's directories and files under the server's state dir, owned by
/// the user the sandboxed server runs as.
fn make_dirs(entry: &Entry, data_dir: &Path, name: &str) -> anyhow::Result<()> {
    let hosting = &entry.hosting;
    if hosting.create_dirs.is_empty() && hosting.create_files.is_empty() {
        return Ok(());
    }
    let state = data_dir.join("state").join(name);
    let ids = berth_sandbox::policy::IdMap::for_this_process();
    let hand_over = |path: &Path| -> anyhow::Result<()> {
        if ids.privileged {
            std::os::unix::fs::chown(path, Some(ids.outside_uid), Some(ids.outside_gid))
                .with_context(|| {
                    format!("cannot hand {} to uid {}", path.display(), ids.outside_uid)
                })?;
        }
        Ok(())
    };
    let dirs = hosting
        .create_dirs
        .iter()
        .map(|d| state.join(d.trim_start_matches('/')));
    for dir in std::iter::once(state.clone()).chain(dirs) {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        hand_over(&dir)?;
    }
    for file in &hosting.create_files {
        let path = state.join(file.trim_start_matches('/'));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        // Never truncate what a previous install left.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        hand_over(&path)?;
    }
    Ok(())
}

/// Asks the gateway running on this data dir to reload, or says how to start one.
async fn reload_running(config: &Path, data_dir: &Path, skip: bool) {
    let start = format!("berth serve --config {}", config.display());
    if skip {
        eprintln!(
            "not reloading (--no-reload); a running gateway picks the change up on `berth reload`"
        );
        return;
    }
    let admin = crate::cli::AdminArgs {
        data_dir: Some(data_dir.to_path_buf()),
        admin_url: None,
        admin_token: None,
    };
    if !crate::cli::AdminEndpoint::path(data_dir).exists() {
        eprintln!(
            "no gateway is running on {}: start it with `{start}`",
            data_dir.display()
        );
        return;
    }
    if let Err(e) = crate::cli::reload(&admin).await {
        eprintln!(
            "the running gateway did not reload: {e:#}\nstart it with `{start}` (or run `berth reload` once it uses this file)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsn_targets() {
        assert_eq!(
            dsn_target("postgres://u:p@127.0.0.1:5432/test").as_deref(),
            Some("127.0.0.1:5432")
        );
        assert_eq!(
            dsn_target("postgresql://db.example.com/x").as_deref(),
            Some("db.example.com:5432")
        );
        assert_eq!(
            dsn_target("host=localhost port=6543 dbname=x").as_deref(),
            Some("localhost:6543")
        );
        assert_eq!(dsn_target("host=/run/postgresql dbname=x"), None);
    }

    #[test]
    fn secrets_are_refused_on_the_command_line() {
        let err = Given::parse(&["TOKEN=abc".into()], &[]).err().unwrap();
        assert!(err.to_string().contains("--secret TOKEN=@FILE"), "{err}");
    }
}
