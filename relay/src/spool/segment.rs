//! One segment file and its acknowledgement mark.
//!
//! A segment is `MAGIC` followed by records ([`super::record`]), appended only, never
//! rewritten. Its acknowledged mark (the offset below which Kafka acknowledged every record)
//! lives beside it in `<seq>.ack`: 8 bytes LE offset + 4 bytes CRC32C, overwritten in place.
//! The mark is written without `fdatasync`: a mark lost in a crash only makes relay replay
//! records Kafka already has (at least once), never skip one.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The first bytes of every segment (format name and version).
pub const MAGIC: &[u8; 8] = b"RLYSPL01";
/// Where records start.
pub const DATA_START: u64 = MAGIC.len() as u64;

/// `<dir>/<seq as 16 hex digits>.seg`.
pub fn seg_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016x}.seg"))
}

/// `<dir>/<seq as 16 hex digits>.ack`.
pub fn ack_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016x}.ack"))
}

/// The sequence number of a segment file name, if it is one.
pub fn parse_seg_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".seg")?;
    (hex.len() == 16)
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

/// `fsync` on a directory, so a created, renamed or removed entry survives a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The segment being appended to.
#[derive(Debug)]
pub struct ActiveSegment {
    /// Its sequence number.
    pub seq: u64,
    file: File,
    /// Bytes durably written (magic included).
    pub len: u64,
}

impl ActiveSegment {
    /// Creates segment `seq` in `dir` (durably: file, magic and directory entry).
    pub fn create(dir: &Path, seq: u64) -> io::Result<ActiveSegment> {
        let path = seg_path(dir, seq);
        // A mark left by an older segment of the same number must not apply to this one.
        match std::fs::remove_file(ack_path(dir, seq)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        // `seq` is above every live segment: a file left by a failed earlier attempt (ENOSPC
        // while writing the magic) holds nothing and is overwritten.
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)?;
        let res = file
            .write_all(MAGIC)
            .and_then(|_| file.sync_data())
            .and_then(|_| sync_dir(dir));
        if let Err(e) = res {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok(ActiveSegment {
            seq,
            file,
            len: DATA_START,
        })
    }

    /// Appends `bytes` (one or more framed records) with one write and one `fdatasync`.
    /// Returns the offset the bytes start at. On error the file is cut back to its last
    /// durable length (best effort) and `len` does not move, so a failed batch is never
    /// acknowledged and never read back as half a record followed by new ones.
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<u64> {
        let at = self.len;
        let res = self
            .file
            .write_all_at(bytes, at)
            .and_then(|_| self.file.sync_data());
        match res {
            Ok(()) => {
                self.len += bytes.len() as u64;
                Ok(at)
            }
            Err(e) => {
                let _ = self.file.set_len(at);
                Err(e)
            }
        }
    }
}

/// Reads `len` bytes at `off` of segment `seq`.
pub fn read_at(dir: &Path, seq: u64, off: u64, len: usize) -> io::Result<Vec<u8>> {
    let f = File::open(seg_path(dir, seq))?;
    let mut buf = vec![0; len];
    f.read_exact_at(&mut buf, off)?;
    Ok(buf)
}

/// Writes segment `seq`'s acknowledged mark (no `fdatasync`, see the module doc).
pub fn write_ack_mark(dir: &Path, seq: u64, mark: u64) -> io::Result<()> {
    let mut b = [0u8; 12];
    b[..8].copy_from_slice(&mark.to_le_bytes());
    let crc = crc32c::crc32c(&b[..8]);
    b[8..].copy_from_slice(&crc.to_le_bytes());
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(ack_path(dir, seq))?;
    f.write_all_at(&b, 0)
}

/// Segment `seq`'s acknowledged mark: [`DATA_START`] when there is none or it is damaged.
pub fn read_ack_mark(dir: &Path, seq: u64) -> u64 {
    let Ok(b) = std::fs::read(ack_path(dir, seq)) else {
        return DATA_START;
    };
    if b.len() < 12 {
        return DATA_START;
    }
    let mark = u64::from_le_bytes(b[..8].try_into().expect("8"));
    let crc = u32::from_le_bytes(b[8..12].try_into().expect("4"));
    if crc32c::crc32c(&b[..8]) != crc {
        return DATA_START;
    }
    mark.max(DATA_START)
}

/// Removes segment `seq` and its mark.
pub fn remove(dir: &Path, seq: u64) -> io::Result<()> {
    std::fs::remove_file(seg_path(dir, seq))?;
    match std::fs::remove_file(ack_path(dir, seq)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
