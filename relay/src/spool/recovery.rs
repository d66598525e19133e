//! Verifying a segment at start: every record's frame and CRC32C, a torn tail cut off, damage
//! in the middle quarantined (a copy goes to `corrupt/`, never silently skipped).

use std::io;
use std::path::{Path, PathBuf};

use super::record::{self, DecodeError};
use super::segment::{self, DATA_START, MAGIC};

/// One valid record found in a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// Offset of its frame.
    pub off: u64,
    /// Framed length.
    pub len: u32,
    /// Its CreateTime, ms.
    pub timestamp_ms: i64,
}

/// What verifying one segment found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// Every byte belongs to a valid record.
    None,
    /// The file ends in an incomplete record (a write cut by a crash): those bytes were never
    /// acknowledged to a client. The file was cut back to the last whole record.
    TornTail {
        /// Bytes removed.
        bytes: u64,
    },
    /// A record before the end is damaged: the file was copied to `quarantined` and cut back
    /// to the last valid record before the damage (what follows cannot be framed).
    Corrupt {
        /// Offset of the damaged record.
        at: u64,
        /// What was wrong.
        error: String,
        /// Where the whole original file was copied.
        quarantined: PathBuf,
        /// Bytes removed from the live segment.
        bytes: u64,
    },
}

/// The outcome of verifying one segment.
#[derive(Debug, Clone)]
pub struct Verified {
    /// Its valid records, in order.
    pub records: Vec<Found>,
    /// The length kept.
    pub len: u64,
    /// What was repaired.
    pub damage: Damage,
}

/// Verifies segment `seq` of `dir`, repairing it in place; a damaged middle is copied to
/// `corrupt_dir` as `<name>-<seq>.seg` first.
pub fn verify(dir: &Path, seq: u64, corrupt_dir: &Path, name: &str) -> io::Result<Verified> {
    let path = segment::seg_path(dir, seq);
    let bytes = std::fs::read(&path)?;
    let file_len = bytes.len() as u64;
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        // A segment whose magic never reached the disk holds nothing acknowledged (the magic
        // is synced before the first record is written); anything else is not ours.
        let all_zero_or_prefix = bytes.iter().all(|b| *b == 0) || MAGIC.starts_with(&bytes);
        if all_zero_or_prefix {
            rewrite_magic(&path)?;
            return Ok(Verified {
                records: Vec::new(),
                len: DATA_START,
                damage: Damage::TornTail { bytes: file_len },
            });
        }
        let q = quarantine(&path, corrupt_dir, name, seq)?;
        rewrite_magic(&path)?;
        return Ok(Verified {
            records: Vec::new(),
            len: DATA_START,
            damage: Damage::Corrupt {
                at: 0,
                error: "not a relay spool segment (bad magic)".into(),
                quarantined: q,
                bytes: file_len,
            },
        });
    }
    let mut records = Vec::new();
    let mut off = MAGIC.len();
    let mut damage = Damage::None;
    while off < bytes.len() {
        let rest = &bytes[off..];
        match record::decode(rest) {
            Ok((rec, used)) => {
                records.push(Found {
                    off: off as u64,
                    len: used as u32,
                    timestamp_ms: rec.timestamp_ms,
                });
                off += used;
            }
            Err(e) => {
                let torn = match e {
                    DecodeError::Truncated { .. } => true,
                    // The last frame of the file, or zeros to the end (a filesystem that grew
                    // the file before the data landed): the tail of a write cut by a crash.
                    _ => {
                        let end = record::frame_len(rest).map(|n| off + record::FRAME_HEADER + n);
                        end == Ok(bytes.len()) || rest.iter().all(|b| *b == 0)
                    }
                };
                let cut = file_len - off as u64;
                if torn {
                    damage = Damage::TornTail { bytes: cut };
                } else {
                    let q = quarantine(&path, corrupt_dir, name, seq)?;
                    damage = Damage::Corrupt {
                        at: off as u64,
                        error: e.to_string(),
                        quarantined: q,
                        bytes: cut,
                    };
                }
                break;
            }
        }
    }
    if off as u64 != file_len {
        let f = std::fs::OpenOptions::new().write(true).open(&path)?;
        f.set_len(off as u64)?;
        f.sync_all()?;
    }
    Ok(Verified {
        records,
        len: off as u64,
        damage,
    })
}

fn rewrite_magic(path: &Path) -> io::Result<()> {
    std::fs::write(path, MAGIC)?;
    std::fs::File::open(path)?.sync_all()
}

fn quarantine(path: &Path, corrupt_dir: &Path, name: &str, seq: u64) -> io::Result<PathBuf> {
    std::fs::create_dir_all(corrupt_dir)?;
    let mut q = corrupt_dir.join(format!("{name}-{seq:016x}.seg"));
    let mut n = 1;
    while q.exists() {
        q = corrupt_dir.join(format!("{name}-{seq:016x}.{n}.seg"));
        n += 1;
    }
    std::fs::copy(path, &q)?;
    std::fs::File::open(&q)?.sync_all()?;
    segment::sync_dir(corrupt_dir)?;
    Ok(q)
}
