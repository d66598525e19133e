//! `[[routes.match]]`: payload routing rules. Each rule compares one root member of each
//! event (`field`, read by the scrub walk itself, see `relay_scrub::capture`) or one request
//! header (`header`) with a list of strings (`equals`) and, on a match, sends the event to its
//! own `upstream` and/or `topic`. Rules are tried in order; the first match wins; no match
//! leaves the route's own upstream (or its split) and topic.
//!
//! The TOML key `match` also holds the route's path mode (`match = "prefix"`): a route with
//! rules spells its path mode `path_match` instead ([`RouteMatch`] reads both shapes).

use std::collections::HashSet;
use std::sync::Arc;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::config::PathMatch;
use crate::problems::Problems;
use crate::scrub::capture::MAX_CAPTURED_BYTES;
use crate::scrub::{CaptureSpec, Captured, EventView};

/// Most rules one route may have.
pub const MAX_MATCH_RULES: usize = 32;

/// Most `equals` values one rule may have.
pub const MAX_EQUALS: usize = 256;

/// One `[[routes.match]]` rule.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MatchRuleConfig {
    /// Root member of each event compared (exact name after unescaping; its string value,
    /// decoded, before any PII hashing). Needs `pii` on the route. Exactly one of `field` and
    /// `header`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Request header compared instead (name without case; its first value, exact bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Values that match (exact, case-sensitive; only strings match, never numbers, `null`,
    /// objects or arrays). Required, 1 to 256 values of at most 1024 bytes.
    pub equals: Vec<String>,
    /// Upstream (by name) for matching events. Default: the route's (or its split's choice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// Kafka topic for matching events' originals. Default: the route's `topic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
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

