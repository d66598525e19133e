//! Operating relay, black box: metrics that reconcile exactly with known outcomes (parsed by a
//! real Prometheus text parser), health and readiness, and hot reload under a steady load.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use relay_e2e::*;

/// Scrapes and parses `/metrics`: (name, sorted labels) -> value; histograms as
/// `name_count` / `name_sum` / `name_bucket` with `le`.
/// (metric name, sorted labels) -> value.
type Samples = HashMap<(String, Vec<(String, String)>), f64>;

fn scrape(relay: &Relay) -> (Samples, String) {
    let (status, text) = relay.admin_get("/metrics");
    assert_eq!(status, 200);
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text format");
    let mut out = HashMap::new();
    for s in parsed.samples {
        let mut labels: Vec<(String, String)> = s
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.sort();
        match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => {
                out.insert((s.metric.clone(), labels), v);
            }
            prometheus_parse::Value::Histogram(buckets) => {
                for b in buckets {
                    let mut l = labels.clone();
                    l.push((
                        "le".into(),
                        if b.less_than.is_infinite() {
                            "+Inf".into()
                        } else {
                            b.less_than.to_string()
                        },
                    ));
                    l.sort();
                    out.insert((format!("{}_bucket", s.metric), l), b.count);
                }
            }
            prometheus_parse::Value::Summary(_) => {}
        }
    }
    (out, text)
}

fn get(m: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut l: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    l.sort();
    *m.get(&(name.to_string(), l))
        .unwrap_or_else(|| panic!("no series {name}{labels:?}"))
}

const ADMIN: &str = "\n[admin]\nlisten = \"127.0.0.1:0\"";

