//! Metrics: per-worker counter slots (each written by one worker, relaxed atomics, cache-line
//! padded), summed at scrape into the Prometheus text format. No lock is taken on the request
//! path: the registries below are locked only when a config is built and when scraped.
//!
//! Names follow `relay_<what>_<unit>[_total]`; labels are low-cardinality (route, status,
//! reason, topic, upstream).

pub mod decode;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_utils::CachePadded;

use crate::reason::Reason;

/// Latency histogram bucket upper bounds, in seconds.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A counter with one slot per worker.
pub struct Counter(Box<[CachePadded<AtomicU64>]>);

impl Counter {
    /// A zero counter for `workers` workers.
    pub fn new(workers: usize) -> Self {
        Counter(
            (0..workers.max(1))
                .map(|_| CachePadded::new(AtomicU64::new(0)))
                .collect(),
        )
    }
    /// Adds one on worker `w`'s slot.
    #[inline]
    pub fn inc(&self, w: usize) {
        self.add(w, 1)
    }
    /// Adds `n` on worker `w`'s slot.
    #[inline]
    pub fn add(&self, w: usize, n: u64) {
        self.0[w % self.0.len()].fetch_add(n, Relaxed);
    }
    /// The sum over workers.
    pub fn sum(&self) -> u64 {
        self.0.iter().map(|c| c.load(Relaxed)).sum()
    }
}

/// A gauge with one slot per worker (each worker adds and subtracts its own part).
pub struct Gauge(Box<[CachePadded<AtomicI64>]>);

impl Gauge {
    /// A zero gauge.
    pub fn new(workers: usize) -> Self {
        Gauge(
            (0..workers.max(1))
                .map(|_| CachePadded::new(AtomicI64::new(0)))
                .collect(),
        )
    }
    /// Adds `d` (may be negative) on worker `w`'s slot.
    #[inline]
    pub fn add(&self, w: usize, d: i64) {
        self.0[w % self.0.len()].fetch_add(d, Relaxed);
    }
    /// Sets worker `w`'s slot to `v`.
    #[inline]
    pub fn set(&self, w: usize, v: i64) {
        self.0[w % self.0.len()].store(v, Relaxed);
    }
    /// Each worker's value (negative transients read as 0).
    pub fn per_worker(&self) -> Vec<u64> {
        self.0
            .iter()
            .map(|c| c.load(Relaxed).max(0) as u64)
            .collect()
    }
    /// The sum over workers.
    pub fn sum(&self) -> i64 {
        self.0.iter().map(|c| c.load(Relaxed)).sum()
    }
}

struct HistSlot {
    buckets: Box<[AtomicU64]>,
    sum_ns: AtomicU64,
    count: AtomicU64,
}

/// A fixed-bucket latency histogram with one slot per worker (exact counts, merged at scrape).
pub struct Histogram {
    bounds: &'static [f64],
    slots: Box<[CachePadded<HistSlot>]>,
}

impl Histogram {
    /// A histogram over [`LATENCY_BUCKETS`].
    pub fn new(workers: usize) -> Self {
        Self::with_bounds(workers, LATENCY_BUCKETS)
    }
    /// A histogram with the given upper bounds, in seconds, ascending.
    pub fn with_bounds(workers: usize, bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            slots: (0..workers.max(1))
                .map(|_| {
                    CachePadded::new(HistSlot {
                        buckets: (0..bounds.len()).map(|_| AtomicU64::new(0)).collect(),
                        sum_ns: AtomicU64::new(0),
                        count: AtomicU64::new(0),
                    })
                })
                .collect(),
        }
    }
    /// Records one observation on worker `w`.
    #[inline]
    pub fn observe(&self, w: usize, d: Duration) {
        let s = &self.slots[w % self.slots.len()];
        let secs = d.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|b| secs <= *b) {
            s.buckets[i].fetch_add(1, Relaxed);
        }
        s.sum_ns.fetch_add(d.as_nanos() as u64, Relaxed);
        s.count.fetch_add(1, Relaxed);
    }
    /// Merged (non-cumulative bucket counts, sum in seconds, count).
    pub fn snapshot(&self) -> (Vec<u64>, f64, u64) {
        let mut b = vec![0u64; self.bounds.len()];
        let mut sum = 0u64;
        let mut count = 0u64;
        for s in self.slots.iter() {
            for (i, c) in s.buckets.iter().enumerate() {
                b[i] += c.load(Relaxed);
            }
            sum += s.sum_ns.load(Relaxed);
            count += s.count.load(Relaxed);
        }
        (b, sum as f64 / 1e9, count)
    }
    /// Count of observations.
    pub fn count(&self) -> u64 {
        self.slots.iter().map(|s| s.count.load(Relaxed)).sum()
    }
}

