//! Group commit and delivery: one sync thread per worker owns that worker's [`Store`].
//!
//! It collects the appends that arrive within `sync_interval_ms` of the first one waiting (or
//! until `sync_bytes`), writes them with one write and one `fdatasync`, then answers every
//! waiting request together. It then hands the records to the Kafka path; when the Kafka queue
//! is full they stay on disk only, and the thread reads them back in spool order (a cursor)
//! as room frees. Delivery reports come back as messages: an acknowledgement advances the
//! segment's mark, a failure schedules a retry from disk after `retry_ms`.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_channel::oneshot;

use crate::kafka::{Done, FailReason, KafkaSender, OriginalRecord};

use super::stats::SpoolStats;
use super::store::{Pos, Store};
use super::SpoolError;

/// What a sync thread receives.
pub(crate) enum Msg {
    /// A worker's request: make `frame` (the encoded `rec`) durable, then answer `reply`.
    Append {
        rec: Box<OriginalRecord>,
        frame: Vec<u8>,
        reply: oneshot::Sender<Result<(), SpoolError>>,
    },
    /// A producer thread's delivery report for the record at `pos`.
    Delivered {
        pos: Pos,
        result: Result<(), FailReason>,
    },
    /// Commit what is waiting and end.
    Stop,
}

/// Tuning of one sync thread.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tuning {
    pub sync_interval: Duration,
    pub sync_bytes: u64,
    pub retry: Duration,
}

/// How often a thread with records waiting for room in the Kafka queue looks again.
const BACKLOG_TICK: Duration = Duration::from_millis(5);
/// How often an idle thread refreshes its gauges.
const IDLE_TICK: Duration = Duration::from_millis(500);

struct Waiting {
    rec: OriginalRecord,
    frame: Vec<u8>,
    reply: oneshot::Sender<Result<(), SpoolError>>,
}

pub(crate) struct Committer {
    pub me: usize,
    pub store: Store,
    pub rx: Receiver<Msg>,
    /// For delivery reports (cloned into every record handed to Kafka).
    pub tx: Sender<Msg>,
    pub kafka: KafkaSender,
    pub stats: Arc<SpoolStats>,
    pub tuning: Tuning,
    /// The first record not yet handed to Kafka, in spool order; `None`: all were.
    pub cursor: Option<Pos>,
    retry: VecDeque<(Instant, Pos)>,
    batch: Vec<Waiting>,
    batch_bytes: u64,
    batch_deadline: Instant,
}

impl Committer {
    pub(crate) fn new(
        me: usize,
        store: Store,
        (tx, rx): (Sender<Msg>, Receiver<Msg>),
        kafka: KafkaSender,
        stats: Arc<SpoolStats>,
        tuning: Tuning,
    ) -> Committer {
        let cursor = store.first_unacked();
        Committer {
            me,
            store,
            rx,
            tx,
            kafka,
            stats,
            tuning,
            cursor,
            retry: VecDeque::new(),
            batch: Vec::new(),
            batch_bytes: 0,
            batch_deadline: Instant::now(),
        }
    }

    /// The thread's loop; returns when told to stop (or every sender is gone).
    pub(crate) fn run(mut self) {
        self.publish_gauges();
        loop {
            let now = Instant::now();
            let timeout = if !self.batch.is_empty() {
                self.batch_deadline.saturating_duration_since(now)
            } else if self.cursor.is_some() {
                BACKLOG_TICK
            } else if let Some((due, _)) = self.retry.front() {
                due.saturating_duration_since(now).min(IDLE_TICK)
            } else {
                IDLE_TICK
            };
            let mut stop = false;
            match self.rx.recv_timeout(timeout) {
                Ok(m) => stop = self.handle(m),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => stop = true,
            }
            // Take whatever else is already waiting (no extra wake-ups under load).
            while !stop {
                match self.rx.try_recv() {
                    Ok(m) => stop = self.handle(m),
                    Err(_) => break,
                }
            }
            if !self.batch.is_empty()
                && (stop
                    || Instant::now() >= self.batch_deadline
                    || self.batch_bytes >= self.tuning.sync_bytes)
            {
                self.commit();
            }
            // Once per batch of messages: the acknowledgements since the last loop move each
            // segment's mark file once, not once per record.
            if let Err(e) = self.store.flush_marks() {
                tracing::warn!(worker = self.me, error = %e, "cannot persist the spool acknowledgement mark");
            }
            if stop {
                self.publish_gauges();
                return;
            }
            self.drain_backlog();
            self.run_retries();
            self.publish_gauges();
        }
    }

