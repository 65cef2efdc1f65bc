//! Newline-delimited JSON, the stdio transport's framing.

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Splits a byte stream into lines of at most `max_len` bytes.
///
/// A longer line is an error: the decoder never buffers more than `max_len`
/// plus one read, so a runaway writer cannot grow the reader's memory.
#[derive(Debug)]
pub struct LineCodec {
    max_len: usize,
    /// How far the buffer has been searched for a newline already.
    scanned: usize,
}

impl LineCodec {
    pub fn new(max_len: usize) -> LineCodec {
        LineCodec {
            max_len,
            scanned: 0,
        }
    }
}

#[derive(Debug)]
pub enum LineError {
    TooLong { max_len: usize },
    Io(std::io::Error),
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LineError::TooLong { max_len } => {
                write!(f, "a message exceeded the {max_len}-byte line limit")
            }
            LineError::Io(e) => write!(f, "read error: {e}"),
        }
    }
}

impl std::error::Error for LineError {}

impl From<std::io::Error> for LineError {
    fn from(e: std::io::Error) -> Self {
        LineError::Io(e)
    }
}

impl Decoder for LineCodec {
    type Item = Bytes;
    type Error = LineError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, LineError> {
        loop {
            let Some(offset) = memchr::memchr(b'\n', &buf[self.scanned..]) else {
                self.scanned = buf.len();
                if buf.len() > self.max_len {
                    return Err(LineError::TooLong {
                        max_len: self.max_len,
                    });
                }
                return Ok(None);
            };
            let end = self.scanned + offset;
            self.scanned = 0;
            if end > self.max_len {
                return Err(LineError::TooLong {
                    max_len: self.max_len,
                });
            }
            let mut line = buf.split_to(end + 1);
            line.truncate(end);
            if line.last() == Some(&b'\r') {
                line.truncate(end - 1);
            }
            // Blank lines carry no message; skip them rather than fail.
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Ok(Some(line.freeze()));
        }
    }
}

impl Encoder<Bytes> for LineCodec {
    type Error = LineError;

    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), LineError> {
        dst.reserve(item.len() + 1);
        dst.extend_from_slice(&item);
        dst.extend_from_slice(b"\n");
        Ok(())
    }
}

/// Makes a JSON message safe for newline framing.
///
/// In valid JSON a line break can only be insignificant whitespace (control
/// characters are not allowed inside strings), so replacing CR and LF with
/// spaces changes no value. Bodies without line breaks are returned as they are.
pub fn to_single_line(body: Bytes) -> Bytes {
    if memchr::memchr2(b'\n', b'\r', &body).is_none() {
        return body;
    }
    let mut owned = body.to_vec();
    for b in &mut owned {
        if *b == b'\n' || *b == b'\r' {
            *b = b' ';
        }
    }
    Bytes::from(owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_and_skips_blanks() {
        let mut codec = LineCodec::new(64);
        let mut buf = BytesMut::from(&b"{\"a\":1}\r\n\n{\"b\""[..]);
        assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), &b"{\"a\":1}"[..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(b":2}\n");
        assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), &b"{\"b\":2}"[..]);
    }

    #[test]
    fn refuses_overlong_lines_without_buffering_them() {
        let mut codec = LineCodec::new(8);
        let mut buf = BytesMut::from(&b"0123456789"[..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(LineError::TooLong { max_len: 8 })
        ));
        let mut codec = LineCodec::new(8);
        let mut buf = BytesMut::from(&b"0123456789\n"[..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(LineError::TooLong { .. })
        ));
    }

    #[test]
    fn flattens_pretty_json() {
        let body = Bytes::from_static(b"{\n  \"a\": \"x\"\r\n}");
        assert_eq!(to_single_line(body), &b"{   \"a\": \"x\"  }"[..]);
    }
}
