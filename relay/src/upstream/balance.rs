//! Load balancing choice among usable nodes: `round_robin` (weighted, handled by the existing
//! smooth WRR) or `least_request`: power of two choices on this worker's in-flight count per
//! node.

pub use super::config::Lb;

/// A small xorshift generator: per worker, no locking, good enough to pick two nodes.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeds the generator (a zero seed is replaced by a constant).
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// Next value below `n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x % n as u64) as usize
    }
}

/// Power of two choices: among `usable` node indices, two random distinct ones, the one with
/// fewer in-flight requests (`in_flight[i]`). None when `usable` is empty.
pub fn p2c(usable: &[usize], in_flight: &[u32], rng: &mut Rng) -> Option<usize> {
    match usable.len() {
        0 => None,
        1 => Some(usable[0]),
        n => {
            let a = rng.below(n);
            let mut b = rng.below(n - 1);
            if b >= a {
                b += 1;
            }
            let (a, b) = (usable[a], usable[b]);
            let load = |i: usize| in_flight.get(i).copied().unwrap_or(0);
            Some(if load(b) < load(a) { b } else { a })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p2c_prefers_less_loaded() {
        let mut rng = Rng::new(7);
        let in_flight = [100, 0];
        for _ in 0..50 {
            assert_eq!(p2c(&[0, 1], &in_flight, &mut rng), Some(1));
        }
        assert_eq!(p2c(&[], &in_flight, &mut rng), None);
        assert_eq!(p2c(&[0], &in_flight, &mut rng), Some(0));
    }

    #[test]
    fn p2c_spreads_equal_load() {
        let mut rng = Rng::new(1);
        let in_flight = [0, 0, 0];
        let mut seen = [0u32; 3];
        for _ in 0..300 {
            seen[p2c(&[0, 1, 2], &in_flight, &mut rng).unwrap()] += 1;
        }
        assert!(seen.iter().all(|&c| c > 30), "{seen:?}");
    }
}
