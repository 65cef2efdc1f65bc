//! Runs one command under an isolation policy, without a container engine.
//!
//! A sandboxed MCP server gets, by default:
//!
//! * its own **user, pid, mount, ipc, uts, cgroup and network namespaces**:
//!   it runs as an unprivileged id even when Berth is root, is PID 1 of its
//!   namespace (when it dies, everything it started dies), and sees its
//!   own loopback only;
//! * a **minimal root** ([`layout`]): read-only system files, the install
//!   directory of its runtime, the paths its configuration names, a
//!   private `/tmp`, a writable state dir at `/state`; Berth's data dir and
//!   other servers are not there;
//! * **no capabilities, `no_new_privs`, a seccomp filter** ([`filter`]) and
//!   **landlock** rules ([`walls`]) as a second wall;
//! * a **cgroup** ([`cgroup`]) with memory, pids and cpu limits, used also to
//!   freeze it (standby) and to kill everything in it;
//! * **egress** only through Berth's allow-list proxy ([`egress`]), or none.
//!
//! Berth's binary doubles as the helper that sets this up ([`helper`]): the
//! gateway is multi-threaded and cannot `clone` into namespaces itself.
//! [`launch::prepare`] builds the helper's command and [`probe`] tells what
//! the kernel offers, degrading with a warning where it offers less.
//!
//! ## Crates
//!
//! | mechanism | crate | why |
//! |---|---|---|
//! | namespaces, mounts, ids | `nix` (+ `libc` for `clone`) | broadest coverage, already used by the fleet |
//! | capabilities | `caps` | small, the bounding/ambient sets done right |
//! | seccomp | `seccompiler` | rust-vmm/Firecracker; compiles rules to BPF in pure Rust (no libseccomp, no BPF by hand) |
//! | landlock | `landlock` | the kernel project's crate; best-effort ABI negotiation |
//! | cgroups | none: cgroupfs | a dozen files; `libcgroups` (youki) brings OCI structs and a second `nix`, `cgroups-rs` an old `nix` and `zbus` |
//!
//! youki's `libcontainer` would do all of it as an OCI runtime, at the cost
//! of an OCI bundle per process and a large dependency tree; `hakoniwa`
//! (LGPL) and `birdcage` (GPL) are close in shape but not in licence.

pub mod cgroup;
pub mod egress;
pub mod filter;
pub mod helper;
pub mod launch;
pub mod layout;
pub mod policy;
pub mod probe;
mod walls;

pub use helper::enter_if_requested;
pub use launch::{Ending, Instance, PrepareError, Prepared, Report, describe, prepare, unwritable};
pub use layout::Launch;
pub use policy::{Limits, Network, Profile, STATE_DIR, Settings, bytes};
pub use probe::{Capabilities, capabilities};
