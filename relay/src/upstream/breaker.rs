//! Circuit breaker per upstream: failure rate over a sliding window of time buckets, with a
//! minimum request count, then open (fail fast), then half-open (a few probes), then closed.
//!
//! Pure state machine: every call takes `now` so tests inject the clock. One breaker is kept
//! per worker per upstream (no cross-thread traffic on the request path).

use std::time::{Duration, Instant};

/// Breaker settings.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerSettings {
    /// Sliding window length. Default 10 s.
    pub window: Duration,
    /// Number of buckets the window is split into. Default 10.
    pub buckets: usize,
    /// Minimum requests in the window before the rate is judged. Default 20.
    pub min_requests: u32,
    /// Failure rate (0.0..=1.0) at or above which the breaker opens. Default 0.5.
    pub failure_rate: f64,
    /// How long the breaker stays open before half-open probes. Default 5 s.
    pub open_for: Duration,
    /// Probe requests allowed while half-open; all must succeed to close. Default 3.
    pub half_open_probes: u32,
}

impl BreakerSettings {
    /// The settings of an `[upstreams.breaker]` table (10 buckets).
    pub fn from_config(c: &super::config::BreakerConfig) -> BreakerSettings {
        BreakerSettings {
            window: Duration::from_millis(c.window_ms),
            buckets: 10,
            min_requests: c.min_requests,
            failure_rate: f64::from(c.failure_rate_percent) / 100.0,
            open_for: Duration::from_millis(c.open_ms),
            half_open_probes: c.half_open_probes,
        }
    }
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            window: Duration::from_secs(10),
            buckets: 10,
            min_requests: 20,
            failure_rate: 0.5,
            open_for: Duration::from_secs(5),
            half_open_probes: 3,
        }
    }
}

/// Where the breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Traffic flows; outcomes are counted.
    Closed,
    /// Requests are refused at once until the given instant.
    Open {
        /// When half-open probing starts.
        until: Instant,
    },
    /// A limited number of probes are let through.
    HalfOpen {
        /// Probes handed out and not yet reported.
        in_flight: u32,
        /// Probes that succeeded.
        succeeded: u32,
    },
}

/// What the breaker says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Send it.
    Allow,
    /// Send it as a half-open probe.
    Probe,
    /// Refuse at once; retry after this long.
    Reject(Duration),
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    start: Option<Instant>,
    total: u32,
    failed: u32,
}

/// Circuit breaker for one upstream (one worker's view).
#[derive(Debug)]
pub struct Breaker {
    settings: BreakerSettings,
    state: BreakerState,
    buckets: Vec<Bucket>,
    opened_total: u64,
}

impl Breaker {
    /// Builds a closed breaker. `buckets` below 1 is treated as 1.
    pub fn new(settings: BreakerSettings) -> Breaker {
        let n = settings.buckets.max(1);
        Breaker {
            settings,
            state: BreakerState::Closed,
            buckets: vec![Bucket::default(); n],
            opened_total: 0,
        }
    }

