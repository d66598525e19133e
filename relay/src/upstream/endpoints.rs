//! One worker's view of a node's addresses: new connections go round robin over the
//! addresses a host name resolves to, an address whose connect failed is skipped for
//! [`ADDRESS_DOWN_FOR`] (unless every address has failed), and the view follows the DNS
//! refresher through the node's address generation.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long an address whose connect failed is skipped when the node has others: 10 s.
pub const ADDRESS_DOWN_FOR: Duration = Duration::from_secs(10);

/// The addresses of one node as one worker uses them.
#[derive(Debug)]
pub struct NodeAddrs {
    generation: u64,
    addrs: Arc<[SocketAddr]>,
    next: usize,
    down_until: Vec<Option<Instant>>,
}

impl NodeAddrs {
    /// The view of address set `addrs` (never empty) at `generation`.
    pub fn new(generation: u64, addrs: Arc<[SocketAddr]>) -> NodeAddrs {
        NodeAddrs {
            generation,
            down_until: vec![None; addrs.len()],
            addrs,
            next: 0,
        }
    }

    /// The address generation this view is of.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Adopts the node's current set when its generation moved on; true when it did (the
    /// caller drains its idle connections to the old set).
    pub fn follow(&mut self, generation: u64, addrs: impl FnOnce() -> Arc<[SocketAddr]>) -> bool {
        if generation == self.generation {
            return false;
        }
        *self = NodeAddrs::new(generation, addrs());
        true
    }

    /// The address for the next new connection: the next in turn that is not marked down at
    /// `now`; when all are, the next in turn anyway.
    pub fn next(&mut self, now: Instant) -> SocketAddr {
        let n = self.addrs.len();
        for k in 0..n {
            let i = (self.next + k) % n;
            if !matches!(self.down_until[i], Some(u) if now < u) {
                self.next = i + 1;
                return self.addrs[i];
            }
        }
        let i = self.next % n;
        self.next = i + 1;
        self.addrs[i]
    }

    /// Marks `addr` down for [`ADDRESS_DOWN_FOR`] after a failed connect at `now` (a no-op for
    /// a node with one address: its failures are outlier detection's business).
    pub fn failed(&mut self, addr: SocketAddr, now: Instant) {
        if self.addrs.len() < 2 {
            return;
        }
        if let Some(i) = self.addrs.iter().position(|a| *a == addr) {
            self.down_until[i] = Some(now + ADDRESS_DOWN_FOR);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(list: &[&str]) -> Arc<[SocketAddr]> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn round_robin_over_every_address() {
        let mut v = NodeAddrs::new(0, set(&["10.0.0.1:443", "10.0.0.2:443", "10.0.0.3:443"]));
        let now = Instant::now();
        let got: Vec<String> = (0..6).map(|_| v.next(now).to_string()).collect();
        assert_eq!(
            got,
            [
                "10.0.0.1:443",
                "10.0.0.2:443",
                "10.0.0.3:443",
                "10.0.0.1:443",
                "10.0.0.2:443",
                "10.0.0.3:443"
            ]
        );
    }

    #[test]
    fn a_failed_address_is_skipped_until_its_time_is_up() {
        let a: SocketAddr = "10.0.0.1:443".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:443".parse().unwrap();
        let mut v = NodeAddrs::new(0, set(&["10.0.0.1:443", "10.0.0.2:443"]));
        let t0 = Instant::now();
        v.failed(a, t0);
        for _ in 0..4 {
            assert_eq!(v.next(t0), b);
        }
        v.failed(b, t0);
        let both: Vec<SocketAddr> = (0..2).map(|_| v.next(t0)).collect();
        assert!(
            both.contains(&a) && both.contains(&b),
            "all down: round robin anyway"
        );
        let later = t0 + ADDRESS_DOWN_FOR;
        let back: Vec<SocketAddr> = (0..2).map(|_| v.next(later)).collect();
        assert!(back.contains(&a) && back.contains(&b));
    }

    #[test]
    fn a_single_address_is_never_marked_down() {
        let a: SocketAddr = "10.0.0.1:443".parse().unwrap();
        let mut v = NodeAddrs::new(0, set(&["10.0.0.1:443"]));
        v.failed(a, Instant::now());
        assert_eq!(v.next(Instant::now()), a);
    }

    #[test]
    fn follows_a_new_generation_only() {
        let mut v = NodeAddrs::new(3, set(&["10.0.0.1:443"]));
        assert!(!v.follow(3, || panic!("same generation: not read")));
        assert!(v.follow(4, || set(&["10.0.0.9:443"])));
        assert_eq!(v.generation(), 4);
        assert_eq!(v.next(Instant::now()).to_string(), "10.0.0.9:443");
    }
}
