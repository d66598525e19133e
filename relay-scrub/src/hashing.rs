//! Keyed (HMAC-SHA-256) and plain (SHA-256) pseudonyms as lowercase hex, from a state keyed once
//! per scrubber and cloned per value (no re-keying on the hot path).

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Length of one pseudonym in hex characters (SHA-256: 32 bytes, 64 hex digits).
pub const HEX_LEN: usize = 64;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The hash function of a policy, ready to use.
#[derive(Clone)]
pub enum Hasher {
    /// HMAC-SHA-256 with the inner/outer pads already absorbed (cloned per value).
    Hmac(Hmac<Sha256>),
    /// Plain SHA-256 (seed-compatible; reversible by dictionary for enumerable ids).
    Sha256,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key-derived state.
        match self {
            Hasher::Hmac(_) => f.write_str("Hasher::Hmac(<keyed>)"),
            Hasher::Sha256 => f.write_str("Hasher::Sha256"),
        }
    }
}

impl Hasher {
    /// HMAC-SHA-256 keyed with `key` (any length; callers enforce at least 32 bytes).
    pub fn hmac(key: &[u8]) -> Hasher {
        // new_from_slice only fails for fixed-size-key MACs; HMAC accepts any length.
        Hasher::Hmac(<Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length"))
    }

    /// The 32-byte digest of `value`.
    #[inline]
    pub fn digest(&self, value: &[u8]) -> [u8; 32] {
        match self {
            Hasher::Hmac(m) => {
                let mut m = m.clone();
                m.update(value);
                m.finalize().into_bytes().into()
            }
            Hasher::Sha256 => Sha256::digest(value).into(),
        }
    }

    /// Appends the lowercase hex pseudonym of `value` (64 bytes) to `out`.
    #[inline]
    pub fn hex_into(&self, value: &[u8], out: &mut Vec<u8>) {
        let d = self.digest(value);
        hex_encode_into(&d, out);
    }

    /// The lowercase hex pseudonym of `value`.
    pub fn hex(&self, value: &[u8]) -> String {
        let mut out = Vec::with_capacity(HEX_LEN);
        self.hex_into(value, &mut out);
        // Only ASCII hex digits were written.
        String::from_utf8(out).expect("hex is ASCII")
    }
}

/// Appends `bytes` as lowercase hex to `out`.
#[inline]
pub fn hex_encode_into(bytes: &[u8], out: &mut Vec<u8>) {
    out.reserve(bytes.len() * 2);
    for &b in bytes {
        out.push(HEX[(b >> 4) as usize]);
        out.push(HEX[(b & 0x0f) as usize]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_abc_is_the_fips_vector() {
        assert_eq!(
            Hasher::Sha256.hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn cloned_state_gives_the_same_mac_every_time() {
        let h = Hasher::hmac(&[0x0b; 20]);
        let a = h.hex(b"Hi There");
        let b = h.hex(b"Hi There");
        assert_eq!(a, b);
        assert_eq!(
            a,
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
    }
}
