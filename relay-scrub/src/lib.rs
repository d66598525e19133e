//! Pure PII pseudonymisation for relay: policies, matching, keyed hashing, fail-closed scrubbing
//! of JSON and NDJSON bodies, query strings and headers, the egress guard and sanitization
//! receipts. No I/O, no sockets, no runtime, no Kafka: key bytes are handed in by the caller.
//!
//! Contract used by the request path: one [`Scrubber`] per policy per worker, built by
//! [`Scrubber::new`]; methods take `&self` and allocate the output once per call. The body is
//! walked once: PII values are replaced by their quoted lowercase hex pseudonyms and every other
//! byte is copied as sent, so the upstream sees the app's own formatting. Anything that cannot
//! be parsed is refused ([`ScrubError`]), never forwarded.
//!
//! Two engines do the walk ([`Engine`]): [`Engine::Simd`] (module `simd`, simd-json's SIMD
//! validation and structural indexes) and [`Engine::Walker`] (module `walker`, a strict scalar
//! single-pass parser, the reference). They give identical output and identical refusals; the
//! simd engine hands every body it is not sure about to the walker. The default,
//! [`Engine::Auto`], picks the faster one by text size.
//!
//! Modules: [`config`] (the `[pii.NAME]` policy and its validation), [`hashing`] (HMAC-SHA-256 /
//! SHA-256), [`media`] (accepted Content-Type / Content-Encoding), [`guard`] (egress detectors),
//! [`receipt`] (what was forwarded, under which rules), [`capture`] (root members read in the
//! same walk, for routing), `matcher` (fields, paths, key/value
//! shapes), `walker` and `simd` (the engines), `kv` (key/value look-ahead), `query` (query
//! strings), `path` (PII path segments), [`error`], and `fuzzing` (feature `fuzzing`: the
//! engine comparison shared by the fuzz target and the corpus replay test).
//!
//! Bodies: one JSON value (usually an event object or an array of events; a bare scalar is
//! accepted and has nothing to hash), or NDJSON. A zero-length body passes unchanged; a body of
//! only whitespace is refused (`empty_body`). Parsing is strict RFC 8259: no comments, no
//! trailing commas, no lone surrogate escapes, no raw control characters in strings.

#![forbid(unsafe_code)]

pub mod capture;
pub mod config;
pub mod error;
pub mod guard;
pub mod hashing;
mod kv;
mod matcher;
pub mod media;
mod path;
mod query;
pub mod receipt;
mod simd;
mod walker;

pub use capture::{CaptureSpec, Captured, Captures, EventView};
pub use config::{
    HashAlgorithm, KeyCase, KeySourceConfig, KvPairConfig, PiiPolicyConfig, Problems,
    QuerySeparators,
};
pub use error::ScrubError;
pub use guard::{Finding, GuardAction, GuardConfig};
pub use media::BodyKind;
pub use receipt::Receipt;

use guard::Guard;
use hashing::Hasher;
use matcher::Matcher;
use simd::{Halt, SimdWalk};
use walker::{Stop, Walker};

/// Whether `path_params` pattern `pattern` can match some request path of a route whose `path`
/// is `route_path` (`prefix`: `match = "prefix"`, else exact). `Err` says why the pattern is
/// invalid. For `relay check`, which refuses a pattern no route of its policy can reach.
pub fn path_pattern_reachable(
    pattern: &str,
    route_path: &str,
    prefix: bool,
) -> Result<bool, String> {
    Ok(path::PathPattern::parse(pattern)?.reachable_from(route_path, prefix))
}

/// Which engine walks a body. All give the same output and the same refusals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Engine {
    /// The faster of the two for the body at hand (production default): [`Engine::Simd`] when
    /// the JSON texts average at least [`SIMD_MIN_TEXT_BYTES`], [`Engine::Walker`] below. simd-json
    /// offers no stage-1-only entry point, so its full parse (structural indexes plus tape) is
    /// paid on every text; measured on the micro-benchmark it overtakes the walker from about
    /// 2 KiB per text and is slightly slower below.
    #[default]
    Auto,
    /// simd-json validation and structural indexes; falls back to the walker for any body it
    /// is not sure about.
    Simd,
    /// The strict scalar walker (the reference).
    Walker,
}

