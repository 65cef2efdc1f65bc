//! A federated endpoint: one MCP server made of several of the fleet's.
//!
//! A federated connection is an [`Upstream`](crate::Upstream) like a process
//! or a remote connection, so the edge serves it as any server (sessions,
//! both eras, authorization, resumable streams). What it receives, it
//! answers itself or hands to the member server it concerns:
//!
//! - `initialize` is answered here; members are opened lazily, each on the
//!   first request that needs it, with a process (or remote connection) of
//!   their own pool initialized with the client's own `initialize`.
//! - Lists (`tools/list`, `prompts/list`, `resources/list`,
//!   `resources/templates/list`) are merged: tool and prompt names become
//!   `PREFIX<separator>NAME`, resource URIs `PREFIX+URI`. A name depends on
//!   its member's configuration only, so adding a member renames nothing.
//! - Requests about one tool, prompt or resource go to its member with the
//!   name put back; what the member sends about them (progress, sampling,
//!   elicitation) reaches the client on that request's stream, and the
//!   client's answers go back to the member that asked.
//! - A member that fails costs its own requests a JSON-RPC error naming it;
//!   its next use opens it again. The other members never notice.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use berth_wire::{Envelope, ErrorCode, IdKey, Kind, Message};
use bytes::Bytes;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use crate::upstream::{Link, Shared, gateway_request_id};
use crate::{
    Delivery, EndpointReport, Exchange, Failure, MemberReport, SecretOwner, ServerLog, ServerSpec,
    Unsolicited, Upstream,
};

/// How an endpoint is made of its members.
#[derive(Debug, Clone, PartialEq)]
pub struct FederationSpec {
    /// Between a member's prefix and a name (`github__create_issue`).
    pub separator: String,
    pub members: Vec<MemberSpec>,
    /// Finds a member server's pool by name (the gateway's, as it is now).
    pub pools: PoolLookup,
}

impl FederationSpec {
    /// The member showing `name` (`PREFIX<sep>NAME`: a tool when `tool`,
    /// else a prompt) and the member's own name for it. The longest prefix
    /// wins, so `a` and `a__b` can both be members.
    pub fn find_name(&self, name: &str, tool: bool) -> Option<(usize, String)> {
        self.members
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                let rest = name
                    .strip_prefix(m.prefix.as_str())?
                    .strip_prefix(self.separator.as_str())?;
                let original = if tool {
                    m.original_tool(rest)?
                } else {
                    rest.to_owned()
                };
                Some((m.prefix.len(), (i, original)))
            })
            .max_by_key(|(len, _)| *len)
            .map(|(_, found)| found)
    }

    /// The member showing resource `uri` (`PREFIX+URI`) and its own URI.
    pub fn find_uri(&self, uri: &str) -> Option<(usize, String)> {
        self.members
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                let rest = uri.strip_prefix(m.prefix.as_str())?.strip_prefix('+')?;
                Some((m.prefix.len(), (i, rest.to_owned())))
            })
            .max_by_key(|(len, _)| *len)
            .map(|(_, found)| found)
    }

    /// The member server and its own tool name for a tool the endpoint
    /// shows (for metrics and metering, which count the member's tools).
    pub fn member_tool(&self, shown: &str) -> Option<(&str, String)> {
        let (index, tool) = self.find_name(shown, true)?;
        Some((self.members[index].server.as_str(), tool))
    }
}

/// One member server of an endpoint and how its tools are shown.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MemberSpec {
    /// The member server's name.
    pub server: String,
    /// What its names are prefixed with (default: the server name).
    pub prefix: String,
    /// Only these tools (original names), when set.
    pub allow: Option<Vec<String>>,
    /// Never these tools (original names).
    pub deny: Vec<String>,
    /// Original tool name → the name shown (before the prefix).
    pub rename: BTreeMap<String, String>,
    /// Original tool name → the description shown instead of the server's.
    pub descriptions: BTreeMap<String, String>,
}

impl MemberSpec {
    fn shows(&self, tool: &str) -> bool {
        !self.deny.iter().any(|d| d == tool)
            && self
                .allow
                .as_ref()
                .is_none_or(|allow| allow.iter().any(|a| a == tool))
    }

