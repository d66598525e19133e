//! `[admission]`: the XDP interface and mode, guarded ports, per-source budget, allow-list and
//! overload thresholds; their defaults and their validation.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::problems::Problems;

/// `mode` in `[admission]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpModeConfig {
    /// Native (driver) XDP, falling back to generic (skb) XDP.
    #[default]
    Auto,
    /// Native XDP only.
    Driver,
    /// Generic XDP only.
    Skb,
}

/// `[admission]`: early connection admission settings.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdmissionConfig {
    /// Ingress interface the XDP program attaches to (e.g. `"eth0"`). Absent: user-space
    /// shedding at accept time only. Default absent.
    #[serde(default)]
    pub interface: Option<String>,
    /// XDP attach mode: `"auto"` (driver, then skb), `"driver"` or `"skb"`. Default `"auto"`.
    #[serde(default)]
    pub mode: XdpModeConfig,
    /// TCP ports whose new connections are judged (at most 8). Default: relay's listen port.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// New connections per second allowed from one source address; 0 disables the per-source
    /// budget. Default 1000.
    #[serde(default = "defaults::rate_per_source")]
    pub rate_per_source: u32,
    /// Bucket size: new connections a source may open at once before its rate applies.
    /// Default 2 x `rate_per_source` (at least 1).
    #[serde(default)]
    pub burst: Option<u32>,
    /// Source CIDRs never dropped (load balancer health checks...), e.g. `["10.0.0.0/8"]`.
    /// Default empty.
    #[serde(default)]
    pub allow: Vec<String>,
    /// In-flight requests on one worker at which relay counts as overloaded. Default 1024.
    #[serde(default = "defaults::inflight_high")]
    pub inflight_high: u64,
    /// Kafka queue fill (0..1) at which relay counts as overloaded. Default 0.8.
    #[serde(default = "defaults::kafka_fill_high")]
    pub kafka_fill_high: f64,
    /// Accept backlog (connections) at which relay counts as overloaded. Default 1024.
    #[serde(default = "defaults::backlog_high")]
    pub backlog_high: u64,
    /// Prebuilt relay-ebpf object to load instead of the embedded one. Default: embedded.
    #[serde(default)]
    pub object_path: Option<PathBuf>,
}

mod defaults {
    pub(super) fn rate_per_source() -> u32 {
        1000
    }
    pub(super) fn inflight_high() -> u64 {
        1024
    }
    pub(super) fn kafka_fill_high() -> f64 {
        0.8
    }
    pub(super) fn backlog_high() -> u64 {
        1024
    }
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            interface: None,
            mode: XdpModeConfig::Auto,
            ports: Vec::new(),
            rate_per_source: defaults::rate_per_source(),
            burst: None,
            allow: Vec::new(),
            inflight_high: defaults::inflight_high(),
            kafka_fill_high: defaults::kafka_fill_high(),
            backlog_high: defaults::backlog_high(),
            object_path: None,
        }
    }
}

/// A parsed allow-list entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// Network address.
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().map_err(|_| {
            format!("{s:?} is not an address or CIDR (e.g. \"10.0.0.0/8\" or \"fd00::/8\")")
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0..={max}"))?,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl AdmissionConfig {
    /// Records problems under `field`.
    pub fn validate(&self, field: &str, p: &mut Problems) {
        if let Some(i) = &self.interface {
            if i.is_empty() || i.len() > 15 || i.contains('/') || i.contains(char::is_whitespace) {
                p.push(
                    format!("{field}.interface"),
                    "must be a network interface name (1..=15 characters), e.g. \"eth0\"",
                );
            }
        }
        if self.ports.len() > relay_ebpf_common::MAX_PORTS {
            p.push(
                format!("{field}.ports"),
                format!("at most {} ports", relay_ebpf_common::MAX_PORTS),
            );
        }
        if self.ports.contains(&0) {
            p.push(
                format!("{field}.ports"),
                "port 0 cannot be guarded; list the real ports",
            );
        }
        if self.burst == Some(0) {
            p.push(
                format!("{field}.burst"),
                "must be at least 1 (or remove it for 2 x rate_per_source)",
            );
        }
        for (i, c) in self.allow.iter().enumerate() {
            if let Err(e) = c.parse::<Cidr>() {
                p.push(format!("{field}.allow[{i}]"), e);
            }
        }
        if self.inflight_high == 0 {
            p.push(format!("{field}.inflight_high"), "must be at least 1");
        }
        if !(self.kafka_fill_high > 0.0 && self.kafka_fill_high <= 1.0) {
            p.push(format!("{field}.kafka_fill_high"), "must be in (0, 1]");
        }
        if self.backlog_high == 0 {
            p.push(format!("{field}.backlog_high"), "must be at least 1");
        }
        if let Some(o) = &self.object_path {
            if !o.is_file() {
                p.push(
                    format!("{field}.object_path"),
                    format!("{} is not a file; build it with `cargo xtask build-ebpf` or remove the field", o.display()),
                );
            }
        }
    }
}
