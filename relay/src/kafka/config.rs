//! `[kafka]`: brokers, the bounded queue, the full-queue policy and librdkafka properties.

use std::collections::BTreeMap;

use rdkafka::config::ClientConfig;
use rdkafka::producer::BaseProducer;
use serde::{Deserialize, Serialize};

use crate::problems::Problems;

/// Bytes a Kafka record adds to the body it carries, at most: the record batch and record
/// framing (~130), the header names (~45), the route name, a request id (at most 200), a
/// content type, a key (a 64-hex-digit hash) and a key id. `relay check` requires
/// `max_body_bytes + KAFKA_RECORD_OVERHEAD <= message.max.bytes`; a request whose record
/// still does not fit (a longer content type or raw key) gets 413 and is not forwarded.
pub const KAFKA_RECORD_OVERHEAD: usize = 1024;

/// Properties relay sets unless `[kafka.properties]` overrides them.
pub const DEFAULT_PROPERTIES: &[(&str, &str)] = &[
    ("acks", "all"),
    ("enable.idempotence", "true"),
    ("compression.type", "lz4"),
];

/// `[kafka]`: brokers, queue and librdkafka properties.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port[,host:port...]`. Required.
    pub brokers: String,
    /// Most records accepted but not yet acknowledged by Kafka (waiting in relay's queue or in
    /// librdkafka), across all workers, in records. When reached, `on_full` applies. Default 65536.
    #[serde(default = "defaults::queue_capacity")]
    pub queue_capacity: usize,
    /// The same bound in bytes (payload + key of every record accepted and not yet
    /// acknowledged). Default 268435456 (256 MiB).
    #[serde(default = "defaults::queue_max_bytes")]
    pub queue_max_bytes: u64,
    /// What a 2xx promises about the original, for routes that do not set their own
    /// `delivery`: `"memory"` (queued in relay's memory: lost on SIGKILL/OOM), `"spool"`
    /// (durable on local disk, `[spool]`; relay delivers it across crashes and Kafka outages)
    /// or `"ack"` (Kafka acknowledged it, acks=all). Default `"memory"`.
    #[serde(default)]
    pub delivery: Delivery,
    /// What a request gets when the queue is full: `"reject"` (503 + `Retry-After`, JSON error
    /// `kafka_backpressure`, nothing forwarded). Default `"reject"`.
    #[serde(default)]
    pub on_full: OnFull,
    /// `Retry-After` sent with a `kafka_backpressure` 503, in seconds. Default 1.
    #[serde(default = "defaults::retry_after_s")]
    pub retry_after_s: u32,
    /// At shutdown, how long the queue and librdkafka may take to deliver what they hold, in ms.
    /// Default 30000.
    #[serde(default = "defaults::flush_timeout_ms")]
    pub flush_timeout_ms: u64,
    /// Producer threads draining the queue, each with its own librdkafka producer. Default 1.
    #[serde(default = "defaults::producer_threads")]
    pub producer_threads: usize,
    /// librdkafka properties, passed verbatim (`"linger.ms" = "5"`). relay sets `acks = "all"`,
    /// `enable.idempotence = "true"` and `compression.type = "lz4"` unless given here, and
    /// `queue.buffering.max.messages` to at least `queue_capacity`. Default: none.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

/// What happens to a request whose original cannot be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFull {
    /// 503 with `Retry-After` and `kafka_backpressure`; the request is not forwarded.
    #[default]
    Reject,
}

/// What a 2xx promises about a route's original (README "Delivery modes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Queued in relay's memory (bounded in records and bytes); a SIGKILL loses the queue.
    #[default]
    Memory,
    /// Durable in the worker's spool segment (group `fdatasync`) before the upstream is called.
    Spool,
    /// Acknowledged by Kafka (acks=all); the upstream exchange runs during the round trip.
    Ack,
}

impl Delivery {
    /// The config / label spelling.
    pub fn label(self) -> &'static str {
        match self {
            Delivery::Memory => "memory",
            Delivery::Spool => "spool",
            Delivery::Ack => "ack",
        }
    }
}

/// librdkafka's default `message.max.bytes`.
pub const LIBRDKAFKA_MESSAGE_MAX_BYTES: usize = 1_000_000;

/// Default values, one function per field (serde needs functions).
pub mod defaults {
    /// 256 MiB.
    pub fn queue_max_bytes() -> u64 {
        256 << 20
    }
    /// 65536 records.
    pub fn queue_capacity() -> usize {
        65536
    }
    /// 1 s.
    pub fn retry_after_s() -> u32 {
        1
    }
    /// 30000 ms.
    pub fn flush_timeout_ms() -> u64 {
        30_000
    }
    /// 1 thread.
    pub fn producer_threads() -> usize {
        1
    }
}