impl MatchRuleConfig {
    /// Records this rule's own problems under `f` (`routes[0].match[1]`); references to
    /// upstreams and the `[kafka]` section are checked by `crate::config`.
    pub fn validate(&self, f: &str, p: &mut Problems) {
        match (&self.field, &self.header) {
            (Some(_), Some(_)) | (None, None) => p.push(
                f.to_string(),
                "set exactly one of `field` (a root member of each event) and `header`",
            ),
            (Some(field), None) if field.is_empty() => {
                p.push(format!("{f}.field"), "must not be empty")
            }
            (None, Some(h)) if h.is_empty() || !h.bytes().all(is_token_byte) => p.push(
                format!("{f}.header"),
                format!("{h:?} is not a header name (letters, digits and !#$%&'*+-.^_`|~)"),
            ),
            _ => {}
        }
        if self.equals.is_empty() || self.equals.len() > MAX_EQUALS {
            p.push(
                format!("{f}.equals"),
                format!(
                    "{} values: give 1 to {MAX_EQUALS} strings that select this rule",
                    self.equals.len()
                ),
            );
        }
        for (j, v) in self.equals.iter().enumerate() {
            if v.len() > MAX_CAPTURED_BYTES {
                p.push(
                    format!("{f}.equals[{j}]"),
                    format!(
                        "{} bytes: relay reads at most {MAX_CAPTURED_BYTES} bytes of a routed value, so this can never match",
                        v.len()
                    ),
                );
            }
        }
        if self.upstream.is_none() && self.topic.is_none() {
            p.push(
                f.to_string(),
                "a rule must send its events somewhere: set `upstream`, `topic` or both",
            );
        }
        if self.topic.as_deref() == Some("") {
            p.push(format!("{f}.topic"), "must not be empty");
        }
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Where a compiled rule reads its value.
#[derive(Debug, Clone)]
enum Source {
    /// The capture slot of a root member.
    Field(usize),
    /// A request header (lower case).
    Header(String),
}

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct MatchRule {
    source: Source,
    /// A set: one lookup per event whatever the number of values (hostile batches of many
    /// events cost rules x events lookups, not x values).
    equals: HashSet<Box<str>>,
    /// Upstream index for matching events (`None`: the route's default).
    pub upstream: Option<usize>,
    /// Topic for matching events (`None`: the route's).
    pub topic: Option<Arc<str>>,
}

impl MatchRule {
    /// Compiles a validated rule: `spec` gives the capture slot of its field.
    pub fn new(cfg: &MatchRuleConfig, spec: &CaptureSpec, upstream_names: &[String]) -> MatchRule {
        let source = match (&cfg.field, &cfg.header) {
            (Some(f), _) => Source::Field(spec.slot(f).unwrap_or(usize::MAX)),
            (None, Some(h)) => Source::Header(h.to_ascii_lowercase()),
            (None, None) => Source::Header(String::new()),
        };
        MatchRule {
            source,
            equals: cfg.equals.iter().map(|v| v.as_str().into()).collect(),
            upstream: cfg
                .upstream
                .as_ref()
                .and_then(|u| upstream_names.iter().position(|n| n == u)),
            topic: cfg.topic.as_deref().map(Arc::from),
        }
    }

    /// Whether this rule matches `event` (or, for a header rule, the request's header).
    pub fn matches(&self, event: Option<&EventView<'_>>, head: &relay_http::RequestHead) -> bool {
        match &self.source {
            Source::Field(slot) => event
                .and_then(|e| e.get(*slot))
                .and_then(Captured::as_str)
                .is_some_and(|v| self.equals.contains(v)),
            Source::Header(h) => head
                .header(h)
                .and_then(|v| std::str::from_utf8(v).ok())
                .is_some_and(|v| self.equals.contains(v)),
        }
    }

    /// Whether the rule reads a header (the same answer for every event of a request).
    pub fn is_header(&self) -> bool {
        matches!(self.source, Source::Header(_))
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

    #[test]
    fn rule_problems_name_the_field() {
        let ok = MatchRuleConfig {
            field: Some("event_type".into()),
            header: None,
            equals: vec!["purchase".into()],
            upstream: Some("p".into()),
            topic: None,
        };
        let mut p = Problems::default();
        ok.validate("r", &mut p);
        assert!(p.0.is_empty(), "{:?}", p.0);
        for (bad, field) in [
            (
                MatchRuleConfig {
                    header: Some("x-e".into()),
                    ..ok.clone()
                },
                "r",
            ),
            (
                MatchRuleConfig {
                    equals: vec![],
                    ..ok.clone()
                },
                "r.equals",
            ),
            (
                MatchRuleConfig {
                    equals: vec!["x".repeat(MAX_CAPTURED_BYTES + 1)],
                    ..ok.clone()
                },
                "r.equals[0]",
            ),
            (
                MatchRuleConfig {
                    field: None,
                    header: Some("bad header".into()),
                    ..ok.clone()
                },
                "r.header",
            ),
            (
                MatchRuleConfig {
                    upstream: None,
                    ..ok.clone()
                },
                "r",
            ),
        ] {
            let mut p = Problems::default();
            bad.validate("r", &mut p);
            assert!(p.0.iter().any(|e| e.field == field), "{bad:?}: {:?}", p.0);
        }
        let mut many = ok.clone();
        many.equals = (0..=MAX_EQUALS).map(|i| i.to_string()).collect();
        let mut p = Problems::default();
        many.validate("r", &mut p);
        assert!(p.0.iter().any(|e| e.field == "r.equals"), "{:?}", p.0);
        many.equals.pop();
        let mut p = Problems::default();
        many.validate("r", &mut p);
        assert!(
            p.0.is_empty(),
            "{} values at the limit: {:?}",
            MAX_EQUALS,
            p.0
        );
        let mut at_limit = ok.clone();
        at_limit.equals = vec!["x".repeat(MAX_CAPTURED_BYTES)];
        let mut p = Problems::default();
        at_limit.validate("r", &mut p);
        assert!(p.0.is_empty(), "{:?}", p.0);
    }
}
