//! `[servers.NAME.sandbox]`: the configuration of each server's sandbox,
//! and turning it into the fleet's [`berth_sandbox::Settings`].

use std::fmt;
use std::path::{Path, PathBuf};

use berth_sandbox::{Limits, Network, Profile, Settings};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

/// `sandbox = false`, `sandbox = true`, or a table; absent means on.
#[derive(Debug, Clone, PartialEq)]
pub enum SandboxConfig {
    On(SandboxTable),
    Off,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig::On(SandboxTable::default())
    }
}

impl<'de> Deserialize<'de> for SandboxConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Either;
        impl<'de> Visitor<'de> for Either {
            type Value = SandboxConfig;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`false` (no sandbox), `true`, or a [servers.NAME.sandbox] table")
            }
            fn visit_bool<E: de::Error>(self, on: bool) -> Result<SandboxConfig, E> {
                Ok(if on {
                    SandboxConfig::default()
                } else {
                    SandboxConfig::Off
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<SandboxConfig, A::Error> {
                SandboxTable::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(SandboxConfig::On)
            }
        }
        d.deserialize_any(Either)
    }
}

/// What can be reached over the network.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    None,
    Host,
    #[default]
    Allow,
}

/// The `[servers.NAME.sandbox]` table.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxTable {
    /// `auto` (default), `node`, `python` or `static`.
    pub profile: Profile,
    /// `allow` (default: egress only through Berth's proxy to `allow`),
    /// `none` (loopback only) or `host` (the host's network).
    pub network: NetworkMode,
    /// `host:port` patterns the proxy admits: `api.github.com:443`,
    /// `*.slack.com:443`, `example.com:*`.
    pub allow: Vec<String>,
    /// Extra host paths visible read-only.
    pub readable: Vec<PathBuf>,
    /// Extra host paths visible read-write.
    pub writable: Vec<PathBuf>,
    /// Memory limit, e.g. "512MiB" (default 1GiB).
    pub memory: Option<ByteSize>,
    /// Processes and threads at most (default 256).
    pub pids: Option<u64>,
    /// CPU time, in CPUs (default 1.0).
    pub cpus: Option<f64>,
    /// Size of the private /tmp (default 64MiB).
    pub tmp_size: Option<ByteSize>,
}

impl SandboxTable {
    /// Checks what the types cannot; `key` is `servers.NAME.sandbox`.
    pub fn validate(&self, key: &str) -> Result<(), String> {
        if self.network != NetworkMode::Allow && !self.allow.is_empty() {
            return Err(format!(
                "{key}.allow needs network = \"allow\" (it is {:?})",
                self.network
            ));
        }
        berth_sandbox::egress::AllowList::parse(&self.allow)
            .map_err(|e| format!("{key}.allow: {e}"))?;
        if let Some(ByteSize(m)) = self.memory
            && m < 16 << 20
        {
            return Err(format!("{key}.memory must be at least 16MiB"));
        }
        if self.pids.is_some_and(|p| p < 8) {
            return Err(format!("{key}.pids must be at least 8"));
        }
        if self.cpus.is_some_and(|c| !(c >= 0.01 && c.is_finite())) {
            return Err(format!(
                "{key}.cpus must be a positive number of CPUs, e.g. 0.5"
            ));
        }
        for path in self.readable.iter().chain(&self.writable) {
            if !path.is_absolute() {
                return Err(format!(
                    "{key}: {} must be an absolute path",
                    path.display()
                ));
            }
        }
        Ok(())
    }

    /// The settings for server `name` of a gateway keeping its data in
    /// `data_dir` (hidden from every server, like the config file).
    pub fn settings(&self, name: &str, data_dir: &Path, config_file: Option<&Path>) -> Settings {
        let mut s = Settings::new(state_dir(data_dir, name));
        let defaults = Limits::default();
        s.profile = self.profile;
        s.readable = self.readable.clone();
        s.writable = self.writable.clone();
        s.network = match self.network {
            NetworkMode::None => Network::None,
            NetworkMode::Host => Network::Host,
            NetworkMode::Allow => Network::Allow(self.allow.clone()),
        };
        s.limits = Limits {
            memory_bytes: self.memory.map_or(defaults.memory_bytes, |b| b.0),
            pids: self.pids.unwrap_or(defaults.pids),
            cpus: self.cpus.unwrap_or(defaults.cpus),
        };
        if let Some(ByteSize(t)) = self.tmp_size {
            s.tmp_size = t;
        }
        let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        s.hidden = std::iter::once(absolute(data_dir))
            .chain(config_file.map(absolute))
            .collect();
        // What `berth add` installed for this server (and only for it).
        s.exposed = vec![absolute(data_dir).join("packages").join(name)];
        s
    }
}

