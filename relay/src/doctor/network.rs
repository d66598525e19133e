//! The Kafka broker and upstream node rows: TCP reachability, then (upstreams with
//! `[upstreams.tls]`) a verified TLS handshake.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::config::Config;
use crate::upstream::config::UpstreamConfig;

use super::tls::tls_handshake;
use super::{Check, Status};

/// TCP connect deadline for Kafka brokers (upstreams use their own `connect_timeout_ms`).
pub const BROKER_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The Kafka bootstrap brokers of the config, `host:port` each.
///
/// The one place that knows the shape of `[kafka] brokers` (today a comma-separated string).
pub fn kafka_brokers(cfg: &Config) -> Vec<String> {
    cfg.kafka
        .as_ref()
        .map(|k| split_brokers(&k.brokers))
        .unwrap_or_default()
}

/// Splits `host:port[,host:port...]`, trimming blanks.
pub fn split_brokers(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// TCP connect to `addr` (`host:port`, resolved) within `timeout`.
pub fn tcp_connect(addr: &str, timeout: Duration) -> Result<TcpStream, String> {
    let addrs: Vec<_> = addr
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {addr}: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{addr} resolves to no address"));
    }
    let mut last = String::new();
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = format!("connect {a}: {e}"),
        }
    }
    Err(last)
}

/// One Kafka broker row.
pub fn broker_check(addr: &str) -> Check {
    let name = format!("kafka broker {addr}");
    match tcp_connect(addr, BROKER_CONNECT_TIMEOUT) {
        Ok(_) => Check::pass(name, "TCP connect ok"),
        Err(e) => Check::new(
            name,
            Status::Fail,
            format!("unreachable: {e}"),
            "check [kafka] brokers, DNS, firewalls/NetworkPolicy and that the broker listens there",
        ),
    }
}

/// One upstream node row: TCP connect within the upstream's `connect_timeout_ms`, then, when the
/// upstream has `[upstreams.tls]`, a verified TLS handshake with its CA and server name.
pub fn upstream_check(u: &UpstreamConfig, addr: &str) -> Check {
    let name = format!("upstream {} {addr}", u.name);
    let timeout = Duration::from_millis(u.connect_timeout_ms.max(1));
    let stream = match tcp_connect(addr, timeout) {
        Ok(s) => s,
        Err(e) => {
            return Check::new(
                name,
                Status::Fail,
                format!("unreachable within {} ms: {e}", u.connect_timeout_ms),
                "check the node address, DNS, egress firewall/proxy, and that the upstream listens there",
            )
        }
    };
    let Some(tls) = &u.tls else {
        return Check::pass(name, "TCP connect ok (plain HTTP)");
    };
    let host = crate::upstream::parse_node_address(addr)
        .map(|(h, _)| h)
        .unwrap_or_else(|_| addr.to_string());
    let sni = tls.server_name.clone().unwrap_or(host);
    match tls_handshake(stream, tls.ca_file.as_deref(), &sni, timeout.max(Duration::from_secs(2))) {
        Ok(d) => Check::pass(name, format!("TCP ok; TLS ok for {sni:?}: {d}")),
        Err(e) => Check::new(
            name,
            Status::Fail,
            format!("TCP ok; TLS handshake for {sni:?} failed: {e}"),
            "check [upstreams.tls] server_name and ca_file against the server's certificate chain (openssl s_client -connect ADDR -servername NAME)",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::*;
    use std::net::TcpListener;
    use std::path::Path;

    #[test]
    fn reachable_and_unreachable_nodes() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let open = l.local_addr().unwrap().to_string();
        let closed = {
            let l2 = TcpListener::bind("127.0.0.1:0").unwrap();
            l2.local_addr().unwrap().to_string()
        };
        assert_eq!(broker_check(&open).status, Status::Pass);
        let c = broker_check(&closed);
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("unreachable"), "{}", c.detail);
        let cfg = Config::from_toml(
            &format!("[server]\nlisten = \"127.0.0.1:0\"\n[[upstreams]]\nname = \"t\"\nnodes = [\"{open}\", \"{closed}\"]\n"),
            Path::new("x.toml"),
        )
        .unwrap();
        let rows = checks(Some(&cfg));
        let up: Vec<_> = rows
            .iter()
            .filter(|r| r.name.starts_with("upstream t "))
            .collect();
        assert_eq!(up.len(), 2);
        assert_eq!(up[0].status, Status::Pass, "{:?}", up[0]);
        assert_eq!(up[1].status, Status::Fail, "{:?}", up[1]);
        assert_eq!(exit_code(&rows), 1);
        assert!(rows.iter().any(|r| r.name == "listen backlog"));
    }
}
