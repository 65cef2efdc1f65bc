//! Installing an entry's pinned package into a directory of its own.
//!
//! `<packages>/<version>/` holds one installed version: `node_modules/` for
//! npm, `venv/` for PyPI (a virtual environment is not relocatable, so it is
//! made where it stays). A failed install leaves nothing behind. Nothing is
//! fetched again when a session starts: the server runs from this directory.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::entry::{Entry, Kind, Package};

/// An installed package and how to run it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Installed {
    /// The version directory.
    pub dir: PathBuf,
    pub version: String,
    /// The program and arguments that start the server (before the entry's
    /// own package arguments).
    pub command: PathBuf,
    pub args: Vec<String>,
    /// Variables the installed program needs (the egress preload).
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
}

/// Installed beside an npm package whose entry sets `node_proxy`, pinned: they
/// route `http`/`https` requests (node-fetch, got, axios without a proxy of its
/// own) and the built-in `fetch` through `HTTPS_PROXY`, which Node 20 ignores.
pub const NODE_PROXY_PACKAGES: &[&str] = &["global-agent@4.1.6", "undici@6.29.1"];

/// The preload (`node --require`) that does it. It changes nothing when no
/// proxy is set, so the same install runs unsandboxed too.
const NODE_PROXY_PRELOAD: &str = r#"'use strict';
// Written by `berth add`: sends this server's HTTP requests through the egress
// proxy Berth's sandbox gives it in HTTPS_PROXY / HTTP_PROXY.
const proxy = process.env.HTTPS_PROXY || process.env.HTTP_PROXY;
if (proxy) {
  process.env.GLOBAL_AGENT_ENVIRONMENT_VARIABLE_NAMESPACE = '';
  require('global-agent/bootstrap');
  const { setGlobalDispatcher, ProxyAgent } = require('undici');
  setGlobalDispatcher(new ProxyAgent(proxy));
}
"#;

/// Why a package could not be installed, in words that say what to do.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{tool} is needed to install {what} but was not found on PATH: {hint}")]
    MissingTool {
        tool: &'static str,
        what: String,
        hint: &'static str,
    },
    #[error("{registry} has no package {identifier} at version {version}: {detail}")]
    NotFound {
        registry: &'static str,
        identifier: String,
        version: String,
        detail: String,
    },
    #[error("installing {what} failed ({command} exited with {status}):\n{detail}")]
    Failed {
        what: String,
        command: String,
        status: String,
        detail: String,
    },
    #[error("{what} installed, but {problem}")]
    NoProgram { what: String, problem: String },
    #[error("cannot prepare {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    NotInstallable(String),
}

/// Installs `entry`'s pinned package under `packages` (`<packages>/<version>`),
/// replacing a previous install of the same version.
pub fn install(entry: &Entry, packages: &Path) -> Result<Installed, InstallError> {
    let kind = entry.kind().map_err(InstallError::NotInstallable)?;
    let package = entry
        .package()
        .ok_or_else(|| InstallError::NotInstallable("no package to install".into()))?;
    let version = entry.pinned_version().to_string();
    let dir = packages.join(&version);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| InstallError::Io { path, source }
    };
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
    }
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let result = match kind {
        Kind::Npm => install_npm(entry, package, &version, &dir),
        Kind::Pypi => install_pypi(entry, package, &version, &dir),
        Kind::Builtin => Err(InstallError::NotInstallable(
            "a built-in server has nothing to install".into(),
        )),
    };
    match result {
        Ok(installed) => {
            let manifest = dir.join("berth-package.json");
            let text = serde_json::to_string_pretty(&installed).unwrap_or_default();
            std::fs::write(&manifest, text).map_err(io(&manifest))?;
            Ok(installed)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            Err(e)
        }
    }
}

