//! Routes: method + exact or prefix path + optional host, each naming its upstream, Kafka topic
//! and PII policy, and optionally payload rules and a weighted split that choose the upstream
//! and topic per event ([`Dispatch`]). The table is immutable; a reload builds a new one.

use std::sync::Arc;

pub mod config;

pub use config::{KeySource, PathMatch, RouteConfig};

use crate::dispatch::Dispatch;
use crate::metrics::Counter;

/// One compiled route.
#[derive(Debug)]
pub struct Route {
    /// Route name (metrics label, Kafka header `relay-route`).
    pub name: Arc<str>,
    /// Index into the route table (for per-route metrics arrays).
    pub index: usize,
    path: String,
    path_match: PathMatch,
    methods: Vec<String>,
    host: Option<String>,
    /// Index of the upstream in the config's `upstreams`.
    pub upstream: usize,
    /// Kafka topic for originals.
    pub topic: Option<Arc<str>>,
    /// Kafka record key source.
    pub key: KeySource,
    /// PII policy name.
    pub pii: Option<String>,
    /// The route's own `delivery`; `None`: `[kafka] delivery`.
    pub delivery: Option<crate::kafka::config::Delivery>,
    /// Payload rules and split, when the route has any.
    pub dispatch: Option<Dispatch>,
}

/// Why no route matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoRoute {
    /// No route has this path (and host).
    NotFound,
    /// A route has this path but not this method.
    MethodNotAllowed,
}

/// The compiled route table, matched in order.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// Compiles validated route configs; `upstream_names` gives each upstream's index,
    /// `split_counter(route, side)` each split side's request counter.
    pub fn new(
        routes: &[RouteConfig],
        upstream_names: &[String],
        split_counter: &dyn Fn(&str, &str) -> Arc<Counter>,
    ) -> RouteTable {
        let routes = routes
            .iter()
            .enumerate()
            .map(|(index, r)| Route {
                name: Arc::from(r.name.as_str()),
                index,
                path: r.path.clone(),
                path_match: r.path_mode(),
                methods: r.methods.clone(),
                host: r.host.as_ref().map(|h| h.to_ascii_lowercase()),
                upstream: upstream_names
                    .iter()
                    .position(|n| *n == r.upstream)
                    .unwrap_or(0),
                topic: r.topic.as_deref().map(Arc::from),
                key: r
                    .key
                    .as_deref()
                    .map(|k| KeySource::parse(k).unwrap_or(KeySource::None))
                    .unwrap_or(KeySource::None),
                pii: r.pii.clone(),
                delivery: r.delivery,
                dispatch: Dispatch::new(r, upstream_names, split_counter),
            })
            .collect();
        RouteTable { routes }
    }

    /// All routes, in match order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Finds the route for a request. `path` excludes the query; `host` is the `Host` header.
    pub fn find(&self, method: &str, path: &str, host: Option<&str>) -> Result<&Route, NoRoute> {
        let host = host.map(strip_port);
        let mut path_matched = false;
        for r in &self.routes {
            let path_ok = match r.path_match {
                PathMatch::Exact => path == r.path,
                PathMatch::Prefix => path.starts_with(r.path.as_str()),
            };
            if !path_ok {
                continue;
            }
            if let Some(want) = &r.host {
                match host {
                    Some(h) if h.eq_ignore_ascii_case(want) => {}
                    _ => continue,
                }
            }
            path_matched = true;
            if r.methods.is_empty() || r.methods.iter().any(|m| m == method) {
                return Ok(r);
            }
        }
        Err(if path_matched {
            NoRoute::MethodNotAllowed
        } else {
            NoRoute::NotFound
        })
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [v6]:port
        return host
            .split(']')
            .next()
            .map(|h| &host[..h.len() + 1])
            .unwrap_or(host);
    }
    host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rc(
        name: &str,
        path: &str,
        m: PathMatch,
        methods: &[&str],
        host: Option<&str>,
    ) -> RouteConfig {
        RouteConfig {
            name: name.into(),
            path: path.into(),
            matching: config::RouteMatch::Path(m),
            path_match: None,
            split_batches: false,
            split: Vec::new(),
            sticky: None,
            methods: methods.iter().map(|s| s.to_string()).collect(),
            host: host.map(Into::into),
            upstream: "u".into(),
            topic: None,
            key: None,
            pii: None,
            delivery: None,
            auth: Default::default(),
            consumers: Vec::new(),
            forward_credentials: false,
            limits: None,
            max_decoded_bytes: None,
            max_expansion_ratio: None,
            forward_encoding: Default::default(),
        }
    }

    #[test]
    fn exact_prefix_host_and_method() {
        let t = RouteTable::new(
            &[
                rc("a", "/v1/logs", PathMatch::Exact, &["POST"], None),
                rc("b", "/v2/", PathMatch::Prefix, &[], Some("api.example.com")),
            ],
            &["u".into()],
            &|_, _| Arc::new(Counter::new(1)),
        );
        assert_eq!(&*t.find("POST", "/v1/logs", None).unwrap().name, "a");
        assert_eq!(
            t.find("GET", "/v1/logs", None).unwrap_err(),
            NoRoute::MethodNotAllowed
        );
        assert_eq!(
            t.find("POST", "/v1/logs/x", None).unwrap_err(),
            NoRoute::NotFound
        );
        assert_eq!(
            &*t.find("PUT", "/v2/x", Some("API.example.com:8080"))
                .unwrap()
                .name,
            "b"
        );
        assert_eq!(
            t.find("PUT", "/v2/x", Some("other")).unwrap_err(),
            NoRoute::NotFound
        );
    }

    #[test]
    fn key_sources() {
        assert_eq!(KeySource::parse("none").unwrap(), KeySource::None);
        assert_eq!(
            KeySource::parse("field:device_id").unwrap(),
            KeySource::Field("device_id".into())
        );
        assert_eq!(
            KeySource::parse("header:X-Device-Id").unwrap(),
            KeySource::Header("x-device-id".into())
        );
        assert!(KeySource::parse("field:").is_err());
        assert!(KeySource::parse("random").is_err());
    }
}
