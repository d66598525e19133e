//! Active health checks (`[upstreams.health]`): one task per node, on the one worker that owns
//! the upstream, sends `GET <path>` every `interval_ms` (to each of a name's addresses in
//! turn) over a new connection with the same
//! TLS settings as traffic, and records the verdict in the node's shared atomics
//! ([`super::health::NodeHealth`]) so every worker's balancer sees it.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use monoio_rustls::TlsConnector;

use super::config::HealthConfig;
use super::response::read_response;
use super::{open_connection, UpstreamShared};

/// Starts the checks of every node of `shared` on the current worker's runtime (no-op without
/// `[upstreams.health]`). `alive` says whether to go on (false after a reload replaced this
/// upstream, or at shutdown); each task checks it before every probe. `worker` is the metrics
/// slot.
pub fn start(shared: Arc<UpstreamShared>, worker: usize, alive: Rc<dyn Fn() -> bool>) {
    let Some(cfg) = shared.cfg.health.clone() else {
        return;
    };
    let connector = shared.tls.clone().map(TlsConnector::from);
    for node in 0..shared.nodes.len() {
        let (shared, cfg, connector, alive) = (
            shared.clone(),
            cfg.clone(),
            connector.clone(),
            alive.clone(),
        );
        monoio::spawn(async move {
            let interval = Duration::from_millis(cfg.interval_ms);
            let mut round = 0usize;
            while alive() {
                // A name with several addresses has them probed in turn.
                let addrs = shared.node_state[node].addrs();
                let addr = addrs[round % addrs.len()];
                round = round.wrapping_add(1);
                let ok = probe(&shared, connector.as_ref(), node, addr, &cfg).await;
                record(&shared, worker, node, &cfg, ok);
                monoio::time::sleep(interval).await;
            }
        });
    }
    tracing::info!(upstream = %shared.name, worker, "active health checks started");
}

fn record(shared: &UpstreamShared, worker: usize, node: usize, cfg: &HealthConfig, ok: bool) {
    let m = &shared.metrics;
    m.probes.inc(worker);
    if !ok {
        m.probe_failures.inc(worker);
    }
    let s = &shared.node_state[node];
    if let Some(healthy) = s.health.record(ok, cfg.healthy_after, cfg.unhealthy_after) {
        s.status
            .healthy
            .store(i64::from(healthy), std::sync::atomic::Ordering::Relaxed);
        let label = &shared.nodes[node].label;
        if healthy {
            tracing::info!(upstream = %shared.name, node = %label, "node healthy again: its health checks pass");
        } else {
            tracing::warn!(upstream = %shared.name, node = %label, "node unhealthy: its health checks fail; it gets no traffic");
        }
    }
}

/// One probe: true when an expected status came back within `timeout_ms`.
async fn probe(
    shared: &UpstreamShared,
    connector: Option<&TlsConnector>,
    node: usize,
    addr: std::net::SocketAddr,
    cfg: &HealthConfig,
) -> bool {
    let limit = Duration::from_millis(cfg.timeout_ms);
    let fut = async {
        let mut stream = open_connection(shared, connector, node, addr, limit)
            .await
            .ok()?;
        let req = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: relay-health-check\r\nConnection: close\r\n\r\n",
            cfg.path, shared.host_header
        )
        .into_bytes();
        let (r, _) = stream.write_all(req).await;
        r.ok()?;
        let (resp, _) = read_response(&mut stream, false, &shared.cfg).await.ok()?;
        Some(resp.status)
    };
    match monoio::time::timeout(limit, fut).await {
        Ok(Some(status)) => cfg.expect_status.contains(&status),
        _ => false,
    }
}
