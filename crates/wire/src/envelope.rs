//! Envelope-only parsing of JSON-RPC 2.0 messages.

use std::borrow::Cow;
use std::fmt;
use std::sync::LazyLock;

use bytes::Bytes;
use memchr::memmem::Finder;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

/// What a JSON-RPC message is, judged by which envelope members it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `method` and `id`: the receiver must answer.
    Request,
    /// `method` without `id`: no answer.
    Notification,
    /// `id` with `result` or `error`: the answer to a request.
    Response,
}

/// The value of a JSON-RPC id (or progress token), for matching.
///
/// Peers re-serialise ids (`1.0` may come back as `1`, `"\u0041"` as `"A"`),
/// so matching compares values while forwarding keeps each side's own bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IdKey {
    Int(i64),
    Str(Box<str>),
    /// Any other number (fractions, integers beyond i64), kept as its text.
    Number(Box<str>),
}

impl IdKey {
    /// Reads an id or token; `None` when the value is not a string or number.
    pub fn from_raw(raw: &RawValue) -> Option<IdKey> {
        let text = raw.get();
        match text.as_bytes().first()? {
            b'"' => {
                let s: Cow<'_, str> = serde_json::from_str(text).ok()?;
                Some(IdKey::Str(s.into()))
            }
            b'-' | b'0'..=b'9' => {
                let n: serde_json::Number = serde_json::from_str(text).ok()?;
                if let Some(i) = n.as_i64() {
                    Some(IdKey::Int(i))
                } else if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                {
                    Some(IdKey::Int(f as i64))
                } else {
                    Some(IdKey::Number(n.to_string().into()))
                }
            }
            _ => None,
        }
    }

    /// The id as JSON text, for messages Berth writes itself.
    pub fn to_json(&self) -> String {
        match self {
            IdKey::Int(i) => i.to_string(),
            IdKey::Str(s) => serde_json::to_string(&**s).unwrap_or_else(|_| "null".into()),
            IdKey::Number(n) => n.to_string(),
        }
    }
}

impl fmt::Display for IdKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json())
    }
}

/// Why a message could not be read. The text is meant for the person who sent it.
#[derive(Debug)]
pub enum ParseError {
    /// Not JSON at all (JSON-RPC code -32700).
    Json(serde_json::Error),
    /// JSON, but not a JSON-RPC 2.0 message (code -32600).
    Invalid(String),
}

impl ParseError {
    pub fn code(&self) -> i64 {
        match self {
            ParseError::Json(_) => crate::ErrorCode::PARSE_ERROR,
            ParseError::Invalid(_) => crate::ErrorCode::INVALID_REQUEST,
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Json(e) => write!(f, "Parse error: the body is not valid JSON ({e})"),
            ParseError::Invalid(why) => write!(f, "Invalid Request: {why}"),
        }
    }
}

impl std::error::Error for ParseError {}

/// Deserialises a member that may be `null`, keeping `null` distinct from absent.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct RawEnvelope<'a> {
    #[serde(borrow)]
    jsonrpc: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "present")]
    params: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    result: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    error: Option<&'a RawValue>,
}

/// A borrowed view of one message's envelope.
#[derive(Debug)]
pub struct Envelope<'a> {
    pub kind: Kind,
    /// The id exactly as written (requests and responses; `null` is possible on error responses).
    pub id: Option<&'a RawValue>,
    pub method: Option<Cow<'a, str>>,
    pub params: Option<&'a RawValue>,
    pub result: Option<&'a RawValue>,
    pub is_error: bool,
}

