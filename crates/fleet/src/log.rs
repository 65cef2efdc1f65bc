//! Per-server log: the children's stderr and lifecycle events, in a bounded ring.

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::FileTypeExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::SystemTime;

use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogSource {
    /// A line the server wrote to stderr.
    Stderr,
    /// Something Berth did or saw: a spawn, an exit, a failure.
    Lifecycle,
}

#[derive(Debug, Clone)]
pub struct LogLine {
    /// Position in the server's log, counting from 1; increases by one per line.
    pub seq: u64,
    pub at: SystemTime,
    pub pid: Option<u32>,
    pub source: LogSource,
    pub text: String,
}

/// A bounded log shared by every process of one server. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ServerLog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    server: String,
    capacity: usize,
    lines: Mutex<VecDeque<LogLine>>,
    /// The log file's writer, if the server has a log file.
    file: OnceLock<FileSink>,
    /// Server lines that concerned no request Berth could find, or were
    /// dropped for want of a reader (see `Upstream::strays`), all processes.
    strays: AtomicU64,
    /// The newest line's seq, for followers to wait on instead of polling.
    newest: watch::Sender<u64>,
}

/// The sending end of a log file: lines go to a writer thread over a
/// bounded channel, so a slow or stalled disk never blocks `push` (a tokio
/// worker, the ring's lock, crash accounting). A full channel drops the line
/// and counts it.
#[derive(Debug)]
struct FileSink {
    tx: SyncSender<String>,
    counts: Arc<FileCounts>,
}

#[derive(Debug, Default)]
struct FileCounts {
    /// Lines never written (channel full or write failed), since start.
    unwritten: AtomicU64,
    /// Of those, the ones not yet reported in the log.
    unreported: AtomicU64,
}

impl FileCounts {
    fn lost(&self, n: u64) {
        self.unwritten.fetch_add(n, Ordering::Relaxed);
        self.unreported.fetch_add(n, Ordering::Relaxed);
    }
}

/// Lines waiting for the writer thread; at most `MAX_LINE` bytes each.
const FILE_QUEUE: usize = 1024;

/// An append-only log file, rotated to `.1`, `.2`... when it grows past a size.
#[derive(Debug)]
struct RotatingFile {
    path: PathBuf,
    file: File,
    written: u64,
    max_bytes: u64,
    keep: usize,
    /// Only regular files rotate (not a FIFO or a device).
    rotates: bool,
}

impl RotatingFile {
    fn open(path: &Path, max_bytes: u64, keep: usize) -> std::io::Result<RotatingFile> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let meta = file.metadata()?;
        Ok(RotatingFile {
            path: path.to_path_buf(),
            file,
            written: meta.len(),
            max_bytes,
            keep,
            rotates: meta.is_file(),
        })
    }

    fn write(&mut self, line: &str) -> std::io::Result<()> {
        if self.rotates && self.written + line.len() as u64 > self.max_bytes && self.written > 0 {
            self.rotate();
        }
        self.file.write_all(line.as_bytes())?;
        self.written += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) {
        let numbered = |n: usize| PathBuf::from(format!("{}.{n}", self.path.display()));
        for n in (1..self.keep).rev() {
            let _ = std::fs::rename(numbered(n), numbered(n + 1));
        }
        let _ = std::fs::rename(&self.path, numbered(1));
        if let Ok(file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
        {
            self.file = file;
            self.written = 0;
        }
    }
}

/// The writer thread: writes queued lines in order until every `ServerLog`
/// is gone. After lines were lost it says so, in the ring and the file.
fn write_lines(
    rx: Receiver<String>,
    opened: Option<RotatingFile>,
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    counts: Arc<FileCounts>,
    log: Weak<Inner>,
) {
    // A FIFO is opened here: opening it blocks until a reader comes.
    let mut file = match opened {
        Some(file) => file,
        None => match RotatingFile::open(&path, max_bytes, keep) {
            Ok(file) => file,
            Err(e) => {
                tracing::error!("cannot open log file {}: {e}", path.display());
                for _ in rx {
                    counts.lost(1);
                }
                return;
            }
        },
    };
    let mut failing = false;
    loop {
        let line = match rx.try_recv() {
            Ok(line) => line,
            Err(mpsc::TryRecvError::Disconnected) => return,
            Err(mpsc::TryRecvError::Empty) => {
                // Caught up: say what was lost since the last report, once.
                let lost = if failing {
                    0
                } else {
                    counts.unreported.swap(0, Ordering::Relaxed)
                };
                if lost > 0 {
                    let Some(inner) = log.upgrade() else { return };
                    tracing::warn!("{lost} log line(s) not written to {}", path.display());
                    ServerLog { inner }.push(
                        None,
                        LogSource::Lifecycle,
                        format!(
                            "{lost} log line(s) not written to {} (the file did not keep up; `berth logs` has them while the ring holds them)",
                            path.display()
                        ),
                    );
                }
                match rx.recv() {
                    Ok(line) => line,
                    Err(_) => return,
                }
            }
        };
        match file.write(&line) {
            Ok(()) => failing = false,
            Err(e) => {
                if !failing {
                    tracing::warn!("cannot write log file {}: {e}", path.display());
                }
                failing = true;
                counts.lost(1);
            }
        }
    }
}

