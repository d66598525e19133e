//! The request phase "dispatch", right after the scrub pass: where each event goes. A route's
//! `[[routes.match]]` rules (first match wins) and `[[routes.split]]` sides give every event of
//! the body a [`Destination`] (upstream, topic, split side) from the values the scrub walk
//! captured; a route with neither has one destination and costs nothing here.
//!
//! A request goes to one destination whole. A JSON body (one value or an array of events) is
//! never cut: events with different destinations in it are refused with 422
//! `mixed_destinations`. An NDJSON batch whose lines go to different destinations is refused
//! the same way unless the route says `split_batches = true`: then it becomes one [`Part`] per
//! destination (its lines in their original order, blank lines dropped), each forwarded as its
//! own request and published as its own original, with request id `<id>-<n>` (n from 1) so
//! that each part can be deduplicated on its own; [`worst`] picks the answer.
//!
//! Modules: [`config`] (the `[[routes.match]]` / `[[routes.split]]` / `sticky` options and
//! their checks), [`rules`] (compiled rules), [`split`] (the weighted, sticky chooser),
//! [`error`]; this file compiles a route's [`Dispatch`] and plans each request.

use std::borrow::Cow;
use std::sync::Arc;

use relay_http::RequestHead;

use crate::error::RequestError;
use crate::metrics::Counter;
use crate::route::config::RouteConfig;
use crate::scrub::{CaptureSpec, Captures, EventView};
use crate::upstream::UpstreamResponse;

pub mod config;
pub mod error;
pub mod rules;
pub mod split;

pub use config::Sticky;
pub use error::MixedDestinations;
use rules::MatchRule;
use split::Split;

/// A route's compiled payload rules and split (absent on routes with neither).
#[derive(Debug)]
pub struct Dispatch {
    /// `[[routes.match]]`, in order.
    pub rules: Vec<MatchRule>,
    /// `[[routes.split]]`.
    pub split: Option<Split>,
    /// `split_batches`.
    pub split_batches: bool,
    /// The root members the scrub walk captures (rule fields, sticky field).
    pub capture: CaptureSpec,
    /// The capture slot of the sticky field.
    pub sticky_slot: Option<usize>,
    /// Upstream names by index (for error messages).
    pub upstream_names: Vec<Arc<str>>,
}

impl Dispatch {
    /// Compiles a validated route's rules and split (`None` when it has neither);
    /// `split_counter(route, side)` gives each side's request counter.
    pub fn new(
        r: &RouteConfig,
        upstream_names: &[String],
        split_counter: &dyn Fn(&str, &str) -> Arc<Counter>,
    ) -> Option<Dispatch> {
        if r.rules().is_empty() && r.split.is_empty() {
            return None;
        }
        let capture = CaptureSpec::new(&r.capture_names()).unwrap_or_default();
        let sticky = r.sticky_source();
        let sticky_slot = match &sticky {
            Sticky::Field(f) => capture.slot(f),
            _ => None,
        };
        Some(Dispatch {
            rules: r
                .rules()
                .iter()
                .map(|m| MatchRule::new(m, &capture, upstream_names))
                .collect(),
            split: (!r.split.is_empty()).then(|| {
                Split::new(&r.split, sticky, upstream_names, |side| {
                    split_counter(&r.name, side)
                })
            }),
            split_batches: r.split_batches,
            capture,
            sticky_slot,
            upstream_names: upstream_names
                .iter()
                .map(|n| Arc::from(n.as_str()))
                .collect(),
        })
    }
}

/// Where an event (and so a request or a part of it) goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// Upstream index.
    pub upstream: usize,
    /// Kafka topic for the original, if any.
    pub topic: Option<Arc<str>>,
    /// The split side taken (its upstream name: the `relay-split` Kafka header), when the
    /// route's split chose the upstream.
    pub side: Option<Arc<str>>,
}

/// One request to forward and one original to publish.
#[derive(Debug, Clone)]
pub struct Part {
    /// Where it goes.
    pub dest: Destination,
    /// The NDJSON lines (1-based, ascending) of a split batch; `None`: the whole body.
    pub lines: Option<Vec<usize>>,
    /// The part's request id (`<id>-<n>`) for a split batch; `None`: the request's.
    pub request_id: Option<String>,
}

impl Part {
    /// The whole request to `upstream` with its original on `topic` (a route's defaults).
    pub fn whole(upstream: usize, topic: Option<Arc<str>>) -> Part {
        whole(Destination {
            upstream,
            topic,
            side: None,
        })
    }

