//! Early connection admission: the XDP loader and shed controller, or user-space shedding at
//! accept time without privileges.
//!
//! [`Admission::start`] never fails. With an interface, the privileges and an object
//! (embedded by `cargo xtask build-ebpf`, or `admission.object_path`), the relay-ebpf program
//! judges every new TCP connection in XDP: allow-list, per-source token bucket, global shed
//! level. Otherwise workers shed at accept time ([`Admission::shed_new_connection`]) at the same
//! level. Either way one line at start says which mode and why.
//!
//! The controller thread samples relay's load every 100 ms and moves the shed level with
//! hysteresis ([`controller`]); the level and counters are in [`Admission::snapshot`].

pub mod config;
pub mod controller;
mod netlink;
pub mod xdp;

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub use config::{AdmissionConfig, Cidr, XdpModeConfig};
pub use controller::LoadSample;
use controller::Thresholds;

/// How often the controller samples the load.
pub const TICK: Duration = Duration::from_millis(100);

impl AdmissionConfig {
    fn thresholds(&self) -> Thresholds {
        Thresholds {
            inflight_high: self.inflight_high,
            kafka_fill_high: self.kafka_fill_high,
            backlog_high: self.backlog_high,
        }
    }

    fn burst(&self) -> u32 {
        self.burst
            .unwrap_or(self.rate_per_source.saturating_mul(2))
            .max(1)
    }
}

/// Where new connections are judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdmissionMode {
    /// The XDP program on `interface`, attached in `attach` mode (`driver` or `skb`).
    Xdp {
        /// Interface.
        interface: String,
        /// `driver` or `skb`.
        attach: xdp::AttachedMode,
    },
    /// Workers close new connections at accept time.
    UserSpace,
}

impl fmt::Display for AdmissionMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdmissionMode::Xdp { interface, attach } => write!(f, "xdp-{attach} on {interface}"),
            AdmissionMode::UserSpace => f.write_str("user-space"),
        }
    }
}

/// Admission state for metrics and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionSnapshot {
    /// Where connections are judged.
    pub mode: AdmissionMode,
    /// Current shed level, percent of new connections dropped.
    pub shed_level_percent: u8,
    /// New connections passed by XDP (allow-listed ones not included).
    pub passed: u64,
    /// New connections dropped by a source's token bucket (XDP).
    pub dropped_by_rate: u64,
    /// New connections dropped by the shed level (XDP).
    pub dropped_by_shed: u64,
    /// New connections from allow-listed sources (XDP; never dropped).
    pub allowed_listed: u64,
    /// New connections closed at accept time by user-space shedding.
    pub userspace_shed: u64,
}

impl AdmissionSnapshot {
    /// Appends the Prometheus text for this snapshot (`relay_admission_*`).
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = writeln!(
            out,
            "# HELP relay_admission_shed_level_ratio Share of new connections being shed (0..1)."
        );
        let _ = writeln!(out, "# TYPE relay_admission_shed_level_ratio gauge");
        let _ = writeln!(
            out,
            "relay_admission_shed_level_ratio {}",
            self.shed_level_percent as f64 / 100.0
        );
        let _ = writeln!(out, "# HELP relay_admission_xdp_active Whether the XDP program judges new connections (1) or user space does (0).");
        let _ = writeln!(out, "# TYPE relay_admission_xdp_active gauge");
        let _ = writeln!(
            out,
            "relay_admission_xdp_active {}",
            u8::from(matches!(self.mode, AdmissionMode::Xdp { .. }))
        );
        let _ = writeln!(
            out,
            "# HELP relay_admission_dropped_total New connections refused by admission, by reason."
        );
        let _ = writeln!(out, "# TYPE relay_admission_dropped_total counter");
        let _ = writeln!(
            out,
            "relay_admission_dropped_total{{reason=\"rate\"}} {}",
            self.dropped_by_rate
        );
        let _ = writeln!(
            out,
            "relay_admission_dropped_total{{reason=\"shed\"}} {}",
            self.dropped_by_shed
        );
        let _ = writeln!(
            out,
            "relay_admission_dropped_total{{reason=\"userspace_shed\"}} {}",
            self.userspace_shed
        );
        let _ = writeln!(
            out,
            "# HELP relay_admission_passed_total New connections admitted by XDP, by reason."
        );
        let _ = writeln!(out, "# TYPE relay_admission_passed_total counter");
        let _ = writeln!(
            out,
            "relay_admission_passed_total{{reason=\"budget\"}} {}",
            self.passed
        );
        let _ = writeln!(
            out,
            "relay_admission_passed_total{{reason=\"allow_listed\"}} {}",
            self.allowed_listed
        );
    }
}

const NO_OVERRIDE: u16 = u16::MAX;

