//! relay's XDP admission program.
//!
//! For a TCP SYN without ACK to one of the guarded ports it applies, in order: the allow-list
//! (CIDRs never shed), the per-source token bucket, and the global shed level. Everything else
//! (established flows, other ports, other protocols, malformed frames) is `XDP_PASS`: the
//! program only ever refuses *new* connections.
//!
//! Every packet access is bounds-checked against `data_end` before it is read.
#![no_std]
#![no_main]

use core::mem::size_of;

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns},
    macros::{map, xdp},
    maps::{lpm_trie::Key, Array, LpmTrie, LruHashMap, PerCpuArray},
    programs::XdpContext,
};
use relay_ebpf_common::{
    Bucket, Settings, MAX_ALLOW, MAX_PORTS, MAX_SOURCES, STAT_ALLOW_LISTED, STAT_COUNT,
    STAT_DROPPED_RATE, STAT_DROPPED_SHED, STAT_PASSED, TOKEN,
};

/// `BPF_F_NO_PREALLOC`: required by LPM tries.
const BPF_F_NO_PREALLOC: u32 = 1;

#[map(name = "RELAY_SETTINGS")]
static RELAY_SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);
#[map(name = "RELAY_SHED")]
static RELAY_SHED: Array<u32> = Array::with_max_entries(1, 0);
#[map(name = "RELAY_BUCKETS")]
static RELAY_BUCKETS: LruHashMap<[u8; 16], Bucket> = LruHashMap::with_max_entries(MAX_SOURCES, 0);
#[map(name = "RELAY_ALLOW_V4")]
static RELAY_ALLOW_V4: LpmTrie<[u8; 4], u8> =
    LpmTrie::with_max_entries(MAX_ALLOW, BPF_F_NO_PREALLOC);
#[map(name = "RELAY_ALLOW_V6")]
static RELAY_ALLOW_V6: LpmTrie<[u8; 16], u8> =
    LpmTrie::with_max_entries(MAX_ALLOW, BPF_F_NO_PREALLOC);
#[map(name = "RELAY_STATS")]
static RELAY_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STAT_COUNT, 0);

const ETH_HDR: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_TCP: u8 = 6;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// Entry point: only calls the fallible body; anything it cannot parse passes.
#[xdp]
pub fn relay_admission(ctx: XdpContext) -> u32 {
    match try_admit(&ctx) {
        Ok(action) => action,
        Err(()) => xdp_action::XDP_PASS,
    }
}

/// A bounds-checked read of a `T` at `offset` bytes into the packet.
#[inline(always)]
fn read<T: Copy>(ctx: &XdpContext, offset: usize) -> Result<T, ()> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return Err(());
    }
    // SAFETY: the range [start + offset, start + offset + size_of::<T>()) was checked to lie
    // inside the packet just above; the read is unaligned-safe and T is plain old data.
    Ok(unsafe { core::ptr::read_unaligned((start + offset) as *const T) })
}

