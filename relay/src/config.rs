//! The one TOML configuration file: its types, defaults, and whole-file validation.
//!
//! Every struct is `deny_unknown_fields` and every field says its unit and default. Validation
//! collects every problem at once ([`ConfigErrors`]), each naming the field (`routes[0].upstream`)
//! and what to do about it.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::admission::AdmissionConfig;
use crate::kafka::{Delivery, KafkaConfig};
use crate::scrub::PiiPolicyConfig;
use crate::spool::SpoolConfig;

/// Bytes a Kafka record adds to the body it carries, at most: the record batch and record
/// framing (~130), the header names (~45), the route name, a request id (at most 200), a
/// content type, a key (a 64-hex-digit hash) and a key id. `relay check` requires
/// `max_body_bytes + KAFKA_RECORD_OVERHEAD <= message.max.bytes`; a request whose record
/// still does not fit (a longer content type or raw key) gets 413 and is not forwarded.
pub const KAFKA_RECORD_OVERHEAD: usize = 1024;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The data-plane listener and its workers.
    pub server: ServerConfig,
    /// The admin listener (metrics, health, reload). Absent: no admin listener.
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// Upstream tracking servers, referenced by name from routes.
    #[serde(default)]
    pub upstreams: Vec<UpstreamConfig>,
    /// Routes, matched in order; the first match wins.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// PII policies by name, referenced by routes (`pii = "default"`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pii: BTreeMap<String, PiiPolicyConfig>,
    /// The Kafka path for originals. Required when any route names a `topic`.
    #[serde(default)]
    pub kafka: Option<KafkaConfig>,
    /// The local disk spool for `delivery = "spool"` routes. Required when any route's
    /// delivery is `"spool"`.
    #[serde(default)]
    pub spool: Option<SpoolConfig>,
    /// Early connection admission (XDP, or user-space shedding without privileges).
    #[serde(default)]
    pub admission: Option<AdmissionConfig>,
    /// Logging options.
    #[serde(default)]
    pub log: LogConfig,
}

/// `[server]`: the data-plane listener, workers and HTTP limits.
#[derive(Debug, Clone, Deserialize, Serialize)]
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

/// `[admin]`: the operations listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin listener (`/metrics`, `/healthz`, `/readyz`, `POST /reload`).
    pub listen: SocketAddr,
    /// File holding the bearer token every admin endpoint but `/healthz` requires
    /// (`Authorization: Bearer <token>`); surrounding whitespace is ignored. Default: none.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Allow a non-loopback `listen` without `token_file`. Default false: `relay check` refuses it.
    #[serde(default)]
    pub allow_unauthenticated: bool,
    /// Most admin connections served at once; more are closed at accept. Default 16.
    #[serde(default = "defaults::admin_max_connections")]
    pub max_connections: usize,
    /// Deadline for a whole admin request (head read through response written), in ms.
    /// Default 5000.
    #[serde(default = "defaults::admin_request_timeout_ms")]
    pub request_timeout_ms: u64,
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

/// How a route's `path` is compared to the request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathMatch {
    /// The path (without query) equals `path`.
    #[default]
    Exact,
    /// The path starts with `path`.
    Prefix,
}

/// `[[routes]]`: which requests go where, with which policy.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Name, used in metrics labels and Kafka headers.
    pub name: String,
    /// Path to match (without query string); must start with `/`.
    pub path: String,
    /// `exact` (default) or `prefix`.
    #[serde(default, rename = "match")]
    pub path_match: PathMatch,
    /// Methods accepted, upper case. Default: any method.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Only requests with this `Host` (port ignored, case-insensitive). Default: any host.
    #[serde(default)]
    pub host: Option<String>,
    /// The upstream (by name) requests are forwarded to.
    pub upstream: String,
    /// Kafka topic receiving the original bodies. Default: none (no Kafka copy).
    #[serde(default)]
    pub topic: Option<String>,
    /// Kafka record key: `"none"` (default), `"field:<name>"` (hashed value of a PII field of the
    /// body) or `"header:<name>"` (hashed value of a request header).
    #[serde(default)]
    pub key: Option<String>,
    /// PII policy (by name) applied before forwarding. Default: none (body forwarded as is).
    #[serde(default)]
    pub pii: Option<String>,
    /// What a 2xx promises about the Kafka copy: `"memory"`, `"spool"` or `"ack"` (README
    /// "Delivery modes"). Default: `[kafka] delivery`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<Delivery>,
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
    /// 16 admin connections.
    pub fn admin_max_connections() -> usize {
        16
    }
    /// 5 s.
    pub fn admin_request_timeout_ms() -> u64 {
        5_000
    }
}

