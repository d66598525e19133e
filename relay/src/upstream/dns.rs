//! Following DNS: a background thread per upstream re-resolves the nodes' host names every
//! `dns_refresh_ms` (blocking `getaddrinfo`, never on a worker) and points each node at the
//! addresses of the answer when they changed (all of them: a name with several addresses
//! spreads its connections over them). Workers see the change through the node's address
//! generation and drain their idle connections to the old set; busy ones finish and are not
//! pooled. A failed or empty resolution keeps the last good set and says so.

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
            Ok(resolved) => {
                let addrs = usable_addrs(&resolved);
                if addrs.is_empty() {
                    tracing::warn!(upstream = %shared.name, node = %n.label, keeping = ?s.addrs(), "the name resolves to no address; keeping the last good set");
                } else {
                    let before = s.addrs();
                    if s.set_addrs(&addrs) {
                        tracing::info!(upstream = %shared.name, node = %n.label, from = ?before, to = ?addrs, "node addresses changed; draining connections to the old ones");
                    }
                }
            }
            Err(e) => {
                tracing::warn!(upstream = %shared.name, node = %n.label, keeping = ?s.addrs(), error = %e, "cannot re-resolve the node's name; keeping the last good set");
            }
        }
    }
}

/// The addresses of a resolver answer relay uses: the IPv4 ones when there are any (as
/// Envoy's default `V4_PREFERRED`: `localhost` answers `::1` too, and most upstreams listen
/// on IPv4), else the IPv6 ones; sorted and without duplicates, so an answer that only
/// reorders (round-robin DNS) changes nothing. Empty for an empty answer.
pub fn usable_addrs(resolved: &[SocketAddr]) -> Vec<SocketAddr> {
    let v4 = resolved.iter().any(|a| a.is_ipv4());
    let mut out: Vec<SocketAddr> = resolved
        .iter()
        .copied()
        .filter(|a| a.is_ipv4() == v4)
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_address_sorted_ipv4_preferred() {
        let a: SocketAddr = "10.0.0.1:443".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:443".parse().unwrap();
        let v6: SocketAddr = "[::1]:443".parse().unwrap();
        assert_eq!(usable_addrs(&[b, a, b]), vec![a, b], "sorted, deduplicated");
        assert_eq!(usable_addrs(&[v6, b, a]), vec![a, b], "IPv4 preferred");
        assert_eq!(
            usable_addrs(&[v6]),
            vec![v6],
            "IPv6 when there is nothing else"
        );
        assert!(
            usable_addrs(&[]).is_empty(),
            "an empty answer: the caller keeps the last good set"
        );
    }
}
