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
//! Not every server is a process. An [`Upstream`] may also be a connection
//! to a remote MCP server over HTTP (`remote`: each message a POST, answers
//! read back from JSON or SSE) or a session of a federated endpoint
//! (`federation`: one server made of several of the fleet's); [`open`]
//! starts whichever a spec describes, and nothing above it knows which.
//!
//! The fleet knows MCP messages but not the edge's HTTP: the edge decides
//! how the messages an upstream produces reach a client.

mod connect;
mod credentials;
mod era;
mod federation;
mod log;
mod pool;
mod process;
mod remote;
mod reports;
mod roots;
mod spec;
mod upstream;

pub use connect::open;
pub use credentials::{CallerToken, OAuthClient, OAuthGrant};
pub use era::{Discovery, Era, own_params, probe};
pub use federation::{
    FederationSpec, MemberLink, MemberSource, MemberSpec, OpeningMember, PoolLookup,
};
pub use log::{LogLine, LogSource, ServerLog};
pub use pool::{
    AcquireError, Announcement, InitCache, Lease, LeaseStart, Pool, PoolKind, PoolReport,
    PoolStatus, ProcState, ProcessReport, TargetReason,
};
pub use remote::{RemoteSpec, RemoteTransport};
pub use reports::{EndpointReport, MemberReport, RemoteReport};
pub use spec::{
    Binding, CrashPolicy, OnCrash, PoolConfig, Resolved, Roots, Scheduling, SecretMiss,
    SecretOwner, SecretResolver, ServerSpec, ShutdownGrace,
};
pub use upstream::{
    Delivery, Exchange, Failure, ProcessWatch, SessionTag, SpawnError, UNSOLICITED_BUDGET,
    Unsolicited, Upstream, is_remote_number,
};
