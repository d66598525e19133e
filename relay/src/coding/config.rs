//! The route options of compressed request bodies (`max_decoded_bytes`,
//! `max_expansion_ratio`, `forward_encoding`): their defaults, in one place ([`Limits::resolve`]),
//! and their validation.

use serde::{Deserialize, Serialize};

use crate::problems::Problems;

/// Default `max_expansion_ratio`: a body may decode to at most 100 times its encoded length.
pub const DEFAULT_MAX_EXPANSION_RATIO: u32 = 100;

/// Largest accepted `max_decoded_bytes`: 256 MiB.
pub const MAX_DECODED_BYTES_LIMIT: u64 = 256 * 1024 * 1024;

/// Largest accepted `max_expansion_ratio`.
pub const MAX_EXPANSION_RATIO_LIMIT: u32 = 100_000;

/// What the upstream gets for a compressed request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ForwardEncoding {
    /// The scrubbed body decoded, without `Content-Encoding` (default).
    #[default]
    Identity,
    /// The scrubbed body encoded again with the request's coding, with its `Content-Encoding`.
    Same,
}

/// The decode limits in effect on a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes a body may decode to.
    pub max_decoded_bytes: u64,
    /// Most decoded bytes per encoded byte.
    pub max_expansion_ratio: u32,
}

impl Limits {
    /// The limits of a route: its own values, else `max_decoded_bytes` = the server's
    /// `max_body_bytes` and `max_expansion_ratio` = [`DEFAULT_MAX_EXPANSION_RATIO`].
    pub fn resolve(
        max_decoded_bytes: Option<u64>,
        max_expansion_ratio: Option<u32>,
        server_max_body_bytes: usize,
    ) -> Limits {
        Limits {
            max_decoded_bytes: max_decoded_bytes.unwrap_or(server_max_body_bytes as u64),
            max_expansion_ratio: max_expansion_ratio.unwrap_or(DEFAULT_MAX_EXPANSION_RATIO),
        }
    }
}

/// Records the problems of a route's decode options under `field` (`routes[0]`).
pub fn validate(
    max_decoded_bytes: Option<u64>,
    max_expansion_ratio: Option<u32>,
    field: &str,
    p: &mut Problems,
) {
    if let Some(n) = max_decoded_bytes {
        if n == 0 || n > MAX_DECODED_BYTES_LIMIT {
            p.push(
                format!("{field}.max_decoded_bytes"),
                format!(
                    "{n} is out of range: set 1 to {MAX_DECODED_BYTES_LIMIT} bytes (default: \
                     server.max_body_bytes)"
                ),
            );
        }
    }
    if let Some(r) = max_expansion_ratio {
        if r == 0 || r > MAX_EXPANSION_RATIO_LIMIT {
            p.push(
                format!("{field}.max_expansion_ratio"),
                format!(
                    "{r} is out of range: set 1 to {MAX_EXPANSION_RATIO_LIMIT} (decoded bytes per \
                     encoded byte; default {DEFAULT_MAX_EXPANSION_RATIO})"
                ),
            );
        }
    }
}