/// One validation problem: the field and what is wrong with it, including what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `routes[0].upstream`.
    pub field: String,
    /// What is wrong and what to do.
    pub message: String,
}

/// Every problem found in a configuration file.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors {
    /// The file the errors are about.
    pub file: PathBuf,
    /// The problems, in file order.
    pub errors: Vec<FieldError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: {} problem(s) in the configuration:",
            self.file.display(),
            self.errors.len()
        )?;
        for e in &self.errors {
            writeln!(f, "  - {}: {}", e.field, e.message)?;
        }
        Ok(())
    }
}

/// Collects [`FieldError`]s during validation.
#[derive(Debug, Default)]
pub struct Problems(pub Vec<FieldError>);

impl Problems {
    /// Records a problem with `field`.
    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }
}

impl Config {
    /// Reads, parses and validates `path`. Relative paths inside (key and CA files) are resolved
    /// against the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
            file: path.to_path_buf(),
            errors: vec![FieldError {
                field: "(file)".into(),
                message: format!("cannot read the file ({e}); check the path and its permissions"),
            }],
        })?;
        Self::from_toml(&text, path)
    }

    /// Parses and validates TOML text; `path` names the file in errors and anchors relative paths.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| ConfigErrors {
            file: path.to_path_buf(),
            errors: vec![toml_error(&e)],
        })?;
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        cfg.resolve_paths(&base);
        let mut problems = Problems::default();
        cfg.validate(&mut problems);
        if problems.0.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigErrors {
                file: path.to_path_buf(),
                errors: problems.0,
            })
        }
    }

    fn resolve_paths(&mut self, base: &Path) {
        for u in &mut self.upstreams {
            if let Some(tls) = &mut u.tls {
                if let Some(ca) = &mut tls.ca_file {
                    if ca.is_relative() {
                        *ca = base.join(&*ca);
                    }
                }
            }
        }
        for p in self.pii.values_mut() {
            p.resolve_paths(base);
        }
        if let Some(t) = self.admin.as_mut().and_then(|a| a.token_file.as_mut()) {
            if t.is_relative() {
                *t = base.join(&*t);
            }
        }
        if let Some(sp) = &mut self.spool {
            sp.resolve_paths(base);
        }
        if let Some(a) = &mut self.admission {
            if let Some(o) = &mut a.object_path {
                if o.is_relative() {
                    *o = base.join(&*o);
                }
            }
        }
    }

    /// Checks the whole file, recording every problem.
    pub fn validate(&self, p: &mut Problems) {
        let s = &self.server;
        if let Workers::Fixed(0) = s.workers {
            p.push("server.workers", "must be \"auto\" or at least 1");
        }
        if s.max_header_bytes < 1024 {
            p.push("server.max_header_bytes", "must be at least 1024 bytes");
        }
        if s.max_headers == 0 {
            p.push("server.max_headers", "must be at least 1");
        }
        for (field, v) in [
            ("server.max_connections", s.max_connections),
            ("server.max_chunk_line_bytes", s.max_chunk_line_bytes),
            ("server.max_trailer_bytes", s.max_trailer_bytes),
        ] {
            if v == 0 {
                p.push(field, "must be at least 1");
            }
        }
        if let Some(a) = &self.admin {
            if a.token_file.is_none() && !a.listen.ip().is_loopback() && !a.allow_unauthenticated {
                p.push(
                    "admin.listen",
                    format!(
                        "{} is reachable from other hosts but the admin port has no token; set admin.token_file (a file holding a bearer token), listen on 127.0.0.1, or set admin.allow_unauthenticated = true",
                        a.listen
                    ),
                );
            }
            if a.max_connections == 0 {
                p.push("admin.max_connections", "must be at least 1");
            }
            if a.request_timeout_ms == 0 {
                p.push("admin.request_timeout_ms", "must be more than 0 ms");
            }
        }
        for (field, v) in [
            ("server.header_timeout_ms", s.header_timeout_ms),
            ("server.body_timeout_ms", s.body_timeout_ms),
            ("server.idle_timeout_ms", s.idle_timeout_ms),
        ] {
            if v == 0 {
                p.push(field, "must be more than 0 ms");
            }
        }
        if !(0.0..=1.0).contains(&self.log.access_log_sample_rate) {
            p.push(
                "log.access_log_sample_rate",
                "must be between 0.0 and 1.0 (the fraction of requests logged)",
            );
        }

        let mut names = HashSet::new();
        for (i, u) in self.upstreams.iter().enumerate() {
            let f = format!("upstreams[{i}]");
            if !names.insert(u.name.as_str()) {
                p.push(
                    format!("{f}.name"),
                    format!(
                        "upstream {:?} is defined twice; give each a unique name",
                        u.name
                    ),
                );
            }
            if u.nodes.is_empty() {
                p.push(
                    format!("{f}.nodes"),
                    "needs at least one node, e.g. [\"10.0.0.5:443\"]",
                );
            }
            for (j, n) in u.nodes.iter().enumerate() {
                if let Err(msg) = crate::upstream::parse_node_address(n.address()) {
                    p.push(format!("{f}.nodes[{j}]"), msg);
                }
                if n.weight() == 0 {
                    p.push(format!("{f}.nodes[{j}].weight"), "must be at least 1");
                }
            }
            for (field, v) in [
                ("connect_timeout_ms", u.connect_timeout_ms),
                ("write_timeout_ms", u.write_timeout_ms),
                ("read_timeout_ms", u.read_timeout_ms),
                ("response_timeout_ms", u.response_timeout_ms),
                ("queue_timeout_ms", u.queue_timeout_ms),
            ] {
                if v == 0 {
                    p.push(format!("{f}.{field}"), "must be more than 0 ms");
                }
            }
            if u.max_connections == 0 {
                p.push(format!("{f}.max_connections"), "must be at least 1");
            }
            if let Some(tls) = &u.tls {
                if let Some(ca) = &tls.ca_file {
                    if let Err(e) = crate::upstream::tls::load_ca_file(ca) {
                        p.push(format!("{f}.tls.ca_file"), e.to_string());
                    }
                }
            }
        }

        let mut route_names = HashSet::new();
        for (i, r) in self.routes.iter().enumerate() {
            let f = format!("routes[{i}]");
            if !route_names.insert(r.name.as_str()) {
                p.push(
                    format!("{f}.name"),
                    format!(
                        "route {:?} is defined twice; give each a unique name",
                        r.name
                    ),
                );
            }
            if !r.path.starts_with('/') {
                p.push(
                    format!("{f}.path"),
                    format!("{:?} must start with '/'", r.path),
                );
            }
            for (j, m) in r.methods.iter().enumerate() {
                if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()) {
                    p.push(
                        format!("{f}.methods[{j}]"),
                        format!("{m:?} is not an upper-case HTTP method such as \"POST\""),
                    );
                }
            }
            if !self.upstreams.iter().any(|u| u.name == r.upstream) {
                p.push(
                    format!("{f}.upstream"),
                    format!(
                        "no upstream named {:?}; define it under [[upstreams]] or fix the name",
                        r.upstream
                    ),
                );
            }
            if let Some(pii) = &r.pii {
                if !self.pii.contains_key(pii) {
                    p.push(
                        format!("{f}.pii"),
                        format!("no PII policy named {pii:?}; define [pii.{pii}] or fix the name"),
                    );
                }
            }
            if r.topic.is_some() && self.kafka.is_none() {
                p.push(
                    format!("{f}.topic"),
                    "a topic needs a [kafka] section with the brokers",
                );
            }
            let delivery = r
                .delivery
                .or(self.kafka.as_ref().map(|k| k.delivery))
                .unwrap_or_default();
            if r.delivery.is_some() && r.topic.is_none() {
                p.push(
                    format!("{f}.delivery"),
                    "delivery is about the Kafka copy: set `topic` too, or remove `delivery`",
                );
            }
            if r.topic.is_some() && delivery == Delivery::Spool && self.spool.is_none() {
                p.push(
                    format!("{f}.delivery"),
                    "delivery \"spool\" needs a [spool] section (dir = \"/var/lib/relay/spool\")",
                );
            }
            if let Some(topic) = &r.topic {
                if topic.is_empty() {
                    p.push(
                        format!("{f}.topic"),
                        "must not be empty; remove it for no Kafka copy",
                    );
                }
            }
            if let Some(key) = &r.key {
                if let Err(msg) = crate::route::KeySource::parse(key) {
                    p.push(format!("{f}.key"), msg);
                } else if key.starts_with("field:") && r.pii.is_none() {
                    p.push(
                        format!("{f}.key"),
                        "a field key is the hashed PII value: set `pii` on this route too",
                    );
                }
            }
        }

        for (name, policy) in &self.pii {
            crate::scrub::validate_policy(policy, &format!("pii.{name}"), p);
        }
        if let Some(k) = &self.kafka {
            k.validate("kafka", p);
            if self.routes.iter().any(|r| r.topic.is_some()) {
                self.check_record_fits(k, p);
            }
        }
        if let Some(sp) = &self.spool {
            sp.validate("spool", p);
        }
        if s.shutdown_budget_ms <= 1000 {
            p.push(
                "server.shutdown_budget_ms",
                "must be more than 1000 ms (the whole SIGTERM sequence)",
            );
        } else if s.shutdown_grace_ms >= s.shutdown_budget_ms {
            p.push(
                "server.shutdown_grace_ms",
                format!(
                    "{} ms does not fit the shutdown budget ({} ms, server.shutdown_budget_ms) with room for the Kafka flush: lower it or raise the budget (and TimeoutStopSec / terminationGracePeriodSeconds with it)",
                    s.shutdown_grace_ms, s.shutdown_budget_ms
                ),
            );
        }
        if let Some(a) = &self.admission {
            a.validate("admission", p);
        }
    }

    /// Every body relay accepts must fit one Kafka record: otherwise librdkafka refuses it
    /// after the client got its 2xx.
    fn check_record_fits(&self, k: &KafkaConfig, p: &mut Problems) {
        let max = match k.message_max_bytes() {
            Ok(m) => m,
            Err(v) => {
                p.push(
                    "kafka.properties.\"message.max.bytes\"",
                    format!("{v:?} is not a number of bytes"),
                );
                return;
            }
        };
        let body = self.server.max_body_bytes;
        let need = body.saturating_add(KAFKA_RECORD_OVERHEAD);
        if need > max {
            let source = if k.properties.contains_key("message.max.bytes") {
                "[kafka.properties]"
            } else {
                "librdkafka's default"
            };
            p.push(
                "server.max_body_bytes",
                format!(
                    "{body} bytes + {KAFKA_RECORD_OVERHEAD} bytes of Kafka record overhead do not fit the producer's message.max.bytes ({max}, {source}): raise [kafka.properties] \"message.max.bytes\" to at least {need} (and the broker's message.max.bytes / the topic's max.message.bytes with it), or lower server.max_body_bytes to at most {}",
                    max.saturating_sub(KAFKA_RECORD_OVERHEAD)
                ),
            );
        }
    }

    /// The effective configuration (defaults filled in) as TOML, for `relay check`.
    pub fn to_effective_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot print the config: {e}\n"))
    }
}

