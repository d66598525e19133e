//! The Kafka path for originals: one bounded lock-free queue, filled by the workers without
//! ever blocking, drained by dedicated producer thread(s) into librdkafka, which batches,
//! compresses, retries and keeps idempotence.
//!
//! The bound is on records *accepted and not yet acknowledged*: a record counts against
//! `queue_capacity` from [`KafkaSender::try_send`] until its delivery report (delivered or
//! failed), whether it waits in relay's queue or inside librdkafka. So when the broker is down
//! the path fills after `queue_capacity` requests and `try_send` refuses with
//! [`KafkaRejected`] (the request path answers 503 + `Retry-After`, forwards nothing).
//!
//! Lifecycle: [`KafkaPath::start`] once on the main thread; each worker holds a
//! [`KafkaSender`] clone; the metrics endpoint reads [`KafkaPath::stats`]; `/readyz` asks
//! [`KafkaPath::is_accepting`]; after in-flight requests finish, [`KafkaPath::shutdown`]
//! drains, flushes until a deadline and returns a [`FlushReport`].

pub mod config;
mod error;
pub mod metrics;
mod producer;
mod stats;

use std::sync::atomic::{AtomicBool, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::producer::{Producer, PurgeConfig};

pub use config::{
    defaults, Delivery, KafkaConfig, OnFull, DEFAULT_PROPERTIES, LIBRDKAFKA_MESSAGE_MAX_BYTES,
};
pub use error::{KafkaError, KafkaRejected};
pub use stats::{
    FailReason, Histogram, HistogramSnapshot, KafkaStats, Promise, TopicSnapshot, BUCKETS,
    MAX_TOPICS, OVERFLOW_TOPIC,
};

use producer::{Queued, RelayContext, RelayProducer, Shared, Sleeper};

/// The original of one accepted request, as it goes to Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginalRecord {
    /// Destination topic (the route's `topic`).
    pub topic: Arc<str>,
    /// Record key (the route's `key`, hashed), or none.
    pub key: Option<Vec<u8>>,
    /// The body exactly as the client sent it (chunked framing removed).
    pub payload: Vec<u8>,
    /// CreateTime: when relay received the request, ms since the Unix epoch.
    pub timestamp_ms: i64,
    /// Route name (header `relay-route`).
    pub route: Arc<str>,
    /// Request id (header `relay-request-id`).
    pub request_id: String,
    /// The request's `Content-Type` (header `content-type`), when it had one.
    pub content_type: Option<String>,
    /// The pseudonymisation key id in use (header `relay-key-id`), when the route scrubs.
    pub key_id: Option<String>,
    /// The consumer that sent the request (header `relay-consumer`), when the route has `auth`.
    pub consumer: Option<Arc<str>>,
    /// Sanitization receipt (route with a PII policy): `NAME:DIGEST` of the policy (header
    /// `relay-policy`, also sent upstream as `X-Relay-Policy`).
    pub policy: Option<String>,
    /// Receipt: lowercase hex SHA-256 of exactly the body forwarded upstream (header
    /// `relay-scrubbed-sha256`).
    pub scrubbed_sha256: Option<String>,
    /// Receipt: values pseudonymised in the body, query, path and headers (header
    /// `relay-pii-count`, decimal).
    pub pii_count: Option<String>,
    /// Quarantine records only: the egress guard's `report` findings as (detector, place), each
    /// as a `relay-guard-detector` header followed by a `relay-guard-path` header. Never values.
    pub guard_findings: Vec<(String, String)>,
    /// The coding of `payload` (header `content-encoding`: `gzip`, `deflate` or `zstd`), when
    /// the client sent a compressed body; `payload` stays exactly as sent.
    pub content_encoding: Option<crate::coding::Coding>,
    /// The side of the route's weighted split the request went to (header `relay-split`: its
    /// upstream name), when the route has `[[routes.split]]`.
    pub split: Option<Arc<str>>,
}

impl OriginalRecord {
    /// Bytes counted against `queue_max_bytes`: payload + key.
    pub fn queued_bytes(&self) -> u64 {
        (self.payload.len() + self.key.as_ref().map_or(0, Vec::len)) as u64
    }

