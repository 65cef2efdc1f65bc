//! `berth usage`: what each principal, server or tool used, read from the
//! usage store the gateway writes (`[usage]`: SQLite in the data dir, or
//! PostgreSQL).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, bail};
use berth_usage::{By, Quantities, Store, UsageRow};

use crate::config::Config;

#[derive(clap::Args, Debug)]
pub struct UsageArgs {
    /// Start of the period: a duration before now (`24h`, `7d`), or an RFC 3339
    /// UTC time (`2026-11-29T22:00:00Z`, `2026-11-29`). Usage is kept by the
    /// hour: the period is widened to whole hours.
    #[arg(long, default_value = "24h")]
    pub since: String,
    /// End of the period: `now`, a duration before now, or an RFC 3339 UTC time.
    #[arg(long, default_value = "now")]
    pub until: String,
    /// Rows per principal, per server, or per server and tool.
    #[arg(long, value_enum, default_value_t = ByArg::Server)]
    pub by: ByArg,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// The configuration whose `[usage]` store and data dir to read
    /// (default: ./berth.toml when present).
    #[arg(long, short, env = "BERTH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Berth's data directory (default: the configuration's gateway.data_dir).
    #[arg(long, env = "BERTH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ByArg {
    Principal,
    Server,
    Tool,
}

impl From<ByArg> for By {
    fn from(by: ByArg) -> By {
        match by {
            ByArg::Principal => By::Principal,
            ByArg::Server => By::Server,
            ByArg::Tool => By::Tool,
        }
    }
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns with units.
    Table,
    /// RFC 4180: a header row, then a row per group.
    Csv,
    /// `{"since", "until", "by", "rows": [...]}` (what `berth cost --usage` reads).
    Json,
}

/// What `--format json` prints.
#[derive(serde::Serialize)]
struct Report<'a> {
    since: String,
    until: String,
    by: &'static str,
    rows: &'a [UsageRow],
}

pub async fn run(args: UsageArgs) -> anyhow::Result<()> {
    let now = SystemTime::now();
    let since = when("--since", &args.since, now)?;
    let until = when("--until", &args.until, now)?;
    if until <= since {
        bail!(
            "--until ({}) must be after --since ({})",
            args.until,
            args.since
        );
    }
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None if Path::new("berth.toml").exists() => Config::load(Path::new("berth.toml"))?,
        None => Config::default(),
    };
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| config.gateway.data_dir.clone());
    let usage = config.usage_config()?;
    if !usage.enabled {
        eprintln!("note: [usage] enabled = false: the gateway is not metering now");
    }
    let store = match &usage.postgres {
        Some(dsn) => Store::open_postgres(dsn).await?,
        None => {
            let path = data_dir.join(berth_usage::SQLITE_FILE);
            if !path.exists() {
                bail!(
                    "no usage recorded in {}: {} does not exist (`berth serve` writes it while [usage] is enabled; pass --data-dir or --config for another gateway)",
                    data_dir.display(),
                    path.display()
                );
            }
            Store::open_sqlite(&path).await?
        }
    };
    let by = By::from(args.by);
    let rows = store
        .query(since, until, by)
        .await
        .with_context(|| format!("cannot read usage from {}", store.describe()))?;
    let (since, until) = Store::window(since, until);
    let (since, until) = (rfc3339(since), rfc3339(until));
    let out = match args.format {
        Format::Json => {
            let report = Report {
                since,
                until,
                by: by.label(),
                rows: &rows,
            };
            serde_json::to_string_pretty(&report)? + "\n"
        }
        Format::Csv => csv(by, &rows),
        Format::Table => table(by, &rows, &since, &until, &store.describe()),
    };
    print!("{out}");
    Ok(())
}

/// `now`, a duration before `now`, or an RFC 3339 time (a date alone is
/// its midnight, UTC).
fn when(flag: &str, text: &str, now: SystemTime) -> anyhow::Result<SystemTime> {
    let text = text.trim();
    if text == "now" {
        return Ok(now);
    }
    if let Ok(ago) = humantime::parse_duration(text) {
        return now
            .checked_sub(ago)
            .with_context(|| format!("{flag} {text}: too far back"));
    }
    let full = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else {
        text.to_string()
    };
    humantime::parse_rfc3339_weak(&full).map_err(|_| {
        anyhow::anyhow!(
            "{flag} {text:?}: give a duration before now (`24h`, `7d`), `now`, or an RFC 3339 UTC time (`2026-11-29T22:00:00Z`, `2026-11-29`)"
        )
    })
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The grouped columns' names and a row's values for them.
fn keys(by: By) -> &'static [&'static str] {
    match by {
        By::Principal => &["principal"],
        By::Server => &["server"],
        By::Tool => &["server", "tool"],
    }
}

fn key_values(by: By, row: &UsageRow) -> Vec<&str> {
    fn get(v: &Option<String>) -> &str {
        v.as_deref().unwrap_or_default()
    }
    match by {
        By::Principal => vec![get(&row.principal)],
        By::Server => vec![get(&row.server)],
        By::Tool => vec![get(&row.server), get(&row.tool)],
    }
}

const QUANTITIES: [&str; 10] = [
    "sessions",
    "session_seconds",
    "peak_connections",
    "requests",
    "tool_calls",
    "errors",
    "bytes_in",
    "bytes_out",
    "cpu_seconds",
    "memory_gib_seconds",
];

