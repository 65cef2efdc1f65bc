//! A server's roots, as its `roots` setting says ([`Roots`]).
//!
//! Every message to or from a process passes through its [`crate::Upstream`],
//! so the rules are kept there, once, for every way a process is reached:
//! Berth's own `initialize` of a pooled process, a client's `initialize`
//! forwarded to a fresh one (or replayed after a crash), sessions, shared
//! processes and stateless requests alike.
//!
//! - `initialize` (rare) is always read: its `capabilities.roots` is replaced
//!   by Berth's declaration (a fixed list) or removed (none).
//! - The server's `roots/list` is answered by Berth: the fixed list, or
//!   "method not found".
//! - What a client sends about roots is dropped: `notifications/roots/list_changed`,
//!   and an answer that carries a `roots` list (a client must not slip its
//!   roots in as the answer to a request it never saw).
//! - 2026-07-28 requests carry the client's capabilities in
//!   `params._meta`: its `roots` capability is removed there, and so is any
//!   `inputResponses` entry that is a roots list.
//!
//! Everything else passes byte for byte, after a scan for `"roots"` (or a
//! `\u` escape, which could spell it) that finds nothing in ordinary traffic.

use std::fmt::Write as _;
use std::ops::Range;
use std::sync::LazyLock;

use berth_wire::{Envelope, ErrorCode, Kind, Message, error_response};
use bytes::Bytes;
use memchr::memmem::Finder;
use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::Roots;

/// Berth's `roots` capability: a fixed list never changes.
const DECLARED: &str = r#"{"listChanged":false}"#;
/// Where a 2026-07-28 request declares its client's capabilities.
const CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";

/// A client's request on its way to the server: `Some` with the bytes to
/// send instead when the roots setting changes it.
pub(crate) fn request_to_server(roots: &Roots, msg: &Message) -> Option<Message> {
    if roots.from_client() {
        return None;
    }
    let bytes = if msg.method() == Some("initialize") {
        initialize_with(roots, &msg.bytes)?
    } else {
        if !may_mention_roots(&msg.bytes) {
            return None;
        }
        without_client_roots(&msg.bytes)?
    };
    msg.reparse(bytes).ok()
}

/// Whether a client's notification or response must not reach the server:
/// `notifications/roots/list_changed`, or an answer carrying a roots list.
pub(crate) fn drops_from_client(roots: &Roots, msg: &Message) -> bool {
    if roots.from_client() {
        return false;
    }
    match msg.kind {
        Kind::Notification => msg.method() == Some("notifications/roots/list_changed"),
        Kind::Response => may_mention_roots(&msg.bytes) && answers_with_roots(&msg.bytes),
        Kind::Request => false,
    }
}

/// Berth's answer to the server's `roots/list` request `msg`; `None` when
/// the client answers it (`roots = "client"`).
pub(crate) fn answer_list(roots: &Roots, server: &str, msg: &Message) -> Option<Bytes> {
    let id = msg.raw_id();
    let id = id.as_deref().unwrap_or("null");
    match roots {
        Roots::Client => None,
        Roots::Fixed(uris) => {
            let mut out = format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{"roots":["#);
            for (i, uri) in uris.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(
                    out,
                    r#"{{"uri":{}}}"#,
                    serde_json::Value::from(uri.as_str())
                );
            }
            out.push_str("]}}");
            Some(Bytes::from(out))
        }
        Roots::None => Some(error_response(
            Some(id),
            ErrorCode::METHOD_NOT_FOUND,
            &format!(
                "Method not found: Berth gives server `{server}` no roots (its `roots` setting is unset); the operator can set `roots = [\"/dir\", ...]` for it"
            ),
            None,
        )),
    }
}

/// Could `bytes` say `roots` anywhere? (Plainly, or with a `\u` escape.)
fn may_mention_roots(bytes: &[u8]) -> bool {
    // Built once: `memmem::find` builds its searcher on every call.
    static ROOTS: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"roots\""));
    static ESCAPE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\\u"));
    ROOTS.find(bytes).is_some() || ESCAPE.find(bytes).is_some()
}