#[test]
fn metrics_reconcile_with_known_outcomes() {
    let up = StubUpstream::start(Behavior::default());
    let relay = Relay::start(
        &basic_config("auto", up.addr, &format!("max_body_bytes = 1000{ADMIN}"))
            .replace("workers = 1", "workers = 2"),
    );
    let mut c = Client::connect(relay.addr);
    let mut body_bytes = 0;
    for i in 0..5 {
        let b = format!(r#"{{"ok":{i}}}"#);
        body_bytes += b.len();
        assert_eq!(c.post("/v1/logs", b.as_bytes()).status, 200);
    }
    up.set(Behavior {
        status: 400,
        body: b"{\"error\":\"x\"}".to_vec(),
        ..Behavior::default()
    });
    for _ in 0..3 {
        body_bytes += 2;
        assert_eq!(c.post("/v1/logs", b"{}").status, 400);
    }
    for _ in 0..2 {
        assert_eq!(
            http_request(relay.addr, "GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n").status,
            404
        );
    }
    assert_eq!(
        http_request(
            relay.addr,
            "POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .status,
        400
    );
    assert_eq!(
        http_request(
            relay.addr,
            "POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n"
        )
        .status,
        413
    );

    let (m, text) = scrape(&relay);
    let route = [("route", "app-logs")];
    assert_eq!(
        get(
            &m,
            "relay_requests_total",
            &[("route", "app-logs"), ("status", "200")]
        ),
        5.0,
        "{text}"
    );
    assert_eq!(
        get(
            &m,
            "relay_requests_total",
            &[("route", "app-logs"), ("status", "400")]
        ),
        3.0
    );
    assert_eq!(get(&m, "relay_request_duration_seconds_count", &route), 8.0);
    assert_eq!(
        get(
            &m,
            "relay_request_duration_seconds_bucket",
            &[("route", "app-logs"), ("le", "+Inf")]
        ),
        8.0
    );
    assert_eq!(
        get(&m, "relay_bytes_received_total", &route),
        body_bytes as f64
    );
    assert!(get(&m, "relay_bytes_sent_total", &route) > 0.0);
    assert_eq!(
        get(
            &m,
            "relay_rejected_requests_total",
            &[("reason", "no_route")]
        ),
        2.0
    );
    assert_eq!(
        get(
            &m,
            "relay_rejected_requests_total",
            &[("reason", "conflicting_framing")]
        ),
        1.0
    );
    assert_eq!(
        get(
            &m,
            "relay_rejected_requests_total",
            &[("reason", "payload_too_large")]
        ),
        1.0
    );
    assert_eq!(
        get(
            &m,
            "relay_rejected_requests_total",
            &[("reason", "upstream_unreachable")]
        ),
        0.0
    );
    let upstream = [("upstream", "tracking")];
    assert_eq!(
        get(&m, "relay_upstream_duration_seconds_count", &upstream),
        8.0
    );
    assert_eq!(
        get(&m, "relay_upstream_connections_created_total", &upstream),
        1.0
    );
    assert_eq!(
        get(&m, "relay_upstream_connections_reused_total", &upstream),
        7.0
    );
    assert_eq!(get(&m, "relay_upstream_connections_open", &upstream), 1.0);
    assert_eq!(get(&m, "relay_upstream_retries_total", &upstream), 0.0);
    assert_eq!(
        get(
            &m,
            "relay_upstream_errors_total",
            &[("upstream", "tracking"), ("status", "502")]
        ),
        0.0
    );
    assert_eq!(get(&m, "relay_connections_accepted_total", &[]), 5.0);
    assert_eq!(
        get(
            &m,
            "relay_build_info",
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("io_engine", &relay.io_engine),
                ("workers", "2")
            ]
        ),
        1.0
    );
    // Present (CPU time is counted in clock ticks, so a quiet run may still read 0).
    assert!(get(&m, "process_cpu_seconds_total", &[]) >= 0.0);
    assert!(get(&m, "process_resident_memory_bytes", &[]) > 0.0);

    // Upstream failures are counted by status.
    let dead = dead_addr();
    let relay2 = Relay::start(&basic_config("auto", dead, ADMIN));
    for _ in 0..2 {
        assert_eq!(post(relay2.addr, "/v1/logs", b"{}").status, 502);
    }
    let (m, _) = scrape(&relay2);
    assert_eq!(
        get(
            &m,
            "relay_upstream_errors_total",
            &[("upstream", "tracking"), ("status", "502")]
        ),
        2.0
    );
    assert_eq!(
        get(
            &m,
            "relay_requests_total",
            &[("route", "app-logs"), ("status", "502")]
        ),
        2.0
    );
    assert_eq!(
        get(
            &m,
            "relay_rejected_requests_total",
            &[("reason", "upstream_unreachable")]
        ),
        2.0
    );
}

#[test]
fn health_and_readiness() {
    let up = StubUpstream::start(Behavior::default());
    let relay = Relay::start(&basic_config("auto", up.addr, ADMIN));
    assert_eq!(relay.admin_get("/healthz").0, 200);
    let (s, body) = relay.admin_get("/readyz");
    assert_eq!(s, 200, "{body}");
    assert_eq!(relay.admin_get("/nope").0, 404);
}

/// Sends requests on `n` keep-alive connections until stopped; counts non-200 answers.
fn steady_load(
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut c = Client::connect(addr);
        while !stop.load(Ordering::Relaxed) {
            let r = c.post(
                "/v1/logs",
                br#"{"user_id":"user-7","device_id":"device-42"}"#,
            );
            sent.fetch_add(1, Ordering::Relaxed);
            if r.status != 200 {
                failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    })
}

#[test]
fn reload_swaps_upstreams_and_pii_rules_under_load_and_refuses_a_broken_file() {
    let a = StubUpstream::start(Behavior::default());
    let b = StubUpstream::start(Behavior::default());
    let with_pii = |cfg: String, fields: &str| {
        cfg.replace(
            "methods = [\"POST\"]\nupstream = \"tracking\"",
            "methods = [\"POST\"]\nupstream = \"tracking\"\npii = \"default\"",
        ) + &format!("\n[pii.default]\nfields = [{fields}]\nkey_env = \"RELAY_TEST_PII_KEY\"\nkey_id = \"k1\"\n")
    };
    let cfg_a = with_pii(
        basic_config("auto", a.addr, ADMIN).replace("workers = 1", "workers = 2"),
        "\"user_id\"",
    );
    let relay = Relay::start_with(
        &cfg_a,
        RelayOptions {
            env: vec![("RELAY_TEST_PII_KEY".into(), "k".repeat(32))],
            ..Default::default()
        },
    );
    let (stop, sent, failed) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let load: Vec<_> = (0..3)
        .map(|_| steady_load(relay.addr, stop.clone(), sent.clone(), failed.clone()))
        .collect();
    wait_for(Duration::from_secs(20), || (a.count() > 50).then_some(())).expect("load flows to A");

    // Switch the route to upstream B, hash device_id too, and add a route, via POST /reload.
    let cfg_b = with_pii(
        basic_config("auto", b.addr, ADMIN).replace("workers = 1", "workers = 2"),
        "\"user_id\", \"device_id\"",
    )
        + "\n[[routes]]\nname = \"batch\"\npath = \"/v1/batch\"\nupstream = \"tracking\"\n";
    std::fs::write(&relay.config_path, &cfg_b).unwrap();
    let (s, body) = relay.admin_post("/reload");
    assert_eq!(s, 200, "{body}");
    let b_before = b.count();
    wait_for(Duration::from_secs(20), || {
        (b.count() > b_before + 50).then_some(())
    })
    .expect("load flows to B after the reload");
    let a_after = a.count();
    // New connections and the new route use the new config.
    assert_eq!(post(relay.addr, "/v1/batch", b"{}").status, 200);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        a.count() <= a_after + 3,
        "A gets nothing new after the reload (at most the requests in flight)"
    );

    // A broken file is refused; the running config keeps serving.
    std::fs::write(
        &relay.config_path,
        cfg_b.replace("upstream = \"tracking\"", "upstream = \"gone\""),
    )
    .unwrap();
    let (s, body) = relay.admin_post("/reload");
    assert_eq!(s, 400);
    assert!(body.contains("routes[0].upstream"), "{body}");
    // SIGHUP with the broken file: refused too.
    relay.signal("HUP");
    wait_for(Duration::from_secs(10), || {
        (relay.metric("relay_config_reloads_total{result=\"failure\"}") == 2.0).then_some(())
    })
    .expect("the SIGHUP reload was refused and counted");
    let b_now = b.count();
    wait_for(Duration::from_secs(20), || {
        (b.count() > b_now + 20).then_some(())
    })
    .expect("still serving");

    // A change that needs a restart is reported as such.
    std::fs::write(
        &relay.config_path,
        cfg_b.replace("workers = 2", "workers = 1"),
    )
    .unwrap();
    let (s, body) = relay.admin_post("/reload");
    assert_eq!(s, 200);
    assert!(
        body.contains("need a restart") && body.contains("server.workers"),
        "{body}"
    );

    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no request failed across reloads ({} sent)",
        sent.load(Ordering::Relaxed)
    );
    assert_eq!(
        relay.metric("relay_config_reloads_total{result=\"success\"}"),
        2.0
    );

    // The old rule applied to every request before the reload, the new one to every request after.
    let is_hash = |v: &serde_json::Value| {
        v.as_str()
            .is_some_and(|s| s.len() == 64 && s.bytes().all(|c| c.is_ascii_hexdigit()))
    };
    for r in a.requests() {
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert!(is_hash(&v["user_id"]), "{v}");
        assert_eq!(
            v["device_id"], "device-42",
            "old rule: device_id not hashed"
        );
    }
    for r in b.requests().iter().filter(|r| r.target == "/v1/logs") {
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert!(
            is_hash(&v["user_id"]) && is_hash(&v["device_id"]),
            "new rule: both hashed: {v}"
        );
        assert_eq!(r.header("x-relay-key-id"), Some("k1"));
    }
}

