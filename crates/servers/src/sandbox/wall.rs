//! The wall between sessions: a command sees its own workspace, never
//! another session's.
//!
//! The file tools are confined by `openat2` ([`super::workspace`]), but a
//! command is free to open any path. Every session's server process shares
//! the workspace root (inside Berth's sandbox, `/state/workspaces` in the
//! server's state directory), so every command the server starts is put
//! under a Landlock ruleset, applied between `fork` and `exec`
//! ([`super::exec::spawn`]) and inherited by everything it starts:
//!
//! - read and execute beneath every top-level entry of `/` except the one
//!   holding the workspace root (`/state` inside Berth's sandbox: the other
//!   workspaces and everything else in the state directory are hidden);
//! - everything beneath the session's own workspace, `/tmp` and `/dev/shm`;
//! - read and write (and device ioctls) on `/dev`, read and write on `/proc`;
//! - signals and abstract unix sockets only within the command's own
//!   processes (Landlock scopes).
//!
//! Landlock has no rule for "this directory but not below": `/` itself is
//! not listable by commands (paths beneath granted entries still resolve).
//!
//! The ruleset is built once, when the server starts (after the sweep of
//! stale workspaces), and applied to each command, not to the server: the
//! server must still remove its workspace from the root when the session
//! ends, which Landlock would refuse (removing a directory is checked
//! against its parent). Commands also cannot trace or signal the server.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, BitFlags, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset,
    RulesetAttr, RulesetCreatedAttr, Scope,
};

/// The newest ABI these rules were written and tested against.
const ABI_USED: ABI = ABI::V6;

/// The ruleset, ready to be applied in a child process.
#[derive(Debug)]
pub struct Wall {
    fd: OwnedFd,
}

impl Wall {
    /// The ruleset's descriptor, for [`Wall::enter`] after `fork`.
    pub fn raw(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }

    /// Restricts the calling process to ruleset `fd`: only system calls,
    /// so it is safe between `fork` and `exec`.
    ///
    /// # Safety
    /// `fd` must be the descriptor of a live [`Wall`].
    pub unsafe fn enter(fd: std::os::fd::RawFd) -> std::io::Result<()> {
        // SAFETY: plain system calls with integer arguments.
        unsafe {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::syscall(libc::SYS_landlock_restrict_self, fd, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// The top-level directory of `/` that holds `root` (itself for `/x`;
/// `/` when `root` is `/`).
fn hidden_top(root: &Path) -> PathBuf {
    let mut top = PathBuf::from("/");
    if let Some(Component::Normal(name)) = root.components().nth(1) {
        top.push(name);
    }
    top
}

/// What commands may do beneath each path, for a workspace `workspace`
/// under the canonical workspace root `root`. `entries` are the top-level
/// entries of `/`, each canonical and whether it is a directory.
fn rules(
    workspace: &Path,
    root: &Path,
    entries: &[(PathBuf, bool)],
) -> Vec<(PathBuf, BitFlags<AccessFs>)> {
    let read = AccessFs::from_read(ABI_USED);
    let all = AccessFs::from_all(ABI_USED);
    let file = AccessFs::ReadFile | AccessFs::Execute;
    let hidden = hidden_top(root);
    let visible = |p: &Path| p != Path::new("/") && !p.starts_with(&hidden);
    let mut out = Vec::new();
    for (path, dir) in entries {
        if !visible(path) {
            continue;
        }
        let access = match path.to_str() {
            _ if !dir => file,
            Some("/tmp") => all,
            Some("/dev") => read | AccessFs::WriteFile | AccessFs::IoctlDev,
            Some("/proc") => read | AccessFs::WriteFile,
            _ => read,
        };
        out.push((path.clone(), access));
    }
    let shm = Path::new("/dev/shm");
    if visible(shm) && entries.iter().any(|(p, _)| p == Path::new("/dev")) {
        out.push((shm.into(), all));
    }
    out.push((workspace.into(), all));
    out
}

/// Builds the ruleset for `workspace` (under `root`). `None`: this kernel
/// has no Landlock, commands are not walled off.
pub fn build(workspace: &Path, root: &Path) -> Result<Option<Wall>, String> {
    let root = std::fs::canonicalize(root)
        .map_err(|e| format!("cannot resolve the workspace root {}: {e}", root.display()))?;
    let workspace = std::fs::canonicalize(workspace)
        .map_err(|e| format!("cannot resolve the workspace {}: {e}", workspace.display()))?;
    let mut entries = Vec::new();
    let top = std::fs::read_dir("/").map_err(|e| format!("cannot list /: {e}"))?;
    for entry in top.flatten() {
        // A dangling symlink grants nothing.
        let Ok(path) = std::fs::canonicalize(entry.path()) else {
            continue;
        };
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        entries.push((path, meta.is_dir()));
    }
    let mut created = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(ABI_USED))
        .and_then(|r| r.scope(Scope::from_all(ABI_USED)))
        .and_then(|r| r.create())
        .map_err(|e| format!("landlock: {e}"))?;
    for (path, access) in rules(&workspace, &root, &entries) {
        let Ok(fd) = PathFd::new(&path) else { continue };
        created = created
            .add_rule(PathBeneath::new(fd, access))
            .map_err(|e| format!("landlock: {}: {e}", path.display()))?;
    }
    let fd: Option<OwnedFd> = created.into();
    Ok(fd.map(|fd| Wall { fd }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(paths: &[&str]) -> Vec<(PathBuf, bool)> {
        paths
            .iter()
            .map(|p| (PathBuf::from(p), !p.starts_with("/.")))
            .collect()
    }

    fn granted(rules: &[(PathBuf, BitFlags<AccessFs>)]) -> Vec<&str> {
        rules.iter().map(|(p, _)| p.to_str().unwrap()).collect()
    }

    #[test]
    fn the_top_level_entry_holding_the_workspaces_is_hidden() {
        let all = entries(&["/usr", "/etc", "/state", "/tmp", "/dev", "/proc", "/.env"]);
        let r = rules(
            Path::new("/state/workspaces/abc"),
            Path::new("/state/workspaces"),
            &all,
        );
        assert_eq!(
            granted(&r),
            [
                "/usr",
                "/etc",
                "/tmp",
                "/dev",
                "/proc",
                "/.env",
                "/dev/shm",
                "/state/workspaces/abc"
            ]
        );
        let of = |p: &str| r.iter().find(|(q, _)| q == Path::new(p)).unwrap().1;
        assert_eq!(of("/usr"), AccessFs::from_read(ABI_USED));
        assert!(!of("/usr").contains(AccessFs::WriteFile));
        assert_eq!(of("/tmp"), AccessFs::from_all(ABI_USED));
        assert_eq!(of("/state/workspaces/abc"), AccessFs::from_all(ABI_USED));
        assert!(!of("/.env").contains(AccessFs::ReadDir));
    }

    #[test]
    fn a_root_elsewhere_hides_its_own_top_level_entry() {
        let all = entries(&["/usr", "/home", "/tmp", "/dev"]);
        let r = rules(Path::new("/tmp/ws/abc"), Path::new("/tmp/ws"), &all);
        assert_eq!(
            granted(&r),
            ["/usr", "/home", "/dev", "/dev/shm", "/tmp/ws/abc"]
        );
        let r = rules(Path::new("/dev/shm/w/x"), Path::new("/dev/shm/w"), &all);
        assert_eq!(granted(&r), ["/usr", "/home", "/tmp", "/dev/shm/w/x"]);
        let r = rules(Path::new("/abc"), Path::new("/"), &all);
        assert_eq!(granted(&r), ["/abc"]);
    }
}
