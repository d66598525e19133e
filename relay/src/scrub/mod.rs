//! PII pseudonymisation in place: policies, keyed hashing, fail-closed scrubbing of JSON and
//! NDJSON bodies, query strings and headers.
//!
//! Contract used by the request path (`proxy.rs`): one [`Scrubber`] per policy per worker, built
//! by [`Scrubber::new`]; methods take `&self`, allocate the output once per call and nothing per
//! field. The body is walked once (module `walker`): PII values are replaced by their quoted lowercase
//! hex pseudonyms and every other byte is copied as sent, so the upstream sees the app's own
//! formatting. Anything that cannot be parsed is refused ([`ScrubError`]), never forwarded.
//!
//! Submodules: [`config`] (the `[pii.NAME]` policy), [`hashing`] (HMAC-SHA-256 / SHA-256),
//! [`media`] (accepted Content-Type / Content-Encoding), `matcher` (fields and paths),
//! `walker` (the JSON pass), `query` (query strings), [`error`].
//!
//! Bodies: one JSON value (usually an event object or an array of events; a bare scalar is
//! accepted and has nothing to hash), or NDJSON. A zero-length body passes unchanged; a body of
//! only whitespace is refused (`empty_body`). The parser is strict RFC 8259: no comments, no
//! trailing commas, no lone surrogate escapes, no raw control characters in strings.
//!
//! Why not simd-json: in-place replacement needs the byte span of each value, and simd-json
//! 0.14 does not expose its structural indexes (`find_structural_bits` is crate-private) nor
//! node offsets on its tape; re-serializing its tape would lose the app's formatting.

#![forbid(unsafe_code)]

pub mod config;
pub mod error;
pub mod hashing;
mod matcher;
pub mod media;
mod query;
mod walker;

pub use config::{HashAlgorithm, KeySourceConfig, PiiPolicyConfig};
pub use error::ScrubError;
pub use media::BodyKind;

use hashing::Hasher;
use matcher::Matcher;
use walker::{Stop, Walker};

/// A built policy, ready to scrub (one per worker; cheap to clone, never prints key material).
#[derive(Clone)]
pub struct Scrubber {
    matcher: Matcher,
    query_params: Vec<Box<[u8]>>,
    headers: Vec<String>,
    hasher: Hasher,
    key_id: Option<String>,
    max_depth: usize,
}

impl std::fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrubber")
            .field("hasher", &self.hasher)
            .field("key_id", &self.key_id)
            .field("max_depth", &self.max_depth)
            .finish_non_exhaustive()
    }
}

/// The result of scrubbing a body.
#[derive(Debug, Clone)]
pub struct Scrubbed {
    /// The body exactly as it is forwarded.
    pub body: Vec<u8>,
    /// How many values were hashed (`null` values are left alone and not counted).
    pub fields_hashed: u64,
}

impl Scrubber {
    /// Builds the scrubber for a validated policy: reads the keys (the active one is absorbed
    /// into an HMAC state and its bytes wiped), compiles fields and paths.
    pub fn new(policy: &PiiPolicyConfig) -> Result<Scrubber, String> {
        let (hasher, key_id) = match policy.hash {
            HashAlgorithm::Sha256 => (Hasher::Sha256, policy.key_id.clone()),
            HashAlgorithm::HmacSha256 => {
                let (id, key) = config::load_keys(policy).map_err(|(sub, m)| {
                    if sub.is_empty() {
                        m
                    } else {
                        format!("{sub}: {m}")
                    }
                })?;
                (Hasher::hmac(&key.0), id)
            }
        };
        if policy.max_depth == 0 || policy.max_depth > config::MAX_DEPTH_LIMIT {
            return Err(format!(
                "max_depth: {} is out of range; use 1..={}",
                policy.max_depth,
                config::MAX_DEPTH_LIMIT
            ));
        }
        Ok(Scrubber {
            matcher: Matcher::new(&policy.fields, &policy.paths)?,
            query_params: policy
                .query_params
                .iter()
                .map(|q| q.as_bytes().into())
                .collect(),
            headers: policy
                .headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            hasher,
            key_id,
            max_depth: policy.max_depth,
        })
    }

    /// The active key id sent upstream in `X-Relay-Key-Id` and with the Kafka record
    /// (`None` for plain SHA-256 without a `key_id` label).
    pub fn key_id(&self) -> Option<&str> {
        self.key_id.as_deref()
    }

    /// Scrubs a body. Errors (400, or 415 for media type/charset/coding) mean: forward nothing.
    ///
    /// A zero-length body is returned as is (nothing to scrub; e.g. a GET beacon whose PII is in
    /// the query string). A body that is only whitespace is `empty_body`.
    pub fn scrub_body(
        &self,
        content_type: Option<&str>,
        content_encoding: Option<&str>,
        body: &[u8],
    ) -> Result<Scrubbed, ScrubError> {
        media::check_encoding(content_encoding)?;
        let kind = media::body_kind(content_type)?;
        if body.is_empty() {
            return Ok(Scrubbed {
                body: Vec::new(),
                fields_hashed: 0,
            });
        }
        check_utf8(body)?;
        let mut w = Walker::new(body, &self.matcher, &self.hasher, self.max_depth, false);
        walk(&mut w, body, kind)?;
        let (body, fields_hashed) = w.finish();
        Ok(Scrubbed {
            body,
            fields_hashed,
        })
    }

