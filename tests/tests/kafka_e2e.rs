//! Black-box: the built relay with a `[kafka]` section against librdkafka's mock cluster and a
//! real tansu broker. Originals in Kafka are byte-identical (plain and chunked) with CreateTime,
//! headers and key; Kafka count == requests accepted; broker stopped + small queue -> 503 +
//! Retry-After and the upstream gets none of those; broker back -> flows; SIGTERM under load
//! flushes everything.

use relay_e2e::broker;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use broker::{read_topic, Broker, Mock, ReadBack, Tansu};
use relay_e2e::{Behavior, Client, Relay, StubUpstream};

const TOPIC: &str = "app-log-topic";
const LONG: Duration = Duration::from_secs(120);

fn config(upstream: std::net::SocketAddr, brokers: &str, kafka_extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
workers = 2
shutdown_grace_ms = 10000

[admin]
listen = "127.0.0.1:0"

[kafka]
brokers = "{brokers}"
{kafka_extra}
[kafka.properties]
"linger.ms" = "5"
"reconnect.backoff.max.ms" = "500"
"message.max.bytes" = "1049600"

[[upstreams]]
name = "tracking"
nodes = ["{upstream}"]

[[routes]]
name = "app-logs"
path = "/v1/logs"
methods = ["POST"]
upstream = "tracking"
topic = "{TOPIC}"
key = "header:x-device-id"
"#
    )
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn delivered(relay: &Relay) -> f64 {
    relay.metric(&format!(
        "relay_kafka_records_delivered_total{{topic=\"{TOPIC}\"}}"
    ))
}

fn wait_delivered(relay: &Relay, n: usize) {
    broker::wait_for(&format!("{n} records delivered (metrics)"), LONG, || {
        delivered(relay) >= n as f64
    });
    assert_eq!(delivered(relay), n as f64);
}

/// A sample app log: distinct, with escapes, unicode and odd whitespace kept verbatim.
fn body(i: usize) -> Vec<u8> {
    format!(
        "{{ \"event\":\"purchase\", \"n\":{i}, \"user_id\":\"user-{i}\",\n  \"device_id\":\"dev-{}\", \"note\":\"caf\u{e9} \\u00e9 \\\"x\\\"\" }}",
        i % 5
    )
    .into_bytes()
}

