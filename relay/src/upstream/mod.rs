//! Upstreams: nodes with smooth weighted round robin, a per-worker bounded keep-alive pool per
//! node, TLS, and the exchange of one request for one response with the single allowed retry.

pub mod balance;
pub mod breaker;
pub mod budget;
pub mod config;
pub mod error;
pub mod health;
pub mod outlier;
pub mod pool;
pub mod resilience;
pub mod response;
pub mod stream;
pub mod tls;

use std::cell::RefCell;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;
use monoio_rustls::TlsConnector;
use rustls::pki_types::ServerName;

use crate::metrics::UpstreamMetrics;
pub use config::{parse_node_address, NodeConfig, TlsConfig, UpstreamConfig};
pub use error::UpstreamError;
use pool::{Checkout, Pool};
pub use response::UpstreamResponse;
use response::{read_response, ExchangeError};
use stream::UpstreamStream;

/// One node, resolved.
#[derive(Debug, Clone)]
pub struct Node {
    /// Resolved address.
    pub addr: SocketAddr,
    /// `host:port` as configured.
    pub label: String,
    /// WRR weight.
    pub weight: i64,
    /// TLS name (SNI + verification) when the upstream uses TLS.
    pub server_name: Option<ServerName<'static>>,
}

/// What every worker shares about one upstream (immutable; rebuilt on reload).
pub struct UpstreamShared {
    /// Upstream name.
    pub name: Arc<str>,
    /// Nodes.
    pub nodes: Vec<Node>,
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
            let addr = n
                .address()
                .to_socket_addrs()
                .map_err(|e| {
                    format!(
                        "upstream {}: cannot resolve {} ({e}); check the name or use an IP",
                        cfg.name,
                        n.address()
                    )
                })?
                .next()
                .ok_or_else(|| {
                    format!(
                        "upstream {}: {} resolves to no address",
                        cfg.name,
                        n.address()
                    )
                })?;
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
                label: n.address().to_string(),
                weight: n.weight() as i64,
                server_name,
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
        Ok(UpstreamShared {
            name: Arc::from(cfg.name.as_str()),
            nodes,
            host_header,
            tls,
            cfg: cfg.clone(),
            metrics,
        })
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        // The pooled connections close with this view (after a reload): keep the gauge right.
        let idle = self.idle_count() as i64;
        self.shared.metrics.open.add(self.worker, -idle);
    }
}

/// One worker's view of an upstream: its WRR state and its connection pool.
pub struct Upstream {
    /// Shared, immutable part.
    pub shared: Arc<UpstreamShared>,
    connector: Option<TlsConnector>,
    wrr: RefCell<Vec<i64>>,
    pool: Pool,
    worker: usize,
    /// Passive outlier ejection (`[upstreams.outlier]`), this worker's view.
    outliers: Option<RefCell<outlier::Outliers>>,
    /// Circuit breaker (`[upstreams.breaker]`), this worker's view.
    breaker: Option<RefCell<breaker::Breaker>>,
}

impl Upstream {
    /// The per-worker upstream for worker `worker`.
    pub fn new(shared: Arc<UpstreamShared>, worker: usize) -> Upstream {
        let n = shared.nodes.len();
        let cfg = &shared.cfg;
        Upstream {
            connector: shared.tls.clone().map(TlsConnector::from),
            wrr: RefCell::new(vec![0; n]),
            pool: Pool::new(
                n,
                cfg.max_idle_per_node,
                cfg.max_connections,
                Duration::from_millis(cfg.pool_idle_timeout_ms),
            ),
            outliers: cfg
                .outlier
                .as_ref()
                .map(|o| RefCell::new(outlier::Outliers::new(o.settings(), n))),
            breaker: cfg
                .breaker
                .as_ref()
                .map(|b| RefCell::new(breaker::Breaker::new(b.settings()))),
            shared,
            worker,
        }
    }

