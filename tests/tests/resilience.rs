//! Upstream resilience, black box against real stub upstreams that fail on demand: outlier
//! ejection moves traffic off a failing node; active health checks take an unhealthy node out
//! and bring it back; the circuit breaker answers 503 `upstream_unavailable` at once while the
//! upstream fails, then closes after it recovers; the retry policy never retries a request
//! whose body was fully written unless told to, and the retry budget bounds retries; the
//! `least_request` balancer spreads traffic; `GET /upstreams` shows the live state. Nothing
//! asserts on timing: state changes are waited for with generous deadlines. Every case runs
//! on both the io_uring and epoll engines.

use std::time::Duration;

use relay_e2e::*;

/// `basic_config` with its upstream's nodes replaced and `tables` added to the upstream.
fn config(engine: &str, nodes: &[std::net::SocketAddr], tables: &str) -> String {
    let first = nodes[0];
    let list = nodes
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    basic_config(engine, first, "\n[admin]\nlisten = \"127.0.0.1:0\"")
        .replace(
            &format!("nodes = [\"{first}\"]"),
            &format!("nodes = [{list}]"),
        )
        .replace(
            "read_timeout_ms = 1500\n",
            &format!("read_timeout_ms = 1500\n{tables}\n"),
        )
}

fn failing_node_is_ejected_and_traffic_moves(engine: &str) {
    let bad = StubUpstream::start(Behavior {
        status: 500,
        ..Behavior::default()
    });
    let good = StubUpstream::start(Behavior::default());
    let cfg = config(
        engine,
        &[bad.addr, good.addr],
        "[upstreams.outlier]\nconsecutive_failures = 2\nbase_ejection_ms = 600000\nmax_ejection_ms = 600000",
    );
    let relay = Relay::start(&cfg);
    let mut c = Client::connect(relay.addr);
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(c.post("/v1/logs", b"{}").status);
    }
    assert_eq!(
        bad.count(),
        2,
        "ejected after 2 consecutive 5xx: {statuses:?}"
    );
    assert_eq!(statuses.iter().filter(|&&s| s == 500).count(), 2);
    assert_eq!(good.count(), 18);
    assert_eq!(
        relay.metric("relay_upstream_ejections_total{upstream=\"tracking\"}"),
        1.0
    );
    let series = format!(
        "relay_upstream_node_ejected_workers{{upstream=\"tracking\",node=\"{}\"}}",
        bad.addr
    );
    assert_eq!(relay.metric(&series), 1.0);
    let (_, body) = relay.admin_get("/upstreams");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["upstreams"][0]["nodes"][0]["ejected_workers"], 1,
        "{body}"
    );
}

/// Rewrites relay's config file with `from` replaced by `to` and reloads it through the admin
/// port.
fn reload_with(relay: &Relay, from: &str, to: &str) {
    let text = std::fs::read_to_string(&relay.config_path).unwrap();
    assert!(text.contains(from), "{from} not in the config");
    std::fs::write(&relay.config_path, text.replace(from, to)).unwrap();
    let (status, body) = relay.admin_post("/reload");
    assert_eq!(status, 200, "{body}");
}

fn an_ejected_node_stays_ejected_across_a_reload(engine: &str) {
    let bad = StubUpstream::start(Behavior {
        status: 500,
        ..Behavior::default()
    });
    let good = StubUpstream::start(Behavior::default());
    let cfg = config(
        engine,
        &[bad.addr, good.addr],
        "[upstreams.outlier]\nconsecutive_failures = 2\nbase_ejection_ms = 600000\nmax_ejection_ms = 600000",
    );
    let relay = Relay::start(&cfg);
    let mut c = Client::connect(relay.addr);
    for _ in 0..10 {
        c.post("/v1/logs", b"{}");
    }
    assert_eq!(bad.count(), 2, "ejected after 2 consecutive 5xx");
    // A reload that changes the upstream (another timeout) keeps what outlier detection knew.
    reload_with(&relay, "read_timeout_ms = 1500", "read_timeout_ms = 1600");
    for _ in 0..10 {
        assert_eq!(c.post("/v1/logs", b"{}").status, 200, "{}", relay.log());
    }
    assert_eq!(
        bad.count(),
        2,
        "the reload did not reinstate the ejected node"
    );
    assert_eq!(good.count(), 18);
    let series = format!(
        "relay_upstream_node_ejected_workers{{upstream=\"tracking\",node=\"{}\"}}",
        bad.addr
    );
    assert_eq!(relay.metric(&series), 1.0);
}

