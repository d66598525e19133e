//! The request phase "publish original": hands a route's original to the Kafka path in the
//! route's delivery mode, and (for `ack`) settles the request with Kafka's answer after the
//! upstream exchange.
//!
//! - `memory`: queued in relay's memory; full (records or bytes) → 503 `kafka_backpressure`.
//! - `spool`: durable in the worker's spool before the upstream is called; the topic blocked
//!   by a permanent Kafka error → 503 `kafka_unavailable`; spool over `max_bytes` → 503
//!   `spool_full`; a disk error → 503 `spool_unavailable`. Nothing is forwarded on a refusal.
//! - `ack`: queued with a completion; the upstream exchange runs while Kafka's round trip is
//!   in flight; the response is released only once Kafka acknowledged (acks=all), else 503
//!   `kafka_unavailable` even if the upstream answered.

use futures_channel::oneshot;

use crate::error::RequestError;
use crate::route::Route;
use crate::spool::SpoolError;
use crate::upstream::UpstreamResponse;
use crate::worker::Worker;

use crate::kafka::{Delivery, Done, FailReason, KafkaSender, OriginalRecord};

/// What the request still has to wait for after the upstream exchange.
#[must_use = "an ack-mode request must be settled with Kafka's answer"]
pub enum Pending {
    /// Nothing (no Kafka copy, `memory`, or `spool`: already durable).
    Nothing,
    /// Kafka's acknowledgement of the original (`ack`).
    Ack {
        /// The delivery outcome, set by the producer thread.
        rx: oneshot::Receiver<Result<(), FailReason>>,
        /// `Retry-After` for a failure.
        retry_after_s: u32,
    },
}

/// Bytes of the Kafka record for `rec` as librdkafka counts them against `message.max.bytes`
/// (payload, key, headers), plus framing.
pub fn kafka_record_bytes(rec: &OriginalRecord) -> usize {
    rec.payload.len()
        + rec.key.as_ref().map_or(0, Vec::len)
        + rec.route.len()
        + rec.request_id.len()
        + rec.headers().map(|(n, v)| n.len() + v.len()).sum::<usize>()
        + 200
}

/// `Err(limit)` when `rec` is larger than the producer takes (`message.max.bytes`), with the
/// body limit to report. The one place the Kafka record size is checked, for originals and
/// quarantine records.
pub fn check_record_fits(kafka: &KafkaSender, rec: &OriginalRecord) -> Result<(), u64> {
    let limit = kafka.message_max_bytes();
    if kafka_record_bytes(rec) > limit {
        return Err(limit.saturating_sub(crate::kafka::config::KAFKA_RECORD_OVERHEAD) as u64);
    }
    Ok(())
}

/// Publishes `rec` for `route` in its delivery mode. Runs after the scrub pass (the record
/// carries the receipt of what is forwarded) and before the upstream exchange.
pub async fn publish_original(
    worker: &Worker,
    route: &Route,
    kafka: &KafkaSender,
    rec: OriginalRecord,
) -> Result<Pending, RequestError> {
    // relay check keeps max_body_bytes below message.max.bytes; this only catches a long
    // content type or raw key on top of a body near the limit.
    check_record_fits(kafka, &rec)
        .map_err(|limit| RequestError::Http(relay_http::HttpError::BodyTooLarge { limit }))?;
    let retry_after_s = kafka.retry_after_s();
    match route.delivery.unwrap_or(kafka.default_delivery()) {
        Delivery::Memory => {
            kafka
                .try_send(rec)
                .map_err(|r| RequestError::KafkaBackpressure {
                    retry_after_s: r.retry_after_s,
                })?;
            Ok(Pending::Nothing)
        }
        Delivery::Spool => {
            if let Some(reason) = kafka.topic_blocked(&rec.topic) {
                return Err(RequestError::KafkaUnavailable {
                    detail: format!("topic {:?}: {}", &*rec.topic, reason.label()),
                    retry_after_s,
                });
            }
            let Some(spool) = &worker.spool else {
                return Err(RequestError::SpoolUnavailable {
                    detail: "no spool is open".into(),
                    retry_after_s,
                });
            };
            spool.append(rec).await.map_err(|e| match e {
                SpoolError::Full { retry_after_s, .. } => RequestError::SpoolFull { retry_after_s },
                SpoolError::Unavailable(detail) => RequestError::SpoolUnavailable {
                    detail,
                    retry_after_s,
                },
            })?;
            Ok(Pending::Nothing)
        }
        Delivery::Ack => {
            let (tx, rx) = oneshot::channel();
            kafka.try_send_with(rec, Done::Ack(tx)).map_err(|r| {
                RequestError::KafkaBackpressure {
                    retry_after_s: r.retry_after_s,
                }
            })?;
            Ok(Pending::Ack { rx, retry_after_s })
        }
    }
}

impl Pending {
    /// Settles the request: for `ack`, waits for Kafka's outcome and turns a failure into
    /// 503 `kafka_unavailable` whatever the upstream answered.
    pub async fn settle(
        self,
        upstream: Result<UpstreamResponse, RequestError>,
    ) -> Result<UpstreamResponse, RequestError> {
        match self {
            Pending::Nothing => upstream,
            Pending::Ack { rx, retry_after_s } => match rx.await {
                Ok(Ok(())) => upstream,
                Ok(Err(reason)) => Err(RequestError::KafkaUnavailable {
                    detail: format!("delivery failed: {}", reason.label()),
                    retry_after_s,
                }),
                Err(_) => Err(RequestError::KafkaUnavailable {
                    detail: "the Kafka path stopped".into(),
                    retry_after_s,
                }),
            },
        }
    }
}
