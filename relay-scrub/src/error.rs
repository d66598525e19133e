//! Why a body, query or header was refused by a PII policy: always the client's fault, never
//! forwarded, and never echoing any byte of the refused content.

/// Why a body (or query, or header) was refused: the client's fault, never forwarded.
///
/// `message` never contains bytes of the body: only positions (byte offsets, line numbers) and
/// what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ScrubError {
    /// Machine-readable reason, snake_case: `invalid_json`, `invalid_utf8`, `too_deep`,
    /// `empty_body`, `unsupported_media_type` (also for a charset other than UTF-8),
    /// `unsupported_content_encoding`, `pii_detected` (the egress guard), `ambiguous_path` (a
    /// path that matches a `path_params` pattern only once normalised).
    pub code: &'static str,
    /// HTTP status: 400, 415 for the media type (or charset) and the content coding, 422 for
    /// `pii_detected`.
    pub status: u16,
    /// What was wrong and what to do.
    pub message: String,
    /// For `pii_detected`: the egress guard detector that refused (for per-detector metrics);
    /// `None` otherwise.
    pub detector: Option<String>,
}

impl ScrubError {
    /// A 400 with `code`.
    pub(crate) fn bad_request(code: &'static str, message: String) -> ScrubError {
        ScrubError {
            code,
            status: 400,
            message,
            detector: None,
        }
    }

    /// A 415 with `code`.
    pub(crate) fn unsupported(code: &'static str, message: String) -> ScrubError {
        ScrubError {
            code,
            status: 415,
            message,
            detector: None,
        }
    }

    /// `invalid_json` at byte `offset` of the body (`line` for NDJSON, 1-based).
    pub(crate) fn invalid_json(offset: usize, line: Option<usize>, what: &str) -> ScrubError {
        let place = match line {
            Some(l) => format!("line {l} (byte {offset})"),
            None => format!("byte {offset}"),
        };
        ScrubError::bad_request(
            "invalid_json",
            format!(
                "the body is not valid JSON at {place}: {what}; send RFC 8259 JSON \
                 (one value, or one value per line for application/x-ndjson)"
            ),
        )
    }

    /// `too_deep` at byte `offset`.
    pub(crate) fn too_deep(offset: usize, line: Option<usize>, max_depth: usize) -> ScrubError {
        let place = match line {
            Some(l) => format!("line {l} (byte {offset})"),
            None => format!("byte {offset}"),
        };
        ScrubError::bad_request(
            "too_deep",
            format!(
                "the body nests objects/arrays deeper than {max_depth} levels at {place}; \
                 flatten the events or raise max_depth in the route's [pii] policy"
            ),
        )
    }

    /// 422 `pii_detected`: the egress guard's detector `detector` matched at `place` (a JSON
    /// path, `query.NAME` or `header.NAME`). Never the value.
    pub(crate) fn pii_detected(detector: &str, place: &str) -> ScrubError {
        ScrubError {
            code: "pii_detected",
            status: 422,
            message: format!(
                "the egress guard's {detector} detector found personal data at {place}, which the \
                 policy refuses to forward; remove it from the event or list the field in the policy \
                 so it is pseudonymised"
            ),
            detector: Some(detector.to_string()),
        }
    }

    /// `invalid_utf8` at byte `offset`.
    pub(crate) fn invalid_utf8(offset: usize) -> ScrubError {
        ScrubError::bad_request(
            "invalid_utf8",
            format!("the body is not valid UTF-8 at byte {offset}; send JSON encoded as UTF-8"),
        )
    }
}
