//! Shared by the `kafka_*` suites: the brokers (see `broker.rs`), sample originals, and the
//! scenarios run against each broker.
#![allow(dead_code)]

pub(crate) use relay_e2e::broker;

use std::sync::Arc;
use std::time::Duration;

pub(crate) use broker::*;
use relay::kafka::OriginalRecord;

/// Logs to the test output, filtered by `RUST_LOG` (default: warn).
pub(crate) fn init_log() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A sample original: distinct payload (binary bytes included), key, timestamp and headers.
pub(crate) fn sample(topic: &Arc<str>, i: usize) -> OriginalRecord {
    let mut payload = format!(
        "{{\"event\":\"view\",\"user_id\":\"u-{i}\",\"n\":{i},\"note\":\"caf\u{e9} \\\"q\\\"\"}}\n"
    )
    .into_bytes();
    payload.extend_from_slice(&[0, 0xff, 0xfe, b'\r', b'\n']);
    OriginalRecord {
        topic: topic.clone(),
        key: (i % 3 >= 1).then(|| format!("device-{}", i % 7).into_bytes()),
        payload,
        timestamp_ms: 1_700_000_000_000 + i as i64,
        route: "app-logs".into(),
        request_id: format!("req-{i:06}"),
        content_type: (i % 2 < 1).then(|| "application/json".to_string()),
        key_id: (i % 4 != 3).then(|| "k2026".to_string()),
        consumer: None,
        policy: None,
        scrubbed_sha256: None,
        pii_count: None,
        guard_findings: Vec::new(),
        content_encoding: None,
        split: None,
    }
}

/// Asserts that `got` holds exactly `sent` (any order): bytes, key, CreateTime, headers.
pub(crate) fn assert_same_records(sent: &[OriginalRecord], got: &[ReadBack]) {
    assert_eq!(got.len(), sent.len(), "count in Kafka != records accepted");
    let mut by_id = std::collections::HashMap::new();
    for g in got {
        let id = String::from_utf8(
            g.header("relay-request-id")
                .expect("relay-request-id header")
                .to_vec(),
        )
        .unwrap();
        assert!(
            by_id.insert(id.clone(), g).is_none(),
            "duplicate record {id} in Kafka"
        );
    }
    for s in sent {
        let g = by_id
            .get(&s.request_id)
            .unwrap_or_else(|| panic!("{} missing from Kafka", s.request_id));
        assert_eq!(g.payload, s.payload, "payload of {}", s.request_id);
        assert_eq!(g.key, s.key, "key of {}", s.request_id);
        assert_eq!(
            g.timestamp_ms,
            Some(s.timestamp_ms),
            "timestamp of {}",
            s.request_id
        );
        assert!(
            g.create_time,
            "timestamp type of {} is not CreateTime",
            s.request_id
        );
        assert_eq!(g.header("relay-route"), Some(s.route.as_bytes()));
        assert_eq!(
            g.header("content-type"),
            s.content_type.as_deref().map(str::as_bytes)
        );
        assert_eq!(
            g.header("relay-key-id"),
            s.key_id.as_deref().map(str::as_bytes)
        );
        let n = 2 + usize::from(s.content_type.is_some()) + usize::from(s.key_id.is_some());
        assert_eq!(
            g.headers.len(),
            n,
            "headers of {}: {:?}",
            s.request_id,
            g.headers
        );
    }
}

use relay::kafka::{FlushReport, KafkaConfig, KafkaPath, KafkaRejected};

const LONG: Duration = Duration::from_secs(120);

fn test_config(b: &dyn Broker) -> KafkaConfig {
    init_log();
    let mut cfg = KafkaConfig::new(b.bootstrap());
    for (k, v) in b.properties() {
        cfg.properties.insert(k.into(), v.into());
    }
    if let Ok(extra) = std::env::var("RELAY_TEST_KAFKA_PROPS") {
        for kv in extra.split(';').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').expect("k=v;k=v");
            cfg.properties.insert(k.into(), v.into());
        }
    }
    for (k, v) in [
        ("linger.ms", "5"),
        ("reconnect.backoff.max.ms", "500"),
        ("retry.backoff.max.ms", "500"),
    ] {
        cfg.properties.insert(k.into(), v.into());
    }
    cfg
}