/// The `initialize` request in `bytes` with `params.capabilities.roots` as
/// `roots` says; `None` when nothing changes (or it cannot be read: the
/// server refuses it as it is).
fn initialize_with(roots: &Roots, bytes: &[u8]) -> Option<Bytes> {
    let declare = match roots {
        Roots::Client => return None,
        Roots::Fixed(_) => true,
        Roots::None => false,
    };
    let params = Envelope::parse(bytes).ok()?.params?;
    let members = members(params.get())?;
    let mut edits = Vec::new();
    let mut had_capabilities = false;
    for (key, value) in &members {
        if key != "capabilities" {
            continue;
        }
        had_capabilities = true;
        let capabilities = members_of(value)?;
        if !declare && !capabilities.iter().any(|(k, _)| k == "roots") {
            continue;
        }
        let kept = capabilities
            .iter()
            .filter(|(k, _)| k != "roots")
            .map(|(k, v)| (k.as_str(), v.get()));
        let rebuilt = if declare {
            object(kept.chain([("roots", DECLARED)]))
        } else {
            object(kept)
        };
        edits.push((range_in(bytes, value.get())?, rebuilt));
    }
    if !had_capabilities && declare {
        let with = object(
            members
                .iter()
                .map(|(k, v)| (k.as_str(), v.get()))
                .chain([("capabilities", r#"{"roots":{"listChanged":false}}"#)]),
        );
        edits.push((range_in(bytes, params.get())?, with));
    }
    apply(bytes, edits)
}

/// A 2026-07-28 request in `bytes` without the client's roots: its
/// `roots` capability in `params._meta`, and `inputResponses` entries that
/// are roots lists. `None` when it has neither.
fn without_client_roots(bytes: &[u8]) -> Option<Bytes> {
    let params = Envelope::parse(bytes).ok()?.params?;
    let mut edits = Vec::new();
    for (key, value) in members(params.get())? {
        match key.as_str() {
            "_meta" => {
                for (key, capabilities) in members_of(value).unwrap_or_default() {
                    if key != CLIENT_CAPABILITIES {
                        continue;
                    }
                    let Some(declared) = members_of(capabilities) else {
                        continue;
                    };
                    if declared.iter().any(|(k, _)| k == "roots") {
                        let kept = declared
                            .iter()
                            .filter(|(k, _)| k != "roots")
                            .map(|(k, v)| (k.as_str(), v.get()));
                        edits.push((range_in(bytes, capabilities.get())?, object(kept)));
                    }
                }
            }
            "inputResponses" => {
                let Some(responses) = members_of(value) else {
                    continue;
                };
                if responses.iter().any(|(_, r)| is_roots_list(r)) {
                    let kept = responses
                        .iter()
                        .filter(|(_, r)| !is_roots_list(r))
                        .map(|(k, v)| (k.as_str(), v.get()));
                    edits.push((range_in(bytes, value.get())?, object(kept)));
                }
            }
            _ => {}
        }
    }
    apply(bytes, edits)
}

/// Whether the response in `bytes` has a result with a `roots` member.
fn answers_with_roots(bytes: &[u8]) -> bool {
    let Ok(envelope) = Envelope::parse(bytes) else {
        return false;
    };
    envelope.result.is_some_and(is_roots_list)
}

/// Whether `value` is an object with a `roots` member (a `ListRootsResult`).
fn is_roots_list(value: &RawValue) -> bool {
    members_of(value).is_some_and(|m| m.iter().any(|(k, _)| k == "roots"))
}

/// A JSON object's members in order, each value exactly as written.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Object;
        impl<'de> Visitor<'de> for Object {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, &'de RawValue>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(Object)
    }
}

/// The members of the object `text` (borrowed from it); `None` if it is not one.
fn members(text: &str) -> Option<Vec<(String, &RawValue)>> {
    serde_json::from_str::<Members<'_>>(text).ok().map(|m| m.0)
}

fn members_of(value: &RawValue) -> Option<Vec<(String, &RawValue)>> {
    members(value.get())
}

/// An object of `members` (values are JSON text).
fn object<'a>(members: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::from("{");
    for (i, (key, value)) in members.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::Value::from(key).to_string());
        out.push(':');
        out.push_str(value);
    }
    out.push('}');
    out
}

