//! Request limits shared by every worker: a GCRA rate (requests per second with a burst) and a
//! fixed-window quota (per minute, hour or day), each one `AtomicU64` updated by
//! compare-and-swap: no lock on the request path. The state lives in a [`LimitStore`] kept
//! across reloads (keyed by consumer or route name), so a reload changes the limits but not
//! what was already counted. Times are passed in (ns), so tests drive the clock.

#![forbid(unsafe_code)]

pub mod config;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub use config::{LimitConfig, Window};

const NS: u64 = 1_000_000_000;

/// The shared counters of one limited subject (a consumer or a route).
#[derive(Debug, Default)]
pub struct LimitState {
    /// GCRA theoretical arrival time, ns on the monotonic clock.
    tat: AtomicU64,
    /// Quota: window number (high 32 bits) and requests counted in it (low 32 bits).
    window: AtomicU64,
}

/// Every [`LimitState`] by key, kept for the life of the process (across reloads).
#[derive(Debug, Default)]
pub struct LimitStore {
    states: Mutex<HashMap<String, Arc<LimitState>>>,
}

impl LimitStore {
    /// The state of `key` (`consumer:<name>`, `route:<name>`), created on first use. Called
    /// when a snapshot is built, never on the request path.
    pub fn state(&self, key: &str) -> Arc<LimitState> {
        self.states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.to_string())
            .or_default()
            .clone()
    }
}

/// A refusal: which limit and what the client should be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    /// `rate` or `quota`.
    pub kind: &'static str,
    /// The limit (`RateLimit-Limit`): the burst or the quota.
    pub limit: u64,
    /// Seconds until a request would pass (`Retry-After`, `RateLimit-Reset`), at least 1.
    pub retry_after_s: u64,
}

/// One subject's compiled limits and its shared state.
#[derive(Debug, Clone)]
pub struct Limiter {
    state: Arc<LimitState>,
    /// ns between two requests at the sustained rate; 0: no rate.
    interval_ns: u64,
    /// `burst * interval_ns`.
    tolerance_ns: u64,
    burst: u32,
    quota: u32,
    window_s: u64,
}

impl Limiter {
    /// Compiles `cfg` over `state`.
    pub fn new(cfg: &LimitConfig, state: Arc<LimitState>) -> Limiter {
        let interval_ns = cfg
            .rate
            .map_or(0, |r| ((NS as f64 / r).round() as u64).max(1));
        let burst = cfg.effective_burst();
        Limiter {
            state,
            interval_ns,
            tolerance_ns: interval_ns.saturating_mul(burst as u64),
            burst,
            quota: cfg.quota.unwrap_or(0),
            window_s: cfg.window.seconds(),
        }
    }

    /// Counts one request at `mono_ns` (monotonic) / `unix_s` (wall clock, for the quota's
    /// windows), or refuses it. A request refused by the rate is not counted by the quota.
    pub fn check(&self, mono_ns: u64, unix_s: u64) -> Result<(), Limited> {
        if self.interval_ns > 0 {
            self.check_rate(mono_ns)?;
        }
        if self.quota > 0 {
            self.check_quota(unix_s)?;
        }
        Ok(())
    }

    fn check_rate(&self, now: u64) -> Result<(), Limited> {
        let mut tat = self.state.tat.load(Ordering::Relaxed);
        loop {
            let new_tat = tat.max(now).saturating_add(self.interval_ns);
            let ahead = new_tat - now;
            if ahead > self.tolerance_ns {
                let wait = ahead - self.tolerance_ns;
                return Err(Limited {
                    kind: "rate",
                    limit: self.burst as u64,
                    retry_after_s: wait.div_ceil(NS).max(1),
                });
            }
            match self.state.tat.compare_exchange_weak(
                tat,
                new_tat,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(t) => tat = t,
            }
        }
    }

    fn check_quota(&self, unix_s: u64) -> Result<(), Limited> {
        let win = (unix_s / self.window_s) & 0xffff_ffff;
        let mut cur = self.state.window.load(Ordering::Relaxed);
        loop {
            let (w, n) = (cur >> 32, cur & 0xffff_ffff);
            let n = if w == win { n } else { 0 };
            if n >= self.quota as u64 {
                let reset = self.window_s - unix_s % self.window_s;
                return Err(Limited {
                    kind: "quota",
                    limit: self.quota as u64,
                    retry_after_s: reset.max(1),
                });
            }
            let next = win << 32 | (n + 1);
            match self.state.window.compare_exchange_weak(
                cur,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(c) => cur = c,
            }
        }
    }
}

/// The process's clocks for [`Limiter::check`]: monotonic ns since first use, Unix seconds.
pub fn now() -> (u64, u64) {
    use std::sync::OnceLock;
    use std::time::{Instant, SystemTime, UNIX_EPOCH};
    static BASE: OnceLock<Instant> = OnceLock::new();
    // Start one burst-worth above zero so a fresh TAT of 0 never reads as "in the future".
    let mono = BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64 + NS;
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (mono, unix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim(rate: Option<f64>, burst: Option<u32>, quota: Option<u32>) -> Limiter {
        let cfg = LimitConfig {
            rate,
            burst,
            quota,
            window: Window::Minute,
        };
        Limiter::new(&cfg, Arc::default())
    }

    #[test]
    fn a_burst_passes_at_once_then_the_rate_holds() {
        let l = lim(Some(10.0), Some(5), None);
        let t0 = 100 * NS;
        for _ in 0..5 {
            l.check(t0, 0).unwrap();
        }
        let e = l.check(t0, 0).unwrap_err();
        assert_eq!((e.kind, e.limit, e.retry_after_s), ("rate", 5, 1));
        // 100 ms later exactly one more token.
        l.check(t0 + NS / 10, 0).unwrap();
        assert!(l.check(t0 + NS / 10, 0).is_err());
        // Over 10 s at twice the rate (every 50 ms), ~100 pass (+ the burst already spent).
        let mut ok = 0;
        for i in 1..=200u64 {
            if l.check(t0 + NS / 10 + i * NS / 20, 0).is_ok() {
                ok += 1;
            }
        }
        assert!((99..=101).contains(&ok), "{ok}");
    }

    #[test]
    fn quota_counts_per_window_and_resets_at_the_boundary() {
        let l = lim(None, None, Some(3));
        let t = 60 * 1000 + 50; // 10 s before the next minute
        for _ in 0..3 {
            l.check(0, t).unwrap();
        }
        let e = l.check(0, t).unwrap_err();
        assert_eq!((e.kind, e.limit, e.retry_after_s), ("quota", 3, 10));
        l.check(0, t + 10).unwrap();
    }

    #[test]
    fn state_survives_a_new_limiter_over_the_same_store() {
        let store = LimitStore::default();
        let cfg = LimitConfig {
            rate: Some(1.0),
            burst: Some(2),
            quota: None,
            window: Window::Minute,
        };
        let a = Limiter::new(&cfg, store.state("route:x"));
        a.check(10 * NS, 0).unwrap();
        a.check(10 * NS, 0).unwrap();
        // A reload: new config object, same key.
        let b = Limiter::new(&cfg.clone(), store.state("route:x"));
        assert!(b.check(10 * NS, 0).is_err(), "counted before the reload");
        let c = Limiter::new(&cfg, store.state("route:y"));
        c.check(10 * NS, 0).unwrap();
    }

    #[test]
    fn workers_share_the_bucket_exactly() {
        let l = lim(Some(1.0), Some(1000), None);
        let ok = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..500 {
                        if l.check(5 * NS, 0).is_ok() {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(ok.load(Ordering::Relaxed), 1000);
    }
}