fn toml_error(e: &toml::de::Error) -> FieldError {
    // toml's message already says the line, column and what was expected; keep it whole.
    let msg = e.message().to_string();
    let field = e
        .span()
        .map(|s| format!("(at byte {}..{})", s.start, s.end))
        .unwrap_or_else(|| "(file)".into());
    FieldError {
        field,
        message: format!("{msg}; see README.md \"Configuration reference\" for the accepted keys"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[server]
listen = "127.0.0.1:8080"
workers = "auto"
io_engine = "auto"

[[upstreams]]
name = "tracking"
nodes = ["127.0.0.1:9000"]

[[routes]]
name = "app-logs"
path = "/v1/logs"
methods = ["POST"]
upstream = "tracking"
"#;

    #[test]
    fn the_issue_example_loads_with_defaults() {
        let c = Config::from_toml(EXAMPLE, Path::new("relay.toml")).unwrap();
        assert_eq!(c.server.workers, Workers::Auto);
        assert_eq!(c.server.max_header_bytes, 65536);
        assert_eq!(c.server.max_body_bytes, 1 << 20);
        assert_eq!(c.upstreams[0].connect_timeout_ms, 2000);
        let printed = c.to_effective_toml();
        assert!(printed.contains("max_body_bytes = 1048576"), "{printed}");
        assert!(
            printed.contains("access_log_sample_rate = 1.0"),
            "{printed}"
        );
        assert_eq!(c.log.access_log_sample_rate, 1.0);
    }

    #[test]
    fn unknown_fields_and_bad_references_name_the_field() {
        let bad = EXAMPLE.replace("upstream = \"tracking\"", "upstream = \"nope\"");
        let e = Config::from_toml(&bad, Path::new("x.toml")).unwrap_err();
        assert_eq!(e.errors[0].field, "routes[0].upstream");
        assert!(e.errors[0].message.contains("nope"));

        let bad = EXAMPLE.replace("io_engine = \"auto\"", "io_engine = \"auto\"\nworkerz = 2");
        let e = Config::from_toml(&bad, Path::new("x.toml")).unwrap_err();
        assert!(e.to_string().contains("workerz"), "{e}");

        let bad = EXAMPLE.replace("workers = \"auto\"", "workers = 0");
        let e = Config::from_toml(&bad, Path::new("x.toml")).unwrap_err();
        assert!(e.to_string().contains("at least 1"), "{e}");
    }

    fn with_kafka(route_extra: &str, tail: &str) -> String {
        EXAMPLE.replace(
            "upstream = \"tracking\"\n",
            &format!("upstream = \"tracking\"\ntopic = \"t\"\n{route_extra}\n[kafka]\nbrokers = \"127.0.0.1:9092\"\n{tail}"),
        )
    }

    #[test]
    fn a_body_limit_kafka_cannot_carry_is_refused_with_the_value_to_raise() {
        let e = Config::from_toml(&with_kafka("", ""), Path::new("x.toml")).unwrap_err();
        let f = e
            .errors
            .iter()
            .find(|f| f.field == "server.max_body_bytes")
            .unwrap_or_else(|| panic!("{e}"));
        assert!(
            f.message
                .contains("message.max.bytes (1000000, librdkafka's default)")
                && f.message.contains("at least 1049600")
                && f.message.contains("at most 998976"),
            "{}",
            f.message
        );
        let ok = with_kafka(
            "",
            "[kafka.properties]\n\"message.max.bytes\" = \"1049600\"\n",
        );
        Config::from_toml(&ok, Path::new("x.toml")).unwrap();
        let smaller = with_kafka("", "").replace(
            "io_engine = \"auto\"",
            "io_engine = \"auto\"\nmax_body_bytes = 998976",
        );
        Config::from_toml(&smaller, Path::new("x.toml")).unwrap();
    }

    #[test]
    fn spool_delivery_needs_a_spool_section() {
        let props = "[kafka.properties]\n\"message.max.bytes\" = \"1049600\"\n";
        let e = Config::from_toml(
            &with_kafka("delivery = \"spool\"", props),
            Path::new("x.toml"),
        )
        .unwrap_err();
        assert_eq!(e.errors[0].field, "routes[0].delivery", "{e}");
        assert!(e.errors[0].message.contains("[spool]"), "{e}");
        let ok = format!(
            "{}\n[spool]\ndir = \"spool\"\n",
            with_kafka("delivery = \"spool\"", props)
        );
        let c = Config::from_toml(&ok, Path::new("/etc/relay/x.toml")).unwrap();
        assert_eq!(
            c.spool.unwrap().dir,
            Path::new("/etc/relay/spool"),
            "relative to the file"
        );
        let ack = with_kafka("delivery = \"ack\"", props);
        Config::from_toml(&ack, Path::new("x.toml")).unwrap();
    }
}