/// The program `name` on `PATH`.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn install_npm(
    entry: &Entry,
    package: &Package,
    version: &str,
    dir: &Path,
) -> Result<Installed, InstallError> {
    let what = format!("npm package {}@{version}", package.identifier);
    let missing = |tool| InstallError::MissingTool {
        tool,
        what: what.clone(),
        hint: "install Node.js 20 or newer with npm (Debian: apt-get install nodejs npm)",
    };
    let node = find_program("node").ok_or_else(|| missing("Node.js (`node`)"))?;
    let npm = find_program("npm").ok_or_else(|| missing("npm"))?;
    let mut command = Command::new(npm);
    command
        .arg("install")
        .arg("--prefix")
        .arg(dir)
        .args([
            "--no-audit",
            "--no-fund",
            "--no-update-notifier",
            "--omit=dev",
            "--loglevel=error",
        ])
        .envs(&entry.hosting.install_env);
    if !entry.hosting.install_scripts {
        command.arg("--ignore-scripts");
    }
    if let Some(registry) = &package.registry_base_url {
        command.arg("--registry").arg(registry);
    }
    command.arg(format!("{}@{version}", package.identifier));
    if entry.hosting.node_proxy {
        command.args(NODE_PROXY_PACKAGES);
    }
    run(command, &what, |stderr| {
        (stderr.contains("E404") || stderr.contains("ETARGET")).then(|| InstallError::NotFound {
            registry: "npm",
            identifier: package.identifier.clone(),
            version: version.to_string(),
            detail: last_lines(stderr, 4),
        })
    })?;
    let bin = npm_bin(entry, package, dir)?;
    let target = std::fs::canonicalize(&bin).map_err(|e| InstallError::NoProgram {
        what: what.clone(),
        problem: format!("its program {} cannot be resolved: {e}", bin.display()),
    })?;
    // Run scripts with node itself: no `#!/usr/bin/env node` lookup at start,
    // the same node the operator installed with.
    let (command, args) = if is_node_script(&target) {
        (node, vec![target.display().to_string()])
    } else {
        (target, Vec::new())
    };
    let mut env = std::collections::BTreeMap::new();
    if entry.hosting.node_proxy {
        // Inside node_modules, which the sandbox's node profile exposes.
        let preload = dir.join("node_modules/.berth/egress-proxy.cjs");
        let written = preload
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&preload, NODE_PROXY_PRELOAD));
        written.map_err(|source| InstallError::Io {
            path: preload.clone(),
            source,
        })?;
        env.insert(
            "NODE_OPTIONS".to_string(),
            format!("--require {}", preload.display()),
        );
    }
    Ok(Installed {
        dir: dir.to_path_buf(),
        version: version.to_string(),
        command,
        args,
        env,
    })
}

/// `node_modules/.bin/<bin>`: the entry's `bin`, else the package's only one.
fn npm_bin(entry: &Entry, package: &Package, dir: &Path) -> Result<PathBuf, InstallError> {
    let bins = dir.join("node_modules/.bin");
    let what = format!("npm package {}", package.identifier);
    let name = match &entry.hosting.bin {
        Some(bin) => bin.clone(),
        None => {
            let manifest = dir
                .join("node_modules")
                .join(&package.identifier)
                .join("package.json");
            let text = std::fs::read_to_string(&manifest).map_err(|e| InstallError::NoProgram {
                what: what.clone(),
                problem: format!("{} is unreadable: {e}", manifest.display()),
            })?;
            let json: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| InstallError::NoProgram {
                    what: what.clone(),
                    problem: format!("{} is not JSON: {e}", manifest.display()),
                })?;
            match json.get("bin") {
                Some(serde_json::Value::String(_)) => package
                    .identifier
                    .rsplit('/')
                    .next()
                    .unwrap_or(&package.identifier)
                    .to_string(),
                Some(serde_json::Value::Object(map)) if map.len() == 1 => {
                    map.keys().next().cloned().unwrap_or_default()
                }
                Some(serde_json::Value::Object(map)) => {
                    return Err(InstallError::NoProgram {
                        what,
                        problem: format!(
                            "it has several programs ({}): the entry must name one in its hosting `bin`",
                            map.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    });
                }
                _ => {
                    return Err(InstallError::NoProgram {
                        what,
                        problem: "its package.json declares no `bin` program".into(),
                    });
                }
            }
        }
    };
    let path = bins.join(&name);
    if path.exists() {
        Ok(path)
    } else {
        Err(InstallError::NoProgram {
            what,
            problem: format!("it has no program `{name}` in {}", bins.display()),
        })
    }
}

