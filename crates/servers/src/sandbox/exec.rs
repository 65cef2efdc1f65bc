//! Running one command: argv (no shell), a confined working directory,
//! output captured up to a cap, a timeout that kills the whole tree.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Child;

use super::procs::{MARKER, Procs, Run};
use super::wall::Wall;

/// The serialized stdout and stderr of one result stay under this many
/// bytes together (the result is sent twice: as text and as structured
/// content, and Berth's default message limit is 16 MiB).
pub const RESULT_BUDGET: usize = 6 << 20;

/// What to run.
pub struct Spec {
    pub argv: Vec<String>,
    /// The working directory, already resolved beneath the workspace.
    pub cwd: OwnedFd,
    pub env: Vec<(String, String)>,
    pub stdin: Option<String>,
}

/// Checks `argv` and `env` as a client sent them.
pub fn check(argv: &[String], env: &[(String, String)]) -> Result<(), String> {
    let Some(program) = argv.first() else {
        return Err("argv is empty: give the program and its arguments, e.g. [\"ls\", \"-la\"] (for a shell command: [\"sh\", \"-c\", \"...\"])".into());
    };
    if program.is_empty() {
        return Err("argv[0] (the program) is empty".into());
    }
    if let Some(arg) = argv.iter().find(|a| a.contains('\0')) {
        return Err(format!("argv item {arg:?} contains a NUL byte"));
    }
    for (key, value) in env {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(format!("env: {key:?} is not a valid variable name"));
        }
        if value.contains('\0') {
            return Err(format!("env: the value of {key} contains a NUL byte"));
        }
        if key == MARKER {
            return Err(format!(
                "env: {MARKER} is reserved (it tracks a command's processes)"
            ));
        }
    }
    Ok(())
}

/// Spawns `spec` as `run`: own session, killed if the server dies, in the
/// confined working directory, behind the server's wall ([`super::wall`]).
pub fn spawn(procs: &Procs, spec: &Spec, run: &Run) -> Result<Child, String> {
    let mut cmd = tokio::process::Command::new(&spec.argv[0]);
    cmd.args(&spec.argv[1..])
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .env(MARKER, &run.marker)
        .stdin(if spec.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let cwd = spec.cwd.as_raw_fd();
    let parent = std::process::id() as libc::pid_t;
    let wall = procs.wall().map(Wall::raw);
    // SAFETY: only async-signal-safe system calls run between fork and exec,
    // and `spec.cwd` and the wall outlive the spawn.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // A command outlives no server that SIGKILLed (its own
            // descendants are found through the subreaper instead).
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            if libc::fchdir(cwd) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Last: the command sees only its own workspace (fails closed).
            if let Some(fd) = wall {
                Wall::enter(fd)?;
            }
            Ok(())
        });
    }
    procs
        .spawn(&mut cmd)
        .map_err(|e| format!("cannot run `{}`: {e}", spec.argv[0]))
}

/// Feeds `text` to the child's stdin and closes it (a child that does not
/// read it gets EPIPE on our side, which is ignored).
pub fn feed_stdin(child: &mut Child, text: Option<String>) {
    if let (Some(mut stdin), Some(text)) = (child.stdin.take(), text) {
        tokio::spawn(async move {
            let _ = stdin.write_all(text.as_bytes()).await;
            let _ = stdin.shutdown().await;
        });
    }
}

/// One output stream, kept up to a cap; the rest is read and counted.
#[derive(Debug, Default)]
pub struct Capture {
    pub kept: Vec<u8>,
    pub dropped: u64,
}

/// Reads `reader` to its end into `into`, never blocking the writer.
pub fn drain(
    mut reader: impl AsyncRead + Unpin + Send + 'static,
    cap: usize,
    into: Arc<Mutex<Capture>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let mut c = into.lock().unwrap_or_else(|p| p.into_inner());
            let room = cap.saturating_sub(c.kept.len()).min(n);
            c.kept.extend_from_slice(&buf[..room]);
            c.dropped += (n - room) as u64;
        }
    })
}

/// How a process ended: exit code or signal name.
pub fn ending(status: &ExitStatus) -> (Option<i32>, Option<String>) {
    match (status.code(), status.signal()) {
        (Some(code), _) => (Some(code), None),
        (None, Some(sig)) => (
            None,
            Some(
                nix::sys::signal::Signal::try_from(sig)
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_else(|_| format!("signal {sig}")),
            ),
        ),
        (None, None) => (None, None),
    }
}

/// Text of captured bytes: lossy UTF-8 with the truncation marker.
pub fn text(bytes: &[u8], dropped: u64) -> String {
    let mut s = String::from_utf8_lossy(bytes).into_owned();
    if dropped > 0 {
        s.push_str(&format!("\n[... output truncated: {dropped} more bytes]"));
    }
    s
}

/// Cuts the longer of two captured streams until both, serialized, fit
/// [`RESULT_BUDGET`] (binary output can grow sixfold as JSON).
pub fn fit_budget(a: &mut Capture, b: &mut Capture) {
    let size = |c: &Capture| {
        serde_json::to_string(&String::from_utf8_lossy(&c.kept)).map_or(0, |s| s.len())
    };
    for _ in 0..64 {
        let (sa, sb) = (size(a), size(b));
        if sa + sb <= RESULT_BUDGET {
            return;
        }
        let longer = if sa >= sb { &mut *a } else { &mut *b };
        let keep = longer.kept.len() / 2;
        longer.dropped += (longer.kept.len() - keep) as u64;
        longer.kept.truncate(keep);
    }
}