struct Inner {
    userspace: bool,
    mode: AdmissionMode,
    why: String,
    level: AtomicU8,
    override_level: AtomicU16,
    userspace_shed: AtomicU64,
    stop: AtomicBool,
    xdp: Mutex<Option<xdp::XdpState>>,
}

impl Inner {
    /// Applies `level` everywhere (kernel map, atomics) and logs a change.
    fn apply(&self, level: u8, why: &str) {
        let old = self.level.swap(level, Ordering::Relaxed);
        let mut guard = self.xdp.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(x) = guard.as_mut() {
            if let Err(e) = x.set_level(level) {
                tracing::warn!(error = %e, "cannot write the shed level to the XDP map");
            }
        }
        if old != level {
            let c = guard.as_ref().map(|x| x.counters()).unwrap_or_default();
            tracing::info!(
                from = old,
                to = level,
                why,
                passed = c.passed,
                dropped_by_rate = c.dropped_by_rate,
                dropped_by_shed = c.dropped_by_shed,
                userspace_shed = self.userspace_shed.load(Ordering::Relaxed),
                "admission shed level changed"
            );
        }
    }
}

/// Early connection admission: see the module docs.
pub struct Admission {
    inner: Arc<Inner>,
    controller: Mutex<Option<JoinHandle<()>>>,
}

thread_local! {
    static RNG: Cell<u32> = const { Cell::new(0) };
}

fn fraction_hit(percent: u8) -> bool {
    RNG.with(|r| {
        let mut x = r.get();
        if x == 0 {
            // Seed per thread from the address of the thread-local and the time.
            x = (r as *const _ as usize as u32)
                ^ (std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.subsec_nanos())
                    .unwrap_or(1))
                | 1;
        }
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        r.set(x);
        x % 100 < percent as u32
    })
}

