//! The XDP loader (aya, user space): loads relay-ebpf, fills its maps, attaches it to the
//! interface (driver mode, then skb mode for `auto`), and reads its counters.
//!
//! A stale attachment of relay's own program (a crashed run attached through netlink) is
//! detached first; a program relay did not load is never replaced.
//!
//! Unsafe: one `if_nametoindex` call (libc); its block says why it is sound.

use std::ffi::CString;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, MapData, PerCpuArray};
use aya::programs::{Xdp, XdpMode};
use relay_ebpf_common as common;

use super::{netlink, Cidr, XdpModeConfig};

/// Why the XDP path could not be set up (the caller falls back to user-space shedding).
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// No object: neither embedded at build time nor configured.
    #[error("no XDP object: build it with `cargo xtask build-ebpf` (then rebuild relay) or set admission.object_path")]
    NoObject,
    /// The configured interface does not exist (in this network namespace).
    #[error("interface {0:?} does not exist")]
    NoInterface(String),
    /// Loading the object, its maps or its program into the kernel failed.
    #[error("cannot load the XDP program{hint}: {source}")]
    Load {
        /// What failed.
        source: Box<dyn std::error::Error + Send + Sync>,
        /// A hint about privileges when the kernel said EPERM.
        hint: &'static str,
    },
    /// Another XDP program (not relay's) is attached to the interface.
    #[error("interface {interface} already has XDP program {name:?} (id {id}) attached; relay does not replace a program it did not load")]
    Foreign {
        /// The interface.
        interface: String,
        /// The other program's name.
        name: String,
        /// Its id.
        id: u32,
    },
    /// Attaching failed in every mode tried.
    #[error("cannot attach to {interface} in {modes} mode: {source}")]
    Attach {
        /// The interface.
        interface: String,
        /// Modes tried.
        modes: &'static str,
        /// The last error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

fn load_err(e: impl std::error::Error + Send + Sync + 'static) -> XdpError {
    // The whole chain: aya's top-level messages ("failed to create map") hide the errno.
    let mut text = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        text.push_str(": ");
        text.push_str(&s.to_string());
        src = s.source();
    }
    let debug = format!("{e:?}");
    let hint = if text.contains("os error 1)") || debug.contains("code: 1,") {
        " (needs root or CAP_BPF + CAP_NET_ADMIN)"
    } else {
        ""
    };
    XdpError::Load {
        source: text.into(),
        hint,
    }
}

/// The attach mode actually in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachedMode {
    /// Native XDP in the driver.
    Driver,
    /// Generic XDP (skb).
    Skb,
}

impl fmt::Display for AttachedMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttachedMode::Driver => "driver",
            AttachedMode::Skb => "skb",
        })
    }
}

/// Where the object comes from.
pub enum Object<'a> {
    /// A file.
    Path(&'a Path),
    /// Bytes embedded at build time.
    Bytes(&'static [u8]),
}

/// What the loader needs.
pub struct XdpSetup<'a> {
    /// The interface to attach to.
    pub interface: &'a str,
    /// Requested mode.
    pub mode: XdpModeConfig,
    /// Guarded ports.
    pub ports: &'a [u16],
    /// New connections per second per source (0: no budget).
    pub rate_per_source: u32,
    /// Bucket size, connections.
    pub burst: u32,
    /// Never-shed CIDRs.
    pub allow: &'a [Cidr],
}

/// A loaded and attached program with its maps. Dropping it detaches the program.
pub struct XdpState {
    shed: Array<MapData, u32>,
    stats: PerCpuArray<MapData, u64>,
    // Owns the program and its link: dropped last, which detaches.
    ebpf: aya::Ebpf,
    link: Option<aya::programs::xdp::XdpLinkId>,
    /// The mode in use.
    pub mode: AttachedMode,
    /// The interface.
    pub interface: String,
    /// The object the program came from (for logs).
    pub object: String,
}

/// The embedded object, when relay was built after `cargo xtask build-ebpf`.
#[cfg(relay_ebpf_embedded)]
pub fn embedded() -> Option<&'static [u8]> {
    Some(aya::include_bytes_aligned!(concat!(
        env!("OUT_DIR"),
        "/relay-ebpf.o"
    )))
}