impl KafkaConfig {
    /// A config with `brokers` and every default.
    pub fn new(brokers: impl Into<String>) -> KafkaConfig {
        KafkaConfig {
            brokers: brokers.into(),
            queue_capacity: defaults::queue_capacity(),
            queue_max_bytes: defaults::queue_max_bytes(),
            delivery: Delivery::Memory,
            on_full: OnFull::Reject,
            retry_after_s: defaults::retry_after_s(),
            flush_timeout_ms: defaults::flush_timeout_ms(),
            producer_threads: defaults::producer_threads(),
            properties: BTreeMap::new(),
        }
    }

    /// Records problems under `field` (`"kafka"`). An unknown or invalid librdkafka property
    /// is reported with librdkafka's own message; the check needs no reachable broker.
    pub fn validate(&self, field: &str, p: &mut Problems) {
        if self.brokers.trim().is_empty() {
            p.push(
                format!("{field}.brokers"),
                "must name at least one broker, e.g. \"127.0.0.1:9092\"",
            );
        }
        for b in self
            .brokers
            .split(',')
            .map(str::trim)
            .filter(|b| !b.is_empty())
        {
            let ok = b
                .rsplit_once(':')
                .is_some_and(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok_and(|n| n > 0));
            if !ok {
                p.push(
                    format!("{field}.brokers"),
                    format!("{b:?} is not host:port; write e.g. \"10.0.0.7:9092\""),
                );
            }
        }
        if self.queue_capacity == 0 {
            p.push(
                format!("{field}.queue_capacity"),
                "must be at least 1 record",
            );
        }
        if self.queue_max_bytes == 0 {
            p.push(
                format!("{field}.queue_max_bytes"),
                "must be at least 1 byte (256 MiB by default)",
            );
        }
        if self.retry_after_s == 0 {
            p.push(format!("{field}.retry_after_s"), "must be at least 1 s");
        }
        if self.flush_timeout_ms == 0 {
            p.push(
                format!("{field}.flush_timeout_ms"),
                "must be more than 0 ms",
            );
        }
        if !(1..=64).contains(&self.producer_threads) {
            p.push(
                format!("{field}.producer_threads"),
                "must be between 1 and 64",
            );
        }
        if self.properties.contains_key("bootstrap.servers")
            || self.properties.contains_key("metadata.broker.list")
        {
            p.push(
                format!("{field}.properties"),
                "set the brokers with kafka.brokers, not bootstrap.servers / metadata.broker.list",
            );
        }
        // librdkafka checks each property when it is set (one problem per bad property) and
        // the combination when a client is created. Without bootstrap.servers the throwaway
        // producer opens no connection.
        let mut each_ok = true;
        for (k, v) in &self.properties {
            let mut one = ClientConfig::new();
            one.set(k, v);
            if let Err(e) = one.create_native_config() {
                each_ok = false;
                p.push(format!("{field}.properties.{k:?}"), librdkafka_message(&e));
            }
        }
        if each_ok {
            if let Err(e) = self
                .client_config_without_brokers()
                .create::<BaseProducer>()
            {
                p.push(format!("{field}.properties"), librdkafka_message(&e));
            }
        }
    }

    /// The producer's `message.max.bytes`: from `[kafka.properties]`, else librdkafka's
    /// default (1000000). `Err` with the text when the property does not parse.
    pub fn message_max_bytes(&self) -> Result<usize, String> {
        match self.properties.get("message.max.bytes") {
            None => Ok(LIBRDKAFKA_MESSAGE_MAX_BYTES),
            Some(v) => v.trim().parse().map_err(|_| v.clone()),
        }
    }

    /// The librdkafka configuration of one producer: relay's defaults, the properties, the
    /// brokers.
    pub fn client_config(&self) -> ClientConfig {
        let mut cc = self.client_config_without_brokers();
        cc.set("bootstrap.servers", self.brokers.trim());
        cc
    }

    fn client_config_without_brokers(&self) -> ClientConfig {
        let mut cc = ClientConfig::new();
        for (k, v) in DEFAULT_PROPERTIES {
            cc.set(*k, *v);
        }
        // librdkafka's own queue must never be the bound: relay's queue_capacity is.
        let per_thread = self.queue_capacity.clamp(100_000, 10_000_000);
        cc.set("queue.buffering.max.messages", per_thread.to_string());
        for (k, v) in &self.properties {
            cc.set(k, v);
        }
        cc
    }
}

/// librdkafka's message from an rdkafka error, without rdkafka's prefix.
pub(crate) fn librdkafka_message(e: &rdkafka::error::KafkaError) -> String {
    use rdkafka::error::KafkaError as K;
    match e {
        K::ClientCreation(m) => m.clone(),
        K::ClientConfig(_, desc, key, value) => {
            format!("{desc} (property {key:?} = {value:?})")
        }
        other => other.to_string(),
    }
}