impl<'a> Envelope<'a> {
    /// Parses the envelope of one message (not a batch).
    pub fn parse(bytes: &'a [u8]) -> Result<Envelope<'a>, ParseError> {
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace()).copied();
        if first != Some(b'{') {
            // Tell JSON that is not an object apart from bytes that are not JSON.
            let value: serde_json::Value =
                serde_json::from_slice(bytes).map_err(ParseError::Json)?;
            return Err(ParseError::Invalid(format!(
                "expected a JSON-RPC message object, got {}",
                json_type(&value)
            )));
        }
        let raw: RawEnvelope<'a> = serde_json::from_slice(bytes).map_err(|e| {
            if e.is_data() {
                ParseError::Invalid(format!("malformed JSON-RPC envelope ({e})"))
            } else {
                ParseError::Json(e)
            }
        })?;
        match raw.jsonrpc.as_deref() {
            Some("2.0") => {}
            Some(other) => {
                return Err(ParseError::Invalid(format!(
                    "\"jsonrpc\" must be \"2.0\", got {other:?}"
                )));
            }
            None => return Err(ParseError::Invalid("missing \"jsonrpc\": \"2.0\"".into())),
        }
        let kind = match (
            &raw.method,
            raw.id,
            raw.result.is_some() || raw.error.is_some(),
        ) {
            (Some(_), Some(id), false) => {
                if IdKey::from_raw(id).is_none() {
                    return Err(ParseError::Invalid(
                        "a request \"id\" must be a string or a number".into(),
                    ));
                }
                Kind::Request
            }
            (Some(_), None, false) => Kind::Notification,
            (None, Some(_), true) => Kind::Response,
            (None, None, true) => {
                return Err(ParseError::Invalid("a response needs an \"id\"".into()));
            }
            (Some(_), _, true) => {
                return Err(ParseError::Invalid(
                    "a message cannot carry both \"method\" and \"result\"/\"error\"".into(),
                ));
            }
            (None, _, false) => {
                return Err(ParseError::Invalid(
                    "a message needs a \"method\" (request or notification) or a \"result\"/\"error\" (response)".into(),
                ));
            }
        };
        if raw.result.is_some() && raw.error.is_some() {
            return Err(ParseError::Invalid(
                "a response cannot carry both \"result\" and \"error\"".into(),
            ));
        }
        Ok(Envelope {
            kind,
            id: raw.id,
            method: raw.method,
            params: raw.params,
            result: raw.result,
            is_error: raw.error.is_some(),
        })
    }

    /// The progress token this message refers to: `params._meta.progressToken`
    /// on a request, `params.progressToken` on a progress notification.
    pub fn progress_token(&self) -> Option<IdKey> {
        IdKey::from_raw(self.progress_token_raw()?)
    }

    /// The progress token as written, borrowed from the message.
    fn progress_token_raw(&self) -> Option<&'a RawValue> {
        #[derive(Deserialize)]
        struct Meta<'a> {
            #[serde(borrow, rename = "progressToken")]
            progress_token: Option<&'a RawValue>,
        }
        #[derive(Deserialize)]
        struct Params<'a> {
            #[serde(borrow, rename = "_meta")]
            meta: Option<Meta<'a>>,
            #[serde(borrow, rename = "progressToken")]
            progress_token: Option<&'a RawValue>,
        }
        let params: Params<'a> = serde_json::from_str(self.params?.get()).ok()?;
        match self.kind {
            Kind::Request => params.meta?.progress_token,
            _ => params.progress_token,
        }
    }

    /// `params.requestId` of a `notifications/cancelled`.
    pub fn cancelled_request(&self) -> Option<IdKey> {
        #[derive(Deserialize)]
        struct Params<'a> {
            #[serde(borrow, rename = "requestId")]
            request_id: Option<&'a RawValue>,
        }
        let params: Params<'_> = serde_json::from_str(self.params?.get()).ok()?;
        IdKey::from_raw(params.request_id?)
    }
}

/// The `params` of the message in `bytes`, read as `T` (borrowing from `bytes`).
pub(crate) fn params_as<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Option<T> {
    let params = Envelope::parse(bytes).ok()?.params?;
    serde_json::from_str(params.get()).ok()
}

/// Replaces the bytes of `part` (a value borrowed from `bytes`) by `with`.
fn splice(bytes: &[u8], part: &RawValue, with: &str) -> Option<Bytes> {
    splice_str(bytes, part.get(), with)
}

