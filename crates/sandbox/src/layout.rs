//! What a sandboxed server can see: the system's runtime files, the paths
//! its command, arguments and environment name (widened to their install
//! directory by the runtime profile), its state dir, and nothing else.

use std::ffi::OsStr;
use std::path::{Component, Path, PathBuf};

use crate::policy::{INSIDE_ID, Mount, PlanNetwork, Profile, STATE_DIR, Settings};

/// One command to be started, as the fleet describes it.
#[derive(Debug, Clone, Copy)]
pub struct Launch<'a> {
    pub server: &'a str,
    pub command: &'a str,
    pub args: &'a [String],
    /// The child's environment, complete.
    pub env: &'a [(String, String)],
    pub cwd: Option<&'a Path>,
}

/// The root a server gets, and how it was decided.
#[derive(Debug, Clone)]
pub struct Layout {
    pub profile: Profile,
    pub program: PathBuf,
    pub mounts: Vec<Mount>,
    pub cwd: PathBuf,
    /// Paths left out on purpose, and why (shown by `berth sandbox show`).
    pub notes: Vec<String>,
}

/// The system directories every runtime needs, read-only.
const SYSTEM: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
];

/// Files in `/etc` that runtimes read: TLS roots, the loader's cache, name
/// service and time zone settings. Nothing with credentials.
const ETC: &[&str] = &[
    "/etc/ssl/certs",
    "/etc/ssl/openssl.cnf",
    "/etc/ca-certificates",
    "/etc/ca-certificates.conf",
    "/etc/pki",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/nsswitch.conf",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/alternatives",
    "/etc/mime.types",
    "/etc/os-release",
    "/etc/protocols",
    "/etc/services",
    "/etc/gai.conf",
    "/etc/host.conf",
];

/// System files up to this size are copied into the root rather than bound.
const COPY_AT_MOST: u64 = 128 << 10;

/// Variables whose paths are about Berth's session, not the server.
const IGNORED_ENV: &[&str] = &[
    "PATH", "HOME", "TMPDIR", "PWD", "OLDPWD", "SHELL", "USER", "LOGNAME",
];

/// Devices bound from the host.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Decides the sandbox's root for `launch` under `settings`.
pub fn layout(
    settings: &Settings,
    launch: &Launch<'_>,
    network: PlanNetwork,
) -> Result<Layout, String> {
    let base = match launch.cwd {
        Some(dir) => absolute(dir),
        None => std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
    };
    let path_var = launch
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var("PATH").ok())
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let program = resolve_program(launch.command, &path_var, &base)?;
    let profile = match settings.profile {
        Profile::Auto => detect_profile(&program),
        chosen => chosen,
    };

    // Install dirs are recognised by their shape (node_modules, pyvenv.cfg,
    // ...) whatever the detected runtime; only an explicit `static` turns
    // that off.
    let mut binds = Binds::new(settings, settings.profile != Profile::Static);
    for dir in SYSTEM {
        binds.system(Path::new(dir));
    }
    for file in ETC {
        binds.system(Path::new(file));
    }
    if network == PlanNetwork::Host {
        binds.system(Path::new("/etc/resolv.conf"));
        binds.system(Path::new("/etc/hosts"));
    }

    // The program, the interpreter of a script, and every named path.
    binds.named(&program);
    if let Some(interpreter) = shebang(&program)
        && let Ok(found) = resolve_program(&interpreter, &path_var, &base)
    {
        binds.named(&found);
    }
    let mut relative = false;
    for arg in launch.args {
        if let Some((path, was_relative)) = path_in(arg, &base) {
            let visible = binds.named(&path);
            relative |= was_relative && visible;
        }
    }
    for (key, value) in launch.env {
        // PATH-like lists would expose whole toolchains: only single paths
        // count; and what is Berth's own environment passed through
        // (HOME=/root, ...) names nothing the server was configured with.
        let inherited = std::env::var(key).is_ok_and(|own| own == *value);
        if IGNORED_ENV.contains(&key.as_str()) || inherited || value.contains(':') {
            continue;
        }
        if let Some((path, false)) = path_in(value, &base) {
            binds.named(&path);
        }
    }
    if let Some(dir) = launch.cwd {
        binds.named(&base.join(dir));
    }
    for path in &settings.readable {
        binds.add(&absolute(path), false, true);
    }
    for path in &settings.writable {
        binds.add(&absolute(path), true, true);
    }

    let cwd = if launch.cwd.is_some() || relative {
        base.clone()
    } else {
        PathBuf::from(STATE_DIR)
    };
    let hostname = launch.server.to_string();
    let mut mounts = skeleton(settings, network, &hostname);
    let notes = std::mem::take(&mut binds.notes);
    mounts.extend(binds.finish());
    mounts.push(Mount::Bind {
        src: settings.state_dir.clone(),
        dst: PathBuf::from(STATE_DIR),
        writable: true,
    });
    if !mounts.iter().any(|m| mount_covers(m, &cwd)) {
        mounts.push(Mount::Dir { dst: cwd.clone() });
    }
    Ok(Layout {
        profile,
        program,
        mounts,
        cwd,
        notes,
    })
}