/// Per-route metrics.
pub struct RouteMetrics {
    /// Responses by status code (index = code - 100), per worker.
    statuses: Box<[CachePadded<Box<[AtomicU64]>>]>,
    /// Request duration, receipt of the head to the last response byte written.
    pub duration: Histogram,
    /// Request body bytes received.
    pub bytes_in: Counter,
    /// Response bytes (head + body) sent.
    pub bytes_out: Counter,
    /// PII values hashed.
    pub pii_hashed: Counter,
    /// Compressed request bodies: decoded bytes and refusals.
    pub decode: decode::DecodeMetrics,
}

impl RouteMetrics {
    fn new(workers: usize) -> Self {
        RouteMetrics {
            statuses: (0..workers.max(1))
                .map(|_| {
                    CachePadded::new(
                        (100..600)
                            .map(|_| AtomicU64::new(0))
                            .collect::<Box<[AtomicU64]>>(),
                    )
                })
                .collect(),
            duration: Histogram::new(workers),
            bytes_in: Counter::new(workers),
            bytes_out: Counter::new(workers),
            pii_hashed: Counter::new(workers),
            decode: decode::DecodeMetrics::new(workers),
        }
    }
    /// Counts a response with `status` on worker `w`.
    #[inline]
    pub fn status(&self, w: usize, status: u16) {
        let i = (status.clamp(100, 599) - 100) as usize;
        self.statuses[w % self.statuses.len()][i].fetch_add(1, Relaxed);
    }
    /// (status, count) for every status seen.
    pub fn status_counts(&self) -> Vec<(u16, u64)> {
        let mut out = Vec::new();
        for i in 0..500 {
            let n: u64 = self.statuses.iter().map(|s| s[i].load(Relaxed)).sum();
            if n > 0 {
                out.push((i as u16 + 100, n));
            }
        }
        out
    }
}

/// The live state of one upstream node, written by the upstream client and read at scrape
/// (and by the admin `/upstreams` view).
pub struct NodeStatus {
    /// `host:port` as configured.
    pub label: String,
    /// 1 while active health checks judge the node healthy (always 1 without checks).
    pub healthy: AtomicI64,
    /// Per worker: 1 while that worker's outlier detection has the node ejected.
    pub ejected: Gauge,
}

impl NodeStatus {
    /// A healthy, not ejected node.
    pub fn new(label: String, workers: usize) -> NodeStatus {
        NodeStatus {
            label,
            healthy: AtomicI64::new(1),
            ejected: Gauge::new(workers),
        }
    }
}

/// Per-upstream metrics.
pub struct UpstreamMetrics {
    /// Connections open (pooled + in use).
    pub open: Gauge,
    /// Requests sent on a reused pooled connection.
    pub reused: Counter,
    /// Connections created.
    pub created: Counter,
    /// Retries granted by the retry policy and budget.
    pub retries: Counter,
    /// Retries the policy allowed but the retry budget refused.
    pub budget_exhausted: Counter,
    /// Pooled connections found closed by the upstream before reuse (closed, never used).
    pub stale: Counter,
    /// Passive outlier ejections of a node (by any worker).
    pub ejections: Counter,
    /// Times a worker's circuit breaker opened.
    pub circuit_opened: Counter,
    /// Requests answered 503 `upstream_unavailable` by an open circuit.
    pub circuit_rejected: Counter,
    /// Per worker: 1 while its circuit is open or half-open, else 0.
    pub circuit_open: Gauge,
    /// Active health probes sent, and those that failed.
    pub probes: Counter,
    /// Active health probes that failed.
    pub probe_failures: Counter,
    /// The nodes' live state (replaced when the upstream is rebuilt).
    pub nodes: Mutex<Vec<Arc<NodeStatus>>>,
    errors_502: Counter,
    errors_504: Counter,
    /// Time from sending the request to the whole response read.
    pub duration: Histogram,
}

