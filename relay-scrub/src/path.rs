//! PII in URL path segments (`path_params`): route patterns such as `/users/{user_id}/events`
//! whose `{name}` segments are replaced by their pseudonyms in the forwarded target; every other
//! byte of the path is kept.
//!
//! A pattern matches a path with the same number of `/`-separated segments whose literal
//! segments are equal byte for byte (no decoding, case kept) and whose `{name}` segments are not
//! empty. The first matching pattern applies. A segment is hashed as its percent-decoded bytes
//! (`%40` is `@`; `+` stays `+`, as RFC 3986 paths have no form encoding), so `/users/a%40b/x`
//! and `"user_id": "a@b"` give the same pseudonym. The query string is not part of the path.

use crate::hashing::Hasher;

/// One segment of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    /// Must equal this segment.
    Literal(Box<[u8]>),
    /// Any non-empty segment, hashed.
    Param,
}

/// A compiled `path_params` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PathPattern {
    segs: Vec<Seg>,
}

impl PathPattern {
    /// Compiles `/a/{name}/b`; the message says what is wrong and what to write instead.
    pub(crate) fn parse(p: &str) -> Result<PathPattern, String> {
        let usage = "write a path from '/' with {name} for each segment to hash, e.g. \"/users/{user_id}/events\"";
        let Some(rest) = p.strip_prefix('/') else {
            return Err(format!("{p:?} must start with '/'; {usage}"));
        };
        let mut segs = Vec::new();
        let mut params = 0;
        for s in rest.split('/') {
            if let Some(name) = s.strip_prefix('{').and_then(|n| n.strip_suffix('}')) {
                if name.is_empty()
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
                {
                    return Err(format!(
                        "{p:?} has an invalid parameter {s:?}: name it with A-Z a-z 0-9 _ . -; {usage}"
                    ));
                }
                params += 1;
                segs.push(Seg::Param);
            } else if s.contains('{') || s.contains('}') || s.contains('?') || s.contains('#') {
                return Err(format!(
                    "{p:?} has an invalid segment {s:?}: a parameter is a whole segment, and '?' or '#' end a path; {usage}"
                ));
            } else {
                segs.push(Seg::Literal(s.as_bytes().into()));
            }
        }
        if params == 0 {
            return Err(format!(
                "{p:?} names no {{parameter}}, so it would hash nothing; {usage}"
            ));
        }
        Ok(PathPattern { segs })
    }

    /// Whether `path` (from its leading `/`, without the query) matches.
    fn matches(&self, path: &[u8]) -> bool {
        let Some(rest) = path.strip_prefix(b"/") else {
            return false;
        };
        let mut n = 0;
        for (i, s) in rest.split(|&b| b == b'/').enumerate() {
            n = i + 1;
            match self.segs.get(i) {
                None => return false,
                Some(Seg::Literal(l)) if **l != *s => return false,
                Some(Seg::Param) if s.is_empty() => return false,
                Some(_) => {}
            }
        }
        n == self.segs.len()
    }
}

/// Percent-decodes a path segment (a malformed `%` kept literally) into `out` (cleared first).
fn percent_decode_into(s: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let h = s.get(i + 1).and_then(|&b| (b as char).to_digit(16));
            let l = s.get(i + 2).and_then(|&b| (b as char).to_digit(16));
            if let (Some(h), Some(l)) = (h, l) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
}

/// The path with the parameter segments of the first matching pattern hashed, and how many were
/// hashed; `None` when no pattern matches.
pub(crate) fn scrub_path(
    path: &str,
    patterns: &[PathPattern],
    hasher: &Hasher,
) -> Option<(String, u64)> {
    let p = path.as_bytes();
    let pat = patterns.iter().find(|pat| pat.matches(p))?;
    let mut out = Vec::with_capacity(p.len() + 64 * pat.segs.len());
    let mut buf = Vec::new();
    let mut hashed = 0;
    for (s, seg) in p[1..].split(|&b| b == b'/').zip(&pat.segs) {
        out.push(b'/');
        match seg {
            Seg::Literal(_) => out.extend_from_slice(s),
            Seg::Param => {
                percent_decode_into(s, &mut buf);
                hasher.hex_into(&buf, &mut out);
                hashed += 1;
            }
        }
    }
    // Pseudonyms are hex and every other byte came from `path`.
    String::from_utf8(out).ok().map(|s| (s, hashed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pats(ps: &[&str]) -> Vec<PathPattern> {
        ps.iter().map(|p| PathPattern::parse(p).unwrap()).collect()
    }

    #[test]
    fn hashes_only_matching_parameter_segments() {
        let h = Hasher::Sha256;
        let p = pats(&["/users/{user_id}/events", "/d/{device_id}/{order_no}"]);
        let (out, n) = scrub_path("/users/u-1/events", &p, &h).unwrap();
        assert_eq!((out, n), (format!("/users/{}/events", h.hex(b"u-1")), 1));
        let (out, n) = scrub_path("/d/a%40b/7", &p, &h).unwrap();
        assert_eq!(out, format!("/d/{}/{}", h.hex(b"a@b"), h.hex(b"7")));
        assert_eq!(n, 2);
        for miss in [
            "/users/u-1",
            "/users/u-1/events/x",
            "/users//events",
            "/Users/u-1/events",
            "/users/u-1/events/",
            "users/u-1/events",
            "/",
            "",
        ] {
            assert_eq!(scrub_path(miss, &p, &h), None, "{miss}");
        }
        // `+` is not a space in a path; a malformed escape is hashed as written.
        let (out, _) = scrub_path("/users/a+b%4/events", &p, &h).unwrap();
        assert_eq!(out, format!("/users/{}/events", h.hex(b"a+b%4")));
    }

    #[test]
    fn patterns_are_checked() {
        for bad in [
            "users/{id}",
            "/users/x{id}",
            "/users/{}",
            "/users/{a b}",
            "/users/id",
            "/users/{id}?x",
        ] {
            assert!(PathPattern::parse(bad).is_err(), "{bad}");
        }
        assert!(PathPattern::parse("/{id}").is_ok());
    }
}