/// Average JSON text size (bytes; per line for NDJSON) from which [`Engine::Auto`] uses the
/// simd engine.
pub const SIMD_MIN_TEXT_BYTES: usize = 2048;

/// The active key handed in by the caller (who read it from a file or the environment).
#[derive(Clone, Copy)]
pub struct ActiveKey<'k> {
    /// The key's id (sent upstream as `X-Relay-Key-Id`).
    pub id: Option<&'k str>,
    /// The key's bytes (at least [`config::MIN_KEY_BYTES`]); absorbed into the HMAC state and
    /// not kept.
    pub bytes: &'k [u8],
}

impl std::fmt::Debug for ActiveKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActiveKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A built policy, ready to scrub (one per worker; cheap to clone, never prints key material).
#[derive(Clone)]
pub struct Scrubber {
    matcher: Matcher,
    query_params: Vec<Box<[u8]>>,
    query_semicolon: bool,
    query_brackets: bool,
    path_params: Vec<path::PathPattern>,
    headers: Vec<String>,
    header_fold_underscore: bool,
    hasher: Hasher,
    key_id: Option<String>,
    max_depth: usize,
    guard: Guard,
    engine: Engine,
    policy_digest: String,
}

impl std::fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrubber")
            .field("hasher", &self.hasher)
            .field("key_id", &self.key_id)
            .field("max_depth", &self.max_depth)
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

/// The result of scrubbing a body.
#[derive(Debug, Clone, Default)]
pub struct Scrubbed {
    /// The body exactly as it is forwarded.
    pub body: Vec<u8>,
    /// How many values were hashed (`null` values are left alone and not counted), including
    /// spans hashed by the egress guard.
    pub fields_hashed: u64,
    /// What the egress guard found under `report` (the body is forwarded; the caller counts
    /// them and may publish them to the policy's quarantine topic) and under `hash` (the spans
    /// were replaced; for the caller's per-detector counts). See [`Finding::action`].
    pub findings: Vec<Finding>,
    /// The root members captured by [`Scrubber::scrub_body_capturing`] (empty otherwise).
    pub captures: Captures,
}

impl Scrubber {
    /// Builds the scrubber for a policy: compiles fields, paths, shapes and guard detectors.
    /// `key` is required for `hmac-sha256` and must be absent for `sha256`; its bytes are
    /// absorbed into an HMAC state and not kept.
    pub fn new(policy: &PiiPolicyConfig, key: Option<ActiveKey<'_>>) -> Result<Scrubber, String> {
        let (hasher, key_id) = match (policy.hash, key) {
            (HashAlgorithm::Sha256, None) => (Hasher::Sha256, policy.key_id.clone()),
            (HashAlgorithm::Sha256, Some(_)) => {
                return Err("plain \"sha256\" uses no key: do not hand one in".into())
            }
            (HashAlgorithm::HmacSha256, Some(k)) => {
                if k.bytes.len() < config::MIN_KEY_BYTES {
                    return Err(format!(
                        "the key holds {} bytes, fewer than {}",
                        k.bytes.len(),
                        config::MIN_KEY_BYTES
                    ));
                }
                (Hasher::hmac(k.bytes), k.id.map(str::to_string))
            }
            (HashAlgorithm::HmacSha256, None) => {
                return Err("hmac-sha256 needs a key: set key_file, key_env or [keys]".into())
            }
        };
        if policy.max_depth == 0 || policy.max_depth > config::MAX_DEPTH_LIMIT {
            return Err(format!(
                "max_depth: {} is out of range; use 1..={}",
                policy.max_depth,
                config::MAX_DEPTH_LIMIT
            ));
        }
        let ci = policy.key_case == KeyCase::Insensitive;
        Ok(Scrubber {
            matcher: Matcher::new(&policy.fields, &policy.paths, ci, &policy.kv_pairs)?,
            query_params: policy
                .query_params
                .iter()
                .map(|q| q.as_bytes().into())
                .collect(),
            query_semicolon: policy.query_separators == QuerySeparators::AmpSemicolon,
            query_brackets: policy.query_array_brackets,
            path_params: policy
                .path_params
                .iter()
                .map(|p| path::PathPattern::parse(p))
                .collect::<Result<_, _>>()
                .map_err(|e| format!("path_params: {e}"))?,
            headers: policy
                .headers
                .iter()
                .map(|h| config::fold_header_name(h, policy.header_fold_underscore))
                .collect(),
            header_fold_underscore: policy.header_fold_underscore,
            hasher,
            key_id,
            max_depth: policy.max_depth,
            guard: Guard::new(&policy.guard).map_err(|(f, m)| format!("guard.{f}: {m}"))?,
            engine: Engine::default(),
            policy_digest: receipt::policy_digest(policy),
        })
    }

