//! The session's workspace and path confinement.
//!
//! Every session (one server process) gets a fresh directory `<root>/<id>`
//! (mode 0700). The process holds an `flock` on that directory for its whole
//! life, so a later process can tell a workspace left behind by a SIGKILLed
//! one (its lock can be taken) from a live one.
//!
//! Tool paths are resolved by the kernel: `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_MAGICLINKS)` from a descriptor of the workspace refuses
//! absolute symlinks, `..` above the workspace and /proc magic links at
//! every step, with no window between a check and the use (a symlink
//! planted by a command the session ran cannot redirect a tool).

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::Mode;

/// Workspace directory names: this many random hex digits.
const ID_LEN: usize = 24;
/// A directory being created gets this prefix until it is locked.
const PENDING: &str = ".pending-";

/// This session's workspace. Holding it holds the lock.
#[derive(Debug)]
pub struct Workspace {
    path: PathBuf,
    /// The directory itself, opened and locked (`flock`), close-on-exec so
    /// no command inherits the lock.
    dir: File,
}

impl Workspace {
    /// Makes a fresh workspace under `root` (created if missing). Unless
    /// `keep`, first removes workspaces whose process is gone.
    pub fn create(root: &Path, keep: bool) -> Result<Workspace, String> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(|e| format!("cannot create the workspace root {}: {e}", root.display()))?;
        if !keep {
            sweep_stale(root);
        }
        let mut last = String::new();
        for _ in 0..16 {
            let id = random_id();
            let pending = root.join(format!("{PENDING}{id}"));
            let path = root.join(&id);
            if let Err(e) = std::fs::DirBuilder::new().mode(0o700).create(&pending) {
                last = format!("cannot create {}: {e}", pending.display());
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    continue;
                }
                return Err(last);
            }
            let dir = match open_dir_nofollow(&pending) {
                Ok(dir) => dir,
                Err(e) => {
                    last = format!("cannot open {}: {e}", pending.display());
                    continue;
                }
            };
            // A sweep by another starting process may have taken it first
            // (and removed it): then the lock or the rename fails; try again.
            if dir.try_lock().is_err() {
                last = format!("{} is locked by another process", pending.display());
                continue;
            }
            if let Err(e) = std::fs::rename(&pending, &path) {
                last = format!("cannot rename {}: {e}", pending.display());
                continue;
            }
            let same = match (dir.metadata(), std::fs::symlink_metadata(&path)) {
                (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
                _ => false,
            };
            if !same {
                last = format!("{} changed while it was being created", path.display());
                continue;
            }
            return Ok(Workspace { path, dir });
        }
        Err(format!(
            "cannot create a workspace in {}: {last}",
            root.display()
        ))
    }

    /// The workspace's absolute path (as this process sees it).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A descriptor of the workspace directory: the root of every lookup.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }

    /// Opens `rel` (already [`normalize`]d) beneath the workspace.
    /// `shown` is the path as the client wrote it, for errors.
    pub fn open(
        &self,
        rel: &Path,
        flags: OFlag,
        mode: Mode,
        shown: &str,
    ) -> Result<OwnedFd, String> {
        open_beneath(self.fd(), rel, flags, mode).map_err(|e| refusal(shown, e))
    }

    /// Opens the directory that holds `rel`'s last component (creating the
    /// missing directories when `create`), and returns it with that name.
    /// `rel` must not be the workspace itself.
    pub fn parent(
        &self,
        rel: &Path,
        create: bool,
        shown: &str,
    ) -> Result<(OwnedFd, PathBuf), String> {
        let name = rel
            .file_name()
            .ok_or_else(|| format!("`{shown}` names the workspace itself"))?
            .to_owned();
        let parent = rel.parent().unwrap_or(Path::new(""));
        let dir = if create {
            self.make_dirs(parent, shown)?
        } else {
            self.open(
                dir_or_dot(parent),
                OFlag::O_PATH | OFlag::O_DIRECTORY,
                Mode::empty(),
                shown,
            )?
        };
        Ok((dir, PathBuf::from(name)))
    }

    /// Opens directory `rel`, creating what is missing one component at a
    /// time; every step is resolved from the workspace again, so a symlink
    /// met on the way is followed only if it stays inside.
    pub fn make_dirs(&self, rel: &Path, shown: &str) -> Result<OwnedFd, String> {
        let dir_flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
        let mut prefix = PathBuf::new();
        let mut current = self.open(Path::new("."), dir_flags, Mode::empty(), shown)?;
        for component in rel.components() {
            let Component::Normal(name) = component else {
                continue;
            };
            prefix.push(name);
            match open_beneath(self.fd(), &prefix, dir_flags, Mode::empty()) {
                Ok(fd) => current = fd,
                Err(Errno::ENOENT) => {
                    // One plain name relative to a directory already
                    // resolved beneath the workspace: nothing to follow.
                    match nix::sys::stat::mkdirat(&current, name, Mode::from_bits_truncate(0o755)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(refusal(shown, e)),
                    }
                    current = open_beneath(self.fd(), &prefix, dir_flags, Mode::empty())
                        .map_err(|e| refusal(shown, e))?;
                }
                Err(e) => return Err(refusal(shown, e)),
            }
        }
        Ok(current)
    }

    /// Removes the workspace directory (the lock goes when the process does).
    pub fn remove(&self) -> Result<(), String> {
        remove_tree(&self.path)
            .map_err(|e| format!("cannot remove the workspace {}: {e}", self.path.display()))
    }
}

