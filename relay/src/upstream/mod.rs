//! Upstreams: nodes chosen by smooth weighted round robin or least request among the usable
//! ones (healthy by active checks, not ejected by passive outlier detection), a per-worker
//! bounded keep-alive pool per node, TLS, a circuit breaker, and the exchange of one request
//! for one response under an explicit retry policy and retry budget.
//!
//! What every worker shares about an upstream ([`UpstreamShared`]) is immutable except the
//! per-node atomics ([`NodeShared`]): the health verdict of the one worker that checks it
//! ([`checker`]) and the address the DNS refresher ([`dns`]) last resolved. Everything else
//! (pools, balancer, outlier, breaker and budget state) is one worker's own view.

pub mod balance;
pub mod breaker;
pub mod budget;
pub mod checker;
pub mod config;
pub mod dns;
pub mod endpoints;
pub mod error;
pub mod health;
pub mod outlier;
pub mod pool;
pub mod response;
pub mod stream;
pub mod tls;

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use monoio::net::TcpStream;
use monoio_rustls::TlsConnector;
use rustls::pki_types::ServerName;

use crate::metrics::{NodeStatus, UpstreamMetrics};
pub use config::{parse_node_address, Lb, NodeConfig, RetryOn, TlsConfig, UpstreamConfig};
pub use error::UpstreamError;
use pool::{Checkout, Pool};
pub use response::UpstreamResponse;
use response::{read_response, ExchangeError};
use stream::UpstreamStream;

/// One node as configured, resolved once at build.
#[derive(Debug, Clone)]
pub struct Node {
    /// First address resolved when the upstream was built (see [`NodeShared::addrs`] for the
    /// live set).
    pub addr: SocketAddr,
    /// Every usable address resolved when the upstream was built.
    pub addrs: Vec<SocketAddr>,
    /// `host:port` as configured.
    pub label: String,
    /// WRR weight.
    pub weight: i64,
    /// TLS name (SNI + verification) when the upstream uses TLS.
    pub server_name: Option<ServerName<'static>>,
    /// The host name to re-resolve; `None` for an IP literal.
    pub dns_name: Option<String>,
}

/// The state of one node that every worker sees: atomics, written off the request path.
pub struct NodeShared {
    /// Active health verdict (written by the checking worker only).
    pub health: health::NodeHealth,
    /// Live state for metrics and the admin view.
    pub status: Arc<NodeStatus>,
    addrs: Mutex<Arc<[SocketAddr]>>,
    addr_generation: AtomicU64,
}

impl NodeShared {
    /// The addresses traffic goes to now (never empty; a host name with several addresses
    /// has them all, sorted, IPv4 ones only when there are any: see [`dns::usable_addrs`]).
    pub fn addrs(&self) -> Arc<[SocketAddr]> {
        self.addrs.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The first of [`NodeShared::addrs`].
    pub fn addr(&self) -> SocketAddr {
        self.addrs()[0]
    }

    /// Bumped each time the address set changes (workers drain their pools for the old one).
    pub fn addr_generation(&self) -> u64 {
        self.addr_generation.load(Ordering::Acquire)
    }

    /// Points the node at `addrs` (ignored when empty); returns whether the set changed.
    pub fn set_addrs(&self, addrs: &[SocketAddr]) -> bool {
        if addrs.is_empty() {
            return false;
        }
        let mut cur = self.addrs.lock().unwrap_or_else(|p| p.into_inner());
        if **cur == *addrs {
            return false;
        }
        *cur = Arc::from(addrs);
        self.addr_generation.fetch_add(1, Ordering::AcqRel);
        true
    }
}

/// What every worker shares about one upstream (immutable but for the node atomics; rebuilt
/// on reload).
pub struct UpstreamShared {
    /// Upstream name.
    pub name: Arc<str>,
    /// Nodes.
    pub nodes: Vec<Node>,
    /// Per-node shared state, by node index.
    pub node_state: Vec<NodeShared>,
    /// `Host` header value sent.
    pub host_header: String,
    /// TLS client config when the upstream is HTTPS.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The configuration it was built from.
    pub cfg: UpstreamConfig,
    /// Counters (per worker slots inside).
    pub metrics: Arc<UpstreamMetrics>,
}

impl UpstreamShared {
    /// Resolves the nodes and builds the TLS config. Errors name the upstream and what to do.
    pub fn build(
        cfg: &UpstreamConfig,
        metrics: Arc<UpstreamMetrics>,
    ) -> Result<UpstreamShared, String> {
        Self::build_after(cfg, metrics, None)
    }

