//! Compiled `[[routes.match]]` rules: each compares one root member of each event (`field`,
//! read by the scrub walk itself, see `relay_scrub::capture`) or one request header
//! (`header`) with a set of strings and, on a match, names its own upstream and/or topic.
//! Rules are tried in order; the first match wins; no match leaves the route's own upstream
//! (or its split) and topic.

use std::collections::HashSet;
use std::sync::Arc;

use crate::dispatch::config::MatchRuleConfig;
use crate::scrub::{CaptureSpec, Captured, EventView};

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