    /// The pseudonym of the first non-`null` value (document order) of the member named `field`
    /// at any depth in the ORIGINAL body, for the Kafka record key; the same string the scrubbed
    /// body carries for that value. `None` when there is no such value or the body is not valid
    /// up to it (invalid JSON after it is not checked: the body is then refused by
    /// [`Scrubber::scrub_body`] anyway).
    pub fn key_hash(&self, content_type: Option<&str>, body: &[u8], field: &str) -> Option<String> {
        let kind = media::body_kind(content_type).ok()?;
        if body.is_empty() || simdutf8::basic::from_utf8(body).is_err() {
            return None;
        }
        let m = Matcher::single_field(field);
        let mut w = Walker::new(body, &m, &self.hasher, self.max_depth, true);
        match walk(&mut w, body, kind) {
            Err(ScrubFound::Found) => {
                let mut out = Vec::with_capacity(hashing::HEX_LEN);
                hashing::hex_encode_into(&w.found?, &mut out);
                String::from_utf8(out).ok()
            }
            _ => None,
        }
    }

    /// Scrubs the query string (without `?`); `None` when nothing changed.
    pub fn scrub_query(&self, query: &str) -> Option<String> {
        query::scrub_query(query, &self.query_params, &self.hasher).map(|(q, _)| q)
    }

    /// Whether request header `name` (lower case) is PII under this policy.
    pub fn is_pii_header(&self, name: &str) -> bool {
        self.headers.iter().any(|h| h.eq_ignore_ascii_case(name))
    }

    /// The pseudonym (lowercase hex, 64 characters) of one value.
    pub fn hash_value(&self, value: &[u8]) -> String {
        self.hasher.hex(value)
    }
}

/// What stopped a walk, as seen by the body functions.
enum ScrubFound {
    /// Refused.
    Err(ScrubError),
    /// Find mode hit.
    Found,
}

impl From<ScrubFound> for ScrubError {
    fn from(f: ScrubFound) -> ScrubError {
        match f {
            ScrubFound::Err(e) => e,
            // Only find mode stops with Found; scrub mode never does.
            ScrubFound::Found => ScrubError {
                code: "internal",
                status: 500,
                message: "the scrubber stopped unexpectedly; report this bug".into(),
            },
        }
    }
}

fn check_utf8(body: &[u8]) -> Result<(), ScrubError> {
    if simdutf8::basic::from_utf8(body).is_err() {
        let at = std::str::from_utf8(body)
            .err()
            .map_or(0, |e| e.valid_up_to());
        return Err(ScrubError::invalid_utf8(at));
    }
    Ok(())
}

fn stop_to_error(s: Stop, line: Option<usize>, max_depth: usize) -> ScrubFound {
    match s {
        Stop::Json(at, what) => ScrubFound::Err(ScrubError::invalid_json(at, line, what)),
        Stop::TooDeep(at) => ScrubFound::Err(ScrubError::too_deep(at, line, max_depth)),
        Stop::Found => ScrubFound::Found,
    }
}

fn walk(w: &mut Walker<'_>, body: &[u8], kind: BodyKind) -> Result<(), ScrubFound> {
    let max_depth = w.max_depth();
    match kind {
        BodyKind::Json => {
            if body
                .iter()
                .all(|&b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
            {
                return Err(ScrubFound::Err(empty_body()));
            }
            w.text(0, body.len())
                .map_err(|s| stop_to_error(s, None, max_depth))
        }
        BodyKind::Ndjson => {
            let mut start = 0;
            let mut line = 1;
            let mut values = 0;
            while start < body.len() {
                let end = memchr_nl(&body[start..]).map_or(body.len(), |p| start + p);
                let text = &body[start..end];
                if !text.iter().all(|&b| matches!(b, b' ' | b'\t' | b'\r')) {
                    w.text(start, end)
                        .map_err(|s| stop_to_error(s, Some(line), max_depth))?;
                    values += 1;
                }
                start = end + 1;
                line += 1;
            }
            if values == 0 {
                return Err(ScrubFound::Err(empty_body()));
            }
            Ok(())
        }
    }
}

#[inline]
fn memchr_nl(s: &[u8]) -> Option<usize> {
    s.iter().position(|&b| b == b'\n')
}

fn empty_body() -> ScrubError {
    ScrubError::bad_request(
        "empty_body",
        "the body holds no JSON value (only whitespace); send one JSON event or batch".into(),
    )
}

/// What `relay scrub --config FILE --route NAME [FILE|-]` prints: exactly the body the proxy
/// would forward for `body` on route `route` (same [`Scrubber`] path). A route without a PII
/// policy forwards the body unchanged. `Err` says why the request would be refused.
pub fn scrub_offline(
    cfg: &crate::config::Config,
    route: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Vec<u8>, String> {
    let Some(r) = cfg.routes.iter().find(|r| r.name == route) else {
        let names: Vec<&str> = cfg.routes.iter().map(|r| r.name.as_str()).collect();
        return Err(format!(
            "no route named {route:?}; the configuration has: {}",
            if names.is_empty() {
                "(no routes)".to_string()
            } else {
                names.join(", ")
            }
        ));
    };
    let Some(policy_name) = &r.pii else {
        return Ok(body.to_vec());
    };
    let policy = cfg.pii.get(policy_name).ok_or_else(|| {
        format!("route {route:?} names PII policy {policy_name:?}, which is not defined")
    })?;
    let s = Scrubber::new(policy).map_err(|e| format!("pii.{policy_name}: {e}"))?;
    s.scrub_body(content_type, None, body)
        .map(|s| s.body)
        .map_err(|e| format!("{} {}: {}", e.status, e.code, e.message))
}

#[cfg(test)]
mod tests;
