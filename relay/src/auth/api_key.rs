//! API keys: the client sends the key in clear in the API-key header; relay keeps only its
//! SHA-256 and looks the digest up (the key never sits in the config or in memory at rest).

use std::collections::HashMap;

use sha2::{Digest, Sha256};

pub use super::config::parse_sha256_hex;

/// Digest of an API key to the index of the consumer it belongs to.
#[derive(Debug, Default, Clone)]
pub struct ApiKeys {
    by_digest: HashMap<[u8; 32], usize>,
}

impl ApiKeys {
    /// Registers `digest` as a credential of consumer `consumer`.
    pub fn insert(&mut self, digest: [u8; 32], consumer: usize) {
        self.by_digest.insert(digest, consumer);
    }

    /// The consumer whose key is `key` (the raw header value), if any.
    pub fn find(&self, key: &[u8]) -> Option<usize> {
        let d: [u8; 32] = Sha256::digest(key).into();
        self.by_digest.get(&d).copied()
    }

    /// Whether no key is configured.
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_found_by_their_digest_only() {
        // printf %s secret-key-1 | sha256sum
        let hex = format!("{:x}", Sha256::digest(b"secret-key-1"));
        let mut k = ApiKeys::default();
        k.insert(parse_sha256_hex(&hex.to_uppercase()).unwrap(), 3);
        assert_eq!(k.find(b"secret-key-1"), Some(3));
        assert_eq!(k.find(b"secret-key-2"), None);
        assert_eq!(k.find(hex.as_bytes()), None, "the digest is not the key");
        assert!(parse_sha256_hex("abc").is_err());
        assert!(parse_sha256_hex(&"g".repeat(64)).is_err());
    }
}
