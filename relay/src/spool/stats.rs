//! The spool's counters (one set per worker, written by that worker's sync thread and read by
//! the metrics endpoint and `/readyz`; every read is lock-free except the error text).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
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
    /// Segments whose torn tail was cut at start (one write a crash interrupted each).
    pub(crate) torn_tails: AtomicU64,
    /// Bytes cut from live segments at start (torn tails, and what followed damage).
    pub(crate) truncated_bytes: AtomicU64,
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
    /// Bytes kept or reserved, all workers: the one counter `max_bytes` is checked against.
    /// Workers reserve with a compare-and-swap loop ([`try_reserve`](Self::try_reserve)), so
    /// two workers can never both take the last free bytes; the sync threads move their
    /// stored bytes into it ([`set_stored`](Self::set_stored)).
    used: AtomicU64,
}

impl SpoolStats {
    pub(crate) fn new(n: usize, max_bytes: u64, retry_after_s: u32) -> SpoolStats {
        SpoolStats {
            workers: (0..n).map(|_| WorkerStats::default()).collect(),
            max_bytes,
            retry_after_s,
            last_refused: AtomicU64::new(0),
            used: AtomicU64::new(0),
        }
    }

    /// Bytes kept or reserved, all workers.
    pub fn used_bytes(&self) -> u64 {
        self.used.load(SeqCst)
    }

    /// Takes `len` bytes of room for worker `w`'s next record, or refuses with the bytes in
    /// use when `used + len` would pass `max_bytes` (exactly `max_bytes` fits). A CAS loop on
    /// the shared counter, not load-then-add: concurrent reservers never overshoot together.
    pub(crate) fn try_reserve(&self, w: usize, len: u64) -> Result<(), u64> {
        let mut cur = self.used.load(SeqCst);
        loop {
            match cur.checked_add(len) {
                Some(t) if t <= self.max_bytes => {}
                _ => return Err(cur),
            }
            match self
                .used
                .compare_exchange_weak(cur, cur + len, SeqCst, SeqCst)
            {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        self.workers[w].reserved.fetch_add(len, Relaxed);
        Ok(())
    }

    /// Gives back `len` bytes reserved by worker `w` (written, or never written). Call after
    /// [`set_stored`](Self::set_stored) when the bytes were written, so the counter never
    /// dips below what is really kept.
    pub(crate) fn release(&self, w: usize, len: u64) {
        self.workers[w].reserved.fetch_sub(len, Relaxed);
        self.used.fetch_sub(len, SeqCst);
    }

    /// Sets the bytes worker `w`'s segments keep (only its sync thread calls this) and moves
    /// the difference into the shared counter.
    pub(crate) fn set_stored(&self, w: usize, bytes: u64) {
        let old = self.workers[w].stored.swap(bytes, Relaxed);
        if bytes >= old {
            self.used.fetch_add(bytes - old, SeqCst);
        } else {
            self.used.fetch_sub(old - bytes, SeqCst);
        }
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
    let per_worker: [Family; 9] = [
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
        // Segments and bytes, not records: a torn tail is one group-commit write a crash cut
        // short, and its lost records cannot be counted from what reached the disk (the cut
        // part may be zeros that were never framed). Nothing cut was acknowledged to a client.
        (
            "relay_spool_torn_tails_total",
            "counter",
            "Segments whose torn tail (a write a crash interrupted; never acknowledged) was cut at start.",
            |w| w.torn_tails.load(Relaxed),
        ),
        (
            "relay_spool_truncated_bytes_total",
            "counter",
            "Bytes cut from live segments at start: torn tails, and everything after damage in the middle (copied to <dir>/corrupt/ first).",
            |w| w.truncated_bytes.load(Relaxed),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    #[test]
    fn max_bytes_fits_exactly_and_refuses_one_byte_over() {
        let st = SpoolStats::new(2, 1000, 1);
        // Under the limit.
        assert_eq!(st.try_reserve(0, 600), Ok(()));
        // At the limit: exactly max_bytes fits.
        assert_eq!(st.try_reserve(1, 400), Ok(()));
        assert_eq!(st.used_bytes(), 1000);
        // Over the limit: refused with what is in use, nothing taken.
        assert_eq!(st.try_reserve(0, 1), Err(1000));
        assert_eq!(st.used_bytes(), 1000);
        // A record larger than the whole spool never fits.
        let empty = SpoolStats::new(1, 1000, 1);
        assert_eq!(empty.try_reserve(0, 1001), Err(0));
        assert_eq!(empty.try_reserve(0, u64::MAX), Err(0));
        // Written: the reservation becomes stored bytes; the total does not move.
        st.set_stored(0, 600);
        st.release(0, 600);
        assert_eq!(st.used_bytes(), 1000);
        assert_eq!(st.try_reserve(1, 1), Err(1000));
        // Acknowledged segments deleted: room again.
        st.set_stored(0, 100);
        assert_eq!(st.used_bytes(), 500);
        assert_eq!(st.try_reserve(1, 500), Ok(()));
        assert_eq!(st.try_reserve(1, 1), Err(1000));
        assert!(st.health().is_err(), "full spool: /readyz fails");
    }

    #[test]
    fn concurrent_reservations_never_pass_max_bytes() {
        // 8 threads race for 100-byte slots of a 10_000-byte spool, 10 times over: exactly
        // 100 succeed each round, and the counter never passes the limit.
        for _ in 0..10 {
            let st = Arc::new(SpoolStats::new(8, 10_000, 1));
            let won = Arc::new(AtomicUsize::new(0));
            let start = Arc::new(std::sync::Barrier::new(8));
            let threads: Vec<_> = (0..8)
                .map(|w| {
                    let (st, won, start) = (st.clone(), won.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        for _ in 0..50 {
                            if st.try_reserve(w, 100).is_ok() {
                                won.fetch_add(1, Relaxed);
                            }
                            assert!(st.used_bytes() <= 10_000);
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            assert_eq!(won.load(Relaxed), 100);
            assert_eq!(st.used_bytes(), 10_000);
        }
    }
}