    /// The name a tool of this member is shown as (without the prefix).
    fn shown_name<'a>(&'a self, tool: &'a str) -> &'a str {
        self.rename.get(tool).map_or(tool, String::as_str)
    }

    /// The original tool name for a shown one, if this member shows it.
    fn original_tool(&self, shown: &str) -> Option<String> {
        let original = self
            .rename
            .iter()
            .find(|(_, to)| *to == shown)
            .map(|(from, _)| from.clone())
            .or_else(|| (!self.rename.contains_key(shown)).then(|| shown.to_owned()))?;
        self.shows(&original).then_some(original)
    }
}

/// Where an endpoint opens a member's session (a server's pool).
pub trait MemberSource: Send + Sync {
    /// A session of the member for `owner` (with its own secrets), and
    /// what the member says outside any request.
    fn open(&self, owner: Option<SecretOwner>) -> OpeningMember;
}

/// A member session being opened (see [`MemberSource::open`]).
pub type OpeningMember =
    futures::future::BoxFuture<'static, Result<(Arc<dyn MemberLink>, Unsolicited), String>>;

/// An open member session (a lease on one of the member's processes).
pub trait MemberLink: Send + Sync {
    fn call(&self, msg: &Message) -> Result<Exchange, Failure>;
    fn send(&self, msg: &Message) -> Result<(), Failure>;
    fn notify(&self, method: &str) -> Result<(), Failure>;
    /// Why it can take no more requests, if it cannot.
    fn closed(&self) -> Option<Failure>;
    /// Its process was initialized by Berth already (a warm pool).
    fn preinitialized(&self) -> bool;
    fn mark_healthy(&self);
    fn pid(&self) -> u32;
}

/// Finds a member server by name. Not configuration: two specs that differ
/// only in their lookup are the same endpoint.
#[derive(Clone)]
pub struct PoolLookup(Arc<FindMember>);

type FindMember = dyn Fn(&str) -> Option<Arc<dyn MemberSource>> + Send + Sync;

impl PoolLookup {
    pub fn new(
        lookup: impl Fn(&str) -> Option<Arc<dyn MemberSource>> + Send + Sync + 'static,
    ) -> PoolLookup {
        PoolLookup(Arc::new(lookup))
    }

    /// A lookup that finds nothing (until the gateway gives its own).
    pub fn none() -> PoolLookup {
        PoolLookup::new(|_| None)
    }
}

impl std::fmt::Debug for PoolLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PoolLookup")
    }
}

impl PartialEq for PoolLookup {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// Versions the endpoint answers `initialize` with (the client's if listed).
const VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

/// Most requests members may have waiting on the client at once (sampling,
/// elicitation...): the endpoint keeps each until the client answers, so a
/// member that floods them at a client that never answers would otherwise
/// grow the session without bound. Past it, the member is answered with an
/// error at once.
const MAX_ASKED: usize = 256;

/// One member as a federated connection holds it.
struct Member {
    spec: MemberSpec,
    /// The open member session, if any; replaced when it fails.
    open: tokio::sync::Mutex<Option<Arc<dyn MemberLink>>>,
}

/// What the client said in its `initialize`, for the members' own.
#[derive(Clone)]
struct Hello {
    params: Option<Box<RawValue>>,
}

/// Opens a federated endpoint's connection: an [`Upstream`] whose messages
/// a [`Hub`] answers or hands to the members.
pub(crate) fn connect(
    spec: &ServerSpec,
    federation: &FederationSpec,
    log: ServerLog,
) -> (Upstream, Unsolicited) {
    Upstream::with_link(spec, log, None, |shared, stop| {
        Hub::new(&spec.name, federation, spec.init_timeout, shared, stop) as Arc<dyn Link>
    })
}

impl Link for Hub {
    // Members are reached through their own pools; an endpoint serves
    // 2026-07-28 clients through the handshake bridge, with no Mcp-Param-*.
    fn hand_over(&self, bytes: Bytes, _params: Option<berth_wire::ParamHeaders>) -> bool {
        self.accept(bytes)
    }

    fn endpoint_report(&self) -> Option<EndpointReport> {
        Some(self.report())
    }

