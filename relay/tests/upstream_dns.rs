//! Following DNS without a restart: a node whose name resolves to a new address is moved
//! there by the refresher (here with an injected resolver), and a worker's next request goes
//! to the new address with no failed request, its idle connections to the old one drained. A
//! failed or empty resolution keeps the last good address; a name with several addresses
//! spreads new connections over them and skips one that refuses. Real sockets: stub upstreams.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use relay::metrics::Metrics;
use relay::upstream::{dns, Upstream, UpstreamShared};
use relay_e2e::{Behavior, StubUpstream};

fn upstream_config(node: &str) -> relay::upstream::UpstreamConfig {
    upstream_config_with(node, "")
}

/// The upstream of a minimal config with node `node` and `extra` upstream keys.
fn upstream_config_with(node: &str, extra: &str) -> relay::upstream::UpstreamConfig {
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
workers = 1

[[upstreams]]
name = "tracking"
nodes = ["{node}"]
{extra}

[[routes]]
name = "r"
path = "/v1/logs"
methods = ["POST"]
upstream = "tracking"
"#
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.toml");
    relay::config::Config::from_toml(&text, &path)
        .unwrap_or_else(|e| panic!("{e}"))
        .upstreams
        .remove(0)
}

fn request() -> Vec<u8> {
    b"POST /v1/logs HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}".to_vec()
}

#[test]
fn a_moved_name_is_followed_without_failed_requests() {
    let old = StubUpstream::start(Behavior::default());
    let new = StubUpstream::start(Behavior::default());
    let port = old.addr.port();
    let cfg = upstream_config(&format!("localhost:{port}"));
    let metrics = Metrics::new(1);
    let shared = Arc::new(UpstreamShared::build(&cfg, metrics.upstream("tracking")).unwrap());
    // Pin the starting point: "localhost" may resolve to ::1 first.
    let answer: Arc<Mutex<std::io::Result<Vec<SocketAddr>>>> =
        Arc::new(Mutex::new(Ok(vec![old.addr])));
    let resolve = {
        let a = answer.clone();
        move |_: &str| match &*a.lock().unwrap() {
            Ok(v) => Ok(v.clone()),
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        }
    };
    dns::refresh_with(&shared, &resolve);
    assert_eq!(shared.node_state[0].addr(), old.addr);

    let up = Upstream::new(shared.clone(), 0);
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    rt.block_on(async {
        for _ in 0..3 {
            assert_eq!(up.exchange(request(), false).await.unwrap().status, 200);
        }
        assert_eq!(old.count(), 3);
        assert_eq!(
            up.idle_count(),
            1,
            "one keep-alive connection to the old address"
        );

        // The name now points at the new address (the new port stands in for a new IP).
        *answer.lock().unwrap() = Ok(vec![new.addr]);
        dns::refresh_with(&shared, &resolve);
        assert_eq!(shared.node_state[0].addr(), new.addr);
        for _ in 0..3 {
            assert_eq!(up.exchange(request(), false).await.unwrap().status, 200);
        }
        assert_eq!(old.count(), 3, "nothing more goes to the vanished address");
        assert_eq!(new.count(), 3);
        assert_eq!(
            up.idle_count(),
            1,
            "the old address's idle connection was drained"
        );

        // A failed and an empty resolution keep the last good address.
        *answer.lock().unwrap() = Err(std::io::Error::other("SERVFAIL"));
        dns::refresh_with(&shared, &resolve);
        assert_eq!(shared.node_state[0].addr(), new.addr);
        *answer.lock().unwrap() = Ok(vec![]);
        dns::refresh_with(&shared, &resolve);
        assert_eq!(shared.node_state[0].addr(), new.addr);
        assert_eq!(up.exchange(request(), false).await.unwrap().status, 200);
        assert_eq!(new.count(), 4);
    });
}

#[test]
fn a_name_with_several_addresses_uses_them_all_and_skips_a_dead_one() {
    let a = StubUpstream::start(Behavior::default());
    let b = StubUpstream::start(Behavior::default());
    // No idle connections kept: every request opens a new connection, so the spread shows.
    let cfg = upstream_config_with(
        &format!("localhost:{}", a.addr.port()),
        "max_idle_per_node = 0",
    );
    let metrics = Metrics::new(1);
    let shared = Arc::new(UpstreamShared::build(&cfg, metrics.upstream("tracking")).unwrap());
    // The two stub ports stand in for two addresses of one name.
    dns::refresh_with(&shared, |_| Ok(vec![b.addr, a.addr, a.addr]));
    let mut sorted = vec![a.addr, b.addr];
    sorted.sort();
    assert_eq!(&*shared.node_state[0].addrs(), sorted.as_slice());

    let up = Upstream::new(shared.clone(), 0);
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    rt.block_on(async {
        for _ in 0..6 {
            assert_eq!(up.exchange(request(), false).await.unwrap().status, 200);
        }
        assert_eq!(
            (a.count(), b.count()),
            (3, 3),
            "round robin over both addresses"
        );

        // One address stops answering: the request that meets it is retried on the other,
        // and the dead one is skipped afterwards.
        let dead = relay_e2e::dead_addr();
        dns::refresh_with(&shared, |_| Ok(vec![a.addr, dead]));
        for _ in 0..10 {
            assert_eq!(up.exchange(request(), false).await.unwrap().status, 200);
        }
        assert_eq!(a.count(), 13, "every request answered by the live address");
        assert!(
            metrics.upstream("tracking").retries.sum() <= 1,
            "at most one connect met the dead address"
        );
    });
}

#[test]
fn ip_literal_nodes_are_never_re_resolved() {
    let up = StubUpstream::start(Behavior::default());
    let cfg = upstream_config(&up.addr.to_string());
    let shared = UpstreamShared::build(&cfg, Metrics::new(1).upstream("tracking")).unwrap();
    dns::refresh_with(&shared, |_| panic!("an IP literal is not resolved"));
    assert_eq!(shared.node_state[0].addr(), up.addr);
}
