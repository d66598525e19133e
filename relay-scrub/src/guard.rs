//! The egress guard: a last look at what is about to leave. Detectors run over the scrubbed
//! body's string values (not member names, numbers or literals), the query string's decoded
//! values and the forwarded header values, and catch personal data that no field rule named:
//! e-mail addresses, phone numbers (E.164 and national formats, at least 8 digits), IPv4/IPv6
//! addresses, payment cards (13–19 digits, Luhn-valid), IBANs (mod-97) and named regexes.
//!
//! Each detector has an action: `reject` (the request is refused with 422 `pii_detected`, the
//! message naming the detector and where, never the value), `hash` (the matched span is replaced
//! by its pseudonym) or `report` (forwarded as is; a [`Finding`] is returned for the caller to
//! count and publish). Off by default; patterns are compiled once, when the scrubber is built.
//! Strings that are exactly a pseudonym (64 lowercase hex digits) are not inspected.

use std::net::{Ipv4Addr, Ipv6Addr};

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::config::Problems;
use crate::error::ScrubError;
use crate::hashing::{Hasher, HEX_LEN};
use crate::media::BodyKind;
use crate::walker::{decode_string, is_json_ws};
use crate::Scrubbed;

/// What a detector does with a match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GuardAction {
    /// Refuse the request: 422 `pii_detected`.
    Reject,
    /// Replace the matched span by its pseudonym and forward.
    Hash,
    /// Forward as is and return a [`Finding`].
    Report,
}

/// `[pii.NAME.guard]`: the egress guard of one policy. Every detector is off by default.
///
/// ```toml
/// [pii.default.guard]
/// email = "reject"
/// card = "hash"
/// ip = "report"
/// quarantine_topic = "pii-findings"
/// [[pii.default.guard.regex]]
/// name = "ssn"
/// pattern = '\b\d{3}-\d{2}-\d{4}\b'
/// action = "reject"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GuardConfig {
    /// E-mail addresses (`local@domain.tld`). Default: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<GuardAction>,
    /// Phone numbers: `+` and 8–15 digits (E.164, separators allowed), or national formats with
    /// separators and at least 8 digits (`030 1234567`, `(415) 555-0132`). Default: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<GuardAction>,
    /// IPv4 and IPv6 addresses. Default: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<GuardAction>,
    /// Payment card numbers: 13–19 digits (spaces or `-` between allowed), Luhn-valid.
    /// Default: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card: Option<GuardAction>,
    /// IBANs (country, check digits, 11–30 alphanumerics; spaces allowed), mod-97 valid.
    /// Default: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iban: Option<GuardAction>,
    /// Named regexes (Rust `regex` syntax), each with its action. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regex: Vec<RegexDetectorConfig>,
    /// Kafka topic for requests with `report` findings: one record per such request, whose
    /// payload is the scrubbed body as forwarded and whose headers name each finding's detector
    /// and place (`relay-guard-detector`, `relay-guard-path`), the route and request id, and the
    /// receipt. Needs relay's `[kafka]` section. Default: none (findings are only counted).
    /// Publishing is done by relay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine_topic: Option<String>,
}

/// One named regex detector.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegexDetectorConfig {
    /// Name used in messages and findings (`[A-Za-z0-9_-]`, 1..=64).
    pub name: String,
    /// The pattern (Rust `regex` syntax; no look-around or back-references).
    pub pattern: String,
    /// What to do with a match.
    pub action: GuardAction,
}

impl GuardConfig {
    /// Whether any detector is configured.
    pub fn is_on(&self) -> bool {
        self.email.is_some()
            || self.phone.is_some()
            || self.ip.is_some()
            || self.card.is_some()
            || self.iban.is_some()
            || !self.regex.is_empty()
    }