/// `bytes` with `part` (a slice of them) replaced by `with`; every other byte kept.
pub(crate) fn splice_str(bytes: &[u8], part: &str, with: &str) -> Option<Bytes> {
    let start = (part.as_ptr() as usize).checked_sub(bytes.as_ptr() as usize)?;
    let end = start + part.len();
    if end > bytes.len() {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() - part.len() + with.len());
    out.extend_from_slice(&bytes[..start]);
    out.extend_from_slice(with.as_bytes());
    out.extend_from_slice(&bytes[end..]);
    Some(Bytes::from(out))
}

/// The message with its `id` replaced by `id` (JSON text); every other byte
/// is kept. `None` if the message has no id.
pub fn with_id(bytes: &[u8], id: &str) -> Option<Bytes> {
    let env = Envelope::parse(bytes).ok()?;
    splice(bytes, env.id?, id)
}

/// The message with its progress token (`params._meta.progressToken` of a
/// request, `params.progressToken` of a progress notification) replaced by
/// `token` (JSON text). `None` if it carries none.
pub fn with_progress_token(bytes: &[u8], token: &str) -> Option<Bytes> {
    let env = Envelope::parse(bytes).ok()?;
    splice(bytes, env.progress_token_raw()?, token)
}

/// The message with `params._meta[key]` set to `value` (JSON text),
/// replacing the key wherever it is written (however escaped) and creating
/// `params` and `_meta` when absent; every other byte is kept. `None` when
/// the message is not a JSON-RPC object, or its `params` or `_meta` is not
/// an object: then it must go on unchanged.
pub fn with_meta(bytes: &[u8], key: &str, value: &str) -> Option<Bytes> {
    let env = Envelope::parse(bytes).ok()?;
    let member = format!("{}:{value}", serde_json::Value::from(key));
    let Some(params) = env.params else {
        let message = std::str::from_utf8(bytes).ok()?;
        let start = message.find('{')?;
        let object = message.get(start..message.rfind('}')? + 1)?;
        let with = with_member(object, &format!(r#""params":{{"_meta":{{{member}}}}}"#))?;
        return splice_str(bytes, object, &with);
    };
    let members = object_members(params.get())?;
    let Some((_, meta)) = members.iter().rev().find(|(k, _)| k == "_meta") else {
        let with = with_member(params.get(), &format!(r#""_meta":{{{member}}}"#))?;
        return splice(bytes, params, &with);
    };
    let entries = object_members(meta.get())?;
    let written: Vec<&RawValue> = entries
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| *v)
        .collect();
    if written.is_empty() {
        let with = with_member(meta.get(), &member)?;
        return splice(bytes, meta, &with);
    }
    // Every copy of the key is replaced: readers differ on which one wins.
    let mut out = Vec::with_capacity(bytes.len() + value.len());
    let mut at = 0;
    for part in written {
        let start = (part.get().as_ptr() as usize).checked_sub(bytes.as_ptr() as usize)?;
        out.extend_from_slice(bytes.get(at..start)?);
        out.extend_from_slice(value.as_bytes());
        at = start + part.get().len();
    }
    out.extend_from_slice(bytes.get(at..)?);
    Some(Bytes::from(out))
}

/// The members of a JSON object as written (keys unescaped, values raw and
/// borrowed, duplicates kept, in order); `None` if `text` is not an object.
fn object_members(text: &str) -> Option<Vec<(Cow<'_, str>, &RawValue)>> {
    struct Members;
    impl<'de> serde::de::Visitor<'de> for Members {
        type Value = Vec<(Cow<'de, str>, &'de RawValue)>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut members = Vec::new();
            while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                members.push((key, map.next_value::<&'de RawValue>()?));
            }
            Ok(members)
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    serde::Deserializer::deserialize_map(&mut de, Members).ok()
}

/// An object's text (`{...}`) with `member` (`"key":value`) added last.
fn with_member(object: &str, member: &str) -> Option<String> {
    let close = object.rfind('}')?;
    let open = object.find('{')?;
    let empty = object.get(open + 1..close)?.trim().is_empty();
    let mut out = String::with_capacity(object.len() + member.len() + 1);
    out.push_str(object.get(..close)?);
    if !empty {
        out.push(',');
    }
    out.push_str(member);
    out.push_str(object.get(close..)?);
    Some(out)
}

/// `result.protocolVersion` of an initialize response.
pub fn initialize_result_version(result: &RawValue) -> Option<String> {
    #[derive(Deserialize)]
    struct InitializeResult {
        #[serde(rename = "protocolVersion")]
        protocol_version: Option<String>,
    }
    serde_json::from_str::<InitializeResult>(result.get())
        .ok()?
        .protocol_version
}

/// What a client said about itself in `initialize`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHello {
    pub protocol_version: Option<String>,
    pub sampling: bool,
    pub elicitation: bool,
    pub roots: bool,
}

impl ClientHello {
    /// Reads `params` of an initialize request; absent parts are `false`/`None`.
    pub fn from_params(params: Option<&RawValue>) -> ClientHello {
        #[derive(Deserialize)]
        struct Capabilities<'a> {
            #[serde(borrow)]
            sampling: Option<&'a RawValue>,
            #[serde(borrow)]
            elicitation: Option<&'a RawValue>,
            #[serde(borrow)]
            roots: Option<&'a RawValue>,
        }
        #[derive(Deserialize)]
        struct Params<'a> {
            #[serde(rename = "protocolVersion")]
            protocol_version: Option<String>,
            #[serde(borrow)]
            capabilities: Option<Capabilities<'a>>,
        }
        let Some(params) = params.and_then(|p| serde_json::from_str::<Params<'_>>(p.get()).ok())
        else {
            return ClientHello::default();
        };
        let caps = params.capabilities;
        ClientHello {
            protocol_version: params.protocol_version,
            sampling: caps.as_ref().is_some_and(|c| c.sampling.is_some()),
            elicitation: caps.as_ref().is_some_and(|c| c.elicitation.is_some()),
            roots: caps.as_ref().is_some_and(|c| c.roots.is_some()),
        }
    }

    /// Whether a request from the server needs a capability this client did
    /// not declare; returns the capability's name if so.
    pub fn lacks_capability_for(&self, method: &str) -> Option<&'static str> {
        match method {
            "sampling/createMessage" if !self.sampling => Some("sampling"),
            "elicitation/create" if !self.elicitation => Some("elicitation"),
            "roots/list" if !self.roots => Some("roots"),
            _ => None,
        }
    }
}

fn json_type(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// One owned message: its original bytes and what routing needs from its envelope.
#[derive(Debug, Clone)]
pub struct Message {
    /// The message exactly as received, on one line, without the newline.
    pub bytes: Bytes,
    pub kind: Kind,
    pub id: Option<IdKey>,
    pub method: Option<Box<str>>,
    pub progress_token: Option<IdKey>,
    /// The tool a `tools/call` request names (`params.name`), read once
    /// here for authorization, metrics and metering.
    tool: Option<Box<str>>,
    /// Where the id is written in `bytes`, so that [`Message::raw_id`]
    /// need not parse the envelope again.
    id_span: Option<IdSpan>,
    /// Headers the request carried beside its body (see [`ParamHeaders`]).
    param_headers: Option<ParamHeaders>,
}

/// The `Mcp-Param-*` headers of a 2026-07-28 request (SEP-2243): they
/// mirror arguments a tool's schema marks `x-mcp-header`, and the server
/// checks them against the body. A stdio hop has nowhere to put them; an
/// HTTP hop must send them on, so they travel with the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamHeaders(std::sync::Arc<[(Box<str>, Box<str>)]>);

impl ParamHeaders {
    /// `(name, value)` pairs; `None` when there are none.
    pub fn new(pairs: impl IntoIterator<Item = (Box<str>, Box<str>)>) -> Option<ParamHeaders> {
        let pairs: std::sync::Arc<[(Box<str>, Box<str>)]> = pairs.into_iter().collect();
        (!pairs.is_empty()).then_some(ParamHeaders(pairs))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(name, value)| (&**name, &**value))
    }
}

/// The id's place in the buffer it was parsed from (that buffer's address
/// and length too: `bytes` is a public field and may have been replaced).
#[derive(Debug, Clone, Copy)]
struct IdSpan {
    base: usize,
    total: usize,
    start: usize,
    len: usize,
}

impl IdSpan {
    fn of(bytes: &[u8], part: &str) -> Option<IdSpan> {
        let base = bytes.as_ptr() as usize;
        let start = (part.as_ptr() as usize).checked_sub(base)?;
        (start.checked_add(part.len())? <= bytes.len()).then_some(IdSpan {
            base,
            total: bytes.len(),
            start,
            len: part.len(),
        })
    }

    /// The id's text in `bytes`, if `bytes` is still the buffer it was found in.
    fn text(self, bytes: &[u8]) -> Option<&str> {
        if bytes.as_ptr() as usize != self.base || bytes.len() != self.total {
            return None;
        }
        std::str::from_utf8(bytes.get(self.start..self.start + self.len)?).ok()
    }
}

impl Message {
    pub fn parse(bytes: Bytes) -> Result<Message, ParseError> {
        let env = Envelope::parse(&bytes)?;
        let progress_token = match (env.kind, env.method.as_deref()) {
            (Kind::Request, _) | (Kind::Notification, Some("notifications/progress"))
                if may_carry_progress_token(env.params) =>
            {
                env.progress_token()
            }
            _ => None,
        };
        let id = env.id.and_then(IdKey::from_raw);
        let id_span = env.id.and_then(|raw| IdSpan::of(&bytes, raw.get()));
        let kind = env.kind;
        let tool = match (kind, env.method.as_deref()) {
            (Kind::Request, Some("tools/call")) => called_tool(env.params),
            _ => None,
        };
        let method = env.method.map(|m| m.into());
        Ok(Message {
            bytes,
            kind,
            id,
            method,
            progress_token,
            tool,
            id_span,
            param_headers: None,
        })
    }

    /// This message rewritten as `bytes` (an added `_meta` key, say):
    /// parsed again, keeping what travels beside the body.
    pub fn reparse(&self, bytes: Bytes) -> Result<Message, ParseError> {
        Ok(Message::parse(bytes)?.with_param_headers(self.param_headers.clone()))
    }

    /// The `Mcp-Param-*` headers the request came with, if any.
    pub fn param_headers(&self) -> Option<&ParamHeaders> {
        self.param_headers.as_ref()
    }

    pub fn with_param_headers(mut self, headers: Option<ParamHeaders>) -> Message {
        self.param_headers = headers;
        self
    }

    pub fn method(&self) -> Option<&str> {
        self.method.as_deref()
    }

    /// The tool a `tools/call` request names; `None` for other messages or
    /// when `params.name` is not a string.
    pub fn tool(&self) -> Option<&str> {
        self.tool.as_deref()
    }

    /// The id exactly as the sender wrote it (`123456789012345678901234567890`
    /// stays that, not `1.2345678901234568e+29`), for answers that must echo it.
    /// `None` when the message has no usable id.
    pub fn raw_id(&self) -> Option<String> {
        let key = self.id.as_ref()?;
        if let Some(text) = self.id_span.and_then(|span| span.text(&self.bytes)) {
            return Some(text.to_owned());
        }
        // `bytes` was replaced after parsing (a public field): read it again.
        let written = Envelope::parse(&self.bytes)
            .ok()
            .and_then(|env| env.id)
            .map(|raw| raw.get().to_owned());
        Some(written.unwrap_or_else(|| key.to_json()))
    }

    /// For a line [`Message::parse`] refused: whether it is still a JSON-RPC
    /// 2.0 message object (`Some`: a message that cannot be routed, such as
    /// an error response without an id) rather than output that is not
    /// JSON-RPC at all (`None`).
    pub fn stray(bytes: &[u8]) -> Option<Stray> {
        let value: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(bytes).ok()?;
        if value.get("jsonrpc").and_then(|v| v.as_str()) != Some("2.0") {
            return None;
        }
        let usable_id = value
            .get("id")
            .is_some_and(|id| id.is_string() || id.is_number());
        let idless_error = value.contains_key("error")
            && !value.contains_key("method")
            && !value.contains_key("result")
            && !usable_id;
        Some(if idless_error {
            Stray::IdlessError
        } else {
            Stray::Other
        })
    }
}

/// Whether `params` may hold a progress token: most requests carry none, and
/// a substring search is far cheaper than reading `params` a second time.
/// A backslash may hide an escaped key (`"progress\u0054oken"`): then read.
fn may_carry_progress_token(params: Option<&RawValue>) -> bool {
    params.is_some_and(|p| {
        let text = p.get().as_bytes();
        // Built once: `memmem::find` builds its searcher on every call.
        static KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"progressToken"));
        memchr::memchr(b'\\', text).is_some() || KEY.find(text).is_some()
    })
}

