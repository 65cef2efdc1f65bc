//! Background processes: started, listed, read and killed by id; their
//! output kept in a ring buffer per stream.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;

use super::exec::{self, Owned, Spec};
use super::procs::{Procs, Run};

/// At most this many processes are remembered (running or exited).
pub const MAX_PROCESSES: usize = 64;

/// The last `cap` bytes of a stream, with absolute offsets.
#[derive(Debug)]
pub struct Ring {
    buf: VecDeque<u8>,
    cap: usize,
    /// Bytes ever written: the offset just past the newest byte.
    total: u64,
}

impl Ring {
    pub fn new(cap: usize) -> Ring {
        Ring {
            buf: VecDeque::new(),
            cap,
            total: 0,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.total += data.len() as u64;
        let data = &data[data.len().saturating_sub(self.cap)..];
        let overflow = (self.buf.len() + data.len()).saturating_sub(self.cap);
        self.buf.drain(..overflow.min(self.buf.len()));
        self.buf.extend(data);
    }

    /// Up to `max` bytes from `offset`: (data, where it starts, bytes lost
    /// before it because the buffer had moved on).
    pub fn read(&self, offset: u64, max: usize) -> (Vec<u8>, u64, u64) {
        let first = self.total - self.buf.len() as u64;
        let start = offset.clamp(first, self.total);
        let skip = (start - first) as usize;
        let mut end = (skip + max).min(self.buf.len());
        // Do not cut a UTF-8 sequence when more follows: the next read gets it whole.
        if end < self.buf.len() {
            let mut back = 0;
            while back < 3 && end - back > skip && (self.buf[end - back] & 0xC0) == 0x80 {
                back += 1;
            }
            if end - back > skip && (self.buf[end - back] & 0xC0) == 0x80 {
                back = 0;
            }
            end -= back;
        }
        let data: Vec<u8> = self.buf.range(skip..end).copied().collect();
        (data, start, start.saturating_sub(offset.min(start)))
    }

    pub fn total(&self) -> u64 {
        self.total
    }
}

#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Running,
    Exited,
}

/// What `process_list` shows of one process.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub struct Info {
    pub id: String,
    pub pid: i32,
    pub argv: Vec<String>,
    pub state: State,
    pub exit_code: Option<i32>,
    pub signal: Option<String>,
    /// ISO 8601, UTC.
    pub started: String,
    pub ended: Option<String>,
    /// Bytes written so far to each stream (the offsets `process_logs` takes).
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
}

struct Entry {
    info: Info,
    run: Run,
    stdout: Arc<Mutex<Ring>>,
    stderr: Arc<Mutex<Ring>>,
    /// Becomes true once the first process has been reaped.
    exited: watch::Receiver<bool>,
}

/// This session's background processes.
pub struct Background {
    procs: Arc<Procs>,
    entries: Mutex<BTreeMap<u64, Entry>>,
    next: Mutex<u64>,
    ring_cap: usize,
}

pub fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn parse_id(id: &str) -> Result<u64, String> {
    id.strip_prefix('p')
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("`{id}` is not a process id (ids look like `p1`; see process_list)"))
}

/// One page of a process's output.
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
pub struct Logs {
    pub id: String,
    pub state: State,
    pub exit_code: Option<i32>,
    pub signal: Option<String>,
    pub stdout: String,
    pub stderr: String,
    /// Pass these back as the offsets of the next call to get what follows.
    pub stdout_next_offset: u64,
    pub stderr_next_offset: u64,
    /// Bytes that were already gone from the ring buffer (older than it keeps).
    pub stdout_lost: u64,
    pub stderr_lost: u64,
    /// Whether more output is there beyond this page.
    pub more: bool,
}

impl Background {
    pub fn new(procs: Arc<Procs>, ring_cap: usize) -> Background {
        Background {
            procs,
            entries: Mutex::new(BTreeMap::new()),
            next: Mutex::new(1),
            ring_cap,
        }
    }

