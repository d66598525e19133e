//! `[[routes]]`: which requests go where (path, methods, host), the upstream, Kafka topic, key,
//! PII policy and delivery mode; the key-source syntax; the route's own checks (references to
//! upstreams, policies and sections are checked by `crate::config`, which composes them).

use serde::{Deserialize, Serialize};

use crate::auth::config::AuthMode;
use crate::coding::ForwardEncoding;
use crate::kafka::config::Delivery;
use crate::limit::config::LimitConfig;
use crate::problems::Problems;

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
    /// Consumer authentication: `"none"` (default), `"optional"` or `"required"` (README
    /// "Consumers and limits").
    #[serde(default)]
    pub auth: AuthMode,
    /// Consumers (by name) allowed on this route; others get 403. Default: every consumer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<String>,
    /// Forward the credential header (API key or `Authorization`) upstream. Default false:
    /// the header that authenticated the request is stripped.
    #[serde(default)]
    pub forward_credentials: bool,
    /// Limits over all of this route's requests (every consumer). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitConfig>,
    /// Most bytes a compressed (`Content-Encoding`) request body may decode to; more gets 413
    /// `decoded_body_too_large`. Default: `server.max_body_bytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_decoded_bytes: Option<u64>,
    /// Most decoded bytes per encoded byte of a compressed request body (the bomb guard); more
    /// gets 413 `expansion_ratio_exceeded`. Default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_expansion_ratio: Option<u32>,
    /// What the upstream gets for a compressed request body: `"identity"` (default: the
    /// scrubbed body decoded, without `Content-Encoding`) or `"same"` (encoded again with the
    /// request's coding).
    #[serde(default)]
    pub forward_encoding: ForwardEncoding,
}

/// Where a route's Kafka record key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// No key (librdkafka spreads records over partitions).
    None,
    /// The hashed value of this PII field of the body.
    Field(String),
    /// The hashed value of this request header (lower case name).
    Header(String),
}

impl KeySource {
    /// Parses `"none"`, `"field:<name>"` or `"header:<name>"`.
    pub fn parse(s: &str) -> Result<KeySource, String> {
        if s == "none" {
            return Ok(KeySource::None);
        }
        if let Some(f) = s.strip_prefix("field:") {
            if !f.is_empty() {
                return Ok(KeySource::Field(f.to_string()));
            }
        }
        if let Some(h) = s.strip_prefix("header:") {
            if !h.is_empty() {
                return Ok(KeySource::Header(h.to_ascii_lowercase()));
            }
        }
        Err(format!(
            "{s:?} is not a key source: use \"none\", \"field:<pii field>\" or \"header:<name>\""
        ))
    }
}

impl RouteConfig {
    /// Records the problems of this route's own fields under `field` (`routes[0]`).
    pub fn validate(&self, field: &str, p: &mut Problems) {
        let f = field;
        if !self.path.starts_with('/') {
            p.push(
                format!("{f}.path"),
                format!("{:?} must start with '/'", self.path),
            );
        }
        for (j, m) in self.methods.iter().enumerate() {
            if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()) {
                p.push(
                    format!("{f}.methods[{j}]"),
                    format!("{m:?} is not an upper-case HTTP method such as \"POST\""),
                );
            }
        }
        if self.delivery.is_some() && self.topic.is_none() {
            p.push(
                format!("{f}.delivery"),
                "delivery is about the Kafka copy: set `topic` too, or remove `delivery`",
            );
        }
        if let Some(topic) = &self.topic {
            if topic.is_empty() {
                p.push(
                    format!("{f}.topic"),
                    "must not be empty; remove it for no Kafka copy",
                );
            }
        }
        if let Some(l) = &self.limits {
            l.validate(&format!("{f}.limits"), p);
        }
        crate::coding::config::validate(self.max_decoded_bytes, self.max_expansion_ratio, f, p);
        if !self.consumers.is_empty() && self.auth == AuthMode::None {
            p.push(
                format!("{f}.consumers"),
                "naming consumers needs auth = \"required\" (or \"optional\") on this route",
            );
        }
        if let Some(key) = &self.key {
            if let Err(msg) = KeySource::parse(key) {
                p.push(format!("{f}.key"), msg);
            } else if key.starts_with("field:") && self.pii.is_none() {
                p.push(
                    format!("{f}.key"),
                    "a field key is the hashed PII value: set `pii` on this route too",
                );
            }
        }
    }
}
