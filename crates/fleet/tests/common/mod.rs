//! Helpers shared by the fleet's integration tests: small programs standing
//! in for servers, stopped quickly.

#![allow(dead_code)]

use std::time::Duration;

use berth_fleet::{ServerSpec, ShutdownGrace};
use berth_wire::Message;
use bytes::Bytes;

/// `program args...` as a server, with a short stop sequence.
pub fn spec(name: &str, program: &str, args: &[&str]) -> ServerSpec {
    let mut spec = ServerSpec::new(name, program);
    spec.args = args.iter().map(|a| a.to_string()).collect();
    spec.shutdown = ShutdownGrace {
        after_close: Duration::from_millis(200),
        after_term: Duration::from_millis(200),
    };
    spec
}

/// A shell script as a server.
pub fn sh(name: &str, script: &str) -> ServerSpec {
    spec(name, "sh", &["-c", script])
}

pub fn msg(s: &str) -> Message {
    Message::parse(Bytes::copy_from_slice(s.as_bytes())).unwrap()
}
