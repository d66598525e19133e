//! `[[routes.split]]`: weighted A/B or beta splits of a route's traffic over upstreams, and the
//! chooser. Weights are relative. With a sticky value (the consumer's name, or a root member
//! of the event named by `sticky = "field:<name>"`, read in the scrub walk) the side is a pure
//! function of that value: a stable hash (SHA-256 of a fixed prefix and the value, first 8
//! bytes) mapped onto the cumulative weights in configuration order, so one device always
//! lands on the same side, across workers, restarts, versions and reloads that keep the
//! weights and their order. Without one, a weighted random choice, once per request.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::dispatch::config::{SplitConfig, Sticky};
use crate::metrics::Counter;

/// One side of a compiled split.
pub struct Side {
    /// Upstream index.
    pub upstream: usize,
    /// Upstream name (the `relay-split` header and the `upstream` metric label).
    pub name: Arc<str>,
    /// Sum of the weights up to and including this side.
    cumulative: u64,
    /// `relay_split_requests_total{route, upstream}`.
    pub requests: Arc<Counter>,
}

impl std::fmt::Debug for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Side")
            .field("upstream", &self.upstream)
            .field("name", &self.name)
            .field("cumulative", &self.cumulative)
            .finish_non_exhaustive()
    }
}

/// A compiled split.
#[derive(Debug)]
pub struct Split {
    sides: Vec<Side>,
    total: u64,
    /// What keeps a client on one side.
    pub sticky: Sticky,
}

impl Split {
    /// Compiles validated sides; `counter(name)` gives each side's request counter.
    pub fn new(
        sides: &[SplitConfig],
        sticky: Sticky,
        upstream_names: &[String],
        mut counter: impl FnMut(&str) -> Arc<Counter>,
    ) -> Split {
        let mut total = 0u64;
        let sides = sides
            .iter()
            .map(|s| {
                total += u64::from(s.weight);
                Side {
                    upstream: upstream_names
                        .iter()
                        .position(|n| *n == s.upstream)
                        .unwrap_or(0),
                    name: Arc::from(s.upstream.as_str()),
                    cumulative: total,
                    requests: counter(&s.upstream),
                }
            })
            .collect();
        Split {
            sides,
            total,
            sticky,
        }
    }

    /// The sides, in configuration order.
    pub fn sides(&self) -> &[Side] {
        &self.sides
    }

    /// The side (index) for a sticky value: the same value always gives the same side.
    pub fn side_for(&self, sticky_value: &[u8]) -> usize {
        self.side_at(stable_hash(sticky_value))
    }

    /// The side (index) for a uniformly random `r` (a weighted random choice).
    pub fn side_at(&self, r: u64) -> usize {
        // Map r onto [0, total) without modulo bias worth speaking of: (r * total) >> 64.
        let point = ((u128::from(r) * u128::from(self.total)) >> 64) as u64;
        self.sides
            .iter()
            .position(|s| point < s.cumulative)
            .unwrap_or(self.sides.len().saturating_sub(1))
    }
}

