//! Why the Kafka path could not start or take a record.

/// Starting the Kafka path failed.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// librdkafka refused the configuration (its own message). Fault: configuration.
    #[error("librdkafka refused the [kafka] configuration: {0}")]
    Config(String),
    /// A producer thread could not be spawned. Fault: internal.
    #[error("cannot spawn the Kafka producer thread: {0}")]
    Spawn(#[source] std::io::Error),
}

/// `try_send` refused a record: the queue is full (or the path is shutting down). The request
/// gets 503 with `Retry-After: retry_after_s` and `kafka_backpressure`; nothing is forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the Kafka queue is full; retry after {retry_after_s} s")]
pub struct KafkaRejected {
    /// Seconds for `Retry-After`.
    pub retry_after_s: u32,
}
