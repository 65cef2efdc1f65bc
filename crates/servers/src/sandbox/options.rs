//! The `sandbox` built-in's settings, from `BERTH_SANDBOX_<KEY>` variables
//! (see the crate docs). A bad value stops the server at start, naming the
//! variable.

use std::path::PathBuf;
use std::time::Duration;

/// The option keys, for `berth_servers::options`.
pub const KEYS: &[&str] = &[
    "workspace_root",
    "keep_workspace",
    "exec_timeout",
    "exec_timeout_max",
    "output_limit",
];

/// `output_limit` may not exceed this (each stream of each command is held
/// in memory up to it).
const OUTPUT_LIMIT_MAX: usize = 16 << 20;

#[derive(Debug, Clone)]
pub struct Options {
    /// Where workspaces are made. Commands never see the top-level directory
    /// that holds it (e.g. `/state`), except their own workspace.
    pub workspace_root: PathBuf,
    /// Keep the workspace after the session ends.
    pub keep_workspace: bool,
    /// `exec`'s timeout when the call names none.
    pub exec_timeout: Duration,
    /// The largest timeout a call may ask for.
    pub exec_timeout_max: Duration,
    /// Bytes kept per output stream (exec), and per ring buffer (background processes).
    pub output_limit: usize,
}

fn var(key: &str) -> Option<(String, String)> {
    let name = crate::option_env("sandbox", key);
    std::env::var(&name).ok().map(|v| (name, v))
}

impl Options {
    pub fn from_env() -> Result<Options, String> {
        let state = std::env::var_os(crate::STATE_DIR_ENV).or_else(|| std::env::var_os("HOME"));
        Options::from_lookup(var, state.map(PathBuf::from))
    }

    /// `lookup(key)` gives (variable name, value) of a set option; `home`
    /// is where workspaces go by default (Berth's state dir for this
    /// server, else `$HOME`).
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<(String, String)>,
        home: Option<PathBuf>,
    ) -> Result<Options, String> {
        let workspace_root = match lookup("workspace_root") {
            Some((name, value)) => {
                let path = PathBuf::from(value.trim());
                if !path.is_absolute() {
                    return Err(format!(
                        "{name} (option workspace_root) must be an absolute path, not {value:?}"
                    ));
                }
                path
            }
            None => match home {
                Some(home) if home.is_absolute() => home.join("workspaces"),
                _ => {
                    return Err(format!(
                        "neither {} nor HOME is set to an absolute path: set {} (option workspace_root) to where workspaces go",
                        crate::STATE_DIR_ENV,
                        crate::option_env("sandbox", "workspace_root")
                    ));
                }
            },
        };
        let keep_workspace = match lookup("keep_workspace") {
            None => false,
            Some((name, value)) => match value.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => true,
                "0" | "false" | "no" | "off" | "" => false,
                _ => {
                    return Err(format!(
                        "{name} (option keep_workspace) must be true or false, not {value:?}"
                    ));
                }
            },
        };
        let duration = |key: &str, default: Duration| -> Result<Duration, String> {
            match lookup(key) {
                None => Ok(default),
                Some((name, value)) => {
                    let d = humantime::parse_duration(value.trim())
                        .map_err(|e| format!("{name} (option {key}) is not a duration like \"30s\" or \"2m\": {value:?} ({e})"))?;
                    if d.is_zero() {
                        return Err(format!("{name} (option {key}) must be more than zero"));
                    }
                    Ok(d)
                }
            }
        };
        let exec_timeout_max = duration("exec_timeout_max", Duration::from_secs(600))?;
        let exec_timeout = duration(
            "exec_timeout",
            Duration::from_secs(30).min(exec_timeout_max),
        )?;
        if exec_timeout > exec_timeout_max {
            return Err(format!(
                "{} (option exec_timeout) is {} but exec_timeout_max is {}: raise exec_timeout_max or lower exec_timeout",
                crate::option_env("sandbox", "exec_timeout"),
                humantime::format_duration(exec_timeout),
                humantime::format_duration(exec_timeout_max)
            ));
        }
        let output_limit = match lookup("output_limit") {
            None => 1 << 20,
            Some((name, value)) => {
                let n = parse_bytes(&value).ok_or_else(|| {
                    format!("{name} (option output_limit) is not a size like \"1MiB\", \"64KiB\" or \"65536\": {value:?}")
                })?;
                if n == 0 || n > OUTPUT_LIMIT_MAX {
                    return Err(format!(
                        "{name} (option output_limit) must be between 1 byte and {} MiB, not {value:?}",
                        OUTPUT_LIMIT_MAX >> 20
                    ));
                }
                n
            }
        };
        Ok(Options {
            workspace_root,
            keep_workspace,
            exec_timeout,
            exec_timeout_max,
            output_limit,
        })
    }
}

/// "65536", "64k", "64KiB", "1M", "1MB", "1MiB" (powers of 1024).
fn parse_bytes(text: &str) -> Option<usize> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: usize = digits.parse().ok()?;
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        _ => return None,
    };
    n.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(vars: &[(&str, &str)]) -> Result<Options, String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Options::from_lookup(
            |key| {
                vars.iter()
                    .find(|(k, _)| k == key)
                    .map(|(k, v)| (crate::option_env("sandbox", k), v.clone()))
            },
            Some(PathBuf::from("/state")),
        )
    }

    #[test]
    fn defaults() {
        let o = opts(&[]).unwrap();
        assert_eq!(o.workspace_root, PathBuf::from("/state/workspaces"));
        assert!(!o.keep_workspace);
        assert_eq!(o.exec_timeout, Duration::from_secs(30));
        assert_eq!(o.exec_timeout_max, Duration::from_secs(600));
        assert_eq!(o.output_limit, 1 << 20);
    }

    #[test]
    fn values_parse() {
        let o = opts(&[
            ("workspace_root", "/srv/ws"),
            ("keep_workspace", "TRUE"),
            ("exec_timeout", "2m"),
            ("output_limit", "64KiB"),
        ])
        .unwrap();
        assert_eq!(o.workspace_root, PathBuf::from("/srv/ws"));
        assert!(o.keep_workspace);
        assert_eq!(o.exec_timeout, Duration::from_secs(120));
        assert_eq!(o.output_limit, 65536);
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (key, value) in [
            ("workspace_root", "relative/dir"),
            ("keep_workspace", "maybe"),
            ("exec_timeout", "soon"),
            ("exec_timeout", "20m"),
            ("output_limit", "lots"),
            ("output_limit", "0"),
        ] {
            let e = opts(&[(key, value)]).unwrap_err();
            let var = crate::option_env("sandbox", key);
            assert!(e.contains(&var), "{key}={value}: {e}");
        }
    }
}