fn an_open_circuit_stays_open_across_a_reload(engine: &str) {
    let up = StubUpstream::start(Behavior {
        status: 500,
        ..Behavior::default()
    });
    let cfg = config(
        engine,
        &[up.addr],
        "[upstreams.breaker]\nmin_requests = 4\nfailure_rate_percent = 50\nopen_ms = 600000\nhalf_open_probes = 1",
    );
    let relay = Relay::start(&cfg);
    let mut c = Client::connect(relay.addr);
    for _ in 0..4 {
        assert_eq!(c.post("/v1/logs", b"{}").status, 500);
    }
    assert_eq!(c.post("/v1/logs", b"{}").status, 503, "circuit open");
    reload_with(&relay, "read_timeout_ms = 1500", "read_timeout_ms = 1600");
    let r = c.post("/v1/logs", b"{}");
    assert_eq!(
        (r.status, r.json()["error"].as_str().unwrap()),
        (503, "upstream_unavailable"),
        "the reload did not close the open circuit: {}",
        relay.log()
    );
    assert_eq!(up.count(), 4, "nothing went upstream");
    assert_eq!(
        relay.metric("relay_upstream_circuit_open_workers{upstream=\"tracking\"}"),
        1.0
    );
    // New breaker settings start a closed breaker: the next request goes upstream.
    up.set(Behavior::default());
    reload_with(&relay, "min_requests = 4", "min_requests = 5");
    assert_eq!(c.post("/v1/logs", b"{}").status, 200, "{}", relay.log());
    assert_eq!(up.count(), 5);
    assert_eq!(
        relay.metric("relay_upstream_circuit_open_workers{upstream=\"tracking\"}"),
        0.0
    );
}

fn an_unhealthy_node_stays_unhealthy_across_a_reload(engine: &str) {
    let sick = StubUpstream::start(Behavior {
        health_status: Some(500),
        ..Behavior::default()
    });
    let good = StubUpstream::start(Behavior::default());
    // Probes every 50 ms, judged unhealthy after 2 failures, healthy again only after 1000
    // passes (never, here): a reload that forgot the verdict would send traffic to it.
    let cfg = config(
        engine,
        &[sick.addr, good.addr],
        "[upstreams.health]\ninterval_ms = 50\ntimeout_ms = 40\nhealthy_after = 1000\nunhealthy_after = 2",
    );
    let relay = Relay::start(&cfg);
    let series = format!(
        "relay_upstream_node_healthy{{upstream=\"tracking\",node=\"{}\"}}",
        sick.addr
    );
    wait_for(Duration::from_secs(20), || {
        (relay.metric(&series) == 0.0).then_some(())
    })
    .expect("health checks judge it unhealthy");
    let before = sick.count_to("/v1/logs");
    reload_with(&relay, "read_timeout_ms = 1500", "read_timeout_ms = 1600");
    assert_eq!(
        relay.metric(&series),
        0.0,
        "the verdict survived the reload"
    );
    let mut c = Client::connect(relay.addr);
    for _ in 0..10 {
        assert_eq!(c.post("/v1/logs", b"{}").status, 200);
    }
    assert_eq!(
        sick.count_to("/v1/logs"),
        before,
        "no traffic to the unhealthy node"
    );
}

fn dead_node_is_ejected(engine: &str) {
    let dead = dead_addr();
    let good = StubUpstream::start(Behavior::default());
    let cfg = config(
        engine,
        &[dead, good.addr],
        "[upstreams.outlier]\nconsecutive_failures = 1\nbase_ejection_ms = 600000\nmax_ejection_ms = 600000",
    );
    let relay = Relay::start(&cfg);
    let mut c = Client::connect(relay.addr);
    for _ in 0..10 {
        assert_eq!(c.post("/v1/logs", b"{}").status, 200, "{}", relay.log());
    }
    assert_eq!(good.count(), 10);
}

