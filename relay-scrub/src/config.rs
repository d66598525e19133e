//! `[pii.NAME]` policies: which fields, paths, query parameters and headers are PII, how names
//! are matched, the hash, the egress guard, and where the keys live. Only file paths and
//! environment variable names are fields: key bytes are read by the caller (relay) and handed to
//! [`crate::Scrubber::new`]; they are never stored, printed or serialized here.
//!
//! Validation is pure ([`PiiPolicyConfig::validate`]) and reports through [`Problems`]; reading
//! and checking the key sources is the caller's part.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::guard::GuardConfig;

/// Problems found while validating a policy: `(field path, message)` pairs, in field order.
/// The message says what is wrong and what to do; it never contains key bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Problems(pub Vec<(String, String)>);

impl Problems {
    /// Records a problem with `field` (a dotted path such as `pii.default.headers[0]`).
    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push((field.into(), message.into()));
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Shortest accepted key, in bytes (HMAC-SHA-256 wants at least the output size).
pub const MIN_KEY_BYTES: usize = 32;

/// Largest accepted `max_depth` (the walker recurses once per level).
pub const MAX_DEPTH_LIMIT: usize = 512;

/// Headers that relay handles itself (framing, routing, its own tracing and key id) and that
/// therefore cannot be pseudonymised, each with the reason given in the validation message.
const UNHASHABLE_HEADERS: &[(&str, &str)] = &[
    (
        "host",
        "relay routes on it and sets the upstream's own Host",
    ),
    ("content-length", "it frames the body; relay recomputes it"),
    ("transfer-encoding", "it frames the body; relay decodes it"),
    (
        "connection",
        "it is hop-by-hop; relay manages connections itself",
    ),
    (
        "content-type",
        "relay reads it to choose JSON or NDJSON scrubbing",
    ),
    ("content-encoding", "relay decodes the body by it"),
    ("expect", "relay answers 100-continue itself"),
    ("upgrade", "it is hop-by-hop and never forwarded"),
    ("te", "it is hop-by-hop and never forwarded"),
    ("trailer", "it is hop-by-hop and never forwarded"),
    (
        "x-forwarded-for",
        "relay appends the client address to it; hashing would break the chain",
    ),
    (
        "x-request-id",
        "relay sets it itself to correlate the request with its Kafka record and logs",
    ),
    (
        "x-relay-key-id",
        "relay sets it to the id of the key that made the pseudonyms",
    ),
    (
        "x-relay-policy",
        "relay sets it to the policy name and the hash of its rules (the sanitization receipt)",
    ),
];

/// Folds a header name for comparison: ASCII lower case, and with `fold_underscores` every `_`
/// as `-` (so `X_Device_Id` and `x-device-id` are the same name).
pub fn fold_header_name(name: &str, fold_underscores: bool) -> String {
    name.bytes()
        .map(|b| {
            if fold_underscores && b == b'_' {
                '-'
            } else {
                b.to_ascii_lowercase() as char
            }
        })
        .collect()
}

/// `[pii.NAME]`: one PII policy, referenced by routes (`pii = "NAME"`).
///
/// ```toml
/// [pii.default]
/// fields = ["user_id", "device_id", "order_no"]
/// paths = ["user.id", "events[].device.id"]
/// query_params = ["uid"]
/// headers = ["x-device-id"]
/// hash = "hmac-sha256"
/// key_file = "/etc/relay/pii.key"
/// key_id = "k1"
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PiiPolicyConfig {
    /// Object key names whose values are hashed wherever they appear (any depth, inside arrays
    /// too), compared after JSON unescaping. Default: none.
    #[serde(default)]
    pub fields: Vec<String>,
    /// Explicit paths from each event's root: `user.id`; `name[]` walks every element of an array
    /// (`events[].device.id`, `tags[]`). A top-level array body is a batch: each element is an
    /// event root, and so is each NDJSON line. Default: none.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Query parameter names whose values are hashed (after percent-decoding). Default: none.
    #[serde(default)]
    pub query_params: Vec<String>,
    /// Request header names (case-insensitive) whose values are hashed. Default: none.
    #[serde(default)]
    pub headers: Vec<String>,
    /// `"hmac-sha256"` (keyed, the default) or `"sha256"` (plain, seed-compatible, reversible
    /// by dictionary for enumerable ids).
    #[serde(default)]
    pub hash: HashAlgorithm,
    /// File holding the HMAC key (at least 32 bytes; one trailing newline is ignored), relative to
    /// the config file's directory. Generate with `openssl rand -hex 32`. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Environment variable holding the HMAC key (at least 32 bytes). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_env: Option<String>,
    /// Id of the active key, sent upstream as `X-Relay-Key-Id` and with the Kafka record
    /// (`[A-Za-z0-9._-]`, 1..=64 characters). Required with `key_file`/`key_env`; with `keys`
    /// defaults to the only key. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// Several keys by id, for rotation: `[pii.NAME.keys] k1 = { file = "k1.key" }`,
    /// `k2 = { env = "RELAY_PII_K2" }`. All are loaded and checked; `key_id` picks the active one.
    /// Instead of `key_file`/`key_env`. Default: none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub keys: BTreeMap<String, KeySourceConfig>,
    /// Deepest nesting of objects/arrays accepted (levels, 1..=512); deeper bodies get 400
    /// `too_deep`. Default 64.
    #[serde(default = "default_max_depth")]
    pub max_depth: usize,
    /// How object member names are compared with `fields`, `paths` and `kv_pairs`: `"exact"`
    /// (byte for byte after JSON unescaping, the default) or `"insensitive"` (ASCII letters
    /// compared without case, so `User_ID` matches a `user_id` rule).
    #[serde(default)]
    pub key_case: KeyCase,
    /// Header names compared with `_` and `-` folded (always without case), so a `X_Device_Id`
    /// request header matches a `x-device-id` rule. Default false (only case is folded).
    #[serde(default)]
    pub header_fold_underscore: bool,
    /// Bytes that separate query parameters: `"&"` (default) or `"&;"` (both `&` and `;`, the
    /// older HTML form convention). Default `"&"`.
    #[serde(default)]
    pub query_separators: QuerySeparators,
    /// Whether a `name[]` query parameter (PHP/Rails arrays) matches a `name` rule. Default false.
    #[serde(default)]
    pub query_array_brackets: bool,
    /// Key/value shapes: inside an array of objects, an object whose `key` member (a string)
    /// names one of `fields` gets its `value` member hashed; a value that is an object (an OTLP
    /// wrapper such as `{"stringValue": "u-1"}`) gets each of its members hashed. Example:
    /// `kv_pairs = [{ key = "key", value = "value" }]` for OTLP attributes. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kv_pairs: Vec<KvPairConfig>,
    /// Path patterns whose `{name}` segments are PII: in a request path that matches one (same
    /// number of segments, literal segments equal), those segments are replaced by their
    /// pseudonyms in the forwarded target, e.g. `path_params = ["/users/{user_id}/events"]`.
    /// The first matching pattern applies; routing uses the path as sent. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path_params: Vec<String>,
    /// The egress guard: detectors run over the scrubbed body, query and headers
    /// (`[pii.NAME.guard]`). Default: off.
    #[serde(default)]
    pub guard: GuardConfig,
}

/// How object member names are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyCase {
    /// Byte for byte after JSON unescaping (default).
    #[default]
    Exact,
    /// ASCII letters compared without case.
    Insensitive,
}

