//! Sanitization receipts and the egress guard's `report` action through the running relay, a
//! real Kafka-protocol broker (tansu) and a stub upstream, black box:
//!
//! - each original's record carries `relay-policy`, `relay-scrubbed-sha256` and
//!   `relay-pii-count`; the upstream got `X-Relay-Policy` with the same value, and the SHA-256
//!   of the body it received is `relay-scrubbed-sha256`; `relay scrub --receipt` names the
//!   same policy;
//! - in `ack` mode the upstream is called while Kafka still holds the original (Produce held
//!   at a gate), and the answer waits for Kafka's acknowledgement;
//! - `report` puts exactly one quarantine record (detector and JSON path as headers, never the
//!   value) in the broker for one offending request and none for a clean one; `hash` and
//!   `reject` are counted per detector;
//! - a quarantine topic that does not exist, or a broker that is down, loses no original and
//!   holds no request: the request is answered, the original delivered, the failed quarantine
//!   record counted in `relay_guard_quarantine_failed_total`, `/readyz` stays 200;
//! - a quarantine record lists at most 64 findings (all counted), and one that grew past
//!   `message.max.bytes` is counted as failed, never sent, and the original is delivered.
//!
//! Every wait polls a condition with a generous deadline.

use std::process::Command;
use std::time::Duration;

use relay_e2e::broker::{self, read_topic, GatedTansu, ReadBack, Tansu};
use relay_e2e::{relay_bin, Behavior, Client, Relay, Response, StubUpstream};

const TOPIC: &str = "originals";
const QTOPIC: &str = "pii-findings";
const LONG: Duration = Duration::from_secs(90);

/// Route `logs` (`/v1/logs`, policy `default`, topic [`TOPIC`]) with an egress guard: `email`
/// reports to [`QTOPIC`], `card` is hashed, regex `ssn` rejects.
fn config(upstream: std::net::SocketAddr, brokers: &str, delivery: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
workers = 1
shutdown_grace_ms = 2000
shutdown_budget_ms = 6000

[admin]
listen = "127.0.0.1:0"

[kafka]
brokers = "{brokers}"
delivery = "{delivery}"
flush_timeout_ms = 1000
[kafka.properties]
"linger.ms" = "2"
"reconnect.backoff.max.ms" = "200"
"retry.backoff.max.ms" = "200"
"topic.metadata.propagation.max.ms" = "1000"
"message.max.bytes" = "1049600"

[[upstreams]]
name = "tracking"
nodes = ["{upstream}"]

[[routes]]
name = "logs"
path = "/v1/logs"
methods = ["POST"]
upstream = "tracking"
topic = "{TOPIC}"
pii = "default"

[pii.default]
fields = ["user_id"]
query_params = ["uid"]
headers = ["x-device-id"]
hash = "sha256"

[pii.default.guard]
email = "report"
card = "hash"
quarantine_topic = "{QTOPIC}"
[[pii.default.guard.regex]]
name = "ssn"
pattern = '\b\d{{3}}-\d{{2}}-\d{{4}}\b'
action = "reject"
"#
    )
}

fn send(c: &mut Client, target: &str, headers: &str, body: &str) -> Response {
    c.send(
        format!(
            "POST {target} HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n{headers}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    c.recv().expect("a response")
}

fn sha256_hex(b: &[u8]) -> String {
    relay::scrub::hashing::Hasher::Sha256.hex(b)
}

fn header<'a>(r: &'a ReadBack, name: &str) -> &'a str {
    std::str::from_utf8(
        r.header(name)
            .unwrap_or_else(|| panic!("no {name} header in {:?}", r.headers)),
    )
    .unwrap()
}

fn enqueued(relay: &Relay, topic: &str) -> f64 {
    relay.metric(&format!(
        "relay_kafka_records_enqueued_total{{topic=\"{topic}\"}}"
    ))
}

fn delivered(relay: &Relay, topic: &str) -> f64 {
    relay.metric(&format!(
        "relay_kafka_records_delivered_total{{topic=\"{topic}\"}}"
    ))
}

fn guard_metric(relay: &Relay, detector: &str, action: &str) -> f64 {
    relay.metric(&format!(
        "relay_guard_findings_total{{policy=\"default\",detector=\"{detector}\",action=\"{action}\"}}"
    ))
}