/// `/dev`, `/proc`, `/tmp` and the generated files of `/etc`.
fn skeleton(settings: &Settings, network: PlanNetwork, hostname: &str) -> Vec<Mount> {
    let mut mounts = vec![Mount::Tmpfs {
        dst: "/dev".into(),
        size: 64 << 10,
        mode: 0o755,
    }];
    mounts.extend(DEVICES.iter().map(|name| Mount::Device {
        name: name.to_string(),
    }));
    for (link, target) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        mounts.push(Mount::Symlink {
            dst: link.into(),
            target: target.into(),
        });
    }
    mounts.push(Mount::Tmpfs {
        dst: "/dev/shm".into(),
        size: settings.tmp_size,
        mode: 0o1777,
    });
    mounts.push(Mount::Proc);
    mounts.push(Mount::Tmpfs {
        dst: "/tmp".into(),
        size: settings.tmp_size,
        mode: 0o1777,
    });
    let id = INSIDE_ID;
    mounts.push(Mount::File {
        dst: "/etc/passwd".into(),
        contents: format!(
            "root:x:0:0:root:/root:/usr/sbin/nologin\n\
             mcp:x:{id}:{id}:MCP server:{STATE_DIR}:/usr/sbin/nologin\n\
             nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        ),
    });
    mounts.push(Mount::File {
        dst: "/etc/group".into(),
        contents: format!("root:x:0:\nmcp:x:{id}:\nnogroup:x:65534:\n"),
    });
    mounts.push(Mount::File {
        dst: "/etc/hostname".into(),
        contents: format!("{hostname}\n"),
    });
    if network != PlanNetwork::Host {
        mounts.push(Mount::File {
            dst: "/etc/hosts".into(),
            contents: format!("127.0.0.1 localhost {hostname}\n::1 localhost\n"),
        });
    }
    mounts
}

/// The binds being collected, kept minimal: a path under one already bound
/// (at least as writable) adds nothing.
struct Binds<'s> {
    settings: &'s Settings,
    widen: bool,
    list: Vec<(PathBuf, bool)>,
    links: Vec<(PathBuf, PathBuf)>,
    copies: Vec<PathBuf>,
    notes: Vec<String>,
}

impl<'s> Binds<'s> {
    fn new(settings: &'s Settings, widen: bool) -> Self {
        Binds {
            settings,
            widen,
            list: Vec::new(),
            links: Vec::new(),
            copies: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// A system path: a symlink stays a symlink (`/bin -> usr/bin`), a
    /// small file is copied, a directory or a large file is bound read-only.
    fn system(&mut self, path: &Path) {
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                if let Ok(target) = std::fs::read_link(path) {
                    self.links.push((path.to_path_buf(), target));
                }
            }
            Ok(meta) if meta.is_file() && meta.len() <= COPY_AT_MOST => {
                self.copies.push(path.to_path_buf());
            }
            Ok(_) => self.list.push((path.to_path_buf(), false)),
            Err(_) => {}
        }
    }

    /// A path the configuration names, widened to its install directory.
    /// Returns whether it is visible.
    fn named(&mut self, path: &Path) -> bool {
        if std::fs::symlink_metadata(path).is_err() {
            return false;
        }
        let mut visible = false;
        for path in [path.to_path_buf(), canonical(path)] {
            let widened = if self.widen {
                install_dirs(&path)
            } else {
                vec![path.clone()]
            };
            for dir in widened {
                visible |= self.add(&dir, false, false);
            }
        }
        visible
    }

    /// Binds `path`; refuses `/` and anything inside a hidden path.
    fn add(&mut self, path: &Path, writable: bool, explicit: bool) -> bool {
        if path == Path::new("/") {
            self.notes
                .push("not exposed: / (name a narrower path in sandbox.readable)".into());
            return false;
        }
        let exposed = || self.settings.exposed.iter().any(|e| path.starts_with(e));
        if let Some(hidden) = self.settings.hidden.iter().find(|h| path.starts_with(h))
            && (writable || !exposed())
        {
            self.notes.push(format!(
                "not exposed: {} (inside {}, which stays hidden from every server)",
                path.display(),
                hidden.display()
            ));
            return false;
        }
        if std::fs::symlink_metadata(path).is_err() {
            if explicit {
                self.notes.push(format!(
                    "not exposed: {} (it does not exist)",
                    path.display()
                ));
            }
            return false;
        }
        self.list.push((path.to_path_buf(), writable));
        true
    }

