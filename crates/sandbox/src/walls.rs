//! Landlock, the second wall: even if the mount namespace had a hole, file
//! access is limited to what the plan exposes, and signals and abstract
//! unix sockets to the sandbox's own processes.
//!
//! Uses the `landlock` crate (the kernel project's own, best-effort ABI
//! negotiation): on a kernel without some feature the rules are applied as
//! far as it goes, and the caller reports what was not.

use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, BitFlags, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset,
    RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope,
};

use crate::policy::{Mount, Plan, STATE_DIR};

/// The newest ABI these rules were written and tested against.
const ABI_USED: ABI = ABI::V6;

/// Paths the plan exposes and what may be done under each.
fn rules(plan: &Plan) -> Vec<(PathBuf, BitFlags<AccessFs>)> {
    let read = AccessFs::from_read(ABI_USED);
    let all = AccessFs::from_all(ABI_USED);
    let device = read | AccessFs::WriteFile;
    let mut out: Vec<(PathBuf, BitFlags<AccessFs>)> = vec![
        // Listing directories anywhere in the (already minimal) root.
        ("/".into(), AccessFs::ReadDir.into()),
        ("/proc".into(), device),
        ("/tmp".into(), all),
        ("/dev/shm".into(), all),
        (STATE_DIR.into(), all),
        ("/etc".into(), read),
    ];
    for m in &plan.mounts {
        match m {
            Mount::Bind { dst, writable, .. } => {
                out.push((dst.clone(), if *writable { all } else { read }));
            }
            Mount::Device { name } => out.push((Path::new("/dev").join(name), device)),
            Mount::Symlink { dst, target } if target.is_relative() => {
                // `/bin -> usr/bin`: the link's own name resolves through /usr.
                if let Some(parent) = dst.parent() {
                    out.push((parent.join(target), read));
                }
            }
            Mount::Dir { dst } => out.push((dst.clone(), read)),
            _ => {}
        }
    }
    out
}

/// Restricts the calling process (and what it execs) to the plan's paths.
pub(crate) fn landlock(plan: &Plan) -> Result<(), String> {
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(ABI_USED))
        .map_err(|e| e.to_string())?;
    ruleset = ruleset
        .scope(Scope::from_all(ABI_USED))
        .map_err(|e| e.to_string())?;
    let mut created = ruleset.create().map_err(|e| e.to_string())?;
    for (path, access) in rules(plan) {
        // A path the plan names but that is missing is the mount's problem, not ours.
        let Ok(fd) = PathFd::new(&path) else { continue };
        created = created
            .add_rule(PathBeneath::new(fd, access))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let status = created.restrict_self().map_err(|e| e.to_string())?;
    if status.ruleset == RulesetStatus::NotEnforced {
        eprintln!(
            "berth-sandbox: landlock is not enforced by this kernel; the mount namespace is the only file wall"
        );
    }
    Ok(())
}