/// `params.name` of a `tools/call`.
fn called_tool(params: Option<&RawValue>) -> Option<Box<str>> {
    #[derive(Deserialize)]
    struct Params<'a> {
        #[serde(borrow)]
        name: Option<Cow<'a, str>>,
    }
    let params: Params = serde_json::from_str(params?.get()).ok()?;
    params.name.map(|n| n.into())
}

/// A JSON-RPC 2.0 message that no request or session can be found for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stray {
    /// An error response with no id, a `null` one, or one that is neither a
    /// string nor a number: the server could not read a request's id.
    IdlessError,
    /// Anything else that cannot be routed.
    Other,
}

/// The error response in `bytes` (whatever its id: missing, `null`,
/// unusable) as a new line carrying `id` (JSON text) and the server's
/// `error` object byte for byte. `None` if `bytes` holds no error object.
pub fn error_with_id(bytes: &[u8], id: &str) -> Option<Bytes> {
    #[derive(Deserialize)]
    struct ErrorOnly<'a> {
        #[serde(borrow)]
        error: Option<&'a RawValue>,
    }
    let error = serde_json::from_slice::<ErrorOnly<'_>>(bytes).ok()?.error?;
    Some(Bytes::from(format!(
        r#"{{"jsonrpc":"2.0","id":{id},"error":{}}}"#,
        error.get()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Message, ParseError> {
        Message::parse(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn classifies_messages() {
        let m = parse(r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"_meta":{"progressToken":"p1"}}}"#).unwrap();
        assert_eq!(m.kind, Kind::Request);
        assert_eq!(m.id, Some(IdKey::Int(7)));
        assert_eq!(m.progress_token, Some(IdKey::Str("p1".into())));
        let n = parse(r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":3,"progress":1}}"#).unwrap();
        assert_eq!(n.kind, Kind::Notification);
        assert_eq!(n.progress_token, Some(IdKey::Int(3)));
        let r = parse(r#"{"jsonrpc":"2.0","id":"a","result":{}}"#).unwrap();
        assert_eq!(r.kind, Kind::Response);
        let e = parse(r#"{"jsonrpc":"2.0","id":null,"error":{"code":1,"message":"x"}}"#).unwrap();
        assert_eq!(e.kind, Kind::Response);
        assert_eq!(e.id, None);
    }

    #[test]
    fn raw_ids_keep_their_bytes() {
        let m = parse(
            r#"{"jsonrpc":"2.0","id": 123456789012345678901234567890123456789 ,"method":"x"}"#,
        )
        .unwrap();
        assert_eq!(
            m.raw_id().as_deref(),
            Some("123456789012345678901234567890123456789")
        );
        let m = parse(r#"{"jsonrpc":"2.0","id":1.50,"method":"x"}"#).unwrap();
        assert_eq!(m.raw_id().as_deref(), Some("1.50"));
        let m = parse(r#"{"jsonrpc":"2.0","id":"\u0041","method":"x"}"#).unwrap();
        assert_eq!(m.raw_id().as_deref(), Some(r#""\u0041""#));
        let m = parse(r#"{"jsonrpc":"2.0","id":null,"error":{"code":1,"message":"x"}}"#).unwrap();
        assert_eq!(m.raw_id(), None);
        // Bytes replaced after parsing: the id is read from the new ones.
        let mut m = parse(r#"{"jsonrpc":"2.0","id":"abc","method":"x"}"#).unwrap();
        m.bytes = Bytes::from_static(br#"{"jsonrpc":"2.0","id":7,"method":"x"}"#);
        assert_eq!(m.raw_id().as_deref(), Some("7"));
    }

    #[test]
    fn progress_tokens_found_however_written() {
        let escaped = parse(
            r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"_meta":{"progress\u0054oken":"t"}}}"#,
        )
        .unwrap();
        assert_eq!(escaped.progress_token, Some(IdKey::Str("t".into())));
        let none = parse(r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":"b"}}"#).unwrap();
        assert_eq!(none.progress_token, None);
        let text = parse(r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":"progressToken"}}"#)
            .unwrap();
        assert_eq!(text.progress_token, None);
    }

    #[test]
    fn tells_stray_messages_from_garbage() {
        let no_id = br#"{"jsonrpc":"2.0","error":{"code":-32600,"message":"bad id"}}"#;
        assert!(Message::parse(Bytes::from_static(no_id)).is_err());
        assert_eq!(Message::stray(no_id), Some(Stray::IdlessError));
        let odd_id = br#"{"jsonrpc":"2.0","id":{"a":1},"error":{"code":1,"message":"x"}}"#;
        assert_eq!(Message::stray(odd_id), Some(Stray::IdlessError));
        let both = br#"{"jsonrpc":"2.0","id":1,"method":"x","result":{}}"#;
        assert_eq!(Message::stray(both), Some(Stray::Other));
        assert_eq!(Message::stray(b"this is not json"), None);
        assert_eq!(Message::stray(b"[1,2]"), None);
        assert_eq!(Message::stray(br#"{"id":1,"error":{}}"#), None);
    }

    #[test]
    fn error_responses_take_a_new_id() {
        let out = error_with_id(
            br#"{"error": {"code":-32602, "message":"Invalid params"}, "jsonrpc":"2.0"}"#,
            r#""b1.7""#,
        )
        .unwrap();
        assert_eq!(
            &out[..],
            br#"{"jsonrpc":"2.0","id":"b1.7","error":{"code":-32602, "message":"Invalid params"}}"#
        );
        let m = Message::parse(out).unwrap();
        assert_eq!(m.id, Some(IdKey::Str("b1.7".into())));
        assert!(error_with_id(br#"{"jsonrpc":"2.0","id":null,"result":{}}"#, "1").is_none());
    }

    #[test]
    fn ids_match_by_value() {
        let a = IdKey::from_raw(&RawValue::from_string("1.0".into()).unwrap());
        assert_eq!(a, Some(IdKey::Int(1)));
        let b = IdKey::from_raw(&RawValue::from_string(r#""\u0041""#.into()).unwrap());
        assert_eq!(b, Some(IdKey::Str("A".into())));
        let big = IdKey::from_raw(&RawValue::from_string("18446744073709551615".into()).unwrap());
        assert_eq!(big, Some(IdKey::Number("18446744073709551615".into())));
    }

    #[test]
    fn splices_ids_and_tokens_keeping_every_other_byte() {
        let req = br#"{"jsonrpc":"2.0", "id" : 7,"method":"tools/call","params":{"_meta":{"progressToken":"p"},"x":[1.0]}}"#;
        let out = with_id(req, r#""b1.1""#).unwrap();
        assert_eq!(&out[..], br#"{"jsonrpc":"2.0", "id" : "b1.1","method":"tools/call","params":{"_meta":{"progressToken":"p"},"x":[1.0]}}"#);
        let out = with_progress_token(&out, r#""b1.p1""#).unwrap();
        assert!(out.ends_with(br#"{"_meta":{"progressToken":"b1.p1"},"x":[1.0]}}"#));
        let note = br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"b1.p1","progress":1}}"#;
        let back = with_progress_token(note, r#""p""#).unwrap();
        assert_eq!(&back[..], br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"p","progress":1}}"#);
        assert!(with_progress_token(br#"{"jsonrpc":"2.0","id":1,"method":"x"}"#, "1").is_none());
    }

    #[test]
    fn sets_one_meta_key_keeping_every_other_byte() {
        let tp = r#""00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01""#;
        let set = |req: &str| {
            with_meta(req.as_bytes(), "traceparent", tp)
                .map(|b| String::from_utf8(b.to_vec()).unwrap())
        };
        // No params: created, at the end of the message.
        assert_eq!(
            set(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).unwrap(),
            format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"_meta":{{"traceparent":{tp}}}}}}}"#
            )
        );
        // Params without _meta, and an empty params object.
        assert_eq!(
            set(
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"e","x":[1.0]}}"#
            )
            .unwrap(),
            format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"e","x":[1.0],"_meta":{{"traceparent":{tp}}}}}}}"#
            )
        );
        assert_eq!(
            set(r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{ }}"#).unwrap(),
            format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"x","params":{{ "_meta":{{"traceparent":{tp}}}}}}}"#
            )
        );
        // An existing _meta keeps its members (and their odd formatting).
        assert_eq!(
            set(r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"_meta":{"progressToken":1e0 , "a\u0062":"\u00e9"}}}"#).unwrap(),
            format!(r#"{{"jsonrpc":"2.0","id":1,"method":"x","params":{{"_meta":{{"progressToken":1e0 , "a\u0062":"\u00e9","traceparent":{tp}}}}}}}"#)
        );
        // An existing traceparent is replaced, even written with escapes.
        assert_eq!(
            set(r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"_m\u0065ta":{"trace\u0070arent":"00-old-01","k":2}}}"#).unwrap(),
            format!(r#"{{"jsonrpc":"2.0","id":1,"method":"x","params":{{"_m\u0065ta":{{"trace\u0070arent":{tp},"k":2}}}}}}"#)
        );
        // Every copy of a duplicated key.
        assert_eq!(
            set(r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"_meta":{"traceparent":"a","traceparent":"b"}}}"#).unwrap(),
            format!(r#"{{"jsonrpc":"2.0","id":1,"method":"x","params":{{"_meta":{{"traceparent":{tp},"traceparent":{tp}}}}}}}"#)
        );
        // A key in a string elsewhere is not a member.
        let out = set(r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"text":"\"_meta\":{\"traceparent\":1}"}}"#).unwrap();
        assert!(out.starts_with(r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"text":"\"_meta\":{\"traceparent\":1}","_meta":"#), "{out}");
        // Whatever is spliced in parses, and the message is still the same request.
        let m = Message::parse(Bytes::from(out)).unwrap();
        assert_eq!((m.kind, m.id), (Kind::Request, Some(IdKey::Int(1))));
        // Params or _meta that are not objects: leave the message alone.
        assert_eq!(
            set(r#"{"jsonrpc":"2.0","id":1,"method":"x","params":[1,2]}"#),
            None
        );
        assert_eq!(
            set(r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"_meta":null}}"#),
            None
        );
        assert_eq!(set("not json"), None);
    }

    #[test]
    fn rejects_bad_input_readably() {
        let e = parse("{not json").unwrap_err();
        assert!(matches!(e, ParseError::Json(_)), "{e}");
        let e = parse("42").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Invalid Request: expected a JSON-RPC message object, got a number"
        );
        let e = parse(r#"{"id":1,"method":"x"}"#).unwrap_err();
        assert!(e.to_string().contains("missing \"jsonrpc\""), "{e}");
        let e = parse(r#"{"jsonrpc":"2.0","id":null,"method":"x"}"#).unwrap_err();
        assert!(e.to_string().contains("string or a number"), "{e}");
        let e = parse(r#"{"jsonrpc":"2.0","id":1,"method":5}"#).unwrap_err();
        assert!(matches!(e, ParseError::Invalid(_)), "{e}");
    }
}
