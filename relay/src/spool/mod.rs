//! The local disk spool for originals of `delivery = "spool"` routes: a request is answered
//! only once its original is durable; relay then owns delivering it to Kafka across Kafka
//! outages and relay crashes (at least once; the `relay-request-id` header lets consumers
//! dedupe).
//!
//! # Shape
//!
//! Thread per core like the rest of relay: worker `i` appends only to its own segments under
//! `<dir>/w<i>/`, through its own sync thread; no lock is shared between workers. A request
//! encodes its record ([`record`]) on the worker, reserves its bytes against `max_bytes`
//! (atomics), and sends it to the sync thread ([`commit`]), which writes every record that
//! arrived within `sync_interval_ms` (or `sync_bytes`) with one write and one `fdatasync`
//! ([`segment`]), answers all of them together, then hands them to the Kafka path. Delivery
//! reports come back to the same thread, which advances each segment's acknowledged mark and
//! deletes fully acknowledged segments ([`store`]). At start every segment is verified
//! ([`recovery`]): a torn tail is cut and reported, damage in the middle is copied to
//! `<dir>/corrupt/` and reported, and every unacknowledged record is replayed.
//!
//! # Why a sync thread and not monoio's fs
//!
//! monoio's file operations go through io_uring on the io_uring driver but need a blocking
//! thread pool on the epoll (legacy) driver, which relay also runs on; and `fdatasync` is
//! the one operation that must never stall a worker's event loop (it takes milliseconds on a
//! real disk). A small per-worker thread gives the same group commit on both drivers, keeps
//! the worker's ring for sockets, and keeps the durable path identical under test and in
//! production. The worker only awaits a oneshot per request.
//!
//! # Why this segment format and not a crate
//!
//! What is needed is narrow: append-only files per worker, one `fdatasync` per group, a
//! per-record CRC32C so a torn tail is told apart from damage in the middle, an acknowledged
//! mark per segment, and deletion of whole segments. Embedded stores (sled, redb, rocksdb)
//! bring their own write-ahead log, compaction and background threads (a second fsync path
//! and write amplification for data read once), and queue crates (yaque, queue-file) either
//! lock one file for every writer or lack per-record checksums and group commit. The format
//! here is ~300 lines, documented in [`record`] and [`segment`], and checked by a model-based
//! property test (crash at any byte of a write).

mod commit;
pub mod config;
mod error;
pub mod record;
pub mod recovery;
pub mod segment;
pub mod stats;
pub mod store;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use futures_channel::oneshot;

use crate::kafka::{KafkaSender, OriginalRecord};

pub use config::SpoolConfig;
pub use error::SpoolError;
pub use stats::SpoolStats;

use commit::{Committer, Msg, Tuning};

/// What opening the spool found (logged at start; the counts are also metrics).
#[derive(Debug, Default, Clone)]
pub struct StartReport {
    /// Segments verified, all workers.
    pub segments: usize,
    /// Unacknowledged records found, to replay.
    pub unacked: u64,
    /// Torn tails cut.
    pub torn: usize,
    /// Segments damaged in the middle (copied to `corrupt/`).
    pub corrupt: usize,
}

/// The running spool: one sync thread per worker.
pub struct Spool {
    senders: Vec<Sender<Msg>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    stats: Arc<SpoolStats>,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("workers", &self.senders.len())
            .finish()
    }
}

impl Spool {
    /// Opens `cfg.dir` for `workers` workers: adopts the segments of worker directories from
    /// a run with more workers, verifies every segment, starts the sync threads, and replays
    /// every unacknowledged record to `kafka`.
    pub fn open(
        cfg: &SpoolConfig,
        workers: usize,
        kafka: KafkaSender,
    ) -> std::io::Result<(Spool, StartReport)> {
        let n = workers.max(1);
        std::fs::create_dir_all(&cfg.dir)?;
        adopt_orphans(&cfg.dir, n)?;
        let stats = Arc::new(SpoolStats::new(
            n,
            cfg.max_bytes,
            kafka.retry_after_s().max(1),
        ));
        let corrupt = cfg.dir.join("corrupt");
        let tuning = Tuning {
            sync_interval: Duration::from_millis(cfg.sync_interval_ms),
            sync_bytes: cfg.sync_bytes.max(1),
            retry: Duration::from_millis(cfg.retry_ms.max(1)),
        };
        let mut report = StartReport::default();
        let mut committers = Vec::with_capacity(n);
        let mut senders = Vec::with_capacity(n);
        for i in 0..n {
            let name = format!("w{i}");
            let (store, r) =
                store::Store::open(&cfg.dir.join(&name), &corrupt, &name, cfg.segment_bytes)?;
            for (seg, bytes) in &r.torn {
                tracing::warn!(worker = i, segment = seg, bytes, "spool: torn tail cut (a write a crash interrupted; never acknowledged to a client)");
            }
            for (seg, at, error, copy) in &r.corrupt {
                tracing::error!(worker = i, segment = seg, offset = at, error = %error, copy = %copy.display(), "spool: segment damaged in the middle: copied to corrupt/, the records before the damage are delivered, the rest cannot be read");
            }
            stats.set_stored(i, store.bytes());
            let w = &stats.workers[i];
            w.torn_tails.store(r.torn.len() as u64, Relaxed);
            w.truncated_bytes.store(r.truncated_bytes, Relaxed);
            w.quarantined.store(r.corrupt.len() as u64, Relaxed);
            report.segments += r.segments;
            report.unacked += r.unacked;
            report.torn += r.torn.len();
            report.corrupt += r.corrupt.len();
            let (tx, rx) = mpsc::channel();
            senders.push(tx.clone());
            committers.push(Committer::new(
                i,
                store,
                (tx, rx),
                kafka.clone(),
                stats.clone(),
                tuning,
            ));
        }
        let mut threads = Vec::with_capacity(n);
        for c in committers {
            let h = std::thread::Builder::new()
                .name(format!("relay-spool-{}", c.me))
                .spawn(move || c.run())?;
            threads.push(h);
        }
        tracing::info!(
            dir = %cfg.dir.display(),
            workers = n,
            segments = report.segments,
            replaying = report.unacked,
            torn = report.torn,
            corrupt = report.corrupt,
            "spool opened"
        );
        Ok((
            Spool {
                senders,
                threads: Mutex::new(threads),
                stats,
            },
            report,
        ))
    }