/// POST with Content-Length or chunked (odd chunk sizes); returns the response.
fn send(c: &mut Client, i: usize, chunked: bool) -> relay_e2e::Response {
    let b = body(i);
    let dev = format!("dev-{}", i % 5);
    if chunked {
        let mut req = format!(
            "POST /v1/logs HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json; charset=utf-8\r\nX-Device-Id: {dev}\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .into_bytes();
        for part in b.chunks(7 + i % 5) {
            req.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
            req.extend_from_slice(part);
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"0\r\n\r\n");
        c.send(&req);
    } else {
        let head = format!(
            "POST /v1/logs HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\nX-Device-Id: {dev}\r\nContent-Length: {}\r\n\r\n",
            b.len()
        );
        c.send(head.as_bytes());
        c.send(&b);
    }
    c.recv().expect("a response")
}

fn by_payload(got: &[ReadBack]) -> HashMap<Vec<u8>, ReadBack> {
    let mut m = HashMap::new();
    for g in got {
        assert!(
            m.insert(g.payload.clone(), g.clone()).is_none(),
            "duplicate record in Kafka"
        );
    }
    m
}

fn originals(b: &dyn Broker) {
    b.create_topic(TOPIC);
    let up = StubUpstream::start(Behavior::default());
    let relay = Relay::start(&config(up.addr, &b.bootstrap(), ""));
    let mut c = Client::connect(relay.addr);
    let mut sent = Vec::new();
    for i in 0..120 {
        let chunked = i % 2 == 1;
        let before = now_ms();
        let r = send(&mut c, i, chunked);
        let after = now_ms();
        assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
        sent.push((i, chunked, before, after));
    }
    wait_delivered(&relay, sent.len());
    let got = by_payload(&read_topic(&b.bootstrap(), TOPIC, sent.len(), LONG));
    assert_eq!(got.len(), sent.len(), "count in Kafka != requests accepted");
    let upstream: HashMap<Vec<u8>, relay_e2e::Received> = up
        .requests()
        .into_iter()
        .map(|r| (r.body.clone(), r))
        .collect();
    let (mut plain, mut chunked_n) = (0, 0);
    for (i, chunked, before, after) in sent {
        let b = body(i);
        let g = got.get(&b).unwrap_or_else(|| {
            panic!("request {i} (chunked={chunked}) not byte-identical in Kafka")
        });
        assert_eq!(
            g.key.as_deref(),
            Some(format!("dev-{}", i % 5).as_bytes()),
            "key of {i}"
        );
        assert!(g.create_time, "CreateTime");
        let ts = g.timestamp_ms.unwrap();
        assert!(
            before <= ts && ts <= after,
            "timestamp {ts} of {i} not in [{before}, {after}]"
        );
        assert_eq!(g.header("relay-route"), Some(&b"app-logs"[..]));
        let ct: &[u8] = if chunked {
            b"application/json; charset=utf-8"
        } else {
            b"application/json"
        };
        assert_eq!(g.header("content-type"), Some(ct));
        let u = upstream.get(&b).expect("upstream got it");
        let rid = u.header("x-request-id").expect("X-Request-Id upstream");
        assert_eq!(
            g.header("relay-request-id"),
            Some(rid.as_bytes()),
            "request id of {i}"
        );
        if chunked {
            chunked_n += 1
        } else {
            plain += 1
        }
    }
    eprintln!("originals: {plain} plain + {chunked_n} chunked byte-identical in Kafka");
}

fn backpressure(b: &mut dyn Broker) {
    b.create_topic(TOPIC);
    let up = StubUpstream::start(Behavior::default());
    let mut relay = Relay::start(&config(
        up.addr,
        &b.bootstrap(),
        "queue_capacity = 5\nretry_after_s = 3",
    ));
    let mut c = Client::connect(relay.addr);
    assert_eq!(send(&mut c, 0, false).status, 200);
    wait_delivered(&relay, 1);
    assert_eq!(relay.admin_get("/readyz").0, 200);

    b.stop();
    let mut accepted = vec![0];
    let mut rejected = Vec::new();
    for i in 1..=12 {
        let r = send(&mut c, i, i % 2 == 0);
        match r.status {
            200 => accepted.push(i),
            503 => {
                assert_eq!(r.header("retry-after"), Some("3"));
                assert_eq!(r.json()["error"], "kafka_backpressure", "{:?}", r.json());
                rejected.push(i);
            }
            s => panic!("unexpected status {s}"),
        }
    }
    assert_eq!(
        accepted.len(),
        6,
        "1 before the stop + queue_capacity after"
    );
    assert_eq!(rejected.len(), 7);
    assert_eq!(up.count(), 6, "the upstream got a rejected request");
    let forwarded: Vec<Vec<u8>> = up.requests().into_iter().map(|r| r.body).collect();
    for i in &rejected {
        assert!(
            !forwarded.contains(&body(*i)),
            "rejected request {i} reached the upstream"
        );
    }
    let (st, why) = relay.admin_get("/readyz");
    assert_eq!(st, 503, "{why}");

    b.start();
    wait_delivered(&relay, 6);
    broker::wait_for("readyz 200", LONG, || relay.admin_get("/readyz").0 == 200);
    for i in 100..105 {
        assert_eq!(send(&mut c, i, false).status, 200, "flows again");
        accepted.push(i);
    }
    wait_delivered(&relay, accepted.len());
    drop(c);
    let st = relay.terminate(LONG).expect("relay exits");
    assert!(st.success(), "exit {st:?}: {}", relay.log());

    let got = by_payload(&read_topic(&b.bootstrap(), TOPIC, accepted.len(), LONG));
    assert_eq!(
        got.len(),
        accepted.len(),
        "count in Kafka != requests accepted"
    );
    for i in &accepted {
        assert!(
            got.contains_key(&body(*i)),
            "accepted request {i} not in Kafka"
        );
    }
    eprintln!(
        "backpressure: accepted={} rejected(503)={} in Kafka={} upstream={}",
        accepted.len(),
        rejected.len(),
        got.len(),
        up.count()
    );
}

fn sigterm_under_load(b: &dyn Broker) {
    b.create_topic(TOPIC);
    let up = StubUpstream::start(Behavior::default());
    let mut relay = Relay::start(&config(up.addr, &b.bootstrap(), ""));
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(Mutex::new(Vec::new()));
    let mut clients = Vec::new();
    for t in 0..4 {
        let (stop, next, ok, addr) = (stop.clone(), next.clone(), ok.clone(), relay.addr);
        clients.push(std::thread::spawn(move || {
            let mut c = Client::connect(addr);
            while !stop.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let b = body(i);
                let head = format!(
                    "POST /v1/logs HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\nX-Device-Id: t{t}\r\nContent-Length: {}\r\n\r\n",
                    b.len()
                );
                let mut req = head.into_bytes();
                req.extend_from_slice(&b);
                if c.stream().write_all(&req).is_err() {
                    return;
                }
                match c.recv() {
                    Some(r) if r.status == 200 => ok.lock().unwrap().push(b),
                    Some(_) => {}
                    None => return,
                }
            }
        }));
    }
    broker::wait_for("load", LONG, || up.count() >= 400);
    let depth_at_sigterm = relay.metric("relay_kafka_queue_depth");
    let st = relay.terminate(LONG).expect("relay exits after SIGTERM");
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.join();
    }
    let log = relay.log();
    assert!(
        st.success(),
        "exit {st:?} (non-zero: originals lost): {log}"
    );
    let line = log
        .lines()
        .find(|l| l.contains("Kafka flush"))
        .unwrap_or_else(|| panic!("no flush report in the log: {log}"));
    let forwarded: Vec<Vec<u8>> = up.requests().into_iter().map(|r| r.body).collect();
    let got = by_payload(&read_topic(&b.bootstrap(), TOPIC, forwarded.len(), LONG));
    let ok = ok.lock().unwrap().clone();
    assert_eq!(
        got.len(),
        forwarded.len(),
        "Kafka count != requests forwarded"
    );
    for f in &forwarded {
        assert!(
            got.contains_key(f),
            "a forwarded request's original is missing from Kafka"
        );
    }
    for o in &ok {
        assert!(
            got.contains_key(o),
            "a 200 request's original is missing from Kafka"
        );
    }
    assert!(
        line.contains(&format!("enqueued={}", got.len()))
            || line.contains(&format!("\"enqueued\":{}", got.len())),
        "flush report does not match Kafka ({}): {line}",
        got.len()
    );
    eprintln!(
        "sigterm under load: queue depth just before SIGTERM={depth_at_sigterm} 200s={} forwarded={} in Kafka={} report: {line}",
        ok.len(),
        forwarded.len(),
        got.len()
    );
}