    /// The same scrubber with another engine (for differential tests and benchmarks).
    pub fn with_engine(mut self, engine: Engine) -> Scrubber {
        self.engine = engine;
        self
    }

    /// The engine in use.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// The active key id sent upstream in `X-Relay-Key-Id` and with the Kafka record
    /// (`None` for plain SHA-256 without a `key_id` label).
    pub fn key_id(&self) -> Option<&str> {
        self.key_id.as_deref()
    }

    /// The short hash of the policy's effective rules (see [`receipt`]).
    pub fn policy_digest(&self) -> &str {
        &self.policy_digest
    }

    /// Whether the egress guard has any detector.
    pub fn guard_is_on(&self) -> bool {
        self.guard.is_on()
    }

    /// The egress guard's detectors as `(name, action)`, in configuration order, each once (for
    /// per-detector metrics).
    pub fn guard_detectors(&self) -> Vec<(String, GuardAction)> {
        self.guard.detectors()
    }

    /// The Kafka topic for `report` findings, when the policy has one.
    pub fn quarantine_topic(&self) -> Option<&str> {
        self.guard.quarantine_topic()
    }

    /// The request path (from its `/`, without the query) as forwarded: the `{name}` segments of
    /// the first matching `path_params` pattern replaced by their pseudonyms, and how many were
    /// hashed; `Ok(None)` when no pattern matches (forward the path as sent). 400
    /// `ambiguous_path` when the path matches a pattern only once normalised (empty or dot
    /// segments, encoded slashes, backslashes, another letter case; see `path`): forward nothing.
    pub fn scrub_path(&self, path: &str) -> Result<Option<(String, u64)>, ScrubError> {
        if self.path_params.is_empty() {
            return Ok(None);
        }
        path::scrub_path(path, &self.path_params, &self.hasher).map_err(|r| {
            ScrubError::bad_request(
                "ambiguous_path",
                format!(
                    "the path matches the PII path pattern {:?} only once normalised (empty or \
                     dot segments, an encoded slash, a backslash or another letter case), so \
                     its PII segments cannot be located; send the path in its plain form",
                    r.pattern
                ),
            )
        })
    }

    /// Scrubs a body. Errors (400, 415 for media type/charset/coding, 422 `pii_detected` from
    /// the egress guard) mean: forward nothing.
    ///
    /// A zero-length body is returned as is (nothing to scrub; e.g. a GET beacon whose PII is in
    /// the query string). A body that is only whitespace is `empty_body`.
    pub fn scrub_body(
        &self,
        content_type: Option<&str>,
        content_encoding: Option<&str>,
        body: &[u8],
    ) -> Result<Scrubbed, ScrubError> {
        self.scrub_body_capturing(
            content_type,
            content_encoding,
            body,
            &CaptureSpec::default(),
        )
    }

