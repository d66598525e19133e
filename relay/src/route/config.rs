//! `[[routes]]`: which requests go where (path, methods, host), the upstream, Kafka topic, key,
//! PII policy and delivery mode, payload rules (`[[routes.match]]`) and weighted splits
//! (`[[routes.split]]`); the key-source syntax; the route's own checks (references to
//! upstreams, policies and sections are checked by `crate::config`, which composes them).

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::auth::config::AuthMode;
use crate::coding::config::ForwardEncoding;
use crate::dispatch::config::{
    validate_split, MatchRuleConfig, SplitConfig, Sticky, MAX_MATCH_RULES,
};
use crate::kafka::config::Delivery;
use crate::limit::config::LimitConfig;
use crate::problems::Problems;
use relay_scrub::CaptureSpec;

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

/// What the TOML key `match` of a route holds: the path mode (`"exact"` / `"prefix"`) or the
/// payload rules (`[[routes.match]]` tables).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteMatch {
    /// `match = "exact" | "prefix"`.
    Path(PathMatch),
    /// `[[routes.match]]` tables.
    Rules(Vec<MatchRuleConfig>),
}

impl Default for RouteMatch {
    fn default() -> Self {
        RouteMatch::Path(PathMatch::Exact)
    }
}

impl RouteMatch {
    /// The payload rules (none for a path mode).
    pub fn rules(&self) -> &[MatchRuleConfig] {
        match self {
            RouteMatch::Rules(r) => r,
            RouteMatch::Path(_) => &[],
        }
    }
}

impl Serialize for RouteMatch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            RouteMatch::Path(p) => p.serialize(s),
            RouteMatch::Rules(r) => r.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for RouteMatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RouteMatch;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "the path mode \"exact\" or \"prefix\", or [[routes.match]] tables \
                     (field or header, equals, upstream, topic)",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RouteMatch, E> {
                match v {
                    "exact" => Ok(RouteMatch::Path(PathMatch::Exact)),
                    "prefix" => Ok(RouteMatch::Path(PathMatch::Prefix)),
                    other => Err(E::invalid_value(de::Unexpected::Str(other), &self)),
                }
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RouteMatch, A::Error> {
                let mut rules = Vec::new();
                while let Some(r) = seq.next_element::<MatchRuleConfig>()? {
                    rules.push(r);
                }
                Ok(RouteMatch::Rules(rules))
            }
        }
        d.deserialize_any(V)
    }
}

