//! The wire layer: everything Berth knows about the bytes of an MCP message,
//! and nothing about HTTP or processes.
//!
//! Berth forwards the original bytes of every message it does not need to
//! change. It parses only the JSON-RPC envelope (`jsonrpc`, `id`, `method`,
//! whether `result`/`error` are present, and `params._meta.progressToken`),
//! keeping everything else as raw JSON, so unknown fields, big integers and odd
//! formatting reach the other side untouched.

mod envelope;
mod error;
mod lines;
pub mod modern;
mod sse;
mod version;

pub use envelope::{
    ClientHello, Envelope, IdKey, Kind, Message, ParamHeaders, ParseError, Stray, error_with_id,
    initialize_result_version, with_id, with_meta, with_progress_token,
};
pub use error::{ErrorCode, error_response};
pub use lines::{LineCodec, LineError, to_single_line};
pub use sse::{SseEvent, priming_event};
pub use version::ProtocolVersion;