fn breaker_opens_fails_fast_and_closes_after_recovery(engine: &str) {
    let up = StubUpstream::start(Behavior {
        status: 500,
        ..Behavior::default()
    });
    let cfg = config(
        engine,
        &[up.addr],
        "[upstreams.breaker]\nmin_requests = 4\nfailure_rate_percent = 50\nopen_ms = 300\nhalf_open_probes = 1",
    );
    let relay = Relay::start(&cfg);
    let mut c = Client::connect(relay.addr);
    for _ in 0..4 {
        assert_eq!(
            c.post("/v1/logs", b"{}").status,
            500,
            "5xx relayed verbatim"
        );
    }
    let r = c.post("/v1/logs", b"{}");
    assert_eq!(
        (r.status, r.json()["error"].as_str().unwrap()),
        (503, "upstream_unavailable"),
        "{}",
        relay.log()
    );
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(up.count(), 4, "an open circuit sends nothing upstream");
    assert_eq!(
        relay.metric("relay_upstream_circuit_opened_total{upstream=\"tracking\"}"),
        1.0
    );
    assert!(relay.metric("relay_upstream_circuit_rejected_total{upstream=\"tracking\"}") >= 1.0);
    assert_eq!(
        relay.metric("relay_upstream_circuit_open_workers{upstream=\"tracking\"}"),
        1.0
    );

    up.set(Behavior::default());
    let recovered = wait_for(Duration::from_secs(20), || {
        (c.post("/v1/logs", b"{}").status == 200).then_some(())
    });
    assert!(
        recovered.is_some(),
        "the circuit closes once the upstream recovers"
    );
    for _ in 0..5 {
        assert_eq!(c.post("/v1/logs", b"{}").status, 200);
    }
    assert_eq!(
        relay.metric("relay_upstream_circuit_open_workers{upstream=\"tracking\"}"),
        0.0
    );
}

fn invalid_resilience_config_names_the_field(engine: &str) {
    let cfg = config(
        engine,
        &[dead_addr()],
        "[upstreams.breaker]\nfailure_rate_percent = 0",
    );
    let err = Relay::try_start_with(&cfg, RelayOptions::default())
        .err()
        .expect("a bad breaker config is refused");
    assert!(
        err.contains("upstreams[0].breaker.failure_rate_percent"),
        "{err}"
    );
}

const OUTLIER_OFF_LOGS: &str = "/v1/logs";

fn unhealthy_node_gets_no_traffic_and_returns_after_checks_pass(engine: &str) {
    let sick = StubUpstream::start(Behavior {
        status: 500,
        ..Behavior::default()
    });
    let good = StubUpstream::start(Behavior::default());
    let cfg = config(
        engine,
        &[sick.addr, good.addr],
        "[upstreams.health]\npath = \"/health\"\ninterval_ms = 50\ntimeout_ms = 40\nhealthy_after = 2\nunhealthy_after = 2",
    );
    let relay = Relay::start(&cfg);
    let sick_series = format!(
        "relay_upstream_node_healthy{{upstream=\"tracking\",node=\"{}\"}}",
        sick.addr
    );
    let out = wait_for(Duration::from_secs(20), || {
        (relay.metric(&sick_series) == 0.0).then_some(())
    });
    assert!(
        out.is_some(),
        "the failing node is judged unhealthy: {}",
        relay.log()
    );
    assert!(sick.count_to("/health") >= 2, "probes reached the node");
    let before = sick.count_to(OUTLIER_OFF_LOGS);
    let mut c = Client::connect(relay.addr);
    for _ in 0..10 {
        assert_eq!(c.post(OUTLIER_OFF_LOGS, b"{}").status, 200);
    }
    assert_eq!(
        sick.count_to(OUTLIER_OFF_LOGS),
        before,
        "an unhealthy node gets no traffic"
    );
    let (status, body) = relay.admin_get("/upstreams");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let nodes = v["upstreams"][0]["nodes"].as_array().unwrap().clone();
    assert_eq!(nodes[0]["healthy"], false, "{body}");
    assert_eq!(nodes[1]["healthy"], true, "{body}");

    sick.set(Behavior::default());
    let back = wait_for(Duration::from_secs(20), || {
        (relay.metric(&sick_series) == 1.0).then_some(())
    });
    assert!(
        back.is_some(),
        "the node is healthy again once its checks pass"
    );
    let served = wait_for(Duration::from_secs(20), || {
        assert_eq!(c.post(OUTLIER_OFF_LOGS, b"{}").status, 200);
        (sick.count_to(OUTLIER_OFF_LOGS) > before).then_some(())
    });
    assert!(served.is_some(), "traffic comes back to the recovered node");
}

