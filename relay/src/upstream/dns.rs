//! Following DNS: a background thread per upstream re-resolves the nodes' host names every
//! `dns_refresh_ms` (blocking `getaddrinfo`, never on a worker) and points each node at its
//! new address when the old one is gone from the answer. Workers see the change through the
//! node's address generation and drain their idle connections to the old address; busy ones
//! finish and are not pooled. A failed or empty resolution keeps the last good address and
//! says so.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use super::UpstreamShared;

/// Starts the refresher of `shared` when it has a host-name node and `dns_refresh_ms` is not 0.
/// The thread ends once `alive` turns false (a reload replaced the upstream, or shutdown).
pub fn start(shared: Arc<UpstreamShared>, alive: Arc<dyn Fn() -> bool + Send + Sync>) {
    let every = shared.cfg.dns_refresh_ms;
    if every == 0 || shared.nodes.iter().all(|n| n.dns_name.is_none()) {
        return;
    }
    let name = format!("relay-dns-{}", shared.name);
    let spawned = std::thread::Builder::new().name(name).spawn(move || {
        let every = Duration::from_millis(every);
        loop {
            std::thread::sleep(every);
            if !alive() {
                return;
            }
            refresh(&shared);
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the DNS refresh thread; node addresses stay as resolved at start");
    }
}

/// Re-resolves every host-name node once with the system resolver.
pub fn refresh(shared: &UpstreamShared) {
    refresh_with(shared, |hostport| {
        hostport.to_socket_addrs().map(|a| a.collect())
    })
}

/// Re-resolves every host-name node once with `resolve` (`host:port` to addresses; tests
/// inject their own).
pub fn refresh_with(
    shared: &UpstreamShared,
    resolve: impl Fn(&str) -> std::io::Result<Vec<SocketAddr>>,
) {
    for (i, n) in shared.nodes.iter().enumerate() {
        if n.dns_name.is_none() {
            continue;
        }
        let s = &shared.node_state[i];
        match resolve(&n.label) {
            Ok(addrs) => {
                let current = s.addr();
                match next_addr(current, &addrs) {
                    None => {
                        tracing::warn!(upstream = %shared.name, node = %n.label, keeping = %current, "the name resolves to no address; keeping the last good one");
                    }
                    Some(a) if s.set_addr(a) => {
                        tracing::info!(upstream = %shared.name, node = %n.label, from = %current, to = %a, "node address changed; draining connections to the old one");
                    }
                    Some(_) => {}
                }
            }
            Err(e) => {
                tracing::warn!(upstream = %shared.name, node = %n.label, keeping = %s.addr(), error = %e, "cannot re-resolve the node's name; keeping the last good address");
            }
        }
    }
}

/// The address a node should use: the current one while the name still resolves to it (no
/// needless churn), else the first of the answer; `None` for an empty answer.
pub fn next_addr(current: SocketAddr, resolved: &[SocketAddr]) -> Option<SocketAddr> {
    if resolved.contains(&current) {
        Some(current)
    } else {
        resolved.first().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sticks_to_a_current_address_still_resolved() {
        let a: SocketAddr = "10.0.0.1:443".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:443".parse().unwrap();
        assert_eq!(next_addr(a, &[b, a]), Some(a));
        assert_eq!(next_addr(a, &[b]), Some(b));
        assert_eq!(
            next_addr(a, &[]),
            None,
            "an empty answer keeps the last good set"
        );
    }
}
