//! `[spool]`: where and how originals of `delivery = "spool"` routes are kept on disk.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::problems::Problems;

/// `[spool]`: the local disk spool. Required when any route's delivery is `"spool"`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// Directory of the segments (one sub-directory per worker, `corrupt/` for quarantined
    /// segments). Created if missing. Default `/var/lib/relay/spool` (the unit's StateDirectory).
    #[serde(default = "defaults::dir")]
    pub dir: PathBuf,
    /// Most bytes of records kept (all workers); over it a spool request gets 503
    /// `spool_full` + `Retry-After` and is not forwarded. Default 1073741824 (1 GiB).
    #[serde(default = "defaults::max_bytes")]
    pub max_bytes: u64,
    /// Group commit: one `fdatasync` covers the records appended within this many ms of the
    /// first one waiting. Default 2.
    #[serde(default = "defaults::sync_interval_ms")]
    pub sync_interval_ms: u64,
    /// Group commit: sync at once when this many bytes are waiting. Default 1048576 (1 MiB).
    #[serde(default = "defaults::sync_bytes")]
    pub sync_bytes: u64,
    /// A worker starts a new segment file when its current one reaches this size, in bytes.
    /// Fully acknowledged segments are deleted. Default 67108864 (64 MiB).
    #[serde(default = "defaults::segment_bytes")]
    pub segment_bytes: u64,
    /// After a failed delivery, a spooled record is retried after this many ms. Default 1000.
    #[serde(default = "defaults::retry_ms")]
    pub retry_ms: u64,
}

/// Default values, one function per field (serde needs functions).
pub mod defaults {
    use std::path::PathBuf;
    /// `/var/lib/relay/spool`.
    pub fn dir() -> PathBuf {
        PathBuf::from("/var/lib/relay/spool")
    }
    /// 1 GiB.
    pub fn max_bytes() -> u64 {
        1 << 30
    }
    /// 2 ms.
    pub fn sync_interval_ms() -> u64 {
        2
    }
    /// 1 MiB.
    pub fn sync_bytes() -> u64 {
        1 << 20
    }
    /// 64 MiB.
    pub fn segment_bytes() -> u64 {
        64 << 20
    }
    /// 1 s.
    pub fn retry_ms() -> u64 {
        1000
    }
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            dir: defaults::dir(),
            max_bytes: defaults::max_bytes(),
            sync_interval_ms: defaults::sync_interval_ms(),
            sync_bytes: defaults::sync_bytes(),
            segment_bytes: defaults::segment_bytes(),
            retry_ms: defaults::retry_ms(),
        }
    }
}

impl SpoolConfig {
    /// Records problems under `field` (`"spool"`).
    pub fn validate(&self, field: &str, p: &mut Problems) {
        if self.dir.as_os_str().is_empty() {
            p.push(
                format!("{field}.dir"),
                "must name a directory, e.g. \"/var/lib/relay/spool\"",
            );
        }
        if self.max_bytes < 1 << 20 {
            p.push(
                format!("{field}.max_bytes"),
                "must be at least 1048576 (1 MiB)",
            );
        }
        if self.sync_interval_ms > 1000 {
            p.push(
                format!("{field}.sync_interval_ms"),
                "must be at most 1000 ms (every spool request waits up to this long)",
            );
        }
        if self.sync_bytes == 0 {
            p.push(format!("{field}.sync_bytes"), "must be at least 1 byte");
        }
        if self.segment_bytes < 4096 {
            p.push(
                format!("{field}.segment_bytes"),
                "must be at least 4096 bytes",
            );
        }
        if self.retry_ms == 0 {
            p.push(format!("{field}.retry_ms"), "must be more than 0 ms");
        }
    }

    /// Resolves a relative `dir` against the config file's directory.
    pub fn resolve_paths(&mut self, base: &std::path::Path) {
        if self.dir.is_relative() {
            self.dir = base.join(&self.dir);
        }
    }
}
