//! Black-box: what each delivery mode answers when the Kafka path cannot deliver, counted from
//! outside (statuses, the stub upstream's requests, `/metrics`, `/readyz`).
//!
//! - `memory` at `queue_max_bytes`: exactly the bound fits, one record more gets 503
//!   `kafka_backpressure` + `Retry-After` and is not forwarded; `/readyz` names the byte bound;
//! - `memory` with a permanent Kafka error (unknown topic): the app got 2xx, so the loss is
//!   counted in `relay_kafka_originals_lost_total{reason}` and `/readyz` fails; originals still
//!   queued at SIGTERM are counted as lost (`purged`) and relay exits non-zero;
//! - an unauthorised topic (librdkafka's mock cluster answering Produce with
//!   TOPIC_AUTHORIZATION_FAILED): `ack` answers 503 `kafka_unavailable`, never 2xx; `spool`
//!   keeps the original (counted, `/readyz` 503 naming `unauthorized`), refuses the route with
//!   503 `kafka_unavailable` while the error lasts, and delivers it once the ACL is fixed.
//!
//! Every wait polls a condition with a generous deadline.

use relay_e2e::broker;

use std::time::Duration;

use broker::{read_topic, Mock, Tansu};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use relay_e2e::{Behavior, Relay, StubUpstream};

const LONG: Duration = Duration::from_secs(60);

fn config(upstream: std::net::SocketAddr, brokers: &str, topic: &str, kafka: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
workers = 2
shutdown_grace_ms = 2000
shutdown_budget_ms = 6000

[admin]
listen = "127.0.0.1:0"

[kafka]
brokers = "{brokers}"
retry_after_s = 2
flush_timeout_ms = 1000
{kafka}
[kafka.properties]
"linger.ms" = "2"
"reconnect.backoff.max.ms" = "200"
"retry.backoff.max.ms" = "200"
"message.max.bytes" = "1049600"
"topic.metadata.propagation.max.ms" = "1000"

[[upstreams]]
name = "tracking"
nodes = ["{upstream}"]

[[routes]]
name = "app-logs"
path = "/v1/logs"
methods = ["POST"]
upstream = "tracking"
topic = "{topic}"
"#
    )
}

/// A JSON body of exactly `size` bytes carrying `n`.
fn body(n: usize, size: usize) -> Vec<u8> {
    let mut b = format!("{{\"n\":{n},\"pad\":\"").into_bytes();
    while b.len() + 2 < size {
        b.push(b'x');
    }
    b.extend_from_slice(b"\"}");
    assert_eq!(b.len(), size);
    b
}

#[test]
fn memory_queue_max_bytes_at_the_limit_refuses_and_forwards_nothing() {
    // No broker: nothing is ever acknowledged, so the bytes accepted stay counted.
    let dead = relay_e2e::dead_addr();
    let up = StubUpstream::start(Behavior::default());
    let relay = Relay::start(&config(
        up.addr,
        &dead.to_string(),
        "bytes-topic",
        "delivery = \"memory\"\nqueue_max_bytes = 3000",
    ));
    assert_eq!(relay.metric("relay_kafka_queue_max_bytes"), 3000.0);
    // Under the bound, then exactly at it: 3 x 1000 bytes (no key: payload bytes only).
    for n in 0..3 {
        let r = relay_e2e::post(relay.addr, "/v1/logs", &body(n, 1000));
        assert_eq!(r.status, 200, "{n}: {:?}", String::from_utf8_lossy(&r.body));
    }
    assert_eq!(relay.metric("relay_kafka_queue_bytes"), 3000.0);
    // Over it, by one byte or by a whole record: 503 kafka_backpressure + Retry-After.
    for (n, size) in [(3, 1000), (4, 16)] {
        let r = relay_e2e::post(relay.addr, "/v1/logs", &body(n, size));
        assert_eq!(r.status, 503, "{n}");
        assert_eq!(r.json()["error"], "kafka_backpressure", "{:?}", r.json());
        assert_eq!(r.header("retry-after"), Some("2"));
    }
    assert_eq!(relay.metric("relay_kafka_queue_bytes"), 3000.0);
    let forwarded: Vec<Vec<u8>> = up.requests().into_iter().map(|r| r.body).collect();
    assert_eq!(
        forwarded.len(),
        3,
        "only the accepted requests reach the upstream"
    );
    for n in 0..3 {
        assert!(forwarded.contains(&body(n, 1000)));
    }
    let (code, why) = relay.admin_get("/readyz");
    assert_eq!(code, 503, "{why}");
    assert!(why.contains("3000 of 3000 bytes"), "{why}");
}