    /// The optional Kafka headers this record carries, as (name, value), in one fixed order.
    /// The single list of optional headers: the producer, the spool's encoder and its size
    /// computation all read it, and [`OriginalRecord::set_header`] is its inverse.
    pub fn headers(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("content-type", self.content_type.as_deref()),
            ("relay-key-id", self.key_id.as_deref()),
            ("relay-consumer", self.consumer.as_deref()),
            ("relay-policy", self.policy.as_deref()),
            ("relay-scrubbed-sha256", self.scrubbed_sha256.as_deref()),
            ("relay-pii-count", self.pii_count.as_deref()),
            (
                "content-encoding",
                self.content_encoding.map(|c| c.as_str()),
            ),
            ("relay-split", self.split.as_deref()),
        ]
        .into_iter()
        .filter_map(|(name, v)| v.map(|v| (name, v)))
        .chain(self.guard_findings.iter().flat_map(|(d, p)| {
            [
                ("relay-guard-detector", d.as_str()),
                ("relay-guard-path", p.as_str()),
            ]
        }))
    }

    /// Sets the optional header `name` (one that [`OriginalRecord::headers`] lists); false
    /// when relay does not know the name, or a `content-encoding` value other than the codings
    /// relay writes (a spool record from another format).
    pub fn set_header(&mut self, name: &str, value: String) -> bool {
        match name {
            "content-type" => self.content_type = Some(value),
            "relay-key-id" => self.key_id = Some(value),
            "relay-consumer" => self.consumer = Some(Arc::from(value)),
            "relay-policy" => self.policy = Some(value),
            "relay-scrubbed-sha256" => self.scrubbed_sha256 = Some(value),
            "relay-pii-count" => self.pii_count = Some(value),
            "relay-guard-detector" => self.guard_findings.push((value, String::new())),
            "relay-guard-path" => match self.guard_findings.last_mut() {
                Some((_, p)) if p.is_empty() => *p = value,
                _ => return false,
            },
            "content-encoding" => match crate::coding::Coding::from_name(&value) {
                Some(c) => self.content_encoding = Some(c),
                None => return false,
            },
            "relay-split" => self.split = Some(Arc::from(value)),
            _ => return false,
        }
        true
    }
}

/// Called once with a record's delivery outcome, on a producer thread.
pub type OnDone = Box<dyn FnOnce(Result<(), FailReason>) + Send + Sync>;

/// Who learns a record's outcome, and what its failure means.
pub enum Done {
    /// `memory`: nobody waits; a failure is counted in `relay_kafka_originals_lost_total`.
    Memory,
    /// `ack`: the request waiting on the receiver.
    Ack(futures_channel::oneshot::Sender<Result<(), FailReason>>),
    /// `spool`: the spool, which keeps the record until it is delivered.
    Spooled(OnDone),
    /// A guard quarantine record: the callback counts a failure; nobody waits.
    Quarantine(OnDone),
}

impl Done {
    pub(crate) fn promise(&self) -> Promise {
        match self {
            Done::Memory => Promise::Memory,
            Done::Ack(_) => Promise::Ack,
            Done::Spooled(_) => Promise::Spooled,
            Done::Quarantine(_) => Promise::Quarantine,
        }
    }

    /// Reports the outcome to whoever waits.
    pub(crate) fn finish(self, r: Result<(), FailReason>) {
        match self {
            Done::Memory => {}
            Done::Ack(tx) => {
                let _ = tx.send(r);
            }
            Done::Spooled(f) | Done::Quarantine(f) => f(r),
        }
    }
}

/// What [`KafkaPath::shutdown`] reports. `enqueued = delivered + failed + pending`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlushReport {
    /// Records accepted by `try_send` since start.
    pub enqueued: u64,
    /// Records acknowledged by the broker.
    pub delivered: u64,
    /// Records that failed with a delivery error.
    pub failed: u64,
    /// Records neither delivered nor failed by the deadline (purged).
    pub pending: u64,
    /// Of `pending`, records whose original is kept in the spool (delivered after restart:
    /// not lost).
    pub spooled: u64,
    /// `memory` originals lost: failed, or pending at the deadline (a 2xx was answered).
    pub lost: u64,
}

impl FlushReport {
    /// Whether any original answered 2xx was lost: exit non-zero.
    pub fn lost_any(&self) -> bool {
        self.lost > 0
    }
}

impl std::fmt::Display for FlushReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "enqueued={} delivered={} failed={} pending={} spooled={} lost={}",
            self.enqueued, self.delivered, self.failed, self.pending, self.spooled, self.lost
        )
    }
}

