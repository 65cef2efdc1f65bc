//! What a sandbox is asked for ([`Settings`], from the configuration) and
//! what the helper carries out ([`Plan`], every path and id resolved).

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The uid and gid a sandboxed server runs as, inside its user namespace.
pub const INSIDE_ID: u32 = 1000;
/// Where the server's own writable state dir appears (also its `$HOME`).
pub const STATE_DIR: &str = "/state";
/// The host uid and gid servers run as when Berth is root.
pub const NOBODY: u32 = 65534;
/// The port of the egress proxy on the sandbox's own loopback.
pub const PROXY_PORT: u16 = 3128;

/// `[servers.NAME.sandbox]`, resolved against the gateway's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub profile: Profile,
    /// Extra host paths the server may read (and execute).
    pub readable: Vec<PathBuf>,
    /// Extra host paths the server may write.
    pub writable: Vec<PathBuf>,
    pub network: Network,
    pub limits: Limits,
    /// Size of the private `/tmp`.
    pub tmp_size: u64,
    /// The server's writable state dir on the host, mounted at [`STATE_DIR`].
    pub state_dir: PathBuf,
    /// Host paths that stay invisible even under a directory the server may
    /// read: Berth's data dir and its configuration file.
    pub hidden: Vec<PathBuf>,
    /// Paths inside a hidden one this server may still read: its own
    /// installed package under Berth's data dir.
    pub exposed: Vec<PathBuf>,
}

/// The runtime a server is written for; it decides which install
/// directories besides the named paths become visible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Chosen from the command: its name, its `#!` line or its ELF header.
    #[default]
    Auto,
    /// Node.js: the outermost `node_modules` of every named path.
    Node,
    /// Python: the virtual environment and its base interpreter's prefix,
    /// pyenv's root for a pyenv shim.
    Python,
    /// A self-contained binary: the binary itself.
    Static,
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Profile::Auto => "auto",
            Profile::Node => "node",
            Profile::Python => "python",
            Profile::Static => "static",
        })
    }
}

/// What the server's network namespace can reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// Its own loopback only.
    None,
    /// The host's network, shared (no network namespace).
    Host,
    /// Its own loopback, plus Berth's egress proxy admitting these
    /// `host:port` patterns (empty: nothing).
    Allow(Vec<String>),
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Network::None => f.write_str("none (own loopback only)"),
            Network::Host => f.write_str("host (shares the host's network)"),
            Network::Allow(hosts) if hosts.is_empty() => {
                f.write_str("allow [] (own loopback; the egress proxy admits nothing)")
            }
            Network::Allow(hosts) => write!(
                f,
                "allow [{}] (own loopback; egress only through Berth's proxy)",
                hosts.join(", ")
            ),
        }
    }
}

/// cgroup limits of one server process (and everything it starts).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub memory_bytes: u64,
    pub pids: u64,
    pub cpus: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 1 << 30,
            pids: 256,
            cpus: 1.0,
        }
    }
}

impl Settings {
    /// The defaults for a server whose state lives in `state_dir`.
    pub fn new(state_dir: PathBuf) -> Settings {
        Settings {
            profile: Profile::Auto,
            readable: Vec::new(),
            writable: Vec::new(),
            network: Network::Allow(Vec::new()),
            limits: Limits::default(),
            tmp_size: 64 << 20,
            state_dir,
            hidden: Vec::new(),
            exposed: Vec::new(),
        }
    }
}

/// Everything the helper does, in order, to start one sandboxed process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    /// Absolute path of the program, the same inside and out.
    pub program: PathBuf,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// The working directory inside the sandbox.
    pub cwd: PathBuf,
    pub hostname: String,
    /// The new root, built on an empty tmpfs in this order.
    pub mounts: Vec<Mount>,
    pub ids: IdMap,
    pub network: PlanNetwork,
    /// An inherited socket on which the sandbox's proxy listener is handed to Berth.
    pub egress_socket: Option<i32>,
    /// `cgroup.procs` files the helper joins before creating the namespaces.
    pub cgroup_procs: Vec<PathBuf>,
    pub landlock: bool,
    pub seccomp: bool,
}

