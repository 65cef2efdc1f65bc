//! Every process the server starts, and everything those start.
//!
//! Commands run in their own session (`setsid`), so a signal to the server's
//! process group does not reach them and a timeout can kill them as a
//! group. What a command starts may leave that session and daemonize
//! (double fork + `setsid`): the server is a child subreaper
//! (`PR_SET_CHILD_SUBREAPER`; inside Berth's sandbox it is also PID 1 of its
//! pid namespace), so such orphans are re-parented to it rather than to the
//! host's init, and every process a session started stays a descendant of
//! the server. A run's processes are then the descendants of its first
//! process, plus the members of its session and process group, plus any
//! descendant of the server still carrying the run's marker variable in its
//! environment (which is how a daemonized grandchild is found again).
//!
//! Reaping: tokio waits for the direct children it spawned (by pid). Orphans
//! re-parented to the server are reaped here, one known pid at a time,
//! never with `waitpid(-1)`, so no exit status tokio waits for is stolen.
//! The set of direct children is locked across `spawn` and its insertion,
//! so a child that dies at once is never mistaken for an orphan.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

use super::wall::Wall;

/// The variable that marks a run's processes.
pub const MARKER: &str = "BERTH_SANDBOX_RUN";

/// One line of `/proc/PID/stat`, the fields used here.
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    pub pid: i32,
    pub ppid: i32,
    pub pgrp: i32,
    pub session: i32,
    pub state: char,
}

impl Stat {
    fn alive(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }
}

pub fn read_stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    let session = fields.next()?.parse().ok()?;
    Some(Stat {
        pid,
        ppid,
        pgrp,
        session,
        state,
    })
}

/// Every process visible in /proc.
fn all_stats() -> Vec<Stat> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .filter_map(read_stat)
        .collect()
}

/// The descendants of `root` (not `root` itself).
fn descendants(stats: &[Stat], root: i32) -> HashSet<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for s in stats {
        children.entry(s.ppid).or_default().push(s.pid);
    }
    let mut found = HashSet::new();
    let mut queue = vec![root];
    while let Some(parent) = queue.pop() {
        for &child in children.get(&parent).map(Vec::as_slice).unwrap_or(&[]) {
            if child != root && found.insert(child) {
                queue.push(child);
            }
        }
    }
    found
}

fn has_marker(pid: i32, entry: &[u8]) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == entry))
}

/// The server's bookkeeping of the processes it started.
#[derive(Debug)]
pub struct Procs {
    me: i32,
    /// Random per server process, so markers never match another server's.
    token: String,
    next_run: AtomicU64,
    /// Direct children that tokio is waiting for.
    direct: Mutex<HashSet<i32>>,
    /// The Landlock ruleset every command enters before `exec`.
    wall: OnceLock<Wall>,
}

/// What identifies one run's processes.
#[derive(Debug, Clone)]
pub struct Run {
    /// The value of [`MARKER`] in the run's environment.
    pub marker: String,
}

impl Default for Procs {
    fn default() -> Procs {
        Procs::new()
    }
}

impl Procs {
    pub fn new() -> Procs {
        use rand::Rng;
        let token: u64 = rand::rng().random();
        Procs {
            me: std::process::id() as i32,
            token: format!("{token:016x}"),
            next_run: AtomicU64::new(1),
            direct: Mutex::new(HashSet::new()),
            wall: OnceLock::new(),
        }
    }

    /// Puts every command spawned from now on behind `wall`.
    pub fn set_wall(&self, wall: Wall) {
        let _ = self.wall.set(wall);
    }

    /// The wall commands enter, if any.
    pub fn wall(&self) -> Option<&Wall> {
        self.wall.get()
    }

    /// Makes orphans come back to this process (needed outside Berth's
    /// sandbox; inside, being PID 1 does it anyway).
    pub fn become_subreaper() -> Result<(), String> {
        nix::sys::prctl::set_child_subreaper(true)
            .map_err(|e| format!("prctl(PR_SET_CHILD_SUBREAPER): {}", e.desc()))
    }

    pub fn new_run(&self) -> Run {
        let n = self.next_run.fetch_add(1, Ordering::Relaxed);
        Run {
            marker: format!("{}-{n}", self.token),
        }
    }