/// The embedded object, when relay was built after `cargo xtask build-ebpf`.
#[cfg(not(relay_ebpf_embedded))]
pub fn embedded() -> Option<&'static [u8]> {
    None
}

/// The interface's index in this network namespace.
pub fn ifindex(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: c is a valid NUL-terminated string that outlives the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// The name of the loaded program with `id`, if the kernel lists it.
fn program_name(id: u32) -> Option<String> {
    aya::programs::loaded_programs()
        .flatten()
        .find(|p| p.id() == id)
        .map(|p| p.name_as_str().unwrap_or("").to_string())
}

/// Detaches a stale attachment of relay's own program from `ifindex`; refuses foreign ones.
fn clear_stale(interface: &str, ifindex: u32) -> Result<Option<u32>, XdpError> {
    let Ok(att) = netlink::attached(ifindex) else {
        return Ok(None);
    };
    if att.mode == 0 {
        return Ok(None);
    }
    let name = program_name(att.prog_id).unwrap_or_default();
    if att.prog_id != 0 && (name.is_empty() || !common::PROGRAM_NAME.starts_with(name.as_str())) {
        return Err(XdpError::Foreign {
            interface: interface.to_string(),
            name,
            id: att.prog_id,
        });
    }
    netlink::detach(ifindex, att.mode).map_err(|e| XdpError::Attach {
        interface: interface.to_string(),
        modes: "any",
        source: format!(
            "a stale relay program (id {}) is attached and cannot be detached: {e}",
            att.prog_id
        )
        .into(),
    })?;
    Ok(Some(att.prog_id))
}

/// Loads the object, fills the maps and attaches. Returns the state and, when one was
/// replaced, the id of a stale program that was detached.
pub fn start(
    object: Object<'_>,
    setup: &XdpSetup<'_>,
) -> Result<(XdpState, Option<u32>), XdpError> {
    let ifindex = ifindex(setup.interface)
        .ok_or_else(|| XdpError::NoInterface(setup.interface.to_string()))?;
    let (mut ebpf, object_name) = match object {
        Object::Path(p) => (
            aya::Ebpf::load_file(p).map_err(load_err)?,
            p.display().to_string(),
        ),
        Object::Bytes(b) => (
            aya::Ebpf::load(b).map_err(load_err)?,
            "embedded".to_string(),
        ),
    };

    {
        let mut settings: Array<&mut MapData, common::Settings> = Array::try_from(
            ebpf.map_mut(common::MAP_SETTINGS)
                .ok_or_else(|| load_err(missing(common::MAP_SETTINGS)))?,
        )
        .map_err(load_err)?;
        settings.set(0, settings_for(setup), 0).map_err(load_err)?;
    }
    {
        let mut v4: LpmTrie<&mut MapData, [u8; 4], u8> = LpmTrie::try_from(
            ebpf.map_mut(common::MAP_ALLOW_V4)
                .ok_or_else(|| load_err(missing(common::MAP_ALLOW_V4)))?,
        )
        .map_err(load_err)?;
        for c in setup.allow {
            if let IpAddr::V4(a) = c.addr {
                v4.insert(&Key::new(c.prefix as u32, a.octets()), 1, 0)
                    .map_err(load_err)?;
            }
        }
    }
    {
        let mut v6: LpmTrie<&mut MapData, [u8; 16], u8> = LpmTrie::try_from(
            ebpf.map_mut(common::MAP_ALLOW_V6)
                .ok_or_else(|| load_err(missing(common::MAP_ALLOW_V6)))?,
        )
        .map_err(load_err)?;
        for c in setup.allow {
            if let IpAddr::V6(a) = c.addr {
                v6.insert(&Key::new(c.prefix as u32, a.octets()), 1, 0)
                    .map_err(load_err)?;
            }
        }
    }
    let shed: Array<MapData, u32> = Array::try_from(
        ebpf.take_map(common::MAP_SHED)
            .ok_or_else(|| load_err(missing(common::MAP_SHED)))?,
    )
    .map_err(load_err)?;
    let stats: PerCpuArray<MapData, u64> = PerCpuArray::try_from(
        ebpf.take_map(common::MAP_STATS)
            .ok_or_else(|| load_err(missing(common::MAP_STATS)))?,
    )
    .map_err(load_err)?;

    let program: &mut Xdp = ebpf
        .program_mut(common::PROGRAM_NAME)
        .ok_or_else(|| load_err(missing(common::PROGRAM_NAME)))?
        .try_into()
        .map_err(load_err)?;
    program.load().map_err(load_err)?;

    let replaced = clear_stale(setup.interface, ifindex)?;

    let tries: &[(XdpMode, AttachedMode)] = match setup.mode {
        XdpModeConfig::Auto => &[
            (XdpMode::Driver, AttachedMode::Driver),
            (XdpMode::Skb, AttachedMode::Skb),
        ],
        XdpModeConfig::Driver => &[(XdpMode::Driver, AttachedMode::Driver)],
        XdpModeConfig::Skb => &[(XdpMode::Skb, AttachedMode::Skb)],
    };
    let modes = match setup.mode {
        XdpModeConfig::Auto => "driver or skb",
        XdpModeConfig::Driver => "driver",
        XdpModeConfig::Skb => "skb",
    };
    let mut last = None;
    for &(m, am) in tries {
        match program.attach_to_if_index(ifindex, m) {
            Ok(link) => {
                return Ok((
                    XdpState {
                        shed,
                        stats,
                        ebpf,
                        link: Some(link),
                        mode: am,
                        interface: setup.interface.to_string(),
                        object: object_name,
                    },
                    replaced,
                ));
            }
            Err(e) => last = Some(e),
        }
    }
    Err(XdpError::Attach {
        interface: setup.interface.to_string(),
        modes,
        source: match last {
            Some(e) => Box::new(e),
            None => "no mode tried".into(),
        },
    })
}

fn missing(what: &str) -> std::io::Error {
    std::io::Error::other(format!(
        "{what} is missing from the object (an older relay-ebpf?)"
    ))
}

fn settings_for(s: &XdpSetup<'_>) -> common::Settings {
    let mut ports = [0u16; common::MAX_PORTS];
    let n = s.ports.len().min(common::MAX_PORTS);
    ports[..n].copy_from_slice(&s.ports[..n]);
    let burst = s.burst.max(1) as u64;
    common::Settings {
        ports,
        n_ports: n as u32,
        rate_per_sec: s.rate_per_source,
        burst_nanotokens: burst * common::TOKEN,
        refill_full_ns: if s.rate_per_source == 0 {
            0
        } else {
            burst * 1_000_000_000 / s.rate_per_source as u64
        },
    }
}

/// The counters, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XdpCounters {
    /// SYNs passed by bucket and shed level.
    pub passed: u64,
    /// SYNs dropped by a source's bucket.
    pub dropped_by_rate: u64,
    /// SYNs dropped by the shed level.
    pub dropped_by_shed: u64,
    /// SYNs from allow-listed sources.
    pub allowed_listed: u64,
}

