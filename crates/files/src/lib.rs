//! Private files, written one way everywhere: the secrets store, the
//! issuer's keys and client/refresh stores, `admin.json`, config locks.
//!
//! - [`write_private`] replaces a file atomically: a uniquely named 0600
//!   temp file in the same directory, written, fsynced, renamed over the
//!   target, then the directory fsynced. Readers see the old file or the new
//!   one, never a mix, even across a crash; concurrent writers each win whole.
//! - [`create_private_new`] publishes a file only if none exists yet (keys:
//!   two first runs must agree on one).
//! - [`create_private_dir`] creates a directory tree with mode 0700.
//! - [`lock_exclusive`] takes an exclusive advisory lock on a lock file.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Replaces `path` with `contents` atomically, readable by its owner only.
///
/// The temp file's name is unique per process, call and time, so concurrent
/// writers (threads or processes) never share one; the last rename wins and
/// the file is always exactly one writer's contents.
pub fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = parent(path);
    let (tmp, mut file) = create_temp(path)?;
    let result = file
        .write_all(contents)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    drop(file);
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir)
}

/// Writes `contents` to `path` (mode 0600) only if `path` does not exist:
/// `Err(AlreadyExists)` if it does. The file appears complete or not at all
/// (written to a temp file, fsynced, then hard-linked into place), so a
/// concurrent reader never sees a half-written key.
pub fn create_private_new(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = parent(path);
    let (tmp, mut file) = create_temp(path)?;
    let written = file.write_all(contents).and_then(|()| file.sync_all());
    drop(file);
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => return Err(e),
        // A file system without hard links: create_new in place, removing a
        // partial file on failure (it would be refused on every later read).
        Err(_) => {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)?;
            if let Err(e) = file.write_all(contents).and_then(|()| file.sync_all()) {
                let _ = std::fs::remove_file(path);
                return Err(e);
            }
        }
    }
    sync_dir(dir)
}

/// Creates `dir` and any missing parents with mode 0700. Directories that
/// already exist are left as the operator made them.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Flushes a directory's entries, so a file just created or renamed in it
/// survives a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// An exclusive advisory lock, released when dropped (or when the process
/// dies: the kernel drops it with the file descriptor).
#[derive(Debug)]
pub struct LockFile {
    _file: File,
}

/// Opens (creating it 0600 if needed) `path` and blocks until this process
/// holds its exclusive lock. The lock file itself is never removed: removing
/// it would let a third process lock a new file while the second holds the old.
pub fn lock_exclusive(path: &Path) -> io::Result<LockFile> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    loop {
        // A signal handler installed without SA_RESTART interrupts the wait.
        match file.lock() {
            Ok(()) => return Ok(LockFile { _file: file }),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// A new 0600 file beside `path` under a name no other writer uses.
fn create_temp(path: &Path) -> io::Result<(PathBuf, File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = parent(path);
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(ErrorKind::InvalidInput, "path has no file name"))?
        .to_string_lossy();
    loop {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.{}.{n}.{nanos}.tmp", std::process::id()));
        // create_new: a stale temp file (or a hostile symlink) is never reused.
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
        {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect()
    }

    #[test]
    fn writes_are_private_complete_and_leave_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.json");
        // A pre-existing, world-readable file is replaced by a private one.
        std::fs::write(&path, b"old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let body = vec![b'x'; 1 << 20];
        write_private(&path, &body).unwrap();
        assert_eq!(mode(&path), 0o600);
        // Synced before the rename: the renamed file holds every byte.
        assert_eq!(std::fs::read(&path).unwrap(), body);
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn a_failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("target");
        std::fs::write(&path, b"old").unwrap();
        // Renaming a file over a non-empty directory fails after the temp
        // file is written: the temp file must go and the target stay.
        let blocked = dir.path().join("blocked");
        std::fs::create_dir(&blocked).unwrap();
        std::fs::write(blocked.join("inside"), b"").unwrap();
        assert!(write_private(&blocked, b"new").is_err());
        assert!(leftovers(dir.path()).is_empty());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
    }

    #[test]
    fn readers_never_see_a_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let a = vec![b'a'; 256 * 1024];
        let b = vec![b'b'; 256 * 1024];
        write_private(&path, &a).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (path, stop, a, b) = (path.clone(), stop.clone(), a.clone(), b.clone());
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let got = std::fs::read(&path).unwrap();
                    assert!(got == a || got == b, "torn read of {} bytes", got.len());
                    reads += 1;
                }
                reads
            })
        };
        for i in 0..200 {
            write_private(&path, if i % 2 == 0 { &b } else { &a }).unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
    }

    #[test]
    fn concurrent_writers_leave_exactly_one_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = Arc::new(dir.path().join("shared"));
        let bodies: Vec<Vec<u8>> = (0..8u8)
            .map(|i| vec![b'0' + i; 64 * 1024 + i as usize])
            .collect();
        let threads: Vec<_> = bodies
            .iter()
            .cloned()
            .map(|body| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        write_private(&path, &body).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let got = std::fs::read(&*path).unwrap();
        assert!(bodies.contains(&got), "final file is no writer's contents");
        assert_eq!(mode(&path), 0o600);
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn create_private_new_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        create_private_new(&path, b"first").unwrap();
        let err = create_private_new(&path, b"second").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        assert_eq!(mode(&path), 0o600);
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn private_dirs_are_0700() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        create_private_dir(&deep).unwrap();
        assert_eq!(mode(&deep), 0o700);
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        create_private_dir(&deep).unwrap();
    }

    #[test]
    fn the_lock_is_exclusive_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let held = lock_exclusive(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = {
            let path = path.clone();
            std::thread::spawn(move || {
                let lock = lock_exclusive(&path).unwrap();
                tx.send(()).unwrap();
                drop(lock);
            })
        };
        // Still held: the other thread must not get it yet.
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(200))
                .is_err()
        );
        drop(held);
        rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        waiter.join().unwrap();
    }
}