/// How host ids appear inside the user namespace.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdMap {
    /// The host uid and gid that [`INSIDE_ID`] stands for.
    pub outside_uid: u32,
    pub outside_gid: u32,
    /// The helper may map any id (it is root on the host): the server's
    /// supplementary groups are then cleared. Otherwise `setgroups` is
    /// denied, as the kernel requires of an unprivileged mapping.
    pub privileged: bool,
}

impl IdMap {
    /// The mapping this process can give a sandbox: root maps the server
    /// to `nobody`; another user can only map itself.
    pub fn for_this_process() -> IdMap {
        // SAFETY: these getters have no preconditions.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        if uid == 0 {
            IdMap {
                outside_uid: NOBODY,
                outside_gid: NOBODY,
                privileged: true,
            }
        } else {
            IdMap {
                outside_uid: uid,
                outside_gid: gid,
                privileged: false,
            }
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum PlanNetwork {
    Host,
    /// A network namespace of its own; with a proxy listener on its loopback.
    Isolated {
        proxy: bool,
    },
}

/// One step in building the sandbox's root.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum Mount {
    /// A host path bound at `dst` (the same path, except the state dir).
    Bind {
        src: PathBuf,
        dst: PathBuf,
        writable: bool,
    },
    /// A host device node (`null`, `zero`, ...) bound under `/dev`.
    Device {
        name: String,
    },
    Tmpfs {
        dst: PathBuf,
        size: u64,
        mode: u32,
    },
    /// A fresh `/proc` of the sandbox's own pid namespace.
    Proc,
    /// A small file written into the root (`/etc/passwd`, ...).
    File {
        dst: PathBuf,
        contents: String,
    },
    /// A small host file copied into the root (cheaper than a bind and its
    /// read-only remount; `/etc/services`, ...).
    Copy {
        src: PathBuf,
        dst: PathBuf,
    },
    Symlink {
        dst: PathBuf,
        target: PathBuf,
    },
    /// An empty directory (a working directory no bind provides).
    Dir {
        dst: PathBuf,
    },
    /// Covers `dst` (under a bound directory) with an empty read-only
    /// directory or file, so it stays invisible.
    Hide {
        dst: PathBuf,
        directory: bool,
    },
}

impl fmt::Display for Mount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mount::Bind { src, dst, writable } => {
                let mode = if *writable { "rw" } else { "ro" };
                if src == dst {
                    write!(f, "{mode}  {}", dst.display())
                } else {
                    write!(f, "{mode}  {} (host: {})", dst.display(), src.display())
                }
            }
            Mount::Device { name } => write!(f, "dev /dev/{name}"),
            Mount::Tmpfs { dst, size, .. } => {
                write!(f, "tmp {} (tmpfs, {})", dst.display(), bytes(*size))
            }
            Mount::Proc => f.write_str("ro  /proc (its own pid namespace)"),
            Mount::File { dst, .. } => write!(f, "ro  {} (generated)", dst.display()),
            Mount::Copy { dst, .. } => write!(f, "ro  {} (copied)", dst.display()),
            Mount::Symlink { dst, target } => {
                write!(f, "ln  {} -> {}", dst.display(), target.display())
            }
            Mount::Dir { dst } => write!(f, "dir {} (empty)", dst.display()),
            Mount::Hide { dst, .. } => write!(f, "hid {} (covered, invisible)", dst.display()),
        }
    }
}

/// `1 GiB`, `64 MiB`, `512 KiB`, `100 B`.
pub fn bytes(n: u64) -> String {
    const UNITS: &[(u64, &str)] = &[(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (size, unit) in UNITS {
        if n >= *size && n.is_multiple_of(*size) {
            return format!("{} {unit}", n / size);
        }
    }
    match UNITS.iter().find(|(size, _)| n >= *size) {
        Some((size, unit)) => format!("{:.1} {unit}", n as f64 / *size as f64),
        None => format!("{n} B"),
    }
}