    /// Starts `spec`; returns its description.
    pub fn start(self: &Arc<Self>, spec: Spec) -> Result<Info, String> {
        {
            let mut entries = lock(&self.entries);
            if entries.len() >= MAX_PROCESSES {
                // Forget the oldest exited one to make room.
                let oldest = entries
                    .iter()
                    .find(|(_, e)| matches!(e.info.state, State::Exited))
                    .map(|(k, _)| *k);
                match oldest {
                    Some(k) => {
                        entries.remove(&k);
                    }
                    None => {
                        return Err(format!(
                            "{MAX_PROCESSES} background processes are running already: kill some first (process_kill)"
                        ));
                    }
                }
            }
        }
        let run = self.procs.new_run();
        let mut child = exec::spawn(&self.procs, &spec, &run)?;
        let pid = child.id().map_or(0, |p| p as i32);
        exec::feed_stdin(&mut child, spec.stdin.clone());
        let stdout = Arc::new(Mutex::new(Ring::new(self.ring_cap)));
        let stderr = Arc::new(Mutex::new(Ring::new(self.ring_cap)));
        if let Some(r) = child.stdout.take() {
            pump(r, stdout.clone());
        }
        if let Some(r) = child.stderr.take() {
            pump(r, stderr.clone());
        }
        let n = {
            let mut next = lock(&self.next);
            let n = *next;
            *next += 1;
            n
        };
        let info = Info {
            id: format!("p{n}"),
            pid,
            argv: spec.argv.clone(),
            state: State::Running,
            exit_code: None,
            signal: None,
            started: now(),
            ended: None,
            stdout_bytes: 0,
            stderr_bytes: 0,
        };
        let (tx, rx) = watch::channel(false);
        lock(&self.entries).insert(
            n,
            Entry {
                info: info.clone(),
                run: run.clone(),
                stdout,
                stderr,
                exited: rx,
            },
        );
        let mut owned = Owned {
            procs: self.procs.clone(),
            child: Some(child),
            pid,
            run,
        };
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let status = owned.wait().await;
            let (code, signal) = match &status {
                Ok(s) => exec::ending(s),
                Err(_) => (None, None),
            };
            if let Some(me) = me.upgrade()
                && let Some(e) = lock(&me.entries).get_mut(&n)
            {
                e.info.state = State::Exited;
                e.info.exit_code = code;
                e.info.signal = signal;
                e.info.ended = Some(now());
            }
            let _ = tx.send(true);
        });
        Ok(info)
    }

    pub fn list(&self) -> Vec<Info> {
        lock(&self.entries)
            .values()
            .map(|e| {
                let mut info = e.info.clone();
                info.stdout_bytes = lock(&e.stdout).total();
                info.stderr_bytes = lock(&e.stderr).total();
                info
            })
            .collect()
    }

    pub fn logs(
        &self,
        id: &str,
        stdout_offset: u64,
        stderr_offset: u64,
        max: usize,
    ) -> Result<Logs, String> {
        let n = parse_id(id)?;
        let entries = lock(&self.entries);
        let e = entries
            .get(&n)
            .ok_or_else(|| format!("no process `{id}` (see process_list)"))?;
        let half = (max / 2).max(1);
        let (out, out_start, out_lost) = lock(&e.stdout).read(stdout_offset, half);
        let (err, err_start, err_lost) = lock(&e.stderr).read(stderr_offset, half);
        let out_next = out_start + out.len() as u64;
        let err_next = err_start + err.len() as u64;
        let more = out_next < lock(&e.stdout).total() || err_next < lock(&e.stderr).total();
        Ok(Logs {
            id: e.info.id.clone(),
            state: e.info.state.clone(),
            exit_code: e.info.exit_code,
            signal: e.info.signal.clone(),
            stdout: String::from_utf8_lossy(&out).into_owned(),
            stderr: String::from_utf8_lossy(&err).into_owned(),
            stdout_next_offset: out_next,
            stderr_next_offset: err_next,
            stdout_lost: out_lost,
            stderr_lost: err_lost,
            more,
        })
    }

    /// Kills the process's whole tree and waits (a little) for it to be reaped.
    pub async fn kill(&self, id: &str) -> Result<Killed, String> {
        let n = parse_id(id)?;
        let (pid, run, mut exited) = {
            let entries = lock(&self.entries);
            let e = entries
                .get(&n)
                .ok_or_else(|| format!("no process `{id}` (see process_list)"))?;
            (e.info.pid, e.run.clone(), e.exited.clone())
        };
        let procs = self.procs.clone();
        let killed = {
            let run = run.clone();
            tokio::task::spawn_blocking(move || procs.kill_run(pid, &run))
                .await
                .unwrap_or(0)
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), exited.wait_for(|done| *done)).await;
        let entries = lock(&self.entries);
        let info = entries
            .get(&n)
            .map(|e| e.info.clone())
            .ok_or_else(|| format!("no process `{id}`"))?;
        Ok(Killed { info, killed })
    }
}

/// The outcome of `process_kill`.
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
pub struct Killed {
    #[serde(flatten)]
    pub info: Info,
    /// How many processes of its tree were sent SIGKILL.
    pub killed: usize,
}

/// Copies a stream into its ring buffer until it ends.
fn pump(mut reader: impl AsyncRead + Unpin + Send + 'static, ring: Arc<Mutex<Ring>>) {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 << 10];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => lock(&ring).push(&buf[..n]),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_tail_with_offsets() {
        let mut r = Ring::new(10);
        r.push(b"0123456789");
        r.push(b"abcde");
        assert_eq!(r.total(), 15);
        let (data, start, lost) = r.read(0, 100);
        assert_eq!((data.as_slice(), start, lost), (&b"56789abcde"[..], 5, 5));
        let (data, start, lost) = r.read(12, 100);
        assert_eq!((data.as_slice(), start, lost), (&b"cde"[..], 12, 0));
        let (data, start, _) = r.read(7, 2);
        assert_eq!((data.as_slice(), start), (&b"78"[..], 7));
        let (data, start, _) = r.read(99, 2);
        assert_eq!((data.len(), start), (0, 15));
        r.push(&[b'x'; 25]);
        assert_eq!(r.read(0, 100).0, vec![b'x'; 10]);
    }

    #[test]
    fn ring_does_not_split_utf8() {
        let mut r = Ring::new(100);
        r.push("aé".as_bytes()); // 'é' is two bytes
        let (data, _, _) = r.read(0, 2);
        assert_eq!(data, b"a");
        let (data, _, _) = r.read(1, 2);
        assert_eq!(data, "é".as_bytes());
    }
}