impl UpstreamMetrics {
    /// The registry's worker count (slots per counter).
    pub fn workers(&self) -> usize {
        self.open.0.len()
    }
    fn new(workers: usize) -> Self {
        UpstreamMetrics {
            open: Gauge::new(workers),
            reused: Counter::new(workers),
            created: Counter::new(workers),
            retries: Counter::new(workers),
            budget_exhausted: Counter::new(workers),
            stale: Counter::new(workers),
            ejections: Counter::new(workers),
            circuit_opened: Counter::new(workers),
            circuit_rejected: Counter::new(workers),
            circuit_open: Gauge::new(workers),
            probes: Counter::new(workers),
            probe_failures: Counter::new(workers),
            nodes: Mutex::new(Vec::new()),
            errors_502: Counter::new(workers),
            errors_504: Counter::new(workers),
            duration: Histogram::new(workers),
        }
    }
    /// Counts a failed exchange: `timed_out` (answered 504) or not (502/503).
    pub fn error(&self, w: usize, timed_out: bool) {
        if timed_out {
            self.errors_504.inc(w)
        } else {
            self.errors_502.inc(w)
        }
    }
}

/// A renderer of extra metric families (Kafka path, admission), appended at scrape.
pub type ExtraRenderer = Box<dyn Fn(&mut String) + Send + Sync>;

/// The process-wide metrics registry.
pub struct Metrics {
    workers: usize,
    routes: Mutex<BTreeMap<String, Arc<RouteMetrics>>>,
    upstreams: Mutex<BTreeMap<String, Arc<UpstreamMetrics>>>,
    rejected: Vec<Counter>,
    /// Connections accepted by the data listeners.
    pub connections_accepted: Counter,
    /// Connections currently open on the data listeners.
    pub connections_open: Gauge,
    /// Connections closed at accept because the worker had `max_connections` open.
    pub connections_refused: Counter,
    /// Panics caught while handling a connection (each ended that connection only).
    pub panics: Counter,
    /// Requests in flight (head read, response not yet written), per worker.
    pub inflight: Gauge,
    /// Config reloads that succeeded.
    pub reloads_ok: AtomicU64,
    /// Config reloads refused.
    pub reloads_failed: AtomicU64,
    /// Hash of the loaded config file.
    pub config_hash: Mutex<String>,
    /// `io_uring` or `epoll`.
    pub io_engine: Mutex<String>,
    extras: Mutex<Vec<ExtraRenderer>>,
    consumers: Mutex<BTreeMap<String, Arc<ConsumerMetrics>>>,
    guard: Mutex<BTreeMap<(String, String), Arc<GuardCounters>>>,
    quarantine_failed: Mutex<BTreeMap<String, Arc<Counter>>>,
    /// `relay_split_requests_total` by (route, side upstream): config names only.
    splits: Mutex<BTreeMap<(String, String), Arc<Counter>>>,
    /// Rate and quota counters of consumers and routes (kept across reloads).
    pub limits: crate::limit::LimitStore,
}

/// The `action` label of `relay_guard_findings_total`, in [`GuardCounters`] order.
pub const GUARD_ACTIONS: [&str; 3] = ["reject", "hash", "report"];

/// Egress guard findings of one policy's detector, by action ([`GUARD_ACTIONS`]): `reject`
/// counts refused requests, `hash` and `report` count values found (one per value per
/// detector).
pub struct GuardCounters(pub [Counter; 3]);

