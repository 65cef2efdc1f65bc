//! What this kernel and this user allow, checked once at start by trying:
//! the helper creates every namespace the sandbox uses and installs the
//! seccomp filter on itself; the cgroup hierarchies are found and written
//! to; landlock reports its ABI.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::cgroup::Cgroups;
use crate::helper;
use crate::policy::{INSIDE_ID, PlanNetwork};

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

#[derive(Serialize, Deserialize)]
struct HelperReport {
    namespaces: Option<String>,
    seccomp: Option<String>,
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

/// In the helper process: try the real thing and print a [`HelperReport`].
pub(crate) fn run_in_helper() -> i32 {
    let report = HelperReport {
        namespaces: try_namespaces().err(),
        seccomp: try_seccomp().err(),
    };
    println!("{}", serde_json::to_string(&report).unwrap_or_default());
    0
}

fn try_namespaces() -> Result<(), String> {
    let flags = helper::clone_flags(PlanNetwork::Isolated { proxy: false }) | libc::CLONE_NEWUSER;
    // The child waits on this pipe so the maps are written to a live process.
    let (wait_read, wait_write) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: the probe helper is single-threaded; the child only _exits.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    if pid == 0 {
        drop(wait_write);
        let mut byte = [0u8; 1];
        let _ = nix::unistd::read(&wait_read, &mut byte);
        // SAFETY: ends the cloned child.
        unsafe { libc::_exit(0) }
    }
    drop(wait_read);
    // The mapping the real helper writes must be accepted too.
    // SAFETY: geteuid/getegid have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let (outside_uid, outside_gid) = if uid == 0 { (65534, 65534) } else { (uid, gid) };
    let proc = format!("/proc/{pid}");
    let mapped = (|| -> std::io::Result<()> {
        if uid != 0 {
            std::fs::write(format!("{proc}/setgroups"), "deny")?;
        }
        std::fs::write(
            format!("{proc}/uid_map"),
            format!("{INSIDE_ID} {outside_uid} 1\n"),
        )?;
        std::fs::write(
            format!("{proc}/gid_map"),
            format!("{INSIDE_ID} {outside_gid} 1\n"),
        )
    })();
    drop(wait_write);
    let mut status = 0;
    // SAFETY: waits for the child just created.
    unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
    mapped.map_err(|e| format!("writing the id maps: {e}"))
}

fn try_seccomp() -> Result<(), String> {
    let programs = crate::filter::programs()?;
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("PR_SET_NO_NEW_PRIVS: {e}"))?;
    crate::filter::apply(&programs)
}
