//! One cgroup per sandboxed process, on cgroup v1 (one hierarchy per
//! controller) or v2 (the unified hierarchy): limits, freezing, killing
//! everything inside, and the OOM and pids-limit counters.
//!
//! Written against cgroupfs directly: the files *are* the kernel's API, and
//! the handful used here (limits, `freezer.state`/`cgroup.freeze`,
//! `cgroup.kill`, `memory.events`/`memory.oom_control`, `pids.events`) do
//! not justify youki's `libcgroups` (OCI resource structs, a second `nix`)
//! or kata's `cgroups-rs` (an old `nix`, `zbus`).
//!
//! Groups live under Berth's own cgroup (so a limit on Berth bounds its
//! servers too), in `berth-<pid>/`, so gateways sharing a machine never
//! collide.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::policy::Limits;

/// v1 controllers used; `cpu` and `freezer` are optional, `memory` and
/// `pids` are what makes a limit a limit.
const V1_CONTROLLERS: &[&str] = &["memory", "pids", "cpu", "freezer"];
const V2_CONTROLLERS: &[&str] = &["memory", "pids", "cpu"];

/// Where this gateway's groups go.
#[derive(Debug, Clone)]
pub enum Cgroups {
    /// controller name → Berth's own directory in that hierarchy, + `berth-<pid>`.
    V1(Vec<(&'static str, PathBuf)>),
    /// `<Berth's own cgroup>/berth-<pid>`, and the controllers usable there.
    V2 {
        base: PathBuf,
        controllers: Vec<&'static str>,
    },
}

static NEXT: AtomicU64 = AtomicU64::new(1);

impl Cgroups {
    /// Finds the hierarchies from `/proc/self/mountinfo` and this process's
    /// place in them, and creates `berth-<pid>/`. `Err` says why there is
    /// nothing usable (not mounted, not writable, ...).
    pub fn detect() -> Result<Cgroups, String> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
        let leaf = format!("berth-{}", std::process::id());
        let v1: Vec<(&'static str, PathBuf)> = V1_CONTROLLERS
            .iter()
            .filter_map(|c| {
                let mount = v1_mount(&mountinfo, c)?;
                let rel = own_path(&own, |ctrls| ctrls.split(',').any(|x| x == *c))?;
                Some((*c, mount.join(rel.trim_start_matches('/')).join(&leaf)))
            })
            .collect();
        if v1.iter().any(|(c, _)| *c == "memory") {
            let mut made = Vec::new();
            let mut refused = Vec::new();
            for (c, dir) in v1 {
                match std::fs::create_dir_all(&dir) {
                    Ok(()) => made.push((c, dir)),
                    Err(e) => refused.push(format!("{c} ({}: {e})", dir.display())),
                }
            }
            return if made.iter().any(|(c, _)| *c == "memory") {
                if !refused.is_empty() {
                    tracing::warn!("cgroup v1: controllers not usable: {}", refused.join(", "));
                }
                Ok(Cgroups::V1(made))
            } else {
                Err(format!(
                    "cgroup v1 is mounted but not writable by this user: {}",
                    refused.join(", ")
                ))
            };
        }
        let root =
            v2_mount(&mountinfo).ok_or("no cgroup v1 memory hierarchy and no cgroup2 mount")?;
        let rel = own_path(&own, |ctrls| ctrls.is_empty())
            .ok_or("this process has no cgroup v2 path in /proc/self/cgroup")?;
        let parent = root.join(rel.trim_start_matches('/'));
        let base = parent.join(&leaf);
        std::fs::create_dir_all(&base)
            .map_err(|e| format!("cgroup v2: cannot create {}: {e}", base.display()))?;
        // Controllers must be enabled at every level down to the groups; the
        // kernel refuses that in a group that holds processes (Berth's own),
        // which is why a service manager should delegate a subtree.
        let available =
            std::fs::read_to_string(parent.join("cgroup.controllers")).unwrap_or_default();
        let mut controllers = Vec::new();
        for c in V2_CONTROLLERS {
            if !available.split_whitespace().any(|x| x == *c) {
                continue;
            }
            let enable = format!("+{c}");
            let ok = write(&parent.join("cgroup.subtree_control"), &enable).is_ok()
                && write(&base.join("cgroup.subtree_control"), &enable).is_ok();
            if ok {
                controllers.push(*c);
            }
        }
        if controllers.len() < V2_CONTROLLERS.len() {
            tracing::warn!(
                "cgroup v2: only [{}] of memory, pids, cpu can be enabled under {} (a cgroup that holds processes cannot delegate controllers: run Berth in a delegated cgroup, e.g. systemd Delegate=yes); freezing and killing still work",
                controllers.join(", "),
                parent.display()
            );
        }
        Ok(Cgroups::V2 { base, controllers })
    }

    /// "v1 (memory, pids, cpu, freezer)" or "v2 (memory, pids, cpu)".
    pub fn describe(&self) -> String {
        match self {
            Cgroups::V1(dirs) => format!(
                "v1 ({})",
                dirs.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", ")
            ),
            Cgroups::V2 { controllers, .. } => format!("v2 ({})", controllers.join(", ")),
        }
    }

    /// A new group for one process of `server`, with `limits` applied.
    pub fn create(&self, server: &str, limits: &Limits) -> io::Result<Group> {
        let name = format!("{server}-{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let group = match self {
            Cgroups::V1(dirs) => {
                Group::V1(dirs.iter().map(|(c, dir)| (*c, dir.join(&name))).collect())
            }
            Cgroups::V2 { base, .. } => Group::V2(base.join(&name)),
        };
        for dir in group.dirs() {
            std::fs::create_dir(dir)?;
        }
        if let Err(e) = group.limit(limits) {
            group.remove();
            return Err(e);
        }
        Ok(group)
    }

    /// Removes `berth-<pid>/` (when Berth stops) and the empty groups left
    /// by gateways that are gone.
    pub fn tidy(&self, this_gateway_too: bool) {
        for base in self.bases() {
            let Some(parent) = base.parent() else {
                continue;
            };
            let Ok(entries) = std::fs::read_dir(parent) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("berth-")) else {
                    continue;
                };
                let ours = pid == std::process::id().to_string();
                let gone = !Path::new("/proc").join(pid).exists();
                if (ours && this_gateway_too) || (!ours && gone) {
                    let dir = entry.path();
                    if let Ok(children) = std::fs::read_dir(&dir) {
                        for child in children.flatten().filter(|c| c.path().is_dir()) {
                            let _ = std::fs::remove_dir(child.path());
                        }
                    }
                    let _ = std::fs::remove_dir(&dir);
                }
            }
        }
    }

    fn bases(&self) -> Vec<PathBuf> {
        match self {
            Cgroups::V1(dirs) => dirs.iter().map(|(_, d)| d.clone()).collect(),
            Cgroups::V2 { base, .. } => vec![base.clone()],
        }
    }
}

