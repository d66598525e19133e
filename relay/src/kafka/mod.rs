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