/// `openat2` beneath `root`: the kernel refuses absolute paths, `..` above
/// `root`, absolute symlinks and symlinks leading out, and magic links.
pub fn open_beneath(
    root: BorrowedFd<'_>,
    rel: &Path,
    flags: OFlag,
    mode: Mode,
) -> Result<OwnedFd, Errno> {
    // openat2 refuses flags O_PATH ignores (EINVAL): O_NOCTTY only without it.
    let extra = if flags.contains(OFlag::O_PATH) {
        OFlag::O_CLOEXEC
    } else {
        OFlag::O_CLOEXEC | OFlag::O_NOCTTY
    };
    let how = OpenHow::new()
        .flags(flags | extra)
        .mode(mode)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    loop {
        match openat2(root, dir_or_dot(rel), how) {
            // openat2 returns EAGAIN when a concurrent rename might have
            // let a `..` step escape; it is safe to retry.
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => continue,
            other => return other,
        }
    }
}

fn dir_or_dot(rel: &Path) -> &Path {
    if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    }
}

/// Checks a client's path: relative, free of NUL bytes, and not leaving
/// the workspace by `..` on the face of it. `..` is resolved by the text
/// (`a/../b` is `b`); the kernel then resolves what remains beneath the
/// workspace, symlinks included. An empty path is the workspace itself.
pub fn normalize(arg: &str) -> Result<PathBuf, String> {
    if arg.contains('\0') {
        return Err(format!("path {arg:?} is refused: it contains a NUL byte"));
    }
    let path = Path::new(arg);
    if path.has_root() {
        let relative = arg.trim_start_matches('/');
        return Err(format!(
            "path `{arg}` is refused: absolute paths are not allowed, every path is relative to the workspace{}",
            if relative.is_empty() {
                String::new()
            } else {
                format!(" (did you mean `{relative}`?)")
            }
        ));
    }
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return Err(format!(
                        "path `{arg}` is refused: its `..` leads out of the workspace"
                    ));
                }
            }
            Component::Normal(name) => out.push(name),
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("path `{arg}` is refused: not a relative path"));
            }
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    Ok(out)
}

/// The message for a failed lookup of `shown`.
pub fn refusal(shown: &str, errno: Errno) -> String {
    match errno {
        Errno::EXDEV => format!(
            "path `{shown}` is refused: it resolves outside the workspace (through a symlink or `..`)"
        ),
        Errno::ELOOP => format!(
            "path `{shown}` is refused: a symlink loop, a /proc magic link, or a symlink where none may be"
        ),
        Errno::ENOENT => format!("`{shown}` does not exist"),
        Errno::ENOTDIR => format!("`{shown}`: a component of the path is not a directory"),
        Errno::EISDIR => format!("`{shown}` is a directory"),
        Errno::EEXIST => format!("`{shown}` already exists"),
        Errno::EACCES | Errno::EPERM => format!("`{shown}`: permission denied"),
        Errno::ENOTEMPTY => format!("`{shown}` is a directory that is not empty"),
        Errno::ENOSYS => format!(
            "`{shown}`: this kernel has no openat2 (Linux 5.6+), which confining paths needs"
        ),
        other => format!("`{shown}`: {}", other.desc()),
    }
}

fn random_id() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..ID_LEN)
        .map(|_| char::from_digit(rng.random_range(0..16), 16).unwrap_or('0'))
        .collect()
}

fn is_id(name: &str) -> bool {
    name.len() == ID_LEN && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Opens a directory for locking, refusing a symlink in its place.
fn open_dir_nofollow(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(path)
}

/// Removes every workspace under `root` no live process holds the lock of.
fn sweep_stale(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !is_id(name.strip_prefix(PENDING).unwrap_or(name)) {
            continue;
        }
        let path = entry.path();
        let Ok(dir) = open_dir_nofollow(&path) else {
            continue;
        };
        if dir.try_lock().is_err() {
            continue; // a live session's
        }
        // Held while removing, so its owner (if one appears) waits.
        match remove_tree(&path) {
            Ok(()) => eprintln!("removed stale workspace {}", path.display()),
            Err(e) => eprintln!("cannot remove stale workspace {}: {e}", path.display()),
        }
        drop(dir);
    }
}

/// `remove_dir_all`, then once more after making every directory writable
/// and searchable (a command may have `chmod 000`ed one).
pub fn remove_tree(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            open_up(path);
            match std::fs::remove_dir_all(path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                other => other,
            }
        }
    }
}

fn open_up(path: &Path) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700));
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            open_up(&entry.path());
        }
    }
}