#[test]
fn memory_permanent_error_counts_lost_originals_and_fails_readyz() {
    assert!(
        broker::tansu_bin().is_some(),
        "tansu is not installed: run `cargo xtask setup`"
    );
    let b = Tansu::start();
    let up = StubUpstream::start(Behavior::default());
    let mut relay = Relay::start(&config(
        up.addr,
        &b.bootstrap(),
        "no-such-topic",
        "delivery = \"memory\"",
    ));
    // memory promises only "queued": the app gets 200 before Kafka says no.
    let r = relay_e2e::post(relay.addr, "/v1/logs", b"{\"n\":1}");
    assert_eq!(r.status, 200);
    let lost = "relay_kafka_originals_lost_total{reason=\"unknown_topic\"}";
    broker::wait_for("the lost original counted", LONG, || {
        relay.metric(lost) >= 1.0
    });
    broker::wait_for("readyz 503", LONG, || relay.admin_get("/readyz").0 == 503);
    let (_, why) = relay.admin_get("/readyz");
    assert!(
        why.contains("no-such-topic") && why.contains("unknown_topic"),
        "{why}"
    );
    // Shutdown: an original still queued when the flush deadline passes is lost too (it was
    // answered 2xx): counted as purged, and the exit status says so.
    b.pause();
    let r = relay_e2e::post(relay.addr, "/v1/logs", b"{\"n\":2}");
    assert_eq!(r.status, 200);
    let st = relay
        .terminate(Duration::from_secs(30))
        .expect("relay exits");
    b.resume();
    assert_eq!(
        st.code(),
        Some(3),
        "lost originals: exit 3: {}",
        relay.log()
    );
    let log = relay.log();
    assert!(log.contains("lost=2"), "{log}");
}

/// The mock cluster answering every Produce with TOPIC_AUTHORIZATION_FAILED until cleared.
fn deny_produce(b: &Mock) {
    b.0.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 10_000],
    );
}

#[test]
fn unauthorised_topic_never_a_2xx_with_a_lost_original() {
    let b = Mock::new();
    b.0.create_topic("acl-topic", 3, 1).unwrap();
    let up = StubUpstream::start(Behavior::default());
    let spool = tempfile::tempdir().unwrap();
    let spool_cfg = format!(
        "[spool]\ndir = \"{}\"\nretry_ms = 300\n",
        spool.path().display()
    );

    // ack: Kafka refuses, so the app is refused whatever the upstream said.
    deny_produce(&b);
    let relay = Relay::start(&format!(
        "{}{spool_cfg}",
        config(
            up.addr,
            &b.0.bootstrap_servers(),
            "acl-topic",
            "delivery = \"ack\""
        )
    ));
    let r = relay_e2e::post(relay.addr, "/v1/logs", b"{\"n\":1}");
    assert_eq!(r.status, 503, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error"], "kafka_unavailable");
    assert!(r.header("retry-after").is_some());
    broker::wait_for("readyz 503", LONG, || relay.admin_get("/readyz").0 == 503);
    let (_, why) = relay.admin_get("/readyz");
    assert!(
        why.contains("acl-topic") && why.contains("unauthorized"),
        "{why}"
    );
    drop(relay);

    // spool: the first original is durable (2xx); its delivery fails permanently; it stays
    // spooled and counted, the route refuses, /readyz names the error.
    let relay = Relay::start(&format!(
        "{}{spool_cfg}",
        config(
            up.addr,
            &b.0.bootstrap_servers(),
            "acl-topic",
            "delivery = \"spool\""
        )
    ));
    let first = relay_e2e::post(relay.addr, "/v1/logs", b"{\"n\":1}");
    assert_eq!(first.status, 200);
    let (more, r) = relay_e2e::post_until_refused(relay.addr, "/v1/logs", b"{\"n\":2}", LONG);
    let oks = 1 + more;
    assert_eq!(r.json()["error"], "kafka_unavailable", "{:?}", r.json());
    assert!(r.header("retry-after").is_some());
    let forwarded = up.count();
    let (code, why) = relay.admin_get("/readyz");
    assert_eq!(code, 503);
    assert!(
        why.contains("acl-topic") && why.contains("unauthorized"),
        "{why}"
    );
    let failed = "relay_kafka_records_failed_total{topic=\"acl-topic\",reason=\"unauthorized\"}";
    assert!(relay.metric(failed) >= 1.0);
    let spooled: f64 = (0..relay.workers)
        .map(|w| relay.metric(&format!("relay_spool_records{{worker=\"{w}\"}}")))
        .sum();
    assert_eq!(
        spooled, oks as f64,
        "the originals answered 2xx stay spooled"
    );
    // The ACL fixed: the spooled originals are delivered and the route takes traffic again.
    b.0.clear_request_errors(RDKafkaApiKey::Produce);
    broker::wait_for("the spool to drain", LONG, || {
        (0..relay.workers)
            .map(|w| relay.metric(&format!("relay_spool_records{{worker=\"{w}\"}}")))
            .sum::<f64>()
            == 0.0
    });
    broker::wait_for("readyz 200", LONG, || relay.admin_get("/readyz").0 == 200);
    let got = read_topic(&b.0.bootstrap_servers(), "acl-topic", oks, LONG);
    assert!(got.len() >= oks, "{} of {oks} in Kafka", got.len());
    assert_eq!(
        up.count(),
        forwarded,
        "the refused request was not forwarded"
    );
    eprintln!("unauthorised topic: ack refused; spool kept {oks} answered 2xx, refused the rest, delivered all once allowed");
}
