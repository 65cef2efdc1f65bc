//! The helper: Berth's own binary, started again as `berth-sandbox` with a
//! [`Plan`] in its environment. Being a fresh single-threaded process, it
//! can `clone` into new namespaces safely (a multi-threaded gateway cannot).
//!
//! ```text
//! Berth ──spawn──▶ helper (host namespaces, in the server's cgroup)
//!                    │ clone(NEWUSER|NEWPID|NEWNS|NEWIPC|NEWUTS|NEWNET|NEWCGROUP)
//!                    ▼
//!                  server, PID 1 of its namespace: maps written by the helper,
//!                  root built and pivoted, ids and capabilities dropped,
//!                  no_new_privs, landlock, seccomp, then execve
//! ```
//!
//! The helper stays as the server's supervisor: it forwards signals, and
//! exits the way the server did. If the helper dies, the server gets
//! SIGKILL (parent-death signal) and with it everything in its namespace.

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::stat::Mode;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Gid, Pid, Uid, pivot_root};

use serde::{Deserialize, Serialize};

use crate::policy::{INSIDE_ID, IdMap, Mount, PROXY_PORT, Plan, PlanNetwork};

/// The environment variable that names the descriptor holding the plan.
/// (A descriptor, not the plan itself: the plan holds the server's
/// resolved secrets, and a process's initial environment stays readable in
/// `/proc` for its whole life.)
pub const PLAN_ENV: &str = "BERTH_SANDBOX_PLAN_FD";
/// Set instead of a plan: the helper only checks what the kernel allows.
pub const PROBE_ENV: &str = "BERTH_SANDBOX_PROBE";

static INSTALLED: OnceLock<PathBuf> = OnceLock::new();

/// Call first thing in `main` of a binary that starts sandboxed servers:
/// in the helper it does the helper's work and never returns; otherwise it
/// records that this binary can be the helper.
pub fn enter_if_requested() {
    if let Some(fd) = std::env::var_os(PLAN_ENV) {
        let code = match read_plan(&fd.to_string_lossy()) {
            Ok(plan) => supervise(plan),
            Err(e) => {
                eprintln!("berth-sandbox: unreadable plan: {e}");
                125
            }
        };
        std::process::exit(code);
    }
    if std::env::var_os(PROBE_ENV).is_some() {
        std::process::exit(probe());
    }
    let _ = INSTALLED.set(PathBuf::from("/proc/self/exe"));
}

/// Reads and closes the plan's descriptor.
fn read_plan(fd: &str) -> Result<Plan, String> {
    let fd: RawFd = fd.parse().map_err(|_| format!("bad descriptor {fd:?}"))?;
    if fd <= 2 {
        return Err(format!("bad descriptor {fd}"));
    }
    // SAFETY: Berth passed this descriptor for the helper alone to consume.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let mut text = Vec::new();
    file.read_to_end(&mut text).map_err(|e| e.to_string())?;
    serde_json::from_slice(&text).map_err(|e| e.to_string())
}

/// The helper program, if [`enter_if_requested`] was called.
pub(crate) fn installed() -> Option<&'static Path> {
    INSTALLED.get().map(PathBuf::as_path)
}

