//! The loaded configuration as the request path sees it: an immutable [`Snapshot`] shared by
//! every worker, swapped atomically on reload through the [`ConfigHub`], and each worker's own
//! [`WorkerView`] of it (connection pools, scrubbers) rebuilt when the generation changes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::metrics::{Counter, GuardCounters, Metrics, RouteMetrics};
use crate::route::RouteTable;
use crate::scrub::Scrubber;
use crate::upstream::{Upstream, UpstreamShared};

/// Everything built from one configuration file, shared read-only by all workers.
pub struct Snapshot {
    /// The validated configuration.
    pub config: Config,
    /// The route table.
    pub routes: RouteTable,
    /// Per-route metrics, by route index.
    pub route_metrics: Vec<Arc<RouteMetrics>>,
    /// Upstreams, by index in `config.upstreams`.
    pub upstreams: Vec<Arc<UpstreamShared>>,
    /// Built PII policies by name (cloned per worker).
    pub scrubbers: HashMap<String, Scrubber>,
    /// Egress guard counters by policy name: (detector, counters) in configuration order, and
    /// the policy's unpublished quarantine records.
    pub guard_metrics: HashMap<String, PolicyGuardMetrics>,
    /// SHA-256 of the file, first 16 hex digits.
    pub hash: String,
    /// Consumers, credentials and limits (the admit phase).
    pub edge: crate::admit::EdgePolicy,
}

/// The egress guard counters of one policy.
pub struct PolicyGuardMetrics {
    /// Each detector's counters, in configuration order.
    pub detectors: Vec<(String, Arc<GuardCounters>)>,
    /// Quarantine records not published.
    pub quarantine_failed: Arc<Counter>,
}

impl PolicyGuardMetrics {
    /// The counters of `detector` (none for a name the policy does not have).
    pub fn detector(&self, detector: &str) -> Option<&GuardCounters> {
        self.detectors
            .iter()
            .find(|(d, _)| d == detector)
            .map(|(_, c)| &**c)
    }
}

impl Snapshot {
    /// Builds a snapshot from a validated config (resolves upstream nodes, reads PII keys).
    /// `previous` is the snapshot a reload replaces: upstreams it has by name keep their
    /// nodes' health verdicts.
    pub fn build(
        config: Config,
        file_bytes: &[u8],
        metrics: &Metrics,
        previous: Option<&Snapshot>,
    ) -> Result<Snapshot, String> {
        let names: Vec<String> = config.upstreams.iter().map(|u| u.name.clone()).collect();
        let routes = RouteTable::new(&config.routes, &names, &|route, side| {
            metrics.split(route, side)
        });
        let route_metrics = config
            .routes
            .iter()
            .map(|r| metrics.route(&r.name))
            .collect();
        let mut upstreams = Vec::new();
        for u in &config.upstreams {
            let prev = previous.and_then(|p| p.upstreams.iter().find(|o| *o.name == *u.name));
            upstreams.push(Arc::new(UpstreamShared::build_after(
                u,
                metrics.upstream(&u.name),
                prev.map(|p| &**p),
            )?));
        }
        let mut scrubbers = HashMap::new();
        let mut guard_metrics = HashMap::new();
        for (name, p) in &config.pii {
            let s = crate::scrub::build(p).map_err(|e| format!("pii.{name}: {e}"))?;
            if s.guard_is_on() {
                let detectors = s
                    .guard_detectors()
                    .into_iter()
                    .map(|(d, _)| {
                        let c = metrics.guard(name, &d);
                        (d, c)
                    })
                    .collect();
                let quarantine_failed = metrics.quarantine_failed(name);
                guard_metrics.insert(
                    name.clone(),
                    PolicyGuardMetrics {
                        detectors,
                        quarantine_failed,
                    },
                );
            }
            scrubbers.insert(name.clone(), s);
        }
        let digest = Sha256::digest(file_bytes);
        let hash: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        let edge = crate::admit::EdgePolicy::build(&config, metrics)?;
        Ok(Snapshot {
            edge,
            config,
            routes,
            route_metrics,
            upstreams,
            scrubbers,
            guard_metrics,
            hash,
        })
    }

    /// Loads, validates and builds from a file (`previous`: see [`Snapshot::build`]).
    pub fn load(
        path: &Path,
        metrics: &Metrics,
        previous: Option<&Snapshot>,
    ) -> Result<Snapshot, String> {
        let bytes =
            std::fs::read(path).map_err(|e| format!("{}: cannot read ({e})", path.display()))?;
        let text = String::from_utf8(bytes.clone())
            .map_err(|_| format!("{}: not UTF-8 text", path.display()))?;
        let config = Config::from_toml(&text, path).map_err(|e| e.to_string())?;
        Snapshot::build(config, &bytes, metrics, previous)
    }
}

/// Where workers find the current snapshot. Swapped as a whole on reload.
pub struct ConfigHub {
    current: Mutex<Arc<Snapshot>>,
    generation: AtomicU64,
    /// The file reloads read.
    pub path: PathBuf,
}

impl ConfigHub {
    /// A hub holding `first`.
    pub fn new(first: Snapshot, path: PathBuf) -> Arc<ConfigHub> {
        Arc::new(ConfigHub {
            current: Mutex::new(Arc::new(first)),
            generation: AtomicU64::new(1),
            path,
        })
    }

    /// The generation number (changes on every successful reload).
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The current snapshot (takes a lock: call only when the generation changed).
    pub fn current(&self) -> Arc<Snapshot> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Publishes a new snapshot to every worker.
    pub fn publish(&self, s: Snapshot) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(s);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// One worker's view of a snapshot: its own pools and scrubber states.
pub struct WorkerView {
    /// The snapshot.
    pub snap: Arc<Snapshot>,
    /// Per-worker upstreams (pools), by index.
    pub upstreams: Vec<Upstream>,
    /// Per-worker scrubbers by policy name.
    pub scrubbers: HashMap<String, Scrubber>,
    /// The generation it was built from.
    pub generation: u64,
}

impl WorkerView {
    /// Builds worker `w`'s view. `previous` is the view a reload replaces: each upstream it
    /// has by name hands its outlier and breaker state over ([`Upstream::carry_from`]).
    pub fn new(
        snap: Arc<Snapshot>,
        generation: u64,
        w: usize,
        previous: Option<&WorkerView>,
    ) -> WorkerView {
        WorkerView {
            upstreams: snap
                .upstreams
                .iter()
                .map(|u| {
                    let up = Upstream::new(u.clone(), w);
                    let old =
                        previous.and_then(|p| p.upstreams.iter().find(|o| o.name() == up.name()));
                    if let Some(old) = old {
                        up.carry_from(old);
                    }
                    up
                })
                .collect(),
            scrubbers: snap.scrubbers.clone(),
            snap,
            generation,
        }
    }
}
