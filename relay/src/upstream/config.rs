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
    /// How a node is chosen among the usable ones: `"round_robin"` (smooth weighted round
    /// robin) or `"least_request"` (power of two choices on this worker's in-flight requests
    /// per node; weights are ignored). Default `"round_robin"`.
    #[serde(default)]
    pub lb: Lb,
    /// Which failures are retried, each retry on another node when there is one:
    /// `"connect"` (nothing was sent), `"reset_before_write"` (the connection failed before the
    /// whole request was written), and opt-in `"reset_after_write"`, `"502"`, `"503"` for
    /// upstreams that deduplicate by `X-Request-Id`. Default `["connect", "reset_before_write"]`.
    #[serde(default = "defaults::retry_on")]
    pub retry_on: Vec<RetryOn>,
    /// Retry budget: at most this percent of the requests to this upstream (per worker, per
    /// `retry_budget_window_ms`) may be retries, so retries cannot multiply an outage.
    /// Default 20.
    #[serde(default = "defaults::retry_budget_percent")]
    pub retry_budget_percent: u8,
    /// Retries always allowed per window, whatever the percentage (so a quiet upstream can
    /// still retry). Default 3.
    #[serde(default = "defaults::retry_budget_min")]
    pub retry_budget_min: u32,
    /// The retry budget's window, in ms. Default 10000.
    #[serde(default = "defaults::retry_budget_window_ms")]
    pub retry_budget_window_ms: u64,
    /// Node host names are re-resolved this often, in ms, by a background thread (never on the
    /// request path); 0 turns it off. IP-literal nodes are never resolved. Default 30000.
    #[serde(default = "defaults::dns_refresh_ms")]
    pub dns_refresh_ms: u64,
    /// `[upstreams.health]`: active health checks. Absent: off (every node is healthy).
    #[serde(default)]
    pub health: Option<HealthConfig>,
    /// `[upstreams.outlier]`: passive ejection of failing nodes. Absent: off.
    #[serde(default)]
    pub outlier: Option<OutlierConfig>,
    /// `[upstreams.breaker]`: circuit breaker answering 503 `upstream_unavailable`. Absent: off.
    #[serde(default)]
    pub breaker: Option<BreakerConfig>,
}

/// The `lb` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Lb {
    /// Smooth weighted round robin. Default.
    #[default]
    RoundRobin,
    /// Power of two choices on in-flight requests per node (this worker's view).
    LeastRequest,
}

/// A failure kind a retry may be allowed for (one `retry_on` entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
pub enum RetryOn {
    /// Connect refused or timed out (nothing was sent).
    #[serde(rename = "connect")]
    Connect,
    /// The connection failed before the request was fully written.
    #[serde(rename = "reset_before_write")]
    ResetBeforeWrite,
    /// The connection failed after the request was fully written, before a whole response
    /// (opt-in: the upstream must deduplicate by `X-Request-Id`).
    #[serde(rename = "reset_after_write")]
    ResetAfterWrite,
    /// The upstream answered 502 (opt-in).
    #[serde(rename = "502")]
    Status502,
    /// The upstream answered 503 (opt-in).
    #[serde(rename = "503")]
    Status503,
}

/// `[upstreams.health]`: active health checks. One worker per upstream sends a `GET path`
/// to every node each `interval_ms`, over the same TLS settings as traffic; the verdict is
/// shared with every worker through atomics. Unhealthy nodes get no traffic (when every node
/// is unhealthy, traffic goes on to all of them rather than being refused).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Request target of the probe. Default `"/health"`.
    #[serde(default = "defaults::health_path")]
    pub path: String,
    /// Time between two probes of a node, in ms. Default 5000.
    #[serde(default = "defaults::health_interval_ms")]
    pub interval_ms: u64,
    /// Deadline of one probe (connect, TLS, request and response), in ms. Default 1000.
    #[serde(default = "defaults::health_timeout_ms")]
    pub timeout_ms: u64,
    /// Consecutive passing probes that make an unhealthy node healthy again. Default 2.
    #[serde(default = "defaults::healthy_after")]
    pub healthy_after: u32,
    /// Consecutive failing probes that make a node unhealthy. Default 3.
    #[serde(default = "defaults::unhealthy_after")]
    pub unhealthy_after: u32,
    /// Statuses that count as a pass. Default `[200]`.
    #[serde(default = "defaults::expect_status")]
    pub expect_status: Vec<u16>,
}

