//! Spawning a child and running the stdio shutdown sequence on it.

use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{LogSource, Scheduling, ServerLog, ServerSpec, ShutdownGrace};

/// Whether an exit was asked for by Berth, and, once exited, whether it was a crash.
#[derive(Clone, Default)]
pub(crate) struct ExitVerdict {
    pub(crate) stop_requested: Arc<AtomicBool>,
    pub(crate) crashed: Arc<AtomicBool>,
    /// Killed for memory (the sandbox's cgroup counted an OOM kill).
    pub(crate) oom_killed: Arc<AtomicBool>,
}

/// A started process, and its sandbox when it has one.
pub(crate) struct Spawned {
    pub(crate) child: Child,
    pub(crate) sandbox: Option<Arc<berth_sandbox::Instance>>,
}

/// Starts the server's command in a process group of its own, so that the
/// whole tree (an `npx` wrapper and its node child, say) can be signalled;
/// under its sandbox unless the spec opts out.
pub(crate) fn spawn(spec: &ServerSpec) -> std::io::Result<Spawned> {
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
    let passed = spec
        .env_passthrough
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.clone(), v)));
    if let Some(settings) = &spec.sandbox {
        let mut full: Vec<(String, String)> = passed.collect();
        for (k, v) in env {
            full.retain(|(existing, _)| existing != k);
            full.push((k.clone(), v));
        }
        let launch = berth_sandbox::Launch {
            server: &spec.name,
            command: &spec.command,
            args: &args,
            env: &full,
            cwd: spec.cwd.as_deref(),
        };
        let prepared = berth_sandbox::prepare(settings, &launch).map_err(std::io::Error::other)?;
        let mut cmd = prepared.command;
        schedule(&mut cmd, spec.scheduling);
        let child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                // Its cgroup was made for this process: leave nothing behind.
                prepared.instance.finish();
                return Err(e);
            }
        };
        return Ok(Spawned {
            child,
            sandbox: Some(Arc::new(prepared.instance)),
        });
    }
    let mut cmd = Command::new(&spec.command);
    cmd.args(&args)
        .env_clear()
        .envs(passed)
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
    schedule(&mut cmd, spec.scheduling);
    let child = cmd.spawn()?;
    Ok(Spawned {
        child,
        sandbox: None,
    })
}

/// Sets the child's scheduling policy before it runs anything, so every
/// thread and process it starts inherits it (a policy set after the spawn
/// would race with those).
fn schedule(cmd: &mut Command, scheduling: Scheduling) {
    if scheduling == Scheduling::Normal {
        return;
    }
    // SAFETY: sched_setscheduler is a plain syscall, async-signal-safe, and
    // touches no memory of the parent's between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let param = libc::sched_param { sched_priority: 0 };
            // Lowering one's own policy needs no privilege; a kernel that
            // refuses it leaves the default policy, which only costs speed.
            libc::sched_setscheduler(0, libc::SCHED_BATCH, &param);
            Ok(())
        });
    }
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
    pub(crate) sandbox: Option<Arc<berth_sandbox::Instance>>,
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
        sandbox,
    } = controls;
    let kill = |signal: Signal| {
        signal_group(pid, signal);
        if signal == Signal::SIGKILL
            && let Some(sandbox) = &sandbox
        {
            sandbox.kill();
        }
    };
    let status = tokio::select! {
        status = child.wait() => status,
        _ = stop.cancelled() => {
            close_stdin.cancel();
            match tokio::time::timeout(grace.after_close, child.wait()).await {
                Ok(status) => status,
                Err(_) => {
                    kill(Signal::SIGTERM);
                    match tokio::time::timeout(grace.after_term, child.wait()).await {
                        Ok(status) => status,
                        Err(_) => {
                            log.push(Some(pid), LogSource::Lifecycle, "did not stop after SIGTERM; sending SIGKILL");
                            kill(Signal::SIGKILL);
                            child.wait().await
                        }
                    }
                }
            }
        }
    };
    kill(Signal::SIGKILL);
    let mut description = match status {
        Ok(status) => describe(status),
        Err(e) => format!("could not be waited for ({e})"),
    };
    if let Some(sandbox) = &sandbox {
        // The cgroup's counters tell what a bare SIGKILL does not.
        let ending = tokio::task::spawn_blocking({
            let sandbox = sandbox.clone();
            move || sandbox.finish()
        })
        .await
        .unwrap_or_default();
        if ending.oom_killed {
            verdict.oom_killed.store(true, Ordering::Relaxed);
            description = sandbox.oom_description();
        }
        if ending.pids_refused > 0 {
            log.push(
                Some(pid),
                LogSource::Lifecycle,
                format!(
                    "the sandbox's pids limit ({}) refused {} fork(s) of this process",
                    sandbox.pids_limit(),
                    ending.pids_refused
                ),
            );
        }
    }
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