    /// Worker `i`'s handle.
    pub fn appender(&self, i: usize) -> SpoolAppender {
        let i = i % self.senders.len();
        SpoolAppender {
            tx: self.senders[i].clone(),
            stats: self.stats.clone(),
            me: i,
        }
    }

    /// The counters.
    pub fn stats(&self) -> Arc<SpoolStats> {
        self.stats.clone()
    }

    /// Commits what is waiting and stops the sync threads. Nothing needs flushing: records
    /// not yet acknowledged by Kafka stay in the segments and are replayed at the next start.
    pub fn shutdown(&self) {
        for s in &self.senders {
            let _ = s.send(Msg::Stop);
        }
        let threads: Vec<_> = self
            .threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        for h in threads {
            let _ = h.join();
        }
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A worker's handle on its own spool segments.
#[derive(Clone)]
pub struct SpoolAppender {
    tx: Sender<Msg>,
    stats: Arc<SpoolStats>,
    me: usize,
}

impl std::fmt::Debug for SpoolAppender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpoolAppender")
            .field("worker", &self.me)
            .finish()
    }
}

impl SpoolAppender {
    /// Makes `rec` durable in this worker's segment (group commit); resolves once it is.
    /// Refuses at once with [`SpoolError::Full`] when `max_bytes` would be exceeded.
    pub async fn append(&self, rec: OriginalRecord) -> Result<(), SpoolError> {
        let mut frame = Vec::with_capacity(record::encoded_len(&rec));
        record::encode(&rec, &mut frame);
        let len = frame.len() as u64;
        if let Err(used) = self.stats.try_reserve(self.me, len) {
            self.stats.last_refused.store(len, Relaxed);
            return Err(SpoolError::Full {
                used,
                max: self.stats.max_bytes,
                retry_after_s: self.stats.retry_after_s,
            });
        }
        let (reply, rx) = oneshot::channel();
        let rec = Box::new(rec);
        if self.tx.send(Msg::Append { rec, frame, reply }).is_err() {
            self.stats.release(self.me, len);
            return Err(SpoolError::Unavailable("the spool is stopped".into()));
        }
        rx.await
            .unwrap_or_else(|_| Err(SpoolError::Unavailable("the spool thread ended".into())))
    }

    /// `Retry-After` seconds for refusals.
    pub fn retry_after_s(&self) -> u32 {
        self.stats.retry_after_s
    }
}

/// Moves the segments of `w<j>` directories with `j >= n` (a previous run with more workers)
/// into `w<j % n>`, after that directory's own segments, so every record is owned by a
/// running sync thread.
fn adopt_orphans(dir: &Path, n: usize) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().to_string();
        let Some(j) = name.strip_prefix('w').and_then(|s| s.parse::<usize>().ok()) else {
            continue;
        };
        if j < n || !e.file_type()?.is_dir() {
            continue;
        }
        let from = e.path();
        let to = dir.join(format!("w{}", j % n));
        std::fs::create_dir_all(&to)?;
        let first = max_seq(&to)? + 1;
        let mut seqs: Vec<u64> = std::fs::read_dir(&from)?
            .filter_map(|e| e.ok())
            .filter_map(|e| segment::parse_seg_name(&e.file_name().to_string_lossy()))
            .collect();
        seqs.sort_unstable();
        for (next, seq) in (first..).zip(seqs) {
            // Segment first: a crash in between leaves the mark behind (replay from the start
            // of the segment: duplicates, never a skip).
            std::fs::rename(segment::seg_path(&from, seq), segment::seg_path(&to, next))?;
            let ack = segment::ack_path(&from, seq);
            if ack.exists() {
                std::fs::rename(&ack, segment::ack_path(&to, next))?;
            }
        }
        segment::sync_dir(&to)?;
        let _ = std::fs::remove_dir(&from);
        tracing::info!(from = %from.display(), to = %to.display(), "spool: adopted the segments of a worker that no longer runs");
    }
    segment::sync_dir(dir)
}

fn max_seq(dir: &Path) -> std::io::Result<u64> {
    Ok(std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| segment::parse_seg_name(&e.file_name().to_string_lossy()))
        .max()
        .unwrap_or(0))
}
