//! Spawning a child and running the stdio shutdown sequence on it.

use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{LogSource, ServerLog, ServerSpec, ShutdownGrace};

/// Whether an exit was asked for by Berth, and, once exited, whether it was a crash.
#[derive(Clone, Default)]
pub(crate) struct ExitVerdict {
    pub(crate) stop_requested: Arc<AtomicBool>,
    pub(crate) crashed: Arc<AtomicBool>,
}

/// Starts the server's command in a process group of its own, so that the
/// whole tree (an `npx` wrapper and its node child, say) can be signalled.
pub(crate) fn spawn(spec: &ServerSpec) -> std::io::Result<Child> {
    let resolve = |text: &String| -> std::io::Result<String> {
        match &spec.secrets {
            Some(secrets) => secrets.expand(text).map_err(std::io::Error::other),
            None => Ok(text.clone()),
        }
    };
    let args = spec
        .args
        .iter()
        .map(resolve)
        .collect::<Result<Vec<_>, _>>()?;
    let env = spec
        .env
        .iter()
        .map(|(k, v)| Ok((k, resolve(v)?)))
        .collect::<std::io::Result<Vec<_>>>()?;
    let mut cmd = Command::new(&spec.command);
    cmd.args(&args)
        .env_clear()
        .envs(
            spec.env_passthrough
                .iter()
                .filter_map(|k| std::env::var_os(k).map(|v| (k.clone(), v))),
        )
        .envs(env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        // A safety net only: the supervisor below normally stops and reaps.
        .kill_on_drop(true);
    if let Some(dir) = &spec.cwd {
        cmd.current_dir(dir);
    }
    let child = cmd.spawn()?;
    Ok(child)
}

/// How the rest of an upstream talks to its supervisor.
pub(crate) struct Controls {
    /// Cancelled to ask for the stop sequence.
    pub(crate) stop: CancellationToken,
    /// Cancelled by the supervisor to close the child's stdin.
    pub(crate) close_stdin: CancellationToken,
    /// Receives how the process ended, once reaped.
    pub(crate) exited: watch::Sender<Option<String>>,
    pub(crate) verdict: ExitVerdict,
}

/// Owns the child until it has exited and been reaped.
///
/// The child may exit by itself, or `stop` asks for the MCP stdio shutdown
/// sequence: close stdin (`close_stdin`), wait, SIGTERM the group, wait,
/// SIGKILL the group. Either way the group is SIGKILLed once the leader is
/// gone, so no grandchild outlives its server, and the exit is published on
/// `exited`.
pub(crate) async fn supervise(
    mut child: Child,
    pid: u32,
    grace: ShutdownGrace,
    log: ServerLog,
    controls: Controls,
) {
    let Controls {
        stop,
        close_stdin,
        exited,
        verdict,
    } = controls;
    let status = tokio::select! {
        status = child.wait() => status,
        _ = stop.cancelled() => {
            close_stdin.cancel();
            match tokio::time::timeout(grace.after_close, child.wait()).await {
                Ok(status) => status,
                Err(_) => {
                    signal_group(pid, Signal::SIGTERM);
                    match tokio::time::timeout(grace.after_term, child.wait()).await {
                        Ok(status) => status,
                        Err(_) => {
                            log.push(Some(pid), LogSource::Lifecycle, "did not stop after SIGTERM; sending SIGKILL");
                            signal_group(pid, Signal::SIGKILL);
                            child.wait().await
                        }
                    }
                }
            }
        }
    };
    signal_group(pid, Signal::SIGKILL);
    let description = match status {
        Ok(status) => describe(status),
        Err(e) => format!("could not be waited for ({e})"),
    };
    log.push(
        Some(pid),
        LogSource::Lifecycle,
        format!("process {pid} {description}"),
    );
    // Decided at the moment of exit: a stop requested later (by a session
    // cleaning up after the crash) must not turn the crash into a clean stop.
    verdict.crashed.store(
        !verdict.stop_requested.load(Ordering::Relaxed),
        Ordering::Relaxed,
    );
    let _ = exited.send(Some(description));
}

pub(crate) fn signal_group(pid: u32, signal: Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        // ESRCH just means the group is already gone.
        let _ = killpg(Pid::from_raw(pid), signal);
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => match Signal::try_from(sig) {
            Ok(sig) => format!("was killed by signal {}", sig.as_str()),
            Err(_) => format!("was killed by signal {sig}"),
        },
        (None, None) => "exited".to_string(),
    }
}
