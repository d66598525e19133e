//! PII in URL path segments (`path_params`): route patterns such as `/users/{user_id}/events`
//! whose `{name}` segments are replaced by their pseudonyms in the forwarded target; every other
//! byte of the path is kept.
//!
//! A pattern matches a path with the same number of `/`-separated segments whose literal
//! segments are equal byte for byte (no decoding, case kept) and whose `{name}` segments are not
//! empty. The first matching pattern applies. A segment is hashed as its percent-decoded bytes
//! (`%40` is `@`; `+` stays `+`, as RFC 3986 paths have no form encoding), so `/users/a%40b/x`
//! and `"user_id": "a@b"` give the same pseudonym. The query string is not part of the path.
//!
//! A path that matches no pattern as sent, but would match one once normalised the way many
//! upstream servers normalise (percent-decoded, `\` as `/`, empty and `.` segments dropped,
//! `..` resolved, literals compared without ASCII case: `/users/u-1//events`,
//! `/users/u-1/events/`, `/Users/u-1/events`, `/users%2Fu-1/events`), is refused
//! ([`PathRefused`]): its PII segment could reach the upstream's handler unhashed.

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
    /// The pattern as configured (for messages).
    text: String,
}

/// A path refused because it matches `pattern` only once normalised (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PathRefused {
    /// The pattern as configured.
    pub(crate) pattern: String,
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
        Ok(PathPattern {
            segs,
            text: p.to_string(),
        })
    }

    /// Whether some request path that a route with `route_path` (`prefix`: any path starting
    /// with it; else exactly it) takes can match this pattern.
    pub(crate) fn reachable_from(&self, route_path: &str, prefix: bool) -> bool {
        if !prefix {
            return self.matches(route_path.as_bytes());
        }
        let Some(rest) = route_path.strip_prefix('/') else {
            return false;
        };
        let parts: Vec<&[u8]> = rest.as_bytes().split(|&b| b == b'/').collect();
        let Some((last, whole)) = parts.split_last() else {
            return false;
        };
        if whole.len() >= self.segs.len() {
            return false;
        }
        let fits = |seg: &Seg, s: &[u8], partial: bool| match seg {
            Seg::Literal(l) if partial => l.starts_with(s),
            Seg::Literal(l) => **l == *s,
            Seg::Param => partial || !s.is_empty(),
        };
        whole
            .iter()
            .zip(&self.segs)
            .all(|(s, seg)| fits(seg, s, false))
            && fits(&self.segs[whole.len()], last, true)
    }

    /// Whether the normalised segments `norm` match (literals without ASCII case).
    fn loosely_matches(&self, norm: &[Vec<u8>]) -> bool {
        norm.len() == self.segs.len()
            && norm.iter().zip(&self.segs).all(|(s, seg)| match seg {
                Seg::Literal(l) => l.eq_ignore_ascii_case(s),
                Seg::Param => !s.is_empty(),
            })
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

/// `path` as an upstream server that normalises would see it: percent-decoded, `\` read as
/// `/`, empty and `.` segments dropped, `..` removing the segment before it.
fn normalise(path: &[u8]) -> Vec<Vec<u8>> {
    let mut decoded = Vec::with_capacity(path.len());
    percent_decode_into(path, &mut decoded);
    let mut out: Vec<Vec<u8>> = Vec::new();
    for s in decoded.split(|&b| b == b'/' || b == b'\\') {
        match s {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            s => out.push(s.to_vec()),
        }
    }
    out
}

/// The path with the parameter segments of the first matching pattern hashed, and how many were
/// hashed; `Ok(None)` when no pattern matches, even once normalised; [`PathRefused`] when only
/// the normalised path matches.
pub(crate) fn scrub_path(
    path: &str,
    patterns: &[PathPattern],
    hasher: &Hasher,
) -> Result<Option<(String, u64)>, PathRefused> {
    let p = path.as_bytes();
    let Some(pat) = patterns.iter().find(|pat| pat.matches(p)) else {
        let norm = normalise(p);
        return match patterns.iter().find(|pat| pat.loosely_matches(&norm)) {
            Some(pat) => Err(PathRefused {
                pattern: pat.text.clone(),
            }),
            None => Ok(None),
        };
    };
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
    Ok(String::from_utf8(out).ok().map(|s| (s, hashed)))
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
        let (out, n) = scrub_path("/users/u-1/events", &p, &h).unwrap().unwrap();
        assert_eq!((out, n), (format!("/users/{}/events", h.hex(b"u-1")), 1));
        let (out, n) = scrub_path("/d/a%40b/7", &p, &h).unwrap().unwrap();
        assert_eq!(out, format!("/d/{}/{}", h.hex(b"a@b"), h.hex(b"7")));
        assert_eq!(n, 2);
        for miss in [
            "/users/u-1",
            "/users/u-1/events/x",
            "/users//events",
            "/",
            "",
        ] {
            assert_eq!(scrub_path(miss, &p, &h), Ok(None), "{miss}");
        }
        // `+` is not a space in a path; a malformed escape is hashed as written; an encoded
        // slash inside a parameter segment is part of its value.
        let (out, _) = scrub_path("/users/a+b%4/events", &p, &h).unwrap().unwrap();
        assert_eq!(out, format!("/users/{}/events", h.hex(b"a+b%4")));
        let (out, _) = scrub_path("/users/a%2Fb/events", &p, &h).unwrap().unwrap();
        assert_eq!(out, format!("/users/{}/events", h.hex(b"a/b")));
    }

    #[test]
    fn paths_that_match_only_once_normalised_are_refused() {
        let h = Hasher::Sha256;
        let p = pats(&["/users/{user_id}/events"]);
        for hostile in [
            "/users/u-1//events",
            "//users/u-1/events",
            "/users/u-1/events/",
            "/Users/u-1/EVENTS",
            "/users%2Fu-1/events",
            "/users%2fu-1%2Fevents",
            "/users/u-1/./events",
            "/users/x/../u-1/events",
            "/users\\u-1/events",
        ] {
            assert_eq!(
                scrub_path(hostile, &p, &h),
                Err(PathRefused {
                    pattern: "/users/{user_id}/events".into()
                }),
                "{hostile}"
            );
        }
        assert_eq!(scrub_path("/users/u-1/other", &p, &h), Ok(None));
    }

    #[test]
    fn reachability_from_a_route() {
        let p = PathPattern::parse("/users/{user_id}/events").unwrap();
        for (route, prefix, want) in [
            ("/users/me/events", false, true),
            ("/v1/logs", false, false),
            ("/users/", true, true),
            ("/us", true, true),
            ("/", true, true),
            ("/users/x/", true, true),
            ("/users/x/ev", true, true),
            ("/users/x/events/", true, false),
            ("/v1/", true, false),
            ("/users/x/other", true, false),
        ] {
            assert_eq!(p.reachable_from(route, prefix), want, "{route} {prefix}");
        }
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