impl XdpState {
    /// Sets the shed level in the kernel.
    pub fn set_level(&mut self, level: u8) -> Result<(), aya::maps::MapError> {
        self.shed.set(0, level.min(100) as u32, 0)
    }

    /// Reads the per-CPU counters.
    pub fn counters(&self) -> XdpCounters {
        let sum = |i: u32| {
            self.stats
                .get(&i, 0)
                .map(|v| v.iter().copied().sum::<u64>())
                .unwrap_or(0)
        };
        XdpCounters {
            passed: sum(common::STAT_PASSED),
            dropped_by_rate: sum(common::STAT_DROPPED_RATE),
            dropped_by_shed: sum(common::STAT_DROPPED_SHED),
            allowed_listed: sum(common::STAT_ALLOW_LISTED),
        }
    }

    /// Detaches the program (also done on drop).
    pub fn detach(&mut self) {
        if let Some(link) = self.link.take() {
            if let Some(p) = self.ebpf.program_mut(common::PROGRAM_NAME) {
                let p: Result<&mut Xdp, _> = p.try_into();
                if let Ok(p) = p {
                    let _ = p.detach(link);
                }
            }
        }
    }
}

impl Drop for XdpState {
    fn drop(&mut self) {
        self.detach();
    }
}

/// Resolves the object to use: the configured path first, then the embedded one.
pub fn object(path: Option<&PathBuf>) -> Result<Object<'_>, XdpError> {
    if let Some(p) = path {
        return Ok(Object::Path(p));
    }
    embedded().map(Object::Bytes).ok_or(XdpError::NoObject)
}
