//! Per-server log: the children's stderr and lifecycle events, in a bounded ring.

use std::collections::VecDeque;
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
            }),
        }
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
        let line = LogLine {
            at: SystemTime::now(),
            pid,
            source,
            text,
        };
        let mut lines = self.inner.lines.lock().unwrap_or_else(|e| e.into_inner());
        if lines.len() == self.inner.capacity {
            lines.pop_front();
        }
        lines.push_back(line);
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