impl Admission {
    /// Starts admission control. Never fails: without an interface, privileges or the object,
    /// it sheds in user space. Logs one line saying which mode and why. `load` is sampled every
    /// [`TICK`] by the controller thread.
    pub fn start(
        cfg: Option<&AdmissionConfig>,
        listen_port: u16,
        load: Arc<dyn Fn() -> LoadSample + Send + Sync>,
    ) -> Admission {
        let default = AdmissionConfig::default();
        let configured = cfg.is_some();
        let cfg = cfg.unwrap_or(&default);
        let ports: Vec<u16> = if cfg.ports.is_empty() {
            vec![listen_port]
        } else {
            cfg.ports.clone()
        };
        let allow: Vec<Cidr> = cfg.allow.iter().filter_map(|c| c.parse().ok()).collect();
        let (state, mode, why) = match &cfg.interface {
            None if !configured => (
                None,
                AdmissionMode::UserSpace,
                "no [admission] section: user-space shedding with the default thresholds"
                    .to_string(),
            ),
            None => (
                None,
                AdmissionMode::UserSpace,
                "no admission.interface configured".to_string(),
            ),
            Some(interface) => {
                let setup = xdp::XdpSetup {
                    interface,
                    mode: cfg.mode,
                    ports: &ports,
                    rate_per_source: cfg.rate_per_source,
                    burst: cfg.burst(),
                    allow: &allow,
                };
                match xdp::object(cfg.object_path.as_ref()).and_then(|o| xdp::start(o, &setup)) {
                    Ok((state, replaced)) => {
                        let mode = AdmissionMode::Xdp {
                            interface: interface.clone(),
                            attach: state.mode,
                        };
                        let why = match replaced {
                            Some(id) => format!(
                                "object {}; replaced a stale relay program (id {id})",
                                state.object
                            ),
                            None => format!("object {}", state.object),
                        };
                        (Some(state), mode, why)
                    }
                    Err(e) => (None, AdmissionMode::UserSpace, e.to_string()),
                }
            }
        };
        tracing::info!(
            mode = %mode,
            why = %why,
            ports = ?ports,
            rate_per_source = cfg.rate_per_source,
            burst = cfg.burst(),
            allow = allow.len(),
            "admission control started"
        );
        let inner = Arc::new(Inner {
            userspace: state.is_none(),
            mode,
            why,
            level: AtomicU8::new(0),
            override_level: AtomicU16::new(NO_OVERRIDE),
            userspace_shed: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            xdp: Mutex::new(state),
        });
        let thresholds = cfg.thresholds();
        let c = inner.clone();
        let handle = std::thread::Builder::new()
            .name("relay-admission".into())
            .spawn(move || {
                while !c.stop.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    let o = c.override_level.load(Ordering::Relaxed);
                    if o != NO_OVERRIDE {
                        if c.level.load(Ordering::Relaxed) != o as u8 {
                            c.apply(o as u8, "override");
                        }
                        continue;
                    }
                    let sample = load();
                    let ratio = controller::overload(&sample, &thresholds);
                    let cur = c.level.load(Ordering::Relaxed);
                    let next = controller::next_level(cur, ratio);
                    if next != cur {
                        c.apply(
                            next,
                            if next > cur {
                                "overloaded"
                            } else {
                                "recovering"
                            },
                        );
                    }
                }
            })
            .ok();
        Admission {
            inner,
            controller: Mutex::new(handle),
        }
    }

    /// Called by a worker right after each accept: true means close this connection now
    /// (user-space mode, shed level hit). Always false in XDP mode (the kernel already judged).
    #[inline]
    pub fn shed_new_connection(&self) -> bool {
        if !self.inner.userspace {
            return false;
        }
        let level = self.inner.level.load(Ordering::Relaxed);
        let shed = level >= 100 || (level > 0 && fraction_hit(level));
        if shed {
            self.inner.userspace_shed.fetch_add(1, Ordering::Relaxed);
        }
        shed
    }

    /// Forces the shed level (`Some(0..=100)`) or returns to the controller (`None`). Applied
    /// before it returns, so a test or an operator gets a deterministic level.
    pub fn set_shed_override(&self, level: Option<u8>) {
        match level {
            Some(l) => {
                let l = l.min(100);
                self.inner.override_level.store(l as u16, Ordering::Relaxed);
                self.inner.apply(l, "override");
            }
            None => {
                self.inner
                    .override_level
                    .store(NO_OVERRIDE, Ordering::Relaxed);
                tracing::info!("admission shed level back under the controller");
            }
        }
    }

    /// Where new connections are judged.
    pub fn mode(&self) -> &AdmissionMode {
        &self.inner.mode
    }

    /// Why this mode (the reason logged at start: the object used, or why XDP is not in use).
    pub fn reason(&self) -> &str {
        &self.inner.why
    }

    /// The level and counters now.
    pub fn snapshot(&self) -> AdmissionSnapshot {
        let c = self
            .inner
            .xdp
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|x| x.counters())
            .unwrap_or_default();
        AdmissionSnapshot {
            mode: self.inner.mode.clone(),
            shed_level_percent: self.inner.level.load(Ordering::Relaxed),
            passed: c.passed,
            dropped_by_rate: c.dropped_by_rate,
            dropped_by_shed: c.dropped_by_shed,
            allowed_listed: c.allowed_listed,
            userspace_shed: self.inner.userspace_shed.load(Ordering::Relaxed),
        }
    }

    /// Stops the controller and detaches the XDP program. Idempotent; also done on drop.
    pub fn shutdown(&self) {
        self.inner.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self
            .controller
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = h.join();
        }
        if let Some(mut x) = self
            .inner
            .xdp
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            x.detach();
            tracing::info!(interface = %x.interface, "admission XDP program detached");
        }
    }

    /// Stops and detaches (see [`Admission::shutdown`]).
    pub fn stop(self) {
        self.shutdown();
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problems::Problems;

    #[test]
    fn cidrs_parse() {
        assert_eq!(
            "10.0.0.0/8".parse::<Cidr>().unwrap(),
            Cidr {
                addr: "10.0.0.0".parse().unwrap(),
                prefix: 8
            }
        );
        assert_eq!("::1".parse::<Cidr>().unwrap().prefix, 128);
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nope".parse::<Cidr>().is_err());
    }

    #[test]
    fn config_defaults_and_validation() {
        let c: AdmissionConfig =
            toml::from_str("interface = \"eth0\"\nallow = [\"10.0.0.0/8\", \"bad\"]").unwrap();
        assert_eq!(c.mode, XdpModeConfig::Auto);
        assert_eq!(c.burst(), 2000);
        let mut p = Problems::default();
        c.validate("admission", &mut p);
        assert_eq!(p.0.len(), 1);
        assert_eq!(p.0[0].field, "admission.allow[1]");
        assert!(toml::from_str::<AdmissionConfig>("bogus = 1").is_err());
    }

    #[test]
    fn user_space_without_interface_sheds_at_the_level() {
        let a = Admission::start(None, 8080, Arc::new(LoadSample::default));
        assert_eq!(a.mode(), &AdmissionMode::UserSpace);
        assert!(!a.shed_new_connection());
        a.set_shed_override(Some(100));
        assert!((0..100).all(|_| a.shed_new_connection()));
        a.set_shed_override(Some(50));
        let shed = (0..10_000).filter(|_| a.shed_new_connection()).count();
        assert!((4000..6000).contains(&shed), "{shed}");
        a.set_shed_override(Some(0));
        assert!(!a.shed_new_connection());
        assert_eq!(a.snapshot().userspace_shed, 100 + shed as u64);
        a.stop();
    }
}
