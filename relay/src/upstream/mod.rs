//! Upstreams: nodes with weighted round robin, a per-worker keep-alive pool per node, TLS, and
//! the exchange of one request for one response.

pub mod tls;

/// Checks a node address is `host:port` with a numeric port (no resolution).
pub fn parse_node_address(addr: &str) -> Result<(String, u16), String> {
    let bad = || format!("{addr:?} is not host:port (e.g. \"10.0.0.5:443\" or \"tracking.example.com:443\")");
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}
