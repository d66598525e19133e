//! Why an exchange with an upstream failed. `crate::error` maps each to the status and code the
//! client sees (502, 503, 504); this module knows nothing of HTTP statuses.

use std::time::Duration;

/// An upstream exchange that produced no response to relay.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// TCP connect to every tried node failed (refused, unreachable).
    #[error("the upstream {upstream} is unreachable ({detail})")]
    Unreachable {
        /// Upstream name.
        upstream: String,
        /// The OS error.
        detail: String,
    },
    /// The upstream reset or closed the connection before a whole response.
    #[error("the upstream {upstream} closed the connection before a complete response ({detail})")]
    Reset {
        /// Upstream name.
        upstream: String,
        /// What happened.
        detail: String,
    },
    /// Connect, write or read deadline passed.
    #[error("the upstream {upstream} did not {phase} within {after:?}")]
    Timeout {
        /// Upstream name.
        upstream: String,
        /// `connect`, `accept the request` or `respond`.
        phase: &'static str,
        /// The deadline.
        after: Duration,
    },
    /// The upstream answered something that is not valid HTTP/1.1, or too large.
    #[error("the upstream {upstream} sent an invalid response ({detail})")]
    BadResponse {
        /// Upstream name.
        upstream: String,
        /// What was wrong.
        detail: String,
    },
    /// Every connection to the upstream's node is busy and none freed within the queue timeout.
    #[error("the upstream {upstream} has no free connection within {after:?}; retry after {retry_after_s} s")]
    Busy {
        /// Upstream name.
        upstream: String,
        /// The queue timeout.
        after: Duration,
        /// Seconds for Retry-After.
        retry_after_s: u32,
    },
    /// The upstream's circuit breaker is open: refused without trying.
    #[error(
        "the upstream {upstream} is failing; its circuit is open, retry after {retry_after_s} s"
    )]
    Unavailable {
        /// Upstream name.
        upstream: String,
        /// Seconds for Retry-After.
        retry_after_s: u32,
    },
    /// TLS handshake or certificate verification failed.
    #[error("TLS to the upstream {upstream} failed ({detail})")]
    Tls {
        /// Upstream name.
        upstream: String,
        /// rustls' reason.
        detail: String,
    },
}

impl UpstreamError {
    /// Whether a deadline passed (counted apart from the other failures).
    pub fn is_timeout(&self) -> bool {
        matches!(self, UpstreamError::Timeout { .. })
    }
}
