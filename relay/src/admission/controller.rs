//! The shed controller: turns relay's load into a shed level (0..=100 % of new connections).
//!
//! Every tick (100 ms) it computes the overload ratio: the worst of in-flight requests on the
//! busiest worker over `inflight_high`, Kafka queue fill over `kafka_fill_high`, and the accept
//! backlog over `backlog_high`. At or above 1.0 the level goes up fast (at least `STEP_UP` per
//! tick, more the further over); below `HEALTHY` it comes down slowly (`STEP_DOWN` per tick, so
//! 100 % takes 5 s to drain); in between it holds. A healthy relay therefore never starts
//! shedding, and always ends at 0.
#![forbid(unsafe_code)]

/// One load sample, taken by the controller every tick.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadSample {
    /// Requests in flight on each worker (one entry per worker).
    pub inflight_per_worker: Vec<u64>,
    /// Kafka queue fill, 0.0 (empty) to 1.0 (full).
    pub kafka_fill: f64,
    /// Connections waiting in the accept backlog (all listeners).
    pub accept_backlog: u64,
}

/// The thresholds at which relay counts as overloaded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// In-flight requests on one worker.
    pub inflight_high: u64,
    /// Kafka queue fill, 0..1.
    pub kafka_fill_high: f64,
    /// Accept backlog, connections.
    pub backlog_high: u64,
}

/// Minimum increase per overloaded tick, in percentage points.
pub const STEP_UP: u8 = 10;
/// Decrease per healthy tick, in percentage points.
pub const STEP_DOWN: u8 = 2;
/// Below this overload ratio relay is healthy and the level decays.
pub const HEALTHY: f64 = 0.8;

/// Overload ratio of `s`: 1.0 means at a threshold.
pub fn overload(s: &LoadSample, t: &Thresholds) -> f64 {
    let inflight = s.inflight_per_worker.iter().copied().max().unwrap_or(0) as f64
        / t.inflight_high.max(1) as f64;
    let kafka = if t.kafka_fill_high > 0.0 {
        s.kafka_fill / t.kafka_fill_high
    } else {
        0.0
    };
    let backlog = s.accept_backlog as f64 / t.backlog_high.max(1) as f64;
    inflight.max(kafka).max(backlog)
}

/// The next shed level from the current one and the overload ratio.
pub fn next_level(current: u8, ratio: f64) -> u8 {
    let current = current.min(100);
    if ratio >= 1.0 {
        // Up fast: 10 points, plus 50 points per unit of overload beyond the threshold.
        let extra = ((ratio - 1.0) * 50.0).clamp(0.0, 100.0) as u8;
        current
            .saturating_add(STEP_UP.saturating_add(extra))
            .min(100)
    } else if ratio < HEALTHY {
        current.saturating_sub(STEP_DOWN)
    } else {
        current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds {
        inflight_high: 100,
        kafka_fill_high: 0.8,
        backlog_high: 1000,
    };

    fn sample(inflight: u64, kafka: f64, backlog: u64) -> LoadSample {
        LoadSample {
            inflight_per_worker: vec![1, inflight],
            kafka_fill: kafka,
            accept_backlog: backlog,
        }
    }

    #[test]
    fn healthy_never_sheds() {
        let mut level = 0;
        for _ in 0..1000 {
            level = next_level(level, overload(&sample(50, 0.1, 10), &T));
            assert_eq!(level, 0);
        }
    }

    #[test]
    fn overload_goes_up_fast_and_down_slowly() {
        let mut level = 0;
        let mut ticks_up = 0;
        while level < 100 {
            level = next_level(level, overload(&sample(200, 0.0, 0), &T));
            ticks_up += 1;
        }
        assert!(ticks_up <= 2, "{ticks_up}");
        let mut ticks_down = 0;
        while level > 0 {
            level = next_level(level, overload(&sample(10, 0.0, 0), &T));
            ticks_down += 1;
        }
        assert!(ticks_down >= 40, "{ticks_down}");
    }

    #[test]
    fn hysteresis_band_holds() {
        assert_eq!(next_level(30, overload(&sample(90, 0.0, 0), &T)), 30);
        assert_eq!(next_level(30, 0.5), 28);
        assert_eq!(next_level(30, 1.0), 40);
    }

    #[test]
    fn any_signal_counts() {
        assert!(overload(&sample(0, 0.8, 0), &T) >= 1.0);
        assert!(overload(&sample(0, 0.0, 1000), &T) >= 1.0);
        assert_eq!(overload(&LoadSample::default(), &T), 0.0);
    }
}