#[test]
fn access_log_is_off_by_default_and_sampled_when_on() {
    let up = StubUpstream::start(Behavior::default());
    let relay = Relay::start(&basic_config("auto", up.addr, ""));
    for _ in 0..3 {
        assert_eq!(post(relay.addr, "/v1/logs", b"{}").status, 200);
    }
    assert!(!relay.log().contains("relay::access"), "{}", relay.log());

    let cfg = basic_config("auto", up.addr, "")
        + "\n[log]\naccess_log = true\naccess_log_sample_rate = 1.0\n";
    let relay = Relay::start(&cfg);
    let mut c = Client::connect(relay.addr);
    for _ in 0..3 {
        assert_eq!(c.post("/v1/logs", b"{}").status, 200);
    }
    assert_eq!(c.post("/nowhere", b"{}").status, 404);
    let log = wait_for(Duration::from_secs(10), || {
        let l = relay.log();
        (l.matches("relay::access").count() == 4).then_some(l)
    })
    .expect("one access line per request");
    assert!(
        log.contains("status=404") && log.contains("route=\"app-logs\""),
        "{log}"
    );

    let cfg = basic_config("auto", up.addr, "")
        + "\n[log]\naccess_log = true\naccess_log_sample_rate = 0.0\n";
    let relay = Relay::start(&cfg);
    assert_eq!(post(relay.addr, "/v1/logs", b"{}").status, 200);
    assert!(!relay.log().contains("relay::access"));
}

