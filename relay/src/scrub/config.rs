//! `[pii.NAME]` policies: which fields, paths, query parameters and headers are PII, the hash,
//! and where the keys live. Only file paths and environment variable names are fields: key bytes
//! are read by [`load_keys`] into the scrubber and never stored, printed or serialized here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Problems;

/// Shortest accepted key, in bytes (HMAC-SHA-256 wants at least the output size).
pub const MIN_KEY_BYTES: usize = 32;

/// Largest accepted `max_depth` (the walker recurses once per level).
pub const MAX_DEPTH_LIMIT: usize = 512;

/// Headers that frame or route the request and therefore cannot be pseudonymised.
const UNHASHABLE_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "content-type",
    "content-encoding",
    "expect",
    "upgrade",
    "te",
    "trailer",
    "x-relay-key-id",
];

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

/// Key bytes, wiped on drop; never `Debug`-printed.
pub(crate) struct KeyBytes(pub(crate) Vec<u8>);

impl Drop for KeyBytes {
    fn drop(&mut self) {
        self.0.fill(0);
        std::hint::black_box(&self.0);
    }
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

    /// Records every problem under `field` (e.g. `pii.default`), reading the keys to check them.
    pub fn validate(&self, field: &str, p: &mut Problems) {
        if self.fields.is_empty()
            && self.paths.is_empty()
            && self.query_params.is_empty()
            && self.headers.is_empty()
        {
            p.push(
                field,
                "the policy hashes nothing: list at least one of fields, paths, query_params or headers",
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
            } else if UNHASHABLE_HEADERS.contains(&h.to_ascii_lowercase().as_str()) {
                p.push(
                    f,
                    format!("{h:?} frames or routes the request and cannot be hashed; remove it"),
                );
            }
        }
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
            HashAlgorithm::HmacSha256 => {
                if let Err((sub, msg)) = load_keys(self) {
                    let f = if sub.is_empty() {
                        field.to_string()
                    } else {
                        format!("{field}.{sub}")
                    };
                    p.push(f, msg);
                }
            }
        }
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn check_key_id(id: &str) -> Result<(), String> {
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
pub(crate) enum Step {
    /// Into the member with this key.
    Key(String),
    /// Into every element of an array.
    Elements,
}

/// Parses `a.b[].c` into steps; the message says what is wrong and what to write instead.
pub(crate) fn parse_path(path: &str) -> Result<Vec<Step>, String> {
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

/// The active key id and the active key's bytes, after checking every configured key.
/// Errors carry the sub-field (`key_file`, `keys.k1`, or empty for the policy) and a message that
/// never contains key bytes.
pub(crate) fn load_keys(
    p: &PiiPolicyConfig,
) -> Result<(Option<String>, KeyBytes), (String, String)> {
    let single = p.key_file.is_some() || p.key_env.is_some();
    if single && !p.keys.is_empty() {
        return Err((
            "keys".into(),
            "use either key_file/key_env (one key) or [keys] (rotation), not both".into(),
        ));
    }
    if single {
        let src = KeySourceConfig {
            file: p.key_file.clone(),
            env: p.key_env.clone(),
        };
        let key = read_key(&src).map_err(|m| {
            let sub = if p.key_file.is_some() {
                "key_file"
            } else {
                "key_env"
            };
            (sub.to_string(), m)
        })?;
        let Some(id) = &p.key_id else {
            return Err((
                "key_id".into(),
                "is required with key_file/key_env: name the key, e.g. key_id = \"k1\" (sent as X-Relay-Key-Id so \
                 downstream knows which key made the pseudonyms)"
                    .into(),
            ));
        };
        return Ok((Some(id.clone()), key));
    }
    if p.keys.is_empty() {
        return Err((
            String::new(),
            "hmac-sha256 needs a key: set key_file = \"pii.key\" (create it with `openssl rand -hex 32 > pii.key`), \
             key_env = \"RELAY_PII_KEY\", or [keys]; or use hash = \"sha256\""
                .into(),
        ));
    }
    let mut active = None;
    for (id, src) in &p.keys {
        check_key_id(id).map_err(|m| (format!("keys.{id}"), m))?;
        let key = read_key(src).map_err(|m| (format!("keys.{id}"), m))?;
        let is_active = match &p.key_id {
            Some(a) => a == id,
            None => p.keys.len() == 1,
        };
        if is_active {
            active = Some((Some(id.clone()), key));
        }
    }
    match (active, &p.key_id) {
        (Some(a), _) => Ok(a),
        (None, Some(id)) => Err((
            "key_id".into(),
            format!(
                "{id:?} is not one of the configured keys ({}); add it under [keys] or pick one of those",
                p.keys.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        )),
        (None, None) => Err((
            "key_id".into(),
            "several keys are configured: set key_id to the active one".into(),
        )),
    }
}

fn read_key(src: &KeySourceConfig) -> Result<KeyBytes, String> {
    let mut bytes = match (&src.file, &src.env) {
        (Some(_), Some(_)) => return Err("set either a file or an env variable for a key, not both".into()),
        (None, None) => return Err("a key needs file = \"...\" or env = \"...\"".into()),
        (Some(f), None) => KeyBytes(std::fs::read(f).map_err(|e| {
            format!(
                "cannot read the key file {} ({e}); create it with `openssl rand -hex 32 > {}` readable by relay only",
                f.display(),
                f.display()
            )
        })?),
        (None, Some(v)) => match std::env::var_os(v) {
            Some(s) => KeyBytes(s.into_encoded_bytes()),
            None => {
                return Err(format!(
                    "the environment variable {v} is not set; export it with at least {MIN_KEY_BYTES} bytes of key, \
                     e.g. `export {v}=$(openssl rand -hex 32)`"
                ))
            }
        },
    };
    if bytes.0.ends_with(b"\r\n") {
        bytes.0.truncate(bytes.0.len() - 2);
    } else if bytes.0.ends_with(b"\n") {
        bytes.0.truncate(bytes.0.len() - 1);
    }
    if bytes.0.len() < MIN_KEY_BYTES {
        let place = match (&src.file, &src.env) {
            (Some(f), _) => format!("the key file {}", f.display()),
            (_, Some(v)) => format!("the environment variable {v}"),
            _ => unreachable!(),
        };
        return Err(format!(
            "{place} holds {} bytes, fewer than {MIN_KEY_BYTES}; use a longer key, e.g. from `openssl rand -hex 32`",
            bytes.0.len()
        ));
    }
    Ok(bytes)
}