    /// Records every problem under `field` (e.g. `pii.default.guard`).
    pub fn validate(&self, field: &str, p: &mut Problems) {
        for (i, r) in self.regex.iter().enumerate() {
            let f = format!("{field}.regex[{i}]");
            if r.name.is_empty()
                || r.name.len() > 64
                || !r
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                p.push(
                    format!("{f}.name"),
                    format!(
                        "{:?} is not a detector name: use 1 to 64 of A-Z a-z 0-9 _ -",
                        r.name
                    ),
                );
            }
            if BUILTIN.contains(&r.name.as_str()) {
                p.push(
                    format!("{f}.name"),
                    format!("{:?} is a built-in detector; pick another name", r.name),
                );
            }
            if let Err(e) = Regex::new(&r.pattern) {
                p.push(
                    format!("{f}.pattern"),
                    format!("does not compile ({e}); write Rust regex syntax"),
                );
            } else if Regex::new(&r.pattern).is_ok_and(|re| re.is_match("")) {
                p.push(
                    format!("{f}.pattern"),
                    "matches the empty string, so it would match everything; anchor it to what it must find",
                );
            }
        }
        if let Some(t) = &self.quarantine_topic {
            if t.is_empty()
                || t.len() > 249
                || !t
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            {
                p.push(
                    format!("{field}.quarantine_topic"),
                    format!("{t:?} is not a Kafka topic name: use 1 to 249 of A-Z a-z 0-9 . _ -"),
                );
            }
        }
    }
}

const BUILTIN: &[&str] = &["email", "phone", "ip", "card", "iban"];

/// What the guard found under a `report` or `hash` action: which detector, and where (a JSON
/// path such as `$.events[2].note` (prefixed with `line N: ` for NDJSON), `query.NAME` or
/// `header.NAME`). One per detector per value it matched in. Never the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Detector name (`email`, `phone`, `ip`, `card`, `iban`, or a regex's name).
    pub detector: String,
    /// Where it was found.
    pub place: String,
    /// [`GuardAction::Report`] (forwarded as is: count and quarantine) or [`GuardAction::Hash`]
    /// (the spans were replaced: count only).
    pub action: GuardAction,
}

#[derive(Debug, Clone)]
enum Kind {
    Email(Regex),
    Phone(Regex),
    Ipv4(Regex),
    Ipv6(Regex),
    Card(Regex),
    Iban(Regex),
    Named(Regex),
}

#[derive(Debug, Clone)]
struct Detector {
    name: String,
    kind: Kind,
    action: GuardAction,
}

/// The compiled guard of one policy.
#[derive(Debug, Clone, Default)]
pub(crate) struct Guard {
    detectors: Vec<Detector>,
    quarantine_topic: Option<String>,
}

fn re(p: &str) -> Regex {
    // Built-in patterns are constants, checked by the unit tests.
    Regex::new(p).expect("built-in guard pattern")
}

impl Guard {
    /// Compiles the configured detectors; errors carry the sub-field and a message.
    pub(crate) fn new(c: &GuardConfig) -> Result<Guard, (String, String)> {
        let mut d = Vec::new();
        let mut add = |name: &str, kind: Kind, action: Option<GuardAction>| {
            if let Some(action) = action {
                d.push(Detector {
                    name: name.to_string(),
                    kind,
                    action,
                });
            }
        };
        if c.email.is_some() {
            add(
                "email",
                Kind::Email(re(
                    r"(?i)[a-z0-9._%+-]+@[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*\.[a-z]{2,}",
                )),
                c.email,
            );
        }
        if c.phone.is_some() {
            add(
                "phone",
                Kind::Phone(re(r"\+?\(?\d[\d ().-]{6,}\d")),
                c.phone,
            );
        }
        if c.ip.is_some() {
            add("ip", Kind::Ipv4(re(r"(?:\d{1,3}\.){3}\d{1,3}")), c.ip);
            add(
                "ip",
                Kind::Ipv6(re(r"[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}")),
                c.ip,
            );
        }
        if c.card.is_some() {
            add("card", Kind::Card(re(r"\d(?:[ -]?\d){12,18}")), c.card);
        }
        if c.iban.is_some() {
            add(
                "iban",
                Kind::Iban(re(r"[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}")),
                c.iban,
            );
        }
        for (i, r) in c.regex.iter().enumerate() {
            let rx = Regex::new(&r.pattern)
                .map_err(|e| (format!("regex[{i}].pattern"), e.to_string()))?;
            d.push(Detector {
                name: r.name.clone(),
                kind: Kind::Named(rx),
                action: r.action,
            });
        }
        Ok(Guard {
            detectors: d,
            quarantine_topic: c.quarantine_topic.clone(),
        })
    }

