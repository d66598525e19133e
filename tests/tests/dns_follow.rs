//! DNS followed through the system resolver, black box: relay runs in a mount namespace of its
//! own whose `/etc/hosts` is a file the test rewrites (`unshare -m` and a bind mount; root is
//! needed, as for the XDP tests). A name with two addresses gets traffic on both; a name that
//! moves to a new address is followed without a restart and without a failed request. Nothing
//! asserts on timing: the move is waited for with a generous deadline.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use relay_e2e::*;

const NAME: &str = "relay-upstream.test";

/// Two stubs on 127.0.0.2 and 127.0.0.3 with the same port (one name, two addresses).
fn twin_stubs() -> (StubUpstream, StubUpstream) {
    for _ in 0..50 {
        let first = StubUpstream::start_on(
            SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), 0),
            Behavior::default(),
        )
        .expect("bind 127.0.0.2");
        let second = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)), first.addr.port());
        if let Ok(s) = StubUpstream::start_on(second, Behavior::default()) {
            return (first, s);
        }
    }
    panic!("no port free on both 127.0.0.2 and 127.0.0.3");
}

/// relay with `hosts` bind-mounted on `/etc/hosts` in a mount namespace of its own.
fn start_with_hosts(config: &str, hosts: &Path) -> Relay {
    let script = format!(
        "mount --bind '{}' /etc/hosts && exec \"$0\" \"$@\"",
        hosts.display()
    );
    Relay::start_with(
        config,
        RelayOptions {
            prefix: vec![
                "unshare".into(),
                "-m".into(),
                "sh".into(),
                "-c".into(),
                script,
            ],
            ..RelayOptions::default()
        },
    )
}

fn config(engine: &str, port: u16, upstream_keys: &str) -> String {
    let placeholder: SocketAddr = "127.0.0.1:9".parse().unwrap();
    basic_config(engine, placeholder, "\n[admin]\nlisten = \"127.0.0.1:0\"").replace(
        "nodes = [\"127.0.0.1:9\"]",
        &format!("nodes = [\"{NAME}:{port}\"]\n{upstream_keys}"),
    )
}

fn a_name_with_two_addresses_gets_traffic_on_both(engine: &str) {
    let (a, b) = twin_stubs();
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, format!("127.0.0.2 {NAME}\n127.0.0.3 {NAME}\n")).unwrap();
    // No idle connections kept: each request opens a connection, so the spread shows.
    let relay = start_with_hosts(
        &config(engine, a.addr.port(), "max_idle_per_node = 0"),
        &hosts,
    );
    let mut c = Client::connect(relay.addr);
    for _ in 0..10 {
        assert_eq!(c.post("/v1/logs", b"{}").status, 200, "{}", relay.log());
    }
    assert_eq!(
        (a.count(), b.count()),
        (5, 5),
        "round robin over both addresses"
    );
    let (_, body) = relay.admin_get("/upstreams");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let addrs = &v["upstreams"][0]["nodes"][0]["addresses"];
    assert_eq!(
        addrs,
        &serde_json::json!([a.addr.to_string(), b.addr.to_string()]),
        "{body}"
    );
}

fn a_moved_name_is_followed_without_a_restart_or_a_failed_request(engine: &str) {
    let (old, new) = twin_stubs();
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, format!("127.0.0.2 {NAME}\n")).unwrap();
    let relay = start_with_hosts(
        &config(engine, old.addr.port(), "dns_refresh_ms = 100"),
        &hosts,
    );
    let mut c = Client::connect(relay.addr);
    for _ in 0..3 {
        assert_eq!(c.post("/v1/logs", b"{}").status, 200, "{}", relay.log());
    }
    assert_eq!(old.count(), 3);

    // The name moves (written in place: the bind mount follows the file's inode).
    std::fs::write(&hosts, format!("127.0.0.3 {NAME}\n")).unwrap();
    let mut statuses = Vec::new();
    let moved = wait_for(Duration::from_secs(30), || {
        statuses.push(c.post("/v1/logs", b"{}").status);
        (new.count() > 0).then_some(())
    });
    assert!(moved.is_some(), "relay follows the name: {}", relay.log());
    assert!(
        statuses.iter().all(|&s| s == 200),
        "no failed request while moving: {statuses:?}"
    );
    let before = old.count();
    for _ in 0..5 {
        assert_eq!(c.post("/v1/logs", b"{}").status, 200);
    }
    assert_eq!(old.count(), before, "nothing more goes to the old address");
    assert!(
        relay.log().contains("node addresses changed"),
        "{}",
        relay.log()
    );

    // A name that stops resolving keeps the last good address.
    std::fs::write(&hosts, "127.0.0.1 localhost\n").unwrap();
    let said = wait_for(Duration::from_secs(30), || {
        relay
            .log()
            .contains("keeping the last good set")
            .then_some(())
    });
    assert!(said.is_some(), "{}", relay.log());
    assert_eq!(c.post("/v1/logs", b"{}").status, 200);
    assert_eq!(new.count(), new.requests().len());
    assert!(new.count() >= 6);
}

on_both_engines!(
    a_name_with_two_addresses_gets_traffic_on_both,
    a_moved_name_is_followed_without_a_restart_or_a_failed_request,
);