fn is_node_script(path: &Path) -> bool {
    if matches!(
        path.extension().and_then(OsStr::to_str),
        Some("js" | "mjs" | "cjs")
    ) {
        return true;
    }
    let mut head = [0u8; 128];
    let n = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .unwrap_or(0);
    let first = head[..n].split(|&b| b == b'\n').next().unwrap_or(&[]);
    first.starts_with(b"#!") && first.windows(4).any(|w| w == b"node")
}

fn install_pypi(
    entry: &Entry,
    package: &Package,
    version: &str,
    dir: &Path,
) -> Result<Installed, InstallError> {
    let what = format!("PyPI package {}=={version}", package.identifier);
    let python = find_program("python3").ok_or_else(|| InstallError::MissingTool {
        tool: "Python 3 (`python3`)",
        what: what.clone(),
        hint: "install Python 3.10 or newer with venv (Debian: apt-get install python3 python3-venv)",
    })?;
    let venv = dir.join("venv");
    let mut make_venv = Command::new(&python);
    make_venv.arg("-m").arg("venv").arg(&venv);
    run(make_venv, &what, |stderr| {
        (stderr.contains("ensurepip") || stderr.contains("No module named venv")).then(|| {
            InstallError::MissingTool {
                tool: "Python's venv module",
                what: what.clone(),
                hint: "install it (Debian: apt-get install python3-venv)",
            }
        })
    })?;
    let mut pip = Command::new(venv.join("bin/pip"));
    pip.args([
        "install",
        "--disable-pip-version-check",
        "--no-input",
        "--quiet",
    ])
    .envs(&entry.hosting.install_env)
    .arg(format!("{}=={version}", package.identifier));
    if let Some(index) = &package.registry_base_url
        && !index.contains("pypi.org")
    {
        pip.arg("--index-url").arg(index);
    }
    run(pip, &what, |stderr| {
        (stderr.contains("No matching distribution") || stderr.contains("Could not find a version"))
            .then(|| InstallError::NotFound {
                registry: "PyPI",
                identifier: package.identifier.clone(),
                version: version.to_string(),
                detail: last_lines(stderr, 3),
            })
    })?;
    let bin = entry
        .hosting
        .bin
        .clone()
        .unwrap_or_else(|| package.identifier.clone());
    let program = venv.join("bin").join(&bin);
    if !is_executable(&program) {
        return Err(InstallError::NoProgram {
            what,
            problem: format!(
                "it has no program `{bin}` in {} (the entry's hosting `bin` names it)",
                venv.join("bin").display()
            ),
        });
    }
    Ok(Installed {
        dir: dir.to_path_buf(),
        version: version.to_string(),
        command: program,
        args: Vec::new(),
        env: Default::default(),
    })
}

/// Runs an installer step; `classify` turns a failure's stderr into a
/// precise error where it can.
fn run(
    mut command: Command,
    what: &str,
    classify: impl Fn(&str) -> Option<InstallError>,
) -> Result<(), InstallError> {
    let shown = format!(
        "{} {}",
        command.get_program().to_string_lossy(),
        command
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| InstallError::Failed {
            what: what.to_string(),
            command: shown.clone(),
            status: "no status".into(),
            detail: format!("cannot run it: {e}"),
        })?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let text = format!("{stdout}{stderr}");
    Err(classify(&text).unwrap_or_else(|| InstallError::Failed {
        what: what.to_string(),
        command: shown,
        status: output.status.to_string(),
        detail: last_lines(&text, 12),
    }))
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
