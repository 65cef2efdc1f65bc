//! Which protocol era a server speaks, found by asking a throwaway process.
//!
//! A stdio process serves one era for its whole life: its first request
//! decides. So Berth probes each server once (and again when its
//! configuration changes) in a process of its own: `server/discover` first.
//! A `DiscoverResult` naming a 2026-07-28 version means the server is
//! modern; an error, a non-modern answer, an exit or silence until the
//! timeout means it speaks only the handshake era. The probe never keys on
//! one error code: older SDKs answer anything from -32601 to an exit.

use std::sync::Arc;
use std::time::Duration;

use berth_wire::modern::{MODERN_VERSION, is_modern_version, meta};
use berth_wire::{Envelope, ErrorCode, Message};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::upstream::gateway_request_id;
use crate::{Delivery, Failure, LogSource, ServerLog, ServerSpec, Unsolicited, Upstream};

/// The era a server speaks.
#[derive(Debug, Clone)]
pub enum Era {
    /// It answered `server/discover` with a 2026-07-28 version.
    Modern(Arc<Discovery>),
    /// It speaks only the handshake era; why Berth thinks so.
    HandshakeOnly(String),
}

impl Era {
    /// `2026-07-28` or `handshake-only`, as `berth ps` shows it.
    pub fn label(&self) -> &'static str {
        match self {
            Era::Modern(_) => MODERN_VERSION,
            Era::HandshakeOnly(_) => "handshake-only",
        }
    }
}

/// A server's `server/discover` result, kept to answer clients from.
#[derive(Debug)]
pub struct Discovery {
    /// The result object, as JSON text.
    result: Box<RawValue>,
    /// `_meta.serverInfo` (JSON text), to stamp on relayed results.
    pub server_info: Option<String>,
    /// `capabilities` (JSON text).
    pub capabilities: String,
}

#[derive(Deserialize)]
struct DiscoverResult<'a> {
    #[serde(rename = "supportedVersions", default)]
    supported_versions: Vec<String>,
    #[serde(borrow)]
    capabilities: Option<&'a RawValue>,
    #[serde(borrow, rename = "_meta")]
    meta: Option<DiscoverMeta<'a>>,
}

#[derive(Deserialize)]
struct DiscoverMeta<'a> {
    #[serde(borrow, rename = "io.modelcontextprotocol/serverInfo")]
    server_info: Option<&'a RawValue>,
}

impl Discovery {
    /// Reads a `server/discover` result; `None` unless it names a
    /// 2026-07-28 version Berth serves.
    pub fn from_result(result: &RawValue) -> Option<Discovery> {
        let parsed: DiscoverResult<'_> = serde_json::from_str(result.get()).ok()?;
        if !parsed
            .supported_versions
            .iter()
            .any(|v| is_modern_version(v))
        {
            return None;
        }
        Some(Discovery {
            server_info: parsed
                .meta
                .and_then(|m| m.server_info)
                .map(|i| i.get().to_owned()),
            capabilities: parsed
                .capabilities
                .map_or_else(|| "{}".to_owned(), |c| c.get().to_owned()),
            result: result.to_owned(),
        })
    }

    /// What Berth answers `server/discover` with for a handshake-only
    /// server it bridges: the server's `initialize` result (JSON text, with
    /// the version it speaks) re-dressed. The endpoint speaks both eras, so
    /// both are listed.
    pub fn bridged(initialize_result: &str, server_version: &str) -> Option<Discovery> {
        let result: serde_json::Value = serde_json::from_str(initialize_result).ok()?;
        let mut versions = vec![serde_json::Value::from(MODERN_VERSION)];
        versions.push(server_version.into());
        let mut discover = serde_json::json!({
            "resultType": "complete",
            "supportedVersions": versions,
            "capabilities": result.get("capabilities").cloned().unwrap_or_else(|| serde_json::json!({})),
            "ttlMs": 0,
            "cacheScope": "private",
        });
        if let Some(instructions) = result.get("instructions") {
            discover["instructions"] = instructions.clone();
        }
        if let Some(info) = result.get("serverInfo") {
            discover["_meta"] = serde_json::json!({ meta::SERVER_INFO: info });
        }
        let raw = RawValue::from_string(discover.to_string()).ok()?;
        Discovery::from_result(&raw)
    }

    /// The answer to a client's `server/discover` with id `raw_id`.
    pub fn response(&self, raw_id: &str) -> Bytes {
        let result = self.result.get();
        let mut out = Vec::with_capacity(result.len() + raw_id.len() + 40);
        out.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
        out.extend_from_slice(raw_id.as_bytes());
        out.extend_from_slice(br#","result":"#);
        out.extend_from_slice(result.as_bytes());
        out.push(b'}');
        Bytes::from(out)
    }

    /// Whether the server announces changes of `kind` (`tools`, `prompts`,
    /// `resources`) and resource updates (`subscribe`).
    pub fn announces(&self, kind: &str, flag: &str) -> bool {
        let caps: serde_json::Value = serde_json::from_str(&self.capabilities).unwrap_or_default();
        caps.get(kind)
            .and_then(|k| k.get(flag))
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false)
    }
}