    /// [`Scrubber::scrub_body`], capturing in the same walk the values of the root members
    /// `capture` names (module [`capture`]: raw values, before hashing) into
    /// [`Scrubbed::captures`]. Both engines capture identically.
    pub fn scrub_body_capturing(
        &self,
        content_type: Option<&str>,
        content_encoding: Option<&str>,
        body: &[u8],
        capture: &CaptureSpec,
    ) -> Result<Scrubbed, ScrubError> {
        media::check_encoding(content_encoding)?;
        let kind = media::body_kind(content_type)?;
        if body.is_empty() {
            return Ok(Scrubbed::default());
        }
        check_utf8(body)?;
        let engine = match self.engine {
            Engine::Auto => {
                let texts = match kind {
                    BodyKind::Json => 1,
                    BodyKind::Ndjson => 1 + body.iter().filter(|&&b| b == b'\n').count(),
                };
                if body.len() / texts >= SIMD_MIN_TEXT_BYTES {
                    Engine::Simd
                } else {
                    Engine::Walker
                }
            }
            e => e,
        };
        let (out, fields_hashed, captures) = match engine {
            Engine::Auto | Engine::Simd => match self.walk_simd(body, kind, capture) {
                Ok(r) => r,
                Err(None) => self.walk_reference(body, kind, capture)?,
                Err(Some(e)) => return Err(e),
            },
            Engine::Walker => self.walk_reference(body, kind, capture)?,
        };
        let mut scrubbed = Scrubbed {
            body: out,
            fields_hashed,
            findings: Vec::new(),
            captures,
        };
        if self.guard.is_on() {
            self.guard
                .check_body(&mut scrubbed, kind, &self.hasher, self.max_depth)?;
        }
        Ok(scrubbed)
    }

