//! `berth catalog list | search WORD | show NAME`: the ready-made servers
//! Berth knows, from its own entries, the operator's directories and registries.

use std::path::PathBuf;

use berth_catalog::{Catalog, Entry, Kind};

use crate::config::Config;

/// Where to look for entries besides Berth's own.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SourceArgs {
    /// A directory of server.json files to add to the catalog (repeatable;
    /// also `[catalog] directories` in the configuration).
    #[arg(long = "catalog-dir", global = true)]
    pub catalog_dirs: Vec<PathBuf>,
    /// A registry speaking the MCP Registry API v0.1 (`GET /v0.1/servers`)
    /// to add to the catalog (repeatable; also `[catalog] registries`).
    #[arg(long = "registry", global = true)]
    pub registries: Vec<String>,
}

/// The catalog: embedded entries, then directories, then registries. What
/// cannot be read is reported on stderr and skipped.
pub async fn load(config: Option<&Config>, sources: &SourceArgs) -> Catalog {
    let mut catalog = Catalog::embedded();
    let configured = config.map(|c| &c.catalog);
    let dirs = configured
        .map(|c| c.directories.clone())
        .unwrap_or_default()
        .into_iter()
        .chain(sources.catalog_dirs.iter().cloned());
    for dir in dirs {
        match catalog.add_dir(&dir) {
            Ok(skipped) => {
                for e in skipped {
                    eprintln!("warning: catalog entry skipped: {e}");
                }
            }
            Err(e) => eprintln!("warning: {e}"),
        }
    }
    let registries = configured
        .map(|c| c.registries.clone())
        .unwrap_or_default()
        .into_iter()
        .chain(sources.registries.iter().cloned());
    for url in registries {
        match berth_catalog::registry::list(&url).await {
            Ok(listing) => {
                for why in listing.skipped {
                    eprintln!("note: {url}: skipped {why}");
                }
                catalog.add_entries(listing.entries);
            }
            Err(e) => eprintln!("warning: {e}"),
        }
    }
    catalog
}

pub fn list<'a>(entries: impl Iterator<Item = &'a Entry>) {
    let rows: Vec<[String; 4]> = entries
        .map(|e| {
            [
                e.key.clone(),
                e.kind().map(|k| k.to_string()).unwrap_or_default(),
                e.pinned_version().to_string(),
                e.server
                    .title
                    .clone()
                    .unwrap_or_else(|| e.server.description.clone()),
            ]
        })
        .collect();
    if rows.is_empty() {
        println!("no entries match");
        return;
    }
    let width = |i: usize| rows.iter().map(|r| r[i].len()).max().unwrap_or(0);
    let (w0, w1, w2) = (width(0).max(4), width(1).max(4), width(2).max(7));
    println!(
        "{:<w0$}  {:<w1$}  {:<w2$}  TITLE",
        "NAME", "KIND", "VERSION"
    );
    for [key, kind, version, title] in rows {
        println!("{key:<w0$}  {kind:<w1$}  {version:<w2$}  {title}");
    }
}

/// Everything an operator needs before `berth add NAME`.
pub fn show(entry: &Entry) {
    let s = &entry.server;
    let h = &entry.hosting;
    println!("{} — {}", entry.key, s.title.as_deref().unwrap_or(&s.name));
    println!("  {}", s.description);
    println!("  name:      {}", s.name);
    println!("  from:      {}", entry.origin);
    match (entry.kind(), entry.package()) {
        (Ok(Kind::Builtin), _) => println!(
            "  runs:      built into Berth (`builtin = \"{}\"`)",
            h.builtin.as_deref().unwrap_or_default()
        ),
        (Ok(kind), Some(p)) => println!(
            "  package:   {kind} {} {} (installed into <data_dir>/packages/NAME by `berth add`)",
            p.identifier,
            entry.pinned_version()
        ),
        (Err(why), _) => println!("  cannot be added: {why}"),
        _ => {}
    }
    let inputs = entry.inputs();
    if !inputs.is_empty() {
        println!("  settings:");
        for input in inputs {
            let mut flags = Vec::new();
            if input.is_secret {
                flags.push("secret");
            }
            if input.is_required {
                flags.push("required");
            }
            if input.value.is_some() {
                flags.push("fixed");
            }
            let flags = if flags.is_empty() {
                String::new()
            } else {
                format!(" ({})", flags.join(", "))
            };
            println!(
                "    {}{flags}: {}",
                input.name,
                input.description.as_deref().unwrap_or("")
            );
        }
    }
    println!("  hosting:");
    println!(
        "    binding {}{}",
        h.binding.as_deref().unwrap_or("exclusive"),
        h.pool
            .get("max_processes")
            .map(|n| format!(", at most {n} process(es)"))
            .unwrap_or_default()
    );
    let network = h
        .sandbox
        .get("network")
        .and_then(|v| v.as_str())
        .unwrap_or("allow");
    let allow: Vec<String> = h
        .sandbox
        .get("allow")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    println!(
        "    network {network}{}",
        if allow.is_empty() {
            String::new()
        } else {
            format!(": {}", allow.join(", "))
        }
    );
    if let Some(roots) = &h.roots {
        println!("    roots {roots}");
    }
    for (tool, scopes) in &h.tool_scopes {
        println!("    tool {tool} needs scope {}", scopes.join(" "));
    }
    if let Some(notes) = &h.notes {
        println!("  notes: {notes}");
    }
    println!("  add it:    berth add {}", entry.key);
}
