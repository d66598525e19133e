//! `[server]` and `[log]`: the data-plane listener, its workers, HTTP limits and deadlines, the
//! shutdown budget, and the access log; their defaults and their validation.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::problems::Problems;

/// `[server]`: the data-plane listener, workers and HTTP limits.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on, `host:port`. Port 0 picks a free port (tests).
    pub listen: SocketAddr,
    /// Worker threads: `"auto"` (the CPU quota the process really has) or a number. Default auto.
    #[serde(default)]
    pub workers: Workers,
    /// I/O driver: `"auto"` (io_uring, falling back to epoll), `"io_uring"` or `"epoll"`. Default auto.
    #[serde(default)]
    pub io_engine: IoEngine,
    /// Listen backlog (connections). Default 4096.
    #[serde(default = "defaults::backlog")]
    pub backlog: u32,
    /// Largest request line + headers, in bytes; larger gets 431. Default 65536 (64 KiB).
    #[serde(default = "defaults::max_header_bytes")]
    pub max_header_bytes: usize,
    /// Most request headers; more gets 431. Default 100.
    #[serde(default = "defaults::max_headers")]
    pub max_headers: usize,
    /// Largest request body after de-chunking, in bytes; larger gets 413. Default 1048576 (1 MiB).
    #[serde(default = "defaults::max_body_bytes")]
    pub max_body_bytes: usize,
    /// Deadline to receive a whole request head once its first byte arrived, in ms; 408. Default 10000.
    #[serde(default = "defaults::header_timeout_ms")]
    pub header_timeout_ms: u64,
    /// Deadline to receive a whole request body once the head arrived, in ms; 408. Default 30000.
    #[serde(default = "defaults::body_timeout_ms")]
    pub body_timeout_ms: u64,
    /// How long an idle keep-alive connection is kept open waiting for the next request, in ms.
    /// Default 60000.
    #[serde(default = "defaults::idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// After a response, how long a keep-alive connection keeps its read buffer and a receive
    /// posted for the next request, in ms. The next request usually follows within a few ms:
    /// it is then read in one receive, where an idle connection first waits for readability
    /// (one more kernel operation per request) without a buffer. 0 = always wait without a
    /// buffer. Memory: 16 KiB per connection answered within the window. Default 20.
    #[serde(default = "defaults::keepalive_read_window_ms")]
    pub keepalive_read_window_ms: u64,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish, in ms. Default 30000.
    #[serde(default = "defaults::shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
    /// The whole SIGTERM sequence (STOPPING=1, drain within `shutdown_grace_ms`, then the
    /// Kafka flush with what is left, spool stop) ends within this many ms. Keep it below
    /// systemd's `TimeoutStopSec` and Kubernetes' `terminationGracePeriodSeconds` (minus any
    /// preStop sleep). Default 38000.
    #[serde(default = "defaults::shutdown_budget_ms")]
    pub shutdown_budget_ms: u64,
    /// Most requests answered on one client connection before relay closes it (0 = no limit).
    /// Default 0.
    #[serde(default)]
    pub max_requests_per_connection: u64,
    /// Most open client connections per worker; a connection over it is closed at accept and
    /// counted in `relay_connections_refused_total{reason="max_connections"}`. Default 16384.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    /// Longest chunk-size line of a chunked request body (size + extensions), in bytes; longer
    /// gets 400 `chunk_line_too_large`. Default 4096.
    #[serde(default = "defaults::max_chunk_line_bytes")]
    pub max_chunk_line_bytes: usize,
    /// Largest trailer section of a chunked request body, in bytes; larger gets 400
    /// `trailer_too_large`. Default 16384.
    #[serde(default = "defaults::max_trailer_bytes")]
    pub max_trailer_bytes: usize,
}

/// Worker count: `"auto"` or an explicit number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Workers {
    /// From the CPU quota (cgroup v2/v1) capped by the affinity mask.
    #[default]
    Auto,
    /// Exactly this many workers.
    Fixed(usize),
}

impl Serialize for Workers {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Workers::Auto => s.serialize_str("auto"),
            Workers::Fixed(n) => s.serialize_u64(*n as u64),
        }
    }
}

impl<'de> Deserialize<'de> for Workers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(i64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) if n >= 1 => Ok(Workers::Fixed(n as usize)),
            Raw::N(n) => Err(serde::de::Error::custom(format!(
                "workers = {n} is not allowed: use \"auto\" or a number of at least 1"
            ))),
            Raw::S(s) if s == "auto" => Ok(Workers::Auto),
            Raw::S(s) => Err(serde::de::Error::custom(format!(
                "workers = {s:?} is not allowed: use \"auto\" or a number of at least 1"
            ))),
        }
    }
}

