//! The Kafka path against librdkafka's mock cluster: round trip (bytes, key, CreateTime,
//! headers, counts), backpressure with the broker down, and the shutdown flush report.

mod kafka_support;

use kafka_support::*;

#[test]
fn mock_roundtrip_is_byte_identical_and_counted() {
    let b = Mock::new();
    let r = roundtrip(&b, "app-log-topic", 2000, 4);
    eprintln!("mock roundtrip: {r}");
}

#[test]
fn mock_roundtrip_with_three_producer_threads() {
    let b = Mock::new();
    let r = roundtrip_with(&b, "app-log-topic", 3000, 4, 3);
    eprintln!("mock roundtrip, 3 producer threads: {r}");
}

#[test]
fn mock_backpressure_rejects_when_full_and_recovers() {
    let mut b = Mock::new();
    let (accepted, rejected, r) = backpressure(&mut b, "bp-topic");
    eprintln!("mock backpressure: accepted={accepted} rejected={rejected} {r}");
}

#[test]
fn mock_shutdown_with_broker_down_reports_pending() {
    let mut b = Mock::new();
    let r = shutdown_with_broker_down(&mut b, "down-topic");
    eprintln!("mock shutdown with broker down: {r}");
}

#[test]
fn mock_shutdown_flushes_everything_under_load() {
    let b = Mock::new();
    let r = shutdown_flushes_under_load(&b, "flush-topic", 20_000);
    eprintln!("mock shutdown under load: {r}");
}

#[test]
fn mock_failed_deliveries_are_counted_by_reason() {
    use relay::kafka::{FailReason, KafkaConfig, KafkaPath};
    use std::time::Duration;
    let b = Mock::new();
    b.0.create_topic("fail-topic", 1, 1).unwrap();
    let mut cfg = KafkaConfig::new(b.0.bootstrap_servers());
    cfg.properties
        .insert("message.timeout.ms".into(), "500".into());
    let path = KafkaPath::start(&cfg).unwrap();
    b.0.broker_down(-1).unwrap();
    let topic: std::sync::Arc<str> = "fail-topic".into();
    let tx = path.sender();
    for i in 0..10 {
        tx.try_send(sample(&topic, i)).unwrap();
    }
    let stats = path.stats();
    wait_for("10 failed deliveries", Duration::from_secs(60), || {
        stats.failed_total() == 10
    });
    let t = stats.topics();
    let timed_out = t[0]
        .failed
        .iter()
        .find(|(r, _)| *r == FailReason::TimedOut)
        .unwrap()
        .1;
    assert_eq!(timed_out, 10, "{:?}", t[0].failed);
    assert_eq!(stats.depth(), 0);
    let r = path.shutdown(Duration::from_secs(1));
    assert_eq!(
        (r.enqueued, r.delivered, r.failed, r.pending),
        (10, 0, 10, 0)
    );
    assert!(r.lost_any());
}
