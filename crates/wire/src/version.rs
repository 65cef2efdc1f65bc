//! MCP protocol revisions Berth serves.

/// A protocol revision Berth understands at the HTTP layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProtocolVersion {
    /// HTTP+SSE (legacy transport).
    V2024_11_05,
    /// First Streamable HTTP revision; JSON-RPC batches allowed.
    V2025_03_26,
    /// Adds the `MCP-Protocol-Version` header; batches removed.
    V2025_06_18,
    /// SSE polling with priming events, 403 on bad Origin.
    V2025_11_25,
}

impl ProtocolVersion {
    pub const ALL: [ProtocolVersion; 4] = [
        ProtocolVersion::V2024_11_05,
        ProtocolVersion::V2025_03_26,
        ProtocolVersion::V2025_06_18,
        ProtocolVersion::V2025_11_25,
    ];
    pub const LATEST: ProtocolVersion = ProtocolVersion::V2025_11_25;
    /// What a Streamable HTTP server assumes when a client sends no version header.
    pub const HTTP_DEFAULT: ProtocolVersion = ProtocolVersion::V2025_03_26;

    pub fn parse(s: &str) -> Option<ProtocolVersion> {
        ProtocolVersion::ALL.into_iter().find(|v| v.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ProtocolVersion::V2024_11_05 => "2024-11-05",
            ProtocolVersion::V2025_03_26 => "2025-03-26",
            ProtocolVersion::V2025_06_18 => "2025-06-18",
            ProtocolVersion::V2025_11_25 => "2025-11-25",
        }
    }

    /// The comma-separated list, for error messages.
    pub fn supported_list() -> String {
        ProtocolVersion::ALL.map(ProtocolVersion::as_str).join(", ")
    }

    /// JSON-RPC batches were part of 2025-03-26 only.
    pub fn allows_batches(self) -> bool {
        self <= ProtocolVersion::V2025_03_26
    }

    /// Priming events (an id with empty data) arrived with 2025-11-25; older
    /// clients may try to parse the empty data as JSON.
    pub fn primes_streams(self) -> bool {
        self >= ProtocolVersion::V2025_11_25
    }
}

impl std::fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