/// A child owned until it is reaped: dropped early (the request was
/// cancelled), it kills the run and leaves a task to reap the child.
pub struct Owned {
    pub procs: Arc<Procs>,
    pub child: Option<Child>,
    pub pid: i32,
    pub run: Run,
}

impl Owned {
    /// Waits for the first process; then the pid is no longer a direct child.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        let Some(child) = self.child.as_mut() else {
            return Err(std::io::Error::other("already waited for"));
        };
        let status = child.wait().await;
        self.child = None;
        self.procs.forget(self.pid);
        status
    }

    /// Kills the whole run (blocking work on the blocking pool).
    pub async fn kill_tree(&self) {
        let (procs, pid, run) = (self.procs.clone(), self.pid, self.run.clone());
        let _ = tokio::task::spawn_blocking(move || procs.kill_run(pid, &run)).await;
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        self.procs.kill_run(self.pid, &self.run);
        let (procs, pid) = (self.procs.clone(), self.pid);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = child.wait().await;
                procs.forget(pid);
            });
        }
    }
}

/// The outcome of [`exec`].
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
pub struct ExecResult {
    /// The exit code, if the command exited.
    pub exit_code: Option<i32>,
    /// The signal that ended it (e.g. "SIGKILL"), if one did.
    pub signal: Option<String>,
    /// Whether the timeout ended it (the whole process tree was killed).
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub duration_ms: u64,
}

/// Runs `spec` to completion or `timeout`, whichever first; anything the
/// command leaves running is killed too.
pub async fn exec(
    procs: &Arc<Procs>,
    spec: Spec,
    timeout: Duration,
    cap: usize,
    cancel: tokio_util::sync::CancellationToken,
) -> Result<ExecResult, String> {
    let started = Instant::now();
    let run = procs.new_run();
    let mut child = spawn(procs, &spec, &run)?;
    let pid = child.id().map_or(0, |p| p as i32);
    feed_stdin(&mut child, spec.stdin);
    let (out, err) = (
        Arc::new(Mutex::new(Capture::default())),
        Arc::new(Mutex::new(Capture::default())),
    );
    let readers = [
        child.stdout.take().map(|r| drain(r, cap, out.clone())),
        child.stderr.take().map(|r| drain(r, cap, err.clone())),
    ];
    drop(spec.cwd);
    let mut owned = Owned {
        procs: procs.clone(),
        child: Some(child),
        pid,
        run,
    };
    let waited = tokio::select! {
        waited = tokio::time::timeout(timeout, owned.wait()) => Some(waited),
        _ = cancel.cancelled() => None,
    };
    let (status, timed_out) = match waited {
        Some(Ok(status)) => (status, false),
        Some(Err(_)) => {
            owned.kill_tree().await;
            (owned.wait().await, true)
        }
        None => {
            // The client cancelled the request: nobody wants the result.
            owned.kill_tree().await;
            let _ = owned.wait().await;
            return Err(
                "cancelled by the client; the command and its processes were killed".into(),
            );
        }
    };
    // What the command left behind (background jobs) dies with it.
    owned.kill_tree().await;
    // The pipes close when the last holder is gone; a process that escaped
    // the kill must not hold the answer forever.
    for reader in readers.into_iter().flatten() {
        let abort = reader.abort_handle();
        if tokio::time::timeout(Duration::from_secs(2), reader)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    let (mut out, mut err) = (take(&out), take(&err));
    fit_budget(&mut out, &mut err);
    let (exit_code, signal) = match &status {
        Ok(status) => ending(status),
        Err(_) => (None, None),
    };
    Ok(ExecResult {
        exit_code,
        signal,
        timed_out,
        stdout_truncated: out.dropped > 0,
        stderr_truncated: err.dropped > 0,
        stdout: text(&out.kept, out.dropped),
        stderr: text(&err.kept, err.dropped),
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

fn take(c: &Arc<Mutex<Capture>>) -> Capture {
    std::mem::take(&mut *c.lock().unwrap_or_else(|p| p.into_inner()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_cuts_the_longer_stream() {
        let mut a = Capture {
            kept: vec![1u8; 2 << 20],
            dropped: 0,
        };
        let mut b = Capture {
            kept: b"short".to_vec(),
            dropped: 0,
        };
        fit_budget(&mut a, &mut b);
        assert!(a.dropped > 0 && b.dropped == 0);
        assert!(a.kept.len() * 6 <= RESULT_BUDGET);
        assert!(text(&a.kept, a.dropped).ends_with("more bytes]"));
    }

    #[test]
    fn argv_and_env_are_checked() {
        assert!(check(&[], &[]).unwrap_err().contains("argv is empty"));
        assert!(check(&["ls".into()], &[("A=B".into(), "x".into())]).is_err());
        assert!(check(&["ls".into()], &[(MARKER.into(), "x".into())]).is_err());
        check(&["ls".into()], &[("A".into(), "x".into())]).unwrap();
    }
}
