//! The Kafka path for originals: bounded lock-free queues drained by producer threads into
//! librdkafka (issue 4 fills this in).

use serde::{Deserialize, Serialize};

use crate::config::Problems;

/// `[kafka]`: brokers, queue and librdkafka properties.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port[,host:port...]`.
    pub brokers: String,
}

impl KafkaConfig {
    /// Records problems under `field`.
    pub fn validate(&self, _field: &str, _p: &mut Problems) {}
}

/// One original body on its way to Kafka.
#[derive(Debug, Clone)]
pub struct OriginalRecord {
    /// Topic.
    pub topic: std::sync::Arc<str>,
    /// Record key.
    pub key: Option<Vec<u8>>,
    /// The body exactly as received (chunked framing removed).
    pub payload: Vec<u8>,
    /// CreateTime: when relay received the request, ms since the epoch.
    pub timestamp_ms: i64,
    /// Route name (`relay-route` header).
    pub route: std::sync::Arc<str>,
    /// Request id (`relay-request-id` header).
    pub request_id: String,
    /// Content-Type of the request (`content-type` header).
    pub content_type: Option<String>,
    /// PII key id (`relay-key-id` header).
    pub key_id: Option<String>,
}

/// The queue was full.
#[derive(Debug, Clone, Copy)]
pub struct KafkaRejected {
    /// Seconds for Retry-After.
    pub retry_after_s: u32,
}

/// A worker's handle on the Kafka queue.
#[derive(Debug, Clone)]
pub struct KafkaSender;

impl KafkaSender {
    /// Queues a record without blocking.
    pub fn try_send(&self, _rec: OriginalRecord) -> Result<(), KafkaRejected> {
        Ok(())
    }
}
