//! What was wrong with an HTTP message, typed, with the data a caller needs to answer well.
//!
//! The same errors describe a client's request and an upstream's response; the caller decides
//! what each means for its side (a 4xx to the client, a 502 for an upstream).

/// Why a head or a body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// The head (start line + fields) is longer than the limit, in bytes.
    #[error("the head is larger than {limit} bytes")]
    HeadTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// More header fields than the limit.
    #[error("the head has more than {limit} header fields")]
    TooManyHeaders {
        /// The limit, in fields.
        limit: usize,
    },
    /// The decoded body would exceed the limit, in bytes.
    #[error("the body is larger than {limit} bytes")]
    BodyTooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// A chunk-size line (size and extensions) is longer than the limit, in bytes.
    #[error("a chunk-size line with its extensions is longer than {limit} bytes")]
    ChunkLineTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The trailer section is larger than the limit, in bytes.
    #[error("the trailer section is larger than {limit} bytes")]
    TrailerTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// More interim (1xx) responses before the final one than allowed.
    #[error("more than {limit} interim 1xx responses in a row")]
    TooManyInterim {
        /// The limit, in responses.
        limit: usize,
    },
    /// The connection ended before the whole message arrived.
    #[error("the connection ended before the whole message arrived")]
    Incomplete,
    /// `Expect` with anything but `100-continue`.
    #[error("Expect: {value:?} is not supported; only 100-continue is")]
    ExpectationFailed {
        /// The value sent, lower case.
        value: String,
    },
    /// A syntax or framing violation. `code` is a stable snake_case reason for clients and
    /// metrics; `detail` says what was wrong and what to do.
    #[error("{detail}")]
    Invalid {
        /// snake_case reason, e.g. `bare_lf`, `conflicting_framing`.
        code: &'static str,
        /// What was wrong and what to do, for people.
        detail: String,
    },
}

impl HttpError {
    /// A syntax or framing violation.
    pub fn invalid(code: &'static str, detail: impl Into<String>) -> HttpError {
        HttpError::Invalid {
            code,
            detail: detail.into(),
        }
    }

    /// The stable snake_case code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            HttpError::HeadTooLarge { .. } => "request_header_too_large",
            HttpError::TooManyHeaders { .. } => "too_many_headers",
            HttpError::BodyTooLarge { .. } => "payload_too_large",
            HttpError::ChunkLineTooLarge { .. } => "chunk_line_too_large",
            HttpError::TrailerTooLarge { .. } => "trailer_too_large",
            HttpError::TooManyInterim { .. } => "too_many_interim_responses",
            HttpError::Incomplete => "incomplete_body",
            HttpError::ExpectationFailed { .. } => "expectation_failed",
            HttpError::Invalid { code, .. } => code,
        }
    }
}
