//! PII pseudonymisation in place: policies, keyed hashing, fail-closed (issue 3 fills this in).
//!
//! Contract used by the request path (`proxy.rs`): one [`Scrubber`] per policy per worker,
//! built by [`Scrubber::new`]; methods take `&self` and never allocate per field beyond output.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::Problems;

/// `[pii.NAME]`: one PII policy.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PiiPolicyConfig {
    /// Key names hashed wherever they appear.
    #[serde(default)]
    pub fields: Vec<String>,
}

impl PiiPolicyConfig {
    /// Makes relative key-file paths relative to the config file's directory `base`.
    pub fn resolve_paths(&mut self, _base: &Path) {}
    /// Records problems under `field` (e.g. `pii.default`).
    pub fn validate(&self, _field: &str, _p: &mut Problems) {}
}

/// Why a body (or query, or header) was refused: the client's fault, never forwarded.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ScrubError {
    /// Machine-readable reason, snake_case (`invalid_json`, `too_deep`, ...).
    pub code: &'static str,
    /// HTTP status: 400, or 415 for the media type.
    pub status: u16,
    /// What was wrong and what to do.
    pub message: String,
}

/// A built policy, ready to scrub (per worker).
#[derive(Debug, Clone)]
pub struct Scrubber {
    _policy: PiiPolicyConfig,
}

/// The result of scrubbing a body.
#[derive(Debug, Clone)]
pub struct Scrubbed {
    /// The body exactly as it is forwarded.
    pub body: Vec<u8>,
    /// How many values were hashed.
    pub fields_hashed: u64,
}

impl Scrubber {
    /// Builds the scrubber for a validated policy (reads the key material).
    pub fn new(policy: &PiiPolicyConfig) -> Result<Scrubber, String> {
        Ok(Scrubber {
            _policy: policy.clone(),
        })
    }
    /// The active key id sent upstream in `X-Relay-Key-Id` and with the Kafka record.
    pub fn key_id(&self) -> Option<&str> {
        None
    }
    /// Scrubs a body.
    pub fn scrub_body(
        &self,
        _content_type: Option<&str>,
        _content_encoding: Option<&str>,
        body: &[u8],
    ) -> Result<Scrubbed, ScrubError> {
        Ok(Scrubbed {
            body: body.to_vec(),
            fields_hashed: 0,
        })
    }
    /// The hash of the first value of PII field `field` in the original body (Kafka key).
    pub fn key_hash(
        &self,
        _content_type: Option<&str>,
        _body: &[u8],
        _field: &str,
    ) -> Option<String> {
        None
    }
    /// Scrubs the query string (without `?`); `None` when nothing changed.
    pub fn scrub_query(&self, _query: &str) -> Option<String> {
        None
    }
    /// Whether request header `name` (lower case) is PII under this policy.
    pub fn is_pii_header(&self, _name: &str) -> bool {
        false
    }
    /// The pseudonym (lowercase hex) of one value.
    pub fn hash_value(&self, value: &[u8]) -> String {
        String::from_utf8_lossy(value).into_owned()
    }
}