/// Sends `n` records from `threads` threads, waits for every delivery report, shuts down, reads
/// the topic back and compares. Returns the flush report.
pub(crate) fn roundtrip(b: &dyn Broker, topic: &str, n: usize, threads: usize) -> FlushReport {
    roundtrip_with(b, topic, n, threads, 1)
}

/// [`roundtrip`] with `producer_threads` producer threads.
pub(crate) fn roundtrip_with(
    b: &dyn Broker,
    topic: &str,
    n: usize,
    threads: usize,
    producer_threads: usize,
) -> FlushReport {
    b.create_topic(topic);
    let topic: Arc<str> = topic.into();
    let mut cfg = test_config(b);
    cfg.producer_threads = producer_threads;
    let path = KafkaPath::start(&cfg).expect("start");
    let sent: Vec<OriginalRecord> = (0..n).map(|i| sample(&topic, i)).collect();
    let stats = path.stats();
    // Warm-up: connection, metadata and producer id first, so the latency below is steady state.
    path.sender().try_send(sent[0].clone()).unwrap();
    wait_for("the first delivery", LONG, || stats.delivered_total() == 1);
    std::thread::scope(|s| {
        for chunk in sent[1..].chunks((n - 1).div_ceil(threads)) {
            let tx = path.sender();
            s.spawn(move || {
                for r in chunk {
                    tx.try_send(r.clone()).expect("queue has room");
                }
            });
        }
    });
    wait_for("every delivery report", LONG, || {
        stats.delivered_total() + stats.failed_total() == n as u64
    });
    let report = path.shutdown(Duration::from_secs(30));
    assert_eq!(
        report,
        FlushReport {
            enqueued: n as u64,
            delivered: n as u64,
            failed: 0,
            pending: 0,
            spooled: 0,
            lost: 0,
        }
    );
    let t = stats.topics();
    assert_eq!(t.len(), 1);
    assert_eq!((t[0].enqueued, t[0].delivered), (n as u64, n as u64));
    assert_eq!(t[0].latency.count, n as u64);
    let l = &t[0].latency;
    let p50 = l
        .cumulative
        .iter()
        .position(|c| *c * 2 >= l.count)
        .map(|i| relay::kafka::BUCKETS[i]);
    eprintln!(
        "delivery latency (burst after warm-up): mean {:.1} ms, p50 <= {:?} s over {} records",
        l.sum_seconds * 1000.0 / l.count as f64,
        p50,
        l.count
    );
    assert!(t[0].failed.iter().all(|(_, c)| *c == 0));
    let got = read_topic(&b.bootstrap(), &topic, n, LONG);
    assert_same_records(&sent, &got);
    report
}