/// `params` of a request Berth sends in the 2026-07-28 era on its own behalf.
pub fn own_params(extra: serde_json::Value) -> serde_json::Value {
    let mut params = serde_json::json!({
        "_meta": {
            meta::PROTOCOL_VERSION: MODERN_VERSION,
            meta::CLIENT_CAPABILITIES: {},
            meta::CLIENT_INFO: { "name": "berth", "version": env!("CARGO_PKG_VERSION") },
        }
    });
    if let (Some(params), serde_json::Value::Object(extra)) = (params.as_object_mut(), extra) {
        params.extend(extra);
    }
    params
}

/// Asks a throwaway process of `spec` which era it speaks; the process is
/// stopped and reaped before this returns.
pub async fn probe(spec: &ServerSpec, log: &ServerLog, timeout: Duration) -> Era {
    let (upstream, _unsolicited) = match crate::connect::open(spec, log.clone()) {
        Ok(spawned) => spawned,
        Err(e) => {
            let era = Era::HandshakeOnly(format!("the era probe could not start it: {e}"));
            log.push(None, LogSource::Lifecycle, format!("era probe: {e}"));
            return era;
        }
    };
    let pid = upstream.pid();
    let answer = upstream
        .request(
            "server/discover",
            Some(own_params(serde_json::json!({}))),
            timeout,
        )
        .await;
    upstream.shutdown("era probe done").await;
    let era = match answer {
        Ok(msg) => match Envelope::parse(&msg.bytes).ok().and_then(|e| e.result) {
            Some(result) => match Discovery::from_result(result) {
                Some(discovery) => Era::Modern(Arc::new(discovery)),
                None => Era::HandshakeOnly(
                    "its server/discover result names no 2026-07-28 version".into(),
                ),
            },
            None => Era::HandshakeOnly("it answered server/discover with an error".into()),
        },
        Err(failure) => Era::HandshakeOnly(format!(
            "it gave no server/discover result ({})",
            failure.message
        )),
    };
    let what = match &era {
        Era::Modern(_) => "speaks 2026-07-28 (answered server/discover)".to_owned(),
        Era::HandshakeOnly(why) => format!("speaks only the handshake era: {why}"),
    };
    log.push(
        Some(pid),
        LogSource::Lifecycle,
        format!("era probe: {what}"),
    );
    era
}

/// Readies a process of a modern stateless pool: `server/discover` fixes
/// its era, then Berth's own `subscriptions/listen` (every list change) stays
/// open for the process's life, so what it announces reaches the pool's
/// listeners whichever process a client's request went to. Returns once the
/// process has acknowledged the listen (read from `unsolicited`, where such
/// notifications go), so no change a first request causes can be missed.
pub(crate) async fn open_listen(
    upstream: &Arc<Upstream>,
    unsolicited: &mut Unsolicited,
    timeout: Duration,
) -> Result<(), Failure> {
    upstream
        .request(
            "server/discover",
            Some(own_params(serde_json::json!({}))),
            timeout,
        )
        .await?;
    let params = own_params(serde_json::json!({
        "notifications": {
            "toolsListChanged": true,
            "promptsListChanged": true,
            "resourcesListChanged": true,
        }
    }));
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": gateway_request_id(),
        "method": "subscriptions/listen",
        "params": params,
    });
    let msg = Message::parse(Bytes::from(body.to_string()))
        .map_err(|e| Failure::new(ErrorCode::INTERNAL_ERROR, e.to_string()))?;
    let mut exchange = upstream.call(&msg)?;
    let listen_id = exchange.id().clone();
    let acknowledged = tokio::time::timeout(timeout, async {
        loop {
            tokio::select! {
                delivery = exchange.next() => match delivery {
                    Some(Delivery::Message(_)) => continue,
                    // Answered at once (a server without subscriptions/listen
                    // says so with an error), or the process is gone.
                    _ => return false,
                },
                msg = unsolicited.recv() => match msg {
                    Some(msg) if msg.method() == Some("notifications/subscriptions/acknowledged")
                        && berth_wire::modern::subscription_id(&msg.bytes).as_ref() == Some(&listen_id) => return true,
                    Some(_) => continue,
                    None => return false,
                },
            }
        }
    })
    .await
    .unwrap_or(false);
    if acknowledged {
        // Held until the process ends; its announcements travel as messages
        // about no request (see `upstream::is_unrelated`).
        tokio::spawn(
            async move { while let Some(Delivery::Message(_)) = exchange.next().await {} },
        );
    }
    match upstream.closed() {
        // With or without a listen (a server that has none announces nothing),
        // a live process serves requests.
        None => Ok(()),
        Some(failure) => Err(failure),
    }
}