#[test]
fn every_required_metric_family_is_exposed_with_type_and_help() {
    let up = StubUpstream::start(Behavior::default());
    let relay = Relay::start(&basic_config("auto", up.addr, ADMIN));
    assert_eq!(post(relay.addr, "/v1/logs", b"{}").status, 200);
    let (_, text) = relay.admin_get("/metrics");
    for name in REQUIRED_METRICS {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "no # TYPE for {name}:\n{text}"
        );
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "no # HELP for {name}"
        );
    }
    // Names follow relay_<what>_<unit>[_total]; counters end in _total.
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut it = line.split_whitespace().skip(2);
        let (name, kind) = (it.next().unwrap(), it.next().unwrap());
        if kind == "counter" {
            assert!(
                name.ends_with("_total"),
                "counter {name} must end in _total"
            );
        }
        assert!(
            name.starts_with("relay_") || name.starts_with("process_"),
            "{name}"
        );
    }
    let lines = text.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text format");
}

#[test]
fn readyz_flips_to_503_when_the_kafka_path_is_full_and_back() {
    let up = StubUpstream::start(Behavior::default());
    // No broker listens: records wait in the queue until librdkafka gives up on them (2 s).
    let dead = dead_addr();
    let cfg = basic_config("auto", up.addr, ADMIN).replace(
        "methods = [\"POST\"]\nupstream = \"tracking\"",
        "methods = [\"POST\"]\nupstream = \"tracking\"\ntopic = \"app-log-topic\"",
    ) + &format!(
        "\n[kafka]\nbrokers = \"{dead}\"\nqueue_capacity = 2\nflush_timeout_ms = 1000\n[kafka.properties]\n\"message.timeout.ms\" = \"3000\"\n\"message.max.bytes\" = \"1049600\"\n"
    );
    let relay = Relay::start(&cfg);
    assert_eq!(relay.admin_get("/readyz").0, 200);
    let mut c = Client::connect(relay.addr);
    assert_eq!(c.post("/v1/logs", b"{\"n\":1}").status, 200);
    assert_eq!(c.post("/v1/logs", b"{\"n\":2}").status, 200);
    let (s, body) = relay.admin_get("/readyz");
    assert_eq!(s, 503, "{body}");
    assert!(body.contains("Kafka"), "{body}");
    let r = c.post("/v1/logs", b"{\"n\":3}");
    assert_eq!(
        (r.status, r.json()["error"].as_str().unwrap()),
        (503, "kafka_backpressure")
    );
    assert!(r.header("retry-after").is_some());
    assert_eq!(up.count(), 2, "the refused request was not forwarded");
    // librdkafka times the records out: the path has room again and readiness comes back.
    wait_for(Duration::from_secs(30), || {
        (relay.admin_get("/readyz").0 == 200).then_some(())
    })
    .expect("ready again");
    assert_eq!(
        relay.metric(
            "relay_kafka_records_failed_total{topic=\"app-log-topic\",reason=\"timed_out\"}"
        ),
        2.0
    );
    assert_eq!(
        relay.metric("relay_rejected_requests_total{reason=\"kafka_backpressure\"}"),
        1.0
    );
}