/// A worker's handle on the Kafka path: cheap to clone, never blocks.
#[derive(Clone)]
pub struct KafkaSender {
    shared: Arc<Shared>,
}

impl KafkaSender {
    /// Queues `rec` for Kafka (`memory` delivery), or refuses at once when `queue_capacity`
    /// records or `queue_max_bytes` bytes are already accepted and unacknowledged (or the
    /// path is shutting down). Lock-free; never blocks.
    pub fn try_send(&self, rec: OriginalRecord) -> Result<(), KafkaRejected> {
        self.try_send_with(rec, Done::Memory)
    }

    /// [`try_send`](Self::try_send) with who learns the outcome. A refusal of a spooled record
    /// (it waits in the spool) or of a quarantine record (the request goes on) is not counted
    /// as a rejected request.
    pub fn try_send_with(&self, rec: OriginalRecord, done: Done) -> Result<(), KafkaRejected> {
        let s = &*self.shared;
        let rejected = KafkaRejected {
            retry_after_s: s.retry_after_s,
        };
        let promise = done.promise();
        let bytes = rec.queued_bytes();
        if s.closing.load(Relaxed) || !s.stats.reserve(bytes, promise) {
            if matches!(promise, Promise::Memory | Promise::Ack) {
                s.stats.on_rejected();
            }
            return Err(rejected);
        }
        let slot = s.stats.slot(&rec.topic);
        let q = Queued {
            rec,
            enqueued_at: Instant::now(),
            slot,
            bytes,
            done,
        };
        if let Err(q) = s.queue.push(q) {
            // Unreachable: the queue holds at most `outstanding` <= capacity records.
            s.stats.unreserve(q.bytes, promise);
            s.stats.on_rejected();
            return Err(rejected);
        }
        s.stats.on_enqueued(slot);
        s.wake_for(promise == Promise::Ack);
        Ok(())
    }

    /// Whether `topic` is blocked by a permanent delivery error (spool routes refuse while it
    /// is; the spool's retries unblock it).
    pub fn topic_blocked(&self, topic: &Arc<str>) -> Option<FailReason> {
        let st = &self.shared.stats;
        st.blocked(st.slot(topic))
    }

    /// The delivery mode of routes that do not set their own.
    pub fn default_delivery(&self) -> Delivery {
        self.shared.delivery
    }

    /// The counters.
    pub fn stats(&self) -> &KafkaStats {
        &self.shared.stats
    }

    /// `Retry-After` seconds for refusals.
    pub fn retry_after_s(&self) -> u32 {
        self.shared.retry_after_s
    }

    /// Whether a record could be queued now (a hint: another sender may take the room).
    pub fn has_room(&self) -> bool {
        let st = &self.shared.stats;
        !self.shared.closing.load(Relaxed)
            && st.depth() < st.capacity()
            && st.depth_bytes() < st.capacity_bytes()
    }

    /// The producer's `message.max.bytes`.
    pub fn message_max_bytes(&self) -> usize {
        self.shared.message_max_bytes
    }
}

impl std::fmt::Debug for KafkaSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSender")
            .field("depth", &self.shared.stats.depth())
            .finish()
    }
}

/// The running Kafka path: the queue, the producer threads and their counters.
pub struct KafkaPath {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<RelayProducer>>,
    deadline: Arc<Mutex<Option<Instant>>>,
}

