//! Key/value shapes (`kv_pairs`): before an object that is an array element is walked, a short
//! look-ahead over its top-level members finds whether its name member (e.g. `"key"`) holds a
//! PII field name, wherever that member sits in the object. Both engines call the same function,
//! so they agree by construction.
//!
//! The look-ahead is tolerant: on anything malformed it answers "no shape" and leaves the
//! refusal to the validating walk that follows.

use crate::matcher::Matcher;
use crate::walker::{decode_string, escape_end, is_json_ws};

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

/// The index after the closing quote of the string opening at `i`; `None` unless the string
/// is valid (escapes as the walker checks them, no raw control character): only such strings
/// go to `decode_string`, which reads escapes without checking them.
fn string_end(s: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    while j < s.len() {
        match s[j] {
            b'"' => return Some(j + 1),
            b'\\' => j = escape_end(s, j).ok()?,
            b if b < 0x20 => return None,
            _ => j += 1,
        }
    }
    None
}

/// The index after the value starting at `i` (skipped, not validated beyond its extent; a
/// string with a bad escape gives `None`, see [`string_end`]).
fn value_end(s: &[u8], i: usize) -> Option<usize> {
    match s.get(i)? {
        b'"' => string_end(s, i),
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