    /// The part of `body` (the original or the scrubbed one: both have the same lines) this
    /// part carries.
    pub fn body<'b>(&self, body: &'b [u8]) -> Cow<'b, [u8]> {
        match &self.lines {
            None => Cow::Borrowed(body),
            Some(want) => {
                let mut out = Vec::with_capacity(body.len());
                let mut want = want.iter().peekable();
                for (n, line, _) in lines(body) {
                    if want.peek() == Some(&&n) {
                        out.extend_from_slice(line);
                        want.next();
                    }
                }
                Cow::Owned(out)
            }
        }
    }

    /// The request id this part is sent and published with.
    pub fn request_id<'a>(&'a self, request: &'a str) -> &'a str {
        self.request_id.as_deref().unwrap_or(request)
    }
}

/// What the route and the request say about destinations, for [`plan`].
pub struct Inputs<'a> {
    /// The route's name (messages).
    pub route_name: &'a str,
    /// The route's upstream index.
    pub upstream: usize,
    /// The route's topic.
    pub topic: Option<Arc<str>>,
    /// The request head (header rules).
    pub head: &'a RequestHead,
    /// The original body.
    pub body: &'a [u8],
    /// Whether the body is NDJSON.
    pub ndjson: bool,
    /// What the scrub walk captured.
    pub captures: &'a Captures,
    /// The authenticated consumer, if any (`sticky = "consumer"`).
    pub consumer: Option<&'a str>,
    /// The request id.
    pub request_id: &'a str,
    /// The worker (metrics slot).
    pub worker: usize,
}

/// The parts of a request: one for a route without rules and split, or whose events agree.
/// Refuses [`MixedDestinations`]. `random` is called at most once (a weighted random side for
/// the events without a sticky value).
pub fn plan(
    dispatch: Option<&Dispatch>,
    x: &Inputs<'_>,
    random: &mut dyn FnMut() -> u64,
) -> Result<Vec<Part>, MixedDestinations> {
    let Some(d) = dispatch else {
        return Ok(vec![whole(Destination {
            upstream: x.upstream,
            topic: x.topic.clone(),
            side: None,
        })]);
    };
    let mut chooser = Chooser {
        d,
        x,
        random,
        request_side: None,
    };
    let parts = if x.ndjson {
        chooser.ndjson_parts()?
    } else {
        vec![whole(chooser.json_destination()?)]
    };
    if let Some(split) = &d.split {
        for p in &parts {
            if let Some(side) = &p.dest.side {
                if let Some(s) = split.sides().iter().find(|s| s.name == *side) {
                    s.requests.inc(x.worker);
                }
            }
        }
    }
    Ok(parts)
}

fn whole(dest: Destination) -> Part {
    Part {
        dest,
        lines: None,
        request_id: None,
    }
}

struct Chooser<'a, 'x> {
    d: &'a Dispatch,
    x: &'a Inputs<'x>,
    random: &'a mut dyn FnMut() -> u64,
    /// The request's side for events without a sticky value (chosen once).
    request_side: Option<usize>,
}

impl Chooser<'_, '_> {
    /// The destination of one event (`None`: a text or line without events).
    fn destination(&mut self, ev: Option<&EventView<'_>>) -> Destination {
        let head = self.x.head;
        let rule = self.d.rules.iter().find(|r| r.matches(ev, head));
        let (upstream, side) = match rule.and_then(|r| r.upstream) {
            Some(u) => (u, None),
            None => self.default_upstream(ev),
        };
        Destination {
            upstream,
            topic: rule
                .and_then(|r| r.topic.clone())
                .or_else(|| self.x.topic.clone()),
            side,
        }
    }

    /// The route's upstream, or its split's side for `ev`.
    fn default_upstream(&mut self, ev: Option<&EventView<'_>>) -> (usize, Option<Arc<str>>) {
        let Some(split) = &self.d.split else {
            return (self.x.upstream, None);
        };
        let sticky = self
            .d
            .sticky_slot
            .and_then(|slot| ev.and_then(|e| e.get(slot)))
            .and_then(|v| v.text());
        let i = match sticky {
            Some(v) => split.side_for(v.as_bytes()),
            None => match self.request_side {
                Some(i) => i,
                None => {
                    let i = match (&split.sticky, self.x.consumer) {
                        (Sticky::Consumer, Some(c)) => split.side_for(c.as_bytes()),
                        _ => split.side_at((self.random)()),
                    };
                    self.request_side = Some(i);
                    i
                }
            },
        };
        let s = &split.sides()[i];
        (s.upstream, Some(s.name.clone()))
    }