/// Which monoio driver each worker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IoEngine {
    /// io_uring when the kernel (and any seccomp filter) allows it, epoll otherwise.
    #[default]
    Auto,
    /// io_uring only; start fails if it is unavailable.
    IoUring,
    /// The epoll (legacy) driver.
    Epoll,
}

/// `[log]`: logging.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Access log: one DEBUG-independent line per sampled request. Default off.
    #[serde(default)]
    pub access_log: bool,
    /// Fraction of requests written to the access log, 0.0..=1.0. Default 1.0.
    #[serde(default = "defaults::sample_rate")]
    pub access_log_sample_rate: f64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            access_log: false,
            access_log_sample_rate: defaults::sample_rate(),
        }
    }
}

impl ServerConfig {
    /// Records every problem of `[server]` under `field` (`server`).
    pub fn validate(&self, field: &str, p: &mut Problems) {
        if let Workers::Fixed(0) = self.workers {
            p.push(format!("{field}.workers"), "must be \"auto\" or at least 1");
        }
        if self.max_header_bytes < 1024 {
            p.push(
                format!("{field}.max_header_bytes"),
                "must be at least 1024 bytes",
            );
        }
        for (name, v) in [
            ("max_headers", self.max_headers),
            ("max_connections", self.max_connections),
            ("max_chunk_line_bytes", self.max_chunk_line_bytes),
            ("max_trailer_bytes", self.max_trailer_bytes),
        ] {
            if v == 0 {
                p.push(format!("{field}.{name}"), "must be at least 1");
            }
        }
        for (name, v) in [
            ("header_timeout_ms", self.header_timeout_ms),
            ("body_timeout_ms", self.body_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
        ] {
            if v == 0 {
                p.push(format!("{field}.{name}"), "must be more than 0 ms");
            }
        }
        if self.keepalive_read_window_ms >= self.idle_timeout_ms {
            p.push(
                format!("{field}.keepalive_read_window_ms"),
                format!(
                    "{} ms must be less than server.idle_timeout_ms ({} ms): it is the part of the idle time a connection keeps its read buffer (try 20, or 0 to never keep it)",
                    self.keepalive_read_window_ms, self.idle_timeout_ms
                ),
            );
        }
        if self.shutdown_budget_ms <= 1000 {
            p.push(
                format!("{field}.shutdown_budget_ms"),
                "must be more than 1000 ms (the whole SIGTERM sequence)",
            );
        } else if self.shutdown_grace_ms >= self.shutdown_budget_ms {
            p.push(
                format!("{field}.shutdown_grace_ms"),
                format!(
                    "{} ms does not fit the shutdown budget ({} ms, server.shutdown_budget_ms) with room for the Kafka flush: lower it or raise the budget (and TimeoutStopSec / terminationGracePeriodSeconds with it)",
                    self.shutdown_grace_ms, self.shutdown_budget_ms
                ),
            );
        }
    }
}

impl LogConfig {
    /// Records every problem of `[log]` under `field` (`log`).
    pub fn validate(&self, field: &str, p: &mut Problems) {
        if !(0.0..=1.0).contains(&self.access_log_sample_rate) {
            p.push(
                format!("{field}.access_log_sample_rate"),
                "must be between 0.0 and 1.0 (the fraction of requests logged)",
            );
        }
    }
}

/// Default values, one function per field (serde needs functions).
pub mod defaults {
    /// 4096 connections.
    pub fn backlog() -> u32 {
        4096
    }
    /// 64 KiB.
    pub fn max_header_bytes() -> usize {
        64 * 1024
    }
    /// 100 headers.
    pub fn max_headers() -> usize {
        100
    }
    /// 1 MiB.
    pub fn max_body_bytes() -> usize {
        1024 * 1024
    }
    /// 10 s.
    pub fn header_timeout_ms() -> u64 {
        10_000
    }
    /// 30 s.
    pub fn body_timeout_ms() -> u64 {
        30_000
    }
    /// 60 s.
    pub fn idle_timeout_ms() -> u64 {
        60_000
    }
    /// 20 ms.
    pub fn keepalive_read_window_ms() -> u64 {
        20
    }
    /// 30 s.
    pub fn shutdown_grace_ms() -> u64 {
        30_000
    }
    /// 38 s.
    pub fn shutdown_budget_ms() -> u64 {
        38_000
    }
    /// 1.0 (every request).
    pub fn sample_rate() -> f64 {
        1.0
    }
    /// 16384 client connections per worker.
    pub fn max_connections() -> usize {
        16_384
    }
    /// 4 KiB.
    pub fn max_chunk_line_bytes() -> usize {
        4096
    }
    /// 16 KiB.
    pub fn max_trailer_bytes() -> usize {
        16 * 1024
    }
}