/// Broker stopped + small queue: exactly `capacity` records are accepted, then `try_send`
/// refuses; the broker comes back: everything accepted is delivered and new records flow.
/// Returns (accepted, rejected, report).
pub(crate) fn backpressure(b: &mut dyn Broker, topic: &str) -> (u64, u64, FlushReport) {
    const CAP: usize = 8;
    b.create_topic(topic);
    let topic: Arc<str> = topic.into();
    let mut cfg = test_config(b);
    cfg.queue_capacity = CAP;
    cfg.retry_after_s = 2;
    let path = KafkaPath::start(&cfg).expect("start");
    let tx = path.sender();
    let stats = path.stats();
    // Warm up: connection, producer id, metadata.
    let mut seq = 0;
    let mut next = || {
        seq += 1;
        sample(&topic, seq)
    };
    let first = next();
    tx.try_send(first.clone()).unwrap();
    wait_for("the first delivery", LONG, || stats.delivered_total() == 1);
    assert!(path.is_accepting().is_ok());

    b.stop();
    let mut after_stop = Vec::new();
    let mut rejected = 0;
    for _ in 0..CAP + 5 {
        let r = next();
        match tx.try_send(r.clone()) {
            Ok(()) => after_stop.push(r),
            Err(e) => {
                assert_eq!(e, KafkaRejected { retry_after_s: 2 });
                rejected += 1;
            }
        }
    }
    assert_eq!(after_stop.len(), CAP, "accepted while the broker is down");
    assert_eq!(rejected, 5);
    assert_eq!(stats.depth(), CAP as u64);
    assert_eq!(stats.rejected_full_total(), 5);
    let why = path.is_accepting().expect_err("full");
    assert!(why.contains("full"), "{why}");

    b.start();
    wait_for(
        "the queued records to be delivered after the broker came back",
        LONG,
        || stats.delivered_total() == 1 + CAP as u64,
    );
    assert!(path.is_accepting().is_ok());
    let mut later = Vec::new();
    for _ in 0..5 {
        let r = next();
        tx.try_send(r.clone()).expect("flows again");
        later.push(r);
    }
    wait_for("the new records", LONG, || {
        stats.delivered_total() == 1 + CAP as u64 + 5
    });
    let report = path.shutdown(Duration::from_secs(30));
    let accepted = (1 + CAP + 5) as u64;
    assert_eq!(
        report,
        FlushReport {
            enqueued: accepted,
            delivered: accepted,
            failed: 0,
            pending: 0,
            spooled: 0,
            lost: 0,
        }
    );
    let mut expect = Vec::new();
    if b.keeps_data() {
        expect.push(first);
    }
    expect.extend(after_stop);
    expect.extend(later);
    let got = read_topic(&b.bootstrap(), &topic, expect.len(), LONG);
    assert_same_records(&expect, &got);
    (accepted, rejected, report)
}

/// Broker down at shutdown: the flush deadline passes and the report counts every accepted
/// record as pending.
pub(crate) fn shutdown_with_broker_down(b: &mut dyn Broker, topic: &str) -> FlushReport {
    b.create_topic(topic);
    let topic: Arc<str> = topic.into();
    let path = KafkaPath::start(&test_config(b)).expect("start");
    let tx = path.sender();
    let stats = path.stats();
    tx.try_send(sample(&topic, 0)).unwrap();
    wait_for("the first delivery", LONG, || stats.delivered_total() == 1);
    b.stop();
    for i in 1..=10 {
        tx.try_send(sample(&topic, i)).unwrap();
    }
    let report = path.shutdown(Duration::from_millis(300));
    b.start();
    assert_eq!(
        report,
        FlushReport {
            enqueued: 11,
            delivered: 1,
            failed: 0,
            pending: 10,
            spooled: 0,
            lost: 10,
        }
    );
    assert!(report.lost_any());
    report
}

/// SIGTERM-like shutdown under load: records still queued when shutdown starts are all
/// delivered before it returns.
pub(crate) fn shutdown_flushes_under_load(b: &dyn Broker, topic: &str, n: usize) -> FlushReport {
    b.create_topic(topic);
    let topic: Arc<str> = topic.into();
    let path = KafkaPath::start(&test_config(b)).expect("start");
    let tx = path.sender();
    let sent: Vec<OriginalRecord> = (0..n).map(|i| sample(&topic, i)).collect();
    for r in &sent {
        tx.try_send(r.clone()).expect("room");
    }
    // No waiting: shut down with (nearly) everything still queued or in flight.
    let report = path.shutdown(Duration::from_secs(60));
    assert_eq!(
        report,
        FlushReport {
            enqueued: n as u64,
            delivered: n as u64,
            failed: 0,
            pending: 0,
            spooled: 0,
            lost: 0,
        }
    );
    let got = read_topic(&b.bootstrap(), &topic, n, LONG);
    assert_same_records(&sent, &got);
    report
}