    fn describe(&self, d: &Destination) -> String {
        let up = self.d.upstream_names.get(d.upstream).map_or("?", |n| &**n);
        match &d.topic {
            Some(t) => format!("upstream {up:?}, topic {t:?}"),
            None => format!("upstream {up:?}, no topic"),
        }
    }

    /// A JSON body: all its events must agree.
    fn json_destination(&mut self) -> Result<Destination, MixedDestinations> {
        let mut first: Option<(usize, Destination)> = None;
        for ev in self.x.captures.events() {
            let dest = self.destination(Some(&ev));
            match &first {
                None => first = Some((ev.element, dest)),
                Some((e0, d0)) if *d0 != dest => {
                    return Err(MixedDestinations(format!(
                        "events {e0} and {} of the JSON body go to different destinations ({} and {}); relay forwards a JSON body whole: send them in separate requests, or as NDJSON lines to a route with split_batches = true",
                        ev.element,
                        self.describe(d0),
                        self.describe(&dest)
                    )))
                }
                Some(_) => {}
            }
        }
        Ok(match first {
            Some((_, d)) => d,
            None => self.destination(None),
        })
    }

    /// An NDJSON body: one destination per line; one part per destination.
    fn ndjson_parts(&mut self) -> Result<Vec<Part>, MixedDestinations> {
        let mut events = self.x.captures.events().peekable();
        let mut groups: Vec<(Destination, Vec<usize>)> = Vec::new();
        for (n, _, blank) in lines(self.x.body) {
            if blank {
                continue;
            }
            let mut line_dest: Option<(usize, Destination)> = None;
            while let Some(ev) = events.next_if(|e| e.line.is_some_and(|l| l <= n)) {
                let dest = self.destination(Some(&ev));
                match &line_dest {
                    None => line_dest = Some((ev.element, dest)),
                    Some((e0, d0)) if *d0 != dest => {
                        return Err(MixedDestinations(format!(
                            "line {n} holds events for different destinations (element {e0}: {}, element {}: {}); put events for different destinations on different lines",
                            self.describe(d0),
                            ev.element,
                            self.describe(&dest)
                        )))
                    }
                    Some(_) => {}
                }
            }
            let dest = match line_dest {
                Some((_, d)) => d,
                None => self.destination(None),
            };
            match groups.iter_mut().find(|(d, _)| *d == dest) {
                Some((_, ls)) => ls.push(n),
                None => groups.push((dest, vec![n])),
            }
        }
        if groups.len() <= 1 {
            let dest = match groups.pop() {
                Some((d, _)) => d,
                None => self.destination(None),
            };
            return Ok(vec![whole(dest)]);
        }
        if !self.d.split_batches {
            let (a, b) = (&groups[0], &groups[1]);
            return Err(MixedDestinations(format!(
                "line {} goes to {} but line {} goes to {}; send them in separate requests, or set split_batches = true on route {:?}",
                a.1[0],
                self.describe(&a.0),
                b.1[0],
                self.describe(&b.0),
                self.x.route_name
            )));
        }
        Ok(groups
            .into_iter()
            .enumerate()
            .map(|(i, (dest, ls))| Part {
                dest,
                lines: Some(ls),
                request_id: Some(format!("{}-{}", self.x.request_id, i + 1)),
            })
            .collect())
    }
}

