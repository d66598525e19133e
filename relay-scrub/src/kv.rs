//! Key/value shapes (`kv_pairs`): before an object that is an array element is walked, a short
//! look-ahead over its top-level members finds whether its name member (e.g. `"key"`) holds a
//! PII field name, wherever that member sits in the object. Both engines call the same function,
//! so they agree by construction.
//!
//! The look-ahead is tolerant: on anything malformed it answers "no shape" and leaves the
//! refusal to the validating walk that follows.

use crate::matcher::Matcher;
use crate::walker::{decode_string, is_json_ws};

/// For the object starting at `src[pos] == b'{'` (ending before `limit`), the value member name
/// of the first configured shape whose name member is a string naming one of the policy's
/// fields; `None` otherwise.
pub(crate) fn kv_target<'m>(
    src: &[u8],
    pos: usize,
    limit: usize,
    matcher: &'m Matcher,
) -> Option<&'m [u8]> {
    let s = &src[..limit];
    let mut i = pos + 1;
    let mut key = Vec::new();
    let mut val = Vec::new();
    loop {
        i = skip_ws(s, i);
        match s.get(i)? {
            b'}' => return None,
            b'"' => {}
            _ => return None,
        }
        let kend = string_end(s, i)?;
        key.clear();
        decode_string(&s[i + 1..kend - 1], &mut key);
        i = skip_ws(s, kend);
        if s.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(s, i + 1);
        let vstart = i;
        i = value_end(s, i)?;
        if s[vstart] == b'"' {
            for (name, value) in matcher.kv_shapes() {
                if matcher.same_name(name, &key) {
                    val.clear();
                    decode_string(&s[vstart + 1..i - 1], &mut val);
                    if matcher.is_field(&val) {
                        return Some(value);
                    }
                }
            }
        }
        i = skip_ws(s, i);
        match s.get(i)? {
            b',' => i += 1,
            _ => return None,
        }
    }
}

fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && is_json_ws(s[i]) {
        i += 1;
    }
    i
}

/// The index after the closing quote of the string opening at `i`.
fn string_end(s: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    while j < s.len() {
        match s[j] {
            b'"' => return Some(j + 1),
            b'\\' => j += 2,
            b if b < 0x20 => return None,
            _ => j += 1,
        }
    }
    None
}

/// The index after the value starting at `i` (skipped, not validated beyond its extent; escape
/// sequences must be well formed for `decode_string`, so strings with a bad escape give `None`).
fn value_end(s: &[u8], i: usize) -> Option<usize> {
    match s.get(i)? {
        b'"' => {
            let end = string_end(s, i)?;
            valid_escapes(&s[i + 1..end - 1]).then_some(end)
        }
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < s.len() {
                match s[j] {
                    b'"' => {
                        j = string_end(s, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let mut j = i;
            while j < s.len() && !matches!(s[j], b',' | b'}' | b']') && !is_json_ws(s[j]) {
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

/// Whether every escape in a string body is one `decode_string` can read (no panics on a
/// truncated `\u` at the end).
fn valid_escapes(raw: &[u8]) -> bool {
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' {
            match raw.get(i + 1) {
                Some(b'u') => {
                    if raw.len() < i + 6 || !raw[i + 2..i + 6].iter().all(u8::is_ascii_hexdigit) {
                        return false;
                    }
                    i += 6;
                }
                Some(_) => i += 2,
                None => return false,
            }
        } else {
            i += 1;
        }
    }
    true
}
