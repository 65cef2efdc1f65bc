//! Opens a server's connection, whatever it is: a child process speaking
//! stdio, a remote server over HTTP, or a federated endpoint over other
//! servers. Everything above sees an [`Upstream`] and nothing else.

use crate::{ServerLog, ServerSpec, SpawnError, Unsolicited, Upstream};

/// Starts the process, or opens the remote connection or endpoint session,
/// that `spec` describes.
pub fn open(spec: &ServerSpec, log: ServerLog) -> Result<(Upstream, Unsolicited), SpawnError> {
    if let Some(remote) = &spec.remote {
        return crate::remote::connect(spec, remote.clone(), log);
    }
    if let Some(federation) = &spec.federation {
        return Ok(crate::federation::connect(spec, federation, log));
    }
    Upstream::spawn(spec, log)
}
