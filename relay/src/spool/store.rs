//! One worker's spool directory: its segments, which records Kafka acknowledged, and the
//! order records are read back in. Synchronous and single-owner (the worker's sync thread);
//! the property test drives it directly.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use crate::kafka::OriginalRecord;

use super::record;
use super::recovery::{self, Damage, Found};
use super::segment::{self, ActiveSegment, DATA_START};

/// Where a record is: segment, frame offset, framed length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pos {
    /// Segment sequence number.
    pub seg: u64,
    /// Offset of the frame in the segment.
    pub off: u64,
    /// Framed length.
    pub len: u32,
}

/// One segment's records and acknowledgements.
#[derive(Debug)]
struct Seg {
    /// Valid records in order: (offset, framed length, CreateTime ms).
    records: Vec<Found>,
    acked: Vec<bool>,
    /// Index of the first record not acknowledged (everything before is).
    mark: usize,
    /// Bytes of records (magic excluded).
    bytes: u64,
    /// No more appends (not the active segment).
    sealed: bool,
}

impl Seg {
    fn mark_offset(&self, end: u64) -> u64 {
        self.records.get(self.mark).map_or(end, |r| r.off)
    }
    fn end(&self) -> u64 {
        self.records
            .last()
            .map_or(DATA_START, |r| r.off + u64::from(r.len))
    }
}

/// What opening a directory found and repaired.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OpenReport {
    /// Segments verified.
    pub segments: usize,
    /// Records not yet acknowledged by Kafka (to replay).
    pub unacked: u64,
    /// Torn tails cut off: (segment, bytes).
    pub torn: Vec<(u64, u64)>,
    /// Segments damaged in the middle: (segment, offset, error, copy in `corrupt/`).
    pub corrupt: Vec<(u64, u64, String, PathBuf)>,
    /// Bytes cut from the live segments: every torn tail, and everything after damage in the
    /// middle (its segment was copied to `corrupt/` first).
    pub truncated_bytes: u64,
}

/// One worker's spool directory.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    segs: BTreeMap<u64, Seg>,
    active: Option<ActiveSegment>,
    segment_bytes: u64,
    bytes: u64,
    unacked: u64,
}

impl Store {
    /// Opens (creating) `dir`: verifies every segment (torn tails cut, damaged segments
    /// copied to `corrupt_dir`), loads the acknowledged marks; new records go to a new segment.
    pub fn open(
        dir: &Path,
        corrupt_dir: &Path,
        name: &str,
        segment_bytes: u64,
    ) -> io::Result<(Store, OpenReport)> {
        std::fs::create_dir_all(dir)?;
        let mut seqs: Vec<u64> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| segment::parse_seg_name(&e.file_name().to_string_lossy()))
            .collect();
        seqs.sort_unstable();
        let mut report = OpenReport::default();
        let mut store = Store {
            dir: dir.to_path_buf(),
            segs: BTreeMap::new(),
            active: None,
            segment_bytes: segment_bytes.max(DATA_START + 1),
            bytes: 0,
            unacked: 0,
        };
        for seq in seqs {
            let v = recovery::verify(dir, seq, corrupt_dir, name)?;
            report.segments += 1;
            match v.damage {
                Damage::None => {}
                Damage::TornTail { bytes } => {
                    report.truncated_bytes += bytes;
                    report.torn.push((seq, bytes));
                }
                Damage::Corrupt {
                    at,
                    error,
                    quarantined,
                    bytes,
                } => {
                    report.truncated_bytes += bytes;
                    report.corrupt.push((seq, at, error, quarantined));
                }
            }
            let mark_off = segment::read_ack_mark(dir, seq);
            let mark = v.records.partition_point(|r| r.off < mark_off);
            let n = v.records.len();
            if mark == n {
                segment::remove(dir, seq)?;
                continue;
            }
            let bytes = v.len - DATA_START;
            let mut acked = vec![false; n];
            acked[..mark].iter_mut().for_each(|a| *a = true);
            store.bytes += bytes;
            store.unacked += (n - mark) as u64;
            store.segs.insert(
                seq,
                Seg {
                    records: v.records,
                    acked,
                    mark,
                    bytes,
                    sealed: true,
                },
            );
        }
        segment::sync_dir(dir)?;
        report.unacked = store.unacked;
        Ok((store, report))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes of records kept (acknowledged records of live segments included).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Records not yet acknowledged by Kafka.
    pub fn unacked(&self) -> u64 {
        self.unacked
    }

    /// CreateTime of the oldest record not yet acknowledged, ms.
    pub fn oldest_unacked_ms(&self) -> Option<i64> {
        self.segs
            .values()
            .filter_map(|s| s.records.get(s.mark).map(|r| r.timestamp_ms))
            .min()
    }

