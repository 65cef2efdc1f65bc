//! The HTTP header names of MCP that every part of the edge reads: a leaf,
//! importing nothing of the crate, so checks, handlers and sessions can
//! share them without depending on each other.

/// The session header (header names are case-insensitive; 2025-06-18 and
/// earlier spell it `Mcp-Session-Id`).
pub const SESSION_HEADER: &str = "mcp-session-id";

/// `MCP-Protocol-Version`.
pub(crate) const VERSION_HEADER: &str = "mcp-protocol-version";

/// `Last-Event-ID`: where a reconnecting SSE reader resumes.
pub(crate) const LAST_EVENT_ID: &str = "last-event-id";