/// The stable 64-bit hash of a sticky value: the first 8 bytes (big-endian) of SHA-256 over a
/// fixed, versioned prefix and the value. Never changes between relay versions (a change
/// would move every sticky client at once).
pub fn stable_hash(value: &[u8]) -> u64 {
    let mut h = Sha256::new();
    h.update(b"relay-split-v1\0");
    h.update(value);
    let d = h.finalize();
    u64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(weights: &[(&str, u32)]) -> Split {
        let cfg: Vec<SplitConfig> = weights
            .iter()
            .map(|(u, w)| SplitConfig {
                upstream: u.to_string(),
                weight: *w,
            })
            .collect();
        let names: Vec<String> = weights.iter().map(|(u, _)| u.to_string()).collect();
        Split::new(&cfg, Sticky::None, &names, |_| Arc::new(Counter::new(1)))
    }

    /// xorshift64*, the same generator family as the worker's.
    fn rng(seed: u64) -> impl FnMut() -> u64 {
        let mut x = seed | 1;
        move || {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            x.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
    }

    fn assert_proportions(counts: &[usize], weights: &[u32], n: usize, what: &str) {
        let total: u32 = weights.iter().sum();
        for (c, w) in counts.iter().zip(weights) {
            let want = n as f64 * f64::from(*w) / f64::from(total);
            let off = (*c as f64 - want).abs() / n as f64;
            assert!(
                off <= 0.02,
                "{what}: {c} of {n} for weight {w}/{total} (want {want:.0}, off by {:.2}%)",
                off * 100.0
            );
        }
    }

    #[test]
    fn ten_thousand_random_and_sticky_choices_land_within_two_percent() {
        for weights in [&[90u32, 10][..], &[1, 1, 1], &[70, 20, 10, 0], &[5, 95]] {
            let names: Vec<(String, u32)> = weights
                .iter()
                .enumerate()
                .map(|(i, w)| (format!("u{i}"), *w))
                .collect();
            let s = split(
                &names
                    .iter()
                    .map(|(n, w)| (n.as_str(), *w))
                    .collect::<Vec<_>>(),
            );
            let n = 10_000;
            let mut random = vec![0usize; weights.len()];
            let mut r = rng(0x5eed);
            for _ in 0..n {
                random[s.side_at(r())] += 1;
            }
            assert_proportions(&random, weights, n, "random");
            let mut sticky = vec![0usize; weights.len()];
            for i in 0..n {
                sticky[s.side_for(format!("device-{i:05}").as_bytes())] += 1;
            }
            assert_proportions(&sticky, weights, n, "sticky by device id");
            if let Some(zero) = weights.iter().position(|w| *w == 0) {
                assert_eq!(random[zero] + sticky[zero], 0, "a weight of 0 gets nothing");
            }
        }
    }

    #[test]
    fn changing_weights_moves_only_the_devices_between_the_boundaries() {
        let before = split(&[("tracking", 90), ("tracking-v2", 10)]);
        let after = split(&[("tracking", 8), ("tracking-v2", 2)]);
        let (mut moved, mut on_v2) = (0, 0);
        for i in 0..10_000 {
            let d = format!("device-{i}");
            let (b, a) = (before.side_for(d.as_bytes()), after.side_for(d.as_bytes()));
            assert!(!(b == 1 && a == 0), "{d} left v2 although v2 only grew");
            moved += usize::from(b != a);
            on_v2 += usize::from(a == 1);
        }
        assert!(
            (800..=1200).contains(&moved),
            "{moved} moved (about 10% should)"
        );
        assert!(
            (1800..=2200).contains(&on_v2),
            "{on_v2} on v2 (about 20% should)"
        );
    }

    #[test]
    fn a_device_keeps_its_side_across_rebuilds_and_the_hash_is_pinned() {
        let a = split(&[("tracking", 90), ("tracking-v2", 10)]);
        let b = split(&[("tracking", 90), ("tracking-v2", 10)]);
        for i in 0..1000 {
            let d = format!("dev-{i}");
            assert_eq!(a.side_for(d.as_bytes()), b.side_for(d.as_bytes()));
        }
        // Pinned: a change of the hash would move every sticky client.
        assert_eq!(stable_hash(b"device-1"), stable_hash(b"device-1"));
        let want = {
            let d = Sha256::digest(b"relay-split-v1\0device-1");
            u64::from_be_bytes(d[..8].try_into().unwrap())
        };
        assert_eq!(stable_hash(b"device-1"), want);
        // Boundaries: r = 0 is the first side, r = MAX the last with weight.
        assert_eq!(a.side_at(0), 0);
        assert_eq!(a.side_at(u64::MAX), 1);
        let z = split(&[("a", 0), ("b", 5), ("c", 0)]);
        assert_eq!((z.side_at(0), z.side_at(u64::MAX)), (1, 1));
    }
}
