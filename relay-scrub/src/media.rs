//! Which bodies the scrubber accepts: JSON and NDJSON media types (UTF-8 only), identity coding.
//!
//! - `application/json`, `application/*+json` and `text/json`: one JSON value.
//! - `application/x-ndjson`, `application/ndjson`, `application/jsonl`, `application/x-jsonlines`:
//!   one JSON value per `\n`-terminated line; blank lines are kept as they are.
//! - No `Content-Type` at all: treated as `application/json` (apps that forget the header still
//!   get scrubbed, never passed through).
//! - A `charset` parameter other than UTF-8 is refused (415 `unsupported_media_type`).
//! - Any `Content-Encoding` other than `identity` is refused (415 `unsupported_content_encoding`,
//!   RFC 9110 §15.5.16): the scrubber cannot see PII inside a compressed body. relay decodes
//!   gzip, deflate and zstd bodies itself before scrubbing (`relay::coding`) and passes the
//!   decoded body as identity.

use crate::error::ScrubError;

/// How a body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// One JSON value.
    Json,
    /// One JSON value per line.
    Ndjson,
}

/// Classifies `content_type` (absent = JSON).
pub fn body_kind(content_type: Option<&str>) -> Result<BodyKind, ScrubError> {
    let Some(ct) = content_type else {
        return Ok(BodyKind::Json);
    };
    let mut parts = ct.split(';');
    let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let kind = match essence.as_str() {
        "application/json" | "text/json" => BodyKind::Json,
        "application/x-ndjson"
        | "application/ndjson"
        | "application/jsonl"
        | "application/x-jsonlines" => BodyKind::Ndjson,
        e if e.starts_with("application/") && e.ends_with("+json") => BodyKind::Json,
        _ => {
            return Err(ScrubError::unsupported(
                "unsupported_media_type",
                format!(
                "Content-Type {:?} cannot be scrubbed; send application/json (one JSON value) or \
                     application/x-ndjson (one JSON value per line)",
                truncate(ct)
            ),
            ))
        }
    };
    for param in parts {
        let Some((name, value)) = param.split_once('=') else {
            continue;
        };
        if name.trim().eq_ignore_ascii_case("charset") {
            let v = value.trim().trim_matches('"');
            if !v.eq_ignore_ascii_case("utf-8") && !v.eq_ignore_ascii_case("utf8") {
                return Err(ScrubError::unsupported(
                    "unsupported_media_type",
                    format!(
                        "charset {:?} is not supported; send the body as UTF-8 (charset=utf-8)",
                        truncate(v)
                    ),
                ));
            }
        }
    }
    Ok(kind)
}

/// Accepts no `Content-Encoding` or `identity`, refuses everything else.
pub fn check_encoding(content_encoding: Option<&str>) -> Result<(), ScrubError> {
    match content_encoding.map(str::trim) {
        None | Some("") => Ok(()),
        Some(e) if e.eq_ignore_ascii_case("identity") => Ok(()),
        Some(e) => Err(ScrubError::unsupported(
            "unsupported_content_encoding",
            format!(
                "Content-Encoding {:?} is not supported: relay must read the body to remove PII; \
                 send it uncompressed (no Content-Encoding)",
                truncate(e)
            ),
        )),
    }
}

/// Header values are echoed in errors only up to 64 bytes.
fn truncate(s: &str) -> &str {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        assert_eq!(body_kind(None), Ok(BodyKind::Json));
        assert_eq!(body_kind(Some("application/json")), Ok(BodyKind::Json));
        assert_eq!(
            body_kind(Some("Application/JSON; charset=UTF-8")),
            Ok(BodyKind::Json)
        );
        assert_eq!(
            body_kind(Some("application/vnd.acme.event+json")),
            Ok(BodyKind::Json)
        );
        assert_eq!(
            body_kind(Some("application/x-ndjson")),
            Ok(BodyKind::Ndjson)
        );
        let e = body_kind(Some("text/plain")).unwrap_err();
        assert_eq!((e.status, e.code), (415, "unsupported_media_type"));
        let e = body_kind(Some("application/json; charset=latin1")).unwrap_err();
        assert_eq!((e.status, e.code), (415, "unsupported_media_type"));
    }

    #[test]
    fn encodings() {
        assert!(check_encoding(None).is_ok());
        assert!(check_encoding(Some("identity")).is_ok());
        let e = check_encoding(Some("gzip")).unwrap_err();
        assert_eq!((e.status, e.code), (415, "unsupported_content_encoding"));
    }
}