/// Signals the helper passes on to the server.
const FORWARDED: &[Signal] = &[
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// The namespaces every sandbox gets; the network one unless `host`.
pub(crate) fn clone_flags(network: PlanNetwork) -> libc::c_int {
    let mut flags = libc::CLONE_NEWPID
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWCGROUP;
    if network != PlanNetwork::Host {
        flags |= libc::CLONE_NEWNET;
    }
    flags
}

/// Runs the server under `plan` and returns the exit code to mirror.
fn supervise(plan: Plan) -> i32 {
    // Joined before the clone so the server starts inside its limits, and
    // its cgroup namespace is rooted at its own group.
    for procs in &plan.cgroup_procs {
        // "0" is the writer itself: the kernel then skips the global
        // thread-group lock, whose write side waits for an RCU grace period
        // (~10 ms a spawn on v1, measured).
        if let Err(e) = std::fs::write(procs, "0") {
            eprintln!("berth-sandbox: cannot join cgroup {}: {e}", procs.display());
            return 125;
        }
    }
    let programs = if plan.seccomp {
        match crate::filter::programs() {
            Ok(p) => p,
            Err(e) => {
                eprintln!("berth-sandbox: {e}");
                return 125;
            }
        }
    } else {
        Vec::new()
    };
    let mut forwarded = SigSet::empty();
    for sig in FORWARDED {
        forwarded.add(*sig);
    }
    forwarded.add(Signal::SIGCHLD);
    // Blocked before the clone: a server that exits at once must still be
    // seen by sigwait. The child unblocks before exec.
    let mut old_mask = SigSet::empty();
    if let Err(e) = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&forwarded), Some(&mut old_mask)) {
        eprintln!("berth-sandbox: sigprocmask: {e}");
        return 125;
    }
    let (Ok((go_read, go_write)), Ok((ready_read, ready_write))) =
        (nix::unistd::pipe(), nix::unistd::pipe())
    else {
        eprintln!("berth-sandbox: pipe: {}", std::io::Error::last_os_error());
        return 125;
    };
    // Root builds the sandbox's root with its own credentials and creates
    // the user namespace last (a namespace whose only id is unprivileged
    // could not read root-owned install dirs to bind them). An unprivileged
    // helper needs the user namespace first, to be allowed to mount at all.
    let mut flags = clone_flags(plan.network);
    if !plan.ids.privileged {
        flags |= libc::CLONE_NEWUSER;
    }

    let child = match spawn_namespaced(flags) {
        Ok(Some(pid)) => pid,
        Ok(None) => {
            drop(go_write);
            drop(ready_read);
            let pipes = Pipes {
                go: std::fs::File::from(go_read),
                ready: std::fs::File::from(ready_write),
            };
            let code = match enter(&plan, pipes, &programs, &old_mask) {
                Ok(never) => match never {},
                Err(e) => {
                    eprintln!("berth-sandbox: {e}");
                    e.code()
                }
            };
            // SAFETY: _exit ends the cloned child without running the
            // parent's atexit handlers or flushing its copied buffers.
            unsafe { libc::_exit(code) }
        }
        Err(e) => {
            eprintln!(
                "berth-sandbox: cannot create namespaces ({e}); user namespaces may be disabled (see `berth sandbox show`)"
            );
            return 125;
        }
    };
    drop(go_read);
    drop(ready_write);
    let mut go = std::fs::File::from(go_write);
    let mut ready = std::fs::File::from(ready_read);
    if let Err(e) = handshake(child, &plan, &mut go, &mut ready) {
        eprintln!("berth-sandbox: {e}");
        let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
        let _ = waitpid(child, None);
        return 125;
    }
    if let Some(fd) = plan.egress_socket {
        // The server's copy is the one that matters.
        // SAFETY: the helper's own inherited copy, not used by the helper.
        unsafe { libc::close(fd) };
    }
    // The server holds its own stdin and stdout; the helper keeping copies
    // would hide the server's end of stdout from Berth.
    detach_stdio();
    // `go` stays open: the server treats its closing as the helper's death.
    let code = wait_and_forward(child, &forwarded);
    drop(go);
    code
}

/// The helper's side of the setup: the id maps are written when the user
/// namespace exists (at once, or once the child has built its root).
fn handshake(
    child: Pid,
    plan: &Plan,
    go: &mut std::fs::File,
    ready: &mut std::fs::File,
) -> Result<(), String> {
    if !plan.ids.privileged {
        write_id_maps(child, plan.ids).map_err(|e| format!("cannot map ids: {e}"))?;
    }
    go.write_all(b"g")
        .map_err(|e| format!("the server's setup is gone: {e}"))?;
    let mut byte = [0u8; 1];
    match ready.read(&mut byte) {
        Ok(1) => {}
        // The child failed and said why on stderr.
        _ => return Err("the server's setup failed".into()),
    }
    if plan.ids.privileged {
        write_id_maps(child, plan.ids).map_err(|e| format!("cannot map ids: {e}"))?;
    }
    go.write_all(b"g")
        .map_err(|e| format!("the server's setup is gone: {e}"))
}