    /// Whether any detector is configured.
    pub(crate) fn is_on(&self) -> bool {
        !self.detectors.is_empty()
    }

    /// `(name, action)` of each detector, once per name, in configuration order.
    pub(crate) fn detectors(&self) -> Vec<(String, GuardAction)> {
        let mut v: Vec<(String, GuardAction)> = Vec::new();
        for d in &self.detectors {
            if !v.iter().any(|(n, _)| *n == d.name) {
                v.push((d.name.clone(), d.action));
            }
        }
        v
    }

    /// The topic for `report` findings.
    pub(crate) fn quarantine_topic(&self) -> Option<&str> {
        self.quarantine_topic.as_deref()
    }

    /// Runs the detectors over `text`: `Err` on a `reject` match, `report` matches appended to
    /// `findings`, and the spans to hash returned (sorted, not overlapping).
    fn scan(
        &self,
        text: &str,
        place: &dyn Fn() -> String,
        findings: &mut Vec<Finding>,
    ) -> Result<Vec<(usize, usize)>, ScrubError> {
        let mut spans = Vec::new();
        if text.len() == HEX_LEN
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Ok(spans);
        }
        for d in &self.detectors {
            let mut hit = false;
            for (s, e) in detect(&d.kind, text) {
                hit = true;
                match d.action {
                    GuardAction::Reject => return Err(ScrubError::pii_detected(&d.name, &place())),
                    GuardAction::Hash => spans.push((s, e)),
                    GuardAction::Report => break,
                }
            }
            // One finding per detector per value (the two `ip` kinds count once).
            if hit
                && !findings.last().is_some_and(|f| {
                    f.detector == d.name && f.action == d.action && f.place == place()
                })
            {
                findings.push(Finding {
                    detector: d.name.clone(),
                    place: place(),
                    action: d.action,
                });
            }
        }
        spans.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(spans.len());
        for (s, e) in spans {
            match merged.last_mut() {
                Some(last) if s < last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        Ok(merged)
    }

    /// The guard over a scrubbed body (valid JSON/NDJSON): may refuse, replace spans in string
    /// values (the string is then re-escaped minimally) and add findings.
    pub(crate) fn check_body(
        &self,
        s: &mut Scrubbed,
        kind: BodyKind,
        hasher: &Hasher,
        max_depth: usize,
    ) -> Result<(), ScrubError> {
        let mut g = BodyGuard {
            guard: self,
            hasher,
            src: &s.body,
            pos: 0,
            out: Vec::new(),
            copied: 0,
            path: Vec::new(),
            line: None,
            findings: &mut s.findings,
            hashed: 0,
            buf: Vec::new(),
            max_depth,
        };
        match kind {
            BodyKind::Json => g.value(0)?,
            BodyKind::Ndjson => {
                let body = g.src;
                let mut start = 0;
                let mut line = 1;
                while start < body.len() {
                    let end = body[start..]
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(body.len(), |p| start + p);
                    g.pos = start;
                    g.skip_ws(end);
                    if g.pos < end {
                        g.line = Some(line);
                        g.value(0)?;
                    }
                    start = end + 1;
                    line += 1;
                }
            }
        }
        let hashed = g.hashed;
        if hashed > 0 {
            let mut out = std::mem::take(&mut g.out);
            out.extend_from_slice(&g.src[g.copied..]);
            s.body = out;
            s.fields_hashed += hashed;
        }
        Ok(())
    }

    /// The guard over a query string's decoded values (`query.NAME`). Hashed values are
    /// percent-encoded again.
    pub(crate) fn check_query(
        &self,
        query: &str,
        hasher: &Hasher,
        findings: &mut Vec<Finding>,
    ) -> Result<Option<String>, ScrubError> {
        let q = query.as_bytes();
        let mut out = String::new();
        let mut copied = 0;
        let mut changed = false;
        let mut start = 0;
        let mut buf = Vec::new();
        while start <= q.len() {
            let end = q[start..]
                .iter()
                .position(|&b| b == b'&' || b == b';')
                .map_or(q.len(), |p| start + p);
            let pair = &q[start..end];
            let (name, vstart) = match pair.iter().position(|&b| b == b'=') {
                Some(eq) => (&pair[..eq], start + eq + 1),
                None => (&pair[..0], start),
            };
            crate::query::form_decode_into(&q[vstart..end], &mut buf);
            let value = String::from_utf8_lossy(&buf).into_owned();
            let mut nbuf = Vec::new();
            crate::query::form_decode_into(name, &mut nbuf);
            let nm = String::from_utf8_lossy(&nbuf).into_owned();
            let spans = self.scan(&value, &|| format!("query.{nm}"), findings)?;
            if !spans.is_empty() {
                let replaced = replace_spans(&value, &spans, hasher);
                out.push_str(&query[copied..vstart]);
                percent_encode_into(replaced.as_bytes(), &mut out);
                copied = end;
                changed = true;
            }
            start = end + 1;
        }
        if !changed {
            return Ok(None);
        }
        out.push_str(&query[copied..]);
        Ok(Some(out))
    }

    /// The guard over one forwarded header value (`header.NAME`).
    pub(crate) fn check_header(
        &self,
        name: &str,
        value: &[u8],
        hasher: &Hasher,
        findings: &mut Vec<Finding>,
    ) -> Result<Option<Vec<u8>>, ScrubError> {
        let Ok(text) = std::str::from_utf8(value) else {
            return Ok(None);
        };
        let lname = name.to_ascii_lowercase();
        let spans = self.scan(text, &|| format!("header.{lname}"), findings)?;
        if spans.is_empty() {
            return Ok(None);
        }
        Ok(Some(replace_spans(text, &spans, hasher).into_bytes()))
    }
}

/// `text` with each span replaced by the pseudonym of its bytes.
fn replace_spans(text: &str, spans: &[(usize, usize)], hasher: &Hasher) -> String {
    let mut out = String::with_capacity(text.len() + spans.len() * HEX_LEN);
    let mut at = 0;
    for &(s, e) in spans {
        out.push_str(&text[at..s]);
        out.push_str(&hasher.hex(&text.as_bytes()[s..e]));
        at = e;
    }
    out.push_str(&text[at..]);
    out
}

fn percent_encode_into(b: &[u8], out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &c in b {
        if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
            out.push(c as char);
        } else {
            out.push('%');
            out.push(HEX[(c >> 4) as usize] as char);
            out.push(HEX[(c & 15) as usize] as char);
        }
    }
}

