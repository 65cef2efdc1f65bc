//! Berth's side: turning a server's command and [`Settings`] into a helper
//! command to spawn, and the [`Instance`] that controls the running sandbox
//! (freeze, kill, OOM report, egress proxy, hints about hidden paths).

use std::collections::HashSet;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::cgroup::Group;
use crate::egress::{AllowList, Egress};
use crate::helper;
use crate::layout::{Launch, Layout, layout};
use crate::policy::{
    IdMap, Mount, Network, PROXY_PORT, Plan, PlanNetwork, Profile, STATE_DIR, Settings,
};
use crate::probe::capabilities;

/// Where a hook reports one line to the server's log.
pub type Report = Arc<dyn Fn(String) + Send + Sync>;

/// A helper command ready to spawn, and the sandbox it will run.
pub struct Prepared {
    pub command: tokio::process::Command,
    pub instance: Instance,
}

/// Why a server could not be sandboxed. The fleet does not start it
/// unsandboxed instead: that is a decision for the configuration.
#[derive(Debug, thiserror::Error)]
#[error("sandbox: {0}")]
pub struct PrepareError(pub String);

fn network_of(settings: &Settings) -> PlanNetwork {
    match settings.network {
        Network::Host => PlanNetwork::Host,
        Network::None => PlanNetwork::Isolated { proxy: false },
        Network::Allow(_) => PlanNetwork::Isolated { proxy: true },
    }
}

/// The environment the server gets: its own, with `HOME` and `TMPDIR`
/// pointing inside the sandbox and the proxy announced.
fn environment(
    launch: &Launch<'_>,
    network: PlanNetwork,
    profile: Profile,
) -> Vec<(String, String)> {
    const REPLACED: &[&str] = &[
        "HOME",
        "TMPDIR",
        "USER",
        "LOGNAME",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
    ];
    let mut env: Vec<(String, String)> = launch
        .env
        .iter()
        .filter(|(k, _)| !REPLACED.contains(&k.as_str()))
        .cloned()
        .collect();
    let own = |key: &str| {
        launch
            .env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    env.push((
        "HOME".into(),
        own("HOME")
            .filter(|h| h.starts_with(STATE_DIR))
            .unwrap_or_else(|| STATE_DIR.into()),
    ));
    env.push(("TMPDIR".into(), "/tmp".into()));
    env.push(("USER".into(), "mcp".into()));
    env.push(("LOGNAME".into(), "mcp".into()));
    if network == (PlanNetwork::Isolated { proxy: true }) {
        let proxy = format!("http://127.0.0.1:{PROXY_PORT}");
        for key in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
            env.push((key.into(), proxy.clone()));
        }
    }
    if profile == Profile::Python && own("PYTHONDONTWRITEBYTECODE").is_none() {
        // The install dirs are read-only: no point trying to write .pyc files.
        env.push(("PYTHONDONTWRITEBYTECODE".into(), "1".into()));
    }
    env
}