/// `clone` with namespace flags, fork-style (the child continues here).
fn spawn_namespaced(flags: libc::c_int) -> nix::Result<Option<Pid>> {
    // SAFETY: the helper is single-threaded, so a fork-style clone leaves
    // the child a consistent copy; the child only sets itself up and execs.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match ret {
        -1 => Err(nix::errno::Errno::last()),
        0 => Ok(None),
        pid => Ok(Some(Pid::from_raw(pid as i32))),
    }
}

fn write_id_maps(child: Pid, ids: IdMap) -> std::io::Result<()> {
    let proc = PathBuf::from(format!("/proc/{child}"));
    if !ids.privileged {
        std::fs::write(proc.join("setgroups"), "deny")?;
    }
    std::fs::write(
        proc.join("uid_map"),
        format!("{INSIDE_ID} {} 1\n", ids.outside_uid),
    )?;
    std::fs::write(
        proc.join("gid_map"),
        format!("{INSIDE_ID} {} 1\n", ids.outside_gid),
    )?;
    Ok(())
}

fn detach_stdio() {
    if let Ok(null) = std::fs::File::open("/dev/null") {
        // SAFETY: dup2 onto the standard descriptors; `null` outlives the calls.
        unsafe {
            libc::dup2(null.as_raw_fd(), 0);
            libc::dup2(null.as_raw_fd(), 1);
        }
    }
}

/// Waits for the server, passing on the signals Berth sends; returns the
/// server's exit code, or dies of the server's signal.
fn wait_and_forward(child: Pid, set: &SigSet) -> i32 {
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, signal, _)) => die_of(signal),
            Ok(_) => {}
            Err(nix::errno::Errno::ECHILD) => return 125,
            Err(_) => {}
        }
        match set.wait() {
            Ok(Signal::SIGCHLD) => {}
            Ok(signal) => {
                let _ = nix::sys::signal::kill(child, signal);
            }
            Err(_) => {}
        }
    }
}

/// Ends the helper with `signal`, so Berth sees how the server ended.
fn die_of(signal: Signal) -> ! {
    let mut all = SigSet::empty();
    all.add(signal);
    // SAFETY: resetting a disposition to the default is always sound.
    unsafe {
        let _ = nix::sys::signal::signal(signal, nix::sys::signal::SigHandler::SigDfl);
    }
    let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&all), None);
    let _ = nix::sys::signal::kill(Pid::this(), signal);
    std::process::exit(128 + signal as i32)
}

/// A step of the server's setup that failed.
pub(crate) struct SetupError {
    step: String,
    why: String,
    code: i32,
}

impl SetupError {
    fn code(&self) -> i32 {
        self.code
    }
}

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.step, self.why)
    }
}

fn step<E: std::fmt::Display>(what: impl Into<String>) -> impl FnOnce(E) -> SetupError {
    let step = what.into();
    move |e| SetupError {
        step,
        why: e.to_string(),
        code: 125,
    }
}

/// The child's ends of the two pipes to the helper.
struct Pipes {
    go: std::fs::File,
    ready: std::fs::File,
}

impl Pipes {
    fn wait_for_helper(&mut self) -> Result<(), SetupError> {
        let mut byte = [0u8; 1];
        match self.go.read(&mut byte) {
            Ok(1) => Ok(()),
            _ => Err(step("waiting for the helper")("the helper is gone")),
        }
    }
}