/// Where server `name` keeps what it writes, on the host.
pub fn state_dir(data_dir: &Path, name: &str) -> PathBuf {
    let dir = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    dir.join("state").join(name)
}

/// A size: a number of bytes, or a string like "512MiB", "1GiB", "64M".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Size;
        impl<'de> Visitor<'de> for Size {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as \"512MiB\" or \"1GiB\", or a number of bytes")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(n))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<ByteSize, E> {
                u64::try_from(n)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<ByteSize, E> {
                parse_size(s).map(ByteSize).ok_or_else(|| {
                    E::custom(format!(
                        "invalid size {s:?}; write it like \"512MiB\", \"1GiB\" or \"64M\""
                    ))
                })
            }
        }
        d.deserialize_any(Size)
    }
}

fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number.parse().ok()?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(factor)
}

/// Warnings about servers without a sandbox, and about `writable` paths a
/// sandboxed server could not write anyway.
pub fn warnings(specs: &[berth_fleet::ServerSpec]) -> Vec<String> {
    let mut out = Vec::new();
    // Remote servers and endpoints run nothing here: nothing to isolate.
    for spec in specs
        .iter()
        .filter(|s| s.remote.is_none() && s.federation.is_none())
    {
        let name = &spec.name;
        match &spec.sandbox {
            None => {
                out.push(format!(
                    "server `{name}` runs without a sandbox (sandbox = false): it has Berth's own user, files, network and environment"
                ));
                let state = berth_sandbox::STATE_DIR;
                let names_state = |v: &String| v == state || v.starts_with(&format!("{state}/"));
                if spec.args.iter().chain(spec.env.values()).any(names_state) {
                    out.push(format!(
                        "server `{name}` names {state} (its state dir inside a sandbox) but runs without one: there, that path is the host's; use the host path of its state dir instead"
                    ));
                }
            }
            Some(settings) => {
                out.extend(
                    berth_sandbox::unwritable(settings)
                        .into_iter()
                        .map(|w| format!("server `{name}`: {w}")),
                );
                out.extend(
                    hidden_roots(spec, settings)
                        .into_iter()
                        .map(|root| format!(
                            "server `{name}`: root {root} is given to the server but is not visible in its sandbox; add it to [servers.{name}.sandbox] writable (or readable)"
                        )),
                );
            }
        }
    }
    out
}

/// Fixed roots the server's sandbox does not show it: outside its state
/// dir, its `readable`/`writable` paths and the paths its arguments name.
fn hidden_roots(spec: &berth_fleet::ServerSpec, settings: &Settings) -> Vec<String> {
    let berth_fleet::Roots::Fixed(uris) = &spec.roots else {
        return Vec::new();
    };
    let state = Path::new(berth_sandbox::STATE_DIR);
    uris.iter()
        .filter_map(|uri| {
            let path = Path::new(uri.strip_prefix("file://")?);
            let visible = path.starts_with(state)
                || settings
                    .readable
                    .iter()
                    .chain(&settings.writable)
                    .any(|p| path.starts_with(p))
                || spec.args.iter().any(|a| path.starts_with(a));
            (!visible).then(|| path.display().to_string())
        })
        .collect()
}

/// At start: what this machine offers, and the warnings above.
pub fn log_capabilities(specs: &[berth_fleet::ServerSpec]) {
    let caps = berth_sandbox::capabilities();
    for (ok, line) in caps.lines() {
        if ok {
            tracing::info!("sandbox: {line}");
        } else {
            tracing::warn!("sandbox: {line}");
        }
    }
    for warning in warnings(specs) {
        tracing::warn!("{warning}");
    }
}