    /// Appends `batch` (framed records, `found[i]` giving each one's length and timestamp, in
    /// order) with one write and one `fdatasync`; returns each record's position. Opens a new
    /// segment first when the active one reached `segment_bytes`.
    pub fn append(&mut self, batch: &[u8], meta: &[(u32, i64)]) -> io::Result<Vec<Pos>> {
        if self
            .active
            .as_ref()
            .is_none_or(|a| a.len >= self.segment_bytes)
        {
            self.rotate()?;
        }
        let a = self.active.as_mut().expect("active segment");
        let at = a.append(batch)?;
        let seq = a.seq;
        let seg = self.segs.get_mut(&seq).expect("active segment state");
        let mut off = at;
        let mut out = Vec::with_capacity(meta.len());
        for &(len, ts) in meta {
            seg.records.push(Found {
                off,
                len,
                timestamp_ms: ts,
            });
            seg.acked.push(false);
            out.push(Pos { seg: seq, off, len });
            off += u64::from(len);
        }
        debug_assert_eq!(off, at + batch.len() as u64);
        seg.bytes += batch.len() as u64;
        self.bytes += batch.len() as u64;
        self.unacked += meta.len() as u64;
        Ok(out)
    }

    fn rotate(&mut self) -> io::Result<()> {
        let next = self.segs.keys().next_back().map_or(1, |s| s + 1);
        let a = ActiveSegment::create(&self.dir, next)?;
        if let Some(old) = self.active.take() {
            if let Some(s) = self.segs.get_mut(&old.seq) {
                s.sealed = true;
            }
            self.collect(old.seq)?;
        }
        self.segs.insert(
            next,
            Seg {
                records: Vec::new(),
                acked: Vec::new(),
                mark: 0,
                bytes: 0,
                sealed: false,
            },
        );
        self.active = Some(a);
        Ok(())
    }

    /// Records that Kafka acknowledged the record at `pos`: advances its segment's mark
    /// (persisted) and deletes the segment once it is sealed and fully acknowledged. An
    /// unknown or repeated position is ignored.
    pub fn ack(&mut self, pos: Pos) -> io::Result<()> {
        let Some(seg) = self.segs.get_mut(&pos.seg) else {
            return Ok(());
        };
        let Ok(i) = seg.records.binary_search_by_key(&pos.off, |r| r.off) else {
            return Ok(());
        };
        if seg.acked[i] {
            return Ok(());
        }
        seg.acked[i] = true;
        self.unacked -= 1;
        let before = seg.mark;
        while seg.mark < seg.acked.len() && seg.acked[seg.mark] {
            seg.mark += 1;
        }
        if seg.mark != before {
            let end = seg.end();
            let off = seg.mark_offset(end);
            let sealed = seg.sealed;
            let done = seg.mark == seg.records.len();
            if !(sealed && done) {
                segment::write_ack_mark(&self.dir, pos.seg, off)?;
            }
            self.collect(pos.seg)?;
        }
        Ok(())
    }

    /// Deletes segment `seq` when it is sealed and fully acknowledged.
    fn collect(&mut self, seq: u64) -> io::Result<()> {
        let Some(s) = self.segs.get(&seq) else {
            return Ok(());
        };
        if s.sealed && s.mark == s.records.len() {
            segment::remove(&self.dir, seq)?;
            self.bytes -= s.bytes;
            self.segs.remove(&seq);
        }
        Ok(())
    }

    /// The first record not yet acknowledged, in spool order (where replay starts).
    pub fn first_unacked(&self) -> Option<Pos> {
        self.segs.iter().find_map(|(seq, s)| {
            s.records.get(s.mark).map(|r| Pos {
                seg: *seq,
                off: r.off,
                len: r.len,
            })
        })
    }

    /// The next record not yet acknowledged after `pos`, in spool order.
    pub fn next_unacked_after(&self, pos: Pos) -> Option<Pos> {
        for (seq, s) in self.segs.range(pos.seg..) {
            let start = if *seq == pos.seg {
                s.records.partition_point(|r| r.off <= pos.off)
            } else {
                s.mark
            };
            for (i, r) in s.records.iter().enumerate().skip(start) {
                if !s.acked[i] {
                    return Some(Pos {
                        seg: *seq,
                        off: r.off,
                        len: r.len,
                    });
                }
            }
        }
        None
    }

    /// Every record not yet acknowledged, in spool order.
    pub fn unacked_positions(&self) -> Vec<Pos> {
        let mut out = Vec::new();
        for (seq, s) in &self.segs {
            for (i, r) in s.records.iter().enumerate().skip(s.mark) {
                if !s.acked[i] {
                    out.push(Pos {
                        seg: *seq,
                        off: r.off,
                        len: r.len,
                    });
                }
            }
        }
        out
    }

    /// Reads the record at `pos` back from disk (CRC checked).
    pub fn read(&self, pos: Pos) -> io::Result<OriginalRecord> {
        let b = segment::read_at(&self.dir, pos.seg, pos.off, pos.len as usize)?;
        record::decode(&b)
            .map(|(r, _)| r)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}
