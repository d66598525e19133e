//! The reference engine (and differential oracle of [`crate::simd`]): one validating pass over a JSON text (RFC 8259, strict) that copies
//! every byte through except the values of PII members, which it replaces by their quoted hex
//! pseudonyms. The app's own formatting, key order, number spelling and escapes survive.
//!
//! Hashed input per value type: a string's decoded text (UTF-8, escapes resolved); a number's or
//! boolean's JSON text as written; an object's or array's compact JSON (its own text with the
//! whitespace between tokens removed, strings and numbers as written). `null` stays `null`.

use crate::capture::{CaptureSpec, Capturer, Captures};
use crate::hashing::{hex_encode_into, Hasher};
use crate::kv::kv_target;
use crate::matcher::{Matcher, State, NONE, ROOT, WRAPPER};

/// Why the walk stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Not valid JSON at this byte offset: what was expected.
    Json(usize, &'static str),
    /// Deeper than the limit at this byte offset.
    TooDeep(usize),
    /// Find mode: the first PII value was found (not an error).
    Found,
}

/// One pass over one JSON text. `src` is the whole body (already valid UTF-8); each text is
/// `src[pos..limit]`.
pub(crate) struct Walker<'a> {
    src: &'a [u8],
    pos: usize,
    limit: usize,
    max_depth: usize,
    matcher: &'a Matcher,
    hasher: &'a Hasher,
    /// Find mode: stop at the first PII value and keep its digest in `found`.
    find: bool,
    /// While > 0 (inside a value being hashed whole), members are not matched.
    suppress: u32,
    /// Output so far; `src[copied..]` is not copied yet.
    pub(crate) out: Vec<u8>,
    copied: usize,
    /// Values replaced.
    pub(crate) hashed: u64,
    /// Find mode result.
    pub(crate) found: Option<[u8; 32]>,
    key_buf: Vec<u8>,
    val_buf: Vec<u8>,
    /// The root members captured for routing (module `capture`).
    cap: Capturer<'a>,
}