    fn bind_owner(&self, owner: Option<SecretOwner>) {
        *self.owner.lock().unwrap_or_else(|e| e.into_inner()) = owner;
    }
}

/// One federated connection (one client session of the endpoint).
pub(crate) struct Hub {
    /// Itself, for the tasks it spawns.
    this: Weak<Hub>,
    endpoint: String,
    spec: FederationSpec,
    separator: String,
    pools: PoolLookup,
    members: Vec<Member>,
    shared: Weak<Shared>,
    stop: CancellationToken,
    init_timeout: Duration,
    hello: Mutex<Option<Hello>>,
    /// Whose session this is: members are opened with its own secrets.
    owner: Mutex<Option<SecretOwner>>,
    /// The client's requests on the wire to a member: for cancellation.
    inflight: Mutex<HashMap<IdKey, usize>>,
    /// Requests a member made of the client: the id shown to the client →
    /// (member, the member's own id as JSON text).
    asked: Mutex<HashMap<String, (usize, String)>>,
    next: AtomicU64,
}

/// A message for the client failed to be built (cannot happen for the
/// well-formed JSON built here; logged when it does).
fn parse(bytes: Vec<u8>) -> Option<Message> {
    Message::parse(Bytes::from(bytes)).ok()
}

impl Hub {
    pub(crate) fn new(
        endpoint: &str,
        spec: &FederationSpec,
        init_timeout: Duration,
        shared: Weak<Shared>,
        stop: CancellationToken,
    ) -> Arc<Hub> {
        Arc::new_cyclic(|this| Hub {
            this: this.clone(),
            endpoint: endpoint.to_owned(),
            spec: spec.clone(),
            separator: spec.separator.clone(),
            pools: spec.pools.clone(),
            members: spec
                .members
                .iter()
                .map(|m| Member {
                    spec: m.clone(),
                    open: tokio::sync::Mutex::new(None),
                })
                .collect(),
            shared,
            stop,
            init_timeout,
            hello: Mutex::new(None),
            owner: Mutex::new(None),
            inflight: Mutex::default(),
            asked: Mutex::default(),
            next: AtomicU64::new(1),
        })
    }

    fn report(&self) -> EndpointReport {
        EndpointReport {
            members: self
                .members
                .iter()
                .map(|m| {
                    // Busy opening it right now: reported closed until done.
                    let lease = m.open.try_lock().ok().and_then(|open| open.clone());
                    MemberReport {
                        server: m.spec.server.clone(),
                        open: lease.as_ref().is_some_and(|l| l.closed().is_none()),
                        pid: lease.map(|l| l.pid()),
                    }
                })
                .collect(),
        }
    }

    fn log(&self, line: String) {
        if let Some(shared) = self.shared.upgrade() {
            shared.log_line(line);
        }
    }

    /// Hands a message to the client side, as if the server had sent it.
    fn to_client(&self, msg: Message, about: Option<&IdKey>) {
        if let Some(shared) = self.shared.upgrade() {
            shared.route_about(msg, about);
        }
    }

    fn reply(&self, raw_id: &str, result: &str) {
        let bytes = format!(r#"{{"jsonrpc":"2.0","id":{raw_id},"result":{result}}}"#);
        if let Some(msg) = parse(bytes.into_bytes()) {
            self.to_client(msg, None);
        }
    }

    fn fail(&self, raw_id: &str, code: i64, message: &str) {
        let bytes = berth_wire::error_response(Some(raw_id), code, message, None);
        if let Ok(msg) = Message::parse(bytes) {
            self.to_client(msg, None);
        }
    }

    /// Takes a message from the client (never blocks: work is spawned).
    fn accept(&self, bytes: Bytes) -> bool {
        if self.stop.is_cancelled() {
            return false;
        }
        let Some(this) = self.this.upgrade() else {
            return false;
        };
        let Ok(msg) = Message::parse(bytes) else {
            return true;
        };
        match msg.kind {
            Kind::Request => {
                tokio::spawn(this.request(msg));
            }
            Kind::Response => self.answer_to_member(msg),
            Kind::Notification => self.notification(msg),
        }
        true
    }

    /// The client answered a request a member made: back to that member.
    fn answer_to_member(&self, msg: Message) {
        let Some(IdKey::Str(shown)) = &msg.id else {
            return;
        };
        let Some((member, original)) = self
            .asked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&**shown)
        else {
            return;
        };
        let Some(bytes) = berth_wire::with_id(&msg.bytes, &original) else {
            return;
        };
        let this = self.open_lease(member);
        if let (Some(lease), Ok(answer)) = (this, Message::parse(bytes)) {
            let _ = lease.send(&answer);
        }
    }

