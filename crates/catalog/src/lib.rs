//! Berth's catalog of ready-made MCP servers.
//!
//! Entries are `server.json` documents of the official MCP Registry (schema
//! 2025-12-11) with Berth's hosting defaults in their `_meta`
//! ([`entry::HOSTING_KEY`]): the binding, pool, crash policy, sandbox network
//! allow-list and tool scopes an operator would otherwise work out by hand.
//!
//! - [`entry`]: one entry and what Berth reads from it;
//! - [`sources`]: the entries shipped in the binary (`entries/*.json`, one
//!   file each, embedded at build time), extended from directories and from
//!   registries speaking the MCP Registry API v0.1 ([`registry`]);
//! - [`install`]: installing an entry's pinned package with npm or pip into
//!   a directory of its own, so nothing is downloaded when a session starts.

pub mod entry;
pub mod install;
pub mod registry;
pub mod sources;

pub use entry::{Entry, EntryError, HOSTING_KEY, Hosting, Input, Kind, Origin};
pub use install::{InstallError, Installed};
pub use sources::Catalog;