    /// The simd engine alone, without the egress guard: `None` when it would hand the body to
    /// the walker. For the differential tests and benchmarks only.
    #[doc(hidden)]
    pub fn scrub_body_simd_only(
        &self,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Option<Result<(Vec<u8>, u64), ScrubError>> {
        let kind = match media::body_kind(content_type) {
            Ok(k) => k,
            Err(e) => return Some(Err(e)),
        };
        if let Err(e) = check_utf8(body) {
            return Some(Err(e));
        }
        match self.walk_simd(body, kind, &CaptureSpec::default()) {
            Ok((out, n, _)) => Some(Ok((out, n))),
            Err(None) => None,
            Err(Some(e)) => Some(Err(e)),
        }
    }

    fn walk_reference(
        &self,
        body: &[u8],
        kind: BodyKind,
        capture: &CaptureSpec,
    ) -> Result<Walked, ScrubError> {
        let mut w = Walker::new(
            body,
            &self.matcher,
            &self.hasher,
            self.max_depth,
            false,
            capture,
        );
        walk(body, kind, |s, e, line| {
            w.text(s, e, line)
                .map_err(|st| stop_to_error(st, line, self.max_depth))
        })?;
        Ok(w.finish())
    }

    /// `Err(None)`: hand the body to the reference walker.
    fn walk_simd(
        &self,
        body: &[u8],
        kind: BodyKind,
        capture: &CaptureSpec,
    ) -> Result<Walked, Option<ScrubError>> {
        let mut w = SimdWalk::new(body, &self.matcher, &self.hasher, self.max_depth, capture);
        let r = walk(body, kind, |s, e, line| {
            w.text(s, e, line).map_err(|h| match h {
                Halt::Stop(st) => stop_to_error(st, line, self.max_depth),
                Halt::Fallback => ScrubFound::Fallback,
            })
        });
        match r {
            Ok(()) => Ok(w.finish()),
            Err(ScrubFound::Fallback) => Err(None),
            Err(e) => Err(Some(e.into())),
        }
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
        let none = CaptureSpec::default();
        let mut w = Walker::new(body, &m, &self.hasher, self.max_depth, true, &none);
        match walk(body, kind, |s, e, line| {
            w.text(s, e, line)
                .map_err(|st| stop_to_error(st, line, self.max_depth))
        }) {
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
        self.scrub_query_counted(query).map(|(q, _)| q)
    }

    /// Like [`Scrubber::scrub_query`], with the number of values hashed.
    pub fn scrub_query_counted(&self, query: &str) -> Option<(String, u64)> {
        query::scrub_query(
            query,
            &self.query_params,
            &self.hasher,
            query::QueryOptions {
                semicolon: self.query_semicolon,
                brackets: self.query_brackets,
            },
        )
    }

    /// The request's query as forwarded: PII parameters hashed
    /// ([`Scrubber::scrub_query_counted`]), then the egress guard ([`Scrubber::guard_query`]),
    /// and how many PII parameters were hashed. `Ok((None, 0))` when nothing changed.
    pub fn scrub_query_guarded(
        &self,
        query: &str,
        findings: &mut Vec<Finding>,
    ) -> Result<(Option<String>, u64), ScrubError> {
        let (scrubbed, n) = match self.scrub_query_counted(query) {
            Some((q, n)) => (Some(q), n),
            None => (None, 0),
        };
        let guarded = self.guard_query(scrubbed.as_deref().unwrap_or(query), findings)?;
        Ok((guarded.or(scrubbed), n))
    }

    /// The egress guard over a (scrubbed) query string: `Ok(None)` when nothing changed,
    /// `Ok(Some(q))` when `hash` detectors replaced spans; `report` findings are appended to
    /// `findings`; `reject` gives 422 `pii_detected`.
    pub fn guard_query(
        &self,
        query: &str,
        findings: &mut Vec<Finding>,
    ) -> Result<Option<String>, ScrubError> {
        if !self.guard.is_on() {
            return Ok(None);
        }
        self.guard.check_query(query, &self.hasher, findings)
    }

    /// The egress guard over one header value that is forwarded as is: `Ok(None)` when nothing
    /// changed, `Ok(Some(v))` with `hash` spans replaced; `reject` gives 422 `pii_detected`.
    pub fn guard_header(
        &self,
        name: &str,
        value: &[u8],
        findings: &mut Vec<Finding>,
    ) -> Result<Option<Vec<u8>>, ScrubError> {
        if !self.guard.is_on() {
            return Ok(None);
        }
        self.guard.check_header(name, value, &self.hasher, findings)
    }

    /// Whether request header `name` is PII under this policy (compared without case, and with
    /// `_` and `-` folded when `header_fold_underscore` is on).
    pub fn is_pii_header(&self, name: &str) -> bool {
        if self.headers.is_empty() {
            return false;
        }
        let fold = self.header_fold_underscore;
        self.headers.iter().any(|h| {
            h.len() == name.len()
                && h.bytes().zip(name.bytes()).all(|(a, b)| {
                    let b = b.to_ascii_lowercase();
                    a == b || (fold && a == b'-' && b == b'_')
                })
        })
    }

    /// The pseudonym (lowercase hex, 64 characters) of one value.
    pub fn hash_value(&self, value: &[u8]) -> String {
        self.hasher.hex(value)
    }

    /// The sanitization receipt for a body as forwarded (`forwarded`) with `pii_count` values
    /// hashed, under this scrubber's policy named `policy_name`.
    pub fn receipt(&self, policy_name: &str, forwarded: &[u8], pii_count: u64) -> Receipt {
        Receipt::new(policy_name, &self.policy_digest, forwarded, pii_count)
    }
}

/// What an engine's walk gives: the output, the count of hashed values, the captures.
type Walked = (Vec<u8>, u64, Captures);

/// What stopped a walk, as seen by the body functions.
enum ScrubFound {
    /// Refused.
    Err(ScrubError),
    /// Find mode hit.
    Found,
    /// The simd engine hands the body to the walker.
    Fallback,
}

impl From<ScrubFound> for ScrubError {
    fn from(f: ScrubFound) -> ScrubError {
        match f {
            ScrubFound::Err(e) => e,
            // Only find mode stops with Found and only the simd engine with Fallback, and both
            // are handled before conversion.
            ScrubFound::Found | ScrubFound::Fallback => ScrubError {
                code: "internal",
                status: 500,
                message: "the scrubber stopped unexpectedly; report this bug".into(),
                detector: None,
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

/// Calls `text(start, end, line)` for the body's one JSON text, or for each non-blank NDJSON
/// line (1-based `line`).
fn walk(
    body: &[u8],
    kind: BodyKind,
    mut text: impl FnMut(usize, usize, Option<usize>) -> Result<(), ScrubFound>,
) -> Result<(), ScrubFound> {
    match kind {
        BodyKind::Json => {
            if body
                .iter()
                .all(|&b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
            {
                return Err(ScrubFound::Err(empty_body()));
            }
            text(0, body.len(), None)
        }
        BodyKind::Ndjson => {
            let mut start = 0;
            let mut line = 1;
            let mut values = 0;
            while start < body.len() {
                let end = memchr_nl(&body[start..]).map_or(body.len(), |p| start + p);
                let t = &body[start..end];
                if !t.iter().all(|&b| matches!(b, b' ' | b'\t' | b'\r')) {
                    text(start, end, Some(line))?;
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

#[cfg(feature = "fuzzing")]
pub mod fuzzing;

#[cfg(test)]
mod tests;