use std::io::Write as _;

/// With a PII policy: Kafka gets the original bytes (plus `relay-key-id`), the upstream gets
/// the scrubbed body and never the raw values.
fn original_before_scrub(b: &dyn Broker) {
    b.create_topic(TOPIC);
    let up = StubUpstream::start(Behavior::default());
    let cfg = config(up.addr, &b.bootstrap(), "").replace(
        "key = \"header:x-device-id\"\n",
        "key = \"header:x-device-id\"\npii = \"default\"\n\n[pii.default]\nfields = [\"user_id\", \"device_id\"]\nheaders = [\"x-device-id\"]\nkey_env = \"RELAY_TEST_PII_KEY\"\nkey_id = \"k-test\"\n",
    );
    let relay = Relay::start_with(
        &cfg,
        relay_e2e::RelayOptions {
            env: vec![(
                "RELAY_TEST_PII_KEY".into(),
                "0123456789abcdef0123456789abcdef-test-key".into(),
            )],
            ..Default::default()
        },
    );
    let mut c = Client::connect(relay.addr);
    let n = 20;
    for i in 0..n {
        assert_eq!(send(&mut c, i, i % 2 == 1).status, 200);
    }
    wait_delivered(&relay, n);
    let got = by_payload(&read_topic(&b.bootstrap(), TOPIC, n, LONG));
    assert_eq!(got.len(), n);
    let forwarded = up.requests();
    assert_eq!(forwarded.len(), n);
    for i in 0..n {
        let orig = got
            .get(&body(i))
            .unwrap_or_else(|| panic!("original {i} not byte-identical in Kafka"));
        assert_eq!(orig.header("relay-key-id"), Some(&b"k-test"[..]));
        let rid = std::str::from_utf8(orig.header("relay-request-id").unwrap()).unwrap();
        let u = forwarded
            .iter()
            .find(|r| r.header("x-request-id") == Some(rid))
            .expect("forwarded");
        let text = String::from_utf8_lossy(&u.body);
        assert!(
            !text.contains(&format!("user-{i}\"")),
            "raw user_id reached the upstream: {text}"
        );
        assert!(
            !text.contains("\"dev-"),
            "raw device_id reached the upstream: {text}"
        );
        assert_ne!(
            u.header("x-device-id"),
            Some(format!("dev-{}", i % 5).as_str())
        );
        // The key is the hashed device header, the same value the upstream got.
        assert_eq!(
            orig.key.as_deref(),
            u.header("x-device-id").map(str::as_bytes)
        );
    }
    eprintln!(
        "original before scrub: {n} originals byte-identical in Kafka, {n} scrubbed upstream"
    );
}

