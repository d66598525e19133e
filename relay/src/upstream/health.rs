//! Active health state per node, shared through atomics so every worker sees what the one
//! checking worker observed: `healthy_after` consecutive passes make a node healthy,
//! `unhealthy_after` consecutive failures make it unhealthy.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Health state of one node. Starts healthy.
#[derive(Debug)]
pub struct NodeHealth {
    healthy: AtomicBool,
    passes: AtomicU32,
    fails: AtomicU32,
    probes_total: AtomicU32,
    recoveries: AtomicU32,
}

impl Default for NodeHealth {
    fn default() -> Self {
        NodeHealth {
            healthy: AtomicBool::new(true),
            passes: AtomicU32::new(0),
            fails: AtomicU32::new(0),
            probes_total: AtomicU32::new(0),
            recoveries: AtomicU32::new(0),
        }
    }
}

impl NodeHealth {
    /// Whether the node gets traffic (read by every worker on the request path).
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Times the node turned healthy again (workers lift their outlier ejection of it when
    /// this changes).
    pub fn recoveries(&self) -> u32 {
        self.recoveries.load(Ordering::Acquire)
    }

    /// Health probes sent so far.
    pub fn probes_total(&self) -> u32 {
        self.probes_total.load(Ordering::Relaxed)
    }

    /// Takes over `old`'s verdict and counts (the same node in the configuration a reload
    /// replaced), so a reload neither reinstates an unhealthy node nor forgets its streak.
    pub fn carry_from(&self, old: &NodeHealth) {
        self.healthy
            .store(old.healthy.load(Ordering::Relaxed), Ordering::Relaxed);
        for (new, old) in [
            (&self.passes, &old.passes),
            (&self.fails, &old.fails),
            (&self.probes_total, &old.probes_total),
            (&self.recoveries, &old.recoveries),
        ] {
            new.store(old.load(Ordering::Acquire), Ordering::Release);
        }
    }

    /// Records one probe result (only the checking worker calls this). Returns the new
    /// healthy flag when it changed.
    pub fn record(&self, ok: bool, healthy_after: u32, unhealthy_after: u32) -> Option<bool> {
        self.probes_total.fetch_add(1, Ordering::Relaxed);
        if ok {
            self.fails.store(0, Ordering::Relaxed);
            let p = self.passes.fetch_add(1, Ordering::Relaxed) + 1;
            if !self.is_healthy() && p >= healthy_after.max(1) {
                self.healthy.store(true, Ordering::Relaxed);
                self.recoveries.fetch_add(1, Ordering::AcqRel);
                return Some(true);
            }
        } else {
            self.passes.store(0, Ordering::Relaxed);
            let f = self.fails.fetch_add(1, Ordering::Relaxed) + 1;
            if self.is_healthy() && f >= unhealthy_after.max(1) {
                self.healthy.store(false, Ordering::Relaxed);
                return Some(false);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds() {
        let h = NodeHealth::default();
        assert!(h.is_healthy());
        assert_eq!(h.record(false, 2, 3), None);
        assert_eq!(h.record(false, 2, 3), None);
        assert_eq!(h.record(false, 2, 3), Some(false));
        assert!(!h.is_healthy());
        assert_eq!(h.record(true, 2, 3), None);
        assert_eq!(h.record(false, 2, 3), None);
        assert_eq!(h.record(true, 2, 3), None);
        assert_eq!(h.record(true, 2, 3), Some(true));
        assert!(h.is_healthy());
        assert_eq!(h.probes_total(), 7);
        assert_eq!(h.recoveries(), 1);
    }
}