/// Which bytes separate query parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
pub enum QuerySeparators {
    /// Only `&` (default).
    #[default]
    #[serde(rename = "&")]
    Amp,
    /// `&` and `;`.
    #[serde(rename = "&;")]
    AmpSemicolon,
}

/// One key/value shape: the member names of the pair object.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KvPairConfig {
    /// Member whose string value names the field (e.g. `"key"`).
    pub key: String,
    /// Member whose value is hashed when the name is PII (e.g. `"value"`).
    pub value: String,
}

impl Default for PiiPolicyConfig {
    fn default() -> Self {
        PiiPolicyConfig {
            fields: Vec::new(),
            paths: Vec::new(),
            query_params: Vec::new(),
            headers: Vec::new(),
            hash: HashAlgorithm::default(),
            key_file: None,
            key_env: None,
            key_id: None,
            keys: BTreeMap::new(),
            max_depth: default_max_depth(),
            key_case: KeyCase::default(),
            header_fold_underscore: false,
            query_separators: QuerySeparators::default(),
            query_array_brackets: false,
            kv_pairs: Vec::new(),
            path_params: Vec::new(),
            guard: GuardConfig::default(),
        }
    }
}

fn default_max_depth() -> usize {
    64
}

/// The hash applied to PII values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
pub enum HashAlgorithm {
    /// HMAC-SHA-256 with the policy's active key (default).
    #[default]
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
    /// Plain SHA-256, no key (seed-compatible).
    #[serde(rename = "sha256")]
    Sha256,
}

/// Where one key's bytes are: exactly one of `file` or `env`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeySourceConfig {
    /// File with the key (at least 32 bytes; one trailing newline ignored), relative to the
    /// config file's directory. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Environment variable with the key (at least 32 bytes). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
}

impl PiiPolicyConfig {
    /// Makes relative key-file paths relative to the config file's directory `base`.
    pub fn resolve_paths(&mut self, base: &Path) {
        if let Some(f) = &mut self.key_file {
            if f.is_relative() {
                *f = base.join(&*f);
            }
        }
        for k in self.keys.values_mut() {
            if let Some(f) = &mut k.file {
                if f.is_relative() {
                    *f = base.join(&*f);
                }
            }
        }
    }

