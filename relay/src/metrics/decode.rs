//! Per-route counters of compressed request bodies: decoded bytes by coding and refusals by
//! reason, and their two Prometheus families.

use std::fmt::Write as _;

use super::{esc, family, Counter};
use crate::coding::{Coding, DecodeError};

/// The `reason` label of `relay_request_decode_refusals_total`, in counter order.
pub const REFUSALS: [&str; 4] = [
    "unsupported_content_encoding",
    "invalid_encoding",
    "decoded_body_too_large",
    "expansion_ratio_exceeded",
];

/// One route's decode counters.
pub struct DecodeMetrics {
    /// Decoded body bytes, by [`Coding::index`].
    decoded_bytes: [Counter; 3],
    /// Refusals, by [`REFUSALS`] position.
    refusals: [Counter; 4],
}

impl DecodeMetrics {
    /// Zero counters for `workers` workers.
    pub fn new(workers: usize) -> DecodeMetrics {
        DecodeMetrics {
            decoded_bytes: std::array::from_fn(|_| Counter::new(workers)),
            refusals: std::array::from_fn(|_| Counter::new(workers)),
        }
    }

    /// Counts `n` decoded bytes of a `coding` body on worker `w`.
    #[inline]
    pub fn decoded(&self, w: usize, coding: Coding, n: usize) {
        self.decoded_bytes[coding.index()].add(w, n as u64);
    }

    /// Counts a refused body on worker `w`.
    pub fn refused(&self, w: usize, e: &DecodeError) {
        if let Some(i) = REFUSALS.iter().position(|r| *r == e.code()) {
            self.refusals[i].inc(w);
        }
    }
}

/// Writes `relay_request_decoded_bytes_total{route,coding}` and
/// `relay_request_decode_refusals_total{route,reason}` for every route.
pub fn render(out: &mut String, routes: &[(String, &DecodeMetrics)]) {
    family(
        out,
        "relay_request_decoded_bytes_total",
        "counter",
        "Bytes of compressed request bodies after decoding, by route and Content-Encoding.",
    );
    for (name, m) in routes {
        for c in Coding::ALL {
            let _ = writeln!(
                out,
                "relay_request_decoded_bytes_total{{route=\"{}\",coding=\"{c}\"}} {}",
                esc(name),
                m.decoded_bytes[c.index()].sum()
            );
        }
    }
    family(
        out,
        "relay_request_decode_refusals_total",
        "counter",
        "Request bodies refused for their Content-Encoding (unknown coding, corrupt or \
         truncated stream, a decode limit), by route and reason.",
    );
    for (name, m) in routes {
        for (reason, c) in REFUSALS.iter().zip(&m.refusals) {
            let _ = writeln!(
                out,
                "relay_request_decode_refusals_total{{route=\"{}\",reason=\"{reason}\"}} {}",
                esc(name),
                c.sum()
            );
        }
    }
}