    /// Spawns `cmd`; its pid is recorded as a direct child before any
    /// orphan reaping can look at it.
    pub fn spawn(
        &self,
        cmd: &mut tokio::process::Command,
    ) -> std::io::Result<tokio::process::Child> {
        let mut direct = self.direct.lock().unwrap_or_else(|p| p.into_inner());
        let child = cmd.spawn()?;
        if let Some(pid) = child.id() {
            direct.insert(pid as i32);
        }
        Ok(child)
    }

    /// Called once tokio has reaped direct child `pid`.
    pub fn forget(&self, pid: i32) {
        self.direct
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&pid);
    }

    /// The live processes of the run whose first process was `root`.
    fn members(&self, stats: &[Stat], root: i32, run: &Run) -> Vec<i32> {
        let ours = descendants(stats, self.me);
        let below_root = descendants(stats, root);
        let entry = format!("{MARKER}={}", run.marker).into_bytes();
        stats
            .iter()
            .filter(|s| s.pid != self.me && s.alive() && ours.contains(&s.pid))
            .filter(|s| {
                s.pid == root
                    || below_root.contains(&s.pid)
                    || s.session == root
                    || s.pgrp == root
                    || has_marker(s.pid, &entry)
            })
            .map(|s| s.pid)
            .collect()
    }

    /// SIGKILLs every process of a run, in rounds until none is left (a
    /// process may fork between a scan and the kill). Blocking.
    pub fn kill_run(&self, root: i32, run: &Run) -> usize {
        self.kill_rounds(|stats| self.members(stats, root, run))
    }

    /// SIGKILLs every descendant of the server. Blocking.
    pub fn kill_all(&self) -> usize {
        self.kill_rounds(|stats| {
            let ours = descendants(stats, self.me);
            stats
                .iter()
                .filter(|s| s.alive() && ours.contains(&s.pid))
                .map(|s| s.pid)
                .collect()
        })
    }

    fn kill_rounds(&self, pick: impl Fn(&[Stat]) -> Vec<i32>) -> usize {
        let mut killed = HashSet::new();
        for _ in 0..200 {
            let stats = all_stats();
            let targets = pick(&stats);
            if targets.is_empty() {
                break;
            }
            for pid in targets {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                killed.insert(pid);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.reap_orphans();
        killed.len()
    }

    /// Reaps the zombies among the server's children that tokio is not
    /// waiting for (orphans re-parented to the server). Blocking.
    pub fn reap_orphans(&self) {
        let direct = self.direct.lock().unwrap_or_else(|p| p.into_inner());
        for s in all_stats() {
            if s.ppid == self.me && s.state == 'Z' && !direct.contains(&s.pid) {
                let _ = waitpid(Pid::from_raw(s.pid), Some(WaitPidFlag::WNOHANG));
            }
        }
    }

    /// Reaps orphans whenever a child changes state (and once a second, in
    /// case signals were coalesced).
    pub fn start_reaper(self: &std::sync::Arc<Self>) {
        let procs = self.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let mut sigchld = signal(SignalKind::child()).ok();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                match sigchld.as_mut() {
                    Some(sig) => {
                        tokio::select! {
                            _ = sig.recv() => {}
                            _ = tick.tick() => {}
                        }
                    }
                    None => {
                        tick.tick().await;
                    }
                }
                let procs = procs.clone();
                let _ = tokio::task::spawn_blocking(move || procs.reap_orphans()).await;
                // Coalesce bursts of SIGCHLD into one scan.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parses_names_with_parentheses() {
        let me = read_stat(std::process::id() as i32).unwrap();
        assert_eq!(me.pid, std::process::id() as i32);
        assert!(me.alive());
        assert!(me.ppid > 0);
    }

    #[test]
    fn descendants_follow_ppid() {
        let s = |pid, ppid| Stat {
            pid,
            ppid,
            pgrp: pid,
            session: pid,
            state: 'S',
        };
        let stats = [s(1, 0), s(2, 1), s(3, 2), s(4, 1), s(5, 9)];
        let d = descendants(&stats, 2);
        assert_eq!(d, HashSet::from([3]));
        assert_eq!(descendants(&stats, 1), HashSet::from([2, 3, 4]));
    }
}