    /// Answers a member's request for the client with an error: too many
    /// of them are already waiting for the client's answers.
    fn refuse_ask(&self, member: usize, original: &str) {
        let message = format!(
            "endpoint `{}`: {MAX_ASKED} requests from its servers are already waiting for the client's answers; this one was not sent to the client",
            self.endpoint
        );
        let refusal =
            berth_wire::error_response(Some(original), ErrorCode::UNAVAILABLE, &message, None);
        if let (Some(lease), Ok(refusal)) = (self.open_lease(member), Message::parse(refusal)) {
            let _ = lease.send(&refusal);
        }
    }

    /// The member's open lease, if it is open now (no waiting).
    fn open_lease(&self, member: usize) -> Option<Arc<dyn MemberLink>> {
        self.members
            .get(member)?
            .open
            .try_lock()
            .ok()
            .and_then(|open| open.clone())
    }

    fn notification(&self, msg: Message) {
        match msg.method() {
            // The endpoint's own handshake: members get theirs when opened.
            Some("notifications/initialized") => {}
            Some("notifications/cancelled") => {
                let Some(id) = Envelope::parse(&msg.bytes)
                    .ok()
                    .and_then(|e| e.cancelled_request())
                else {
                    return;
                };
                let member = self
                    .inflight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                if let Some(lease) = member.and_then(|m| self.open_lease(m)) {
                    let _ = lease.send(&msg);
                }
            }
            // Everything else concerns every member the client talks to.
            _ => {
                for member in 0..self.members.len() {
                    if let Some(lease) = self.open_lease(member) {
                        let _ = lease.send(&msg);
                    }
                }
            }
        }
    }