    /// Records every problem of the policy's shape under `field` (e.g. `pii.default`). Pure: the
    /// key sources are checked by whoever reads them.
    pub fn validate(&self, field: &str, p: &mut Problems) {
        if self.fields.is_empty()
            && self.paths.is_empty()
            && self.query_params.is_empty()
            && self.headers.is_empty()
            && self.path_params.is_empty()
            && !self.guard.is_on()
        {
            p.push(
                field,
                "the policy hashes nothing: list at least one of fields, paths, query_params, headers or path_params",
            );
        }
        for (i, f) in self.fields.iter().enumerate() {
            if f.is_empty() {
                p.push(
                    format!("{field}.fields[{i}]"),
                    "must not be empty; write the key name, e.g. \"user_id\"",
                );
            }
        }
        for (i, path) in self.paths.iter().enumerate() {
            if let Err(e) = parse_path(path) {
                p.push(format!("{field}.paths[{i}]"), e);
            }
        }
        for (i, q) in self.query_params.iter().enumerate() {
            if q.is_empty() {
                p.push(
                    format!("{field}.query_params[{i}]"),
                    "must not be empty; write the parameter name, e.g. \"uid\"",
                );
            }
        }
        for (i, h) in self.headers.iter().enumerate() {
            let f = format!("{field}.headers[{i}]");
            if h.is_empty() || !h.bytes().all(is_token_byte) {
                p.push(f, format!("{h:?} is not a header name; use letters, digits and '-', e.g. \"x-device-id\""));
            } else if let Some((name, why)) = UNHASHABLE_HEADERS
                .iter()
                .find(|(n, _)| fold_header_name(h, true) == fold_header_name(n, true))
            {
                p.push(
                    f,
                    format!("the rule {h:?} names {name}, which relay handles itself and cannot hash: {why}; remove the rule"),
                );
            }
        }
        for (i, kv) in self.kv_pairs.iter().enumerate() {
            if kv.key.is_empty() || kv.value.is_empty() || kv.key == kv.value {
                p.push(
                    format!("{field}.kv_pairs[{i}]"),
                    "key and value must be two different, non-empty member names, e.g. { key = \"key\", value = \"value\" }",
                );
            }
        }
        for (i, pp) in self.path_params.iter().enumerate() {
            if let Err(e) = crate::path::PathPattern::parse(pp) {
                p.push(format!("{field}.path_params[{i}]"), e);
            }
        }
        if !self.kv_pairs.is_empty() && self.fields.is_empty() {
            p.push(
                format!("{field}.kv_pairs"),
                "a key/value shape hashes values whose key names one of `fields`: list the field names in fields",
            );
        }
        self.guard.validate(&format!("{field}.guard"), p);
        if self.max_depth == 0 || self.max_depth > MAX_DEPTH_LIMIT {
            p.push(
                format!("{field}.max_depth"),
                format!(
                    "{} is out of range; use 1..={MAX_DEPTH_LIMIT} (default 64)",
                    self.max_depth
                ),
            );
        }
        if let Some(id) = &self.key_id {
            if let Err(e) = check_key_id(id) {
                p.push(format!("{field}.key_id"), e);
            }
        }
        match self.hash {
            HashAlgorithm::Sha256 => {
                if self.key_file.is_some() || self.key_env.is_some() || !self.keys.is_empty() {
                    p.push(
                        format!("{field}.hash"),
                        "plain \"sha256\" uses no key: remove key_file/key_env/keys, or use hash = \"hmac-sha256\"",
                    );
                }
            }
            // The key sources are read and checked by the caller.
            HashAlgorithm::HmacSha256 => {}
        }
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Checks a key id: 1 to 64 of `A-Z a-z 0-9 . _ -` (it is sent as a header).
pub fn check_key_id(id: &str) -> Result<(), String> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(format!(
            "{id:?} is not a key id: use 1 to 64 of A-Z a-z 0-9 . _ - (it is sent as the X-Relay-Key-Id header)"
        ));
    }
    Ok(())
}

/// One step of a compiled path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Into the member with this key.
    Key(String),
    /// Into every element of an array.
    Elements,
}

/// Parses `a.b[].c` into steps; the message says what is wrong and what to write instead.
pub fn parse_path(path: &str) -> Result<Vec<Step>, String> {
    let usage = "write dot-separated keys with [] after a key for every array element, e.g. \"events[].device.id\"";
    if path.is_empty() {
        return Err(format!("must not be empty; {usage}"));
    }
    let mut steps = Vec::new();
    for seg in path.split('.') {
        let mut name = seg;
        let mut elems = 0;
        while let Some(n) = name.strip_suffix("[]") {
            name = n;
            elems += 1;
        }
        if name.is_empty() || name.contains('[') || name.contains(']') {
            return Err(format!("{path:?} has an invalid segment {seg:?}; {usage}"));
        }
        steps.push(Step::Key(name.to_string()));
        steps.extend(std::iter::repeat_n(Step::Elements, elems));
    }
    Ok(steps)
}