    /// [`UpstreamShared::build`] for a reload: each node `previous` (the same upstream in the
    /// configuration being replaced) also has, by label, keeps its health verdict.
    pub fn build_after(
        cfg: &UpstreamConfig,
        metrics: Arc<UpstreamMetrics>,
        previous: Option<&UpstreamShared>,
    ) -> Result<UpstreamShared, String> {
        let tls = match &cfg.tls {
            Some(t) => Some(
                tls::client_config(t.ca_file.as_deref())
                    .map_err(|e| format!("upstream {}: {e}", cfg.name))?,
            ),
            None => None,
        };
        let mut nodes = Vec::new();
        for n in &cfg.nodes {
            let (host, _port) = parse_node_address(n.address())?;
            let resolved: Vec<SocketAddr> = n
                .address()
                .to_socket_addrs()
                .map_err(|e| {
                    format!(
                        "upstream {}: cannot resolve {} ({e}); check the name or use an IP",
                        cfg.name,
                        n.address()
                    )
                })?
                .collect();
            let addrs = dns::usable_addrs(&resolved);
            let Some(&addr) = addrs.first() else {
                return Err(format!(
                    "upstream {}: {} resolves to no address",
                    cfg.name,
                    n.address()
                ));
            };
            let server_name = match &cfg.tls {
                Some(t) => {
                    let name = t.server_name.clone().unwrap_or(host.clone());
                    Some(
                        tls::server_name(&name)
                            .map_err(|e| format!("upstream {}: {e}", cfg.name))?,
                    )
                }
                None => None,
            };
            nodes.push(Node {
                addr,
                addrs,
                label: n.address().to_string(),
                weight: n.weight() as i64,
                server_name,
                dns_name: host.parse::<IpAddr>().is_err().then(|| host.clone()),
            });
        }
        let host_header = cfg.host.clone().unwrap_or_else(|| {
            match cfg.tls.as_ref().and_then(|t| t.server_name.clone()) {
                Some(sn) => {
                    let port = nodes.first().map(|n| n.addr.port()).unwrap_or(443);
                    if port == 443 {
                        sn
                    } else {
                        format!("{sn}:{port}")
                    }
                }
                None => cfg
                    .nodes
                    .first()
                    .map(|n| n.address().to_string())
                    .unwrap_or_default(),
            }
        });
        let workers = metrics.workers();
        let node_state: Vec<NodeShared> = nodes
            .iter()
            .map(|n| NodeShared {
                health: health::NodeHealth::default(),
                status: Arc::new(NodeStatus::new(n.label.clone(), workers)),
                addrs: Mutex::new(Arc::from(n.addrs.as_slice())),
                addr_generation: AtomicU64::new(0),
            })
            .collect();
        if let Some(prev) = previous {
            for (i, j) in node_pairs(&nodes, &prev.nodes) {
                let (new, old) = (&node_state[i], &prev.node_state[j]);
                new.health.carry_from(&old.health);
                new.status.healthy.store(
                    i64::from(new.health.is_healthy()),
                    std::sync::atomic::Ordering::Relaxed,
                );
            }
        }
        *metrics.nodes.lock().unwrap_or_else(|p| p.into_inner()) =
            node_state.iter().map(|s| s.status.clone()).collect();
        Ok(UpstreamShared {
            name: Arc::from(cfg.name.as_str()),
            nodes,
            node_state,
            host_header,
            tls,
            cfg: cfg.clone(),
            metrics,
        })
    }

