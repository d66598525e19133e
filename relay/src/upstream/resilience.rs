//! `[upstreams.outlier]` and `[upstreams.breaker]`: the configuration of passive outlier
//! ejection and of the circuit breaker, their defaults and their (pure) validation. Both are
//! off unless their table is present.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::breaker::BreakerSettings;
use super::outlier::OutlierSettings;
use crate::problems::Problems;

/// `[upstreams.outlier]`: eject a node after consecutive failures (connect failure, reset, 5xx).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierConfig {
    /// Consecutive failures from one node that eject it. Default 5.
    #[serde(default = "defaults::consecutive_failures")]
    pub consecutive_failures: u32,
    /// First ejection time in ms; doubles on each further ejection of the node. Default 30000.
    #[serde(default = "defaults::base_ejection_ms")]
    pub base_ejection_ms: u64,
    /// Longest ejection in ms. Default 300000.
    #[serde(default = "defaults::max_ejection_ms")]
    pub max_ejection_ms: u64,
    /// At most this percent of the nodes ejected at once (one is always allowed with two or
    /// more nodes). Default 50.
    #[serde(default = "defaults::max_ejected_percent")]
    pub max_ejected_percent: u8,
}

/// `[upstreams.breaker]`: fail fast with 503 `upstream_unavailable` when the failure rate over a
/// sliding window passes a threshold.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Sliding window in ms. Default 10000.
    #[serde(default = "defaults::window_ms")]
    pub window_ms: u64,
    /// Requests needed in the window before the rate is judged. Default 20.
    #[serde(default = "defaults::min_requests")]
    pub min_requests: u32,
    /// Failure rate, in percent, at which the breaker opens. Default 50.
    #[serde(default = "defaults::failure_rate_percent")]
    pub failure_rate_percent: u8,
    /// How long the breaker stays open before probing, in ms (also the Retry-After). Default
    /// 5000.
    #[serde(default = "defaults::open_ms")]
    pub open_ms: u64,
    /// Probe requests let through half-open; all must succeed to close. Default 3.
    #[serde(default = "defaults::half_open_probes")]
    pub half_open_probes: u32,
}

impl OutlierConfig {
    /// The state machine settings.
    pub fn settings(&self) -> OutlierSettings {
        OutlierSettings {
            consecutive_failures: self.consecutive_failures,
            base_ejection: Duration::from_millis(self.base_ejection_ms),
            max_ejection: Duration::from_millis(self.max_ejection_ms),
            max_ejected_percent: self.max_ejected_percent,
        }
    }

    /// Records every problem under `field` (`upstreams[0].outlier`).
    pub fn validate(&self, field: &str, p: &mut Problems) {
        if self.consecutive_failures == 0 {
            p.push(
                format!("{field}.consecutive_failures"),
                "must be at least 1",
            );
        }
        if self.base_ejection_ms == 0 {
            p.push(
                format!("{field}.base_ejection_ms"),
                "must be more than 0 ms",
            );
        }
        if self.max_ejection_ms < self.base_ejection_ms {
            p.push(
                format!("{field}.max_ejection_ms"),
                "must be at least base_ejection_ms",
            );
        }
        if self.max_ejected_percent > 100 {
            p.push(
                format!("{field}.max_ejected_percent"),
                "must be between 0 and 100",
            );
        }
    }
}

impl BreakerConfig {
    /// The state machine settings.
    pub fn settings(&self) -> BreakerSettings {
        BreakerSettings {
            window: Duration::from_millis(self.window_ms),
            buckets: 10,
            min_requests: self.min_requests,
            failure_rate: f64::from(self.failure_rate_percent) / 100.0,
            open_for: Duration::from_millis(self.open_ms),
            half_open_probes: self.half_open_probes,
        }
    }

    /// Records every problem under `field` (`upstreams[0].breaker`).
    pub fn validate(&self, field: &str, p: &mut Problems) {
        if self.window_ms < 10 {
            p.push(format!("{field}.window_ms"), "must be at least 10 ms");
        }
        if self.min_requests == 0 {
            p.push(format!("{field}.min_requests"), "must be at least 1");
        }
        if self.failure_rate_percent == 0 || self.failure_rate_percent > 100 {
            p.push(
                format!("{field}.failure_rate_percent"),
                "must be between 1 and 100",
            );
        }
        if self.open_ms == 0 {
            p.push(format!("{field}.open_ms"), "must be more than 0 ms");
        }
        if self.half_open_probes == 0 {
            p.push(format!("{field}.half_open_probes"), "must be at least 1");
        }
    }
}

/// Default values, one function per field (serde needs functions).
pub mod defaults {
    /// 5 failures.
    pub fn consecutive_failures() -> u32 {
        5
    }
    /// 30 s.
    pub fn base_ejection_ms() -> u64 {
        30_000
    }
    /// 300 s.
    pub fn max_ejection_ms() -> u64 {
        300_000
    }
    /// 50 %.
    pub fn max_ejected_percent() -> u8 {
        50
    }
    /// 10 s.
    pub fn window_ms() -> u64 {
        10_000
    }
    /// 20 requests.
    pub fn min_requests() -> u32 {
        20
    }
    /// 50 %.
    pub fn failure_rate_percent() -> u8 {
        50
    }
    /// 5 s.
    pub fn open_ms() -> u64 {
        5_000
    }
    /// 3 probes.
    pub fn half_open_probes() -> u32 {
        3
    }
}
