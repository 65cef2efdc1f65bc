//! What the servers' processes use: every few seconds each process's CPU
//! time and resident memory are read from `/proc` and reported to
//! telemetry (usage metering turns them into CPU-seconds and
//! GiB-seconds), attributed to the principal whose session the process
//! serves alone.
//!
//! Only a server's own process is read, not processes it starts itself.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use berth_telemetry::{Observer as _, ProcessSample};

use crate::gateway::Gateway;

/// How often processes are sampled.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// A process's CPU time when it was last read.
struct Seen {
    cpu: Duration,
    at: Instant,
}

/// Samples until the gateway is gone.
pub(crate) async fn sample_processes(gateway: Weak<Gateway>) {
    let mut seen: HashMap<u32, Seen> = HashMap::new();
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(gw) = gateway.upgrade() else {
            return;
        };
        let processes = processes(&gw);
        // Reading /proc blocks (briefly): off the runtime's workers.
        let read = tokio::task::spawn_blocking(move || {
            processes
                .into_iter()
                .filter_map(|p| Some((read_usage(p.pid)?, p)))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let now = Instant::now();
        let mut alive = HashMap::with_capacity(read.len());
        for ((cpu, rss), p) in read {
            let (used, interval) = match seen.get(&p.pid) {
                Some(before) => (cpu.saturating_sub(before.cpu), now - before.at),
                // First sight: everything it used since it started.
                None => (cpu, SAMPLE_EVERY),
            };
            gw.telemetry().process_sample(&ProcessSample {
                server: &p.server,
                principal: p.principal.as_deref(),
                cpu: used,
                memory_bytes: rss,
                interval,
            });
            alive.insert(p.pid, Seen { cpu, at: now });
        }
        seen = alive;
    }
}

/// A live process and whom it serves.
struct Process {
    pid: u32,
    server: String,
    principal: Option<Arc<str>>,
}

/// Every process of every server, with the principal of the session a
/// process serves alone.
fn processes(gw: &Gateway) -> Vec<Process> {
    let owners: HashMap<u32, Option<Arc<str>>> = gw
        .sessions_snapshot()
        .iter()
        .map(|s| (s.lease().pid(), s.owner.as_ref().map(|p| p.id.clone())))
        .collect();
    let mut all = Vec::new();
    for server in gw.servers() {
        let reports = std::iter::once(server.pool.report())
            .chain(server.stateless_pool().map(|p| p.report()));
        for report in reports {
            // A remote server's connections have no process here to sample.
            for p in report.processes.into_iter().filter(|p| p.remote.is_none()) {
                all.push(Process {
                    pid: p.pid,
                    server: server.spec.name.clone(),
                    principal: owners.get(&p.pid).cloned().flatten(),
                });
            }
        }
    }
    all
}

/// CPU time (user + system) and resident bytes of `pid`, from /proc.
fn read_usage(pid: u32) -> Option<(Duration, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces and parentheses).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split(' ').nth(1)?.parse().ok()?;
    Some((
        Duration::from_secs_f64(ticks as f64 / clock_ticks()),
        pages * page_size(),
    ))
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

fn page_size() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 { size as u64 } else { 4096 }
}

#[cfg(test)]
mod tests {
    use super::read_usage;

    #[test]
    fn reads_this_process() {
        let (cpu, rss) = read_usage(std::process::id()).expect("own /proc entry");
        assert!(rss > 1024 * 1024, "{rss}");
        // Burn a little CPU and see it counted.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(50) {
            x = x.wrapping_mul(31).wrapping_add(1);
        }
        std::hint::black_box(x);
        let (later, _) = read_usage(std::process::id()).expect("own /proc entry");
        assert!(later >= cpu);
        assert!(read_usage(u32::MAX).is_none());
    }
}
