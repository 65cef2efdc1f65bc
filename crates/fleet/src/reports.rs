//! What connections that are not processes report (`berth ps`, the admin
//! API): a remote server's connection and a federated endpoint's session.

/// What a remote connection reports (`berth ps`, the admin API).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct RemoteReport {
    pub url: String,
    /// The upstream's own session id, once it gave one.
    pub session: Option<String>,
    /// The last HTTP status the upstream answered with.
    pub last_status: Option<u16>,
    /// The last failure to reach it or to understand it, if any.
    pub last_error: Option<String>,
    pub requests: u64,
    pub errors: u64,
    /// Mean time to the upstream's response headers, in milliseconds.
    pub mean_latency_ms: Option<f64>,
    /// Sessions re-initialized after the upstream lost them.
    pub reinitialized: u64,
}

/// What one endpoint session holds open (`berth ps`, the admin API).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct EndpointReport {
    /// Each member server, in the endpoint's order, and whether this
    /// session has it open now (members open on first use).
    pub members: Vec<MemberReport>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct MemberReport {
    pub server: String,
    pub open: bool,
    /// The member's process (or remote connection number) while open.
    pub pid: Option<u32>,
}
