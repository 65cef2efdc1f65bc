//! `roots` of `[servers.NAME]`: whose filesystem roots a server gets.
//!
//! MCP roots tell a server which directories it works in, and servers such
//! as `@modelcontextprotocol/server-filesystem` let them replace the
//! directories they may touch. So roots are a grant of access, and the rule
//! is: **roots are never the client's unless the operator says
//! `roots = "client"`**.
//!
//! - unset: the server gets no roots from anyone (its own arguments decide);
//! - `roots = ["/srv/data", "file:///srv/more"]`: Berth declares these to the
//!   server and answers its `roots/list` with them, whatever the client says;
//! - `roots = "client"`: the client's roots pass through (its `initialize` goes
//!   to its own process). Only for a pool that does not pre-initialize:
//!   Berth's own `initialize` has no client to ask.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// The `roots` key as written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RootsConfig {
    /// No roots for the server.
    #[default]
    Unset,
    /// `"client"`: the client's own roots.
    Client,
    /// Absolute host paths or `file://` URIs.
    Fixed(Vec<String>),
}

impl<'de> Deserialize<'de> for RootsConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Roots;
        const EXPECTED: &str =
            "\"client\" or a list of absolute directories (\"/srv/data\") or file:// URIs";
        impl<'de> Visitor<'de> for Roots {
            type Value = RootsConfig;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(EXPECTED)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RootsConfig, E> {
                if s == "client" {
                    Ok(RootsConfig::Client)
                } else {
                    Err(E::custom(format!(
                        "roots = {s:?}: expected {EXPECTED} (a single directory is written [{s:?}])"
                    )))
                }
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RootsConfig, A::Error> {
                let mut roots = Vec::new();
                while let Some(root) = seq.next_element::<String>()? {
                    roots.push(root);
                }
                Ok(RootsConfig::Fixed(roots))
            }
        }
        d.deserialize_any(Roots)
    }
}

impl RootsConfig {
    /// Checks the setting of server `name`; returns the error to refuse the
    /// config with. A root that is not an existing directory is only warned
    /// about: it may be mounted later, and the server decides what to do
    /// with a root it cannot open.
    pub fn validate(&self, name: &str, preinitialize: bool, shared: bool) -> Result<(), String> {
        match self {
            RootsConfig::Unset => Ok(()),
            RootsConfig::Client if preinitialize || shared => Err(format!(
                "servers.{name}.roots = \"client\" needs a pool that does not pre-initialize: {} initializes its processes itself, before any client, so there is no client to take roots from (and a session would get roots or not depending on whether it found a ready process). Set [servers.{name}.pool] preinitialize = false{}, or give the server fixed roots: roots = [\"/dir\", ...]",
                if shared {
                    "binding = \"shared\""
                } else {
                    "pool.preinitialize = true"
                },
                if shared {
                    " and binding = \"exclusive\""
                } else {
                    ""
                },
            )),
            RootsConfig::Client => Ok(()),
            RootsConfig::Fixed(roots) => {
                for root in roots {
                    let path = host_path(root)
                        .map_err(|why| format!("servers.{name}.roots: {root:?} {why}"))?;
                    if !path.is_dir() {
                        warn(&format!(
                            "servers.{name}.roots: {} is not an existing directory (yet); the server is told about it anyway",
                            path.display()
                        ));
                    }
                }
                Ok(())
            }
        }
    }

    /// The fleet's form: roots as `file://` URIs.
    pub fn to_fleet(&self) -> berth_fleet::Roots {
        match self {
            RootsConfig::Unset => berth_fleet::Roots::None,
            RootsConfig::Client => berth_fleet::Roots::Client,
            RootsConfig::Fixed(roots) => {
                let uris: Vec<String> = roots
                    .iter()
                    // Validated at load; a path that is not one is left out.
                    .filter_map(|root| host_path(root).ok())
                    .map(|path| file_uri(&path))
                    .collect();
                berth_fleet::Roots::Fixed(Arc::from(uris))
            }
        }
    }
}

