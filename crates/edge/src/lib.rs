//! The edge: MCP over HTTP in front of the fleet.
//!
//! Serves each configured server at `/mcp/<name>` over Streamable HTTP, in
//! both protocol eras chosen per request: 2026-07-28 stateless requests
//! (see `modern`), and sessions opened by `initialize` (revision 2025-11-25,
//! also 2025-06-18 and 2025-03-26 clients); and at
//! `/sse/<name>` over the legacy HTTP+SSE transport (2024-11-05). A session is
//! one upstream process; the edge turns what that process says into JSON
//! replies or resumable SSE streams, and checks every request's Host, Origin
//! and headers before anything reaches a process.

mod admin;
mod admission;
mod authz;
mod config;
mod engine;
mod error;
mod fairness;
mod gateway;
mod guard;
mod headers;
mod inbound;
mod legacy;
mod modern;
mod observe;
mod reply;
mod sampler;
mod serve;
mod server;
mod session;
mod stateless;
mod streamable;

pub use admin::{Reloader, ServerStatus, admin_error, admin_router};
pub use config::{EdgeConfig, Fairness};
pub use gateway::{Gateway, ReloadReport};
pub use headers::SESSION_HEADER;
pub use server::Server;
pub use session::new_session_id as random_token;
