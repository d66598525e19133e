//! Why a request was not forwarded or failed, whose fault it was, and the one mapping from that
//! to the HTTP status and machine-readable code the client sees.

use std::time::Duration;

use crate::scrub::ScrubError;

/// Whose fault a failure was (a metrics label and a log field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The client sent something wrong.
    Client,
    /// The upstream was unreachable, slow or broken.
    Upstream,
    /// The Kafka path could not take the original.
    Kafka,
    /// relay itself is overloaded or broken.
    Internal,
}

/// Everything that can stop a request short of relaying the upstream's response.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RequestError {
    /// Request line + headers larger than the limit.
    #[error("the request line and headers are larger than {limit} bytes; send smaller headers")]
    HeaderTooLarge {
        /// Limit in bytes.
        limit: usize,
    },
    /// More header fields than the limit.
    #[error("the request has more than {limit} header fields; send fewer headers")]
    TooManyHeaders {
        /// Limit in fields.
        limit: usize,
    },
    /// Body larger than the limit.
    #[error(
        "the request body is larger than {limit} bytes; split the batch into smaller requests"
    )]
    BodyTooLarge {
        /// Limit in bytes.
        limit: usize,
    },
    /// The head did not arrive in time.
    #[error("the request head did not arrive within {0:?}; send the whole head promptly")]
    HeaderTimeout(Duration),
    /// The body did not arrive in time.
    #[error("the request body did not arrive within {0:?}; send the whole body promptly")]
    BodyTimeout(Duration),
    /// The connection closed in the middle of the body.
    #[error("the connection closed before the whole body arrived")]
    BodyIncomplete,
    /// Not valid HTTP/1.1 framing or syntax.
    #[error("{detail}")]
    Malformed {
        /// snake_case reason.
        code: &'static str,
        /// What was wrong and what to do.
        detail: String,
    },
    /// An `Expect` other than `100-continue`.
    #[error("Expect: {value:?} is not supported; only 100-continue is")]
    ExpectationFailed {
        /// The value sent.
        value: String,
    },
    /// No route for this path (and host).
    #[error("no route matches {method} {path}; check the URL against relay's configured routes")]
    NoRoute {
        /// Request method.
        method: String,
        /// Request path.
        path: String,
    },
    /// A route has the path but not the method.
    #[error("{method} is not allowed on {path}; use one of the route's methods")]
    MethodNotAllowed {
        /// Request method.
        method: String,
        /// Request path.
        path: String,
    },
    /// The body (or query or header) failed the PII policy: never forwarded.
    #[error(transparent)]
    Scrub(#[from] ScrubError),
    /// The Kafka queue is full: the original cannot be kept, so nothing is forwarded.
    #[error("the Kafka path is full; retry after {retry_after_s} s")]
    KafkaBackpressure {
        /// Seconds for Retry-After.
        retry_after_s: u32,
    },
    /// Kafka cannot take the original: a `spool` route's topic is blocked by a permanent
    /// delivery error, or an `ack` route's original was not acknowledged (even if the upstream
    /// answered).
    #[error("Kafka cannot take the original ({detail}); retry after {retry_after_s} s")]
    KafkaUnavailable {
        /// The reason (librdkafka's classification).
        detail: String,
        /// Seconds for Retry-After.
        retry_after_s: u32,
    },
    /// `[spool] max_bytes` reached: the original cannot be made durable, nothing is forwarded.
    #[error("the spool is full; retry after {retry_after_s} s")]
    SpoolFull {
        /// Seconds for Retry-After.
        retry_after_s: u32,
    },
    /// The spool cannot write (disk full, I/O error): nothing is forwarded.
    #[error("the spool cannot write ({detail}); retry after {retry_after_s} s")]
    SpoolUnavailable {
        /// The OS error.
        detail: String,
        /// Seconds for Retry-After.
        retry_after_s: u32,
    },
    /// relay is shedding load.
    #[error("relay is overloaded; retry after {retry_after_s} s")]
    Overloaded {
        /// Seconds for Retry-After.
        retry_after_s: u32,
    },
    /// relay is shutting down.
    #[error("relay is shutting down; retry on another instance")]
    ShuttingDown,
    /// TCP connect to every tried node failed (refused, unreachable).
    #[error("the upstream {upstream} is unreachable ({detail})")]
    UpstreamUnreachable {
        /// Upstream name.
        upstream: String,
        /// The OS error.
        detail: String,
    },
    /// The upstream reset or closed the connection before a whole response.
    #[error("the upstream {upstream} closed the connection before a complete response ({detail})")]
    UpstreamReset {
        /// Upstream name.
        upstream: String,
        /// What happened.
        detail: String,
    },
    /// Connect, write or read deadline passed.
    #[error("the upstream {upstream} did not {phase} within {after:?}")]
    UpstreamTimeout {
        /// Upstream name.
        upstream: String,
        /// `connect`, `accept the request` or `respond`.
        phase: &'static str,
        /// The deadline.
        after: Duration,
    },
    /// The upstream answered something that is not valid HTTP/1.1, or too large.
    #[error("the upstream {upstream} sent an invalid response ({detail})")]
    UpstreamBadResponse {
        /// Upstream name.
        upstream: String,
        /// What was wrong.
        detail: String,
    },
    /// TLS handshake or certificate verification failed.
    #[error("TLS to the upstream {upstream} failed ({detail})")]
    UpstreamTls {
        /// Upstream name.
        upstream: String,
        /// rustls' reason.
        detail: String,
    },
}

