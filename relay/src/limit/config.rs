//! `limits = { rate = .., burst = .., quota = .., window = .. }` on a consumer or a route.

use serde::{Deserialize, Serialize};

use crate::problems::Problems;

/// A quota window, aligned to UTC (a `day` starts at midnight UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Window {
    /// 60 s.
    #[default]
    Minute,
    /// 3600 s.
    Hour,
    /// 86400 s.
    Day,
}

impl Window {
    /// The window's length, in seconds.
    pub fn seconds(self) -> u64 {
        match self {
            Window::Minute => 60,
            Window::Hour => 3600,
            Window::Day => 86_400,
        }
    }
}

/// Request limits; each one is optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    /// Sustained requests per second (GCRA). Default: no rate limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Requests allowed at once above the sustained rate (the bucket size), at least 1.
    /// Default: `rate` rounded up (one second's worth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Requests per `window`. Default: no quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<u32>,
    /// `minute` (default), `hour` or `day`, aligned to UTC.
    #[serde(default)]
    pub window: Window,
}

impl LimitConfig {
    /// The burst in effect: `burst`, or one second of `rate` (at least 1).
    pub fn effective_burst(&self) -> u32 {
        self.burst
            .unwrap_or_else(|| self.rate.map_or(1, |r| r.ceil().clamp(1.0, 1e9) as u32))
    }

    /// Records every problem under `field`.
    pub fn validate(&self, field: &str, p: &mut Problems) {
        if let Some(r) = self.rate {
            if !(r.is_finite() && r > 0.0 && r <= 1e9) {
                p.push(
                    format!("{field}.rate"),
                    "must be more than 0 and at most 1e9 requests per second",
                );
            }
        }
        if self.burst == Some(0) {
            p.push(format!("{field}.burst"), "must be at least 1");
        }
        if self.burst.is_some() && self.rate.is_none() {
            p.push(
                format!("{field}.burst"),
                "burst is the bucket of a rate: set `rate` too",
            );
        }
        if self.quota == Some(0) {
            p.push(
                format!("{field}.quota"),
                "must be at least 1 (remove the route or consumer to refuse everything)",
            );
        }
        if self.rate.is_none() && self.quota.is_none() {
            p.push(
                field.to_string(),
                "sets no limit: give `rate` (requests/s) and/or `quota` (requests per window)",
            );
        }
    }
}