/// One process's group.
#[derive(Debug)]
pub enum Group {
    V1(Vec<(&'static str, PathBuf)>),
    V2(PathBuf),
}

impl Group {
    fn dirs(&self) -> Vec<&Path> {
        match self {
            Group::V1(dirs) => dirs.iter().map(|(_, d)| d.as_path()).collect(),
            Group::V2(dir) => vec![dir.as_path()],
        }
    }

    fn dir(&self, controller: &str) -> Option<&Path> {
        match self {
            Group::V1(dirs) => dirs
                .iter()
                .find(|(c, _)| *c == controller)
                .map(|(_, d)| d.as_path()),
            Group::V2(dir) => Some(dir),
        }
    }

    fn limit(&self, limits: &Limits) -> io::Result<()> {
        let period: u64 = 100_000;
        let quota = ((limits.cpus * period as f64) as u64).max(1000);
        match self {
            Group::V1(_) => {
                if let Some(dir) = self.dir("memory") {
                    write(
                        &dir.join("memory.limit_in_bytes"),
                        &limits.memory_bytes.to_string(),
                    )?;
                    // With swap accounting, swap is capped too (no swap, no escape).
                    let memsw = dir.join("memory.memsw.limit_in_bytes");
                    if memsw.exists() {
                        write(&memsw, &limits.memory_bytes.to_string())?;
                    }
                }
                if let Some(dir) = self.dir("pids") {
                    write(&dir.join("pids.max"), &limits.pids.to_string())?;
                }
                if let Some(dir) = self.dir("cpu") {
                    write(&dir.join("cpu.cfs_period_us"), &period.to_string())?;
                    write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
                }
            }
            Group::V2(dir) => {
                let set = |file: &str, value: String| {
                    let path = dir.join(file);
                    if path.exists() {
                        write(&path, &value)
                    } else {
                        Ok(())
                    }
                };
                set("memory.max", limits.memory_bytes.to_string())?;
                set("memory.swap.max", "0".into())?;
                set("pids.max", limits.pids.to_string())?;
                set("cpu.max", format!("{quota} {period}"))?;
            }
        }
        Ok(())
    }

    /// The files a single-threaded process writes `0` (itself) into to join
    /// the group. On v1 that is `tasks`: moving the calling thread skips the
    /// global thread-group lock, whose write side waits for an RCU grace
    /// period (~10 ms per spawn when spawns are spread out, measured).
    pub fn procs_files(&self) -> Vec<PathBuf> {
        let file = match self {
            Group::V1(_) => "tasks",
            Group::V2(_) => "cgroup.procs",
        };
        self.dirs().iter().map(|d| d.join(file)).collect()
    }

    /// Whether the group can be frozen (v1 needs the freezer controller).
    pub fn can_freeze(&self) -> bool {
        match self {
            Group::V1(_) => self.dir("freezer").is_some(),
            Group::V2(_) => true,
        }
    }

    pub fn freeze(&self) -> io::Result<()> {
        self.set_frozen(true)
    }

    pub fn thaw(&self) -> io::Result<()> {
        self.set_frozen(false)
    }

    fn set_frozen(&self, frozen: bool) -> io::Result<()> {
        match self {
            Group::V1(_) => {
                let dir = self
                    .dir("freezer")
                    .ok_or_else(|| io::Error::other("no freezer controller"))?;
                write(
                    &dir.join("freezer.state"),
                    if frozen { "FROZEN" } else { "THAWED" },
                )
            }
            Group::V2(dir) => write(&dir.join("cgroup.freeze"), if frozen { "1" } else { "0" }),
        }
    }

    /// SIGKILLs every process in the group: `cgroup.kill` on v2; on v1,
    /// frozen first so nothing forks while the list is read.
    pub fn kill_all(&self) {
        if let Group::V2(dir) = self {
            let kill = dir.join("cgroup.kill");
            if kill.exists() && write(&kill, "1").is_ok() {
                return;
            }
        }
        let frozen = self.can_freeze() && self.freeze().is_ok();
        for _ in 0..3 {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                // SAFETY: kill(2) has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        if frozen {
            let _ = self.thaw();
        }
    }

    fn pids(&self) -> Vec<i32> {
        let Some(dir) = self.dirs().first().map(|d| d.to_path_buf()) else {
            return Vec::new();
        };
        std::fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// How many times the kernel's OOM killer killed a process in the group.
    pub fn oom_kills(&self) -> u64 {
        match self {
            Group::V1(_) => self
                .dir("memory")
                .map(|d| counter(&d.join("memory.oom_control"), "oom_kill"))
                .unwrap_or(0),
            Group::V2(dir) => counter(&dir.join("memory.events"), "oom_kill"),
        }
    }

    /// How many forks the pids limit refused.
    pub fn pids_refused(&self) -> u64 {
        self.dir("pids")
            .map(|d| counter(&d.join("pids.events"), "max"))
            .unwrap_or(0)
    }

    /// Kills what is left, then removes the group (the kernel needs a
    /// moment to let go of the last exited process).
    pub fn remove(&self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        for dir in self.dirs() {
            loop {
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(_) if Instant::now() < deadline => {
                        self.kill_all();
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => {
                        tracing::warn!("cannot remove cgroup {}: {e}", dir.display());
                        break;
                    }
                }
            }
        }
    }
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    std::fs::write(path, value)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// `key N` from a flat-keyed cgroup file.
fn counter(path: &Path, key: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find_map(|line| {
            let (k, v) = line.split_once(' ')?;
            (k == key).then(|| v.trim().parse().ok()).flatten()
        })
        .unwrap_or(0)
}

/// The mount point of the v1 hierarchy holding `controller`.
fn v1_mount(mountinfo: &str, controller: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut fs = right.split_whitespace();
        if fs.next()? != "cgroup" {
            return None;
        }
        let options = fs.nth(1)?;
        options
            .split(',')
            .any(|o| o == controller)
            .then(|| PathBuf::from(left.split_whitespace().nth(4).unwrap_or("")))
    })
}

fn v2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        (right.split_whitespace().next()? == "cgroup2")
            .then(|| PathBuf::from(left.split_whitespace().nth(4).unwrap_or("")))
    })
}