/// The server's side: build and enter the sandbox, then exec. Returns only
/// on failure.
fn enter(
    plan: &Plan,
    mut pipes: Pipes,
    programs: &[seccompiler::BpfProgram],
    mask: &SigSet,
) -> Result<std::convert::Infallible, SetupError> {
    pipes.wait_for_helper()?;
    if let PlanNetwork::Isolated { proxy } = plan.network {
        loopback_up().map_err(step("bringing up loopback"))?;
        if proxy {
            hand_over_proxy_listener(plan.egress_socket).map_err(step("egress proxy listener"))?;
        }
    }
    nix::unistd::sethostname(&plan.hostname).map_err(step("sethostname"))?;
    build_root(plan)?;
    std::env::set_current_dir(&plan.cwd).map_err(step(format!(
        "working directory {} is not visible in the sandbox",
        plan.cwd.display()
    )))?;
    if plan.ids.privileged {
        // Root's supplementary groups would still open group-readable files.
        nix::unistd::setgroups(&[]).map_err(step("setgroups"))?;
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER)
            .map_err(step("creating the user namespace"))?;
    }
    pipes
        .ready
        .write_all(b"r")
        .map_err(step("telling the helper"))?;
    pipes.wait_for_helper()?;
    drop_privileges()?;
    // Set after the uid change, which clears it; a helper that died
    // meanwhile is noticed through the pipe it held.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(step("PR_SET_PDEATHSIG"))?;
    if helper_gone(&pipes.go) {
        return Err(step("waiting for the helper")("the helper is gone"));
    }
    drop(pipes);
    if plan.landlock {
        crate::walls::landlock(plan).map_err(step("landlock"))?;
    }
    // Nothing Berth or the helper held open reaches the server: only stdio.
    // SAFETY: close_range only closes descriptors of this process.
    if unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) } < 0 {
        return Err(step("closing inherited descriptors")(
            std::io::Error::last_os_error(),
        ));
    }
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(mask), None).map_err(step("sigprocmask"))?;
    if plan.seccomp {
        crate::filter::apply(programs).map_err(step("seccomp"))?;
    }
    exec(plan)
}