impl ServerLog {
    /// The longest line kept; the rest is cut with a marker.
    pub const MAX_LINE: usize = 4096;

    pub fn new(server: impl Into<String>, capacity: usize) -> ServerLog {
        ServerLog {
            inner: Arc::new(Inner {
                server: server.into(),
                capacity: capacity.max(1),
                lines: Mutex::new(VecDeque::new()),
                file: OnceLock::new(),
                strays: AtomicU64::new(0),
                newest: watch::Sender::new(0),
            }),
        }
    }

    /// Counts one stray server line (any process of this server).
    pub(crate) fn note_stray(&self) {
        self.inner.strays.fetch_add(1, Ordering::Relaxed);
    }

    /// Stray server lines so far, all processes of this server.
    pub fn strays(&self) -> u64 {
        self.inner.strays.load(Ordering::Relaxed)
    }

    /// Lines that never reached the log file (its writer fell behind, or
    /// writing failed), since start; 0 without a log file.
    pub fn unwritten(&self) -> u64 {
        self.inner
            .file
            .get()
            .map_or(0, |f| f.counts.unwritten.load(Ordering::Relaxed))
    }

    /// Also appends every line to `path`, rotating it past `max_bytes` and
    /// keeping `keep` old files. The file is written by a thread of its own;
    /// a regular file is opened here so a bad path fails now, a FIFO by
    /// that thread (opening one waits for its reader). A log has one file:
    /// a second call is refused.
    pub fn with_file(self, path: &Path, max_bytes: u64, keep: usize) -> std::io::Result<ServerLog> {
        let (max_bytes, keep) = (max_bytes.max(1024), keep.max(1));
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let fifo = std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo());
        let opened = if fifo {
            None
        } else {
            Some(RotatingFile::open(path, max_bytes, keep)?)
        };
        let (tx, rx) = mpsc::sync_channel(FILE_QUEUE);
        let counts = Arc::new(FileCounts::default());
        let sink = FileSink {
            tx,
            counts: counts.clone(),
        };
        if self.inner.file.set(sink).is_err() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("server `{}` already has a log file", self.inner.server),
            ));
        }
        let path = path.to_path_buf();
        let log = Arc::downgrade(&self.inner);
        std::thread::Builder::new()
            .name(format!("log-{}", self.inner.server))
            .spawn(move || write_lines(rx, opened, path, max_bytes, keep, counts, log))?;
        Ok(self)
    }

    pub fn push(&self, pid: Option<u32>, source: LogSource, text: impl Into<String>) {
        let mut text = text.into();
        if text.len() > Self::MAX_LINE {
            let mut cut = Self::MAX_LINE;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push_str(" […]");
        }
        match source {
            LogSource::Stderr => {
                tracing::debug!(server = %self.inner.server, pid, "stderr: {text}")
            }
            LogSource::Lifecycle => tracing::info!(server = %self.inner.server, pid, "{text}"),
        }
        let mut line = LogLine {
            seq: 0,
            at: SystemTime::now(),
            pid,
            source,
            text,
        };
        // Formatted before the lock; the file line does not carry the seq.
        let file_line = self.inner.file.get().map(|_| format!("{line}\n"));
        let seq = {
            let mut lines = self.inner.lines.lock().unwrap_or_else(|e| e.into_inner());
            let seq = lines.back().map_or(1, |l| l.seq + 1);
            line.seq = seq;
            // Queued under the lock so the file keeps the ring's order;
            // try_send never blocks.
            if let (Some(sink), Some(file_line)) = (self.inner.file.get(), file_line) {
                match sink.tx.try_send(file_line) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                        sink.counts.lost(1)
                    }
                }
            }
            if lines.len() == self.inner.capacity {
                lines.pop_front();
            }
            lines.push_back(line);
            seq
        };
        self.inner.newest.send_replace(seq);
    }

    /// Waits on new lines: the receiver sees the newest seq change, so a
    /// follower reads [`ServerLog::since`] when there is something to read.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.newest.subscribe()
    }

    /// Lines after `seq` still in the ring, oldest first (at most `limit`, the newest).
    pub fn since(&self, seq: u64, limit: usize) -> Vec<LogLine> {
        let lines = self.inner.lines.lock().unwrap_or_else(|e| e.into_inner());
        let newer = lines.iter().filter(|l| l.seq > seq).count();
        lines
            .iter()
            .filter(|l| l.seq > seq)
            .skip(newer.saturating_sub(limit))
            .cloned()
            .collect()
    }

    /// Everything still in the ring, oldest first.
    pub fn snapshot(&self) -> Vec<LogLine> {
        self.inner
            .lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// The last `n` stderr lines one process wrote, oldest first.
    pub fn last_stderr(&self, pid: u32, n: usize) -> Vec<String> {
        let lines = self.inner.lines.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<String> = lines
            .iter()
            .rev()
            .filter(|l| l.pid == Some(pid) && l.source == LogSource::Stderr)
            .take(n)
            .map(|l| l.text.clone())
            .collect();
        out.reverse();
        out
    }
}