#[inline]
fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Whether any of the 8 bytes is `"`, `\` or below 0x20 (SWAR; exact, no false negatives).
#[inline]
fn word_needs_attention(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let lt = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    let q = w ^ (ONES * b'"' as u64);
    let q = q.wrapping_sub(ONES) & !q & HIGH;
    let b = w ^ (ONES * b'\\' as u64);
    let b = b.wrapping_sub(ONES) & !b & HIGH;
    (lt | q | b) != 0
}

fn hex_val(b: u8) -> Option<u16> {
    match b {
        b'0'..=b'9' => Some((b - b'0') as u16),
        b'a'..=b'f' => Some((b - b'a' + 10) as u16),
        b'A'..=b'F' => Some((b - b'A' + 10) as u16),
        _ => None,
    }
}

impl<'a> Walker<'a> {
    /// A walker over `src`; `out_capacity` pre-sizes the output (0 in find mode).
    pub(crate) fn new(
        src: &'a [u8],
        matcher: &'a Matcher,
        hasher: &'a Hasher,
        max_depth: usize,
        find: bool,
        capture: &'a CaptureSpec,
    ) -> Walker<'a> {
        Walker {
            src,
            pos: 0,
            limit: src.len(),
            max_depth,
            matcher,
            hasher,
            find,
            suppress: 0,
            out: if find {
                Vec::new()
            } else {
                Vec::with_capacity(src.len() + src.len() / 4 + 64)
            },
            copied: 0,
            hashed: 0,
            found: None,
            key_buf: Vec::new(),
            val_buf: Vec::new(),
            cap: Capturer::new(capture),
        }
    }

    /// Walks exactly one JSON text in `src[start..end]` (whitespace around it allowed);
    /// `line` is its NDJSON line (for the captures).
    pub(crate) fn text(
        &mut self,
        start: usize,
        end: usize,
        line: Option<usize>,
    ) -> Result<(), Stop> {
        self.pos = start;
        self.limit = end;
        self.skip_ws();
        if self.pos >= self.limit {
            return Err(Stop::Json(self.pos, "expected a JSON value"));
        }
        self.cap.text(line);
        if self.peek() != Some(b'[') {
            self.cap.event(0);
        }
        self.value(0, ROOT, true)?;
        self.skip_ws();
        if self.pos < self.limit {
            return Err(Stop::Json(
                self.pos,
                "expected the end after one JSON value",
            ));
        }
        Ok(())
    }

    /// Copies the rest of the input and returns the output, the count of hashed values and
    /// the captures.
    pub(crate) fn finish(mut self) -> (Vec<u8>, u64, Captures) {
        self.out.extend_from_slice(&self.src[self.copied..]);
        (self.out, self.hashed, self.cap.finish())
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        if self.pos < self.limit {
            Some(self.src[self.pos])
        } else {
            None
        }
    }

    #[inline]
    fn skip_ws(&mut self) {
        while self.pos < self.limit && is_ws(self.src[self.pos]) {
            self.pos += 1;
        }
    }

    fn value(&mut self, depth: usize, state: State, batch: bool) -> Result<(), Stop> {
        match self.peek() {
            Some(b'{') => self.object(depth + 1, state, None),
            Some(b'[') => self.array(depth + 1, state, batch),
            Some(b'"') => self.string().map(|_| ()),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(Stop::Json(self.pos, "expected a JSON value")),
            None => Err(Stop::Json(
                self.pos,
                "the text ends where a value was expected",
            )),
        }
    }

    /// An object at `self.pos`; `kv` is the value member of a matched key/value shape.
    fn object(&mut self, depth: usize, state: State, kv: Option<&'a [u8]>) -> Result<(), Stop> {
        if depth > self.max_depth {
            return Err(Stop::TooDeep(self.pos));
        }
        self.pos += 1; // '{'
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            if self.peek() != Some(b'"') {
                return Err(Stop::Json(
                    self.pos,
                    "expected a member name in double quotes",
                ));
            }
            let kstart = self.pos;
            let escaped = self.string()?;
            let mut slot = None;
            let (pii, next, kv_hit) = if self.suppress > 0 {
                (false, NONE, false)
            } else {
                let key: &[u8] = if escaped {
                    self.key_buf.clear();
                    decode_string(&self.src[kstart + 1..self.pos - 1], &mut self.key_buf);
                    &self.key_buf
                } else {
                    &self.src[kstart + 1..self.pos - 1]
                };
                if state == ROOT {
                    slot = self.cap.slot(key);
                }
                let next = self.matcher.member(state, key);
                (
                    state == WRAPPER
                        || self.matcher.is_field(key)
                        || self.matcher.is_terminal(next),
                    next,
                    kv.is_some_and(|v| self.matcher.same_name(v, key)),
                )
            };
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(Stop::Json(self.pos, "expected ':' after a member name"));
            }
            self.pos += 1;
            self.skip_ws();
            let vstart = self.pos;
            if pii {
                self.pii_value(depth)?;
            } else if kv_hit && self.peek() == Some(b'{') {
                self.object(depth + 1, WRAPPER, None)?;
            } else if kv_hit {
                self.pii_value(depth)?;
            } else {
                self.value(depth, next, false)?;
            }
            if let Some(slot) = slot {
                self.cap.record(slot, &self.src[vstart..self.pos]);
            }
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.skip_ws();
                }
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => {
                    return Err(Stop::Json(
                        self.pos,
                        "expected ',' or '}' after an object member",
                    ))
                }
            }
        }
    }

    fn array(&mut self, depth: usize, state: State, batch: bool) -> Result<(), Stop> {
        if depth > self.max_depth {
            return Err(Stop::TooDeep(self.pos));
        }
        self.pos += 1; // '['
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(());
        }
        // A top-level array is a batch of events: each element is an event root.
        let elem = if batch {
            ROOT
        } else {
            self.matcher.elements(state)
        };
        let pii = self.suppress == 0 && self.matcher.is_terminal(elem);
        let kv = self.suppress == 0 && self.matcher.has_kv();
        let mut element = 0;
        loop {
            if batch {
                self.cap.event(element);
                element += 1;
            }
            if pii {
                self.pii_value(depth)?;
            } else if kv && self.peek() == Some(b'{') {
                let target = kv_target(self.src, self.pos, self.limit, self.matcher);
                self.object(depth + 1, elem, target)?;
            } else {
                self.value(depth, elem, false)?;
            }
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.skip_ws();
                }
                Some(b']') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => {
                    return Err(Stop::Json(
                        self.pos,
                        "expected ',' or ']' after an array element",
                    ))
                }
            }
        }
    }

    /// A PII value at `self.pos` (inside a container at `depth`): validate, hash, replace.
    fn pii_value(&mut self, depth: usize) -> Result<(), Stop> {
        let start = self.pos;
        let digest = match self.peek() {
            Some(b'"') => {
                let escaped = self.string()?;
                let raw = &self.src[start + 1..self.pos - 1];
                if escaped {
                    let mut buf = std::mem::take(&mut self.val_buf);
                    buf.clear();
                    decode_string(raw, &mut buf);
                    let d = self.hasher.digest(&buf);
                    self.val_buf = buf;
                    d
                } else {
                    self.hasher.digest(raw)
                }
            }
            Some(b'n') => return self.literal(b"null"),
            Some(b'{' | b'[') => {
                self.suppress += 1;
                let r = self.value(depth, NONE, false);
                self.suppress -= 1;
                r?;
                let mut buf = std::mem::take(&mut self.val_buf);
                buf.clear();
                compact_into(&self.src[start..self.pos], &mut buf);
                let d = self.hasher.digest(&buf);
                self.val_buf = buf;
                d
            }
            _ => {
                // number, true, false (or an error)
                self.value(depth, NONE, false)?;
                self.hasher.digest(&self.src[start..self.pos])
            }
        };
        if self.find {
            self.found = Some(digest);
            return Err(Stop::Found);
        }
        self.out.extend_from_slice(&self.src[self.copied..start]);
        self.out.push(b'"');
        hex_encode_into(&digest, &mut self.out);
        self.out.push(b'"');
        self.copied = self.pos;
        self.hashed += 1;
        Ok(())
    }

    fn literal(&mut self, lit: &'static [u8]) -> Result<(), Stop> {
        if self.src[self.pos..self.limit].starts_with(lit) {
            self.pos += lit.len();
            Ok(())
        } else {
            Err(Stop::Json(self.pos, "expected true, false or null"))
        }
    }

    fn number(&mut self) -> Result<(), Stop> {
        let s = &self.src[..self.limit];
        let mut i = self.pos;
        if s[i] == b'-' {
            i += 1;
        }
        match s.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => {
                while i < s.len() && s[i].is_ascii_digit() {
                    i += 1;
                }
            }
            _ => return Err(Stop::Json(i, "expected a digit in the number")),
        }
        if s.get(i) == Some(&b'.') {
            i += 1;
            if !s.get(i).is_some_and(u8::is_ascii_digit) {
                return Err(Stop::Json(i, "expected a digit after the decimal point"));
            }
            while i < s.len() && s[i].is_ascii_digit() {
                i += 1;
            }
        }
        if matches!(s.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(s.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            if !s.get(i).is_some_and(u8::is_ascii_digit) {
                return Err(Stop::Json(i, "expected a digit in the exponent"));
            }
            while i < s.len() && s[i].is_ascii_digit() {
                i += 1;
            }
        }
        self.pos = i;
        Ok(())
    }

    /// Validates the string at `self.pos` (on its opening quote), moves past the closing quote,
    /// and says whether it contains escapes.
    fn string(&mut self) -> Result<bool, Stop> {
        let s = &self.src[..self.limit];
        let mut i = self.pos + 1;
        let mut escaped = false;
        loop {
            while i + 8 <= s.len() {
                let w = u64::from_le_bytes(s[i..i + 8].try_into().expect("8 bytes"));
                if word_needs_attention(w) {
                    break;
                }
                i += 8;
            }
            let Some(&b) = s.get(i) else {
                return Err(Stop::Json(self.pos, "the string is not terminated"));
            };
            match b {
                b'"' => {
                    self.pos = i + 1;
                    return Ok(escaped);
                }
                b'\\' => {
                    escaped = true;
                    i = self.escape(i)?;
                }
                0..=0x1f => {
                    return Err(Stop::Json(
                        i,
                        "a control character in a string must be escaped",
                    ))
                }
                _ => i += 1,
            }
        }
    }

    /// Validates the escape at `i` (on the backslash); returns the index after it.
    fn escape(&self, i: usize) -> Result<usize, Stop> {
        escape_end(&self.src[..self.limit], i)
    }
}

/// Validates the escape at `s[i]` (on the backslash) by RFC 8259 (surrogate escapes paired);
/// returns the index after it. Also used by the key/value look-ahead (`kv`), which must hand
/// [`decode_string`] only strings that pass this.
pub(crate) fn escape_end(s: &[u8], i: usize) -> Result<usize, Stop> {
    match s.get(i + 1) {
        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(i + 2),
        Some(b'u') => {
            let cu = read_u4(s, i + 2).ok_or(Stop::Json(i, "expected 4 hex digits after \\u"))?;
            match cu {
                0xD800..=0xDBFF => {
                    if s.get(i + 6) == Some(&b'\\') && s.get(i + 7) == Some(&b'u') {
                        let lo = read_u4(s, i + 8)
                            .ok_or(Stop::Json(i + 6, "expected 4 hex digits after \\u"))?;
                        if (0xDC00..=0xDFFF).contains(&lo) {
                            return Ok(i + 12);
                        }
                    }
                    Err(Stop::Json(
                        i,
                        "a high surrogate escape must be followed by a low surrogate escape",
                    ))
                }
                0xDC00..=0xDFFF => Err(Stop::Json(
                    i,
                    "a low surrogate escape without a high surrogate",
                )),
                _ => Ok(i + 6),
            }
        }
        _ => Err(Stop::Json(i, "invalid escape in a string")),
    }
}

/// Whether `b` is JSON whitespace.
#[inline]
pub(crate) fn is_json_ws(b: u8) -> bool {
    is_ws(b)
}

/// Validates a number's text exactly (RFC 8259 grammar, the whole of `s`).
pub(crate) fn is_number(s: &[u8]) -> bool {
    let mut i = 0;
    if s.first() == Some(&b'-') {
        i += 1;
    }
    match s.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            while i < s.len() && s[i].is_ascii_digit() {
                i += 1;
            }
        }
        _ => return false,
    }
    if s.get(i) == Some(&b'.') {
        i += 1;
        if !s.get(i).is_some_and(u8::is_ascii_digit) {
            return false;
        }
        while i < s.len() && s[i].is_ascii_digit() {
            i += 1;
        }
    }
    if matches!(s.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(s.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !s.get(i).is_some_and(u8::is_ascii_digit) {
            return false;
        }
        while i < s.len() && s[i].is_ascii_digit() {
            i += 1;
        }
    }
    i == s.len()
}

fn read_u4(s: &[u8], i: usize) -> Option<u16> {
    let d = s.get(i..i + 4)?;
    let mut v = 0u16;
    for &b in d {
        v = (v << 4) | hex_val(b)?;
    }
    Some(v)
}

/// Appends the decoded text of a validated string body (between the quotes) to `out`. Total on
/// any input (a bad escape decodes to U+FFFD, a trailing backslash is kept), but only the
/// decoding of validated strings means anything.
pub(crate) fn decode_string(raw: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        let Some(&c) = raw.get(i + 1) else {
            out.push(b);
            break;
        };
        i += 2;
        let ch = match c {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            _ => {
                // 'u', validated: hex digits present, surrogates paired.
                let hi = read_u4(raw, i).unwrap_or(0xFFFD) as u32;
                i += 4;
                let cp = if (0xD800..0xDC00).contains(&hi) {
                    let lo = read_u4(raw, i + 2).unwrap_or(0) as u32;
                    i += 6;
                    if (0xDC00..0xE000).contains(&lo) {
                        0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                    } else {
                        0xFFFD
                    }
                } else {
                    hi
                };
                char::from_u32(cp).unwrap_or('\u{FFFD}')
            }
        };
        let mut tmp = [0u8; 4];
        out.extend_from_slice(ch.encode_utf8(&mut tmp).as_bytes());
    }
}

/// Appends the compact form of a validated JSON value (whitespace between tokens removed) to `out`.
pub(crate) fn compact_into(raw: &[u8], out: &mut Vec<u8>) {
    let mut in_str = false;
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if in_str {
            out.push(b);
            if b == b'\\' {
                out.push(raw[i + 1]);
                i += 2;
                continue;
            }
            if b == b'"' {
                in_str = false;
            }
        } else if b == b'"' {
            in_str = true;
            out.push(b);
        } else if !is_ws(b) {
            out.push(b);
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swar_finds_each_special_byte_in_every_lane() {
        for lane in 0..8 {
            for special in [b'"', b'\\', 0u8, 0x1f] {
                let mut w = [b'a'; 8];
                w[lane] = special;
                assert!(
                    word_needs_attention(u64::from_le_bytes(w)),
                    "{special} at {lane}"
                );
            }
            let mut w = [0xC3u8; 8];
            w[lane] = b' ';
            assert!(!word_needs_attention(u64::from_le_bytes(w)));
        }
        assert!(!word_needs_attention(u64::from_le_bytes(
            *b"abc ~\x7f\x20!"
        )));
    }

    #[test]
    fn decode_string_never_panics_on_unvalidated_text() {
        // The fuzz target's find: the key/value look-ahead handed it `\\A...` strings.
        for raw in [
            &br"\"[..],
            br"a\",
            br"\AAAA\",
            br"\u12",
            br"\ud800\u0041",
            br"\ud800x\",
            br"\uzzzz\",
        ] {
            let mut out = Vec::new();
            decode_string(raw, &mut out);
            assert!(std::str::from_utf8(&out).is_ok(), "{raw:?} -> {out:?}");
        }
    }

    #[test]
    fn decodes_escapes_and_surrogate_pairs() {
        let mut out = Vec::new();
        decode_string(br#"a\"\\\/\b\f\n\r\t\u0075\u00e9\ud83d\ude00"#, &mut out);
        assert_eq!(out, "a\"\\/\u{8}\u{c}\n\r\tu\u{e9}\u{1F600}".as_bytes());
    }

    #[test]
    fn compacts_outside_strings_only() {
        let mut out = Vec::new();
        compact_into(b"{ \"a b\" : [ 1 , \"\\\" x\" ] }", &mut out);
        assert_eq!(out, b"{\"a b\":[1,\"\\\" x\"]}");
    }
}