fn fully_written_post_is_not_retried_by_default(engine: &str) {
    let resetting = StubUpstream::start(Behavior {
        reset: true,
        ..Behavior::default()
    });
    let good = StubUpstream::start(Behavior::default());
    let cfg = config(engine, &[resetting.addr, good.addr], "");
    let relay = Relay::start(&cfg);
    let mut statuses = Vec::new();
    for i in 0..10 {
        let body = format!("{{\"n\":{i}}}");
        statuses.push(post(relay.addr, "/v1/logs", body.as_bytes()).status);
    }
    let failed = statuses.iter().filter(|&&s| s == 502).count();
    assert!(
        failed > 0,
        "some requests went to the resetting node: {statuses:?}"
    );
    assert_eq!(
        resetting.count() + good.count(),
        10,
        "every request reached exactly one node: none was sent twice"
    );
    assert_eq!(resetting.count(), failed);
    assert_eq!(
        relay.metric("relay_upstream_retries_total{upstream=\"tracking\"}"),
        0.0
    );
}

fn reset_after_write_is_retried_on_another_node_when_configured(engine: &str) {
    let resetting = StubUpstream::start(Behavior {
        reset: true,
        ..Behavior::default()
    });
    let good = StubUpstream::start(Behavior::default());
    let cfg = config(
        engine,
        &[resetting.addr, good.addr],
        "retry_on = [\"connect\", \"reset_before_write\", \"reset_after_write\"]\nretry_budget_percent = 100",
    );
    let relay = Relay::start(&cfg);
    for _ in 0..10 {
        assert_eq!(
            post(relay.addr, "/v1/logs", b"{}").status,
            200,
            "{}",
            relay.log()
        );
    }
    assert_eq!(good.count(), 10, "each retry went to the other node");
    let retries = relay.metric("relay_upstream_retries_total{upstream=\"tracking\"}");
    assert_eq!(retries as usize, resetting.count());
    assert!(retries >= 1.0);
}

fn retries_never_exceed_the_budget(engine: &str) {
    let good = StubUpstream::start(Behavior::default());
    let cfg = config(
        engine,
        &[dead_addr(), good.addr],
        "retry_budget_percent = 10\nretry_budget_min = 0\nretry_budget_window_ms = 600000",
    );
    let relay = Relay::start(&cfg);
    let mut c = Client::connect(relay.addr);
    let n = 60;
    let mut failed = 0;
    for _ in 0..n {
        match c.post("/v1/logs", b"{}").status {
            200 => {}
            502 => failed += 1,
            s => panic!("unexpected status {s}"),
        }
    }
    let retries = relay.metric("relay_upstream_retries_total{upstream=\"tracking\"}");
    let refused =
        relay.metric("relay_upstream_retry_budget_exhausted_total{upstream=\"tracking\"}");
    assert!(
        retries <= (n / 10) as f64,
        "at most 10% of {n} requests are retries: {retries}"
    );
    assert!(retries >= 1.0, "the budget allows some retries");
    assert_eq!(
        refused as usize, failed,
        "every refused retry is a 502 to the app"
    );
    assert_eq!(good.count(), n - failed);
}

fn least_request_spreads_over_the_nodes(engine: &str) {
    let a = StubUpstream::start(Behavior::default());
    let b = StubUpstream::start(Behavior::default());
    let cfg = config(engine, &[a.addr, b.addr], "lb = \"least_request\"");
    let relay = Relay::start(&cfg);
    let mut c = Client::connect(relay.addr);
    for _ in 0..60 {
        assert_eq!(c.post("/v1/logs", b"{}").status, 200);
    }
    assert_eq!(a.count() + b.count(), 60);
    assert!(
        a.count() > 0 && b.count() > 0,
        "{} / {}",
        a.count(),
        b.count()
    );
}