/// A file name as text for results (lossy for names that are not UTF-8).
pub fn display(name: &OsStr) -> String {
    String::from_utf8_lossy(name.as_bytes()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws() -> (tempfile::TempDir, Workspace) {
        let root = tempfile::tempdir().unwrap();
        let ws = Workspace::create(root.path(), false).unwrap();
        (root, ws)
    }

    fn read(ws: &Workspace, p: &str) -> Result<String, String> {
        let rel = normalize(p)?;
        let fd = ws.open(&rel, OFlag::O_RDONLY, Mode::empty(), p)?;
        Ok(std::fs::read_to_string(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&fd)
        ))
        .unwrap())
    }

    #[test]
    fn normalize_refuses_escapes_and_absolute_paths() {
        assert_eq!(normalize("a/b").unwrap(), PathBuf::from("a/b"));
        assert_eq!(normalize("./a//b/").unwrap(), PathBuf::from("a/b"));
        assert_eq!(normalize("a/../b").unwrap(), PathBuf::from("b"));
        assert_eq!(normalize("").unwrap(), PathBuf::from("."));
        assert_eq!(normalize("a/..").unwrap(), PathBuf::from("."));
        let e = normalize("../x").unwrap_err();
        assert!(
            e.contains("`../x`") && e.contains("out of the workspace"),
            "{e}"
        );
        assert!(
            normalize("a/../../x")
                .unwrap_err()
                .contains("out of the workspace")
        );
        let e = normalize("/etc/passwd").unwrap_err();
        assert!(e.contains("absolute") && e.contains("etc/passwd"), "{e}");
        assert!(normalize("a\0b").unwrap_err().contains("NUL"));
    }

    #[test]
    fn nested_paths_work() {
        let (_root, ws) = ws();
        let dir = ws.make_dirs(Path::new("a/b/c"), "a/b/c").unwrap();
        drop(dir);
        std::fs::write(ws.path().join("a/b/c/f.txt"), "hello").unwrap();
        assert_eq!(read(&ws, "a/b/c/f.txt").unwrap(), "hello");
        assert_eq!(read(&ws, "a/b/../b/c/f.txt").unwrap(), "hello");
    }

    #[test]
    fn symlinks_out_of_the_workspace_are_refused() {
        let (_root, ws) = ws();
        std::os::unix::fs::symlink("/etc", ws.path().join("etc")).unwrap();
        std::os::unix::fs::symlink("/", ws.path().join("root")).unwrap();
        std::os::unix::fs::symlink("../..", ws.path().join("up")).unwrap();
        std::os::unix::fs::symlink("/proc/self/root", ws.path().join("magic")).unwrap();
        for p in [
            "etc/passwd",
            "root/etc/passwd",
            "up/etc/passwd",
            "etc",
            "magic/etc/passwd",
        ] {
            let e = read(&ws, p).unwrap_err();
            assert!(
                e.contains(&format!("`{p}`")) && e.contains("refused"),
                "{p}: {e}"
            );
        }
        // Creating through a symlink is refused too.
        let e = ws.make_dirs(Path::new("etc/new"), "etc/new").unwrap_err();
        assert!(e.contains("outside the workspace"), "{e}");
        let e = ws
            .parent(Path::new("root/tmp/x"), true, "root/tmp/x")
            .unwrap_err();
        assert!(e.contains("outside the workspace"), "{e}");
    }

    #[test]
    fn symlinks_inside_the_workspace_are_followed() {
        let (_root, ws) = ws();
        std::fs::create_dir(ws.path().join("real")).unwrap();
        std::fs::write(ws.path().join("real/f"), "x").unwrap();
        std::os::unix::fs::symlink("real", ws.path().join("alias")).unwrap();
        std::fs::create_dir(ws.path().join("sub")).unwrap();
        std::os::unix::fs::symlink("../real/f", ws.path().join("sub/up")).unwrap();
        assert_eq!(read(&ws, "alias/f").unwrap(), "x");
        assert_eq!(read(&ws, "sub/up").unwrap(), "x");
    }

    #[test]
    fn stale_workspaces_are_swept_and_live_ones_kept() {
        let root = tempfile::tempdir().unwrap();
        let live = Workspace::create(root.path(), false).unwrap();
        let stale = root.path().join("0123456789abcdef01234567");
        std::fs::create_dir_all(stale.join("deep/er")).unwrap();
        std::fs::set_permissions(stale.join("deep"), std::fs::Permissions::from_mode(0o000))
            .unwrap();
        let other = root.path().join("not-a-workspace");
        std::fs::create_dir(&other).unwrap();
        let second = Workspace::create(root.path(), false).unwrap();
        assert!(!stale.exists());
        assert!(live.path().exists() && other.exists() && second.path().exists());
        let path = live.path().to_owned();
        live.remove().unwrap();
        assert!(!path.exists());
        // With keep, nothing is swept.
        let kept = root.path().join("89abcdef0123456789abcdef");
        std::fs::create_dir(&kept).unwrap();
        let _third = Workspace::create(root.path(), true).unwrap();
        assert!(kept.exists());
        assert_eq!(
            std::fs::metadata(second.path())
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
    }
}