fn helper_gone(go: &std::fs::File) -> bool {
    let mut fds = [libc::pollfd {
        fd: go.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    // SAFETY: one valid pollfd, zero timeout.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) };
    n > 0 && fds[0].revents & (libc::POLLHUP | libc::POLLERR) != 0
}

fn exec(plan: &Plan) -> Result<std::convert::Infallible, SetupError> {
    let cstring = |s: &str| CString::new(s).map_err(step("a NUL byte in the command line"));
    let program = cstring(&plan.program.to_string_lossy())?;
    let argv = plan
        .argv
        .iter()
        .map(|a| cstring(a))
        .collect::<Result<Vec<_>, _>>()?;
    let env = plan
        .env
        .iter()
        .map(|(k, v)| cstring(&format!("{k}={v}")))
        .collect::<Result<Vec<_>, _>>()?;
    let err = nix::unistd::execve(&program, &argv, &env).unwrap_err();
    Err(SetupError {
        step: format!("cannot run {}", plan.program.display()),
        why: format!("{err} (is it visible in the sandbox? see `berth sandbox show`)"),
        code: 127,
    })
}

/// `ip link set lo up`, in the new network namespace.
fn loopback_up() -> std::io::Result<()> {
    // SAFETY: a datagram socket used only for the two interface ioctls.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just opened and is owned here.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; the name fits in IFNAMSIZ.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write `req` in place.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Opens the proxy's listening socket on the sandbox's own loopback and
/// sends it to Berth, which accepts on it from outside the namespace.
fn hand_over_proxy_listener(socket: Option<RawFd>) -> std::io::Result<()> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let socket = socket.ok_or_else(|| std::io::Error::other("no socket to Berth"))?;
    // SAFETY: the plan names an fd Berth left open for exactly this.
    let socket = unsafe { OwnedFd::from_raw_fd(socket) };
    let listener = std::net::TcpListener::bind(("127.0.0.1", PROXY_PORT))?;
    let fds = [listener.as_raw_fd()];
    let iov = [std::io::IoSlice::new(b"L")];
    sendmsg::<()>(
        socket.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )?;
    Ok(())
}

/// Builds the new root on a tmpfs and pivots into it; the host's root is
/// detached and gone. Paths of the host are reached under `/oldroot`
/// while building (bubblewrap's layout).
fn build_root(plan: &Plan) -> Result<(), SetupError> {
    // Sources are opened while the host's root is still `/`: a path through
    // a symlinked directory (a release dir, a venv link) resolves as on the
    // host, and the bind then takes the open file, not the path.
    let sources = plan
        .mounts
        .iter()
        .map(|m| match m {
            Mount::Bind { src, .. } => open_source(src).map(Some).map_err(step(format!("{m}"))),
            _ => Ok(None),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let none: Option<&str> = None;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)
        .map_err(step("making mounts private"))?;
    // A scratch root: the host's / moves under it, the new root is built beside.
    mount(
        Some("tmpfs"),
        "/tmp",
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("size=1m,mode=0755"),
    )
    .map_err(step("mounting the scratch tmpfs"))?;
    for dir in ["/tmp/newroot", "/tmp/oldroot"] {
        nix::unistd::mkdir(dir, Mode::from_bits_truncate(0o755))
            .map_err(step(format!("mkdir {dir}")))?;
    }
    pivot_root("/tmp", "/tmp/oldroot").map_err(step("pivot_root to the scratch root"))?;
    std::env::set_current_dir("/").map_err(step("chdir /"))?;
    mount(
        Some("tmpfs"),
        "/newroot",
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("size=4m,mode=0755"),
    )
    .map_err(step("mounting the new root"))?;

    for (m, source) in plan.mounts.iter().zip(&sources) {
        apply_mount(m, source.as_ref()).map_err(step(format!("{m}")))?;
    }

    // The root itself becomes read-only: a server writes only to /state,
    // /tmp and what `writable` names.
    let root_flags = MsFlags::MS_REMOUNT
        | MsFlags::MS_BIND
        | MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV;
    mount(none, "/newroot", none, root_flags, none).map_err(step("making the root read-only"))?;
    std::env::set_current_dir("/newroot").map_err(step("chdir /newroot"))?;
    pivot_root(".", ".").map_err(step("pivot_root to the new root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(step("detaching the host's root"))?;
    std::env::set_current_dir("/").map_err(step("chdir /"))?;
    Ok(())
}

fn inside(path: &Path) -> PathBuf {
    Path::new("/newroot").join(path.strip_prefix("/").unwrap_or(path))
}

fn host(path: &Path) -> PathBuf {
    Path::new("/oldroot").join(path.strip_prefix("/").unwrap_or(path))
}

/// `src` opened as a path-only descriptor, and whether it is a directory.
fn open_source(src: &Path) -> std::io::Result<(OwnedFd, bool)> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(src)?;
    let directory = file.metadata()?.is_dir();
    Ok((OwnedFd::from(file), directory))
}

fn apply_mount(m: &Mount, source: Option<&(OwnedFd, bool)>) -> std::io::Result<()> {
    let none: Option<&str> = None;
    match m {
        Mount::Bind { dst, writable, .. } => {
            let (fd, directory) =
                source.ok_or_else(|| std::io::Error::other("source not opened"))?;
            // The host's /proc still knows this process: its fd is the source.
            let src = PathBuf::from(format!("/oldroot/proc/self/fd/{}", fd.as_raw_fd()));
            let dst = inside(dst);
            make_mount_point(&dst, *directory)?;
            mount(
                Some(&src),
                &dst,
                none,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                none,
            )?;
            let mut flags =
                MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
            if !writable {
                flags |= MsFlags::MS_RDONLY;
            }
            flags |= locked_flags(&dst);
            mount(none, &dst, none, flags, none)?;
        }
        Mount::Device { name } => {
            let src = host(&Path::new("/dev").join(name));
            let dst = inside(&Path::new("/dev").join(name));
            make_mount_point(&dst, false)?;
            mount(Some(&src), &dst, none, MsFlags::MS_BIND, none)?;
        }
        Mount::Tmpfs { dst, size, mode } => {
            let dst = inside(dst);
            make_mount_point(&dst, true)?;
            let data = format!("size={size},mode={mode:o}");
            mount(
                Some("tmpfs"),
                &dst,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some(data.as_str()),
            )?;
        }
        Mount::Proc => {
            let dst = inside(Path::new("/proc"));
            make_mount_point(&dst, true)?;
            mount(
                Some("proc"),
                &dst,
                Some("proc"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                none,
            )?;
        }
        Mount::File { dst, contents } => {
            let dst = inside(dst);
            if let Some(parent) = dst.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&dst, contents)?;
        }
        Mount::Copy { src, dst } => {
            let dst = inside(dst);
            if let Some(parent) = dst.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::copy(host(src), &dst)?;
        }
        Mount::Symlink { dst, target } => {
            let dst = inside(dst);
            if let Some(parent) = dst.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::os::unix::fs::symlink(target, &dst)?;
        }
        Mount::Dir { dst } => std::fs::create_dir_all(inside(dst))?,
        Mount::Hide { dst, directory } => {
            let dst = inside(dst);
            let flags =
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
            if *directory {
                mount(
                    Some("tmpfs"),
                    &dst,
                    Some("tmpfs"),
                    flags,
                    Some("size=4k,mode=0555"),
                )?;
            } else {
                let null = host(Path::new("/dev/null"));
                mount(Some(&null), &dst, none, MsFlags::MS_BIND, none)?;
                mount(
                    none,
                    &dst,
                    none,
                    MsFlags::MS_REMOUNT | MsFlags::MS_BIND | flags,
                    none,
                )?;
            }
        }
    }
    Ok(())
}

/// Creates `path` (a directory, or an empty file to bind a file onto)
/// unless it exists.
fn make_mount_point(path: &Path, directory: bool) -> std::io::Result<()> {
    if std::fs::symlink_metadata(path).is_ok() {
        return Ok(());
    }
    if directory {
        std::fs::create_dir_all(path)
    } else {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::File::create(path).map(drop)
    }
}

/// Flags of the mount under `path` that a user namespace may not clear
/// (the kernel locks them): kept on a bind's remount or it is refused.
fn locked_flags(path: &Path) -> MsFlags {
    let Ok(stat) = nix::sys::statvfs::statvfs(path) else {
        return MsFlags::empty();
    };
    use nix::sys::statvfs::FsFlags;
    let f = stat.flags();
    let mut flags = MsFlags::empty();
    for (from, to) in [
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
    ] {
        if f.contains(from) {
            flags |= to;
        }
    }
    flags
}

/// Drops to the unprivileged id with no capabilities and `no_new_privs`.
fn drop_privileges() -> Result<(), SetupError> {
    use caps::CapSet;
    // Emptied while CAP_SETPCAP is still held.
    for cap in caps::all() {
        caps::drop(None, CapSet::Bounding, cap).map_err(step("dropping the bounding set"))?;
    }
    let gid = Gid::from_raw(INSIDE_ID);
    let uid = Uid::from_raw(INSIDE_ID);
    nix::unistd::setresgid(gid, gid, gid).map_err(step("setresgid"))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(step("setresuid"))?;
    for set in [
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        caps::clear(None, set).map_err(step("clearing capabilities"))?;
    }
    nix::sys::prctl::set_no_new_privs().map_err(step("PR_SET_NO_NEW_PRIVS"))?;
    Ok(())
}

#[derive(Serialize, Deserialize)]
/// What the helper found in probe mode; `None` means the feature works.
pub(crate) struct HelperReport {
    pub(crate) namespaces: Option<String>,
    pub(crate) seccomp: Option<String>,
}

/// In the helper process: try the real thing and print a [`HelperReport`].
fn probe() -> i32 {
    let report = HelperReport {
        namespaces: try_namespaces().err(),
        seccomp: try_seccomp().err(),
    };
    println!("{}", serde_json::to_string(&report).unwrap_or_default());
    0
}

fn try_namespaces() -> Result<(), String> {
    let flags = clone_flags(PlanNetwork::Isolated { proxy: false }) | libc::CLONE_NEWUSER;
    // The child waits on this pipe so the maps are written to a live process.
    let (wait_read, wait_write) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    // The probe helper is single-threaded, as spawn_namespaced requires.
    let Some(pid) = spawn_namespaced(flags).map_err(|e| e.to_string())? else {
        // The cloned child: wait for the maps, then end.
        drop(wait_write);
        let mut byte = [0u8; 1];
        let _ = nix::unistd::read(&wait_read, &mut byte);
        // SAFETY: ends the cloned child.
        unsafe { libc::_exit(0) }
    };
    drop(wait_read);
    // The mapping the real helper writes must be accepted too.
    let mapped = write_id_maps(pid, IdMap::for_this_process());
    drop(wait_write);
    let _ = nix::sys::wait::waitpid(pid, None);
    mapped.map_err(|e| format!("writing the id maps: {e}"))
}

fn try_seccomp() -> Result<(), String> {
    let programs = crate::filter::programs()?;
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("PR_SET_NO_NEW_PRIVS: {e}"))?;
    crate::filter::apply(&programs)
}