impl fmt::Display for LogLine {
    /// `2026-11-24T16:00:00Z stderr pid=123: the text`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match self.source {
            LogSource::Stderr => "stderr",
            LogSource::Lifecycle => "berth",
        };
        write!(f, "{} {source}", humantime::format_rfc3339_seconds(self.at))?;
        if let Some(pid) = self.pid {
            write!(f, " pid={pid}")?;
        }
        write!(f, ": {}", self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;
    use std::time::{Duration, Instant};

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!("berth-log-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Polls `done` until it holds or `within` passes.
    fn wait_until(within: Duration, mut done: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if done() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        done()
    }

    #[test]
    fn ring_keeps_the_newest_lines_and_files_rotate() {
        let dir = TempDir::new("rotate");
        let path = dir.path().join("server.log");
        let log = ServerLog::new("t", 3).with_file(&path, 1024, 2).unwrap();
        for i in 0..100 {
            log.push(
                Some(7),
                LogSource::Stderr,
                format!("line {i} {}", "x".repeat(40)),
            );
        }
        let kept = log.since(0, 10);
        assert_eq!(kept.len(), 3);
        assert!(kept[2].text.starts_with("line 99"));
        assert_eq!(log.since(kept[1].seq, 10).len(), 1);
        // The file is written by its own thread: wait for the last line.
        assert!(wait_until(Duration::from_secs(10), || {
            std::fs::read_to_string(&path).is_ok_and(|t| t.contains("line 99 "))
        }));
        assert!(
            dir.path().join("server.log.1").exists() && dir.path().join("server.log.2").exists()
        );
        assert!(!dir.path().join("server.log.3").exists());
        assert!(std::fs::metadata(&path).unwrap().len() <= 1024);
        assert_eq!(log.unwritten(), 0);
    }

    #[test]
    fn a_stalled_log_file_never_blocks_push_and_reports_what_it_lost() {
        let dir = TempDir::new("fifo");
        let fifo = dir.path().join("stalled.log");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        // Nobody reads the FIFO: its writer blocks (opening it) for good.
        let log = ServerLog::new("t", 100)
            .with_file(&fifo, 1 << 30, 2)
            .unwrap();
        let lines = FILE_QUEUE * 4;
        let (tx, rx) = std::sync::mpsc::channel();
        let pusher = {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0..lines {
                    log.push(
                        Some(1),
                        LogSource::Stderr,
                        format!("flood {i} {}", "y".repeat(200)),
                    );
                }
                let _ = tx.send(());
            })
        };
        rx.recv_timeout(Duration::from_secs(30))
            .expect("push blocked on a stalled log file");
        pusher.join().unwrap();
        // The ring (what `berth logs` reads) has the newest lines.
        let newest = log.since(0, 1);
        assert!(newest[0].text.starts_with(&format!("flood {} ", lines - 1)));
        let lost = log.unwritten();
        assert!(
            lost >= (lines - FILE_QUEUE) as u64,
            "only {lost} of {lines} lines counted as unwritten"
        );

        // The disk recovers: a reader drains the FIFO and the writer reports the loss.
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || {
                let mut text = String::new();
                let mut file = std::fs::File::open(&fifo).unwrap();
                let _ = file.read_to_string(&mut text);
                text
            })
        };
        let marker = format!("{lost} log line(s) not written to {}", fifo.display());
        assert!(
            wait_until(Duration::from_secs(30), || log
                .snapshot()
                .iter()
                .any(|l| l.text.starts_with(&marker))),
            "no report of the lost lines in the log"
        );
        // Dropping the last handle ends the writer, closing the FIFO: the reader ends.
        drop(log);
        let text = reader.join().unwrap();
        assert!(text.starts_with("20") && text.contains("flood 0 "));
        assert!(text.contains(&marker), "the report is in the file too");
        assert!(!text.contains(&format!("flood {} ", lines - 1)));
    }
}