fn csv(by: By, rows: &[UsageRow]) -> String {
    let mut out = String::new();
    let header: Vec<&str> = keys(by).iter().chain(QUANTITIES.iter()).copied().collect();
    push_csv_line(&mut out, header.iter().map(|h| h.to_string()));
    for row in rows {
        let q = &row.quantities;
        let cells = key_values(by, row).into_iter().map(str::to_string).chain([
            q.sessions.to_string(),
            q.session_seconds.to_string(),
            q.peak_connections.to_string(),
            q.requests.to_string(),
            q.tool_calls.to_string(),
            q.errors.to_string(),
            q.bytes_in.to_string(),
            q.bytes_out.to_string(),
            q.cpu_seconds.to_string(),
            q.memory_gib_seconds.to_string(),
        ]);
        push_csv_line(&mut out, cells);
    }
    out
}

/// One RFC 4180 record: fields with a comma, quote or line break are
/// quoted (quotes doubled); records end with CRLF.
fn push_csv_line(out: &mut String, cells: impl Iterator<Item = String>) {
    for (i, cell) in cells.enumerate() {
        if i > 0 {
            out.push(',');
        }
        if cell.contains([',', '"', '\r', '\n']) {
            out.push('"');
            out.push_str(&cell.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(&cell);
        }
    }
    out.push_str("\r\n");
}

fn table(by: By, rows: &[UsageRow], since: &str, until: &str, store: &str) -> String {
    let mut out = format!(
        "Usage by {} from {since} to {until} ({store})\n",
        by.label()
    );
    if rows.is_empty() {
        out.push_str("nothing recorded in this period\n");
        return out;
    }
    let mut header: Vec<String> = keys(by).iter().map(|k| k.to_uppercase()).collect();
    header.extend(
        [
            "SESSIONS",
            "SESSION TIME",
            "PEAK",
            "REQUESTS",
            "TOOL CALLS",
            "ERRORS",
            "IN",
            "OUT",
            "CPU",
            "MEMORY",
        ]
        .map(String::from),
    );
    let mut lines = vec![header];
    let mut total = Quantities::default();
    for row in rows {
        total.add(&row.quantities);
        let mut line: Vec<String> = key_values(by, row)
            .into_iter()
            .zip(keys(by))
            .map(|(value, key)| match (value, *key) {
                ("", "principal") => "(anonymous)".to_string(),
                ("", "tool") => "(not a tool call)".to_string(),
                (value, _) => value.to_string(),
            })
            .collect();
        line.extend(human(&row.quantities));
        lines.push(line);
    }
    let mut last: Vec<String> = vec![String::new(); keys(by).len()];
    last[0] = "TOTAL".into();
    last.extend(human(&total));
    lines.push(last);
    let columns = lines[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            lines
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let names = keys(by).len();
    for line in &lines {
        let mut text = String::new();
        for (c, cell) in line.iter().enumerate() {
            let w = widths[c];
            // Names to the left, numbers to the right.
            let _ = if c < names {
                write!(text, "{cell:<w$}  ")
            } else {
                write!(text, "{cell:>w$}  ")
            };
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

/// A row's quantities with units.
fn human(q: &Quantities) -> Vec<String> {
    vec![
        q.sessions.to_string(),
        duration(q.session_seconds),
        q.peak_connections.to_string(),
        q.requests.to_string(),
        q.tool_calls.to_string(),
        q.errors.to_string(),
        bytes(q.bytes_in),
        bytes(q.bytes_out),
        duration(q.cpu_seconds),
        format!("{:.3} GiB·h", q.memory_gib_seconds / 3600.0),
    ]
}

/// `42.0s`, `12m05s`, `3h07m`, `2d04h`.
fn duration(secs: f64) -> String {
    if secs < 60.0 {
        return format!("{secs:.1}s");
    }
    let s = secs.round() as u64;
    match s {
        0..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// `512 B`, `1.5 KiB`, `12.0 MiB`...
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn periods_are_durations_or_times() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(when("--until", "now", now).unwrap(), now);
        assert_eq!(
            when("--since", "24h", now).unwrap(),
            now - Duration::from_secs(86400)
        );
        assert_eq!(
            rfc3339(when("--since", "2026-11-29T22:00:00Z", now).unwrap()),
            "2026-11-29T22:00:00Z"
        );
        assert_eq!(
            rfc3339(when("--since", "2026-11-29", now).unwrap()),
            "2026-11-29T00:00:00Z"
        );
        let err = when("--since", "yesterday", now).unwrap_err().to_string();
        assert!(
            err.starts_with("--since \"yesterday\": give a duration"),
            "{err}"
        );
    }

    #[test]
    fn csv_quotes_what_needs_quoting() {
        let mut out = String::new();
        push_csv_line(
            &mut out,
            ["plain", "a,b", "say \"hi\"", "two\nlines", ""]
                .into_iter()
                .map(String::from),
        );
        assert_eq!(out, "plain,\"a,b\",\"say \"\"hi\"\"\",\"two\nlines\",\r\n");
    }

    #[test]
    fn units_are_human() {
        assert_eq!(duration(12.5), "12.5s");
        assert_eq!(duration(725.0), "12m05s");
        assert_eq!(duration(3600.5), "1h00m");
        assert_eq!(duration(3.0 * 86400.0 + 7200.0), "3d02h");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 << 30), "5.0 GiB");
    }
}