    fn finish(self) -> Vec<Mount> {
        let mut list = self.list;
        list.sort();
        list.dedup();
        let mut kept: Vec<(PathBuf, bool)> = Vec::new();
        // A bound parent does not cover what lies in a hidden path: the
        // hide goes over it, and an exposed path needs its own bind.
        let hidden_under = |dir: &Path, path: &Path| {
            self.settings
                .hidden
                .iter()
                .any(|h| path.starts_with(h) && !dir.starts_with(h))
        };
        for (path, writable) in list {
            let covered = kept.iter().any(|(dir, w)| {
                path.starts_with(dir) && (*w || !writable) && !hidden_under(dir, &path)
            });
            // A symlinked system dir (`/lib -> usr/lib`) covers its name too.
            let linked = self.links.iter().any(|(link, _)| path.starts_with(link));
            if !covered && !linked {
                kept.push((path, writable));
            }
        }
        let mut mounts: Vec<Mount> = self
            .links
            .into_iter()
            .map(|(dst, target)| Mount::Symlink { dst, target })
            .collect();
        mounts.extend(self.copies.into_iter().map(|path| Mount::Copy {
            src: path.clone(),
            dst: path,
        }));
        // Binds inside a hidden path (an exposed package) come after the
        // mount that hides it, or it would cover them.
        let inside_hidden = |path: &Path| self.settings.hidden.iter().any(|h| path.starts_with(h));
        let bind = |(path, writable): &(PathBuf, bool)| Mount::Bind {
            src: path.clone(),
            dst: path.clone(),
            writable: *writable,
        };
        mounts.extend(kept.iter().filter(|(p, _)| !inside_hidden(p)).map(bind));
        for hidden in &self.settings.hidden {
            if kept.iter().any(|(dir, _)| hidden.starts_with(dir))
                && let Ok(meta) = std::fs::metadata(hidden)
            {
                mounts.push(Mount::Hide {
                    dst: hidden.clone(),
                    directory: meta.is_dir(),
                });
            }
        }
        mounts.extend(kept.iter().filter(|(p, _)| inside_hidden(p)).map(bind));
        mounts
    }
}

/// Whether `mount` makes `path` exist inside the sandbox.
fn mount_covers(mount: &Mount, path: &Path) -> bool {
    match mount {
        Mount::Bind { dst, .. } | Mount::Tmpfs { dst, .. } => path.starts_with(dst),
        Mount::Dir { dst } => path == dst,
        _ => false,
    }
}

/// The directory a runtime needs around `path`: the outermost
/// `node_modules`, a virtual environment and its base interpreter, pyenv's
/// root, an interpreter's prefix; otherwise `path` itself.
fn install_dirs(path: &Path) -> Vec<PathBuf> {
    // Node: a package resolves its dependencies up to the outermost node_modules.
    if let Some(modules) = outermost(path, "node_modules") {
        return vec![modules];
    }
    // pyenv: a shim runs `pyenv exec`, which needs pyenv's whole root.
    if let Some(root) = outermost(path, ".pyenv") {
        return vec![root];
    }
    // A virtual environment: the venv and the prefix of its base interpreter.
    for dir in path.ancestors() {
        let cfg = dir.join("pyvenv.cfg");
        if let Ok(text) = std::fs::read_to_string(&cfg) {
            let mut dirs = vec![dir.to_path_buf()];
            if let Some(home) = venv_home(&text) {
                dirs.extend(install_dirs(&python_prefix(&home)));
            }
            return dirs;
        }
    }
    // An interpreter in a prefix of its own (`PREFIX/bin/python3.11`).
    let name = path.file_name().and_then(OsStr::to_str).unwrap_or("");
    if name.starts_with("python")
        && let Some(bin) = path.parent()
        && bin.file_name() == Some(OsStr::new("bin"))
        && let Some(prefix) = bin.parent()
        && prefix.join("lib").is_dir()
        && !is_system(prefix)
    {
        return vec![prefix.to_path_buf()];
    }
    vec![path.to_path_buf()]
}