    async fn request(self: Arc<Self>, msg: Message) {
        let raw_id = msg.raw_id().unwrap_or_else(|| "null".into());
        let params = Envelope::parse(&msg.bytes)
            .ok()
            .and_then(|e| e.params)
            .map(|p| p.get().to_owned());
        let params: Value = params
            .as_deref()
            .and_then(|p| serde_json::from_str(p).ok())
            .unwrap_or(Value::Null);
        match msg.method().unwrap_or_default() {
            "initialize" => self.initialize(&raw_id, &msg),
            "ping" => self.reply(&raw_id, "{}"),
            "tools/list" => self.merge_list(&raw_id, "tools/list", "tools").await,
            "prompts/list" => self.merge_list(&raw_id, "prompts/list", "prompts").await,
            "resources/list" => {
                self.merge_list(&raw_id, "resources/list", "resources")
                    .await
            }
            "resources/templates/list" => {
                self.merge_list(&raw_id, "resources/templates/list", "resourceTemplates")
                    .await
            }
            "logging/setLevel" => {
                // Every member open now gets it (each answers Berth); one
                // opened later logs at its own default.
                for member in 0..self.members.len() {
                    if let Some(lease) = self.open_lease(member) {
                        let id = Value::from(gateway_request_id()).to_string();
                        let Some(own) = berth_wire::with_id(&msg.bytes, &id)
                            .and_then(|b| Message::parse(b).ok())
                        else {
                            continue;
                        };
                        if let Ok(mut exchange) = lease.call(&own) {
                            let wait = self.init_timeout;
                            tokio::spawn(async move {
                                let _ = tokio::time::timeout(wait, exchange.next()).await;
                            });
                        }
                    }
                }
                self.reply(&raw_id, "{}")
            }
            "tools/call" | "prompts/get" => {
                let name = params["name"].as_str().unwrap_or_default().to_owned();
                let tool = msg.method() == Some("tools/call");
                match self.by_name(&name, tool) {
                    Some((member, original)) => {
                        let rewritten = rewrite_param(&msg, &params, "name", &original);
                        self.forward(member, &msg, rewritten).await
                    }
                    None => self.fail(
                        &raw_id,
                        ErrorCode::INVALID_PARAMS,
                        &format!(
                            "Unknown {} `{name}` on endpoint `{}`: names are PREFIX{}NAME of its members' (see {})",
                            if tool { "tool" } else { "prompt" },
                            self.endpoint,
                            self.separator,
                            if tool { "tools/list" } else { "prompts/list" }
                        ),
                    ),
                }
            }
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                let uri = params["uri"].as_str().unwrap_or_default().to_owned();
                match self.by_uri(&uri) {
                    Some((member, original)) => {
                        let rewritten = rewrite_param(&msg, &params, "uri", &original);
                        self.forward(member, &msg, rewritten).await
                    }
                    None => self.fail(
                        &raw_id,
                        ErrorCode::INVALID_PARAMS,
                        &format!(
                            "Unknown resource `{uri}` on endpoint `{}`: its URIs are PREFIX+URI of its members' (see resources/list)",
                            self.endpoint
                        ),
                    ),
                }
            }
            "completion/complete" => {
                let reference = &params["ref"];
                let target = match reference["type"].as_str() {
                    Some("ref/prompt") => reference["name"]
                        .as_str()
                        .and_then(|n| self.by_name(n, false))
                        .map(|t| (t, "name")),
                    Some("ref/resource") => reference["uri"]
                        .as_str()
                        .and_then(|u| self.by_uri(u))
                        .map(|t| (t, "uri")),
                    _ => None,
                };
                match target {
                    Some(((member, original), key)) => {
                        let mut params = params.clone();
                        params["ref"][key] = Value::from(original);
                        let rewritten = with_params(&msg, &params);
                        self.forward(member, &msg, rewritten).await
                    }
                    None => self.fail(
                        &raw_id,
                        ErrorCode::INVALID_PARAMS,
                        "completion/complete: the ref names no prompt or resource of this endpoint's members",
                    ),
                }
            }
            other => self.fail(
                &raw_id,
                ErrorCode::METHOD_NOT_FOUND,
                &format!(
                    "Method not found: `{other}` is not served by federated endpoint `{}`",
                    self.endpoint
                ),
            ),
        }
    }

    fn initialize(&self, raw_id: &str, msg: &Message) {
        let params = Envelope::parse(&msg.bytes)
            .ok()
            .and_then(|e| e.params)
            .map(|p| p.to_owned());
        let requested = params
            .as_deref()
            .and_then(|p| serde_json::from_str::<Value>(p.get()).ok())
            .and_then(|p| p["protocolVersion"].as_str().map(str::to_owned));
        let version = requested
            .filter(|v| VERSIONS.contains(&v.as_str()))
            .unwrap_or_else(|| VERSIONS[0].to_owned());
        *self.hello.lock().unwrap_or_else(|e| e.into_inner()) = Some(Hello { params });
        let members: Vec<&str> = self
            .members
            .iter()
            .map(|m| m.spec.server.as_str())
            .collect();
        let result = serde_json::json!({
            "protocolVersion": version,
            "capabilities": {
                "tools": { "listChanged": true },
                "prompts": { "listChanged": true },
                "resources": { "listChanged": true, "subscribe": true },
                "logging": {},
                "completions": {},
            },
            "serverInfo": { "name": self.endpoint, "version": env!("CARGO_PKG_VERSION") },
            "instructions": format!(
                "A Berth endpoint over {}: tool and prompt names are PREFIX{}NAME, resource URIs PREFIX+URI.",
                members.join(", "),
                self.separator
            ),
        });
        self.reply(raw_id, &result.to_string());
    }

    fn by_name(&self, name: &str, tool: bool) -> Option<(usize, String)> {
        self.spec.find_name(name, tool)
    }

    fn by_uri(&self, uri: &str) -> Option<(usize, String)> {
        self.spec.find_uri(uri)
    }