fn wait_metric(relay: &Relay, what: &str, f: impl Fn(&Relay) -> bool) {
    broker::wait_for(what, LONG, || f(relay));
}

#[test]
fn originals_carry_receipts_that_match_what_the_upstream_received() {
    let b = Tansu::start();
    b.create_topic(TOPIC);
    b.create_topic(QTOPIC);
    let up = StubUpstream::start(Behavior::default());
    let relay = Relay::start(&config(up.addr, &b.bootstrap(), "memory"));
    let mut c = Client::connect(relay.addr);
    // Body, query and header PII: 1 + 1 + 1 values hashed, plus the card span the guard's
    // `hash` action replaced (as `relay scrub --receipt` counts it).
    let r1 = send(
        &mut c,
        "/v1/logs?uid=u-9&x=1",
        "X-Device-Id: dev-1\r\nX-Relay-Policy: forged\r\n",
        r#"{"user_id":"u-9","pay":"4111 1111 1111 1111","n":1}"#,
    );
    let r2 = send(&mut c, "/v1/logs", "", r#"{"user_id":"u-8","n":2}"#);
    assert_eq!((r1.status, r2.status), (200, 200));
    let got = read_topic(&b.bootstrap(), TOPIC, 2, LONG);
    assert_eq!(got.len(), 2);
    let reqs = up.requests();
    assert_eq!(reqs.len(), 2);
    let mut policy = String::new();
    for rec in &got {
        let id = header(rec, "relay-request-id");
        let fwd = reqs
            .iter()
            .find(|q| q.header("x-request-id") == Some(id))
            .expect("the upstream got the request of each record");
        // The original is byte for byte what the client sent; the receipt is of what left.
        assert!(std::str::from_utf8(&rec.payload)
            .unwrap()
            .contains("\"user_id\":\"u-"));
        assert_eq!(header(rec, "relay-scrubbed-sha256"), sha256_hex(&fwd.body));
        assert_ne!(sha256_hex(&rec.payload), sha256_hex(&fwd.body));
        let p = header(rec, "relay-policy");
        let digest = p.strip_prefix("default:").expect("NAME:DIGEST");
        assert!(
            digest.len() == 12 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
            "{p}"
        );
        assert_eq!(fwd.header("x-relay-policy"), Some(p), "upstream header");
        assert_eq!(
            fwd.headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("x-relay-policy"))
                .count(),
            1,
            "the client's X-Relay-Policy is dropped: {:?}",
            fwd.headers
        );
        // Body, query, header and guard-hashed values for the first request, the body's for
        // the second.
        let count = if fwd.target.contains("uid=") {
            "4"
        } else {
            "1"
        };
        assert_eq!(header(rec, "relay-pii-count"), count, "{}", fwd.target);
        policy = p.to_string();
    }
    let forwarded1 = reqs.iter().find(|q| q.target.contains("uid=")).unwrap();
    let s = String::from_utf8_lossy(&forwarded1.body);
    assert!(!s.contains("4111") && !s.contains("u-9"), "{s}");
    // No report finding: nothing quarantined.
    assert_eq!(enqueued(&relay, QTOPIC), 0.0);

    // `relay scrub --receipt` is the same implementation: same policy value, and the same
    // digest for a body without query or header PII.
    let file = relay.dir.path().join("b.json");
    std::fs::write(&file, r#"{"user_id":"u-8","n":2}"#).unwrap();
    let out = Command::new(relay_bin())
        .args(["scrub", "--receipt", "--route", "logs", "--config"])
        .arg(&relay.config_path)
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(&format!("relay-policy: {policy}\n")),
        "{text} vs {policy}"
    );
    let plain = reqs.iter().find(|q| !q.target.contains("uid=")).unwrap();
    assert!(
        text.contains(&format!(
            "relay-scrubbed-sha256: {}\n",
            sha256_hex(&plain.body)
        )),
        "{text}"
    );
}

