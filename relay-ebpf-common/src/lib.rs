//! Types shared between the XDP admission program (`relay-ebpf`) and relay's user-space loader.
//!
//! Every type is `#[repr(C)]`, `Copy` and free of padding the kernel could leak, so the same
//! bytes mean the same thing on both sides. With the `user` feature, the types implement
//! [`aya::Pod`] so the loader can read and write them in maps.
#![no_std]

/// Name of the XDP program inside the object (also its kernel name, at most 15 bytes).
pub const PROGRAM_NAME: &str = "relay_admission";

/// `Array<Settings>` with one entry: ports, rate and burst. Written once at start.
pub const MAP_SETTINGS: &str = "RELAY_SETTINGS";
/// `Array<u32>` with one entry: the global shed level, 0..=100 (% of new connections dropped).
pub const MAP_SHED: &str = "RELAY_SHED";
/// `LruHashMap<[u8; 16], Bucket>`: per-source token buckets (IPv4 as `::ffff:a.b.c.d`).
pub const MAP_BUCKETS: &str = "RELAY_BUCKETS";
/// `LpmTrie<[u8; 4], u8>`: IPv4 allow-list (never shed).
pub const MAP_ALLOW_V4: &str = "RELAY_ALLOW_V4";
/// `LpmTrie<[u8; 16], u8>`: IPv6 allow-list (never shed).
pub const MAP_ALLOW_V6: &str = "RELAY_ALLOW_V6";
/// `PerCpuArray<u64>` with [`STAT_COUNT`] entries, indexed by the `STAT_*` constants.
pub const MAP_STATS: &str = "RELAY_STATS";

/// Most ports the program guards.
pub const MAX_PORTS: usize = 8;
/// Source buckets kept (least recently used evicted first).
pub const MAX_SOURCES: u32 = 65_536;
/// Allow-list entries per address family.
pub const MAX_ALLOW: u32 = 1_024;

/// New connections (SYN to a guarded port) let through by the bucket and the shed level.
pub const STAT_PASSED: u32 = 0;
/// New connections dropped because the source's token bucket was empty.
pub const STAT_DROPPED_RATE: u32 = 1;
/// New connections dropped by the global shed level.
pub const STAT_DROPPED_SHED: u32 = 2;
/// New connections from an allow-listed source (always passed, not counted in `passed`).
pub const STAT_ALLOW_LISTED: u32 = 3;
/// Number of counters in [`MAP_STATS`].
pub const STAT_COUNT: u32 = 4;

/// One nanotoken unit: a connection costs this many nanotokens from a source's bucket.
pub const TOKEN: u64 = 1_000_000_000;

/// The admission settings (entry 0 of [`MAP_SETTINGS`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// Guarded TCP destination ports in host byte order; the first `n_ports` are used.
    pub ports: [u16; MAX_PORTS],
    /// How many of `ports` are in use (0..=[`MAX_PORTS`]).
    pub n_ports: u32,
    /// New connections per second per source; 0 disables the per-source budget.
    pub rate_per_sec: u32,
    /// Bucket capacity in nanotokens (`burst * TOKEN`).
    pub burst_nanotokens: u64,
    /// Time for an empty bucket to refill completely, in ns (`burst * 1e9 / rate`).
    pub refill_full_ns: u64,
}

/// A source's token bucket (value of [`MAP_BUCKETS`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    /// Tokens left, in nanotokens.
    pub nanotokens: u64,
    /// Monotonic time (`bpf_ktime_get_ns`) of the last refill, in ns.
    pub last_ns: u64,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: Settings is #[repr(C)], Copy, made of integers only, with no padding
    // (8 x u16 = 16 bytes, then 2 x u32, then 2 x u64: every field naturally aligned).
    unsafe impl aya::Pod for super::Settings {}
    // SAFETY: Bucket is #[repr(C)], Copy, two u64 fields, no padding.
    unsafe impl aya::Pod for super::Bucket {}
}