impl RequestError {
    /// The HTTP status and snake_case code the client gets. The one place this mapping lives.
    pub fn status_and_code(&self) -> (u16, &'static str) {
        use RequestError::*;
        match self {
            HeaderTooLarge { .. } => (431, "request_header_too_large"),
            TooManyHeaders { .. } => (431, "too_many_headers"),
            BodyTooLarge { .. } => (413, "payload_too_large"),
            HeaderTimeout(_) | BodyTimeout(_) => (408, "request_timeout"),
            BodyIncomplete => (400, "incomplete_body"),
            Malformed { code, .. } => (400, code),
            ExpectationFailed { .. } => (417, "expectation_failed"),
            NoRoute { .. } => (404, "no_route"),
            MethodNotAllowed { .. } => (405, "method_not_allowed"),
            Scrub(e) => (e.status, e.code),
            KafkaBackpressure { .. } => (503, "kafka_backpressure"),
            KafkaUnavailable { .. } => (503, "kafka_unavailable"),
            SpoolFull { .. } => (503, "spool_full"),
            SpoolUnavailable { .. } => (503, "spool_unavailable"),
            Overloaded { .. } => (503, "overloaded"),
            ShuttingDown => (503, "shutting_down"),
            UpstreamUnreachable { .. } => (502, "upstream_unreachable"),
            UpstreamReset { .. } => (502, "upstream_reset"),
            UpstreamTimeout { .. } => (504, "upstream_timeout"),
            UpstreamBadResponse { .. } => (502, "upstream_bad_response"),
            UpstreamTls { .. } => (502, "upstream_tls"),
        }
    }

    /// Whose fault it was.
    pub fn fault(&self) -> Fault {
        use RequestError::*;
        match self {
            UpstreamUnreachable { .. }
            | UpstreamReset { .. }
            | UpstreamTimeout { .. }
            | UpstreamBadResponse { .. }
            | UpstreamTls { .. } => Fault::Upstream,
            KafkaBackpressure { .. } | KafkaUnavailable { .. } | SpoolFull { .. } => Fault::Kafka,
            SpoolUnavailable { .. } => Fault::Internal,
            Overloaded { .. } | ShuttingDown => Fault::Internal,
            _ => Fault::Client,
        }
    }

    /// `Retry-After` seconds, for 503s.
    pub fn retry_after(&self) -> Option<u32> {
        match self {
            RequestError::KafkaBackpressure { retry_after_s }
            | RequestError::KafkaUnavailable { retry_after_s, .. }
            | RequestError::SpoolFull { retry_after_s }
            | RequestError::SpoolUnavailable { retry_after_s, .. }
            | RequestError::Overloaded { retry_after_s } => Some(*retry_after_s),
            RequestError::ShuttingDown => Some(1),
            _ => None,
        }
    }

    /// Whether the connection must be closed after answering (framing can no longer be trusted,
    /// or the client is too slow).
    pub fn closes_connection(&self) -> bool {
        use RequestError::*;
        matches!(
            self,
            HeaderTooLarge { .. }
                | TooManyHeaders { .. }
                | BodyTooLarge { .. }
                | HeaderTimeout(_)
                | BodyTimeout(_)
                | BodyIncomplete
                | Malformed { .. }
                | ExpectationFailed { .. }
                | ShuttingDown
        )
    }
}