fn unknown_retry_on_and_lb_are_refused_naming_the_field(engine: &str) {
    for (table, field) in [
        ("retry_on = [\"504\"]", "retry_on"),
        ("lb = \"random\"", "lb"),
        (
            "[upstreams.health]\npath = \"health\"",
            "upstreams[0].health.path",
        ),
    ] {
        let cfg = config(engine, &[dead_addr()], table);
        let err = Relay::try_start_with(&cfg, RelayOptions::default())
            .err()
            .expect("a bad config is refused");
        assert!(err.contains(field), "{table}: {err}");
    }
}

fn ejected_node_comes_back_when_its_health_checks_pass(engine: &str) {
    let flaky = StubUpstream::start(Behavior {
        reset: true,
        health_status: Some(200),
        ..Behavior::default()
    });
    let good = StubUpstream::start(Behavior::default());
    let cfg = config(
        engine,
        &[flaky.addr, good.addr],
        "[upstreams.outlier]\nconsecutive_failures = 2\nbase_ejection_ms = 600000\nmax_ejection_ms = 600000\n[upstreams.health]\ninterval_ms = 50\ntimeout_ms = 40\nhealthy_after = 2\nunhealthy_after = 2",
    );
    let relay = Relay::start(&cfg);
    let mut c = Client::connect(relay.addr);
    // The node resets every request (its health endpoint still answers): ejected after 2.
    for _ in 0..10 {
        c.post("/v1/logs", b"{}");
    }
    assert_eq!(
        flaky.count_to("/v1/logs"),
        2,
        "ejected within the configured failures"
    );
    assert_eq!(
        relay.metric("relay_upstream_ejections_total{upstream=\"tracking\"}"),
        1.0
    );
    // It dies completely (health checks fail too), then recovers.
    let series = format!(
        "relay_upstream_node_healthy{{upstream=\"tracking\",node=\"{}\"}}",
        flaky.addr
    );
    flaky.set(Behavior {
        reset: true,
        health_status: Some(500),
        ..Behavior::default()
    });
    let down = wait_for(Duration::from_secs(20), || {
        (relay.metric(&series) == 0.0).then_some(())
    });
    assert!(down.is_some(), "health checks judge it unhealthy");
    flaky.set(Behavior::default());
    let up = wait_for(Duration::from_secs(20), || {
        (relay.metric(&series) == 1.0).then_some(())
    });
    assert!(up.is_some(), "health checks pass again");
    // Its 600 s ejection is lifted by the passing checks: traffic comes back now.
    let back = wait_for(Duration::from_secs(20), || {
        assert_eq!(c.post("/v1/logs", b"{}").status, 200);
        (flaky.count_to("/v1/logs") > 2).then_some(())
    });
    assert!(
        back.is_some(),
        "traffic returns once its health check passes"
    );
}

fn stalled_node_is_ejected_after_its_timeout(engine: &str) {
    let stalled = StubUpstream::start(Behavior {
        stall: true,
        ..Behavior::default()
    });
    let good = StubUpstream::start(Behavior::default());
    let cfg = config(
        engine,
        &[stalled.addr, good.addr],
        "[upstreams.outlier]\nconsecutive_failures = 1\nbase_ejection_ms = 600000\nmax_ejection_ms = 600000",
    );
    let relay = Relay::start(&cfg);
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(post(relay.addr, "/v1/logs", b"{}").status);
    }
    assert_eq!(
        stalled.count(),
        1,
        "one timeout ejects the node: {statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 504).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(good.count(), 7);
}

on_both_engines!(
    an_ejected_node_stays_ejected_across_a_reload,
    an_open_circuit_stays_open_across_a_reload,
    an_unhealthy_node_stays_unhealthy_across_a_reload,
    failing_node_is_ejected_and_traffic_moves,
    dead_node_is_ejected,
    breaker_opens_fails_fast_and_closes_after_recovery,
    invalid_resilience_config_names_the_field,
    unhealthy_node_gets_no_traffic_and_returns_after_checks_pass,
    fully_written_post_is_not_retried_by_default,
    reset_after_write_is_retried_on_another_node_when_configured,
    retries_never_exceed_the_budget,
    least_request_spreads_over_the_nodes,
    unknown_retry_on_and_lb_are_refused_naming_the_field,
    ejected_node_comes_back_when_its_health_checks_pass,
    stalled_node_is_ejected_after_its_timeout,
);