#[inline(always)]
fn count(index: u32) {
    if let Some(p) = RELAY_STATS.get_ptr_mut(index) {
        // SAFETY: a per-CPU array slot is only touched by this CPU, and the pointer comes from a
        // successful map lookup so it is valid for the program's run.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
fn try_admit(ctx: &XdpContext) -> Result<u32, ()> {
    // Ethernet, then up to two VLAN tags.
    let mut proto = u16::from_be(read::<u16>(ctx, 12)?);
    let mut off = ETH_HDR;
    if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
        proto = u16::from_be(read::<u16>(ctx, off + 2)?);
        off += 4;
        if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
            proto = u16::from_be(read::<u16>(ctx, off + 2)?);
            off += 4;
        }
    }

    // IP: the source as an IPv6 (or IPv4-mapped) address, and where TCP starts.
    let mut src = [0u8; 16];
    let v4: bool;
    let tcp_off: usize;
    if proto == ETH_P_IP {
        // The fixed 20-byte IPv4 header, read in one bounds-checked access.
        let h = read::<[u8; 20]>(ctx, off)?;
        let ihl = ((h[0] & 0x0f) as usize) * 4;
        if ihl < 20 {
            return Err(());
        }
        let frag = u16::from_be_bytes([h[6], h[7]]);
        if frag & 0x1fff != 0 {
            return Ok(xdp_action::XDP_PASS); // a later fragment: no TCP header here
        }
        if h[9] != IPPROTO_TCP {
            return Ok(xdp_action::XDP_PASS);
        }
        src[10] = 0xff;
        src[11] = 0xff;
        src[12] = h[12];
        src[13] = h[13];
        src[14] = h[14];
        src[15] = h[15];
        v4 = true;
        tcp_off = off + (ihl & 0x3c);
    } else if proto == ETH_P_IPV6 {
        // Extension headers before TCP are rare on SYNs; such packets pass.
        let h = read::<[u8; 24]>(ctx, off)?;
        if h[6] != IPPROTO_TCP {
            return Ok(xdp_action::XDP_PASS);
        }
        let mut i = 0;
        while i < 16 {
            src[i] = h[8 + i];
            i += 1;
        }
        v4 = false;
        tcp_off = off + 40;
    } else {
        return Ok(xdp_action::XDP_PASS);
    }

    // TCP: only a SYN without ACK (a new connection) to a guarded port is judged.
    // The first 14 bytes of the TCP header (ports .. flags), in one bounds-checked access.
    let tcp = read::<[u8; 14]>(ctx, tcp_off)?;
    if tcp[13] & (TCP_SYN | TCP_ACK) != TCP_SYN {
        return Ok(xdp_action::XDP_PASS);
    }
    let dport = u16::from_be_bytes([tcp[2], tcp[3]]);
    let settings = match RELAY_SETTINGS.get(0) {
        Some(s) => s,
        None => return Ok(xdp_action::XDP_PASS),
    };
    let mut guarded = false;
    let mut i = 0;
    while i < MAX_PORTS {
        if (i as u32) < settings.n_ports && settings.ports[i] == dport {
            guarded = true;
        }
        i += 1;
    }
    if !guarded {
        return Ok(xdp_action::XDP_PASS);
    }

    // 1. Allow-list: never shed.
    let allowed = if v4 {
        let a = [src[12], src[13], src[14], src[15]];
        RELAY_ALLOW_V4.get(Key::new(32, a)).is_some()
    } else {
        RELAY_ALLOW_V6.get(Key::new(128, src)).is_some()
    };
    if allowed {
        count(STAT_ALLOW_LISTED);
        return Ok(xdp_action::XDP_PASS);
    }

    // 2. Per-source token bucket.
    if settings.rate_per_sec != 0 && !take_token(&src, settings) {
        count(STAT_DROPPED_RATE);
        return Ok(xdp_action::XDP_DROP);
    }

    // 3. Global shed level.
    let level = RELAY_SHED.get(0).copied().unwrap_or(0);
    if level > 0 {
        // SAFETY: a BPF helper without preconditions.
        let r = unsafe { bpf_get_prandom_u32() } % 100;
        if r < level {
            count(STAT_DROPPED_SHED);
            return Ok(xdp_action::XDP_DROP);
        }
    }
    count(STAT_PASSED);
    Ok(xdp_action::XDP_PASS)
}

/// Refills `src`'s bucket for the time elapsed and takes one token; false when it is empty.
/// Updates race benignly between CPUs (a source may get a token or two more than its budget).
#[inline(always)]
fn take_token(src: &[u8; 16], s: &Settings) -> bool {
    // SAFETY: a BPF helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    match RELAY_BUCKETS.get_ptr_mut(src) {
        Some(b) => {
            // SAFETY: the pointer comes from a successful lookup and stays valid for this run;
            // concurrent writers on other CPUs can only make the count slightly inexact.
            let b = unsafe { &mut *b };
            let elapsed = now.saturating_sub(b.last_ns);
            let mut tokens = if elapsed >= s.refill_full_ns {
                s.burst_nanotokens
            } else {
                // elapsed < burst * 1e9 / rate, so elapsed * rate < burst * 1e9: no overflow.
                let t = b.nanotokens + elapsed * s.rate_per_sec as u64;
                if t > s.burst_nanotokens {
                    s.burst_nanotokens
                } else {
                    t
                }
            };
            b.last_ns = now;
            if tokens < TOKEN {
                b.nanotokens = tokens;
                return false;
            }
            tokens -= TOKEN;
            b.nanotokens = tokens;
            true
        }
        None => {
            if s.burst_nanotokens < TOKEN {
                return false;
            }
            let b = Bucket {
                nanotokens: s.burst_nanotokens - TOKEN,
                last_ns: now,
            };
            let _ = RELAY_BUCKETS.insert(src, &b, 0);
            true
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