/// Prepares the sandbox for one process of `launch.server`.
pub fn prepare(settings: &Settings, launch: &Launch<'_>) -> Result<Prepared, PrepareError> {
    let caps = capabilities();
    if let Err(why) = &caps.namespaces {
        return Err(PrepareError(format!(
            "this machine cannot create the sandbox's namespaces ({why}); set `sandbox = false` for this server to run it without one"
        )));
    }
    let helper = helper::installed().ok_or_else(|| {
        PrepareError("the sandbox helper is not installed in this program".into())
    })?;
    let network = network_of(settings);
    let layout = layout(settings, launch, network).map_err(PrepareError)?;
    let ids = IdMap::for_this_process();
    prepare_state_dir(&settings.state_dir, ids)?;

    let egress = match (&settings.network, network) {
        (Network::Allow(hosts), PlanNetwork::Isolated { proxy: true }) => {
            let allow = AllowList::parse(hosts).map_err(PrepareError)?;
            let (ours, theirs) =
                UnixStream::pair().map_err(|e| PrepareError(format!("socketpair: {e}")))?;
            Some((ours, OwnedFd::from(theirs), allow))
        }
        _ => None,
    };
    let group = match &caps.cgroups {
        Ok(cgroups) => Some(
            cgroups
                .create(launch.server, &settings.limits)
                .map_err(|e| PrepareError(format!("cannot create the server's cgroup: {e}")))?,
        ),
        Err(_) => None,
    };
    let plan = Plan {
        program: layout.program.clone(),
        argv: std::iter::once(launch.command.to_string())
            .chain(launch.args.iter().cloned())
            .collect(),
        env: environment(launch, network, layout.profile),
        cwd: layout.cwd.clone(),
        hostname: launch.server.to_string(),
        mounts: layout.mounts.clone(),
        ids,
        network,
        egress_socket: egress.as_ref().map(|(_, theirs, _)| theirs.as_raw_fd()),
        cgroup_procs: group.as_ref().map(Group::procs_files).unwrap_or_default(),
        landlock: caps.landlock_abi > 0,
        seccomp: caps.seccomp.is_ok(),
    };
    // The last steps that can fail: the group made above must not outlive them.
    let plan_file = serde_json::to_string(&plan)
        .map_err(|e| e.to_string())
        .and_then(|json| plan_memfd(&json).map_err(|e| e.to_string()))
        .map_err(|e| {
            if let Some(group) = &group {
                group.remove();
            }
            PrepareError(format!("cannot hand the plan over: {e}"))
        })?;
    let plan_fd = plan_file.as_raw_fd();

    let mut command = tokio::process::Command::new(helper);
    command
        .arg0("berth-sandbox")
        .env_clear()
        .env(helper::PLAN_ENV, plan_fd.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let egress_fd = egress.as_ref().map(|(_, theirs, _)| theirs.as_raw_fd());
    // SAFETY: only fcntl, which is async-signal-safe, runs between fork and
    // exec: the descriptors the helper needs must survive the exec.
    unsafe {
        command.pre_exec(move || {
            for fd in std::iter::once(plan_fd).chain(egress_fd) {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let (egress_ours, egress_allow, egress_theirs) = match egress {
        Some((ours, theirs, allow)) => (Some(ours), Some(allow), Some(theirs)),
        None => (None, None, None),
    };
    Ok(Prepared {
        command,
        instance: Instance {
            server: launch.server.to_string(),
            group,
            egress: Mutex::new(egress_ours.zip(egress_allow)),
            helper_end: Mutex::new(egress_theirs),
            plan_file: Mutex::new(Some(plan_file)),
            stop: CancellationToken::new(),
            memory_limit: settings.limits.memory_bytes,
            pids_limit: settings.limits.pids,
            layout,
            outside_uid: ids.outside_uid,
            hinted: Mutex::new(HashSet::new()),
        },
    })
}

/// The plan in an anonymous memory file, read back from its start.
fn plan_memfd(json: &str) -> std::io::Result<OwnedFd> {
    use std::io::{Seek, Write};
    let fd = nix::sys::memfd::memfd_create(
        "berth-sandbox-plan",
        nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
    )?;
    let mut file = std::fs::File::from(fd);
    file.write_all(json.as_bytes())?;
    file.rewind()?;
    Ok(OwnedFd::from(file))
}

/// The state dir exists and, when servers run as `nobody`, belongs to it.
fn prepare_state_dir(dir: &Path, ids: IdMap) -> Result<(), PrepareError> {
    std::fs::create_dir_all(dir).map_err(|e| {
        PrepareError(format!(
            "cannot create the state dir {}: {e}",
            dir.display()
        ))
    })?;
    if ids.privileged {
        std::os::unix::fs::chown(dir, Some(ids.outside_uid), Some(ids.outside_gid)).map_err(
            |e| {
                PrepareError(format!(
                    "cannot hand {} to uid {}: {e}",
                    dir.display(),
                    ids.outside_uid
                ))
            },
        )?;
    }
    Ok(())
}

/// Paths in `writable` the server could not write to anyway: it runs as
/// another uid on the host than their owner.
pub fn unwritable(settings: &Settings) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let ids = IdMap::for_this_process();
    settings
        .writable
        .iter()
        .filter_map(|path| {
            let meta = std::fs::metadata(path).ok()?;
            let mode = meta.mode();
            let can = (meta.uid() == ids.outside_uid && mode & 0o200 != 0)
                || (meta.gid() == ids.outside_gid && mode & 0o020 != 0)
                || mode & 0o002 != 0;
            (!can).then(|| {
                format!(
                    "{} is in sandbox.writable but the server runs as uid {} on the host, which cannot write it (owner uid {}, mode {:o}): chown it to {} or make it group/world-writable",
                    path.display(),
                    ids.outside_uid,
                    meta.uid(),
                    mode & 0o7777,
                    ids.outside_uid
                )
            })
        })
        .collect()
}

/// How a sandboxed process ended, from its cgroup's counters.
#[derive(Debug, Default, Clone, Copy)]
pub struct Ending {
    pub oom_killed: bool,
    pub pids_refused: u64,
}

/// A running sandbox.
pub struct Instance {
    server: String,
    group: Option<Group>,
    egress: Mutex<Option<(UnixStream, AllowList)>>,
    /// The helper's end of the egress socket, closed once the helper has it.
    helper_end: Mutex<Option<OwnedFd>>,
    /// The plan, closed here once the helper has its own copy.
    plan_file: Mutex<Option<OwnedFd>>,
    stop: CancellationToken,
    memory_limit: u64,
    pids_limit: u64,
    layout: Layout,
    outside_uid: u32,
    hinted: Mutex<HashSet<PathBuf>>,
}

impl Instance {
    /// Call once the helper is spawned: closes Berth's copy of the helper's
    /// socket and starts the egress proxy, reporting through `report`.
    pub fn started(&self, report: Report) {
        drop(lock(&self.helper_end).take());
        drop(lock(&self.plan_file).take());
        let Some((ours, allow)) = lock(&self.egress).take() else {
            return;
        };
        let egress = Arc::new(Egress {
            server: self.server.clone(),
            allow,
            report: report.clone(),
        });
        let stop = self.stop.clone();
        tokio::spawn(async move {
            match receive_listener(ours).await {
                Ok(listener) => crate::egress::serve(listener, egress, stop).await,
                Err(e) => {
                    if !stop.is_cancelled() {
                        report(format!("sandbox: the egress proxy did not start: {e}"));
                    }
                }
            }
        });
    }

    /// Freezes every process of the sandbox; `false` if there is no freezer
    /// (the caller then stops the process group with SIGSTOP).
    pub fn freeze(&self) -> bool {
        self.group
            .as_ref()
            .is_some_and(|g| g.can_freeze() && g.freeze().is_ok())
    }

    pub fn thaw(&self) -> bool {
        self.group
            .as_ref()
            .is_some_and(|g| g.can_freeze() && g.thaw().is_ok())
    }

    /// SIGKILLs everything in the sandbox's cgroup.
    pub fn kill(&self) {
        if let Some(group) = &self.group {
            group.kill_all();
        }
    }

    /// After the helper is reaped: what the cgroup saw, then nothing left
    /// (processes killed, cgroup removed, proxy stopped).
    pub fn finish(&self) -> Ending {
        self.stop.cancel();
        let Some(group) = &self.group else {
            return Ending::default();
        };
        let ending = Ending {
            oom_killed: group.oom_kills() > 0,
            pids_refused: group.pids_refused(),
        };
        group.remove();
        ending
    }

    /// How an OOM kill is told: "killed by the OOM killer (memory limit 1 GiB)".
    pub fn oom_description(&self) -> String {
        format!(
            "was killed by the OOM killer (OOM: sandbox memory limit {})",
            crate::policy::bytes(self.memory_limit)
        )
    }

    pub fn pids_limit(&self) -> u64 {
        self.pids_limit
    }

    /// A hint for a line of the server's stderr that names a path the
    /// sandbox hides or makes read-only; once per path.
    pub fn explain(&self, line: &str) -> Option<String> {
        const SYMPTOMS: &[&str] = &[
            "No such file",
            "ENOENT",
            "not found",
            "Cannot find",
            "cannot find",
            "Permission denied",
            "EACCES",
            "Read-only file system",
            "EROFS",
            "can't open",
        ];
        if !SYMPTOMS.iter().any(|s| line.contains(s)) {
            return None;
        }
        let read_only = line.contains("Read-only") || line.contains("EROFS");
        let denied = line.contains("Permission denied") || line.contains("EACCES");
        for word in line.split(|c: char| c.is_whitespace() || "'\"`,()[]{}<>".contains(c)) {
            let word = word.trim_end_matches([':', '.', ';']);
            if !word.starts_with('/') || word.len() < 2 {
                continue;
            }
            // A file about to be created names a directory that may be hidden.
            let Some(existing) = Path::new(word)
                .ancestors()
                .find(|p| std::fs::symlink_metadata(p).is_ok())
            else {
                continue;
            };
            if existing == Path::new("/") {
                continue;
            }
            let server = &self.server;
            let hint = match self.visibility(existing) {
                Visibility::Hidden => format!(
                    "sandbox: {} exists on the host but is hidden from this server; to expose it add it to [servers.{server}.sandbox] readable (or writable)",
                    existing.display()
                ),
                Visibility::ReadOnly if read_only => format!(
                    "sandbox: {} is read-only for this server; to let it write there add it to [servers.{server}.sandbox] writable (its own writable dir is {STATE_DIR})",
                    existing.display()
                ),
                Visibility::ReadOnly | Visibility::Writable if denied => format!(
                    "sandbox: {} is visible but the server runs as uid {} on the host, which the file's permissions refuse",
                    existing.display(),
                    self.outside_uid
                ),
                _ => continue,
            };
            if lock(&self.hinted).insert(existing.to_path_buf()) {
                return Some(hint);
            }
        }
        None
    }

    fn visibility(&self, path: &Path) -> Visibility {
        let mut best: Option<(&Path, Visibility)> = None;
        for m in &self.layout.mounts {
            let (dst, vis) = match m {
                Mount::Bind { dst, writable, .. } => (
                    dst.as_path(),
                    if *writable {
                        Visibility::Writable
                    } else {
                        Visibility::ReadOnly
                    },
                ),
                Mount::Tmpfs { dst, .. } => (dst.as_path(), Visibility::Writable),
                Mount::Hide { dst, .. } => (dst.as_path(), Visibility::Hidden),
                Mount::Proc => (Path::new("/proc"), Visibility::ReadOnly),
                Mount::File { dst, .. } | Mount::Copy { dst, .. } => {
                    (dst.as_path(), Visibility::ReadOnly)
                }
                _ => continue,
            };
            // The deepest mount containing the path decides.
            if path.starts_with(dst) && best.is_none_or(|(b, _)| dst.starts_with(b)) {
                best = Some((dst, vis));
            }
        }
        best.map_or(Visibility::Hidden, |(_, v)| v)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Visibility {
    Hidden,
    ReadOnly,
    Writable,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The proxy's listening socket, sent by the sandbox from its own loopback.
async fn receive_listener(socket: UnixStream) -> std::io::Result<tokio::net::TcpListener> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    socket.set_nonblocking(true)?;
    let socket = tokio::net::UnixStream::from_std(socket)?;
    let receive = async {
        loop {
            socket.readable().await?;
            let got = socket.try_io(tokio::io::Interest::READABLE, || {
                let mut byte = [0u8; 1];
                let mut iov = [std::io::IoSliceMut::new(&mut byte)];
                let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
                let msg = recvmsg::<()>(
                    socket.as_raw_fd(),
                    &mut iov,
                    Some(&mut space),
                    MsgFlags::MSG_CMSG_CLOEXEC,
                )
                .map_err(std::io::Error::from)?;
                if msg.bytes == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the sandbox closed the socket before sending its listener",
                    ));
                }
                for cmsg in msg.cmsgs().map_err(std::io::Error::from)? {
                    if let ControlMessageOwned::ScmRights(fds) = cmsg
                        && let Some(fd) = fds.first()
                    {
                        // SAFETY: SCM_RIGHTS just gave this process a new fd.
                        return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
                    }
                }
                Err(std::io::Error::other(
                    "no listener in the sandbox's message",
                ))
            });
            match got {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    };
    let fd = tokio::time::timeout(Duration::from_secs(30), receive)
        .await
        .map_err(|_| {
            std::io::Error::other("the sandbox did not send its proxy listener within 30 s")
        })??;
    let listener = std::net::TcpListener::from(fd);
    listener.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(listener)
}

/// `berth sandbox show`: the effective policy of a server, as this machine
/// would apply it.
pub fn describe(settings: &Settings, launch: &Launch<'_>) -> String {
    let caps = capabilities();
    let network = network_of(settings);
    let mut out = String::new();
    let ids = IdMap::for_this_process();
    out.push_str(&format!("server: {}\n", launch.server));
    match layout(settings, launch, network) {
        Ok(layout) => {
            out.push_str(&format!(
                "program: {} (profile: {})\n",
                layout.program.display(),
                layout.profile
            ));
            out.push_str(&format!("working directory: {}\n", layout.cwd.display()));
            out.push_str(&format!(
                "runs as: uid {id} gid {id} inside; uid {} gid {} on the host\n",
                ids.outside_uid,
                ids.outside_gid,
                id = crate::policy::INSIDE_ID,
            ));
            out.push_str("namespaces: user, pid (the server is PID 1), mount, ipc, uts, cgroup");
            out.push_str(if network == PlanNetwork::Host {
                "\n"
            } else {
                ", net\n"
            });
            out.push_str(&format!("network: {}\n", settings.network));
            out.push_str(&format!(
                "limits: memory {}, pids {}, cpus {}\n",
                crate::policy::bytes(settings.limits.memory_bytes),
                settings.limits.pids,
                settings.limits.cpus
            ));
            out.push_str(&format!(
                "privileges: no capabilities, no_new_privs; seccomp refuses {}\n",
                crate::filter::denied_names().join(", ")
            ));
            out.push_str(&format!(
                "state dir: {} -> {STATE_DIR} (read-write, also $HOME)\n",
                settings.state_dir.display()
            ));
            out.push_str("root (everything else is invisible):\n");
            for m in &layout.mounts {
                out.push_str(&format!("  {m}\n"));
            }
            for note in &layout.notes {
                out.push_str(&format!("  note: {note}\n"));
            }
            for warning in unwritable(settings) {
                out.push_str(&format!("  WARNING: {warning}\n"));
            }
        }
        Err(e) => out.push_str(&format!("cannot be started: {e}\n")),
    }
    out.push_str("this machine:\n");
    for (ok, line) in caps.lines() {
        out.push_str(&format!("  {} {line}\n", if ok { "ok  " } else { "WARN" }));
    }
    out
}