/// The lines of an NDJSON body: (1-based number, the line with its `\n`, blank), numbered as
/// the scrubber numbers them (a blank line holds only spaces, tabs and CRs).
fn lines(body: &[u8]) -> impl Iterator<Item = (usize, &[u8], bool)> {
    let mut start = 0;
    let mut n = 0;
    std::iter::from_fn(move || {
        if start >= body.len() {
            return None;
        }
        let end = body[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(body.len(), |p| start + p + 1);
        let line = &body[start..end];
        start = end;
        n += 1;
        let blank = line
            .iter()
            .all(|&b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'));
        Some((n, line, blank))
    })
}

/// The answer for a split batch: the worst of the parts' outcomes, 5xx over 4xx over 3xx over
/// 2xx (a relay error counts with its own status, e.g. 502); among equals, the first part's.
/// That part's status, headers and body are what the client gets.
pub fn worst(
    results: Vec<Result<UpstreamResponse, RequestError>>,
) -> Result<UpstreamResponse, RequestError> {
    let rank = |r: &Result<UpstreamResponse, RequestError>| {
        let status = match r {
            Ok(resp) => resp.status,
            Err(e) => e.status_and_reason().0,
        };
        match status {
            500.. => 3,
            400..=499 => 2,
            300..=399 => 1,
            _ => 0,
        }
    };
    let mut best: Option<(u8, Result<UpstreamResponse, RequestError>)> = None;
    for r in results {
        let k = rank(&r);
        if best.as_ref().is_none_or(|(b, _)| k > *b) {
            best = Some((k, r));
        }
    }
    best.map(|(_, r)| r).unwrap_or(Err(RequestError::Internal))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::metrics::Counter;
    use crate::route::{Route, RouteTable};
    use crate::scrub::{CaptureSpec, HashAlgorithm, PiiPolicyConfig, Scrubber};
    use relay_http::HeadLimits;
    use std::collections::HashSet;

    const CFG: &str = r#"
[server]
listen = "127.0.0.1:0"
[[upstreams]]
name = "a"
nodes = ["127.0.0.1:1"]
[[upstreams]]
name = "b"
nodes = ["127.0.0.1:2"]
[[consumers]]
name = "ios-app"
api_key_sha256 = ["0000000000000000000000000000000000000000000000000000000000000000"]
[pii.p]
fields = ["user_id"]
hash = "sha256"

[[routes]]
name = "rules"
path = "/r"
upstream = "a"
pii = "p"
split_batches = true
[[routes.match]]
header = "x-kind"
equals = ["to-b"]
upstream = "b"
[[routes.match]]
field = "kind"
equals = ["to-b"]
upstream = "b"

[[routes]]
name = "by-consumer"
path = "/c"
upstream = "a"
pii = "p"
auth = "optional"
sticky = "consumer"
[[routes.split]]
upstream = "a"
weight = 1
[[routes.split]]
upstream = "b"
weight = 1
"#;

    fn table() -> RouteTable {
        let cfg = Config::from_toml(CFG, std::path::Path::new("x.toml")).unwrap();
        let names: Vec<String> = cfg.upstreams.iter().map(|u| u.name.clone()).collect();
        RouteTable::new(&cfg.routes, &names, &|_, _| Arc::new(Counter::new(1)))
    }

    fn head(extra: &str) -> RequestHead {
        let raw = format!("POST /r HTTP/1.1\r\nHost: a\r\n{extra}\r\n");
        let limits = HeadLimits {
            max_header_bytes: 65536,
            max_headers: 100,
        };
        RequestHead::parse(raw.as_bytes(), limits)
            .unwrap()
            .unwrap()
            .0
    }

    fn captures(route: &Route, body: &str, ndjson: bool) -> Captures {
        let s = Scrubber::new(
            &PiiPolicyConfig {
                fields: vec!["user_id".into()],
                hash: HashAlgorithm::Sha256,
                ..PiiPolicyConfig::default()
            },
            None,
        )
        .unwrap();
        let ct = if ndjson {
            "application/x-ndjson"
        } else {
            "application/json"
        };
        let spec = route
            .dispatch
            .as_ref()
            .map_or(CaptureSpec::default(), |d| d.capture.clone());
        s.scrub_body_capturing(Some(ct), None, body.as_bytes(), &spec)
            .unwrap()
            .captures
    }

    fn plan_of(
        route: &Route,
        head: &RequestHead,
        body: &str,
        ndjson: bool,
        consumer: Option<&str>,
        rolls: &mut u32,
    ) -> Result<Vec<Part>, MixedDestinations> {
        let c = captures(route, body, ndjson);
        let x = Inputs {
            route_name: &route.name,
            upstream: route.upstream,
            topic: route.topic.clone(),
            head,
            body: body.as_bytes(),
            ndjson,
            captures: &c,
            consumer,
            request_id: "r1",
            worker: 0,
        };
        // A Weyl sequence: uniform over successive draws.
        let mut random = || {
            *rolls += 1;
            u64::from(*rolls).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        };
        plan(route.dispatch.as_ref(), &x, &mut random)
    }

    #[test]
    fn rules_in_order_header_and_field_and_split_ndjson_parts() {
        let t = table();
        let r = &t.routes()[0];
        let mut rolls = 0;
        // Header rule: the whole request, whatever the events say.
        let p = plan_of(
            r,
            &head("X-Kind: to-b\r\n"),
            r#"{"kind":"x"}"#,
            false,
            None,
            &mut rolls,
        )
        .unwrap();
        assert_eq!((p.len(), p[0].dest.upstream), (1, 1));
        // Field rule per line; lines keep their order; part ids in first-appearance order.
        let body = "{\"kind\":\"x\"}\n{\"kind\":\"to-b\"}\n\n{\"n\":1}\n[]\n";
        let p = plan_of(r, &head(""), body, true, None, &mut rolls).unwrap();
        let got: Vec<_> = p
            .iter()
            .map(|p| {
                (
                    p.dest.upstream,
                    p.lines.clone().unwrap(),
                    p.request_id.clone().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (0, vec![1, 4, 5], "r1-1".to_string()),
                (1, vec![2], "r1-2".to_string())
            ]
        );
        assert_eq!(
            &*p[0].body(body.as_bytes()),
            b"{\"kind\":\"x\"}\n{\"n\":1}\n[]\n"
        );
        assert_eq!(rolls, 0, "no split, no random draw");
    }

    #[test]
    fn consumer_stickiness_and_one_random_draw_per_request() {
        let t = table();
        let r = &t.routes()[1];
        let body: String = (0..50).map(|i| format!("{{\"i\":{i}}}\n")).collect();
        let side = |consumer: Option<&str>, rolls: &mut u32| {
            let p = plan_of(r, &head(""), &body, true, consumer, rolls).unwrap();
            assert_eq!(p.len(), 1, "one request never splits by chance");
            assert!(p[0].lines.is_none());
            p[0].dest.side.clone().unwrap()
        };
        let mut rolls = 0;
        let first = side(Some("ios-app"), &mut rolls);
        for _ in 0..20 {
            assert_eq!(side(Some("ios-app"), &mut rolls), first);
        }
        assert_eq!(rolls, 0, "a consumer needs no random draw");
        let mut seen = HashSet::new();
        for _ in 0..40 {
            seen.insert(side(None, &mut rolls));
        }
        assert_eq!(rolls, 40, "anonymous: one draw per request, not per line");
        assert_eq!(seen.len(), 2, "anonymous requests spread over both sides");
    }

    fn resp(status: u16, body: &str) -> Result<UpstreamResponse, RequestError> {
        Ok(UpstreamResponse {
            status,
            head: Vec::new(),
            body: body.as_bytes().to_vec(),
            bodiless: false,
            head_content_length: None,
        })
    }

    #[test]
    fn worst_is_5xx_then_4xx_then_2xx_first_among_equals() {
        let pick = |rs: Vec<Result<UpstreamResponse, RequestError>>| match worst(rs) {
            Ok(r) => (r.status, String::from_utf8(r.body).unwrap()),
            Err(e) => (e.status_and_reason().0, e.to_string()),
        };
        assert_eq!(
            pick(vec![resp(200, "a"), resp(202, "b")]),
            (200, "a".into())
        );
        assert_eq!(
            pick(vec![resp(200, "a"), resp(404, "b"), resp(400, "c")]),
            (404, "b".into())
        );
        assert_eq!(
            pick(vec![resp(400, "a"), resp(503, "b"), resp(500, "c")]),
            (503, "b".into())
        );
        assert_eq!(
            pick(vec![resp(301, "a"), resp(200, "b")]),
            (301, "a".into())
        );
        let err = Err(RequestError::Upstream(
            crate::upstream::UpstreamError::Unreachable {
                upstream: "u".into(),
                detail: "refused".into(),
            },
        ));
        assert_eq!(pick(vec![resp(404, "a"), err]).0, 502);
    }

    #[test]
    fn parts_take_their_lines_in_order_with_terminators() {
        let body = b"a\n\nb\r\nc\nd";
        let got: Vec<_> = lines(body).map(|(n, l, b)| (n, l.to_vec(), b)).collect();
        assert_eq!(
            got,
            vec![
                (1, b"a\n".to_vec(), false),
                (2, b"\n".to_vec(), true),
                (3, b"b\r\n".to_vec(), false),
                (4, b"c\n".to_vec(), false),
                (5, b"d".to_vec(), false),
            ]
        );
        let part = |ls: &[usize]| Part {
            dest: Destination {
                upstream: 0,
                topic: None,
                side: None,
            },
            lines: Some(ls.to_vec()),
            request_id: None,
        };
        assert_eq!(&*part(&[1, 4]).body(body), b"a\nc\n");
        assert_eq!(&*part(&[3, 5]).body(body), b"b\r\nd");
        assert_eq!(&*whole(part(&[]).dest).body(body), body);
    }
}