impl GuardCounters {
    /// The counter of `action`.
    pub fn of(&self, action: crate::scrub::GuardAction) -> &Counter {
        use crate::scrub::GuardAction::*;
        &self.0[match action {
            Reject => 0,
            Hash => 1,
            Report => 2,
        }]
    }
}

/// What happened to one consumer's requests at admission (label `consumer`: config names only).
pub struct ConsumerMetrics {
    /// By outcome, in the order of [`CONSUMER_OUTCOMES`].
    pub outcomes: [Counter; 4],
}

/// The `outcome` label of `relay_consumer_requests_total`.
pub const CONSUMER_OUTCOMES: [&str; 4] =
    ["admitted", "forbidden", "rate_limited", "quota_exceeded"];

impl Metrics {
    /// An empty registry for `workers` workers.
    pub fn new(workers: usize) -> Arc<Metrics> {
        Arc::new(Metrics {
            workers,
            routes: Mutex::new(BTreeMap::new()),
            upstreams: Mutex::new(BTreeMap::new()),
            rejected: Reason::ALL.iter().map(|_| Counter::new(workers)).collect(),
            connections_accepted: Counter::new(workers),
            connections_open: Gauge::new(workers),
            connections_refused: Counter::new(workers),
            panics: Counter::new(workers),
            inflight: Gauge::new(workers),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            config_hash: Mutex::new(String::new()),
            io_engine: Mutex::new(String::new()),
            extras: Mutex::new(Vec::new()),
            consumers: Mutex::new(BTreeMap::new()),
            guard: Mutex::new(BTreeMap::new()),
            quarantine_failed: Mutex::new(BTreeMap::new()),
            splits: Mutex::new(BTreeMap::new()),
            limits: crate::limit::LimitStore::default(),
        })
    }

    /// Number of worker slots.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// The metrics of route `name` (kept across reloads).
    pub fn route(&self, name: &str) -> Arc<RouteMetrics> {
        let mut m = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(name.to_string())
            .or_insert_with(|| Arc::new(RouteMetrics::new(self.workers)))
            .clone()
    }

    /// The metrics of upstream `name` (kept across reloads).
    pub fn upstream(&self, name: &str) -> Arc<UpstreamMetrics> {
        let mut m = self.upstreams.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(name.to_string())
            .or_insert_with(|| Arc::new(UpstreamMetrics::new(self.workers)))
            .clone()
    }