/// The host path a root names: an absolute path, or a `file://` URI of one.
fn host_path(root: &str) -> Result<PathBuf, String> {
    let path = if let Some(rest) = root.strip_prefix("file://") {
        let rest = rest.strip_prefix("localhost").unwrap_or(rest);
        if !rest.starts_with('/') {
            return Err("is not a local file:// URI: write file:///absolute/path".into());
        }
        PathBuf::from(percent_decode(rest).ok_or("has a bad %-escape")?)
    } else if root.contains("://") {
        return Err("is not a file:// URI: roots are directories on this host".into());
    } else {
        PathBuf::from(root)
    };
    if !path.is_absolute() {
        return Err("is not an absolute path: roots are named from / (\"/srv/data\")".into());
    }
    if path
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        return Err("contains \"..\": name the directory itself".into());
    }
    Ok(path)
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `file://` URI of an absolute path (RFC 8089), %-escaping what a path
/// segment may not hold as is.
fn file_uri(path: &Path) -> String {
    let mut uri = String::from("file://");
    for byte in path.to_string_lossy().bytes() {
        let plain = byte.is_ascii_alphanumeric() || b"/-._~!$&'()*+,;=:@".contains(&byte);
        if plain {
            uri.push(byte as char);
        } else {
            uri.push_str(&format!("%{byte:02X}"));
        }
    }
    uri
}

/// A warning at config load: to the log when Berth logs (serve, reload),
/// else to stderr (`berth check`).
fn warn(message: &str) {
    if tracing::dispatcher::has_been_set() {
        tracing::warn!("{message}");
    } else {
        eprintln!("warning: {message}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Server {
        #[serde(default)]
        roots: RootsConfig,
    }

    fn parse(text: &str) -> Result<RootsConfig, String> {
        toml::from_str::<Server>(text)
            .map(|s| s.roots)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn reads_client_a_list_or_nothing() {
        assert_eq!(parse("").unwrap(), RootsConfig::Unset);
        assert_eq!(parse("roots = \"client\"").unwrap(), RootsConfig::Client);
        assert_eq!(
            parse("roots = [\"/srv/data\", \"file:///srv/a%20b\"]").unwrap(),
            RootsConfig::Fixed(vec!["/srv/data".into(), "file:///srv/a%20b".into()])
        );
        let err = parse("roots = \"/srv/data\"").unwrap_err();
        assert!(
            err.contains("a single directory is written [\"/srv/data\"]"),
            "{err}"
        );
        let err = parse("roots = 3").unwrap_err();
        assert!(err.contains("\"client\" or a list"), "{err}");
    }

    #[test]
    fn client_roots_need_a_pool_berth_does_not_initialize() {
        assert!(RootsConfig::Client.validate("fs", false, false).is_ok());
        let err = RootsConfig::Client.validate("fs", true, false).unwrap_err();
        assert!(err.contains("servers.fs.roots = \"client\""), "{err}");
        assert!(err.contains("preinitialize = false"), "{err}");
        let err = RootsConfig::Client.validate("fs", false, true).unwrap_err();
        assert!(err.contains("binding = \"exclusive\""), "{err}");
    }

    #[test]
    fn roots_are_absolute_local_directories() {
        for bad in [
            "srv/data",
            "https://example.com/x",
            "file://host/x",
            "/srv/../etc",
            "file:///a%zz",
        ] {
            let roots = RootsConfig::Fixed(vec![bad.into()]);
            let err = roots.validate("fs", true, false).unwrap_err();
            assert!(
                err.starts_with(&format!("servers.fs.roots: {bad:?}")),
                "{err}"
            );
        }
        // A missing directory is a warning, not an error.
        let roots = RootsConfig::Fixed(vec!["/nonexistent/berth-roots".into(), "/tmp".into()]);
        assert!(roots.validate("fs", true, false).is_ok());
    }

    #[test]
    fn roots_reach_the_fleet_as_file_uris() {
        let roots = RootsConfig::Fixed(vec![
            "/srv/data dir".into(),
            "file:///srv/a%20b".into(),
            "file://localhost/srv/c".into(),
        ]);
        let berth_fleet::Roots::Fixed(uris) = roots.to_fleet() else {
            panic!("not fixed");
        };
        assert_eq!(
            &*uris,
            [
                "file:///srv/data%20dir",
                "file:///srv/a%20b",
                "file:///srv/c"
            ]
        );
        assert_eq!(RootsConfig::Unset.to_fleet(), berth_fleet::Roots::None);
        assert_eq!(RootsConfig::Client.to_fleet(), berth_fleet::Roots::Client);
    }
}