#[test]
fn ack_calls_the_upstream_while_kafka_holds_the_original() {
    let b = GatedTansu::start();
    b.tansu.create_topic(TOPIC);
    b.tansu.create_topic(QTOPIC);
    let up = StubUpstream::start(Behavior::default());
    let relay = Relay::start(&config(up.addr, &b.bootstrap(), "ack"));
    // Warm up (metadata, producer id) with Produce open.
    let mut c = Client::connect(relay.addr);
    assert_eq!(
        send(&mut c, "/v1/logs", "", r#"{"user_id":"w"}"#).status,
        200
    );
    b.gate.close();
    let addr = relay.addr;
    let answer = std::thread::spawn(move || {
        let mut c = Client::connect(addr);
        send(&mut c, "/v1/logs", "", r#"{"user_id":"u-held","n":7}"#)
    });
    // The upstream gets the scrubbed request while the Produce request is held at the gate
    // (were the exchange after the Kafka round trip, this would never happen); the answer
    // waits for Kafka's acknowledgement.
    broker::wait_for("the upstream to get the request", LONG, || up.count() == 2);
    assert!(
        !answer.is_finished(),
        "ack answered before Kafka acknowledged"
    );
    b.gate.open();
    let r = answer.join().unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let got = read_topic(&b.bootstrap(), TOPIC, 2, LONG);
    let held = got
        .iter()
        .find(|g| g.payload.ends_with(b"\"n\":7}"))
        .expect("the held original");
    let fwd = up.requests().pop().unwrap();
    assert_eq!(header(held, "relay-scrubbed-sha256"), sha256_hex(&fwd.body));
    assert_eq!(header(held, "relay-pii-count"), "1");
}

#[test]
fn report_quarantines_exactly_one_record_and_guard_findings_are_counted() {
    let b = Tansu::start();
    b.create_topic(TOPIC);
    b.create_topic(QTOPIC);
    let up = StubUpstream::start(Behavior::default());
    let relay = Relay::start(&config(up.addr, &b.bootstrap(), "memory"));
    let mut c = Client::connect(relay.addr);
    let clean = send(&mut c, "/v1/logs", "", r#"{"user_id":"u-1","note":"fine"}"#);
    let offending = send(
        &mut c,
        "/v1/logs",
        "X-Request-Id: offending-1\r\n",
        r#"{"user_id":"u-2","note":"mail carol@example.com","pay":"4111-1111-1111-1111"}"#,
    );
    assert_eq!((clean.status, offending.status), (200, 200));
    // Queued before the exchange: the count is final once the answers are in.
    assert_eq!(enqueued(&relay, QTOPIC), 1.0);
    let q = read_topic(&b.bootstrap(), QTOPIC, 1, LONG);
    assert_eq!(q.len(), 1);
    let rec = &q[0];
    assert_eq!(header(rec, "relay-guard-detector"), "email");
    assert_eq!(header(rec, "relay-guard-path"), "$.note");
    assert_eq!(header(rec, "relay-request-id"), "offending-1");
    assert_eq!(header(rec, "relay-route"), "logs");
    let fwd = up
        .requests()
        .into_iter()
        .find(|r| r.header("x-request-id") == Some("offending-1"))
        .unwrap();
    assert_eq!(
        rec.payload, fwd.body,
        "the quarantine payload is the forwarded body"
    );
    assert_eq!(header(rec, "relay-scrubbed-sha256"), sha256_hex(&fwd.body));
    for (n, v) in &rec.headers {
        let v = String::from_utf8_lossy(v);
        assert!(!v.contains("carol"), "a header carries the value: {n}: {v}");
    }
    // Both originals are in their topic; only the offending request was quarantined.
    wait_metric(&relay, "2 originals delivered", |r| {
        delivered(r, TOPIC) == 2.0
    });
    wait_metric(&relay, "the quarantine record delivered", |r| {
        delivered(r, QTOPIC) == 1.0
    });
    assert_eq!(
        read_topic(&b.bootstrap(), QTOPIC, 2, Duration::from_secs(3)).len(),
        1
    );

    // reject: 422 naming detector and path, nothing forwarded, counted.
    let before = up.count();
    let r = send(
        &mut c,
        "/v1/logs",
        "",
        r#"{"user_id":"u-3","x":"123-45-6789"}"#,
    );
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["error"], "pii_detected");
    let msg = r.json()["message"].as_str().unwrap_or("").to_string();
    assert!(
        msg.contains("ssn") && msg.contains("$.x") && !msg.contains("6789"),
        "{msg}"
    );
    assert_eq!(up.count(), before);
    assert_eq!(guard_metric(&relay, "email", "report"), 1.0);
    assert_eq!(guard_metric(&relay, "card", "hash"), 1.0);
    assert_eq!(guard_metric(&relay, "ssn", "reject"), 1.0);
    // The refused request's original is still in the topic (the raw copy), without a receipt:
    // nothing was forwarded.
    wait_metric(&relay, "3 originals delivered", |r| {
        delivered(r, TOPIC) == 3.0
    });
    let all = read_topic(&b.bootstrap(), TOPIC, 3, LONG);
    let refused = all
        .iter()
        .find(|g| g.payload.ends_with(b"\"123-45-6789\"}"))
        .expect("the refused original");
    assert!(
        refused.header("relay-policy").is_none(),
        "{:?}",
        refused.headers
    );
    assert!(refused.header("relay-scrubbed-sha256").is_none());
    assert_eq!(enqueued(&relay, QTOPIC), 1.0);
    assert_eq!(guard_metric(&relay, "email", "reject"), 0.0);
    assert_eq!(
        relay.metric("relay_guard_quarantine_failed_total{policy=\"default\"}"),
        0.0
    );
}

fn originals_lost(relay: &Relay) -> f64 {
    let (_, text) = relay.admin_get("/metrics");
    text.lines()
        .filter(|l| l.starts_with("relay_kafka_originals_lost_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn a_missing_quarantine_topic_loses_no_original_and_holds_no_request() {
    let b = Tansu::start();
    b.create_topic(TOPIC);
    // QTOPIC is never created: tansu does not auto-create topics.
    let up = StubUpstream::start(Behavior::default());
    let relay = Relay::start(&config(up.addr, &b.bootstrap(), "memory"));
    let mut c = Client::connect(relay.addr);
    let offending = r#"{"user_id":"u-1","note":"mail carol@example.com"}"#;
    let r = send(&mut c, "/v1/logs", "X-Request-Id: missing-q\r\n", offending);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(up.count(), 1, "forwarded");
    wait_metric(&relay, "the failed quarantine record counted", |r| {
        r.metric("relay_guard_quarantine_failed_total{policy=\"default\"}") == 1.0
    });
    let got = read_topic(&b.bootstrap(), TOPIC, 1, LONG);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload, offending.as_bytes());
    assert_eq!(header(&got[0], "relay-request-id"), "missing-q");
    assert_eq!(
        relay.admin_get("/readyz").0,
        200,
        "a missing quarantine topic does not gate readiness"
    );
    assert_eq!(originals_lost(&relay), 0.0);
    // The route goes on: a clean request and another offending one are answered.
    assert_eq!(
        send(&mut c, "/v1/logs", "", r#"{"user_id":"u-2"}"#).status,
        200
    );
    assert_eq!(send(&mut c, "/v1/logs", "", offending).status, 200);
    wait_metric(&relay, "3 originals delivered", |r| {
        delivered(r, TOPIC) == 3.0
    });
    assert_eq!(originals_lost(&relay), 0.0);
}

#[test]
fn with_the_broker_down_a_report_holds_no_request_and_both_records_arrive_later() {
    let mut b = Tansu::start();
    b.create_topic(TOPIC);
    b.create_topic(QTOPIC);
    let up = StubUpstream::start(Behavior::default());
    // A restarted tansu forgets producer ids (see broker::TansuRestart).
    let props: String = broker::TansuRestart::PROPERTIES
        .iter()
        .map(|(k, v)| format!("\"{k}\" = \"{v}\"\n"))
        .collect();
    let cfg = config(up.addr, &b.bootstrap(), "memory").replace(
        "[kafka.properties]\n",
        &format!("[kafka.properties]\n{props}"),
    );
    let relay = Relay::start(&cfg);
    let mut c = Client::connect(relay.addr);
    assert_eq!(
        send(&mut c, "/v1/logs", "", r#"{"user_id":"warm"}"#).status,
        200
    );
    wait_metric(&relay, "the warm-up delivered", |r| {
        delivered(r, TOPIC) == 1.0
    });
    b.stop();
    // memory delivery: both records are queued; the request is answered without waiting.
    let offending = r#"{"user_id":"u-1","note":"mail carol@example.com"}"#;
    let r = send(
        &mut c,
        "/v1/logs",
        "X-Request-Id: broker-down\r\n",
        offending,
    );
    assert_eq!(r.status, 200);
    assert_eq!(enqueued(&relay, QTOPIC), 1.0);
    b.restart();
    let q = read_topic(&b.bootstrap(), QTOPIC, 1, LONG);
    assert_eq!(q.len(), 1);
    assert_eq!(header(&q[0], "relay-request-id"), "broker-down");
    assert_eq!(header(&q[0], "relay-guard-path"), "$.note");
    let got = read_topic(&b.bootstrap(), TOPIC, 1, LONG);
    assert_eq!(
        got.len(),
        1,
        "the restarted broker holds only the later original"
    );
    assert_eq!(header(&got[0], "relay-request-id"), "broker-down");
    assert_eq!(got[0].payload, offending.as_bytes());
    assert_eq!(
        relay.metric("relay_guard_quarantine_failed_total{policy=\"default\"}"),
        0.0
    );
    assert_eq!(originals_lost(&relay), 0.0);
}

/// Hostile input on the quarantine path: findings at, just under and just over the 64 listed
/// in a record (all counted), and a forwarded body that grew past `message.max.bytes` (short
/// PII values become 64-digit pseudonyms): that quarantine record is counted as failed, the
/// request is answered and its original delivered.
#[test]
fn quarantine_records_list_at_most_64_findings_and_an_oversize_one_is_counted_not_sent() {
    let b = Tansu::start();
    b.create_topic(TOPIC);
    b.create_topic(QTOPIC);
    let up = StubUpstream::start(Behavior::default());
    let relay = Relay::start(&config(up.addr, &b.bootstrap(), "memory"));
    let mut c = Client::connect(relay.addr);
    let emails = |n: usize| {
        let items: Vec<String> = (0..n)
            .map(|i| format!("{{\"note\":\"to u{i}@example.com\"}}"))
            .collect();
        format!("[{}]", items.join(","))
    };
    for (i, n) in [63usize, 64, 65].into_iter().enumerate() {
        let r = send(
            &mut c,
            "/v1/logs",
            &format!("X-Request-Id: many-{i}\r\n"),
            &emails(n),
        );
        assert_eq!(r.status, 200);
    }
    let q = read_topic(&b.bootstrap(), QTOPIC, 3, LONG);
    assert_eq!(q.len(), 3);
    for (i, want) in [63usize, 64, 64].into_iter().enumerate() {
        let rec = q
            .iter()
            .find(|r| header(r, "relay-request-id") == format!("many-{i}"))
            .unwrap();
        let listed = rec
            .headers
            .iter()
            .filter(|(n, _)| n == "relay-guard-detector")
            .count();
        assert_eq!(listed, want, "many-{i}");
        assert_eq!(
            rec.headers
                .iter()
                .filter(|(n, _)| n == "relay-guard-path")
                .count(),
            want
        );
    }
    assert_eq!(
        guard_metric(&relay, "email", "report"),
        (63 + 64 + 65) as f64
    );

    // ~1 MiB body of short user ids: the scrubbed body is ~2.5 KiB larger than the original,
    // beyond message.max.bytes (1049600) minus relay's record overhead.
    let mut body = String::from("[");
    for _ in 0..40 {
        body.push_str("{\"user_id\":\"a\"},");
    }
    body.push_str("{\"note\":\"mail carol@example.com\",\"pad\":\"");
    let pad = 1_048_576 - body.len() - 3;
    body.push_str(&"x".repeat(pad));
    body.push_str("\"}]");
    assert_eq!(body.len(), 1_048_576);
    let r = send(&mut c, "/v1/logs", "X-Request-Id: oversize\r\n", &body);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        relay.metric("relay_guard_quarantine_failed_total{policy=\"default\"}"),
        1.0
    );
    assert_eq!(
        enqueued(&relay, QTOPIC),
        3.0,
        "the oversize record was never queued"
    );
    wait_metric(&relay, "4 originals delivered", |r| {
        delivered(r, TOPIC) == 4.0
    });
    assert_eq!(originals_lost(&relay), 0.0);
}