fn python_prefix(home: &Path) -> PathBuf {
    if home.file_name() == Some(OsStr::new("bin"))
        && let Some(prefix) = home.parent()
    {
        return prefix.to_path_buf();
    }
    home.to_path_buf()
}

fn is_system(path: &Path) -> bool {
    SYSTEM.iter().any(|dir| path.starts_with(dir))
}

/// `home = /opt/python/bin` from a `pyvenv.cfg`.
fn venv_home(cfg: &str) -> Option<PathBuf> {
    cfg.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        (key.trim() == "home").then(|| PathBuf::from(value.trim()))
    })
}

/// The path up to and including the first component named `name`.
fn outermost(path: &Path, name: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        out.push(component);
        if component.as_os_str() == name {
            return Some(out);
        }
    }
    None
}

/// The path a word of the configuration names, if it names an existing one
/// (`/abs`, `./rel`, `dir/file`, `--flag=/abs`), and whether it was relative.
fn path_in(word: &str, base: &Path) -> Option<(PathBuf, bool)> {
    let word = match word.split_once('=') {
        Some((flag, value)) if flag.starts_with('-') => value,
        _ => word,
    };
    if word.contains("://") || word.is_empty() {
        return None;
    }
    let (path, relative) = if word.starts_with('/') {
        (PathBuf::from(word), false)
    } else if word.contains('/') || word == "." {
        (base.join(word), true)
    } else {
        return None;
    };
    let path = normalize(&path);
    std::fs::symlink_metadata(&path).ok()?;
    Some((path, relative))
}

/// `command` as the kernel will run it: a path as given (relative to the
/// working directory), or the first executable of that name on `PATH`.
pub fn resolve_program(command: &str, path_var: &str, base: &Path) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if command.contains('/') {
        let path = normalize(&base.join(command));
        return if executable(&path) {
            Ok(path)
        } else {
            Err(format!("{} is not an executable file", path.display()))
        };
    }
    path_var
        .split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| normalize(&base.join(dir).join(command)))
        .find(|p| executable(p))
        .ok_or_else(|| format!("`{command}` was not found on PATH ({path_var})"))
}

/// The interpreter a `#!` line names (`#!/usr/bin/env node` gives `node`).
fn shebang(program: &Path) -> Option<String> {
    use std::io::Read;
    let mut head = [0u8; 256];
    let n = std::fs::File::open(program).ok()?.read(&mut head).ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let line = &line[..line.iter().position(|&b| b == b'\n').unwrap_or(line.len())];
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split_whitespace();
    let first = words.next()?;
    if first.ends_with("/env") {
        words.find(|w| !w.starts_with('-')).map(str::to_owned)
    } else {
        Some(first.to_owned())
    }
}

/// The runtime of `program`, from its name, its `#!` line or its contents.
pub fn detect_profile(program: &Path) -> Profile {
    let name_of = |p: &Path| {
        p.file_name()
            .and_then(OsStr::to_str)
            .unwrap_or("")
            .to_owned()
    };
    let names = [
        name_of(program),
        name_of(&canonical(program)),
        shebang(program)
            .map(|i| name_of(Path::new(&i)))
            .unwrap_or_default(),
    ];
    let is = |prefixes: &[&str]| {
        names
            .iter()
            .any(|n| prefixes.iter().any(|p| n.starts_with(p)))
    };
    if is(&["node", "npx", "npm", "bun", "deno"]) {
        Profile::Node
    } else if is(&["python", "uv", "pipx"])
        || program.ancestors().any(|d| d.join("pyvenv.cfg").exists())
    {
        Profile::Python
    } else {
        Profile::Static
    }
}

fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        normalize(path)
    } else {
        let base = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        normalize(&base.join(path))
    }
}

