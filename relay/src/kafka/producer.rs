//! The producer threads: each drains the shared queue into its own librdkafka `BaseProducer`,
//! serves delivery reports, and sleeps (park with timeout) when idle instead of spinning; a
//! sender wakes a thread napping between polls only for an `ack` record or a batch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering::SeqCst};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use rdkafka::error::KafkaError as RdError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Message};

use super::stats::{FailReason, KafkaStats, Promise};
use super::{Delivery, Done, OriginalRecord};

/// How long an idle producer thread with nothing in flight sleeps before looking again (a
/// `try_send` wakes it at once).
const IDLE_PARK: Duration = Duration::from_millis(100);
/// How long a producer thread waits for delivery reports when records are in flight and the
/// queue is empty: from the first value, doubling while nothing new arrives, up to the
/// second (new records wait at most that long for librdkafka; the thread never spins).
const INFLIGHT_POLL: (Duration, Duration) = (Duration::from_millis(1), Duration::from_millis(8));
/// Most records moved from the queue to librdkafka before serving delivery reports.
const BATCH: usize = 1024;

/// A record in relay's queue.
pub(crate) struct Queued {
    pub rec: OriginalRecord,
    pub enqueued_at: Instant,
    pub slot: usize,
    /// Bytes counted against `queue_max_bytes`.
    pub bytes: u64,
    /// Who learns the outcome.
    pub done: Done,
}

/// What a delivery report carries back.
pub(crate) struct Inflight {
    slot: usize,
    enqueued_at: Instant,
    bytes: u64,
    done: Done,
}

/// Rate-limits WARN lines to one per second per key, counting what was suppressed.
#[derive(Default)]
pub(crate) struct RateLimitedLog {
    last: Mutex<HashMap<String, (Instant, u64)>>,
}

impl RateLimitedLog {
    /// Returns `Some(suppressed since the last line)` when a line may be written now.
    fn allow(&self, key: &str) -> Option<u64> {
        self.allow_at(key, Instant::now())
    }

    fn allow_at(&self, key: &str, now: Instant) -> Option<u64> {
        let mut m = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match m.get_mut(key) {
            Some((t, n)) if now.saturating_duration_since(*t) < Duration::from_secs(1) => {
                *n += 1;
                None
            }
            Some((t, n)) => {
                let s = *n;
                *t = now;
                *n = 0;
                Some(s)
            }
            None => {
                m.insert(key.to_string(), (now, 0));
                Some(0)
            }
        }
    }
}

/// Records that wake a producer thread napping between delivery-report polls: fewer wait
/// for its next poll (at most `INFLIGHT_POLL.1`), so that at load one wake-up moves a batch
/// instead of one record (each wake-up is a futex call on the worker and a context switch).
const WAKE_BATCH: usize = 64;

/// What a producer thread is doing, as the senders see it.
const AWAKE: u8 = 0;
/// Parked with nothing in flight: the next record wakes it.
const IDLE: u8 = 1;
/// Parked between delivery-report polls: wakes by itself within `INFLIGHT_POLL.1`; a sender
/// wakes it only for an `ack` record (the app is waiting) or a full batch.
const NAPPING: u8 = 2;

/// A producer thread's wake-up handle: set by the thread itself when it starts.
#[derive(Default)]
pub(crate) struct Sleeper {
    thread: OnceLock<Thread>,
    /// [`AWAKE`], [`IDLE`] or [`NAPPING`] (set before the thread parks).
    state: AtomicU8,
}

impl Sleeper {
    fn unpark(&self) {
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }
}

/// State shared by the senders, the producer threads and the owner.
pub(crate) struct Shared {
    pub queue: ArrayQueue<Queued>,
    pub stats: Arc<KafkaStats>,
    pub closing: AtomicBool,
    /// An `ack` record was queued since a producer thread last looked: do not nap.
    pub urgent: AtomicBool,
    pub retry_after_s: u32,
    /// `[kafka] delivery`: the mode of routes without their own.
    pub delivery: Delivery,
    /// The producer's `message.max.bytes`.
    pub message_max_bytes: usize,
    /// One entry per producer thread.
    pub sleepers: Vec<Sleeper>,
    pub log: RateLimitedLog,
}

