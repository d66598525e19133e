//! The spool's counters (one set per worker, written by that worker's sync thread and read by
//! the metrics endpoint and `/readyz`; every read is lock-free except the error text).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use crate::metrics::family;

/// One worker's spool counters.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Bytes reserved by requests waiting for the group commit.
    pub(crate) reserved: AtomicU64,
    /// Bytes of records in the worker's live segments.
    pub(crate) stored: AtomicU64,
    /// Records not yet acknowledged by Kafka.
    pub(crate) records: AtomicU64,
    /// CreateTime (ms) of the oldest unacknowledged record, 0 when none.
    pub(crate) oldest_ms: AtomicI64,
    pub(crate) fsyncs: AtomicU64,
    pub(crate) synced_records: AtomicU64,
    pub(crate) replayed: AtomicU64,
    pub(crate) truncated: AtomicU64,
    pub(crate) quarantined: AtomicU64,
    pub(crate) write_errors: AtomicU64,
    /// The last write error, while writes fail.
    pub(crate) error: Mutex<Option<String>>,
}

/// Every worker's spool counters and the shared limits.
#[derive(Debug)]
pub struct SpoolStats {
    pub(crate) workers: Vec<WorkerStats>,
    pub(crate) max_bytes: u64,
    pub(crate) retry_after_s: u32,
    /// Size of the last record refused for `max_bytes` (the spool counts as full while less
    /// than that is free).
    pub(crate) last_refused: AtomicU64,
}

impl SpoolStats {
    pub(crate) fn new(n: usize, max_bytes: u64, retry_after_s: u32) -> SpoolStats {
        SpoolStats {
            workers: (0..n).map(|_| WorkerStats::default()).collect(),
            max_bytes,
            retry_after_s,
            last_refused: AtomicU64::new(0),
        }
    }

    /// Bytes kept or reserved, all workers.
    pub fn used_bytes(&self) -> u64 {
        self.workers
            .iter()
            .map(|w| w.stored.load(Relaxed) + w.reserved.load(Relaxed))
            .sum()
    }

    /// Records not yet acknowledged by Kafka, all workers.
    pub fn unacked_records(&self) -> u64 {
        self.workers.iter().map(|w| w.records.load(Relaxed)).sum()
    }

    /// Records read back from disk and handed to Kafka (replay after a start, and records
    /// that waited in the spool while the Kafka queue was full), all workers.
    pub fn replayed_records(&self) -> u64 {
        self.workers.iter().map(|w| w.replayed.load(Relaxed)).sum()
    }

    /// `Err(why)` while a worker cannot write its spool (for `/readyz`), or when it is full.
    pub fn health(&self) -> Result<(), String> {
        for (i, w) in self.workers.iter().enumerate() {
            if let Some(e) = &*w.error.lock().unwrap_or_else(|e| e.into_inner()) {
                return Err(format!("the spool of worker {i} cannot write: {e}"));
            }
        }
        let used = self.used_bytes();
        let need = self.last_refused.load(Relaxed).max(1);
        if used.saturating_add(need) > self.max_bytes {
            return Err(format!(
                "the spool is full: {used} of {} bytes await Kafka",
                self.max_bytes
            ));
        }
        Ok(())
    }
}

/// Renders the `relay_spool_*` families (without a spool: the families with no series).
pub fn render(out: &mut String, st: Option<&SpoolStats>, now_ms: i64) {
    use std::fmt::Write as _;
    type Family = (
        &'static str,
        &'static str,
        &'static str,
        fn(&WorkerStats) -> u64,
    );
    let per_worker: [Family; 8] = [
        (
            "relay_spool_bytes",
            "gauge",
            "Bytes of originals in the worker's spool segments (acknowledged ones included until their segment is deleted).",
            |w| w.stored.load(Relaxed) + w.reserved.load(Relaxed),
        ),
        (
            "relay_spool_records",
            "gauge",
            "Spooled originals not yet acknowledged by Kafka.",
            |w| w.records.load(Relaxed),
        ),
        (
            "relay_spool_fsyncs_total",
            "counter",
            "Group commits (one fdatasync each).",
            |w| w.fsyncs.load(Relaxed),
        ),
        (
            "relay_spool_fsync_records_total",
            "counter",
            "Records made durable by group commits (divide by relay_spool_fsyncs_total: records per fsync).",
            |w| w.synced_records.load(Relaxed),
        ),
        (
            "relay_spool_replayed_records_total",
            "counter",
            "Records read back from disk and handed to Kafka (after a start, or after waiting for room).",
            |w| w.replayed.load(Relaxed),
        ),
        (
            "relay_spool_truncated_records_total",
            "counter",
            "Torn records cut from segment tails at start (writes a crash interrupted; never acknowledged).",
            |w| w.truncated.load(Relaxed),
        ),
        (
            "relay_spool_quarantined_segments_total",
            "counter",
            "Segments damaged in the middle, copied to <dir>/corrupt/ at start.",
            |w| w.quarantined.load(Relaxed),
        ),
        (
            "relay_spool_write_errors_total",
            "counter",
            "Failed spool writes or fsyncs (the requests got 503 spool_unavailable).",
            |w| w.write_errors.load(Relaxed),
        ),
    ];
    for (name, kind, help, get) in per_worker {
        family(out, name, kind, help);
        if let Some(st) = st {
            for (i, w) in st.workers.iter().enumerate() {
                let _ = writeln!(out, "{name}{{worker=\"{i}\"}} {}", get(w));
            }
        }
    }
    family(
        out,
        "relay_spool_oldest_unacked_age_seconds",
        "gauge",
        "Age (from CreateTime) of the oldest spooled original Kafka has not acknowledged; 0 when none.",
    );
    let oldest = st
        .and_then(|s| {
            s.workers
                .iter()
                .map(|w| w.oldest_ms.load(Relaxed))
                .filter(|t| *t > 0)
                .min()
        })
        .map_or(0.0, |t| (now_ms - t).max(0) as f64 / 1000.0);
    let _ = writeln!(out, "relay_spool_oldest_unacked_age_seconds {oldest}");
    family(
        out,
        "relay_spool_max_bytes",
        "gauge",
        "[spool] max_bytes (0 without a spool).",
    );
    let _ = writeln!(
        out,
        "relay_spool_max_bytes {}",
        st.map_or(0, |s| s.max_bytes)
    );
}