    /// The admission counters of consumer `name` (kept across reloads).
    pub fn consumer(&self, name: &str) -> Arc<ConsumerMetrics> {
        let mut m = self.consumers.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(ConsumerMetrics {
                    outcomes: std::array::from_fn(|_| Counter::new(self.workers)),
                })
            })
            .clone()
    }

    /// The guard counters of detector `detector` of policy `policy` (kept across reloads).
    pub fn guard(&self, policy: &str, detector: &str) -> Arc<GuardCounters> {
        let mut m = self.guard.lock().unwrap_or_else(|p| p.into_inner());
        m.entry((policy.to_string(), detector.to_string()))
            .or_insert_with(|| {
                Arc::new(GuardCounters(std::array::from_fn(|_| {
                    Counter::new(self.workers)
                })))
            })
            .clone()
    }

    /// Quarantine records of policy `policy` that were not published (kept across reloads).
    pub fn quarantine_failed(&self, policy: &str) -> Arc<Counter> {
        let mut m = self
            .quarantine_failed
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        m.entry(policy.to_string())
            .or_insert_with(|| Arc::new(Counter::new(self.workers)))
            .clone()
    }

    /// The request counter of side `upstream` of route `route`'s split (kept across reloads).
    pub fn split(&self, route: &str, upstream: &str) -> Arc<Counter> {
        let mut m = self.splits.lock().unwrap_or_else(|p| p.into_inner());
        m.entry((route.to_string(), upstream.to_string()))
            .or_insert_with(|| Arc::new(Counter::new(self.workers)))
            .clone()
    }

    fn render_splits(&self, out: &mut String) {
        let splits = self.splits.lock().unwrap_or_else(|p| p.into_inner());
        if splits.is_empty() {
            return;
        }
        family(
            out,
            "relay_split_requests_total",
            "counter",
            "Requests (parts of a split batch) sent to each side of a route's weighted split.",
        );
        for ((route, upstream), c) in splits.iter() {
            let _ = writeln!(
                out,
                "relay_split_requests_total{{route=\"{}\",upstream=\"{}\"}} {}",
                esc(route),
                esc(upstream),
                c.sum()
            );
        }
    }

    /// Counts a rejection with `reason` on worker `w`.
    #[inline]
    pub fn rejected(&self, w: usize, reason: Reason) {
        self.rejected[reason.index()].inc(w);
    }

    /// Rejections counted for `reason`.
    pub fn rejected_count(&self, reason: Reason) -> u64 {
        self.rejected[reason.index()].sum()
    }

    /// Registers a renderer of extra families (called at every scrape).
    pub fn add_renderer(&self, r: ExtraRenderer) {
        self.extras
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(r);
    }

    /// The whole registry in the Prometheus text exposition format (version 0.0.4): the
    /// families of [`ROUTE_FAMILIES`], [`PROCESS_FAMILIES`] and [`UPSTREAM_FAMILIES`], the
    /// labelled ones written out below, then the registered extra renderers (Kafka path,
    /// spool, admission) and the process families.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let engine = self
            .io_engine
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        family(
            &mut out,
            "relay_build_info",
            "gauge",
            "Build and runtime information.",
        );
        let _ = writeln!(
            out,
            "relay_build_info{{version=\"{}\",io_engine=\"{}\",workers=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION"),
            esc(&engine),
            self.workers
        );

        self.render_routes(&mut out);
        self.render_requests(&mut out);
        self.render_upstreams(&mut out);
        self.render_config(&mut out);
        self.render_guard(&mut out);
        self.render_splits(&mut out);
        for r in self.extras.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            r(&mut out);
        }
        process_metrics(&mut out);
        out
    }

    /// Per-route families: requests by status, durations, bytes, PII values hashed.
    fn render_routes(&self, out: &mut String) {
        let routes = named(&self.routes);
        family(
            out,
            "relay_requests_total",
            "counter",
            "Requests answered, by route and status code.",
        );
        for (name, r) in &routes {
            for (code, n) in r.status_counts() {
                let _ = writeln!(
                    out,
                    "relay_requests_total{{route=\"{}\",status=\"{code}\"}} {n}",
                    esc(name)
                );
            }
        }
        family(
            out,
            "relay_request_duration_seconds",
            "histogram",
            "Time from a request's head to its last response byte written, by route.",
        );
        for (name, r) in &routes {
            let labels = format!("route=\"{}\"", esc(name));
            histogram(out, "relay_request_duration_seconds", &labels, &r.duration);
        }
        per_name(out, "route", &routes, ROUTE_FAMILIES);
        let decode: Vec<_> = routes.iter().map(|(n, r)| (n.clone(), &r.decode)).collect();
        decode::render(out, &decode);
    }

    /// Rejections by reason, and the connection, panic and in-flight families.
    fn render_requests(&self, out: &mut String) {
        family(
            out,
            "relay_rejected_requests_total",
            "counter",
            "Requests not forwarded, by reason.",
        );
        for r in Reason::ALL {
            let n = self.rejected[r.index()].sum();
            let _ = writeln!(
                out,
                "relay_rejected_requests_total{{reason=\"{}\"}} {n}",
                r.as_str()
            );
        }
        for (name, kind, help, get) in PROCESS_FAMILIES {
            family(out, name, kind, help);
            let _ = writeln!(out, "{name} {}", get(self));
        }
        family(
            out,
            "relay_connections_refused_total",
            "counter",
            "Client connections closed at accept, by reason.",
        );
        let _ = writeln!(
            out,
            "relay_connections_refused_total{{reason=\"max_connections\"}} {}",
            self.connections_refused.sum()
        );
    }

    /// Per-upstream families: exchange durations, connections, retries, errors.
    fn render_upstreams(&self, out: &mut String) {
        let ups = named(&self.upstreams);
        family(
            out,
            "relay_upstream_duration_seconds",
            "histogram",
            "Upstream exchange time, by upstream.",
        );
        for (name, u) in &ups {
            let labels = format!("upstream=\"{}\"", esc(name));
            histogram(out, "relay_upstream_duration_seconds", &labels, &u.duration);
        }
        per_name(out, "upstream", &ups, UPSTREAM_FAMILIES);
        let nodes: Vec<(String, Vec<Arc<NodeStatus>>)> = ups
            .iter()
            .map(|(n, u)| {
                let list = u.nodes.lock().unwrap_or_else(|p| p.into_inner()).clone();
                (n.clone(), list)
            })
            .collect();
        for (fam, help, get) in [
            (
                "relay_upstream_node_healthy",
                "1 while active health checks judge the node healthy.",
                (|s: &NodeStatus| s.healthy.load(Relaxed).max(0)) as fn(&NodeStatus) -> i64,
            ),
            (
                "relay_upstream_node_ejected_workers",
                "Workers whose outlier detection has the node ejected.",
                |s: &NodeStatus| s.ejected.sum().max(0),
            ),
        ] {
            family(out, fam, "gauge", help);
            for (name, list) in &nodes {
                for s in list {
                    let _ = writeln!(
                        out,
                        "{fam}{{upstream=\"{}\",node=\"{}\"}} {}",
                        esc(name),
                        esc(&s.label),
                        get(s)
                    );
                }
            }
        }
        family(
            out,
            "relay_upstream_errors_total",
            "counter",
            "Upstream failures answered 502 or 504.",
        );
        for (name, u) in &ups {
            for (status, n) in [("502", u.errors_502.sum()), ("504", u.errors_504.sum())] {
                let _ = writeln!(
                    out,
                    "relay_upstream_errors_total{{upstream=\"{}\",status=\"{status}\"}} {n}",
                    esc(name)
                );
            }
        }
    }

    /// Reloads by result and the loaded configuration's hash.
    fn render_config(&self, out: &mut String) {
        family(
            out,
            "relay_config_reloads_total",
            "counter",
            "Configuration reloads, by result.",
        );
        for (result, n) in [
            ("success", &self.reloads_ok),
            ("failure", &self.reloads_failed),
        ] {
            let _ = writeln!(
                out,
                "relay_config_reloads_total{{result=\"{result}\"}} {}",
                n.load(Relaxed)
            );
        }
        family(
            out,
            "relay_config_info",
            "gauge",
            "The loaded configuration's SHA-256 (first 16 hex digits).",
        );
        let hash = self
            .config_hash
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let _ = writeln!(out, "relay_config_info{{hash=\"{}\"}} 1", esc(&hash));
        let consumers = self.consumers.lock().unwrap_or_else(|p| p.into_inner());
        if !consumers.is_empty() {
            family(
                out,
                "relay_consumer_requests_total",
                "counter",
                "Requests of each configured consumer at admission, by outcome.",
            );
            for (name, m) in consumers.iter() {
                for (o, c) in CONSUMER_OUTCOMES.iter().zip(&m.outcomes) {
                    let _ = writeln!(
                        out,
                        "relay_consumer_requests_total{{consumer=\"{}\",outcome=\"{o}\"}} {}",
                        esc(name),
                        c.sum()
                    );
                }
            }
        }
    }
}

