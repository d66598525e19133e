//! Sanitization receipts: what left, under which rules. A receipt names the policy with a short
//! hash of its effective rules (so a change of rules changes the name), the SHA-256 of exactly the
//! forwarded body, and how many values were pseudonymised. It holds no key material and no byte
//! of the original.
//!
//! Carried as `relay-policy`, `relay-scrubbed-sha256` and `relay-pii-count` (Kafka record headers,
//! `relay scrub --receipt`).

use sha2::{Digest, Sha256};

use crate::config::{fold_header_name, PiiPolicyConfig};
use crate::hashing::hex_encode_into;

/// Hex digits of the rules hash in `relay-policy`.
pub const POLICY_DIGEST_LEN: usize = 12;

/// One receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// `NAME:DIGEST`: the policy name and the first [`POLICY_DIGEST_LEN`] hex digits of the
    /// SHA-256 of its effective rules.
    pub policy: String,
    /// Lowercase hex SHA-256 of exactly the forwarded body.
    pub scrubbed_sha256: String,
    /// How many values were pseudonymised.
    pub pii_count: u64,
}

/// The `relay-policy` / `X-Relay-Policy` value: `NAME:DIGEST`.
pub fn policy_label(name: &str, digest: &str) -> String {
    format!("{name}:{digest}")
}

impl Receipt {
    /// The receipt of `forwarded` under policy `name` whose rules hash is `digest`.
    pub fn new(name: &str, digest: &str, forwarded: &[u8], pii_count: u64) -> Receipt {
        let mut hex = Vec::with_capacity(64);
        hex_encode_into(&Sha256::digest(forwarded), &mut hex);
        Receipt {
            policy: policy_label(name, digest),
            scrubbed_sha256: String::from_utf8(hex).unwrap_or_default(),
            pii_count,
        }
    }

    /// The receipt as `(header name, value)` pairs.
    pub fn headers(&self) -> [(&'static str, String); 3] {
        [
            ("relay-policy", self.policy.clone()),
            ("relay-scrubbed-sha256", self.scrubbed_sha256.clone()),
            ("relay-pii-count", self.pii_count.to_string()),
        ]
    }
}

/// The short hash of a policy's effective rules: everything that decides what is hashed and how
/// (fields and headers as matched, paths, parameters, options, shapes, guard, hash algorithm and
/// active key id), in a canonical order; not where the keys are stored, and no key bytes.
pub fn policy_digest(p: &PiiPolicyConfig) -> String {
    fn list(out: &mut String, name: &str, items: impl IntoIterator<Item = String>) {
        let mut v: Vec<String> = items.into_iter().collect();
        v.sort();
        v.dedup();
        out.push_str(name);
        out.push('=');
        for i in v {
            out.push_str(&format!("{i:?},"));
        }
        out.push('\n');
    }
    let mut s = String::from("relay-policy-v1\n");
    list(&mut s, "fields", p.fields.iter().cloned());
    list(&mut s, "paths", p.paths.iter().cloned());
    list(&mut s, "query_params", p.query_params.iter().cloned());
    // Added after v1 digests were issued: only part of the digest when set, so the digests of
    // policies without path parameters are unchanged.
    if !p.path_params.is_empty() {
        list(&mut s, "path_params", p.path_params.iter().cloned());
    }
    list(
        &mut s,
        "headers",
        p.headers
            .iter()
            .map(|h| fold_header_name(h, p.header_fold_underscore)),
    );
    list(
        &mut s,
        "kv_pairs",
        p.kv_pairs
            .iter()
            .map(|k| format!("{:?}={:?}", k.key, k.value)),
    );
    s.push_str(&format!(
        "hash={:?}\nkey_id={:?}\nkey_case={:?}\nheader_fold_underscore={}\nquery_separators={:?}\n\
         query_array_brackets={}\nmax_depth={}\nguard={:?}\n",
        p.hash,
        p.key_id,
        p.key_case,
        p.header_fold_underscore,
        p.query_separators,
        p.query_array_brackets,
        p.max_depth,
        p.guard,
    ));
    let mut hex = Vec::with_capacity(64);
    hex_encode_into(&Sha256::digest(s.as_bytes()), &mut hex);
    hex.truncate(POLICY_DIGEST_LEN);
    String::from_utf8(hex).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HashAlgorithm;

    #[test]
    fn digest_follows_rules_not_order_or_key_storage() {
        let a = PiiPolicyConfig {
            fields: vec!["a".into(), "b".into()],
            hash: HashAlgorithm::Sha256,
            ..PiiPolicyConfig::default()
        };
        let mut b = a.clone();
        b.fields.reverse();
        assert_eq!(policy_digest(&a), policy_digest(&b));
        b.key_file = Some("/elsewhere/k".into());
        assert_eq!(policy_digest(&a), policy_digest(&b));
        b.fields.push("c".into());
        assert_ne!(policy_digest(&a), policy_digest(&b));
        assert_eq!(policy_digest(&a).len(), POLICY_DIGEST_LEN);
    }

    #[test]
    fn receipt_hashes_exactly_the_forwarded_bytes() {
        let r = Receipt::new("default", "0123456789ab", b"abc", 2);
        assert_eq!(r.policy, "default:0123456789ab");
        assert_eq!(
            r.scrubbed_sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(r.headers()[2], ("relay-pii-count", "2".to_string()));
    }
}
