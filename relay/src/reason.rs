//! Why a request was not relayed, as one closed set: the machine-readable `code` of relay's
//! JSON errors and the `reason` label of `relay_rejected_requests_total`. Metrics index their
//! counters by it ([`Reason::index`]); the codes that relay-http and relay-scrub define are
//! named here once so that each has its own counter. A leaf: no imports from the crate.

macro_rules! reasons {
    ($($(#[$doc:meta])* $variant:ident => $code:literal,)*) => {
        /// One rejection reason. `as_str()` is the wire code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($(#[$doc])* $variant,)*
        }

        impl Reason {
            /// Every reason, in label order (the index of each is [`Reason::index`]).
            pub const ALL: &'static [Reason] = &[$(Reason::$variant,)*];

            /// The snake_case code (`no_route`).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$variant => $code,)*
                }
            }

            /// The reason a code names (codes of relay-http's and relay-scrub's errors);
            /// [`Reason::Other`] for a code this list does not know.
            pub fn from_code(code: &str) -> Reason {
                match code {
                    $($code => Reason::$variant,)*
                    _ => Reason::Other,
                }
            }
        }
    };
}

reasons! {
    /// 431: the request line and headers are larger than `max_header_bytes`.
    RequestHeaderTooLarge => "request_header_too_large",
    /// 431: more than `max_headers` headers.
    TooManyHeaders => "too_many_headers",
    /// 413: the body is larger than `max_body_bytes` (or its Kafka record too large).
    PayloadTooLarge => "payload_too_large",
    /// 408: the head or the body did not arrive in time.
    RequestTimeout => "request_timeout",
    /// The client closed the connection before the whole body (nothing answered).
    IncompleteBody => "incomplete_body",
    /// 400: not HTTP/1.1 request syntax.
    MalformedRequest => "malformed_request",
    /// 400: a line ended with LF alone.
    BareLf => "bare_lf",
    /// 400: a CR not followed by LF.
    BareCr => "bare_cr",
    /// 400: a byte not allowed in a header value.
    InvalidHeaderValue => "invalid_header_value",
    /// 400: the request target is not origin-form.
    InvalidTarget => "invalid_target",
    /// 400: a chunk-size line longer than `max_chunk_line_bytes`.
    ChunkLineTooLarge => "chunk_line_too_large",
    /// 400: a trailer section larger than `max_trailer_bytes`.
    TrailerTooLarge => "trailer_too_large",
    /// 400: no `Host` header.
    MissingHost => "missing_host",
    /// 400: more than one `Host`, or an invalid one.
    InvalidHost => "invalid_host",
    /// 400: both `Content-Length` and `Transfer-Encoding`.
    ConflictingFraming => "conflicting_framing",
    /// 400: `Content-Length` values that differ.
    ConflictingContentLength => "conflicting_content_length",
    /// 400: more than one `Content-Type`.
    ConflictingContentType => "conflicting_content_type",
    /// 400: a `Content-Length` that is not a number.
    InvalidContentLength => "invalid_content_length",
    /// 400 (501 semantics): a transfer coding other than chunked.
    UnsupportedTransferEncoding => "unsupported_transfer_encoding",
    /// 400: chunked framing that does not parse.
    InvalidChunk => "invalid_chunk",
    /// 417: an `Expect` other than `100-continue`.
    ExpectationFailed => "expectation_failed",
    /// 404: no route for the path (and host).
    NoRoute => "no_route",
    /// 405: the route does not take the method.
    MethodNotAllowed => "method_not_allowed",
    /// 400: the body is not valid JSON.
    InvalidJson => "invalid_json",
    /// 400: the body is not UTF-8.
    InvalidUtf8 => "invalid_utf8",
    /// 400: JSON nested deeper than the policy's `max_depth`.
    TooDeep => "too_deep",
    /// 415: a content type (or charset) the policy cannot read.
    UnsupportedMediaType => "unsupported_media_type",
    /// 415: a content coding relay cannot decode.
    UnsupportedContentEncoding => "unsupported_content_encoding",
    /// 400: a zero-length JSON body.
    EmptyBody => "empty_body",
    /// 400: the path matches a `path_params` pattern only once normalised.
    AmbiguousPath => "ambiguous_path",
    /// 422: the egress guard found PII it must not forward.
    PiiDetected => "pii_detected",
    /// 503: the Kafka queue is full.
    KafkaBackpressure => "kafka_backpressure",
    /// 503: Kafka cannot take the original (blocked topic, no acknowledgement).
    KafkaUnavailable => "kafka_unavailable",
    /// 503: the spool is at `max_bytes`.
    SpoolFull => "spool_full",
    /// 503: the spool cannot write.
    SpoolUnavailable => "spool_unavailable",
    /// A new connection shed at accept time under overload (closed, nothing answered).
    Overloaded => "overloaded",
    /// 502: no node of the upstream accepted a connection.
    UpstreamUnreachable => "upstream_unreachable",
    /// 502: the upstream closed the connection before a whole response.
    UpstreamReset => "upstream_reset",
    /// 504: an upstream deadline passed.
    UpstreamTimeout => "upstream_timeout",
    /// 502: the upstream's response is not valid HTTP/1.1, or too large.
    UpstreamBadResponse => "upstream_bad_response",
    /// 502: TLS to the upstream failed.
    UpstreamTls => "upstream_tls",
    /// 503: no free upstream connection within `queue_timeout_ms`.
    UpstreamBusy => "upstream_busy",
    /// 503: the upstream's circuit breaker is open (failing fast).
    UpstreamUnavailable => "upstream_unavailable",
    /// 500: relay failed while handling the request.
    InternalError => "internal_error",
    /// 401: credentials missing or refused on a route with `auth`.
    Unauthorized => "unauthorized",
    /// 403: a consumer the route does not list.
    Forbidden => "forbidden",
    /// 429: a `rate` limit of the consumer or the route.
    RateLimited => "rate_limited",
    /// 429: a `quota` of the consumer or the route.
    QuotaExceeded => "quota_exceeded",
    /// 422: events of one request go to different destinations (payload rules, splits).
    MixedDestinations => "mixed_destinations",
    /// 400: a compressed body that does not decode (corrupt, truncated, bytes after its end).
    InvalidEncoding => "invalid_encoding",
    /// 413: a compressed body that decodes to more than the route's `max_decoded_bytes`.
    DecodedBodyTooLarge => "decoded_body_too_large",
    /// 413: a compressed body that expands more than the route's `max_expansion_ratio`.
    ExpansionRatioExceeded => "expansion_ratio_exceeded",
    /// A code this list does not know (counted, never expected).
    Other => "other",
}

impl Reason {
    /// The position of this reason in [`Reason::ALL`], for counter arrays.
    #[inline]
    pub const fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_is_the_position_and_codes_round_trip() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            assert_eq!(Reason::from_code(r.as_str()), *r);
        }
        assert_eq!(Reason::from_code("no_such_code"), Reason::Other);
    }
}
