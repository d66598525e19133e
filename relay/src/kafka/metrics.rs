//! The Kafka path's metric families (queue depth and bounds, originals lost, records enqueued,
//! delivered and failed per topic, delivery latency), rendered at every scrape. Without
//! `[kafka]` the families still exist, with zero depth and capacity and no per-topic series,
//! so dashboards and alerts resolve.

use std::fmt::Write as _;

use crate::metrics::{esc, family, histogram_series};

use super::stats::TopicSnapshot;
use super::KafkaStats;

/// A family with one value: name, help, and how to read it.
type Series<T> = (&'static str, &'static str, fn(&T) -> u64);

/// The queue gauges.
const QUEUE_GAUGES: &[Series<KafkaStats>] = &[
    (
        "relay_kafka_queue_depth",
        "Originals accepted and not yet acknowledged by Kafka.",
        KafkaStats::depth,
    ),
    (
        "relay_kafka_queue_capacity",
        "Capacity of the Kafka path, records (0 without [kafka]).",
        KafkaStats::capacity,
    ),
    (
        "relay_kafka_queue_bytes",
        "Payload + key bytes of the originals accepted and not yet acknowledged by Kafka.",
        KafkaStats::depth_bytes,
    ),
    (
        "relay_kafka_queue_max_bytes",
        "queue_max_bytes: the byte bound of the Kafka path (0 without [kafka]).",
        KafkaStats::capacity_bytes,
    ),
];

/// The per-topic counters.
const TOPIC_COUNTERS: &[Series<TopicSnapshot>] = &[
    (
        "relay_kafka_records_enqueued_total",
        "Originals queued for Kafka, by topic.",
        |t| t.enqueued,
    ),
    (
        "relay_kafka_records_delivered_total",
        "Originals acknowledged by Kafka, by topic.",
        |t| t.delivered,
    ),
];

/// Appends every Kafka family to `out`; `stats` is `None` without `[kafka]`.
pub fn render(out: &mut String, stats: Option<&KafkaStats>) {
    for (name, help, get) in QUEUE_GAUGES {
        family(out, name, "gauge", help);
        let _ = writeln!(out, "{name} {}", stats.map_or(0, get));
    }
    family(
        out,
        "relay_kafka_originals_lost_total",
        "counter",
        "Originals of memory-mode routes answered 2xx and then not delivered, by reason.",
    );
    for (reason, n) in stats.map(|s| s.lost()).unwrap_or_default() {
        let _ = writeln!(
            out,
            "relay_kafka_originals_lost_total{{reason=\"{}\"}} {n}",
            reason.label()
        );
    }
    let topics = stats.map(|s| s.topics()).unwrap_or_default();
    for (name, help, get) in TOPIC_COUNTERS {
        family(out, name, "counter", help);
        for t in &topics {
            let _ = writeln!(out, "{name}{{topic=\"{}\"}} {}", esc(&t.topic), get(t));
        }
    }
    family(
        out,
        "relay_kafka_records_failed_total",
        "counter",
        "Originals whose delivery failed, by topic and reason.",
    );
    for t in &topics {
        for (reason, n) in &t.failed {
            let _ = writeln!(
                out,
                "relay_kafka_records_failed_total{{topic=\"{}\",reason=\"{}\"}} {n}",
                esc(&t.topic),
                reason.label()
            );
        }
    }
    family(
        out,
        "relay_kafka_delivery_duration_seconds",
        "histogram",
        "Time from queueing an original to its delivery report, by topic.",
    );
    let Some(stats) = stats else { return };
    for t in &topics {
        histogram_series(
            out,
            "relay_kafka_delivery_duration_seconds",
            &format!("topic=\"{}\"", esc(&t.topic)),
            stats.buckets(),
            &t.latency.cumulative,
            t.latency.sum_seconds,
            t.latency.count,
        );
    }
}