    /// The member's open session, opened (and initialized) if it is not.
    async fn member(self: &Arc<Self>, index: usize) -> Result<Arc<dyn MemberLink>, String> {
        let member = self.members.get(index).ok_or("no such member")?;
        let mut open = member.open.lock().await;
        if let Some(lease) = open.as_ref() {
            if lease.closed().is_none() {
                return Ok(lease.clone());
            }
            self.log(format!(
                "member `{}` is gone; opening it again",
                member.spec.server
            ));
            *open = None;
        }
        let source = (self.pools.0)(&member.spec.server)
            .ok_or_else(|| format!("server `{}` is not configured", member.spec.server))?;
        let owner = self.owner.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let (lease, unsolicited) = source.open(owner).await?;
        if !lease.preinitialized() {
            self.initialize_member(&*lease).await?;
        }
        tokio::spawn(
            self.clone()
                .relay_unsolicited(index, lease.clone(), unsolicited),
        );
        *open = Some(lease.clone());
        Ok(lease)
    }

    /// A request of Berth's own to a member (`params` as JSON text), and its
    /// answer within the endpoint's timeout. What the member sends meanwhile
    /// is not the client's to see.
    async fn ask(
        &self,
        lease: &dyn MemberLink,
        method: &str,
        params: &str,
    ) -> Result<Message, String> {
        let id = Value::from(gateway_request_id()).to_string();
        let method_json = Value::from(method).to_string();
        let body =
            format!(r#"{{"jsonrpc":"2.0","id":{id},"method":{method_json},"params":{params}}}"#);
        let msg = parse(body.into_bytes()).ok_or("could not build the request")?;
        let mut exchange = lease.call(&msg).map_err(|f| f.message)?;
        tokio::time::timeout(self.init_timeout, async {
            loop {
                match exchange.next().await {
                    Some(Delivery::Message(_)) => continue,
                    Some(Delivery::Response(m)) => return Ok(m),
                    Some(Delivery::Failed(f)) => return Err(f.message),
                    None => return Err(format!("{method} abandoned")),
                }
            }
        })
        .await
        .map_err(|_| format!("no answer to {method} within {:?}", self.init_timeout))?
    }

    /// The member's own handshake, with the client's `initialize` params.
    async fn initialize_member(&self, lease: &dyn MemberLink) -> Result<(), String> {
        let hello = self.hello.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let params = hello
            .and_then(|h| h.params)
            .map(|p| p.get().to_owned())
            .unwrap_or_else(|| {
                format!(
                    r#"{{"protocolVersion":"{}","capabilities":{{}},"clientInfo":{{"name":"berth","version":"{}"}}}}"#,
                    VERSIONS[0],
                    env!("CARGO_PKG_VERSION")
                )
            });
        let answer = self.ask(lease, "initialize", &params).await?;
        if Envelope::parse(&answer.bytes).is_ok_and(|e| e.is_error) {
            return Err(format!(
                "it refused initialize: {}",
                String::from_utf8_lossy(&answer.bytes[..answer.bytes.len().min(300)])
            ));
        }
        lease
            .notify("notifications/initialized")
            .map_err(|f| f.message)?;
        lease.mark_healthy();
        Ok(())
    }

    /// A request for one member: sent with its names put back; what the
    /// member says about it goes to the client on the request's stream.
    async fn forward(self: Arc<Self>, index: usize, original: &Message, rewritten: Message) {
        let raw_id = original.raw_id().unwrap_or_else(|| "null".into());
        let server = self.members[index].spec.server.clone();
        let lease = match self.member(index).await {
            Ok(lease) => lease,
            Err(why) => {
                return self.fail(
                    &raw_id,
                    ErrorCode::UNAVAILABLE,
                    &format!(
                        "member `{server}` of endpoint `{}` is unavailable: {why}",
                        self.endpoint
                    ),
                );
            }
        };
        let Some(id) = original.id.clone() else {
            return;
        };
        let mut exchange = match lease.call(&rewritten) {
            Ok(exchange) => exchange,
            Err(failure) => {
                return self.fail(
                    &raw_id,
                    failure.code,
                    &format!("member `{server}`: {}", failure.message),
                );
            }
        };
        self.inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), index);
        let method = original.method().unwrap_or_default().to_owned();
        loop {
            let delivery = tokio::select! {
                _ = self.stop.cancelled() => break,
                d = exchange.next() => d,
            };
            match delivery {
                Some(Delivery::Message(m)) => {
                    if let Some(m) = self.shown_to_client(index, m) {
                        self.to_client(m, Some(&id));
                    }
                }
                Some(Delivery::Response(m)) => {
                    let m = match method.as_str() {
                        "resources/read" => self.prefixed_contents(index, m),
                        _ => m,
                    };
                    self.to_client(m, None);
                    break;
                }
                Some(Delivery::Failed(failure)) => {
                    self.fail(
                        &raw_id,
                        failure.code,
                        &format!("member `{server}`: {}", failure.message),
                    );
                    break;
                }
                None => break,
            }
        }
        self.inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// A message a member sent (about a request or not), as the client
    /// must see it: its own requests get ids the client's answer can be
    /// routed back by; resource URIs get the member's prefix. `None`: dealt
    /// with here.
    fn shown_to_client(&self, index: usize, msg: Message) -> Option<Message> {
        match msg.kind {
            Kind::Request => {
                if msg.method() == Some("ping") {
                    let raw = msg.raw_id()?;
                    if let (Some(lease), Some(pong)) = (
                        self.open_lease(index),
                        parse(
                            format!(r#"{{"jsonrpc":"2.0","id":{raw},"result":{{}}}}"#).into_bytes(),
                        ),
                    ) {
                        let _ = lease.send(&pong);
                    }
                    return None;
                }
                let original = msg.raw_id()?;
                let shown = format!(
                    "{}:{}",
                    self.members[index].spec.prefix,
                    self.next.fetch_add(1, Ordering::Relaxed)
                );
                let mut asked = self.asked.lock().unwrap_or_else(|e| e.into_inner());
                if asked.len() >= MAX_ASKED {
                    drop(asked);
                    self.refuse_ask(index, &original);
                    return None;
                }
                asked.insert(shown.clone(), (index, original));
                drop(asked);
                let bytes = berth_wire::with_id(&msg.bytes, &Value::from(shown).to_string())?;
                Message::parse(bytes).ok()
            }
            Kind::Notification if msg.method() == Some("notifications/resources/updated") => {
                let mut value: Value = serde_json::from_slice(&msg.bytes).ok()?;
                let uri = value["params"]["uri"].as_str()?.to_owned();
                value["params"]["uri"] =
                    Value::from(format!("{}+{uri}", self.members[index].spec.prefix));
                parse(value.to_string().into_bytes())
            }
            _ => Some(msg),
        }
    }

    /// What a member says outside any request, to the client; when the
    /// member's process is gone, the member is opened again on next use.
    async fn relay_unsolicited(
        self: Arc<Self>,
        index: usize,
        lease: Arc<dyn MemberLink>,
        mut rx: Unsolicited,
    ) {
        loop {
            let msg = tokio::select! {
                _ = self.stop.cancelled() => return,
                m = rx.recv() => m,
            };
            let Some(msg) = msg else { break };
            if let Some(msg) = self.shown_to_client(index, *msg) {
                self.to_client(msg, None);
            }
        }
        // Gone: forget it, unless a newer session already replaced it.
        let member = &self.members[index];
        let mut open = member.open.lock().await;
        if open.as_ref().is_some_and(|l| Arc::ptr_eq(l, &lease)) {
            *open = None;
            self.log(format!(
                "member `{}` of this endpoint session is gone; its next use opens it again",
                member.spec.server
            ));
        }
    }

    /// One list from every member, merged with their prefixes. A member
    /// that cannot answer costs its own entries only (logged).
    async fn merge_list(self: &Arc<Self>, raw_id: &str, method: &str, key: &str) {
        let lists = futures::future::join_all(
            (0..self.members.len()).map(|i| self.clone().list_of(i, method, key)),
        )
        .await;
        let mut merged = Vec::new();
        for (index, list) in lists.into_iter().enumerate() {
            match list {
                Ok(items) => merged.extend(items),
                Err(why) => self.log(format!(
                    "{method}: member `{}` left out: {why}",
                    self.members[index].spec.server
                )),
            }
        }
        let result = serde_json::json!({ key: merged });
        self.reply(raw_id, &result.to_string());
    }

    /// Every page of one member's list, shown as the endpoint shows it.
    async fn list_of(
        self: Arc<Self>,
        index: usize,
        method: &str,
        key: &str,
    ) -> Result<Vec<Value>, String> {
        let lease = self.member(index).await?;
        let spec = &self.members[index].spec;
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        for _page in 0..100 {
            let mut params = serde_json::json!({});
            if let Some(c) = &cursor {
                params["cursor"] = Value::from(c.clone());
            }
            let answer = self.ask(&*lease, method, &params.to_string()).await?;
            let value: Value = serde_json::from_slice(&answer.bytes).map_err(|e| e.to_string())?;
            if let Some(error) = value.get("error") {
                // A member without prompts or resources has nothing to add.
                if error["code"] == ErrorCode::METHOD_NOT_FOUND {
                    return Ok(items);
                }
                return Err(format!("it answered {method} with an error: {error}"));
            }
            for mut item in value["result"][key].as_array().cloned().unwrap_or_default() {
                if self.show(spec, key, &mut item) {
                    items.push(item);
                }
            }
            match value["result"]["nextCursor"].as_str() {
                Some(next) if !next.is_empty() => cursor = Some(next.to_owned()),
                _ => break,
            }
        }
        Ok(items)
    }

    /// Rewrites one list entry as the endpoint shows it; `false`: hidden.
    fn show(&self, spec: &MemberSpec, key: &str, item: &mut Value) -> bool {
        match key {
            "tools" => {
                let Some(name) = item["name"].as_str().map(str::to_owned) else {
                    return false;
                };
                if !spec.shows(&name) {
                    return false;
                }
                if let Some(description) = spec.descriptions.get(&name) {
                    item["description"] = Value::from(description.clone());
                }
                item["name"] = Value::from(format!(
                    "{}{}{}",
                    spec.prefix,
                    self.separator,
                    spec.shown_name(&name)
                ));
                true
            }
            "prompts" => {
                let Some(name) = item["name"].as_str().map(str::to_owned) else {
                    return false;
                };
                item["name"] = Value::from(format!("{}{}{name}", spec.prefix, self.separator));
                true
            }
            "resources" => {
                let Some(uri) = item["uri"].as_str().map(str::to_owned) else {
                    return false;
                };
                item["uri"] = Value::from(format!("{}+{uri}", spec.prefix));
                true
            }
            "resourceTemplates" => {
                let Some(template) = item["uriTemplate"].as_str().map(str::to_owned) else {
                    return false;
                };
                item["uriTemplate"] = Value::from(format!("{}+{template}", spec.prefix));
                true
            }
            _ => true,
        }
    }

    /// A `resources/read` answer with the member's prefix on each URI.
    fn prefixed_contents(&self, index: usize, msg: Message) -> Message {
        let prefix = &self.members[index].spec.prefix;
        let rewritten = serde_json::from_slice::<Value>(&msg.bytes)
            .ok()
            .and_then(|mut value| {
                let contents = value["result"]["contents"].as_array_mut()?;
                for content in contents {
                    if let Some(uri) = content["uri"].as_str().map(str::to_owned) {
                        content["uri"] = Value::from(format!("{prefix}+{uri}"));
                    }
                }
                parse(value.to_string().into_bytes())
            });
        rewritten.unwrap_or(msg)
    }
}

/// `msg` with `params[key]` set to `value`.
fn rewrite_param(msg: &Message, params: &Value, key: &str, value: &str) -> Message {
    let mut params = params.clone();
    params[key] = Value::from(value);
    with_params(msg, &params)
}

/// `msg` with its params replaced (its id and method kept as written).
fn with_params(msg: &Message, params: &Value) -> Message {
    let raw_id = msg.raw_id().unwrap_or_else(|| "null".into());
    let method = Value::from(msg.method().unwrap_or_default()).to_string();
    let body = format!(r#"{{"jsonrpc":"2.0","id":{raw_id},"method":{method},"params":{params}}}"#);
    Message::parse(Bytes::from(body)).unwrap_or_else(|_| msg.clone())
}