/// This process's path in the hierarchy whose controller list matches.
fn own_path(proc_cgroup: &str, matches: impl Fn(&str) -> bool) -> Option<String> {
    proc_cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let _id = parts.next()?;
        let controllers = parts.next()?;
        let path = parts.next()?;
        matches(controllers).then(|| path.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_and_proc_cgroup_are_read() {
        let mountinfo = "\
30 25 0:26 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory
31 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
32 25 0:28 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
";
        assert_eq!(
            v1_mount(mountinfo, "memory"),
            Some("/sys/fs/cgroup/memory".into())
        );
        assert_eq!(
            v1_mount(mountinfo, "cpu"),
            Some("/sys/fs/cgroup/cpu,cpuacct".into())
        );
        assert_eq!(v1_mount(mountinfo, "pids"), None);
        assert_eq!(v2_mount(mountinfo), Some("/sys/fs/cgroup/unified".into()));
        let own = "4:memory:/a/b\n1:cpu,cpuacct:/\n0::/user.slice\n";
        assert_eq!(
            own_path(own, |c| c.split(',').any(|x| x == "cpu")),
            Some("/".into())
        );
        assert_eq!(own_path(own, str::is_empty), Some("/user.slice".into()));
    }

    #[test]
    fn counters_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("memory.events");
        std::fs::write(&f, "low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n").unwrap();
        assert_eq!(counter(&f, "oom_kill"), 2);
        assert_eq!(counter(&f, "max"), 3);
        assert_eq!(counter(&f, "absent"), 0);
    }
}