/// Where `part`, a slice of `bytes`, lies in them.
fn range_in(bytes: &[u8], part: &str) -> Option<Range<usize>> {
    let start = (part.as_ptr() as usize).checked_sub(bytes.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    (end <= bytes.len()).then_some(start..end)
}

/// `bytes` with each range replaced; `None` if there is nothing to replace.
/// Ranges never overlap (each is a distinct member's value).
fn apply(bytes: &[u8], mut edits: Vec<(Range<usize>, String)>) -> Option<Bytes> {
    if edits.is_empty() {
        return None;
    }
    edits.sort_by_key(|(range, _)| range.start);
    let mut out = Vec::with_capacity(bytes.len() + 32);
    let mut at = 0;
    for (range, with) in edits {
        if range.start < at {
            return None;
        }
        out.extend_from_slice(&bytes[at..range.start]);
        out.extend_from_slice(with.as_bytes());
        at = range.end;
    }
    out.extend_from_slice(&bytes[at..]);
    Some(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn msg(text: &str) -> Message {
        Message::parse(Bytes::from(text.to_owned())).unwrap()
    }

    fn fixed() -> Roots {
        Roots::Fixed(Arc::from(vec!["file:///srv/data".to_string()]))
    }

    fn rewritten(roots: &Roots, text: &str) -> Option<String> {
        request_to_server(roots, &msg(text)).map(|m| String::from_utf8(m.bytes.to_vec()).unwrap())
    }

    const CLIENT_INIT: &str = r#"{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{"sampling":{},"roots":{"listChanged":true},"experimental":{"n":1.50}},"clientInfo":{"name":"evil","version":"1"}}}"#;

    #[test]
    fn a_fixed_list_replaces_the_clients_roots_capability() {
        let out = rewritten(&fixed(), CLIENT_INIT).unwrap();
        assert_eq!(
            out,
            r#"{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{"sampling":{},"experimental":{"n":1.50},"roots":{"listChanged":false}},"clientInfo":{"name":"evil","version":"1"}}}"#
        );
    }

    #[test]
    fn unset_strips_the_clients_roots_capability() {
        let out = rewritten(&Roots::None, CLIENT_INIT).unwrap();
        assert_eq!(
            out,
            r#"{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{"sampling":{},"experimental":{"n":1.50}},"clientInfo":{"name":"evil","version":"1"}}}"#
        );
        // Nothing to strip: the client's bytes go as they are.
        let plain = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"capabilities":{"sampling":{}}}}"#;
        assert_eq!(rewritten(&Roots::None, plain), None);
    }

    #[test]
    fn client_roots_pass_untouched() {
        assert_eq!(rewritten(&Roots::Client, CLIENT_INIT), None);
    }

    #[test]
    fn berth_declares_roots_even_without_capabilities() {
        let bare = r#"{"jsonrpc":"2.0","id":"b:1","method":"initialize","params":{"protocolVersion":"2025-11-25","clientInfo":{"name":"berth","version":"0"}}}"#;
        let out = rewritten(&fixed(), bare).unwrap();
        assert_eq!(
            out,
            r#"{"jsonrpc":"2.0","id":"b:1","method":"initialize","params":{"protocolVersion":"2025-11-25","clientInfo":{"name":"berth","version":"0"},"capabilities":{"roots":{"listChanged":false}}}}"#
        );
        let preinit = r#"{"jsonrpc":"2.0","id":"b:2","method":"initialize","params":{"capabilities":{"sampling":{},"elicitation":{"form":{},"url":{}}}}}"#;
        let out = rewritten(&fixed(), preinit).unwrap();
        assert!(
            out.contains(r#""capabilities":{"sampling":{},"elicitation":{"form":{},"url":{}},"roots":{"listChanged":false}}"#),
            "{out}"
        );
    }

    #[test]
    fn escaped_and_repeated_roots_keys_are_caught() {
        let sneaky = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"capabilities":{"r\u006fots":{},"roots":{"listChanged":true}}}}"#;
        let out = rewritten(&Roots::None, sneaky).unwrap();
        assert!(out.ends_with(r#""params":{"capabilities":{}}}"#), "{out}");
    }

    #[test]
    fn other_requests_pass_byte_for_byte() {
        let call = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"read_text_file","arguments":{"path":"/srv/data/roots.txt"}}}"#;
        assert_eq!(rewritten(&fixed(), call), None);
        assert_eq!(rewritten(&Roots::None, call), None);
    }

    #[test]
    fn modern_requests_lose_the_clients_roots() {
        let call = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"t","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"roots":{},"sampling":{}}},"inputResponses":{"client_roots":{"roots":[{"uri":"file:///etc"}]},"ok":{"action":"accept"}}}}"#;
        let out = rewritten(&fixed(), call).unwrap();
        assert_eq!(
            out,
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"t","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"sampling":{}}},"inputResponses":{"ok":{"action":"accept"}}}}"#
        );
        assert_eq!(rewritten(&Roots::Client, call), None);
    }

    #[test]
    fn what_clients_say_about_roots_is_dropped() {
        let changed = msg(r#"{"jsonrpc":"2.0","method":"notifications/roots/list_changed"}"#);
        let answer = msg(r#"{"jsonrpc":"2.0","id":0,"result":{"roots":[{"uri":"file:///etc"}]}}"#);
        let sampled = msg(
            r#"{"jsonrpc":"2.0","id":1,"result":{"role":"assistant","content":{"type":"text","text":"roots"}}}"#,
        );
        for roots in [fixed(), Roots::None] {
            assert!(drops_from_client(&roots, &changed));
            assert!(drops_from_client(&roots, &answer));
            assert!(!drops_from_client(&roots, &sampled));
        }
        assert!(!drops_from_client(&Roots::Client, &changed));
        assert!(!drops_from_client(&Roots::Client, &answer));
    }

    #[test]
    fn berth_answers_roots_list() {
        let ask = msg(r#"{"jsonrpc":"2.0","id":0,"method":"roots/list"}"#);
        let two = Roots::Fixed(Arc::from(vec![
            "file:///srv/data".to_string(),
            "file:///srv/a%20b".to_string(),
        ]));
        let answer = answer_list(&two, "fs", &ask).unwrap();
        assert_eq!(
            std::str::from_utf8(&answer).unwrap(),
            r#"{"jsonrpc":"2.0","id":0,"result":{"roots":[{"uri":"file:///srv/data"},{"uri":"file:///srv/a%20b"}]}}"#
        );
        let refused: serde_json::Value =
            serde_json::from_slice(&answer_list(&Roots::None, "fs", &ask).unwrap()).unwrap();
        assert_eq!(refused["id"], 0);
        assert_eq!(refused["error"]["code"], ErrorCode::METHOD_NOT_FOUND);
        assert!(answer_list(&Roots::Client, "fs", &ask).is_none());
    }
}
