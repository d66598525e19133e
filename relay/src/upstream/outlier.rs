//! Passive outlier detection: consecutive failures (connect refused, reset, 5xx) from one node
//! eject it for a base time that doubles per ejection up to a cap, never ejecting more than
//! `max_ejected_percent` of the nodes. When every node is out, the least recently failed one
//! is picked rather than refusing.
//!
//! Pure state machine: every call takes `now` so tests inject the clock.

use std::time::{Duration, Instant};

/// Outlier detection settings.
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierSettings {
    /// Consecutive failures that eject a node. Default 5.
    pub consecutive_failures: u32,
    /// First ejection time; doubles on each further ejection. Default 30 s.
    pub base_ejection: Duration,
    /// Ejection time cap. Default 300 s.
    pub max_ejection: Duration,
    /// At most this percent of the nodes are ejected at once (at least one node may always be
    /// ejected when there are two or more). Default 50.
    pub max_ejected_percent: u8,
}

impl OutlierSettings {
    /// The settings of an `[upstreams.outlier]` table.
    pub fn from_config(c: &super::config::OutlierConfig) -> OutlierSettings {
        OutlierSettings {
            consecutive_failures: c.consecutive_failures,
            base_ejection: Duration::from_millis(c.base_ejection_ms),
            max_ejection: Duration::from_millis(c.max_ejection_ms),
            max_ejected_percent: c.max_ejected_percent,
        }
    }
}

impl Default for OutlierSettings {
    fn default() -> Self {
        OutlierSettings {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejected_percent: 50,
        }
    }
}

#[derive(Debug, Clone, Default)]
struct NodeState {
    consecutive: u32,
    ejections: u32,
    ejected_until: Option<Instant>,
    last_failure: Option<Instant>,
}

/// Outlier state for the nodes of one upstream.
#[derive(Debug)]
pub struct Outliers {
    settings: OutlierSettings,
    nodes: Vec<NodeState>,
    ejections_total: u64,
}

impl Outliers {
    /// Tracks `nodes` nodes, none ejected.
    pub fn new(settings: OutlierSettings, nodes: usize) -> Outliers {
        Outliers {
            settings,
            nodes: vec![NodeState::default(); nodes],
            ejections_total: 0,
        }
    }

    /// Total ejections so far.
    pub fn ejections_total(&self) -> u64 {
        self.ejections_total
    }

    /// Whether node `i` is ejected at `now`.
    pub fn is_ejected(&self, i: usize, now: Instant) -> bool {
        matches!(self.nodes.get(i).and_then(|n| n.ejected_until), Some(u) if now < u)
    }

    fn ejected_count(&self, now: Instant) -> usize {
        (0..self.nodes.len())
            .filter(|&i| self.is_ejected(i, now))
            .count()
    }

    /// Lifts the ejection of node `i` (its active health checks passed again); its next
    /// ejection still lasts longer than the last.
    pub fn reinstate(&mut self, i: usize) {
        if let Some(n) = self.nodes.get_mut(i) {
            n.ejected_until = None;
            n.consecutive = 0;
        }
    }

    /// Takes over node `j` of `old` as node `i` (the same node in the configuration a reload
    /// replaced): its streak, ejection count and ejection, so a reload does not reinstate an
    /// ejected node.
    pub fn carry_node(&mut self, i: usize, old: &Outliers, j: usize) {
        if let (Some(n), Some(o)) = (self.nodes.get_mut(i), old.nodes.get(j)) {
            *n = o.clone();
        }
    }

    /// Records a success from node `i`: its consecutive count resets.
    pub fn success(&mut self, i: usize) {
        if let Some(n) = self.nodes.get_mut(i) {
            n.consecutive = 0;
        }
    }