impl Shared {
    /// After a push: wakes one idle producer thread, or, when `urgent` (an `ack` record) or a
    /// batch is waiting, one napping between polls. Otherwise the record waits for the next
    /// poll of a napping thread (at most `INFLIGHT_POLL.1`).
    pub(crate) fn wake_for(&self, urgent: bool) {
        if urgent {
            // Seen by a thread about to nap (it re-checks after announcing NAPPING).
            self.urgent.store(true, SeqCst);
        }
        let states = self.sleepers.iter().map(|s| s.state.load(SeqCst));
        if let Some(i) = whom_to_wake(states, urgent, || self.queue.len()) {
            self.sleepers[i].unpark();
        }
    }

    pub(crate) fn wake_all(&self) {
        for s in &self.sleepers {
            s.unpark();
        }
    }
}

/// The producer thread a push wakes, given each thread's state: the first idle one; else,
/// for an urgent record or once `queued()` reaches [`WAKE_BATCH`], the first napping one.
fn whom_to_wake(
    states: impl Iterator<Item = u8>,
    urgent: bool,
    queued: impl FnOnce() -> usize,
) -> Option<usize> {
    let mut napping = None;
    for (i, st) in states.enumerate() {
        match st {
            IDLE => return Some(i),
            NAPPING => napping = napping.or(Some(i)),
            _ => {}
        }
    }
    napping.filter(|_| urgent || queued() >= WAKE_BATCH)
}

/// librdkafka callbacks: delivery reports into [`KafkaStats`], logs into `tracing`.
pub(crate) struct RelayContext {
    pub shared: Arc<Shared>,
}

impl ClientContext for RelayContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, msg: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error => tracing::error!(fac, msg, "librdkafka"),
            L::Warning => tracing::warn!(fac, msg, "librdkafka"),
            L::Notice | L::Info => tracing::info!(fac, msg, "librdkafka"),
            L::Debug => tracing::debug!(fac, msg, "librdkafka"),
        }
    }

    fn error(&self, error: RdError, reason: &str) {
        let key = format!("global:{:?}", error.rdkafka_error_code());
        if let Some(suppressed) = self.shared.log.allow(&key) {
            tracing::warn!(%error, reason, suppressed, "kafka client error");
        }
    }
}

impl ProducerContext for RelayContext {
    type DeliveryOpaque = Box<Inflight>;

    fn delivery(&self, result: &DeliveryResult<'_>, inflight: Box<Inflight>) {
        let stats = &self.shared.stats;
        let Inflight {
            slot,
            enqueued_at,
            bytes,
            done,
        } = *inflight;
        let promise = done.promise();
        match result {
            Ok(_) => {
                stats.on_delivered(slot, enqueued_at.elapsed(), bytes, promise);
                done.finish(Ok(()));
            }
            Err((e, msg)) => {
                let code = e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail);
                let reason = FailReason::from_code(code);
                let text = e.to_string();
                stats.on_failed(slot, reason, &text, bytes, promise);
                self.log_failure(msg.topic(), code, reason, &text);
                done.finish(Err(reason));
            }
        }
    }
}

impl RelayContext {
    fn log_failure(&self, topic: &str, code: RDKafkaErrorCode, reason: FailReason, error: &str) {
        let key = format!("{code:?}");
        if let Some(suppressed) = self.shared.log.allow(&key) {
            if reason.is_permanent() {
                tracing::error!(
                    topic,
                    reason = reason.label(),
                    error,
                    suppressed,
                    "kafka delivery failed permanently: spool routes of this topic refuse \
                     traffic and /readyz fails until a delivery succeeds"
                );
            } else {
                tracing::warn!(
                    topic,
                    reason = reason.label(),
                    error,
                    suppressed,
                    "kafka delivery failed"
                );
            }
        }
    }
}

