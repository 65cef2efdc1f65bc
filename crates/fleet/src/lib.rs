//! The fleet: MCP server processes and the conversations Berth holds with them.
//!
//! An [`Upstream`] is one running stdio server. It owns the child process (in
//! its own process group, spawned without a shell), writes newline-delimited
//! JSON-RPC to its stdin, reads its stdout with a hard line limit, captures its
//! stderr into the server's [`ServerLog`], and correlates responses with the
//! requests that asked for them. Whatever goes wrong with the process, every
//! request in flight is answered with a [`Failure`]; nothing hangs and nothing
//! is silently dropped. Stopping a process follows the MCP stdio shutdown
//! sequence (close stdin, SIGTERM, SIGKILL) and always reaps it.
//!
//! The fleet knows MCP messages but nothing of HTTP: the edge decides how the
//! messages an upstream produces reach a client.

mod credentials;
mod era;
mod federation;
mod log;
mod pool;
mod process;
mod remote;
mod roots;
mod spec;
mod upstream;

pub use credentials::{CallerToken, OAuthClient, OAuthGrant};
pub use era::{Discovery, Era, own_params, probe};
pub use federation::{EndpointReport, FederationSpec, MemberReport, MemberSpec, PoolLookup};
pub use log::{LogLine, LogSource, ServerLog};
pub use pool::{
    AcquireError, Announcement, InitCache, Lease, LeaseStart, Pool, PoolKind, PoolReport,
    PoolStatus, ProcState, ProcessReport, TargetReason,
};
pub use remote::{RemoteReport, RemoteSpec, RemoteTransport};
pub use spec::{
    Binding, CrashPolicy, OnCrash, PoolConfig, Resolved, Roots, SecretMiss, SecretOwner,
    SecretResolver, ServerSpec, ShutdownGrace,
};
pub use upstream::{
    Delivery, Exchange, Failure, ProcessWatch, SessionTag, SpawnError, UNSOLICITED_BUDGET,
    Unsolicited, Upstream, is_remote_number,
};