/// `[[routes]]`: which requests go where, with which policy.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Name, used in metrics labels and Kafka headers.
    pub name: String,
    /// Path to match (without query string); must start with `/`.
    pub path: String,
    /// `match = "exact"` (default) or `"prefix"`: the path mode; or `[[routes.match]]` tables:
    /// payload routing rules (`crate::route::matching`), tried in order, first match wins.
    #[serde(default, rename = "match")]
    pub matching: RouteMatch,
    /// The path mode spelled apart, for a route whose `match` holds rules: `"exact"` or
    /// `"prefix"`. Default: `match`'s path mode, else `"exact"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_match: Option<PathMatch>,
    /// An NDJSON batch whose lines go to different destinations (rules, split sides) is
    /// forwarded as one request per destination (lines in order) instead of refused with 422
    /// `mixed_destinations`. Default false.
    #[serde(default)]
    pub split_batches: bool,
    /// `[[routes.split]]`: weighted sides (upstreams) sharing the traffic no rule took.
    /// Default: none (all of it to `upstream`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub split: Vec<SplitConfig>,
    /// What keeps a client on one side of the split: `"consumer"` or `"field:<name>"` (a root
    /// member of each event, hashed). Default: none (a weighted random choice per request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<String>,
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
    /// The path mode: `path_match`, else `match`'s, else exact.
    pub fn path_mode(&self) -> PathMatch {
        match (self.path_match, &self.matching) {
            (Some(m), _) => m,
            (None, RouteMatch::Path(m)) => *m,
            (None, RouteMatch::Rules(_)) => PathMatch::Exact,
        }
    }

    /// The payload rules (`[[routes.match]]`).
    pub fn rules(&self) -> &[MatchRuleConfig] {
        self.matching.rules()
    }

    /// Whether originals of this route go to Kafka (its `topic`, or a rule's).
    pub fn has_topic(&self) -> bool {
        self.topic.is_some() || self.rules().iter().any(|r| r.topic.is_some())
    }

    /// The sticky source (`None` when unset or invalid; validation reports the latter).
    pub fn sticky_source(&self) -> Sticky {
        self.sticky
            .as_deref()
            .and_then(|s| Sticky::parse(s).ok())
            .unwrap_or(Sticky::None)
    }

    /// The root members the scrub walk captures for this route: the rules' fields, then the
    /// sticky field.
    pub fn capture_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .rules()
            .iter()
            .filter_map(|r| r.field.as_deref())
            .collect();
        let sticky_field = self
            .sticky
            .as_deref()
            .and_then(|s| s.strip_prefix("field:"))
            .filter(|f| !f.is_empty() && !self.split.is_empty());
        names.extend(sticky_field);
        names
    }

    /// Records the problems of the payload rules, the split and `split_batches` under `f`.
    fn validate_dispatch(&self, f: &str, p: &mut Problems) {
        let rules = self.rules();
        if let (Some(_), RouteMatch::Path(m)) = (self.path_match, &self.matching) {
            if *m != PathMatch::Exact {
                p.push(
                    format!("{f}.path_match"),
                    "the path mode is set twice (`match` and `path_match`): keep `path_match`",
                );
            }
        }
        if rules.len() > MAX_MATCH_RULES {
            p.push(
                format!("{f}.match"),
                format!(
                    "{} rules: a route has at most {MAX_MATCH_RULES}",
                    rules.len()
                ),
            );
        }
        for (j, r) in rules.iter().enumerate() {
            r.validate(&format!("{f}.match[{j}]"), p);
            if r.field.is_some() && self.pii.is_none() {
                p.push(
                    format!("{f}.match[{j}].field"),
                    "a field rule reads the body in the PII scrub pass: set `pii` on this route (or match on a `header`)",
                );
            }
        }
        validate_split(&self.split, &format!("{f}.split"), p);
        if !self.split.is_empty() && !self.split.iter().any(|s| s.upstream == self.upstream) {
            p.push(
                format!("{f}.split"),
                format!(
                    "the route's upstream {:?} is not a side: add [[routes.split]] upstream = {:?} with its weight (0 to send it nothing)",
                    self.upstream, self.upstream
                ),
            );
        }
        if let Some(s) = &self.sticky {
            match Sticky::parse(s) {
                Err(msg) => p.push(format!("{f}.sticky"), msg),
                Ok(_) if self.split.is_empty() => p.push(
                    format!("{f}.sticky"),
                    "sticky chooses a side of [[routes.split]]: add the split, or remove `sticky`",
                ),
                Ok(Sticky::Field(_)) if self.pii.is_none() => p.push(
                    format!("{f}.sticky"),
                    "a sticky field is read in the PII scrub pass: set `pii` on this route",
                ),
                Ok(Sticky::Consumer) if self.auth == AuthMode::None => p.push(
                    format!("{f}.sticky"),
                    "sticky = \"consumer\" needs auth = \"required\" or \"optional\" on this route",
                ),
                Ok(_) => {}
            }
        }
        if self.split_batches && rules.is_empty() && self.split.is_empty() {
            p.push(
                format!("{f}.split_batches"),
                "split_batches needs [[routes.match]] rules or [[routes.split]] sides to split by; remove it",
            );
        }
        if let Err(msg) = CaptureSpec::new(&self.capture_names()) {
            p.push(format!("{f}.match"), msg);
        }
    }

    /// Records the problems of this route's own fields under `field` (`routes[0]`).
    pub fn validate(&self, field: &str, p: &mut Problems) {
        let f = field;
        self.validate_dispatch(f, p);
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
        if self.delivery.is_some() && !self.has_topic() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct R {
        #[serde(rename = "match", default)]
        m: RouteMatch,
    }

    #[test]
    fn the_match_key_reads_a_path_mode_or_rules_with_clear_errors() {
        let r: R = toml::from_str("match = \"prefix\"").unwrap();
        assert_eq!(r.m, RouteMatch::Path(PathMatch::Prefix));
        let r: R = toml::from_str(
            "[[match]]\nfield = \"event_type\"\nequals = [\"purchase\"]\nupstream = \"p\"\n",
        )
        .unwrap();
        assert_eq!(r.m.rules().len(), 1);
        assert_eq!(r.m.rules()[0].field.as_deref(), Some("event_type"));
        let e = toml::from_str::<R>("match = \"regex\"").err().unwrap();
        assert!(e.to_string().contains("\"exact\" or \"prefix\""), "{e}");
        let e = toml::from_str::<R>("[[match]]\nfeild = \"x\"\nequals = []\n")
            .err()
            .unwrap();
        assert!(e.to_string().contains("feild"), "{e}");
    }
}