/// The producer type every thread owns.
pub(crate) type RelayProducer = BaseProducer<RelayContext>;

/// One producer thread's loop: runs until `closing` is set and the queue is drained (or the
/// deadline passed), flushes until `deadline`, and hands its producer back for the report.
pub(crate) fn run(
    me: usize,
    producer: RelayProducer,
    shared: Arc<Shared>,
    deadline: Arc<Mutex<Option<Instant>>>,
) -> RelayProducer {
    let sleeper = &shared.sleepers[me];
    let _ = sleeper.thread.set(std::thread::current());
    let mut held: Option<Queued> = None;
    let mut inflight_poll = INFLIGHT_POLL.0;
    loop {
        let closing = shared.closing.load(SeqCst);
        let dl = if closing {
            *deadline.lock().unwrap_or_else(|e| e.into_inner())
        } else {
            None
        };
        let past_deadline = dl.is_some_and(|d| Instant::now() >= d);

        // Move records to librdkafka (any urgent one among them).
        shared.urgent.store(false, SeqCst);
        let mut moved = 0;
        while moved < BATCH && !past_deadline {
            let q = match held.take().or_else(|| shared.queue.pop()) {
                Some(q) => q,
                None => break,
            };
            match send(&producer, q) {
                None => moved += 1,
                Some(q) => {
                    // librdkafka's queue is full: serve delivery reports, then retry this one.
                    held = Some(q);
                    producer.poll(Duration::ZERO);
                    std::thread::sleep(Duration::from_millis(2));
                    break;
                }
            }
        }
        producer.poll(Duration::ZERO);

        if closing && (past_deadline || (held.is_none() && shared.queue.is_empty())) {
            if let Some(q) = held.take() {
                // Past the deadline: never sent; put it back so the report counts it pending.
                let _ = shared.queue.push(q);
            }
            if let Some(d) = dl {
                // Wait for the records whose outcome matters now (memory, ack, quarantine); spooled ones
                // stay in the spool and need no flush to stop safely.
                let st = &shared.stats;
                while st.outstanding(Promise::Memory)
                    + st.outstanding(Promise::Ack)
                    + st.outstanding(Promise::Quarantine)
                    > 0
                    && Instant::now() < d
                {
                    producer.poll(Duration::from_millis(5));
                }
                producer.poll(Duration::ZERO);
            }
            return producer;
        }
        if moved > 0 || held.is_some() {
            inflight_poll = INFLIGHT_POLL.0;
            continue;
        }
        if producer.in_flight_count() > 0 {
            // Delivery reports are pending: serve them every `inflight_poll`, sleeping in between
            // (a `try_send` wakes the thread at once). Not `poll(inflight_poll)`: rdkafka's poll
            // loops until its deadline and, once less than a millisecond remains, spins on a
            // zero-timeout poll and the clock (seen as most of the thread's CPU in a profile).
            sleeper.state.store(NAPPING, SeqCst);
            if shared.queue.len() < WAKE_BATCH
                && !shared.urgent.load(SeqCst)
                && !shared.closing.load(SeqCst)
            {
                std::thread::park_timeout(inflight_poll);
            }
            sleeper.state.store(AWAKE, SeqCst);
            // A request waits on an `ack` record's report: keep the shortest nap so its
            // answer is not held up to `INFLIGHT_POLL.1`; otherwise back off.
            inflight_poll = if shared.stats.outstanding(Promise::Ack) > 0 {
                INFLIGHT_POLL.0
            } else {
                (inflight_poll * 2).min(INFLIGHT_POLL.1)
            };
            continue;
        }
        inflight_poll = INFLIGHT_POLL.0;
        // Idle: announce, re-check (a sender may have pushed before seeing the flag), park.
        sleeper.state.store(IDLE, SeqCst);
        if shared.queue.is_empty() && !shared.closing.load(SeqCst) {
            std::thread::park_timeout(IDLE_PARK);
        }
        sleeper.state.store(AWAKE, SeqCst);
    }
}

