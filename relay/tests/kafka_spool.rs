//! The spool in front of the Kafka path (librdkafka's mock cluster; the black-box suite
//! `tests/tests/spool_e2e.rs` does the same against tansu): appends are durable before they
//! resolve; with the broker down and a tiny Kafka queue the records wait on disk and are read
//! back in order once it is up; a reopened spool replays what Kafka never acknowledged.

mod kafka_support;

use std::sync::Arc;
use std::time::Duration;

use kafka_support::*;
use relay::kafka::{KafkaConfig, KafkaPath, OriginalRecord};
use relay::spool::{Spool, SpoolConfig};

const LONG: Duration = Duration::from_secs(60);

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .expect("runtime")
        .block_on(f)
}

fn kafka_config(b: &Mock, capacity: usize) -> KafkaConfig {
    init_log();
    let mut cfg = KafkaConfig::new(b.bootstrap());
    cfg.queue_capacity = capacity;
    for (k, v) in [
        ("linger.ms", "2"),
        ("reconnect.backoff.max.ms", "200"),
        ("retry.backoff.max.ms", "200"),
        ("message.timeout.ms", "3000"),
    ] {
        cfg.properties.insert(k.into(), v.into());
    }
    cfg
}

fn spool_config(dir: &std::path::Path) -> SpoolConfig {
    SpoolConfig {
        dir: dir.to_path_buf(),
        segment_bytes: 16 * 1024,
        retry_ms: 200,
        ..SpoolConfig::default()
    }
}

#[test]
fn spooled_records_wait_on_disk_while_kafka_is_full_and_are_all_delivered() {
    let mut b = Mock::new();
    b.create_topic("spooled");
    let topic: Arc<str> = "spooled".into();
    let path = KafkaPath::start(&kafka_config(&b, 8)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (spool, report) = Spool::open(&spool_config(dir.path()), 2, path.sender()).unwrap();
    assert_eq!(report.unacked, 0);
    let stats = spool.stats();
    b.stop();
    let sent: Vec<OriginalRecord> = (0..200).map(|i| sample(&topic, i)).collect();
    // Two workers' appenders, each on its own runtime thread.
    std::thread::scope(|s| {
        for (w, chunk) in sent.chunks(100).enumerate() {
            let a = spool.appender(w);
            s.spawn(move || {
                block_on(async {
                    for r in chunk {
                        a.append(r.clone()).await.expect("durable");
                    }
                })
            });
        }
    });
    // All 200 are durable; the Kafka path holds at most 8: the rest wait on disk only. The
    // mock's `broker_down` is a command to its own thread, so a record already on the wire
    // may still be acknowledged: at most the Kafka path's capacity can have left the spool.
    let unacked = stats.unacked_records();
    assert!(
        (200 - 8..=200).contains(&unacked),
        "unacknowledged while the broker is down: {unacked} of 200"
    );
    assert!(path.stats().depth() <= 8);
    b.start();
    wait_for("every spooled record delivered", LONG, || {
        stats.unacked_records() == 0
    });
    assert!(
        stats.replayed_records() >= 190,
        "records read back from disk: {}",
        stats.replayed_records()
    );
    let got = read_topic(&b.bootstrap(), "spooled", 200, LONG);
    assert!(got.len() >= 200);
    let mut unique = got.clone();
    unique.sort_by(|a, b| {
        a.header("relay-request-id")
            .cmp(&b.header("relay-request-id"))
    });
    unique.dedup_by(|a, b| a.header("relay-request-id") == b.header("relay-request-id"));
    assert_same_records(&sent, &unique);
    spool.shutdown();
    drop(spool);
    let report = path.shutdown(Duration::from_secs(5));
    assert!(!report.lost_any(), "{report}");
    // Everything acknowledged: only the empty active segments are left.
    let path = KafkaPath::start(&kafka_config(&b, 8)).unwrap();
    let (spool, report) = Spool::open(&spool_config(dir.path()), 2, path.sender()).unwrap();
    assert_eq!(report.unacked, 0, "{report:?}");
    drop(spool);
}

#[test]
fn a_reopened_spool_replays_what_kafka_never_acknowledged() {
    let mut b = Mock::new();
    b.create_topic("replayed");
    let topic: Arc<str> = "replayed".into();
    let dir = tempfile::tempdir().unwrap();
    let sent: Vec<OriginalRecord> = (0..50).map(|i| sample(&topic, i)).collect();
    {
        // Broker down the whole time: nothing is acknowledged, then relay stops.
        b.stop();
        let path = KafkaPath::start(&kafka_config(&b, 1000)).unwrap();
        let (spool, _) = Spool::open(&spool_config(dir.path()), 1, path.sender()).unwrap();
        let a = spool.appender(0);
        block_on(async {
            for r in &sent {
                a.append(r.clone()).await.unwrap();
            }
        });
        spool.shutdown();
        let report = path.shutdown(Duration::from_millis(200));
        assert_eq!(report.spooled, 50, "{report}");
        assert!(
            !report.lost_any(),
            "spooled originals are not lost: {report}"
        );
    }
    b.start();
    // Started with 3 workers: w0's segments are still owned and replayed.
    let path = KafkaPath::start(&kafka_config(&b, 1000)).unwrap();
    let (spool, report) = Spool::open(&spool_config(dir.path()), 3, path.sender()).unwrap();
    assert_eq!(report.unacked, 50);
    let stats = spool.stats();
    wait_for("the replay", LONG, || stats.unacked_records() == 0);
    let got = read_topic(&b.bootstrap(), "replayed", 50, LONG);
    assert_same_records(&sent, &got);
    drop(spool);
}