    /// Upstream name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Smooth weighted round robin (nginx's): the node for the next request.
    /// Only nodes outlier detection has not ejected take part (when all are ejected, the least
    /// recently failed one).
    fn pick(&self) -> usize {
        let nodes = &self.shared.nodes;
        if nodes.len() == 1 {
            return 0;
        }
        let all: Vec<usize> = (0..nodes.len()).collect();
        let usable = match &self.outliers {
            Some(o) => o.borrow().usable(&all, Instant::now()),
            None => all,
        };
        if usable.len() == 1 {
            return usable[0];
        }
        let mut cur = self.wrr.borrow_mut();
        let total: i64 = usable.iter().map(|&i| nodes[i].weight).sum();
        let mut best = usable[0];
        for &i in &usable {
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
                tracing::warn!(upstream = %self.shared.name, node = %self.shared.nodes[node].label, ejected_for = ?t, "node ejected after consecutive failures");
            }
        }
    }

    /// Tells the circuit breaker how one request did.
    fn request_outcome(&self, ok: bool) {
        if let Some(b) = &self.breaker {
            b.borrow_mut().record(Instant::now(), ok);
        }
    }

    /// The breaker's verdict for a new request: `Err` when its circuit is open.
    fn admit(&self) -> Result<(), UpstreamError> {
        if let Some(b) = &self.breaker {
            if let breaker::Admit::Reject(d) = b.borrow_mut().admit(Instant::now()) {
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

    /// An idle connection to `node`, or a new one, waiting up to `queue_timeout_ms` when the
    /// node's `max_connections` are all busy (503 `upstream_busy`). `fresh`: a new connection.
    async fn checkout(
        &self,
        node: usize,
        fresh: bool,
    ) -> Result<(UpstreamStream, bool), UpstreamError> {
        let cfg = &self.shared.cfg;
        let limit = Duration::from_millis(cfg.queue_timeout_ms);
        let (got, expired) =
            match monoio::time::timeout(limit, self.pool.checkout(node, fresh)).await {
                Ok(x) => x,
                Err(_) => {
                    return Err(UpstreamError::Busy {
                        upstream: self.shared.name.to_string(),
                        after: limit,
                        retry_after_s: 1,
                    })
                }
            };
        self.shared.metrics.open.add(self.worker, -(expired as i64));
        match got {
            Checkout::Idle(s) => {
                self.shared.metrics.reused.inc(self.worker);
                Ok((s, true))
            }
            Checkout::Connect => match self.connect(node).await {
                Ok(s) => Ok((s, false)),
                Err(e) => {
                    self.pool.release(node);
                    Err(e)
                }
            },
        }
    }

    async fn connect(&self, node: usize) -> Result<UpstreamStream, UpstreamError> {
        let n = &self.shared.nodes[node];
        let limit = Duration::from_millis(self.shared.cfg.connect_timeout_ms);
        let name = || self.shared.name.to_string();
        let fut = async {
            let tcp =
                TcpStream::connect_addr(n.addr)
                    .await
                    .map_err(|e| UpstreamError::Unreachable {
                        upstream: name(),
                        detail: format!("{}: {e}", n.label),
                    })?;
            let _ = tcp.set_nodelay(true);
            match (&self.connector, &n.server_name) {
                (Some(c), Some(sn)) => {
                    let tls = c
                        .connect(sn.clone(), tcp)
                        .await
                        .map_err(|e| UpstreamError::Tls {
                            upstream: name(),
                            detail: format!("{}: {e}", n.label),
                        })?;
                    Ok(UpstreamStream::Tls(Box::new(tls)))
                }
                _ => Ok(UpstreamStream::Plain(tcp)),
            }
        };
        match monoio::time::timeout(limit, fut).await {
            Ok(r) => {
                if r.is_ok() {
                    self.shared.metrics.created.inc(self.worker);
                    self.shared.metrics.open.add(self.worker, 1);
                }
                r
            }
            Err(_) => Err(UpstreamError::Timeout {
                upstream: name(),
                phase: "connect",
                after: limit,
            }),
        }
    }

    /// Sends `request` (a complete HTTP/1.1 request, head and body) and reads the response.
    /// A reused idle connection that fails before any response byte is retried once on a fresh
    /// connection; a refused connect moves on to the next node.
    pub async fn exchange(
        &self,
        request: Vec<u8>,
        is_head: bool,
    ) -> Result<UpstreamResponse, UpstreamError> {
        self.admit()?;
        let r = self.exchange_picked(request, is_head).await;
        self.request_outcome(matches!(&r, Ok(resp) if resp.status < 500));
        r
    }

    async fn exchange_picked(
        &self,
        request: Vec<u8>,
        is_head: bool,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let mut node = self.pick();
        let mut request = request;
        let mut retried = false;
        let mut connect_failures = 0;
        loop {
            let (stream, reused) = match self.checkout(node, retried).await {
                Ok(x) => x,
                Err(e @ UpstreamError::Unreachable { .. }) => {
                    self.node_outcome(node, false);
                    connect_failures += 1;
                    if connect_failures < self.shared.nodes.len() {
                        node = (node + 1) % self.shared.nodes.len();
                        continue;
                    }
                    self.shared.metrics.error(self.worker, false);
                    return Err(e);
                }
                Err(e) => {
                    self.shared.metrics.error(self.worker, e.is_timeout());
                    return Err(e);
                }
            };
            let started = Instant::now();
            match self.exchange_on(stream, request, is_head).await {
                Ok((resp, stream)) => {
                    self.shared
                        .metrics
                        .duration
                        .observe(self.worker, started.elapsed());
                    self.node_outcome(node, resp.status < 500);
                    let kept = match stream {
                        Some(s) => self.pool.checkin(node, s),
                        None => {
                            self.pool.release(node);
                            false
                        }
                    };
                    if !kept {
                        self.shared.metrics.open.add(self.worker, -1);
                    }
                    return Ok(resp);
                }
                Err((e, req_back)) => {
                    self.pool.release(node);
                    self.shared.metrics.open.add(self.worker, -1);
                    if reused && !retried && e.before_response() {
                        retried = true;
                        self.shared.metrics.retries.inc(self.worker);
                        request = req_back;
                        tracing::debug!(upstream = %self.shared.name, error = %e, "stale pooled connection; retrying once on a fresh one");
                        continue;
                    }
                    self.node_outcome(node, false);
                    let err = e.into_upstream_error(&self.shared.name);
                    self.shared.metrics.error(self.worker, err.is_timeout());
                    return Err(err);
                }
            }
        }
    }

    async fn exchange_on(
        &self,
        mut stream: UpstreamStream,
        request: Vec<u8>,
        is_head: bool,
    ) -> Result<(UpstreamResponse, Option<UpstreamStream>), (ExchangeError, Vec<u8>)> {
        let cfg = &self.shared.cfg;
        let wlimit = Duration::from_millis(cfg.write_timeout_ms);
        let request = match monoio::time::timeout(wlimit, stream.write_all(request)).await {
            Ok((Ok(()), req)) => req,
            Ok((Err(e), req)) => {
                return Err((
                    ExchangeError::Io {
                        error: e,
                        before_response: true,
                    },
                    req,
                ))
            }
            Err(_) => {
                return Err((
                    ExchangeError::Timeout {
                        phase: "accept the request",
                        after: wlimit,
                    },
                    Vec::new(),
                ))
            }
        };
        match read_response(&mut stream, is_head, cfg).await {
            Ok((resp, reusable)) => Ok((resp, reusable.then_some(stream))),
            Err(e) => Err((e, request)),
        }
    }
}