impl KafkaPath {
    /// Creates the queue and one librdkafka producer per `producer_threads`, and starts the
    /// threads. Connecting to the brokers happens in the background: a broker that is down
    /// makes records wait (and the queue fill), not `start` fail.
    pub fn start(cfg: &KafkaConfig) -> Result<KafkaPath, KafkaError> {
        let n = cfg.producer_threads.max(1);
        let capacity = cfg.queue_capacity.max(1);
        let cc = cfg.client_config();
        let shared = Arc::new(Shared {
            queue: ArrayQueue::new(capacity),
            stats: Arc::new(KafkaStats::new(capacity, cfg.queue_max_bytes.max(1))),
            delivery: cfg.delivery,
            message_max_bytes: cfg
                .message_max_bytes()
                .unwrap_or(LIBRDKAFKA_MESSAGE_MAX_BYTES),
            closing: AtomicBool::new(false),
            urgent: AtomicBool::new(false),
            retry_after_s: cfg.retry_after_s.max(1),
            sleepers: (0..n).map(|_| Sleeper::default()).collect(),
            log: Default::default(),
        });
        let producers = (0..n)
            .map(|_| {
                RelayProducer::from_config_and_context(
                    &cc,
                    RelayContext {
                        shared: shared.clone(),
                    },
                )
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| KafkaError::Config(config::librdkafka_message(&e)))?;
        let deadline = Arc::new(Mutex::new(None));
        let mut path = KafkaPath {
            shared: shared.clone(),
            threads: Vec::with_capacity(n),
            deadline,
        };
        for (me, p) in producers.into_iter().enumerate() {
            let shared = shared.clone();
            let deadline = path.deadline.clone();
            let h = std::thread::Builder::new()
                .name(format!("relay-kafka-{me}"))
                .spawn(move || producer::run(me, p, shared, deadline))
                .map_err(KafkaError::Spawn)?;
            path.threads.push(h);
        }
        tracing::info!(brokers = %cfg.brokers, capacity, producer_threads = n, "kafka path started");
        Ok(path)
    }

    /// A handle for one worker.
    pub fn sender(&self) -> KafkaSender {
        KafkaSender {
            shared: self.shared.clone(),
        }
    }

    /// The counters (for `/metrics`).
    pub fn stats(&self) -> Arc<KafkaStats> {
        self.shared.stats.clone()
    }

    /// `Ok` while the path can take records; `Err(reason)` when the queue is full or a
    /// topic's last delivery failed permanently (for `/readyz`).
    pub fn is_accepting(&self) -> Result<(), String> {
        if self.shared.closing.load(Relaxed) {
            return Err("the Kafka path is shutting down".into());
        }
        readiness(&self.shared.stats)
    }

    /// Stops taking records, hands everything queued to librdkafka, waits until `deadline` for
    /// delivery reports, then purges what is left and reports. Call after in-flight requests
    /// finished.
    pub fn shutdown(mut self, deadline: Duration) -> FlushReport {
        self.stop(deadline)
    }

    fn stop(&mut self, deadline: Duration) -> FlushReport {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + deadline);
        self.shared.closing.store(true, SeqCst);
        self.shared.wake_all();
        let producers: Vec<RelayProducer> = self
            .threads
            .drain(..)
            .filter_map(|h| h.join().ok())
            .collect();
        let st = &self.shared.stats;
        let enqueued = st.enqueued_total();
        let delivered = st.delivered_total();
        let failed = st.failed_total();
        let memory_pending = st.outstanding(Promise::Memory);
        if memory_pending > 0 {
            st.on_lost(FailReason::Purged, memory_pending);
        }
        let report = FlushReport {
            enqueued,
            delivered,
            failed,
            pending: enqueued.saturating_sub(delivered + failed),
            spooled: st.outstanding(Promise::Spooled),
            lost: st.lost().iter().map(|(_, n)| n).sum(),
        };
        // What is left is lost: drop it from librdkafka and from relay's queue.
        for p in &producers {
            p.purge(PurgeConfig::default().queue().inflight());
            p.poll(Duration::ZERO);
        }
        while self.shared.queue.pop().is_some() {}
        drop(producers);
        if report.lost_any() {
            tracing::warn!(%report, "kafka path stopped with records lost");
        } else {
            tracing::info!(%report, "kafka path flushed");
        }
        report
    }
}

/// `Err(reason)` when the Kafka path cannot promise delivery: full (records or bytes), or a
/// topic blocked by a permanent error.
pub fn readiness(st: &KafkaStats) -> Result<(), String> {
    if st.depth() >= st.capacity() {
        return Err(format!(
            "the Kafka queue is full: {} of {} records await broker acknowledgement",
            st.depth(),
            st.capacity()
        ));
    }
    if st.depth_bytes() >= st.capacity_bytes() {
        return Err(format!(
            "the Kafka queue is full: {} of {} bytes await broker acknowledgement",
            st.depth_bytes(),
            st.capacity_bytes()
        ));
    }
    st.health()
}

impl Drop for KafkaPath {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop(Duration::ZERO);
        }
    }
}

impl std::fmt::Debug for KafkaPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaPath")
            .field("stats", &self.shared.stats)
            .finish()
    }
}
