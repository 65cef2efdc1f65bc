//! Per-server log: the children's stderr and lifecycle events, in a bounded ring.

use std::collections::VecDeque;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

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
    file: Mutex<Option<RotatingFile>>,
    /// Server lines that concerned no request Berth could find, or were
    /// dropped for want of a reader (see `Upstream::strays`), all processes.
    strays: std::sync::atomic::AtomicU64,
}

/// An append-only log file, rotated to `.1`, `.2`... when it grows past a size.
#[derive(Debug)]
struct RotatingFile {
    path: PathBuf,
    file: std::fs::File,
    written: u64,
    max_bytes: u64,
    keep: usize,
}

impl RotatingFile {
    fn open(path: &Path, max_bytes: u64, keep: usize) -> std::io::Result<RotatingFile> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let written = file.metadata()?.len();
        Ok(RotatingFile {
            path: path.to_path_buf(),
            file,
            written,
            max_bytes,
            keep,
        })
    }

    fn write(&mut self, line: &str) {
        use std::io::Write;
        if self.written + line.len() as u64 > self.max_bytes && self.written > 0 {
            self.rotate();
        }
        if self.file.write_all(line.as_bytes()).is_ok() {
            self.written += line.len() as u64;
        }
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

impl ServerLog {
    /// The longest line kept; the rest is cut with a marker.
    pub const MAX_LINE: usize = 4096;

    pub fn new(server: impl Into<String>, capacity: usize) -> ServerLog {
        ServerLog {
            inner: Arc::new(Inner {
                server: server.into(),
                capacity: capacity.max(1),
                lines: Mutex::new(VecDeque::new()),
                file: Mutex::new(None),
                strays: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }

    /// Counts one stray server line (any process of this server).
    pub(crate) fn note_stray(&self) {
        self.inner
            .strays
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Stray server lines so far, all processes of this server.
    pub fn strays(&self) -> u64 {
        self.inner.strays.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Also appends every line to `path`, rotating it past `max_bytes` and
    /// keeping `keep` old files.
    pub fn with_file(self, path: &Path, max_bytes: u64, keep: usize) -> std::io::Result<ServerLog> {
        let file = RotatingFile::open(path, max_bytes.max(1024), keep.max(1))?;
        *self.inner.file.lock().unwrap_or_else(|e| e.into_inner()) = Some(file);
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
        let mut lines = self.inner.lines.lock().unwrap_or_else(|e| e.into_inner());
        let seq = lines.back().map_or(1, |l| l.seq + 1);
        let line = LogLine {
            seq,
            at: SystemTime::now(),
            pid,
            source,
            text,
        };
        if let Some(file) = self
            .inner
            .file
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            file.write(&format!("{line}\n"));
        }
        if lines.len() == self.inner.capacity {
            lines.pop_front();
        }
        lines.push_back(line);
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

    #[test]
    fn ring_keeps_the_newest_lines_and_files_rotate() {
        let dir = std::env::temp_dir().join(format!("berth-log-test-{}", std::process::id()));
        let path = dir.join("server.log");
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
        assert!(
            path.exists() && dir.join("server.log.1").exists() && dir.join("server.log.2").exists()
        );
        assert!(!dir.join("server.log.3").exists());
        assert!(std::fs::metadata(&path).unwrap().len() <= 1024);
        let _ = std::fs::remove_dir_all(dir);
    }
}