impl HealthConfig {
    /// Records every problem under `field` (`upstreams[0].health`).
    pub fn validate(&self, field: &str, p: &mut Problems) {
        if !self.path.starts_with('/') || self.path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            p.push(
                format!("{field}.path"),
                "must be an origin-form target starting with '/', without spaces, e.g. \"/health\"",
            );
        }
        for (name, v) in [
            ("interval_ms", self.interval_ms),
            ("timeout_ms", self.timeout_ms),
        ] {
            if v == 0 {
                p.push(format!("{field}.{name}"), "must be more than 0 ms");
            }
        }
        if self.timeout_ms > self.interval_ms {
            p.push(
                format!("{field}.timeout_ms"),
                "must not exceed interval_ms (a probe must end before the next one)",
            );
        }
        if self.healthy_after == 0 {
            p.push(format!("{field}.healthy_after"), "must be at least 1");
        }
        if self.unhealthy_after == 0 {
            p.push(format!("{field}.unhealthy_after"), "must be at least 1");
        }
        if self.expect_status.is_empty() {
            p.push(
                format!("{field}.expect_status"),
                "needs at least one status, e.g. [200]",
            );
        }
        for (i, s) in self.expect_status.iter().enumerate() {
            if !(100..=599).contains(s) {
                p.push(
                    format!("{field}.expect_status[{i}]"),
                    "must be an HTTP status between 100 and 599",
                );
            }
        }
    }
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
        if self.retry_budget_percent > 100 {
            p.push(
                format!("{f}.retry_budget_percent"),
                "must be between 0 and 100",
            );
        }
        if self.retry_budget_window_ms == 0 {
            p.push(
                format!("{f}.retry_budget_window_ms"),
                "must be more than 0 ms",
            );
        }
        if self.dns_refresh_ms != 0 && self.dns_refresh_ms < 100 {
            p.push(
                format!("{f}.dns_refresh_ms"),
                "must be 0 (off) or at least 100 ms",
            );
        }
        if let Some(h) = &self.health {
            h.validate(&format!("{f}.health"), p);
        }
        if let Some(o) = &self.outlier {
            o.validate(&format!("{f}.outlier"), p);
        }
        if let Some(b) = &self.breaker {
            b.validate(&format!("{f}.breaker"), p);
        }
    }
}

/// `[upstreams.outlier]`: eject a node after consecutive failures (connect failure, reset, 5xx).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierConfig {
    /// Consecutive failures from one node that eject it. Default 5.
    #[serde(default = "defaults::consecutive_failures")]
    pub consecutive_failures: u32,
    /// First ejection time in ms; doubles on each further ejection of the node. Default 30000.
    #[serde(default = "defaults::base_ejection_ms")]
    pub base_ejection_ms: u64,
    /// Longest ejection in ms. Default 300000.
    #[serde(default = "defaults::max_ejection_ms")]
    pub max_ejection_ms: u64,
    /// At most this percent of the nodes ejected at once (one is always allowed with two or
    /// more nodes). Default 50.
    #[serde(default = "defaults::max_ejected_percent")]
    pub max_ejected_percent: u8,
}

/// `[upstreams.breaker]`: fail fast with 503 `upstream_unavailable` when the failure rate over a
/// sliding window passes a threshold.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Sliding window in ms. Default 10000.
    #[serde(default = "defaults::window_ms")]
    pub window_ms: u64,
    /// Requests needed in the window before the rate is judged. Default 20.
    #[serde(default = "defaults::min_requests")]
    pub min_requests: u32,
    /// Failure rate, in percent, at which the breaker opens. Default 50.
    #[serde(default = "defaults::failure_rate_percent")]
    pub failure_rate_percent: u8,
    /// How long the breaker stays open before probing, in ms (also the Retry-After). Default
    /// 5000.
    #[serde(default = "defaults::open_ms")]
    pub open_ms: u64,
    /// Probe requests let through half-open; all must succeed to close. Default 3.
    #[serde(default = "defaults::half_open_probes")]
    pub half_open_probes: u32,
}

