//! The one TOML configuration file: its types, defaults, and whole-file validation.
//!
//! Every struct is `deny_unknown_fields` and every field says its unit and default. Validation
//! collects every problem at once ([`ConfigErrors`]), each naming the field (`routes[0].upstream`)
//! and what to do about it.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use crate::admin::config::AdminConfig;
pub use crate::admission::config::AdmissionConfig;
pub use crate::auth::config::{AuthConfig, ConsumerConfig};
pub use crate::kafka::config::{Delivery, KafkaConfig, KAFKA_RECORD_OVERHEAD};
pub use crate::problems::{ConfigErrors, FieldError, Problems};
pub use crate::route::config::{PathMatch, RouteConfig};
pub use crate::scrub::PiiPolicyConfig;
pub use crate::server::config::{IoEngine, LogConfig, ServerConfig, Workers};
pub use crate::spool::config::SpoolConfig;
pub use crate::upstream::config::{NodeConfig, TlsConfig, UpstreamConfig};

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
    /// Where credentials are read (`api_key_header`, `realm`).
    #[serde(default)]
    pub auth: AuthConfig,
    /// Consumers (client applications) and their credentials and limits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<ConsumerConfig>,
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
            errors: vec![toml_error(&e, text)],
        })?;
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        cfg.resolve_paths(&base);
        let mut problems = Problems::default();
        cfg.validate(&mut problems);
        cfg.check_sources(&mut problems);
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
            u.resolve_paths(base);
        }
        for p in self.pii.values_mut() {
            p.resolve_paths(base);
        }
        if let Some(a) = &mut self.admin {
            a.resolve_paths(base);
        }
        if let Some(sp) = &mut self.spool {
            sp.resolve_paths(base);
        }
        for c in &mut self.consumers {
            c.resolve_paths(base);
        }
        if let Some(a) = &mut self.admission {
            if let Some(o) = &mut a.object_path {
                if o.is_relative() {
                    *o = base.join(&*o);
                }
            }
        }
    }

    /// Checks the whole file, recording every problem: each section checks itself
    /// (`<subsystem>::config`), then this checks what sections say about each other (names
    /// that must exist, sections a route needs, a body that must fit a Kafka record). Reads no
    /// file; [`Config::check_sources`] does.
    pub fn validate(&self, p: &mut Problems) {
        self.server.validate("server", p);
        if let Some(a) = &self.admin {
            a.validate("admin", p);
        }
        self.log.validate("log", p);
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
            u.validate(&f, p);
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
            r.validate(&f, p);
            self.check_route_references(r, &f, p);
        }
        for (name, policy) in &self.pii {
            crate::scrub::validate_policy(policy, &format!("pii.{name}"), p);
            self.check_path_params_reach(name, policy, p);
            if policy.guard.quarantine_topic.is_some() && self.kafka.is_none() {
                p.push(
                    format!("pii.{name}.guard.quarantine_topic"),
                    "a quarantine topic needs a [kafka] section with the brokers; add one or remove quarantine_topic",
                );
            }
        }
        if let Some(k) = &self.kafka {
            k.validate("kafka", p);
            if self.routes.iter().any(RouteConfig::has_topic) {
                self.check_record_fits(k, p);
            }
        }
        if let Some(sp) = &self.spool {
            sp.validate("spool", p);
        }
        if let Some(a) = &self.admission {
            a.validate("admission", p);
        }
        crate::auth::config::validate(&self.auth, &self.consumers, p);
    }

    /// The files the configuration names, read as the build step will read them (CA files,
    /// hashing keys), so that `relay check` and a reload refuse them with the field's path.
    pub fn check_sources(&self, p: &mut Problems) {
        for (i, u) in self.upstreams.iter().enumerate() {
            if let Some(ca) = u.tls.as_ref().and_then(|t| t.ca_file.as_ref()) {
                if let Err(e) = crate::upstream::tls::load_ca_file(ca) {
                    p.push(format!("upstreams[{i}].tls.ca_file"), e.to_string());
                }
            }
        }
        for (name, policy) in &self.pii {
            crate::scrub::check_key_sources(policy, &format!("pii.{name}"), p);
        }
        crate::auth::check_sources(&self.consumers, p);
    }

    /// What route `r` (at `f`) names must exist: its upstream, its PII policy, the `[kafka]`
    /// section for a topic and the `[spool]` section for `delivery = "spool"`.
    fn check_route_references(&self, r: &RouteConfig, f: &str, p: &mut Problems) {
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
        for (j, c) in r.consumers.iter().enumerate() {
            if !self.consumers.iter().any(|k| &k.name == c) {
                p.push(
                    format!("{f}.consumers[{j}]"),
                    format!(
                        "no consumer named {c:?}; define it under [[consumers]] or fix the name"
                    ),
                );
            }
        }
        if r.topic.is_some() && self.kafka.is_none() {
            p.push(
                format!("{f}.topic"),
                "a topic needs a [kafka] section with the brokers",
            );
        }
        self.check_dispatch_references(r, f, p);
        let delivery = r
            .delivery
            .or(self.kafka.as_ref().map(|k| k.delivery))
            .unwrap_or_default();
        if r.has_topic() && delivery == Delivery::Spool && self.spool.is_none() {
            p.push(
                format!("{f}.delivery"),
                "delivery \"spool\" needs a [spool] section (dir = \"/var/lib/relay/spool\")",
            );
        }
    }

    /// What route `r`'s payload rules and split sides name must exist: upstreams, and the
    /// `[kafka]` section for a rule's topic.
    fn check_dispatch_references(&self, r: &RouteConfig, f: &str, p: &mut Problems) {
        let upstream_exists = |u: &str| self.upstreams.iter().any(|x| x.name == u);
        for (j, m) in r.rules().iter().enumerate() {
            if let Some(u) = m.upstream.as_deref().filter(|u| !upstream_exists(u)) {
                p.push(
                    format!("{f}.match[{j}].upstream"),
                    format!(
                        "no upstream named {u:?}; define it under [[upstreams]] or fix the name"
                    ),
                );
            }
            if m.topic.is_some() && self.kafka.is_none() {
                p.push(
                    format!("{f}.match[{j}].topic"),
                    "a topic needs a [kafka] section with the brokers",
                );
            }
        }
        for (j, s) in r.split.iter().enumerate() {
            if !upstream_exists(&s.upstream) {
                p.push(
                    format!("{f}.split[{j}].upstream"),
                    format!(
                        "no upstream named {:?}; define it under [[upstreams]] or fix the name",
                        s.upstream
                    ),
                );
            }
        }
    }

    /// Each `path_params` pattern of policy `name` must be able to match a path of a route that
    /// uses the policy: otherwise it hashes nothing and PII in paths goes out unhashed. A policy
    /// no route uses is not checked (it applies nowhere).
    fn check_path_params_reach(&self, name: &str, policy: &PiiPolicyConfig, p: &mut Problems) {
        let routes: Vec<&RouteConfig> = self
            .routes
            .iter()
            .filter(|r| r.pii.as_deref() == Some(name))
            .collect();
        if routes.is_empty() {
            return;
        }
        for (i, pat) in policy.path_params.iter().enumerate() {
            let reach = routes.iter().any(|r| {
                crate::scrub::path_pattern_reachable(
                    pat,
                    &r.path,
                    r.path_mode() == PathMatch::Prefix,
                )
                .unwrap_or(true)
            });
            if !reach {
                let list: Vec<String> = routes
                    .iter()
                    .map(|r| {
                        let m = match r.path_mode() {
                            PathMatch::Prefix => "prefix",
                            PathMatch::Exact => "exact",
                        };
                        format!("{} ({m} {:?})", r.name, r.path)
                    })
                    .collect();
                p.push(
                    format!("pii.{name}.path_params[{i}]"),
                    format!(
                        "the pattern {pat:?} matches no path of the routes that use this policy \
                         ({}), so it would hash nothing; write it for one of their paths or \
                         remove it",
                        list.join(", ")
                    ),
                );
            }
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

fn toml_error(e: &toml::de::Error, text: &str) -> FieldError {
    // toml's message says what was expected; the span says where: name the line and show it
    // (it holds the key), e.g. `line 12: retry_on = ["504"]`.
    let msg = e.message().to_string();
    let field = e
        .span()
        .map(|s| {
            let start = s.start.min(text.len());
            let line_no = text[..start].matches('\n').count() + 1;
            let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
            let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
            let line = text.get(line_start..line_end).unwrap_or("").trim();
            format!("line {line_no}: {line}")
        })
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
    fn upstream_resilience_defaults_and_bad_values_name_the_field() {
        use crate::upstream::{Lb, RetryOn};
        let c = Config::from_toml(EXAMPLE, Path::new("relay.toml")).unwrap();
        let u = &c.upstreams[0];
        assert_eq!(u.lb, Lb::RoundRobin);
        assert_eq!(
            u.retry_on,
            vec![RetryOn::Connect, RetryOn::ResetBeforeWrite]
        );
        assert_eq!((u.retry_budget_percent, u.dns_refresh_ms), (20, 30_000));
        assert!(u.health.is_none() && u.outlier.is_none() && u.breaker.is_none());

        let ok = EXAMPLE.replace(
            "nodes = [\"127.0.0.1:9000\"]",
            "nodes = [\"127.0.0.1:9000\"]\nlb = \"least_request\"\nretry_on = [\"connect\", \"502\"]\n[upstreams.health]\n",
        );
        let c = Config::from_toml(&ok, Path::new("relay.toml")).unwrap();
        let u = &c.upstreams[0];
        assert_eq!(u.lb, Lb::LeastRequest);
        assert_eq!(u.retry_on, vec![RetryOn::Connect, RetryOn::Status502]);
        let h = u.health.as_ref().unwrap();
        assert_eq!(
            (h.path.as_str(), h.interval_ms, h.timeout_ms),
            ("/health", 5000, 1000)
        );
        assert_eq!((h.healthy_after, h.unhealthy_after), (2, 3));
        assert_eq!(h.expect_status, vec![200]);

        for (extra, field) in [
            (
                "retry_budget_percent = 101",
                "upstreams[0].retry_budget_percent",
            ),
            (
                "retry_budget_window_ms = 0",
                "upstreams[0].retry_budget_window_ms",
            ),
            ("dns_refresh_ms = 5", "upstreams[0].dns_refresh_ms"),
            (
                "[upstreams.health]\ntimeout_ms = 6000",
                "upstreams[0].health.timeout_ms",
            ),
            (
                "[upstreams.health]\nunhealthy_after = 0",
                "upstreams[0].health.unhealthy_after",
            ),
            (
                "[upstreams.health]\nexpect_status = [99]",
                "upstreams[0].health.expect_status[0]",
            ),
            (
                "[upstreams.outlier]\nmax_ejection_ms = 1",
                "upstreams[0].outlier.max_ejection_ms",
            ),
            (
                "[upstreams.breaker]\nmin_requests = 0",
                "upstreams[0].breaker.min_requests",
            ),
        ] {
            let bad = EXAMPLE.replace(
                "nodes = [\"127.0.0.1:9000\"]",
                &format!("nodes = [\"127.0.0.1:9000\"]\n{extra}"),
            );
            let e = Config::from_toml(&bad, Path::new("x.toml")).unwrap_err();
            assert!(e.errors.iter().any(|f| f.field == field), "{extra}: {e}");
        }
        let bad = EXAMPLE.replace(
            "nodes = [\"127.0.0.1:9000\"]",
            "nodes = [\"127.0.0.1:9000\"]\nretry_on = [\"504\"]",
        );
        let e = Config::from_toml(&bad, Path::new("x.toml")).unwrap_err();
        assert!(e.to_string().contains("retry_on = [\"504\"]"), "{e}");
        assert!(e.to_string().contains("reset_after_write"), "{e}");
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

    #[test]
    fn the_keepalive_read_window_must_fit_the_idle_timeout() {
        let c = Config::from_toml(EXAMPLE, Path::new("x.toml")).unwrap();
        assert_eq!(c.server.keepalive_read_window_ms, 20);
        let set = |w: u64, idle: u64| {
            EXAMPLE.replace(
                "workers = \"auto\"",
                &format!(
                    "workers = \"auto\"\nkeepalive_read_window_ms = {w}\nidle_timeout_ms = {idle}"
                ),
            )
        };
        for ok in [set(0, 1), set(19, 20)] {
            Config::from_toml(&ok, Path::new("x.toml")).unwrap();
        }
        let e = Config::from_toml(&set(20, 20), Path::new("x.toml")).unwrap_err();
        assert_eq!(e.errors[0].field, "server.keepalive_read_window_ms", "{e}");
        assert!(e.errors[0].message.contains("idle_timeout_ms"), "{e}");
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

    const ROUTING: &str = r#"
[server]
listen = "127.0.0.1:8080"

[kafka]
brokers = "127.0.0.1:9092"
[kafka.properties]
"message.max.bytes" = "1049600"

[[upstreams]]
name = "tracking"
nodes = ["127.0.0.1:9000"]

[[upstreams]]
name = "tracking-v2"
nodes = ["127.0.0.1:9001"]

[[upstreams]]
name = "payments-tracking"
nodes = ["127.0.0.1:9002"]

[pii.default]
fields = ["user_id"]
hash = "sha256"

[[routes]]
name = "events"
path = "/v1/"
path_match = "prefix"
upstream = "tracking"
topic = "events"
pii = "default"
split_batches = true
sticky = "field:device_id"

[[routes.match]]
field = "event_type"
equals = ["purchase", "refund"]
upstream = "payments-tracking"
topic = "purchases"

[[routes.match]]
header = "x-event-type"
equals = ["beta"]
topic = "beta-events"

[[routes.split]]
upstream = "tracking"
weight = 90

[[routes.split]]
upstream = "tracking-v2"
weight = 10
"#;

    #[test]
    fn payload_rules_and_splits_load_print_and_load_again() {
        let c = Config::from_toml(ROUTING, Path::new("x.toml")).unwrap();
        let r = &c.routes[0];
        assert_eq!(r.path_mode(), PathMatch::Prefix);
        assert_eq!(r.rules().len(), 2);
        assert_eq!(r.capture_names(), vec!["event_type", "device_id"]);
        assert_eq!(r.split.len(), 2);
        let printed = c.to_effective_toml();
        let again = Config::from_toml(&printed, Path::new("x.toml"))
            .unwrap_or_else(|e| panic!("{e}\n{printed}"));
        assert_eq!(again.routes[0].rules(), r.rules());
        assert_eq!(again.routes[0].split, r.split);
        assert_eq!(again.routes[0].path_mode(), PathMatch::Prefix);
        // A plain route still prints `match = "exact"` and loads as before.
        let plain = Config::from_toml(EXAMPLE, Path::new("x.toml")).unwrap();
        assert!(plain.to_effective_toml().contains("match = \"exact\""));
    }

    #[test]
    fn routing_problems_name_the_field_and_what_to_do() {
        for (from, to, field, says) in [
            (
                "upstream = \"payments-tracking\"",
                "upstream = \"nope\"",
                "routes[0].match[0].upstream",
                "no upstream named \"nope\"",
            ),
            (
                "upstream = \"tracking-v2\"\nweight = 10",
                "upstream = \"v3\"\nweight = 10",
                "routes[0].split[1].upstream",
                "no upstream named \"v3\"",
            ),
            (
                "pii = \"default\"\n",
                "",
                "routes[0].match[0].field",
                "set `pii`",
            ),
            (
                "sticky = \"field:device_id\"",
                "sticky = \"device\"",
                "routes[0].sticky",
                "\"consumer\", \"field:<name>\"",
            ),
            (
                "sticky = \"field:device_id\"",
                "sticky = \"consumer\"",
                "routes[0].sticky",
                "needs auth",
            ),
            (
                "weight = 90",
                "weight = 2000000",
                "routes[0].split[0].weight",
                "over 1000000",
            ),
            (
                "upstream = \"tracking\"\nweight = 90",
                "upstream = \"payments-tracking\"\nweight = 90",
                "routes[0].split",
                "is not a side",
            ),
            (
                "field = \"event_type\"\n",
                "field = \"event_type\"\nheader = \"x\"\n",
                "routes[0].match[0]",
                "exactly one of",
            ),
            (
                "equals = [\"beta\"]",
                "equals = []",
                "routes[0].match[1].equals",
                "1 to 256",
            ),
            (
                "path_match = \"prefix\"",
                "match = \"prefix\"",
                "line",
                "duplicate key `match`",
            ),
        ] {
            assert!(ROUTING.contains(from), "{from}");
            let bad = ROUTING.replacen(from, to, 1);
            let e = Config::from_toml(&bad, Path::new("x.toml")).unwrap_err();
            let f = e
                .errors
                .iter()
                .find(|f| f.field.starts_with(field))
                .unwrap_or_else(|| panic!("{to}: no problem at {field}: {e}"));
            assert!(f.message.contains(says), "{to}: {}", f.message);
        }
        // At most 32 rules (each a header rule here, so no field limit interferes).
        let rule = "[[routes.match]]\nheader = \"x-n\"\nequals = [\"1\"]\ntopic = \"t\"\n";
        let at = format!("{ROUTING}{}", rule.repeat(32 - 2));
        Config::from_toml(&at, Path::new("x.toml")).unwrap_or_else(|e| panic!("{e}"));
        let over = format!("{at}{rule}");
        let e = Config::from_toml(&over, Path::new("x.toml")).unwrap_err();
        assert!(
            e.errors
                .iter()
                .any(|f| f.field == "routes[0].match" && f.message.contains("at most 32")),
            "{e}"
        );
        // A topic on a rule needs [kafka].
        let no_kafka = ROUTING
            .replace("topic = \"events\"\n", "")
            .replace("[kafka]\nbrokers = \"127.0.0.1:9092\"\n[kafka.properties]\n\"message.max.bytes\" = \"1049600\"\n", "");
        let e = Config::from_toml(&no_kafka, Path::new("x.toml")).unwrap_err();
        assert!(
            e.errors
                .iter()
                .any(|f| f.field == "routes[0].match[0].topic"),
            "{e}"
        );
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