/// cgroup v2 on a real kernel: this machine runs v1 for the controllers,
/// but its cgroup2 hierarchy still freezes and kills (no controller needed),
/// which is what standby and stopping rely on.
#[cfg(test)]
mod v2 {
    use super::*;
    use std::process::{Command, Stdio};

    fn cgroup2_root() -> Option<PathBuf> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        v2_mount(&mountinfo)
    }

    #[test]
    fn a_v2_group_freezes_thaws_and_kills_what_it_holds() {
        let Some(root) = cgroup2_root() else {
            eprintln!("skipped: no cgroup2 mount on this machine");
            return;
        };
        let dir = root.join(format!("berth-test-{}", std::process::id()));
        if let Err(e) = std::fs::create_dir(&dir) {
            eprintln!("skipped: cannot create {} ({e})", dir.display());
            return;
        }
        let group = Group::V2(dir.clone());
        let mut child = Command::new("sleep")
            .arg("30")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        for file in group.procs_files() {
            std::fs::write(file, child.id().to_string()).unwrap();
        }
        assert_eq!(group.pids(), vec![child.id() as i32]);
        assert!(group.can_freeze());
        group.freeze().unwrap();
        let events = || std::fs::read_to_string(dir.join("cgroup.events")).unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !events().contains("frozen 1") {
            assert!(Instant::now() < deadline, "not frozen: {}", events());
            std::thread::sleep(Duration::from_millis(10));
        }
        group.thaw().unwrap();
        group.kill_all();
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert_eq!(group.oom_kills(), 0);
        group.remove();
        assert!(!dir.exists());
    }
}