impl Metrics {
    /// The egress guard families (always announced, series per configured detector).
    fn render_guard(&self, out: &mut String) {
        family(
            out,
            "relay_guard_findings_total",
            "counter",
            "Egress guard findings, by policy, detector and action (reject: requests refused; hash, report: values found).",
        );
        for ((policy, detector), c) in named(&self.guard) {
            for (a, n) in GUARD_ACTIONS.iter().zip(&c.0) {
                let _ = writeln!(
                    out,
                    "relay_guard_findings_total{{policy=\"{}\",detector=\"{}\",action=\"{a}\"}} {}",
                    esc(&policy),
                    esc(&detector),
                    n.sum()
                );
            }
        }
        family(
            out,
            "relay_guard_quarantine_failed_total",
            "counter",
            "Quarantine records not published (Kafka queue full, record too large, or delivery failed), by policy.",
        );
        for (policy, c) in named(&self.quarantine_failed) {
            let _ = writeln!(
                out,
                "relay_guard_quarantine_failed_total{{policy=\"{}\"}} {}",
                esc(&policy),
                c.sum()
            );
        }
    }
}

/// A family with one series per route or upstream: name, type, help, and the value of one.
type PerName<T> = (&'static str, &'static str, &'static str, fn(&T) -> u64);

/// The per-route families with one value per route.
const ROUTE_FAMILIES: &[PerName<RouteMetrics>] = &[
    (
        "relay_bytes_received_total",
        "counter",
        "Request body bytes received, by route.",
        |r| r.bytes_in.sum(),
    ),
    (
        "relay_bytes_sent_total",
        "counter",
        "Response bytes sent to clients, by route.",
        |r| r.bytes_out.sum(),
    ),
    (
        "relay_pii_fields_hashed_total",
        "counter",
        "PII values pseudonymised, by route.",
        |r| r.pii_hashed.sum(),
    ),
];

/// The per-upstream families with one value per upstream.
const UPSTREAM_FAMILIES: &[PerName<UpstreamMetrics>] = &[
    (
        "relay_upstream_connections_open",
        "gauge",
        "Upstream connections open (pooled or in use).",
        |u| u.open.sum().max(0) as u64,
    ),
    (
        "relay_upstream_connections_reused_total",
        "counter",
        "Requests sent on a reused keep-alive connection.",
        |u| u.reused.sum(),
    ),
    (
        "relay_upstream_connections_created_total",
        "counter",
        "Upstream connections created.",
        |u| u.created.sum(),
    ),
    (
        "relay_upstream_retries_total",
        "counter",
        "Retries granted by the retry policy and budget (each to another node when there is one).",
        |u| u.retries.sum(),
    ),
    (
        "relay_upstream_retry_budget_exhausted_total",
        "counter",
        "Retries the retry policy allowed but the retry budget refused.",
        |u| u.budget_exhausted.sum(),
    ),
    (
        "relay_upstream_connections_stale_total",
        "counter",
        "Pooled connections found closed by the upstream before reuse (never written to).",
        |u| u.stale.sum(),
    ),
    (
        "relay_upstream_ejections_total",
        "counter",
        "Passive outlier ejections of a node, by upstream.",
        |u| u.ejections.sum(),
    ),
    (
        "relay_upstream_circuit_opened_total",
        "counter",
        "Times a worker's circuit breaker opened, by upstream.",
        |u| u.circuit_opened.sum(),
    ),
    (
        "relay_upstream_circuit_rejected_total",
        "counter",
        "Requests answered 503 upstream_unavailable by an open circuit.",
        |u| u.circuit_rejected.sum(),
    ),
    (
        "relay_upstream_circuit_open_workers",
        "gauge",
        "Workers whose circuit breaker for the upstream is open or half-open.",
        |u| u.circuit_open.sum().max(0) as u64,
    ),
    (
        "relay_upstream_health_probes_total",
        "counter",
        "Active health probes sent.",
        |u| u.probes.sum(),
    ),
    (
        "relay_upstream_health_probe_failures_total",
        "counter",
        "Active health probes that failed.",
        |u| u.probe_failures.sum(),
    ),
];

/// A family with a single unlabelled series: name, type, help, value.
type Unlabelled = (
    &'static str,
    &'static str,
    &'static str,
    fn(&Metrics) -> i64,
);

/// The unlabelled families of the data plane.
const PROCESS_FAMILIES: &[Unlabelled] = &[
    (
        "relay_connections_accepted_total",
        "counter",
        "Client connections accepted.",
        |m| m.connections_accepted.sum() as i64,
    ),
    (
        "relay_connections_open",
        "gauge",
        "Client connections open.",
        |m| m.connections_open.sum(),
    ),
    (
        "relay_panics_total",
        "counter",
        "Panics caught while handling a connection; each ended that connection only.",
        |m| m.panics.sum() as i64,
    ),
    (
        "relay_requests_in_flight",
        "gauge",
        "Requests being handled.",
        |m| m.inflight.sum(),
    ),
];

/// A consistent copy of a name -> metrics registry, sorted by name.
fn named<K: Clone + Ord, T>(m: &Mutex<BTreeMap<K, Arc<T>>>) -> Vec<(K, Arc<T>)> {
    m.lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Writes each family of `table` with one series per entry of `items`, labelled `label`.
fn per_name<T>(out: &mut String, label: &str, items: &[(String, Arc<T>)], table: &[PerName<T>]) {
    for (name, kind, help, get) in table {
        family(out, name, kind, help);
        for (item, m) in items {
            let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {}", esc(item), get(m));
        }
    }
}

/// Writes `# HELP` and `# TYPE` lines.
pub fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Writes one histogram's `_bucket`, `_sum` and `_count` lines with `labels` (no braces).
pub fn histogram(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    let (b, sum, count) = h.snapshot();
    let cumulative: Vec<u64> = b
        .iter()
        .scan(0, |acc, n| {
            *acc += n;
            Some(*acc)
        })
        .collect();
    histogram_series(out, name, labels, h.bounds, &cumulative, sum, count);
}

/// Writes a histogram's series from its bucket bounds (seconds), the cumulative count at each
/// bound, the sum (seconds) and the count (the `+Inf` bucket).
pub fn histogram_series(
    out: &mut String,
    name: &str,
    labels: &str,
    bounds: &[f64],
    cumulative: &[u64],
    sum: f64,
    count: u64,
) {
    let sep = if labels.is_empty() { "" } else { "," };
    for (bound, cum) in bounds.iter().zip(cumulative) {
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cum}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
    let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
}

/// Escapes a label value.
pub fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn process_metrics(out: &mut String) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // Fields after the parenthesised command name.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as f64;
    if f.len() > 22 {
        let utime: f64 = f[11].parse().unwrap_or(0.0);
        let stime: f64 = f[12].parse().unwrap_or(0.0);
        let rss: f64 = f[21].parse().unwrap_or(0.0);
        family(
            out,
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time, seconds.",
        );
        let _ = writeln!(out, "process_cpu_seconds_total {}", (utime + stime) / ticks);
        family(
            out,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory, bytes.",
        );
        let _ = writeln!(out, "process_resident_memory_bytes {}", rss * page);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_sum_over_workers_and_render() {
        let m = Metrics::new(2);
        let r = m.route("app-logs");
        r.status(0, 200);
        r.status(1, 200);
        r.status(1, 502);
        r.duration.observe(0, Duration::from_millis(3));
        m.rejected(1, Reason::from_code("invalid_json"));
        m.rejected(0, Reason::from_code("not-a-reason"));
        let text = m.render();
        assert!(
            text.contains("relay_requests_total{route=\"app-logs\",status=\"200\"} 2"),
            "{text}"
        );
        assert!(text.contains("relay_requests_total{route=\"app-logs\",status=\"502\"} 1"));
        assert!(text
            .contains("relay_request_duration_seconds_bucket{route=\"app-logs\",le=\"0.005\"} 1"));
        assert!(text.contains("relay_request_duration_seconds_count{route=\"app-logs\"} 1"));
        assert!(text.contains("relay_rejected_requests_total{reason=\"invalid_json\"} 1"));
        assert!(text.contains("relay_rejected_requests_total{reason=\"other\"} 1"));
    }
}