/// A path segment of the body walk.
enum Seg {
    Key(String),
    Index(usize),
}

/// The tolerant walk over a scrubbed body (already validated) that inspects string values.
struct BodyGuard<'a> {
    guard: &'a Guard,
    hasher: &'a Hasher,
    src: &'a [u8],
    pos: usize,
    out: Vec<u8>,
    copied: usize,
    path: Vec<Seg>,
    line: Option<usize>,
    findings: &'a mut Vec<Finding>,
    hashed: u64,
    buf: Vec<u8>,
    max_depth: usize,
}

impl BodyGuard<'_> {
    fn skip_ws(&mut self, limit: usize) {
        while self.pos < limit && is_json_ws(self.src[self.pos]) {
            self.pos += 1;
        }
    }

    fn place(line: Option<usize>, path: &[Seg]) -> String {
        let mut p = match line {
            Some(l) => format!("line {l}: $"),
            None => "$".to_string(),
        };
        for s in path {
            match s {
                Seg::Key(k) => {
                    p.push('.');
                    p.push_str(k);
                }
                Seg::Index(i) => p.push_str(&format!("[{i}]")),
            }
        }
        p
    }

    /// The end (after the closing quote) of the string at `self.pos`, and whether it has
    /// escapes.
    fn string_end(&self) -> (usize, bool) {
        let s = self.src;
        let mut j = self.pos + 1;
        let mut esc = false;
        while j < s.len() {
            match s[j] {
                b'"' => return (j + 1, esc),
                b'\\' => {
                    esc = true;
                    j += 2;
                }
                _ => j += 1,
            }
        }
        (s.len(), esc)
    }

    fn value(&mut self, depth: usize) -> Result<(), ScrubError> {
        let n = self.src.len();
        self.skip_ws(n);
        match self.src.get(self.pos) {
            Some(b'{') if depth < self.max_depth + 1 => {
                self.pos += 1;
                loop {
                    self.skip_ws(n);
                    match self.src.get(self.pos) {
                        Some(b'}') => {
                            self.pos += 1;
                            return Ok(());
                        }
                        Some(b',') => {
                            self.pos += 1;
                            continue;
                        }
                        Some(b'"') => {}
                        _ => return Ok(()),
                    }
                    let (kend, esc) = self.string_end();
                    let raw = &self.src[self.pos + 1..kend.saturating_sub(1).max(self.pos + 1)];
                    let key = if esc {
                        let mut k = Vec::new();
                        decode_string(raw, &mut k);
                        String::from_utf8_lossy(&k).into_owned()
                    } else {
                        String::from_utf8_lossy(raw).into_owned()
                    };
                    self.pos = kend;
                    self.skip_ws(n);
                    if self.src.get(self.pos) == Some(&b':') {
                        self.pos += 1;
                    }
                    self.path.push(Seg::Key(key));
                    let r = self.value(depth + 1);
                    self.path.pop();
                    r?;
                }
            }
            Some(b'[') if depth < self.max_depth + 1 => {
                self.pos += 1;
                let mut i = 0;
                loop {
                    self.skip_ws(n);
                    match self.src.get(self.pos) {
                        Some(b']') => {
                            self.pos += 1;
                            return Ok(());
                        }
                        Some(b',') => {
                            self.pos += 1;
                            continue;
                        }
                        None => return Ok(()),
                        _ => {}
                    }
                    self.path.push(Seg::Index(i));
                    let r = self.value(depth + 1);
                    self.path.pop();
                    r?;
                    i += 1;
                }
            }
            Some(b'"') => self.string_value(),
            Some(_) => {
                while self.pos < n
                    && !matches!(self.src[self.pos], b',' | b'}' | b']')
                    && !is_json_ws(self.src[self.pos])
                {
                    self.pos += 1;
                }
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn string_value(&mut self) -> Result<(), ScrubError> {
        let start = self.pos;
        let (end, esc) = self.string_end();
        self.pos = end;
        let raw = &self.src[start + 1..end.saturating_sub(1).max(start + 1)];
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let text: &str = if esc {
            decode_string(raw, &mut buf);
            std::str::from_utf8(&buf).unwrap_or("")
        } else {
            std::str::from_utf8(raw).unwrap_or("")
        };
        let (line, path) = (self.line, &self.path);
        let place = || Self::place(line, path);
        let spans = self.guard.scan(text, &place, self.findings)?;
        if !spans.is_empty() {
            let replaced = replace_spans(text, &spans, self.hasher);
            self.out.extend_from_slice(&self.src[self.copied..start]);
            json_quote_into(&replaced, &mut self.out);
            self.copied = end;
            self.hashed += spans.len() as u64;
        }
        self.buf = buf;
        Ok(())
    }
}

/// Appends `s` as a JSON string (quotes, `"` `\` and control characters escaped).
fn json_quote_into(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

/// The spans of `text` that detector `kind` matches (after its validity checks).
fn detect(kind: &Kind, text: &str) -> Vec<(usize, usize)> {
    let b = text.as_bytes();
    let before = |s: usize| if s == 0 { None } else { Some(b[s - 1]) };
    let after = |e: usize| b.get(e).copied();
    let mut v = Vec::new();
    match kind {
        Kind::Email(r) | Kind::Named(r) => {
            v.extend(r.find_iter(text).map(|m| (m.start(), m.end())));
        }
        Kind::Phone(r) => {
            for m in r.find_iter(text) {
                let (s, e) = (m.start(), m.end());
                if before(s).is_some_and(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'_')
                    || after(e).is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
                {
                    continue;
                }
                if is_phone(m.as_str()) {
                    v.push((s, e));
                }
            }
        }
        Kind::Ipv4(r) => {
            for m in r.find_iter(text) {
                let (s, e) = (m.start(), m.end());
                if before(s).is_some_and(|c| c.is_ascii_alphanumeric() || c == b'.')
                    || after(e).is_some_and(|c| c.is_ascii_alphanumeric())
                    || (after(e) == Some(b'.') && b.get(e + 1).is_some_and(u8::is_ascii_digit))
                {
                    continue;
                }
                if m.as_str().parse::<Ipv4Addr>().is_ok() {
                    v.push((s, e));
                }
            }
        }
        Kind::Ipv6(r) => {
            for m in r.find_iter(text) {
                let (s, e) = (m.start(), m.end());
                if before(s).is_some_and(|c| c.is_ascii_alphanumeric() || c == b':')
                    || after(e).is_some_and(|c| c.is_ascii_alphanumeric() || c == b':')
                {
                    continue;
                }
                let t = m.as_str();
                if t.bytes().any(|c| c.is_ascii_hexdigit()) && t.parse::<Ipv6Addr>().is_ok() {
                    v.push((s, e));
                }
            }
        }
        Kind::Card(r) => {
            for m in r.find_iter(text) {
                let (s, e) = (m.start(), m.end());
                if before(s).is_some_and(|c| c.is_ascii_alphanumeric())
                    || after(e).is_some_and(|c| c.is_ascii_alphanumeric())
                {
                    continue;
                }
                let digits: Vec<u8> = m
                    .as_str()
                    .bytes()
                    .filter(u8::is_ascii_digit)
                    .map(|c| c - b'0')
                    .collect();
                if (13..=19).contains(&digits.len())
                    && digits.iter().any(|&d| d != 0)
                    && luhn(&digits)
                {
                    v.push((s, e));
                }
            }
        }
        Kind::Iban(r) => {
            for m in r.find_iter(text) {
                let s = m.start();
                if before(s).is_some_and(|c| c.is_ascii_alphanumeric()) {
                    continue;
                }
                // Greedy candidates may swallow a following word: try shorter ends at spaces.
                let mut e = m.end();
                loop {
                    let cand = &text[s..e];
                    if !after(e).is_some_and(|c| c.is_ascii_alphanumeric()) && is_iban(cand) {
                        v.push((s, e));
                        break;
                    }
                    match cand.rfind(' ') {
                        Some(p) if p > 4 => e = s + p,
                        _ => break,
                    }
                }
            }
        }
    }
    v
}

/// Phone rules over a candidate of digits and separators.
fn is_phone(t: &str) -> bool {
    let digits = t.bytes().filter(u8::is_ascii_digit).count();
    if !(8..=15).contains(&digits) {
        return false;
    }
    if t.starts_with('+') {
        return true;
    }
    let separated = t
        .bytes()
        .any(|c| matches!(c, b' ' | b'-' | b'.' | b'(' | b')'));
    let first_digit = t.bytes().find(u8::is_ascii_digit);
    // National trunk prefix 0 (`030 1234567`, `0151-12345678`, unseparated 9–11 digits `0[1-9]…`).
    if first_digit == Some(b'0') {
        let second = t.bytes().filter(u8::is_ascii_digit).nth(1);
        return second.is_some_and(|c| c != b'0') && (separated || (9..=11).contains(&digits));
    }
    // North American: (415) 555-0132, 415-555-0132, 415.555.0132, 415 555 0132.
    let groups: Vec<usize> = t
        .split(|c: char| !c.is_ascii_digit())
        .filter(|g| !g.is_empty())
        .map(str::len)
        .collect();
    groups == [3, 3, 4]
}

/// The Luhn check over decimal digits.
fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, &d) in digits.iter().rev().enumerate() {
        let mut d = u32::from(d);
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum.is_multiple_of(10)
}

/// The IBAN check: 15–34 alphanumerics after removing spaces, mod 97 == 1.
fn is_iban(t: &str) -> bool {
    let c: Vec<u8> = t.bytes().filter(|&b| b != b' ').collect();
    if !(15..=34).contains(&c.len()) {
        return false;
    }
    let mut rem = 0u32;
    for &b in c[4..].iter().chain(&c[..4]) {
        let v = match b {
            b'0'..=b'9' => u32::from(b - b'0'),
            b'A'..=b'Z' => u32::from(b - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(c: GuardConfig) -> Guard {
        Guard::new(&c).unwrap()
    }

    fn finds(kind_cfg: GuardConfig, text: &str) -> usize {
        let g = guard(kind_cfg);
        let mut f = Vec::new();
        g.scan(text, &|| "$".into(), &mut f).unwrap();
        f.len()
    }

    fn report(field: &str) -> GuardConfig {
        let mut c = GuardConfig::default();
        let a = Some(GuardAction::Report);
        match field {
            "email" => c.email = a,
            "phone" => c.phone = a,
            "ip" => c.ip = a,
            "card" => c.card = a,
            "iban" => c.iban = a,
            _ => unreachable!(),
        }
        c
    }

    #[test]
    fn true_positives() {
        for (d, t) in [
            ("email", "contact jane.doe+x@example.co.uk now"),
            ("phone", "call +49 30 1234567"),
            ("phone", "+14155550132"),
            ("phone", "tel 030 1234567"),
            ("phone", "(415) 555-0132"),
            ("phone", "0151-12345678"),
            ("ip", "from 192.168.1.20"),
            ("ip", "v6 2001:db8::8a2e:370:7334 here"),
            ("ip", "::1"),
            ("card", "4111 1111 1111 1111"),
            ("card", "4111-1111-1111-1111"),
            ("card", "378282246310005"),
            ("iban", "DE89 3704 0044 0532 0130 00"),
            ("iban", "pay GB82WEST12345698765432 today"),
            ("iban", "DE89 3704 0044 0532 0130 00 PAID"),
        ] {
            assert_eq!(finds(report(d), t), 1, "{d} should find {t:?}");
        }
    }

    #[test]
    fn near_misses() {
        for (d, t) in [
            ("email", "user at example dot com"),
            ("email", "@handle"),
            ("phone", "1234567"),
            ("phone", "2026-11-22"),
            ("phone", "1763790000"),
            ("phone", "build 20261121"),
            ("phone", "00000000000"),
            ("ip", "999.1.1.1"),
            ("ip", "version 7.4.1"),
            ("ip", "1.2.3.4.5"),
            ("ip", "05:40:00"),
            ("ip", "00:1A:2B:3C:4D:5E"),
            ("card", "4111111111111112"),
            ("card", "0000000000000000"),
            ("card", "123456789012"),
            ("card", "a4111111111111111"),
            ("iban", "DE89 3704 0044 0532 0130 01"),
            ("iban", "DE00"),
        ] {
            assert_eq!(finds(report(d), t), 0, "{d} should not find {t:?}");
        }
        // A pseudonym is never inspected.
        let h = Hasher::Sha256.hex(b"4111111111111111");
        assert_eq!(finds(report("card"), &h), 0);
    }

    #[test]
    fn named_regex_and_config_validation() {
        let c = GuardConfig {
            regex: vec![RegexDetectorConfig {
                name: "ssn".into(),
                pattern: r"\b\d{3}-\d{2}-\d{4}\b".into(),
                action: GuardAction::Reject,
            }],
            ..GuardConfig::default()
        };
        let g = guard(c.clone());
        let e = g
            .scan("id 078-05-1120", &|| "$.note".into(), &mut Vec::new())
            .unwrap_err();
        assert_eq!((e.status, e.code), (422, "pii_detected"));
        assert!(e.message.contains("ssn") && e.message.contains("$.note"));
        assert!(!e.message.contains("078-05-1120"));
        let mut p = Problems::default();
        c.validate("g", &mut p);
        assert!(p.is_empty(), "{p:?}");
        let bad = GuardConfig {
            regex: vec![
                RegexDetectorConfig {
                    name: "email".into(),
                    pattern: "(".into(),
                    action: GuardAction::Hash,
                },
                RegexDetectorConfig {
                    name: "x".into(),
                    pattern: "a*".into(),
                    action: GuardAction::Hash,
                },
            ],
            quarantine_topic: Some("bad topic".into()),
            ..GuardConfig::default()
        };
        let mut p = Problems::default();
        bad.validate("g", &mut p);
        assert_eq!(p.0.len(), 4, "{p:?}");
    }
}
