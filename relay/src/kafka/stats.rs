//! Delivery accounting for metrics and the shutdown report: lock-free counters, per-topic
//! delivery reports by reason, and a fixed-bucket delivery latency histogram.
//!
//! Topics are interned on first use into a fixed open-addressing table of [`MAX_TOPICS`]
//! slots (`OnceLock` each), so the request path finds its topic's counters with atomic loads
//! only; topics beyond the table share the [`OVERFLOW_TOPIC`] slot.

use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Distinct topics tracked one by one; more share [`OVERFLOW_TOPIC`].
pub const MAX_TOPICS: usize = 256;
/// The label for topics beyond [`MAX_TOPICS`].
pub const OVERFLOW_TOPIC: &str = "_other";

/// Upper bounds (seconds) of the delivery latency buckets, enqueue to delivery report.
pub const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Why a record was not delivered: the `reason` label of `relay_kafka_records_failed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailReason {
    /// `message.timeout.ms` passed without an acknowledgement (broker down or slow).
    TimedOut,
    /// The record is larger than the producer or broker allows.
    TooLarge,
    /// The topic or partition does not exist.
    UnknownTopic,
    /// Not authorized to write the topic.
    Unauthorized,
    /// Purged at shutdown after the flush deadline.
    Purged,
    /// librdkafka's own queue refused it.
    LocalQueueFull,
    /// The producer hit a fatal error (idempotence state lost, fenced): it cannot deliver.
    Fatal,
    /// Anything else (the log line carries librdkafka's reason).
    Other,
}

impl FailReason {
    /// Every reason, in label order.
    pub const ALL: [FailReason; 8] = [
        FailReason::TimedOut,
        FailReason::TooLarge,
        FailReason::UnknownTopic,
        FailReason::Unauthorized,
        FailReason::Purged,
        FailReason::LocalQueueFull,
        FailReason::Fatal,
        FailReason::Other,
    ];

    /// Whether retrying cannot help until an operator acts (topic, ACL, sizes, a fatal
    /// producer error): the route stops taking traffic (spool) and `/readyz` fails.
    pub fn is_permanent(self) -> bool {
        matches!(
            self,
            FailReason::TooLarge
                | FailReason::UnknownTopic
                | FailReason::Unauthorized
                | FailReason::Fatal
        )
    }

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            FailReason::TimedOut => "timed_out",
            FailReason::TooLarge => "too_large",
            FailReason::UnknownTopic => "unknown_topic",
            FailReason::Unauthorized => "unauthorized",
            FailReason::Purged => "purged",
            FailReason::LocalQueueFull => "local_queue_full",
            FailReason::Fatal => "fatal",
            FailReason::Other => "other",
        }
    }

    /// Classifies a librdkafka error code.
    pub fn from_code(code: rdkafka::types::RDKafkaErrorCode) -> FailReason {
        use rdkafka::types::RDKafkaErrorCode as C;
        match code {
            C::MessageTimedOut | C::RequestTimedOut => FailReason::TimedOut,
            C::MessageSizeTooLarge | C::InvalidMessageSize => FailReason::TooLarge,
            C::UnknownTopic | C::UnknownTopicOrPartition | C::UnknownPartition => {
                FailReason::UnknownTopic
            }
            C::TopicAuthorizationFailed | C::ClusterAuthorizationFailed => FailReason::Unauthorized,
            C::PurgeQueue | C::PurgeInflight => FailReason::Purged,
            C::QueueFull => FailReason::LocalQueueFull,
            C::Fatal
            | C::OutOfOrderSequenceNumber
            | C::InvalidProducerEpoch
            | C::ProducerFenced
            | C::InvalidProducerIdMapping
            | C::TransactionalIdAuthorizationFailed => FailReason::Fatal,
            _ => FailReason::Other,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A latency histogram with fixed [`BUCKETS`]: per-bucket counts (plus +Inf), count and sum.
#[derive(Debug)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(BUCKETS.len());
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(d.as_micros() as u64, Relaxed);
    }

    /// Cumulative counts per bucket of [`BUCKETS`] (Prometheus `le` semantics), the total count
    /// (the `+Inf` bucket) and the sum in seconds.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = Vec::with_capacity(BUCKETS.len());
        let mut acc = 0;
        for c in &self.counts[..BUCKETS.len()] {
            acc += c.load(Relaxed);
            cumulative.push(acc);
        }
        let count = acc + self.counts[BUCKETS.len()].load(Relaxed);
        HistogramSnapshot {
            cumulative,
            count,
            sum_seconds: self.sum_us.load(Relaxed) as f64 / 1e6,
        }
    }
}

/// A point-in-time copy of a [`Histogram`].
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `cumulative[i]` = observations <= `BUCKETS[i]` seconds.
    pub cumulative: Vec<u64>,
    /// All observations (the `+Inf` bucket).
    pub count: u64,
    /// Sum of the observations, in seconds.
    pub sum_seconds: f64,
}

/// One topic's counters.
#[derive(Debug)]
pub(crate) struct TopicStats {
    name: Arc<str>,
    enqueued: AtomicU64,
    delivered: AtomicU64,
    failed: [AtomicU64; FailReason::ALL.len()],
    latency: Histogram,
    /// 0, or 1 + the index of the permanent [`FailReason`] of the last failure (cleared by
    /// the next delivery to this topic).
    blocked: AtomicU8,
    /// librdkafka's text for the last permanent failure.
    blocked_error: Mutex<String>,
}

impl TopicStats {
    fn new(name: Arc<str>) -> TopicStats {
        TopicStats {
            name,
            enqueued: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            failed: std::array::from_fn(|_| AtomicU64::new(0)),
            latency: Histogram::default(),
            blocked: AtomicU8::new(0),
            blocked_error: Mutex::new(String::new()),
        }
    }
}

/// What a 2xx promised about a record: decides what its failure means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Promise {
    /// `memory`: a failure loses the original (counted in `originals_lost`).
    Memory,
    /// `ack`: the waiting request learns the outcome (503 on failure): nothing is lost.
    Ack,
    /// `spool`: the spool keeps the record until it is delivered: nothing is lost.
    Spooled,
    /// A guard quarantine record (not an original): a failure is counted by its policy
    /// (`relay_guard_quarantine_failed_total`), loses no original and blocks no topic.
    Quarantine,
}

/// A point-in-time copy of one topic's counters.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicSnapshot {
    /// The topic (or [`OVERFLOW_TOPIC`]).
    pub topic: Arc<str>,
    /// Records accepted by `try_send` for this topic.
    pub enqueued: u64,
    /// Records acknowledged by the broker.
    pub delivered: u64,
    /// Records that failed, by reason (every reason listed, zeros included).
    pub failed: Vec<(FailReason, u64)>,
    /// Enqueue-to-acknowledgement latency of delivered records.
    pub latency: HistogramSnapshot,
}

/// The Kafka path's counters, shared by workers (writers on accept), producer threads (writers
/// on delivery report) and the metrics endpoint (reader). Every read is lock-free.
///
/// Metric mapping: `relay_kafka_queue_depth` = [`depth`](Self::depth),
/// `relay_kafka_queue_capacity` = [`capacity`](Self::capacity); per topic from
/// [`topics`](Self::topics): `relay_kafka_records_enqueued_total{topic}`,
/// `relay_kafka_records_delivered_total{topic}`,
/// `relay_kafka_records_failed_total{topic,reason}`,
/// `relay_kafka_delivery_duration_seconds{topic}` (buckets [`buckets`](Self::buckets)).
#[derive(Debug)]
pub struct KafkaStats {
    capacity: usize,
    capacity_bytes: u64,
    /// Accepted, not yet acknowledged or failed (relay's queue + librdkafka's).
    pub(crate) outstanding: AtomicUsize,
    /// Payload + key bytes of the `outstanding` records.
    pub(crate) outstanding_bytes: AtomicU64,
    /// `outstanding` by [`Promise`] (memory, ack, spooled, quarantine).
    by_promise: [AtomicUsize; 4],
    /// Memory-mode originals lost, by reason.
    lost: [AtomicU64; FailReason::ALL.len()],
    rejected_full: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
    topics: Box<[OnceLock<TopicStats>]>,
    overflow: TopicStats,
}

impl KafkaStats {
    pub(crate) fn new(capacity: usize, capacity_bytes: u64) -> KafkaStats {
        KafkaStats {
            capacity,
            capacity_bytes,
            outstanding: AtomicUsize::new(0),
            outstanding_bytes: AtomicU64::new(0),
            by_promise: std::array::from_fn(|_| AtomicUsize::new(0)),
            lost: std::array::from_fn(|_| AtomicU64::new(0)),
            rejected_full: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            topics: (0..MAX_TOPICS).map(|_| OnceLock::new()).collect(),
            overflow: TopicStats::new(OVERFLOW_TOPIC.into()),
        }
    }

    /// Latency bucket upper bounds, in seconds.
    pub fn buckets(&self) -> &'static [f64] {
        BUCKETS
    }
    /// Records accepted and not yet acknowledged or failed: in relay's queue or in librdkafka.
    /// The queue is full when this reaches [`capacity`](Self::capacity).
    pub fn depth(&self) -> u64 {
        self.outstanding.load(SeqCst) as u64
    }
    /// `queue_capacity`, in records.
    pub fn capacity(&self) -> u64 {
        self.capacity as u64
    }
    /// Payload + key bytes of the records counted in [`depth`](Self::depth).
    pub fn depth_bytes(&self) -> u64 {
        self.outstanding_bytes.load(SeqCst)
    }
    /// `queue_max_bytes`.
    pub fn capacity_bytes(&self) -> u64 {
        self.capacity_bytes
    }
    /// Records in the Kafka path (queued or in librdkafka) that a 2xx promised as `p`.
    pub fn outstanding(&self, p: Promise) -> u64 {
        self.by_promise[p as usize].load(SeqCst) as u64
    }
    /// Memory-mode originals lost, by reason (every reason listed).
    pub fn lost(&self) -> Vec<(FailReason, u64)> {
        FailReason::ALL
            .iter()
            .map(|r| (*r, self.lost[r.index()].load(Relaxed)))
            .collect()
    }
    /// Counts `n` memory-mode originals lost for `reason` (purged at shutdown).
    pub(crate) fn on_lost(&self, reason: FailReason, n: u64) {
        self.lost[reason.index()].fetch_add(n, Relaxed);
    }
    /// Whether `slot`'s topic is blocked by a permanent error (spool routes refuse traffic).
    pub fn blocked(&self, slot: usize) -> Option<FailReason> {
        match self.topic(slot).blocked.load(Relaxed) {
            0 => None,
            n => FailReason::ALL.get(usize::from(n) - 1).copied(),
        }
    }
    /// `Err(why)` while a topic's last delivery failed with a permanent error (for
    /// `/readyz`): names the topic, the reason and librdkafka's text.
    pub fn health(&self) -> Result<(), String> {
        let mut bad = Vec::new();
        let all = self
            .topics
            .iter()
            .filter_map(|c| c.get())
            .chain(std::iter::once(&self.overflow));
        for t in all {
            let b = t.blocked.load(Relaxed);
            if b != 0 {
                let reason = FailReason::ALL[usize::from(b) - 1].label();
                let err = t.blocked_error.lock().unwrap_or_else(|e| e.into_inner());
                bad.push(format!(
                    "topic {:?}: permanent Kafka error {reason} ({err})",
                    &*t.name
                ));
            }
        }
        if bad.is_empty() {
            Ok(())
        } else {
            Err(bad.join("; "))
        }
    }
    /// Records accepted by `try_send`, all topics (the sum of the per-topic counters, so the
    /// request path bumps one shared counter fewer).
    pub fn enqueued_total(&self) -> u64 {
        let interned: u64 = self
            .topics
            .iter()
            .filter_map(|c| c.get())
            .map(|t| t.enqueued.load(SeqCst))
            .sum();
        interned + self.overflow.enqueued.load(SeqCst)
    }
    /// `try_send` calls rejected because the queue was full (or shutting down).
    pub fn rejected_full_total(&self) -> u64 {
        self.rejected_full.load(Relaxed)
    }
    /// Records acknowledged by the broker, all topics.
    pub fn delivered_total(&self) -> u64 {
        self.delivered.load(SeqCst)
    }
    /// Records that failed, all topics and reasons.
    pub fn failed_total(&self) -> u64 {
        self.failed.load(SeqCst)
    }

    /// A snapshot of every topic seen so far (table order), with the overflow slot last when
    /// it was used.
    pub fn topics(&self) -> Vec<TopicSnapshot> {
        let mut out: Vec<TopicSnapshot> = self
            .topics
            .iter()
            .filter_map(|s| s.get())
            .map(snapshot)
            .collect();
        if self.overflow.enqueued.load(Relaxed) > 0 {
            out.push(snapshot(&self.overflow));
        }
        out
    }

    /// Calls `f(topic, delivered, failed_by_reason)` for every topic seen so far.
    pub fn for_each_topic(&self, mut f: impl FnMut(&str, u64, &[(FailReason, u64)])) {
        for t in self.topics() {
            f(&t.topic, t.delivered, &t.failed);
        }
    }

    /// The slot for `topic`, interning it on first use. Lock-free: atomic loads once interned.
    pub(crate) fn slot(&self, topic: &Arc<str>) -> usize {
        let h = fnv1a(topic.as_bytes()) as usize;
        for i in 0..MAX_TOPICS {
            let idx = (h + i) % MAX_TOPICS;
            let cell = &self.topics[idx];
            match cell.get() {
                Some(t) if *t.name == **topic => return idx,
                Some(_) => continue,
                None => {
                    let t = cell.get_or_init(|| TopicStats::new(topic.clone()));
                    if *t.name == **topic {
                        return idx;
                    }
                }
            }
        }
        MAX_TOPICS
    }

    fn topic(&self, slot: usize) -> &TopicStats {
        self.topics
            .get(slot)
            .and_then(|c| c.get())
            .unwrap_or(&self.overflow)
    }

    pub(crate) fn on_enqueued(&self, slot: usize) {
        self.topic(slot).enqueued.fetch_add(1, SeqCst);
    }

    pub(crate) fn on_rejected(&self) {
        self.rejected_full.fetch_add(1, Relaxed);
    }

    /// Takes room for one record of `bytes`, or says the path is full.
    pub(crate) fn reserve(&self, bytes: u64, p: Promise) -> bool {
        let cap = self.capacity;
        let mut cur = self.outstanding.load(Relaxed);
        loop {
            if cur >= cap {
                return false;
            }
            match self
                .outstanding
                .compare_exchange_weak(cur, cur + 1, SeqCst, Relaxed)
            {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        // Bytes by a CAS loop too (not add-then-undo, which lets a reservation that is being
        // undone refuse another that fits): exactly `capacity_bytes` fits. One record larger
        // than the whole bound still passes an empty path.
        let mut cur = self.outstanding_bytes.load(SeqCst);
        loop {
            let fits = cur == 0
                || cur
                    .checked_add(bytes)
                    .is_some_and(|t| t <= self.capacity_bytes);
            if !fits {
                self.outstanding.fetch_sub(1, SeqCst);
                return false;
            }
            match self
                .outstanding_bytes
                .compare_exchange_weak(cur, cur + bytes, SeqCst, SeqCst)
            {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        self.by_promise[p as usize].fetch_add(1, SeqCst);
        true
    }

    /// Gives back a reservation that was never queued.
    pub(crate) fn unreserve(&self, bytes: u64, p: Promise) {
        self.release(bytes, p)
    }

    /// Gives back the room of a record that was reserved and is done (delivered or failed).
    fn release(&self, bytes: u64, p: Promise) {
        self.by_promise[p as usize].fetch_sub(1, SeqCst);
        self.outstanding_bytes.fetch_sub(bytes, SeqCst);
        self.outstanding.fetch_sub(1, SeqCst);
    }

    pub(crate) fn on_delivered(&self, slot: usize, latency: Duration, bytes: u64, p: Promise) {
        // Room first, totals last (SeqCst): whoever sees a total sees the room freed.
        self.release(bytes, p);
        let t = self.topic(slot);
        if t.blocked.load(Relaxed) != 0 {
            t.blocked.store(0, Relaxed);
            tracing::info!(topic = %t.name, "Kafka delivers to the topic again");
        }
        t.delivered.fetch_add(1, Relaxed);
        t.latency.observe(latency);
        self.delivered.fetch_add(1, SeqCst);
    }

    pub(crate) fn on_failed(
        &self,
        slot: usize,
        reason: FailReason,
        error: &str,
        bytes: u64,
        p: Promise,
    ) {
        self.release(bytes, p);
        let t = self.topic(slot);
        // A missing quarantine topic must not turn /readyz 503 for the originals' sake.
        if reason.is_permanent() && p != Promise::Quarantine {
            *t.blocked_error.lock().unwrap_or_else(|e| e.into_inner()) = error.to_string();
            t.blocked.store(reason.index() as u8 + 1, Relaxed);
        }
        if p == Promise::Memory {
            self.lost[reason.index()].fetch_add(1, Relaxed);
        }
        t.failed[reason.index()].fetch_add(1, Relaxed);
        self.failed.fetch_add(1, SeqCst);
    }
}

fn snapshot(t: &TopicStats) -> TopicSnapshot {
    TopicSnapshot {
        topic: t.name.clone(),
        enqueued: t.enqueued.load(Relaxed),
        delivered: t.delivered.load(Relaxed),
        failed: FailReason::ALL
            .iter()
            .map(|r| (*r, t.failed[r.index()].load(Relaxed)))
            .collect(),
        latency: t.latency.snapshot(),
    }
}

fn fnv1a(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for x in b {
        h ^= u64::from(*x);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(20));
        h.observe(Duration::from_secs(1000));
        let s = h.snapshot();
        assert_eq!(s.cumulative[0], 1);
        assert_eq!(s.cumulative[4], 2);
        assert_eq!(*s.cumulative.last().unwrap(), 2);
        assert_eq!(s.count, 3);
        assert!((s.sum_seconds - 1000.0205).abs() < 1e-6);
    }

    #[test]
    fn queue_max_bytes_fits_exactly_and_refuses_one_byte_over() {
        let st = KafkaStats::new(100, 3000);
        for _ in 0..3 {
            assert!(st.reserve(1000, Promise::Memory));
        }
        assert_eq!(st.depth_bytes(), 3000);
        assert!(!st.reserve(1, Promise::Memory), "one byte over the bound");
        assert_eq!((st.depth(), st.depth_bytes()), (3, 3000), "nothing taken");
        st.release(1000, Promise::Memory);
        assert!(!st.reserve(1001, Promise::Memory));
        assert!(st.reserve(1000, Promise::Memory), "exactly the bound again");
        // A single record above the whole bound passes an empty path only.
        let empty = KafkaStats::new(100, 3000);
        assert!(empty.reserve(5000, Promise::Ack));
        assert!(!empty.reserve(1, Promise::Ack));
    }

    #[test]
    fn concurrent_reservations_never_pass_either_bound() {
        let st = Arc::new(KafkaStats::new(1000, 10_000));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let st = st.clone();
                std::thread::spawn(move || {
                    let mut won = 0;
                    for _ in 0..50 {
                        if st.reserve(100, Promise::Memory) {
                            won += 1;
                        }
                        assert!(st.depth_bytes() <= 10_000);
                    }
                    won
                })
            })
            .collect();
        let won: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(won, 100);
        assert_eq!((st.depth(), st.depth_bytes()), (100, 10_000));
    }

    #[test]
    fn topics_intern_and_overflow() {
        let st = KafkaStats::new(10, 1 << 20);
        let a: Arc<str> = "a".into();
        let sa = st.slot(&a);
        assert_eq!(sa, st.slot(&"a".into()));
        for i in 0..MAX_TOPICS + 5 {
            let t: Arc<str> = format!("t{i}").into();
            let s = st.slot(&t);
            st.on_enqueued(s);
        }
        st.on_enqueued(sa);
        let snap = st.topics();
        assert_eq!(snap.len(), MAX_TOPICS + 1);
        assert_eq!(snap.last().unwrap().topic.as_ref(), OVERFLOW_TOPIC);
        assert_eq!(
            snap.iter().map(|t| t.enqueued).sum::<u64>(),
            MAX_TOPICS as u64 + 6
        );
        assert_eq!(st.slot(&a), sa);
    }
}
