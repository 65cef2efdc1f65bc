//! API keys: long random strings, configured only as SHA-256 digests.

use sha2::{Digest, Sha256};

/// A configured API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Who holds it; the principal's subject.
    pub name: String,
    /// SHA-256 of the key.
    pub sha256: [u8; 32],
    pub scopes: Vec<String>,
    /// Servers the key may reach; empty means all.
    pub servers: Vec<String>,
}

/// The digest an API key is configured by, as `sha256:<hex>`.
pub fn hash_api_key(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Parses `sha256:<64 hex>` back into a digest.
pub fn parse_digest(text: &str) -> Option<[u8; 32]> {
    let hex = text.strip_prefix("sha256:")?;
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_round_trip() {
        let text = hash_api_key("bk_secret");
        assert!(text.starts_with("sha256:"));
        let digest = parse_digest(&text).unwrap();
        assert_eq!(digest.to_vec(), Sha256::digest(b"bk_secret").to_vec());
        assert_eq!(parse_digest("sha256:xyz"), None);
        assert_eq!(parse_digest("md5:00"), None);
    }
}