    /// Records a failure from node `i`; returns the ejection time when this ejected it.
    pub fn failure(&mut self, i: usize, now: Instant) -> Option<Duration> {
        let max_ejected =
            (self.nodes.len() * usize::from(self.settings.max_ejected_percent.min(100))) / 100;
        let max_ejected = if self.nodes.len() > 1 {
            max_ejected.max(1)
        } else {
            0
        };
        let ejected_now = self.ejected_count(now);
        let already = self.is_ejected(i, now);
        let n = self.nodes.get_mut(i)?;
        n.last_failure = Some(now);
        n.consecutive = n.consecutive.saturating_add(1);
        if already
            || n.consecutive < self.settings.consecutive_failures
            || ejected_now >= max_ejected
        {
            return None;
        }
        let factor = 1u32.checked_shl(n.ejections.min(31)).unwrap_or(u32::MAX);
        let time = self
            .settings
            .base_ejection
            .checked_mul(factor)
            .unwrap_or(self.settings.max_ejection)
            .min(self.settings.max_ejection);
        n.ejections = n.ejections.saturating_add(1);
        n.consecutive = 0;
        n.ejected_until = Some(now + time);
        self.ejections_total += 1;
        Some(time)
    }

    /// Among `candidates` (node indices already filtered by health), those not ejected; when
    /// none is left, the least recently failed candidate alone.
    pub fn usable(&self, candidates: &[usize], now: Instant) -> Vec<usize> {
        let ok: Vec<usize> = candidates
            .iter()
            .copied()
            .filter(|&i| !self.is_ejected(i, now))
            .collect();
        if !ok.is_empty() {
            return ok;
        }
        candidates
            .iter()
            .copied()
            .min_by_key(|&i| self.nodes.get(i).and_then(|n| n.last_failure))
            .into_iter()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> OutlierSettings {
        OutlierSettings {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(25),
            max_ejected_percent: 50,
        }
    }

    #[test]
    fn ejects_after_consecutive_failures_and_doubles_capped() {
        let t0 = Instant::now();
        let mut o = Outliers::new(settings(), 2);
        assert_eq!(o.failure(0, t0), None);
        o.success(0);
        assert_eq!(o.failure(0, t0), None);
        assert_eq!(o.failure(0, t0), None);
        assert_eq!(o.failure(0, t0), Some(Duration::from_secs(10)));
        assert!(o.is_ejected(0, t0 + Duration::from_secs(9)));
        let t1 = t0 + Duration::from_secs(10);
        assert!(!o.is_ejected(0, t1));
        for _ in 0..2 {
            assert_eq!(o.failure(0, t1), None);
        }
        assert_eq!(o.failure(0, t1), Some(Duration::from_secs(20)));
        let t2 = t1 + Duration::from_secs(20);
        for _ in 0..2 {
            o.failure(0, t2);
        }
        assert_eq!(o.failure(0, t2), Some(Duration::from_secs(25)), "capped");
        assert_eq!(o.ejections_total(), 3);
        o.reinstate(0);
        assert!(
            !o.is_ejected(0, t2),
            "a passing health check lifts the ejection"
        );
    }

    #[test]
    fn never_ejects_more_than_max_percent() {
        let t0 = Instant::now();
        let mut o = Outliers::new(settings(), 2);
        for _ in 0..3 {
            o.failure(0, t0);
        }
        assert!(o.is_ejected(0, t0));
        for _ in 0..10 {
            assert_eq!(o.failure(1, t0), None);
        }
        assert!(!o.is_ejected(1, t0));
    }

    #[test]
    fn all_out_picks_least_recently_failed() {
        let t0 = Instant::now();
        let mut s = settings();
        s.max_ejected_percent = 100;
        let mut o = Outliers::new(s, 2);
        for _ in 0..3 {
            o.failure(0, t0);
        }
        let t1 = t0 + Duration::from_secs(1);
        for _ in 0..3 {
            o.failure(1, t1);
        }
        assert_eq!(o.usable(&[0, 1], t1), vec![0]);
        assert_eq!(o.usable(&[0, 1], t0 + Duration::from_secs(10)), vec![0]);
        assert_eq!(o.usable(&[0, 1], t1 + Duration::from_secs(10)), vec![0, 1]);
    }
}