impl OutlierConfig {
    /// Records every problem under `field` (`upstreams[0].outlier`).
    pub fn validate(&self, field: &str, p: &mut Problems) {
        if self.consecutive_failures == 0 {
            p.push(
                format!("{field}.consecutive_failures"),
                "must be at least 1",
            );
        }
        if self.base_ejection_ms == 0 {
            p.push(
                format!("{field}.base_ejection_ms"),
                "must be more than 0 ms",
            );
        }
        if self.max_ejection_ms < self.base_ejection_ms {
            p.push(
                format!("{field}.max_ejection_ms"),
                "must be at least base_ejection_ms",
            );
        }
        if self.max_ejected_percent > 100 {
            p.push(
                format!("{field}.max_ejected_percent"),
                "must be between 0 and 100",
            );
        }
    }
}

impl BreakerConfig {
    /// Records every problem under `field` (`upstreams[0].breaker`).
    pub fn validate(&self, field: &str, p: &mut Problems) {
        if self.window_ms < 10 {
            p.push(format!("{field}.window_ms"), "must be at least 10 ms");
        }
        if self.min_requests == 0 {
            p.push(format!("{field}.min_requests"), "must be at least 1");
        }
        if self.failure_rate_percent == 0 || self.failure_rate_percent > 100 {
            p.push(
                format!("{field}.failure_rate_percent"),
                "must be between 1 and 100",
            );
        }
        if self.open_ms == 0 {
            p.push(format!("{field}.open_ms"), "must be more than 0 ms");
        }
        if self.half_open_probes == 0 {
            p.push(format!("{field}.half_open_probes"), "must be at least 1");
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
    /// 5 failures.
    pub fn consecutive_failures() -> u32 {
        5
    }
    /// 30 s.
    pub fn base_ejection_ms() -> u64 {
        30_000
    }
    /// 300 s.
    pub fn max_ejection_ms() -> u64 {
        300_000
    }
    /// 50 %.
    pub fn max_ejected_percent() -> u8 {
        50
    }
    /// 10 s.
    pub fn window_ms() -> u64 {
        10_000
    }
    /// 20 requests.
    pub fn min_requests() -> u32 {
        20
    }
    /// 50 %.
    pub fn failure_rate_percent() -> u8 {
        50
    }
    /// 5 s.
    pub fn open_ms() -> u64 {
        5_000
    }
    /// 3 probes.
    pub fn half_open_probes() -> u32 {
        3
    }
    /// Connect failures and resets before the request was written.
    pub fn retry_on() -> Vec<crate::upstream::config::RetryOn> {
        vec![
            crate::upstream::config::RetryOn::Connect,
            crate::upstream::config::RetryOn::ResetBeforeWrite,
        ]
    }
    /// 20 %.
    pub fn retry_budget_percent() -> u8 {
        20
    }
    /// 3 retries per window.
    pub fn retry_budget_min() -> u32 {
        3
    }
    /// 10 s.
    pub fn retry_budget_window_ms() -> u64 {
        10_000
    }
    /// 30 s.
    pub fn dns_refresh_ms() -> u64 {
        30_000
    }
    /// `/health`.
    pub fn health_path() -> String {
        "/health".into()
    }
    /// 5 s.
    pub fn health_interval_ms() -> u64 {
        5_000
    }
    /// 1 s.
    pub fn health_timeout_ms() -> u64 {
        1_000
    }
    /// 2 passes.
    pub fn healthy_after() -> u32 {
        2
    }
    /// 3 failures.
    pub fn unhealthy_after() -> u32 {
        3
    }
    /// `[200]`.
    pub fn expect_status() -> Vec<u16> {
        vec![200]
    }
}
