//! Server-Sent Events framing.

use bytes::{BufMut, Bytes, BytesMut};

/// One SSE event, framed.
pub struct SseEvent;

impl SseEvent {
    /// Frames `data` as an event with an optional id and event type.
    ///
    /// JSON lines never contain a line feed, but a carriage return is legal
    /// whitespace in JSON and is a line terminator in SSE, so data is split on
    /// both into several `data:` lines; the receiver joins them back with `\n`,
    /// which JSON treats as the same whitespace.
    pub fn frame(id: Option<&str>, event: Option<&str>, data: &[u8]) -> Bytes {
        let mut out = BytesMut::with_capacity(data.len() + 48);
        if let Some(id) = id {
            out.put_slice(b"id: ");
            out.put_slice(id.as_bytes());
            out.put_u8(b'\n');
        }
        if let Some(event) = event {
            out.put_slice(b"event: ");
            out.put_slice(event.as_bytes());
            out.put_u8(b'\n');
        }
        for line in data.split(|b| *b == b'\n' || *b == b'\r') {
            out.put_slice(b"data: ");
            out.put_slice(line);
            out.put_u8(b'\n');
        }
        out.put_u8(b'\n');
        out.freeze()
    }
}

/// The first event of a resumable stream: an id to resume from, empty data,
/// and how long the client should wait before reconnecting.
pub fn priming_event(id: &str, retry_ms: u64) -> Bytes {
    Bytes::from(format!("id: {id}\nretry: {retry_ms}\ndata: \n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_events() {
        assert_eq!(
            SseEvent::frame(Some("1-2"), None, b"{\"a\":1}"),
            &b"id: 1-2\ndata: {\"a\":1}\n\n"[..]
        );
        assert_eq!(
            SseEvent::frame(None, Some("endpoint"), b"/x?y=1"),
            &b"event: endpoint\ndata: /x?y=1\n\n"[..]
        );
        assert_eq!(
            SseEvent::frame(None, None, b"{\r}"),
            &b"data: {\ndata: }\n\n"[..]
        );
        assert_eq!(
            priming_event("0-0", 500),
            &b"id: 0-0\nretry: 500\ndata: \n\n"[..]
        );
    }
}