/// Hands one record to librdkafka; gives it back (`Some`) when librdkafka's queue is full. Any
/// other refusal is a failed delivery.
fn send(producer: &RelayProducer, q: Queued) -> Option<Queued> {
    let Queued {
        rec,
        enqueued_at,
        slot,
        bytes,
        done,
    } = q;
    let mut headers = OwnedHeaders::new_with_capacity(8)
        .insert(Header {
            key: "relay-route",
            value: Some(rec.route.as_bytes()),
        })
        .insert(Header {
            key: "relay-request-id",
            value: Some(rec.request_id.as_bytes()),
        });
    for (key, value) in rec.headers() {
        headers = headers.insert(Header {
            key,
            value: Some(value.as_bytes()),
        });
    }
    let promise = done.promise();
    let mut record = BaseRecord::with_opaque_to(
        &rec.topic,
        Box::new(Inflight {
            slot,
            enqueued_at,
            bytes,
            done,
        }),
    )
    .payload(&rec.payload[..])
    .timestamp(rec.timestamp_ms)
    .headers(headers);
    if let Some(k) = &rec.key {
        record = record.key(&k[..]);
    }
    let sent = producer.send(record);
    match sent {
        Ok(()) => None,
        Err((e, record)) => {
            let inflight = record.delivery_opaque;
            let code = e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail);
            if code == RDKafkaErrorCode::QueueFull {
                return Some(Queued {
                    rec,
                    enqueued_at,
                    slot,
                    bytes,
                    done: inflight.done,
                });
            }
            let reason = FailReason::from_code(code);
            let ctx = producer.context();
            let text = e.to_string();
            ctx.shared
                .stats
                .on_failed(slot, reason, &text, bytes, promise);
            ctx.log_failure(&rec.topic, code, reason, &text);
            inflight.done.finish(Err(reason));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_push_wakes_an_idle_thread_and_a_napping_one_only_when_it_matters() {
        let wake = |states: &[u8], urgent: bool, queued: usize| {
            whom_to_wake(states.iter().copied(), urgent, || queued)
        };
        // An idle thread is always woken, before any napping one.
        assert_eq!(wake(&[NAPPING, IDLE], false, 1), Some(1));
        // A napping thread polls by itself within INFLIGHT_POLL.1: a memory/spool record waits.
        assert_eq!(wake(&[NAPPING, AWAKE], false, 1), None);
        assert_eq!(wake(&[NAPPING], false, WAKE_BATCH - 1), None);
        // ... unless a batch is waiting, or the record is an `ack` one (the app waits on it).
        assert_eq!(wake(&[AWAKE, NAPPING], false, WAKE_BATCH), Some(1));
        assert_eq!(wake(&[AWAKE, NAPPING], true, 1), Some(1));
        // Every thread awake: nobody to wake.
        assert_eq!(wake(&[AWAKE, AWAKE], true, 1000), None);
    }

    #[test]
    fn failure_logs_are_limited_to_one_per_second_per_reason() {
        let log = RateLimitedLog::default();
        let t0 = Instant::now();
        assert_eq!(log.allow_at("MessageTimedOut", t0), Some(0));
        assert_eq!(
            log.allow_at("MessageTimedOut", t0 + Duration::from_millis(10)),
            None
        );
        assert_eq!(
            log.allow_at("MessageTimedOut", t0 + Duration::from_millis(999)),
            None
        );
        assert_eq!(
            log.allow_at("MsgSizeTooLarge", t0 + Duration::from_millis(20)),
            Some(0)
        );
        // The next line after a second says how many were suppressed.
        assert_eq!(
            log.allow_at("MessageTimedOut", t0 + Duration::from_millis(1000)),
            Some(2)
        );
        assert_eq!(
            log.allow_at("MessageTimedOut", t0 + Duration::from_millis(1500)),
            None
        );
    }
}
