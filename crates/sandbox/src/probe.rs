//! What this kernel and this user allow, checked once at start by trying:
//! the helper creates every namespace the sandbox uses and installs the
//! seccomp filter on itself; the cgroup hierarchies are found and written
//! to; landlock reports its ABI.

use std::sync::OnceLock;

use crate::cgroup::Cgroups;
use crate::helper::{self, HelperReport};

/// The sandbox features this machine offers; each `Err` says why not.
#[derive(Debug)]
pub struct Capabilities {
    /// Berth runs as root (servers then run as `nobody` on the host).
    pub root: bool,
    pub namespaces: Result<(), String>,
    pub seccomp: Result<(), String>,
    /// 0 when the kernel has no landlock.
    pub landlock_abi: i32,
    pub cgroups: Result<Cgroups, String>,
}

static CAPABILITIES: OnceLock<Capabilities> = OnceLock::new();

/// Probes on first use; the result is kept for the life of the process.
pub fn capabilities() -> &'static Capabilities {
    CAPABILITIES.get_or_init(probe)
}

impl Capabilities {
    /// One line per feature, for the gateway's log and `berth sandbox show`.
    pub fn lines(&self) -> Vec<(bool, String)> {
        let state = |r: &Result<(), String>, what: &str| match r {
            Ok(()) => (true, format!("{what}: yes")),
            Err(e) => (false, format!("{what}: NO ({e})")),
        };
        vec![
            (
                true,
                format!(
                    "running as: {}",
                    if self.root {
                        "root (servers run as uid 65534 on the host)"
                    } else {
                        "an unprivileged user (servers run as this user's uid on the host)"
                    }
                ),
            ),
            state(
                &self.namespaces,
                "namespaces (user, pid, mount, ipc, uts, net, cgroup)",
            ),
            state(&self.seccomp, "seccomp filter"),
            if self.landlock_abi > 0 {
                (true, format!("landlock: ABI {}", self.landlock_abi))
            } else {
                (
                    false,
                    "landlock: NO (not in this kernel; the mount namespace is the only file wall)"
                        .into(),
                )
            },
            match &self.cgroups {
                Ok(c) => (true, format!("cgroups: {}", c.describe())),
                Err(e) => (
                    false,
                    format!("cgroups: NO ({e}); memory, pids and cpu limits are not enforced"),
                ),
            },
        ]
    }
}

fn probe() -> Capabilities {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let report = match helper::installed() {
        None => HelperReport {
            namespaces: Some("the sandbox helper is not installed in this program".into()),
            seccomp: Some("not probed".into()),
        },
        Some(exe) => match std::process::Command::new(exe)
            .env_clear()
            .env(helper::PROBE_ENV, "1")
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
        {
            Ok(out) => serde_json::from_slice(&out.stdout).unwrap_or(HelperReport {
                namespaces: Some(format!("the probe failed ({})", out.status)),
                seccomp: Some("not probed".into()),
            }),
            Err(e) => HelperReport {
                namespaces: Some(format!("cannot start the probe: {e}")),
                seccomp: Some("not probed".into()),
            },
        },
    };
    let cgroups = Cgroups::detect();
    if let Ok(c) = &cgroups {
        c.tidy(false);
    }
    Capabilities {
        root,
        namespaces: report.namespaces.map_or(Ok(()), Err),
        seccomp: report.seccomp.map_or(Ok(()), Err),
        landlock_abi: landlock_abi(),
        cgroups,
    }
}

fn landlock_abi() -> i32 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a null attribute and the VERSION flag the call only
    // returns the ABI number (or an error).
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    abi.max(0) as i32
}