/// `berth sandbox show NAME`.
pub fn show(specs: &[berth_fleet::ServerSpec], server: &str) -> anyhow::Result<()> {
    let Some(spec) = specs.iter().find(|s| s.name == server) else {
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        anyhow::bail!(
            "no server `{server}` in the configuration (servers: {})",
            names.join(", ")
        );
    };
    let Some(settings) = &spec.sandbox else {
        println!(
            "server: {server}\nsandbox: OFF (sandbox = false): the server runs as Berth's own user with Berth's view of the machine"
        );
        return Ok(());
    };
    let env: Vec<(String, String)> = spec
        .env_passthrough
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.clone(), v)))
        .chain(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())))
        .collect();
    let launch = berth_sandbox::Launch {
        server,
        command: &spec.command,
        args: &spec.args,
        env: &env,
        cwd: spec.cwd.as_deref(),
    };
    print!("{}", berth_sandbox::describe(settings, &launch));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Holder {
        #[serde(default)]
        sandbox: SandboxConfig,
    }

    fn parse(text: &str) -> Result<SandboxConfig, String> {
        toml::from_str::<Holder>(text)
            .map(|h| h.sandbox)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn sandbox_is_on_unless_turned_off() {
        assert_eq!(parse("").unwrap(), SandboxConfig::default());
        assert_eq!(parse("sandbox = false").unwrap(), SandboxConfig::Off);
        assert_eq!(parse("sandbox = true").unwrap(), SandboxConfig::default());
        let SandboxConfig::On(t) = parse(
            "[sandbox]\nnetwork = \"allow\"\nallow = [\"api.github.com:443\"]\nmemory = \"512MiB\"\npids = 64\ncpus = 0.5\nprofile = \"node\"",
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(t.memory, Some(ByteSize(512 << 20)));
        assert_eq!(t.profile, Profile::Node);
        t.validate("servers.x.sandbox").unwrap();
    }

    #[test]
    fn bad_sandbox_settings_are_named() {
        let unknown = parse("[sandbox]\nnetwrok = \"none\"").unwrap_err();
        assert!(unknown.contains("netwrok"), "{unknown}");
        let size = parse("[sandbox]\nmemory = \"lots\"").unwrap_err();
        assert!(size.contains("512MiB"), "{size}");
        let SandboxConfig::On(t) =
            parse("[sandbox]\nnetwork = \"none\"\nallow = [\"a.com:443\"]").unwrap()
        else {
            panic!()
        };
        assert!(t.validate("k").unwrap_err().contains("network = \"allow\""));
        let SandboxConfig::On(t) = parse("[sandbox]\nallow = [\"a.com\"]").unwrap() else {
            panic!()
        };
        assert!(t.validate("k").unwrap_err().contains("a.com"));
    }

    #[test]
    fn fixed_roots_the_sandbox_hides_are_named() {
        let mut spec = berth_fleet::ServerSpec::new("files", "node");
        spec.args = vec!["/srv/shared".into()];
        spec.roots = berth_fleet::Roots::Fixed(
            [
                "file:///state/files",
                "file:///srv/shared/docs",
                "file:///opt/data",
                "file:///var/www",
            ]
            .map(String::from)
            .into(),
        );
        let mut settings = Settings::new(PathBuf::from("/tmp/state/files"));
        settings.writable = vec![PathBuf::from("/var/www")];
        spec.sandbox = Some(settings);
        let warnings = warnings(&[spec]);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("root /opt/data is given to the server but is not visible"),
            "{warnings:?}"
        );
    }

    #[test]
    fn an_unsandboxed_server_naming_state_is_warned_about() {
        let mut spec = berth_fleet::ServerSpec::new("memory", "node");
        spec.env
            .insert("MEMORY_FILE_PATH".into(), "/state/memory.jsonl".into());
        let warnings = warnings(&[spec]);
        assert!(
            warnings.iter().any(|w| w.contains("names /state")),
            "{warnings:?}"
        );
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("64M"), Some(64 << 20));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("1.5G"), None);
    }
}