/// `a/./b/../c` as `a/c`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Network;

    fn settings(dir: &Path) -> Settings {
        let mut s = Settings::new(dir.join("data/state/x"));
        s.hidden = vec![dir.join("data")];
        s.network = Network::None;
        s
    }

    fn binds(layout: &Layout) -> Vec<(PathBuf, bool)> {
        layout
            .mounts
            .iter()
            .filter_map(|m| match m {
                Mount::Bind { src, writable, .. } => Some((src.clone(), *writable)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn node_package_exposes_its_outermost_node_modules_only() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("app/node_modules/pkg/dist/index.js");
        std::fs::create_dir_all(main.parent().unwrap()).unwrap();
        std::fs::write(&main, "").unwrap();
        std::fs::write(dir.path().join("app/.env"), "SECRET=1").unwrap();
        let args = vec![main.display().to_string()];
        let launch = Launch {
            server: "x",
            command: "sh",
            args: &args,
            env: &[],
            cwd: None,
        };
        let l = layout(
            &settings(dir.path()),
            &launch,
            PlanNetwork::Isolated { proxy: false },
        )
        .unwrap();
        let b = binds(&l);
        assert!(
            b.contains(&(dir.path().join("app/node_modules"), false)),
            "{b:?}"
        );
        assert!(
            !b.iter().any(|(p, _)| p == &dir.path().join("app")),
            "{b:?}"
        );
        assert_eq!(l.cwd, Path::new(STATE_DIR));
    }

    #[test]
    fn the_data_dir_stays_hidden_under_a_bound_parent() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        let mut s = settings(dir.path());
        s.readable = vec![dir.path().to_path_buf(), dir.path().join("data/admin.json")];
        let launch = Launch {
            server: "x",
            command: "sh",
            args: &[],
            env: &[],
            cwd: None,
        };
        let l = layout(&s, &launch, PlanNetwork::Isolated { proxy: false }).unwrap();
        assert!(l.mounts.contains(&Mount::Hide {
            dst: dir.path().join("data"),
            directory: true
        }));
        assert!(
            l.notes.iter().any(|n| n.contains("admin.json")),
            "{:?}",
            l.notes
        );
    }

    #[test]
    fn a_servers_own_package_is_exposed_inside_the_hidden_data_dir_after_the_hide() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir
            .path()
            .join("data/packages/x/1.0.0/node_modules/pkg/dist/index.js");
        std::fs::create_dir_all(main.parent().unwrap()).unwrap();
        std::fs::write(&main, "").unwrap();
        let other = dir.path().join("data/packages/y/1.0.0/node_modules/p/i.js");
        std::fs::create_dir_all(other.parent().unwrap()).unwrap();
        std::fs::write(&other, "").unwrap();
        let mut s = settings(dir.path());
        s.exposed = vec![dir.path().join("data/packages/x")];
        s.readable = vec![dir.path().to_path_buf()];
        let args = vec![main.display().to_string(), other.display().to_string()];
        let launch = Launch {
            server: "x",
            command: "node",
            args: &args,
            env: &[],
            cwd: None,
        };
        let l = layout(&s, &launch, PlanNetwork::Isolated { proxy: false }).unwrap();
        let modules = dir.path().join("data/packages/x/1.0.0/node_modules");
        let hide = l
            .mounts
            .iter()
            .position(|m| matches!(m, Mount::Hide { dst, .. } if dst == &dir.path().join("data")))
            .expect("the data dir is hidden under its bound parent");
        let package = l
            .mounts
            .iter()
            .position(|m| matches!(m, Mount::Bind { dst, writable: false, .. } if dst == &modules))
            .expect("the server's own package is bound read-only");
        assert!(hide < package, "{:?}", l.mounts);
        assert!(
            !binds(&l)
                .iter()
                .any(|(p, _)| p.starts_with(dir.path().join("data/packages/y"))),
            "another server's package is exposed: {:?}",
            l.mounts
        );
    }

    #[test]
    fn relative_args_keep_the_working_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("server.py"), "").unwrap();
        let args = vec!["./server.py".to_string(), "plain".to_string()];
        let launch = Launch {
            server: "x",
            command: "sh",
            args: &args,
            env: &[],
            cwd: Some(dir.path()),
        };
        let l = layout(&settings(dir.path()), &launch, PlanNetwork::Host).unwrap();
        assert_eq!(l.cwd, dir.path());
        assert!(binds(&l).contains(&(dir.path().to_path_buf(), false)));
    }

    #[test]
    fn paths_are_found_in_words() {
        let base = Path::new("/");
        assert_eq!(
            path_in("--root=/usr", base),
            Some((PathBuf::from("/usr"), false))
        );
        assert_eq!(path_in("https://example.com/x", base), None);
        assert_eq!(path_in("plain", base), None);
        assert_eq!(shebang(Path::new("/nonexistent")), None);
        assert_eq!(
            venv_home("home = /opt/py/bin\nx = y"),
            Some(PathBuf::from("/opt/py/bin"))
        );
        assert_eq!(
            python_prefix(Path::new("/opt/py/bin")),
            Path::new("/opt/py")
        );
    }

    #[test]
    fn a_missing_program_is_named() {
        let err = resolve_program("no-such-program-berth", "/usr/bin", Path::new("/")).unwrap_err();
        assert!(err.contains("no-such-program-berth"), "{err}");
        assert_eq!(
            resolve_program("sh", "/usr/bin:/bin", Path::new("/")).unwrap(),
            Path::new("/usr/bin/sh")
        );
    }
}
