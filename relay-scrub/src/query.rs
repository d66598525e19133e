//! PII in query strings: the values of listed parameters are replaced by their pseudonyms; every
//! other byte (order, separators, other parameters, their encoding) is kept.
//!
//! Names and values are decoded as `application/x-www-form-urlencoded` (`+` is a space, `%XX` a
//! byte, a malformed `%` kept literally) before comparing/hashing, so `uid=a%40b.c` hashes
//! `a@b.c`, the same as `"uid": "a@b.c"` in a body. A parameter without `=` has no value and is
//! kept as is; `uid=` hashes the empty string.
//!
//! Options ([`QueryOptions`]): `;` as a separator besides `&`, and `name[]` matching a `name`
//! rule (the brackets are kept in the output).

use crate::hashing::Hasher;

/// How parameters are split and named.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct QueryOptions {
    /// `;` separates parameters as well as `&`.
    pub(crate) semicolon: bool,
    /// `name[]` matches a `name` rule.
    pub(crate) brackets: bool,
}

/// Percent-decodes `s` (form encoding) into `out` (cleared first).
pub(crate) fn form_decode_into(s: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let h = s.get(i + 1).and_then(|&b| (b as char).to_digit(16));
                let l = s.get(i + 2).and_then(|&b| (b as char).to_digit(16));
                match (h, l) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                    }
                    _ => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
}

/// Replaces the values of the parameters named in `names` (decoded) by their pseudonyms;
/// `None` when no listed parameter with a value is present. Also returns how many were hashed.
pub(crate) fn scrub_query(
    query: &str,
    names: &[Box<[u8]>],
    hasher: &Hasher,
    opts: QueryOptions,
) -> Option<(String, u64)> {
    if names.is_empty() {
        return None;
    }
    let q = query.as_bytes();
    let mut out: Vec<u8> = Vec::new();
    let mut copied = 0;
    let mut hashed = 0;
    let mut buf = Vec::new();
    let mut start = 0;
    while start <= q.len() {
        let end = q[start..]
            .iter()
            .position(|&b| b == b'&' || (opts.semicolon && b == b';'))
            .map_or(q.len(), |p| start + p);
        let pair = &q[start..end];
        if let Some(eq) = pair.iter().position(|&b| b == b'=') {
            form_decode_into(&pair[..eq], &mut buf);
            let name: &[u8] = match buf.strip_suffix(b"[]") {
                Some(n) if opts.brackets => n,
                _ => &buf,
            };
            if names.iter().any(|n| **n == *name) {
                let vstart = start + eq + 1;
                form_decode_into(&q[vstart..end], &mut buf);
                if out.is_empty() {
                    out.reserve(q.len() + 64);
                }
                out.extend_from_slice(&q[copied..vstart]);
                hasher.hex_into(&buf, &mut out);
                copied = end;
                hashed += 1;
            }
        }
        start = end + 1;
    }
    if hashed == 0 {
        return None;
    }
    out.extend_from_slice(&q[copied..]);
    // Only ASCII hex was inserted between UTF-8 slices cut at ASCII '=' and '&'.
    Some((String::from_utf8(out).expect("UTF-8 in, UTF-8 out"), hashed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_listed_values_and_keeps_everything_else() {
        let h = Hasher::Sha256;
        let names: Vec<Box<[u8]>> = vec![b"uid".as_slice().into(), b"e mail".as_slice().into()];
        let d = QueryOptions::default();
        let (q, n) =
            scrub_query("a=1&uid=a%40b.c&b=%zz&e+mail=x+y&uid&uid=", &names, &h, d).unwrap();
        assert_eq!(n, 3);
        assert_eq!(
            q,
            format!(
                "a=1&uid={}&b=%zz&e+mail={}&uid&uid={}",
                h.hex(b"a@b.c"),
                h.hex(b"x y"),
                h.hex(b"")
            )
        );
        assert_eq!(scrub_query("a=1&b=2", &names, &h, d), None);
        assert_eq!(scrub_query("", &names, &h, d), None);
    }

    #[test]
    fn semicolons_and_brackets_only_with_the_options() {
        let h = Hasher::Sha256;
        let names: Vec<Box<[u8]>> = vec![b"uid".as_slice().into()];
        let off = QueryOptions::default();
        let on = QueryOptions {
            semicolon: true,
            brackets: true,
        };
        // Off: `;` is part of the value of `a`, `uid[]` is another name.
        assert_eq!(scrub_query("a=1;uid=x", &names, &h, off), None);
        assert_eq!(scrub_query("uid[]=x&uid%5B%5D=y", &names, &h, off), None);
        let (q, n) = scrub_query("a=1;uid=x&uid[]=y;uid%5B%5D=z", &names, &h, on).unwrap();
        assert_eq!(n, 3);
        assert_eq!(
            q,
            format!(
                "a=1;uid={}&uid[]={};uid%5B%5D={}",
                h.hex(b"x"),
                h.hex(b"y"),
                h.hex(b"z")
            )
        );
    }

    #[test]
    fn malformed_percent_is_literal() {
        let mut out = Vec::new();
        form_decode_into(b"%4%41%", &mut out);
        assert_eq!(out, b"%4A%");
    }
}