    fn handle(&mut self, m: Msg) -> bool {
        match m {
            Msg::Append { rec, frame, reply } => {
                if self.batch.is_empty() {
                    self.batch_deadline = Instant::now() + self.tuning.sync_interval;
                }
                self.batch_bytes += frame.len() as u64;
                self.batch.push(Waiting {
                    rec: *rec,
                    frame,
                    reply,
                });
                false
            }
            Msg::Delivered { pos, result } => {
                match result {
                    Ok(()) => {
                        if let Err(e) = self.store.ack(pos) {
                            // The mark is an optimisation (fewer duplicates on replay); the
                            // record is delivered either way.
                            tracing::warn!(worker = self.me, error = %e, "cannot persist the spool acknowledgement mark");
                        }
                    }
                    Err(_) => {
                        self.retry
                            .push_back((Instant::now() + self.tuning.retry, pos));
                    }
                }
                false
            }
            Msg::Stop => true,
        }
    }

    fn commit(&mut self) {
        let batch = std::mem::take(&mut self.batch);
        let reserved = std::mem::take(&mut self.batch_bytes);
        let mut buf = Vec::with_capacity(reserved as usize);
        let mut meta = Vec::with_capacity(batch.len());
        for w in &batch {
            buf.extend_from_slice(&w.frame);
            meta.push((w.frame.len() as u32, w.rec.timestamp_ms));
        }
        let st = &self.stats.workers[self.me];
        let res = self.store.append(&buf, &meta);
        // Stored first, reservation released after: the shared counter never dips below
        // what is really kept, so no other worker can take room that is in use.
        self.stats.set_stored(self.me, self.store.bytes());
        self.stats.release(self.me, reserved);
        match res {
            Ok(positions) => {
                st.fsyncs.fetch_add(1, Relaxed);
                st.synced_records.fetch_add(batch.len() as u64, Relaxed);
                let had_error = st
                    .error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
                    .is_some();
                if had_error {
                    tracing::info!(worker = self.me, "the spool writes again");
                }
                // Durable: answer every waiting request, then hand the records to Kafka.
                let mut recs = Vec::with_capacity(batch.len());
                for w in batch {
                    let _ = w.reply.send(Ok(()));
                    recs.push(w.rec);
                }
                for (rec, pos) in recs.into_iter().zip(positions) {
                    if self.cursor.is_none() && !self.dispatch(rec, pos) {
                        self.cursor = Some(pos);
                    }
                }
            }
            Err(e) => {
                st.write_errors.fetch_add(1, Relaxed);
                let text = format!("{e} (dir {})", self.store.dir().display());
                let first = st
                    .error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .replace(text.clone())
                    .is_none();
                if first {
                    tracing::error!(worker = self.me, error = %text, "spool write failed: spool requests get 503 spool_unavailable and /readyz fails until a write succeeds");
                }
                for w in batch {
                    let _ = w.reply.send(Err(SpoolError::Unavailable(text.clone())));
                }
            }
        }
    }

    /// Hands one durable record to Kafka; `false` when the Kafka queue has no room.
    fn dispatch(&self, rec: OriginalRecord, pos: Pos) -> bool {
        let tx = self.tx.clone();
        let done = Done::Spooled(Box::new(move |result| {
            let _ = tx.send(Msg::Delivered { pos, result });
        }));
        self.kafka.try_send_with(rec, done).is_ok()
    }

    /// Reads records that waited in the spool only back from disk, in order, while the Kafka
    /// queue has room.
    fn drain_backlog(&mut self) {
        while let Some(pos) = self.cursor {
            if !self.kafka.has_room() {
                return;
            }
            let rec = match self.store.read(pos) {
                Ok(r) => r,
                Err(e) => {
                    // Verified at start and written by this thread: unreadable now means the
                    // disk failed under us. Keep the cursor; readiness reports it.
                    let st = &self.stats.workers[self.me];
                    *st.error.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(format!("cannot read back a spooled record: {e}"));
                    return;
                }
            };
            if !self.dispatch(rec, pos) {
                return;
            }
            self.stats.workers[self.me].replayed.fetch_add(1, Relaxed);
            self.cursor = self.store.next_unacked_after(pos);
        }
    }

    /// Re-sends records whose delivery failed, once their retry time came.
    fn run_retries(&mut self) {
        let now = Instant::now();
        while let Some(&(due, pos)) = self.retry.front() {
            if due > now || !self.kafka.has_room() {
                return;
            }
            self.retry.pop_front();
            match self.store.read(pos) {
                Ok(rec) => {
                    if !self.dispatch(rec, pos) {
                        // No room: try again shortly (keep the order of the rest).
                        self.retry.push_front((now + BACKLOG_TICK, pos));
                        return;
                    }
                    self.stats.workers[self.me].replayed.fetch_add(1, Relaxed);
                }
                Err(e) => {
                    tracing::error!(worker = self.me, error = %e, seg = pos.seg, off = pos.off, "cannot read back a spooled record to retry it");
                }
            }
        }
    }

    fn publish_gauges(&self) {
        self.stats.set_stored(self.me, self.store.bytes());
        let st = &self.stats.workers[self.me];
        st.records.store(self.store.unacked(), Relaxed);
        st.oldest_ms
            .store(self.store.oldest_unacked_ms().unwrap_or(0), Relaxed);
    }
}
