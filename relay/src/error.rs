//! Why a request was not forwarded or failed, whose fault it was, and the one mapping from that
//! to the HTTP status and machine-readable code the client sees.

use std::time::Duration;

use relay_http::HttpError;

use crate::admit::AdmitError;
use crate::coding::DecodeError;
use crate::reason::Reason;
use crate::scrub::ScrubError;
use crate::upstream::UpstreamError;

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
    /// The request's framing or syntax, or a size limit (from relay-http).
    #[error("{}", http_message(.0))]
    Http(#[from] HttpError),
    /// The head did not arrive in time.
    #[error("the request head did not arrive within {0:?}; send the whole head promptly")]
    HeaderTimeout(Duration),
    /// The body did not arrive in time.
    #[error("the request body did not arrive within {0:?}; send the whole body promptly")]
    BodyTimeout(Duration),
    /// A zero-length body on a route that scrubs a JSON body: nothing to relay.
    #[error("the request body is empty; send at least one JSON event")]
    EmptyBody,
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
    /// The body's `Content-Encoding` is unsupported, or the body does not decode within the
    /// route's limits: nothing is published or forwarded.
    #[error(transparent)]
    Decode(#[from] DecodeError),
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
    /// The upstream exchange failed (unreachable, reset, timeout, bad response, busy, TLS).
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The request's events go to different upstreams or topics and the route does not split
    /// batches (422).
    #[error("{0}")]
    MixedDestinations(#[from] crate::dispatch::error::MixedDestinations),
    /// The admit phase refused the request (401, 403, 429).
    #[error(transparent)]
    Admit(#[from] AdmitError),
    /// relay failed while handling the request (a bug: counted in `relay_panics_total`).
    #[error("relay failed while handling this request; it was not forwarded, retry it")]
    Internal,
}

impl RequestError {
    /// The HTTP status and the [`Reason`] (the metrics label). The one place this mapping
    /// lives.
    pub fn status_and_reason(&self) -> (u16, Reason) {
        use RequestError::*;
        match self {
            Http(e) => (http_status(e), Reason::from_code(e.code())),
            HeaderTimeout(_) | BodyTimeout(_) => (408, Reason::RequestTimeout),
            EmptyBody => (400, Reason::EmptyBody),
            NoRoute { .. } => (404, Reason::NoRoute),
            MethodNotAllowed { .. } => (405, Reason::MethodNotAllowed),
            Scrub(e) => (e.status, Reason::from_code(e.code)),
            Decode(e) => {
                let status = match e {
                    DecodeError::Unsupported { .. } | DecodeError::Stacked { .. } => 415,
                    DecodeError::TooLarge { .. } | DecodeError::RatioExceeded { .. } => 413,
                    DecodeError::Truncated { .. } | DecodeError::Corrupt { .. } => 400,
                };
                (status, Reason::from_code(e.code()))
            }
            KafkaBackpressure { .. } => (503, Reason::KafkaBackpressure),
            KafkaUnavailable { .. } => (503, Reason::KafkaUnavailable),
            SpoolFull { .. } => (503, Reason::SpoolFull),
            SpoolUnavailable { .. } => (503, Reason::SpoolUnavailable),
            Upstream(e) => upstream_status_and_reason(e),
            Admit(e) => {
                let (status, code) = e.status_and_code();
                (status, Reason::from_code(code))
            }
            MixedDestinations(_) => (422, Reason::MixedDestinations),
            Internal => (500, Reason::InternalError),
        }
    }

    /// The HTTP status and the snake_case code of the JSON error the client gets: the
    /// [`Reason`]'s, or relay-http's and relay-scrub's own code for their errors.
    pub fn status_and_code(&self) -> (u16, &'static str) {
        let (status, reason) = self.status_and_reason();
        let code = match self {
            RequestError::Http(e) => e.code(),
            RequestError::Scrub(e) => e.code,
            _ => reason.as_str(),
        };
        (status, code)
    }

    /// Whose fault it was.
    pub fn fault(&self) -> Fault {
        use RequestError::*;
        match self {
            Upstream(_) => Fault::Upstream,
            KafkaBackpressure { .. } | KafkaUnavailable { .. } | SpoolFull { .. } => Fault::Kafka,
            SpoolUnavailable { .. } | Internal => Fault::Internal,
            _ => Fault::Client,
        }
    }

    /// Headers the error response carries besides `Retry-After` (`WWW-Authenticate`,
    /// `RateLimit-*`).
    pub fn extra_headers(&self) -> Vec<(&'static str, String)> {
        match self {
            RequestError::Admit(e) => e.headers(),
            // RFC 9110 §15.5.16: a 415 for a content coding lists the acceptable ones.
            RequestError::Decode(DecodeError::Unsupported { .. } | DecodeError::Stacked { .. }) => {
                vec![("Accept-Encoding", crate::coding::SUPPORTED.to_string())]
            }
            _ => Vec::new(),
        }
    }

    /// `Retry-After` seconds, for 503s and 429s.
    pub fn retry_after(&self) -> Option<u32> {
        match self {
            RequestError::KafkaBackpressure { retry_after_s }
            | RequestError::KafkaUnavailable { retry_after_s, .. }
            | RequestError::SpoolFull { retry_after_s }
            | RequestError::SpoolUnavailable { retry_after_s, .. }
            | RequestError::Upstream(UpstreamError::Busy { retry_after_s, .. })
            | RequestError::Upstream(UpstreamError::Unavailable { retry_after_s, .. }) => {
                Some(*retry_after_s)
            }
            RequestError::Admit(e) => e.retry_after(),
            _ => None,
        }
    }

    /// Whether the connection must be closed after answering (framing can no longer be trusted,
    /// or the client is too slow).
    pub fn closes_connection(&self) -> bool {
        use RequestError::*;
        matches!(self, Http(_) | HeaderTimeout(_) | BodyTimeout(_) | Internal)
    }
}

/// The status and reason for a failed upstream exchange: 504 for deadlines, 503 when no
/// connection was free, 502 for the rest.
fn upstream_status_and_reason(e: &UpstreamError) -> (u16, Reason) {
    match e {
        UpstreamError::Unreachable { .. } => (502, Reason::UpstreamUnreachable),
        UpstreamError::Reset { .. } => (502, Reason::UpstreamReset),
        UpstreamError::Timeout { .. } => (504, Reason::UpstreamTimeout),
        UpstreamError::BadResponse { .. } => (502, Reason::UpstreamBadResponse),
        UpstreamError::Tls { .. } => (502, Reason::UpstreamTls),
        UpstreamError::Busy { .. } => (503, Reason::UpstreamBusy),
        UpstreamError::Unavailable { .. } => (503, Reason::UpstreamUnavailable),
    }
}

/// The status for a request refused by relay-http: 431 for heads, 413 for bodies, 417 for
/// `Expect`, 400 for everything else.
fn http_status(e: &HttpError) -> u16 {
    match e {
        HttpError::HeadTooLarge { .. } | HttpError::TooManyHeaders { .. } => 431,
        HttpError::BodyTooLarge { .. } => 413,
        HttpError::ExpectationFailed { .. } => 417,
        _ => 400,
    }
}

/// relay-http's description plus what the client should do about it.
fn http_message(e: &HttpError) -> String {
    let advice = match e {
        HttpError::HeadTooLarge { .. } => "; send smaller headers",
        HttpError::TooManyHeaders { .. } => "; send fewer headers",
        HttpError::BodyTooLarge { .. } => "; split the batch into smaller requests",
        HttpError::ChunkLineTooLarge { .. } => "; send shorter chunk extensions",
        HttpError::TrailerTooLarge { .. } => "; send a smaller trailer section",
        HttpError::Incomplete => "; send the whole body",
        _ => "",
    };
    format!("{e}{advice}")
}
