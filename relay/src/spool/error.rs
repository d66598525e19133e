//! Why the spool could not keep an original.

/// A spool append was refused or failed. The request gets 503 and is not forwarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpoolError {
    /// `[spool] max_bytes` would be exceeded. Fault: Kafka (not draining) or sizing.
    #[error("the spool holds {used} of {max} bytes; retry after {retry_after_s} s")]
    Full {
        /// Bytes kept now.
        used: u64,
        /// `max_bytes`.
        max: u64,
        /// Seconds for `Retry-After`.
        retry_after_s: u32,
    },
    /// Writing or syncing the segment failed (ENOSPC, EIO, ...), or the spool stopped.
    /// Fault: internal (the disk).
    #[error("the spool cannot write: {0}")]
    Unavailable(String),
}