#[test]
fn mock_original_in_kafka_scrubbed_upstream() {
    original_before_scrub(&Mock::new());
}

#[test]
fn mock_originals_byte_identical_with_timestamp_headers_key() {
    originals(&Mock::new());
}

#[test]
fn mock_backpressure_503_then_flows() {
    backpressure(&mut Mock::new());
}

#[test]
fn mock_sigterm_under_load_flushes_everything() {
    sigterm_under_load(&Mock::new());
}

#[test]
fn mock_sigterm_with_slow_broker_waits_for_in_flight_records() {
    // 300 ms per broker round trip: records are still in flight when SIGTERM arrives.
    let b = Mock::new();
    b.0.broker_round_trip_time(1, Duration::from_millis(300))
        .unwrap();
    sigterm_under_load(&b);
}

#[test]
fn mock_sigterm_with_broker_down_exits_non_zero_and_counts_pending() {
    let mut b = Mock::new();
    b.create_topic(TOPIC);
    let up = StubUpstream::start(Behavior::default());
    let mut relay = Relay::start(&config(up.addr, &b.bootstrap(), "flush_timeout_ms = 500"));
    let mut c = Client::connect(relay.addr);
    assert_eq!(send(&mut c, 0, false).status, 200);
    wait_delivered(&relay, 1);
    b.stop();
    for i in 1..=3 {
        assert_eq!(send(&mut c, i, false).status, 200);
    }
    drop(c);
    let st = relay.terminate(LONG).expect("relay exits");
    let log = relay.log();
    assert!(
        !st.success(),
        "relay must exit non-zero when originals are lost: {log}"
    );
    let line = log
        .lines()
        .find(|l| l.contains("Kafka flush"))
        .expect("flush report");
    assert!(
        line.contains("enqueued=4") && line.contains("delivered=1") && line.contains("pending=3"),
        "{line}"
    );
    eprintln!("sigterm with broker down: exit {st:?}; {line}");
}

#[test]
fn tansu_originals_byte_identical_with_timestamp_headers_key() {
    originals(&Tansu::start());
}

#[test]
fn tansu_backpressure_503_then_flows() {
    backpressure(&mut Tansu::start());
}

#[test]
fn tansu_sigterm_under_load_flushes_everything() {
    sigterm_under_load(&Tansu::start());
}
