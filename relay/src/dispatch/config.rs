//! The configuration of payload routing and weighted splits, as a route holds it: the
//! `[[routes.match]]` rules (the route's `match` key, `crate::route::config::RouteMatch`, holds
//! them or the path mode), the `[[routes.split]]` sides and `sticky`, with their limits and their own checks. References
//! to upstreams and sections are checked by `crate::config`, which composes them.

use serde::{Deserialize, Serialize};

use crate::problems::Problems;
use relay_scrub::capture::MAX_CAPTURED_BYTES;

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

/// Most sides of one split.
pub const MAX_SPLIT_SIDES: usize = 16;

/// Largest weight of one side.
pub const MAX_SPLIT_WEIGHT: u32 = 1_000_000;

/// One `[[routes.split]]` side.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SplitConfig {
    /// Upstream (by name) of this side; also the `relay-split` Kafka header and the metric
    /// label. Required, each once per route.
    pub upstream: String,
    /// Relative weight, 0 to 1,000,000 (0: the side gets nothing; at least one side > 0).
    pub weight: u32,
}

/// What keeps a client on one side (`sticky`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sticky {
    /// No stickiness: a weighted random choice per request.
    None,
    /// The authenticated consumer's name (anonymous requests: random).
    Consumer,
    /// This root member of each event (a string, number or boolean; else random).
    Field(String),
}

impl Sticky {
    /// Parses `"none"`, `"consumer"` or `"field:<name>"`.
    pub fn parse(s: &str) -> Result<Sticky, String> {
        match s {
            "none" => return Ok(Sticky::None),
            "consumer" => return Ok(Sticky::Consumer),
            _ => {}
        }
        match s.strip_prefix("field:") {
            Some(f) if !f.is_empty() => Ok(Sticky::Field(f.to_string())),
            _ => Err(format!(
                "{s:?} is not a sticky source: use \"consumer\", \"field:<name>\" or \"none\""
            )),
        }
    }
}

/// Records the problems of a route's `split` sides under `f` (`routes[0].split`).
pub fn validate_split(sides: &[SplitConfig], f: &str, p: &mut Problems) {
    if sides.is_empty() {
        return;
    }
    if sides.len() > MAX_SPLIT_SIDES {
        p.push(
            f.to_string(),
            format!(
                "{} sides: a split has at most {MAX_SPLIT_SIDES}",
                sides.len()
            ),
        );
    }
    for (j, s) in sides.iter().enumerate() {
        if s.weight > MAX_SPLIT_WEIGHT {
            p.push(
                format!("{f}[{j}].weight"),
                format!(
                    "{} is over {MAX_SPLIT_WEIGHT}; weights are relative, scale them down",
                    s.weight
                ),
            );
        }
        if sides[..j].iter().any(|o| o.upstream == s.upstream) {
            p.push(
                format!("{f}[{j}].upstream"),
                format!("{:?} is a side twice; merge the two weights", s.upstream),
            );
        }
    }
    if sides.iter().all(|s| s.weight == 0) {
        p.push(
            f.to_string(),
            "every weight is 0: give at least one side a weight above 0",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn sticky_sources_and_side_problems() {
        assert_eq!(Sticky::parse("consumer").unwrap(), Sticky::Consumer);
        assert_eq!(
            Sticky::parse("field:device_id").unwrap(),
            Sticky::Field("device_id".into())
        );
        assert!(Sticky::parse("field:").is_err());
        assert!(Sticky::parse("device").is_err());
        let side = |u: &str, w: u32| SplitConfig {
            upstream: u.into(),
            weight: w,
        };
        let problems = |sides: &[SplitConfig]| {
            let mut p = Problems::default();
            validate_split(sides, "s", &mut p);
            p.0.into_iter().map(|e| e.field).collect::<Vec<_>>()
        };
        assert!(problems(&[side("a", MAX_SPLIT_WEIGHT), side("b", 0)]).is_empty());
        assert_eq!(
            problems(&[side("a", MAX_SPLIT_WEIGHT + 1)]),
            ["s[0].weight"]
        );
        assert_eq!(problems(&[side("a", 0)]), ["s"]);
        assert_eq!(problems(&[side("a", 1), side("a", 2)]), ["s[1].upstream"]);
        let many: Vec<SplitConfig> = (0..=MAX_SPLIT_SIDES)
            .map(|i| side(&format!("u{i}"), 1))
            .collect();
        assert_eq!(problems(&many), ["s"]);
        assert!(problems(&many[..MAX_SPLIT_SIDES]).is_empty());
    }
}