    /// The live state as JSON, for the admin `GET /upstreams`.
    pub fn status_json(&self) -> serde_json::Value {
        let nodes: Vec<serde_json::Value> = self
            .nodes
            .iter()
            .zip(&self.node_state)
            .map(|(n, s)| {
                serde_json::json!({
                    "node": n.label,
                    "address": s.addr().to_string(),
                    "addresses": s.addrs().iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                    "healthy": s.health.is_healthy(),
                    "ejected_workers": s.status.ejected.sum().max(0),
                    "health_probes": s.health.probes_total(),
                })
            })
            .collect();
        let m = &self.metrics;
        serde_json::json!({
            "name": &*self.name,
            "lb": self.cfg.lb,
            "health_checks": self.cfg.health.is_some(),
            "outlier_detection": self.cfg.outlier.is_some(),
            "breaker": self.cfg.breaker.is_some(),
            "circuit_open_workers": m.circuit_open.sum().max(0),
            "connections_open": m.open.sum().max(0),
            "retries": m.retries.sum(),
            "retry_budget_exhausted": m.budget_exhausted.sum(),
            "ejections": m.ejections.sum(),
            "nodes": nodes,
        })
    }
}

/// `(new index, old index)` of the nodes both lists have, matched by label.
fn node_pairs(new: &[Node], old: &[Node]) -> Vec<(usize, usize)> {
    new.iter()
        .enumerate()
        .filter_map(|(i, n)| old.iter().position(|o| o.label == n.label).map(|j| (i, j)))
        .collect()
}

impl Drop for Upstream {
    fn drop(&mut self) {
        // The pooled connections close with this view (after a reload): keep the gauges right.
        let idle = self.idle_count() as i64;
        self.shared.metrics.open.add(self.worker, -idle);
        if !self.carried.get() {
            self.shared.metrics.circuit_open.set(self.worker, 0);
        }
        for s in &self.shared.node_state {
            s.status.ejected.set(self.worker, 0);
        }
    }
}

/// How one attempt on one node failed, which decides whether it may be retried.
enum AttemptError {
    /// Nothing was sent (connect refused, timed out, TLS failed).
    Connect(UpstreamError, Vec<u8>),
    /// The connection failed before the whole request was written.
    BeforeWrite(ExchangeError, Vec<u8>),
    /// The connection failed after the whole request was written.
    AfterWrite(ExchangeError, Vec<u8>),
    /// Not retryable (deadline passed, invalid response, no free connection).
    Final(UpstreamError),
}

/// One worker's view of an upstream: its balancer, pool, and resilience state.
pub struct Upstream {
    /// Shared part.
    pub shared: Arc<UpstreamShared>,
    connector: Option<TlsConnector>,
    wrr: RefCell<Vec<i64>>,
    rng: RefCell<balance::Rng>,
    in_flight: RefCell<Vec<u32>>,
    /// The addresses this worker's new connections go to, per node.
    addrs: RefCell<Vec<endpoints::NodeAddrs>>,
    pool: Pool,
    worker: usize,
    /// Passive outlier ejection (`[upstreams.outlier]`), this worker's view.
    outliers: Option<RefCell<outlier::Outliers>>,
    /// Circuit breaker (`[upstreams.breaker]`), this worker's view.
    breaker: Option<RefCell<breaker::Breaker>>,
    budget: RefCell<budget::RetryBudget>,
    circuit_published: Cell<bool>,
    /// Per node, the health recoveries already applied to outlier ejection.
    recoveries_seen: RefCell<Vec<u32>>,
    /// Set once a newer view took this one's state over (its drop leaves the gauges alone).
    carried: Cell<bool>,
}

impl Upstream {
    /// The per-worker upstream for worker `worker`.
    pub fn new(shared: Arc<UpstreamShared>, worker: usize) -> Upstream {
        let n = shared.nodes.len();
        let cfg = &shared.cfg;
        Upstream {
            connector: shared.tls.clone().map(TlsConnector::from),
            wrr: RefCell::new(vec![0; n]),
            rng: RefCell::new(balance::Rng::new(
                (worker as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ n as u64,
            )),
            in_flight: RefCell::new(vec![0; n]),
            addrs: RefCell::new(
                shared
                    .node_state
                    .iter()
                    .map(|s| endpoints::NodeAddrs::new(s.addr_generation(), s.addrs()))
                    .collect(),
            ),
            pool: Pool::new(
                n,
                cfg.max_idle_per_node,
                cfg.max_connections,
                Duration::from_millis(cfg.pool_idle_timeout_ms),
            ),
            outliers: cfg.outlier.as_ref().map(|o| {
                RefCell::new(outlier::Outliers::new(
                    outlier::OutlierSettings::from_config(o),
                    n,
                ))
            }),
            breaker: cfg.breaker.as_ref().map(|b| {
                RefCell::new(breaker::Breaker::new(
                    breaker::BreakerSettings::from_config(b),
                ))
            }),
            budget: RefCell::new(budget::RetryBudget::new(
                u32::from(cfg.retry_budget_percent),
                Duration::from_millis(cfg.retry_budget_window_ms),
                cfg.retry_budget_min,
            )),
            circuit_published: Cell::new(false),
            recoveries_seen: RefCell::new(
                shared
                    .node_state
                    .iter()
                    .map(|s| s.health.recoveries())
                    .collect(),
            ),
            carried: Cell::new(false),
            shared,
            worker,
        }
    }

    /// Takes over what `old` (this worker's view of the same upstream before a reload) knew:
    /// each node's outlier state, matched by label, and the breaker's state when its
    /// settings did not change. So a reload neither reinstates an ejected node nor closes an
    /// open circuit. Pools are not carried (idle connections close with `old`).
    pub fn carry_from(&self, old: &Upstream) {
        let pairs = node_pairs(&self.shared.nodes, &old.shared.nodes);
        if let (Some(new), Some(prev)) = (&self.outliers, &old.outliers) {
            let (mut new, prev) = (new.borrow_mut(), prev.borrow());
            let now = Instant::now();
            for &(i, j) in &pairs {
                new.carry_node(i, &prev, j);
                self.shared.node_state[i]
                    .status
                    .ejected
                    .set(self.worker, i64::from(new.is_ejected(i, now)));
            }
        }
        if let (Some(new), Some(prev)) = (&self.breaker, &old.breaker) {
            let mut new = new.borrow_mut();
            new.carry_from(&prev.borrow());
            let open = !matches!(new.state(), breaker::BreakerState::Closed);
            drop(new);
            self.circuit_published.set(!open);
            self.publish_circuit(open);
        }
        old.carried.set(true);
    }

    /// Upstream name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The node for the next attempt. Candidates: the nodes active health checks judge healthy
    /// (all of them when none is), minus those outlier detection has ejected (when all are,
    /// the least recently failed one; a node whose health checks pass again is reinstated). A retry prefers a candidate not `tried` yet, then any
    /// node not tried yet; only when every node was tried does it go back to one.
    fn pick(&self, tried: &[bool]) -> usize {
        let n = self.shared.nodes.len();
        if n == 1 {
            return 0;
        }
        let now = Instant::now();
        let healthy: Vec<usize> = (0..n)
            .filter(|&i| self.shared.node_state[i].health.is_healthy())
            .collect();
        let base = if healthy.is_empty() {
            (0..n).collect()
        } else {
            healthy
        };
        let usable = match &self.outliers {
            Some(o) => {
                let mut o = o.borrow_mut();
                let mut seen = self.recoveries_seen.borrow_mut();
                for (i, s) in self.shared.node_state.iter().enumerate() {
                    let r = s.health.recoveries();
                    if seen[i] != r {
                        seen[i] = r;
                        o.reinstate(i);
                    }
                }
                for (i, s) in self.shared.node_state.iter().enumerate() {
                    s.status
                        .ejected
                        .set(self.worker, i64::from(o.is_ejected(i, now)));
                }
                o.usable(&base, now)
            }
            None => base,
        };
        let untried: Vec<usize> = usable.iter().copied().filter(|&i| !tried[i]).collect();
        let candidates = if !untried.is_empty() {
            untried
        } else {
            let any: Vec<usize> = (0..n).filter(|&i| !tried[i]).collect();
            if any.is_empty() {
                usable
            } else {
                any
            }
        };
        if candidates.len() == 1 {
            return candidates[0];
        }
        match self.shared.cfg.lb {
            Lb::LeastRequest => balance::p2c(
                &candidates,
                &self.in_flight.borrow(),
                &mut self.rng.borrow_mut(),
            )
            .unwrap_or(candidates[0]),
            Lb::RoundRobin => self.wrr_among(&candidates),
        }
    }

    /// Smooth weighted round robin (nginx's) among `candidates`.
    fn wrr_among(&self, candidates: &[usize]) -> usize {
        let nodes = &self.shared.nodes;
        let mut cur = self.wrr.borrow_mut();
        let total: i64 = candidates.iter().map(|&i| nodes[i].weight).sum();
        let mut best = candidates[0];
        for &i in candidates {
            cur[i] += nodes[i].weight;
            if cur[i] > cur[best] {
                best = i;
            }
        }
        cur[best] -= total;
        best
    }

    /// Tells outlier detection how node `node` did.
    fn node_outcome(&self, node: usize, ok: bool) {
        if let Some(o) = &self.outliers {
            let mut o = o.borrow_mut();
            if ok {
                o.success(node);
            } else if let Some(t) = o.failure(node, Instant::now()) {
                self.shared.metrics.ejections.inc(self.worker);
                self.shared.node_state[node]
                    .status
                    .ejected
                    .set(self.worker, 1);
                tracing::warn!(upstream = %self.shared.name, node = %self.shared.nodes[node].label, worker = self.worker, ejected_for = ?t, "node ejected after consecutive failures");
            }
        }
    }

    /// Tells the circuit breaker how one request did.
    fn request_outcome(&self, ok: bool) {
        if let Some(b) = &self.breaker {
            let mut b = b.borrow_mut();
            let before = b.opened_total();
            b.record(Instant::now(), ok);
            if b.opened_total() != before {
                self.shared.metrics.circuit_opened.inc(self.worker);
                tracing::warn!(upstream = %self.shared.name, worker = self.worker, "circuit opened: failure rate over the window passed the threshold");
            }
            self.publish_circuit(!matches!(b.state(), breaker::BreakerState::Closed));
        }
    }

    fn publish_circuit(&self, open: bool) {
        if self.circuit_published.get() != open {
            self.circuit_published.set(open);
            self.shared
                .metrics
                .circuit_open
                .set(self.worker, i64::from(open));
        }
    }

    /// The breaker's verdict for a new request: `Err` when its circuit is open.
    fn admit(&self) -> Result<(), UpstreamError> {
        if let Some(b) = &self.breaker {
            if let breaker::Admit::Reject(d) = b.borrow_mut().admit(Instant::now()) {
                self.shared.metrics.circuit_rejected.inc(self.worker);
                let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
                return Err(UpstreamError::Unavailable {
                    upstream: self.shared.name.to_string(),
                    retry_after_s: secs.clamp(1, u64::from(u32::MAX)) as u32,
                });
            }
        }
        Ok(())
    }

    /// Idle connections currently pooled (all nodes), for tests and metrics.
    pub fn idle_count(&self) -> usize {
        self.pool.idle_count()
    }

    /// The address generation this worker uses for `node`, draining the pool first when the
    /// DNS refresher moved the node to another address set.
    fn sync_addrs(&self, node: usize) -> u64 {
        let s = &self.shared.node_state[node];
        let g = s.addr_generation();
        let mut addrs = self.addrs.borrow_mut();
        if addrs[node].follow(g, || s.addrs()) {
            let drained = self.pool.drain_idle(node);
            self.shared.metrics.open.add(self.worker, -(drained as i64));
            tracing::debug!(upstream = %self.shared.name, node = %self.shared.nodes[node].label, drained, "node addresses changed; idle connections to the old ones closed");
        }
        g
    }

    /// An idle connection to `node`, or a new one, waiting up to `queue_timeout_ms` when the
    /// node's `max_connections` are all busy (503 `upstream_busy`). Idle connections the
    /// upstream closed meanwhile are dropped, never written to.
    async fn checkout(&self, node: usize) -> Result<UpstreamStream, AttemptError> {
        let cfg = &self.shared.cfg;
        let limit = Duration::from_millis(cfg.queue_timeout_ms);
        loop {
            let (got, expired) =
                match monoio::time::timeout(limit, self.pool.checkout(node, false)).await {
                    Ok(x) => x,
                    Err(_) => {
                        return Err(AttemptError::Final(UpstreamError::Busy {
                            upstream: self.shared.name.to_string(),
                            after: limit,
                            retry_after_s: 1,
                        }))
                    }
                };
            self.shared.metrics.open.add(self.worker, -(expired as i64));
            match got {
                Checkout::Idle(s) if s.is_stale() => {
                    self.pool.release(node);
                    self.shared.metrics.open.add(self.worker, -1);
                    self.shared.metrics.stale.inc(self.worker);
                    continue;
                }
                Checkout::Idle(s) => {
                    self.shared.metrics.reused.inc(self.worker);
                    return Ok(s);
                }
                Checkout::Connect => {
                    let addr = self.addrs.borrow_mut()[node].next(Instant::now());
                    return match self.connect(node, addr).await {
                        Ok(s) => {
                            self.shared.metrics.created.inc(self.worker);
                            self.shared.metrics.open.add(self.worker, 1);
                            Ok(s)
                        }
                        Err(e) => {
                            self.pool.release(node);
                            self.addrs.borrow_mut()[node].failed(addr, Instant::now());
                            Err(AttemptError::Connect(e, Vec::new()))
                        }
                    };
                }
            }
        }
    }

    async fn connect(
        &self,
        node: usize,
        addr: SocketAddr,
    ) -> Result<UpstreamStream, UpstreamError> {
        let limit = Duration::from_millis(self.shared.cfg.connect_timeout_ms);
        open_connection(&self.shared, self.connector.as_ref(), node, addr, limit).await
    }

    /// Sends `request` (a complete HTTP/1.1 request, head and body) and reads the response.
    /// Failures named in `retry_on` are retried, each on another node when there is one, while
    /// the retry budget allows; a request whose body was fully written is retried only with
    /// `"reset_after_write"` (or `"502"`/`"503"` for those answers).
    pub async fn exchange(
        &self,
        request: Vec<u8>,
        is_head: bool,
    ) -> Result<UpstreamResponse, UpstreamError> {
        self.admit()?;
        self.budget.borrow_mut().request(Instant::now());
        let r = self.exchange_attempts(request, is_head).await;
        self.request_outcome(matches!(&r, Ok(resp) if resp.status < 500));
        r
    }

    /// Whether a failure of class `on` may be retried now (policy, attempts left, budget).
    fn may_retry(&self, on: RetryOn, attempts: usize, max_attempts: usize) -> bool {
        if !self.shared.cfg.retry_on.contains(&on) || attempts >= max_attempts {
            return false;
        }
        if self.budget.borrow_mut().try_retry(Instant::now()) {
            self.shared.metrics.retries.inc(self.worker);
            true
        } else {
            self.shared.metrics.budget_exhausted.inc(self.worker);
            tracing::debug!(upstream = %self.shared.name, "retry refused: the retry budget is spent");
            false
        }
    }

    async fn exchange_attempts(
        &self,
        request: Vec<u8>,
        is_head: bool,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let n = self.shared.nodes.len();
        // Each retry goes to another node; a single node gets one retry on a new connection.
        let max_attempts = n.max(2);
        let mut tried = vec![false; n];
        let mut attempts = 0;
        let mut request = request;
        loop {
            let node = self.pick(&tried);
            tried[node] = true;
            attempts += 1;
            self.in_flight.borrow_mut()[node] += 1;
            let r = self.attempt(node, request, is_head).await;
            self.in_flight.borrow_mut()[node] -= 1;
            match r {
                Ok((resp, req)) => {
                    self.node_outcome(node, resp.status < 500);
                    let on = match resp.status {
                        502 => Some(RetryOn::Status502),
                        503 => Some(RetryOn::Status503),
                        _ => None,
                    };
                    match on {
                        Some(on) if self.may_retry(on, attempts, max_attempts) => {
                            tracing::debug!(upstream = %self.shared.name, node = %self.shared.nodes[node].label, status = resp.status, "retrying on another node");
                            request = req;
                            continue;
                        }
                        _ => return Ok(resp),
                    }
                }
                Err(e) => {
                    self.node_outcome(node, false);
                    let (on, err, req) = match e {
                        AttemptError::Connect(err, req) => (Some(RetryOn::Connect), err, Some(req)),
                        AttemptError::BeforeWrite(e, req) => (
                            Some(RetryOn::ResetBeforeWrite),
                            e.into_upstream_error(&self.shared.name),
                            Some(req),
                        ),
                        AttemptError::AfterWrite(e, req) => {
                            let on = (!matches!(
                                e,
                                ExchangeError::Timeout { .. } | ExchangeError::Bad(_)
                            ))
                            .then_some(RetryOn::ResetAfterWrite);
                            (on, e.into_upstream_error(&self.shared.name), Some(req))
                        }
                        AttemptError::Final(err) => (None, err, None),
                    };
                    if let Some(on) = on {
                        if self.may_retry(on, attempts, max_attempts) {
                            tracing::debug!(upstream = %self.shared.name, node = %self.shared.nodes[node].label, error = %err, "retrying on another node");
                            if let Some(req) = req {
                                request = req;
                                continue;
                            }
                        }
                    }
                    self.shared.metrics.error(self.worker, err.is_timeout());
                    return Err(err);
                }
            }
        }
    }

    /// One attempt on `node`: a connection (pooled or new), the request written, the response
    /// read; the connection goes back to the pool when it can be reused. Gives the request
    /// back for a retry.
    async fn attempt(
        &self,
        node: usize,
        request: Vec<u8>,
        is_head: bool,
    ) -> Result<(UpstreamResponse, Vec<u8>), AttemptError> {
        let generation = self.sync_addrs(node);
        let stream = match self.checkout(node).await {
            Ok(s) => s,
            Err(AttemptError::Connect(e, _)) => return Err(AttemptError::Connect(e, request)),
            Err(e) => return Err(e),
        };
        let started = Instant::now();
        match self.exchange_on(stream, request, is_head).await {
            Ok((resp, stream, request)) => {
                self.shared
                    .metrics
                    .duration
                    .observe(self.worker, started.elapsed());
                // A connection to an address the node no longer has is not pooled.
                let current = self.shared.node_state[node].addr_generation() == generation;
                let kept = match stream {
                    Some(s) if current => self.pool.checkin(node, s),
                    _ => {
                        self.pool.release(node);
                        false
                    }
                };
                if !kept {
                    self.shared.metrics.open.add(self.worker, -1);
                }
                Ok((resp, request))
            }
            Err(e) => {
                self.pool.release(node);
                self.shared.metrics.open.add(self.worker, -1);
                Err(e)
            }
        }
    }

    async fn exchange_on(
        &self,
        mut stream: UpstreamStream,
        request: Vec<u8>,
        is_head: bool,
    ) -> Result<(UpstreamResponse, Option<UpstreamStream>, Vec<u8>), AttemptError> {
        let cfg = &self.shared.cfg;
        let wlimit = Duration::from_millis(cfg.write_timeout_ms);
        let request = match monoio::time::timeout(wlimit, stream.write_all(request)).await {
            Ok((Ok(()), req)) => req,
            Ok((Err(e), req)) => {
                return Err(AttemptError::BeforeWrite(
                    ExchangeError::Io {
                        error: e,
                        before_response: true,
                    },
                    req,
                ))
            }
            Err(_) => {
                return Err(AttemptError::Final(
                    ExchangeError::Timeout {
                        phase: "accept the request",
                        after: wlimit,
                    }
                    .into_upstream_error(&self.shared.name),
                ))
            }
        };
        match read_response(&mut stream, is_head, cfg).await {
            Ok((resp, reusable)) => Ok((resp, reusable.then_some(stream), request)),
            Err(e) => Err(AttemptError::AfterWrite(e, request)),
        }
    }
}

/// Opens a connection to `addr` for node `node` of `shared` (TCP, then TLS when configured),
/// within `limit`. Used by traffic and by the health checker alike.
pub async fn open_connection(
    shared: &UpstreamShared,
    connector: Option<&TlsConnector>,
    node: usize,
    addr: SocketAddr,
    limit: Duration,
) -> Result<UpstreamStream, UpstreamError> {
    let n = &shared.nodes[node];
    let name = || shared.name.to_string();
    let fut = async {
        let tcp = TcpStream::connect_addr(addr)
            .await
            .map_err(|e| UpstreamError::Unreachable {
                upstream: name(),
                detail: format!("{}: {e}", n.label),
            })?;
        let _ = tcp.set_nodelay(true);
        match (connector, &n.server_name) {
            (Some(c), Some(sn)) => {
                let fd = tcp.as_raw_fd();
                let tls = c
                    .connect(sn.clone(), tcp)
                    .await
                    .map_err(|e| UpstreamError::Tls {
                        upstream: name(),
                        detail: format!("{}: {e}", n.label),
                    })?;
                Ok(UpstreamStream::tls(tls, fd))
            }
            _ => Ok(UpstreamStream::Plain(tcp)),
        }
    };
    match monoio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err(UpstreamError::Timeout {
            upstream: name(),
            phase: "connect",
            after: limit,
        }),
    }
}
