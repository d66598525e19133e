//! Retry policy and retry budget: which failures may be retried, and at most `budget_percent`
//! of the requests in a sliding window may be retries, so retries cannot multiply an outage.
//!
//! Pure state machine: every call takes `now` so tests inject the clock.

use std::time::{Duration, Instant};

pub use super::config::RetryOn;

/// Retry budget for one upstream (one worker's view).
#[derive(Debug)]
pub struct RetryBudget {
    percent: u32,
    min_per_window: u32,
    window: Duration,
    started: Option<Instant>,
    requests: u64,
    retries: u64,
    denied_total: u64,
    retries_total: u64,
}

impl RetryBudget {
    /// At most `percent` % of requests in each `window` may be retries, with `min_per_window`
    /// retries always allowed (so a quiet upstream can still retry once). Defaults: 20 %, 10 s,
    /// 3.
    pub fn new(percent: u32, window: Duration, min_per_window: u32) -> RetryBudget {
        RetryBudget {
            percent: percent.min(100),
            min_per_window,
            window,
            started: None,
            requests: 0,
            retries: 0,
            denied_total: 0,
            retries_total: 0,
        }
    }

    fn roll(&mut self, now: Instant) {
        match self.started {
            Some(s) if now.saturating_duration_since(s) < self.window => {}
            _ => {
                self.started = Some(now);
                self.requests = 0;
                self.retries = 0;
            }
        }
    }

    /// Counts one original (non-retry) request.
    pub fn request(&mut self, now: Instant) {
        self.roll(now);
        self.requests += 1;
    }

    /// Asks to spend one retry; true when granted (and counted).
    pub fn try_retry(&mut self, now: Instant) -> bool {
        self.roll(now);
        let allowed =
            (self.requests * u64::from(self.percent) / 100).max(u64::from(self.min_per_window));
        if self.retries < allowed {
            self.retries += 1;
            self.retries_total += 1;
            true
        } else {
            self.denied_total += 1;
            false
        }
    }

    /// Retries granted so far.
    pub fn retries_total(&self) -> u64 {
        self.retries_total
    }

    /// Retries refused by the budget so far.
    pub fn denied_total(&self) -> u64 {
        self.denied_total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_never_exceed_budget() {
        let t0 = Instant::now();
        let mut b = RetryBudget::new(10, Duration::from_secs(10), 0);
        let mut granted = 0;
        for _ in 0..100 {
            b.request(t0);
            if b.try_retry(t0) {
                granted += 1;
            }
        }
        assert!(granted <= 10, "granted {granted}");
        assert_eq!(b.retries_total(), granted);
        assert_eq!(b.denied_total(), 100 - granted);
    }

    #[test]
    fn min_per_window_and_window_roll() {
        let t0 = Instant::now();
        let mut b = RetryBudget::new(0, Duration::from_secs(10), 1);
        b.request(t0);
        assert!(b.try_retry(t0));
        assert!(!b.try_retry(t0));
        let t1 = t0 + Duration::from_secs(10);
        assert!(b.try_retry(t1));
    }
}
