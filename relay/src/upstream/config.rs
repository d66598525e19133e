//! `[[upstreams]]`: a tracking server's nodes, TLS, deadlines, pool sizes and response limit;
//! their defaults and their (pure) validation. The CA file is read when the upstream is built.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::problems::Problems;

/// One upstream node: `"host:port"` or `{ address = "host:port", weight = 3 }`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum NodeConfig {
    /// `host:port`, weight 1.
    Address(String),
    /// With an explicit weight.
    Weighted {
        /// `host:port`.
        address: String,
        /// Relative share of requests (weighted round robin), at least 1. Default 1.
        #[serde(default = "defaults::weight")]
        weight: u32,
    },
}

impl NodeConfig {
    /// The `host:port` string.
    pub fn address(&self) -> &str {
        match self {
            NodeConfig::Address(a) => a,
            NodeConfig::Weighted { address, .. } => address,
        }
    }
    /// The weighted-round-robin weight.
    pub fn weight(&self) -> u32 {
        match self {
            NodeConfig::Address(_) => 1,
            NodeConfig::Weighted { weight, .. } => *weight,
        }
    }
}

/// `[[upstreams]]`: one tracking server (a set of nodes).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Name routes refer to.
    pub name: String,
    /// Nodes, balanced by weighted round robin.
    pub nodes: Vec<NodeConfig>,
    /// `Host` header sent upstream. Default: the node's `host:port` (or `tls.server_name`).
    #[serde(default)]
    pub host: Option<String>,
    /// TLS to the upstream. Absent: plain HTTP.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// TCP (and TLS handshake) connect deadline, in ms; 504 when exceeded. Default 2000.
    #[serde(default = "defaults::connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Deadline to write the whole request upstream, in ms; 504. Default 5000.
    #[serde(default = "defaults::write_timeout_ms")]
    pub write_timeout_ms: u64,
    /// Deadline between two reads of the upstream's response, in ms; 504. Default 10000.
    #[serde(default = "defaults::read_timeout_ms")]
    pub read_timeout_ms: u64,
    /// Deadline for the whole response (request written through last body byte), in ms; 504.
    /// Default 30000.
    #[serde(default = "defaults::response_timeout_ms")]
    pub response_timeout_ms: u64,
    /// Most connections per node per worker, idle and busy together. A request that finds every
    /// one busy waits up to `queue_timeout_ms` for one, then gets 503 `upstream_busy`.
    /// Default 256.
    #[serde(default = "defaults::upstream_max_connections")]
    pub max_connections: usize,
    /// How long a request waits for a free upstream connection, in ms. Default 1000.
    #[serde(default = "defaults::queue_timeout_ms")]
    pub queue_timeout_ms: u64,
    /// Idle keep-alive connections kept per node per worker. Default 64.
    #[serde(default = "defaults::max_idle_per_node")]
    pub max_idle_per_node: usize,
    /// An idle pooled connection older than this is closed rather than reused, in ms. Default 30000.
    #[serde(default = "defaults::pool_idle_timeout_ms")]
    pub pool_idle_timeout_ms: u64,
    /// Largest upstream response body relayed, in bytes; larger gets 502. Default 16777216.
    #[serde(default = "defaults::max_response_bytes")]
    pub max_response_bytes: usize,
    /// Largest upstream response head (status line and headers, each interim 1xx head
    /// alike), in bytes; larger gets 502. At least 1024. Default 65536.
    #[serde(default = "defaults::max_response_header_bytes")]
    pub max_response_header_bytes: usize,
}

/// `[upstreams.tls]`: TLS to the upstream (rustls, verification always on).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of CA certificates to trust instead of the system roots. Default: system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Name sent as SNI and verified against the certificate. Default: the node's host part.
    #[serde(default)]
    pub server_name: Option<String>,
}

/// Checks a node address is `host:port` with a numeric port (no resolution).
pub fn parse_node_address(addr: &str) -> Result<(String, u16), String> {
    let bad = || {
        format!("{addr:?} is not host:port (e.g. \"10.0.0.5:443\" or \"tracking.example.com:443\")")
    };
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

impl UpstreamConfig {
    /// Resolves a relative `tls.ca_file` against the config file's directory.
    pub fn resolve_paths(&mut self, base: &Path) {
        if let Some(ca) = self.tls.as_mut().and_then(|t| t.ca_file.as_mut()) {
            if ca.is_relative() {
                *ca = base.join(&*ca);
            }
        }
    }

    /// Records every problem of this upstream under `field` (`upstreams[0]`). Reads no file.
    pub fn validate(&self, field: &str, p: &mut Problems) {
        let f = field;
        if self.nodes.is_empty() {
            p.push(
                format!("{f}.nodes"),
                "needs at least one node, e.g. [\"10.0.0.5:443\"]",
            );
        }
        for (j, n) in self.nodes.iter().enumerate() {
            if let Err(msg) = parse_node_address(n.address()) {
                p.push(format!("{f}.nodes[{j}]"), msg);
            }
            if n.weight() == 0 {
                p.push(format!("{f}.nodes[{j}].weight"), "must be at least 1");
            }
        }
        for (name, v) in [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("write_timeout_ms", self.write_timeout_ms),
            ("read_timeout_ms", self.read_timeout_ms),
            ("response_timeout_ms", self.response_timeout_ms),
            ("queue_timeout_ms", self.queue_timeout_ms),
        ] {
            if v == 0 {
                p.push(format!("{f}.{name}"), "must be more than 0 ms");
            }
        }
        if self.max_connections == 0 {
            p.push(format!("{f}.max_connections"), "must be at least 1");
        }
        if self.max_response_header_bytes < 1024 {
            p.push(
                format!("{f}.max_response_header_bytes"),
                "must be at least 1024 bytes",
            );
        }
    }
}

/// Default values, one function per field (serde needs functions).
pub mod defaults {
    /// 1.
    pub fn weight() -> u32 {
        1
    }
    /// 2 s.
    pub fn connect_timeout_ms() -> u64 {
        2_000
    }
    /// 5 s.
    pub fn write_timeout_ms() -> u64 {
        5_000
    }
    /// 10 s.
    pub fn read_timeout_ms() -> u64 {
        10_000
    }
    /// 64 connections.
    pub fn max_idle_per_node() -> usize {
        64
    }
    /// 30 s.
    pub fn pool_idle_timeout_ms() -> u64 {
        30_000
    }
    /// 16 MiB.
    pub fn max_response_bytes() -> usize {
        16 * 1024 * 1024
    }
    /// 64 KiB.
    pub fn max_response_header_bytes() -> usize {
        64 * 1024
    }
    /// 30 s.
    pub fn response_timeout_ms() -> u64 {
        30_000
    }
    /// 256 connections per node per worker.
    pub fn upstream_max_connections() -> usize {
        256
    }
    /// 1 s.
    pub fn queue_timeout_ms() -> u64 {
        1_000
    }
}