    /// Takes over `old`'s state and window when its settings are the same (a reload that did
    /// not touch `[upstreams.breaker]`), so a reload does not close an open circuit; with new
    /// settings the breaker starts closed.
    pub fn carry_from(&mut self, old: &Breaker) {
        if self.settings == old.settings {
            self.state = old.state;
            self.buckets.clone_from(&old.buckets);
            self.opened_total = old.opened_total;
        }
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// How many times the breaker has opened.
    pub fn opened_total(&self) -> u64 {
        self.opened_total
    }

    fn bucket_len(&self) -> Duration {
        self.settings.window / self.buckets.len() as u32
    }

    /// Asks whether a request may go out at `now`.
    pub fn admit(&mut self, now: Instant) -> Admit {
        match self.state {
            BreakerState::Closed => Admit::Allow,
            BreakerState::Open { until } if now < until => Admit::Reject(until - now),
            BreakerState::Open { .. } => {
                self.state = BreakerState::HalfOpen {
                    in_flight: 1,
                    succeeded: 0,
                };
                Admit::Probe
            }
            BreakerState::HalfOpen {
                in_flight,
                succeeded,
            } => {
                if in_flight + succeeded < self.settings.half_open_probes {
                    self.state = BreakerState::HalfOpen {
                        in_flight: in_flight + 1,
                        succeeded,
                    };
                    Admit::Probe
                } else {
                    Admit::Reject(self.bucket_len().max(Duration::from_secs(1)))
                }
            }
        }
    }

    /// Reports the outcome of a request admitted at some point (`ok = false` for connect
    /// failures, resets, timeouts and 5xx the upstream is blamed for).
    pub fn record(&mut self, now: Instant, ok: bool) {
        match self.state {
            BreakerState::HalfOpen {
                in_flight,
                succeeded,
            } => {
                if !ok {
                    self.trip(now);
                    return;
                }
                let succeeded = succeeded + 1;
                if succeeded >= self.settings.half_open_probes {
                    self.state = BreakerState::Closed;
                    self.buckets.iter_mut().for_each(|b| *b = Bucket::default());
                } else {
                    self.state = BreakerState::HalfOpen {
                        in_flight: in_flight.saturating_sub(1),
                        succeeded,
                    };
                }
            }
            BreakerState::Open { .. } => {}
            BreakerState::Closed => {
                self.count(now, ok);
                let (total, failed) = self.totals(now);
                if total >= self.settings.min_requests
                    && total > 0
                    && f64::from(failed) / f64::from(total) >= self.settings.failure_rate
                {
                    self.trip(now);
                }
            }
        }
    }

    fn trip(&mut self, now: Instant) {
        self.state = BreakerState::Open {
            until: now + self.settings.open_for,
        };
        self.opened_total += 1;
    }

    fn count(&mut self, now: Instant, ok: bool) {
        let len = self.bucket_len();
        let n = self.buckets.len();
        // Bucket index from the time since the first bucket ever used; buckets older than the
        // window are reset when reused.
        let idx = match self.buckets.iter().filter_map(|b| b.start).min() {
            None => 0,
            Some(origin) => {
                let since = now.saturating_duration_since(origin);
                let k = since.as_nanos() / len.as_nanos().max(1);
                (k % n as u128) as usize
            }
        };
        let bucket_start = match self.buckets.iter().filter_map(|b| b.start).min() {
            None => now,
            Some(origin) => {
                let since = now.saturating_duration_since(origin);
                let k = since.as_nanos() / len.as_nanos().max(1);
                origin + Duration::from_nanos((k * len.as_nanos()) as u64)
            }
        };
        let b = &mut self.buckets[idx];
        if b.start != Some(bucket_start) {
            *b = Bucket {
                start: Some(bucket_start),
                total: 0,
                failed: 0,
            };
        }
        b.total += 1;
        if !ok {
            b.failed += 1;
        }
    }

    fn totals(&self, now: Instant) -> (u32, u32) {
        let window = self.settings.window;
        self.buckets
            .iter()
            .filter(|b| matches!(b.start, Some(s) if now.saturating_duration_since(s) < window))
            .fold((0, 0), |(t, f), b| (t + b.total, f + b.failed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BreakerSettings {
        BreakerSettings {
            window: Duration::from_secs(10),
            buckets: 10,
            min_requests: 4,
            failure_rate: 0.5,
            open_for: Duration::from_secs(5),
            half_open_probes: 2,
        }
    }

    #[test]
    fn stays_closed_below_min_requests() {
        let t0 = Instant::now();
        let mut b = Breaker::new(settings());
        for _ in 0..3 {
            b.record(t0, false);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.admit(t0), Admit::Allow);
    }

    #[test]
    fn opens_on_rate_then_half_open_then_closes() {
        let t0 = Instant::now();
        let mut b = Breaker::new(settings());
        b.record(t0, true);
        b.record(t0, false);
        b.record(t0, true);
        assert_eq!(b.state(), BreakerState::Closed);
        b.record(t0, false); // 2/4 = 0.5
        assert!(matches!(b.state(), BreakerState::Open { .. }));
        assert_eq!(
            b.admit(t0 + Duration::from_secs(1)),
            Admit::Reject(Duration::from_secs(4))
        );
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(b.admit(t1), Admit::Probe);
        assert_eq!(b.admit(t1), Admit::Probe);
        assert!(matches!(b.admit(t1), Admit::Reject(_)));
        b.record(t1, true);
        b.record(t1, true);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.admit(t1), Admit::Allow);
        assert_eq!(b.opened_total(), 1);
    }

    #[test]
    fn failed_probe_reopens() {
        let t0 = Instant::now();
        let mut b = Breaker::new(settings());
        for _ in 0..4 {
            b.record(t0, false);
        }
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(b.admit(t1), Admit::Probe);
        b.record(t1, false);
        assert_eq!(
            b.state(),
            BreakerState::Open {
                until: t1 + Duration::from_secs(5)
            }
        );
        assert_eq!(b.opened_total(), 2);
    }

    #[test]
    fn old_failures_slide_out_of_the_window() {
        let t0 = Instant::now();
        let mut b = Breaker::new(settings());
        for _ in 0..3 {
            b.record(t0, false);
        }
        let later = t0 + Duration::from_secs(11);
        b.record(later, false);
        assert_eq!(
            b.state(),
            BreakerState::Closed,
            "old failures must not count"
        );
    }
}
