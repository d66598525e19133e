//! Thread per core: one pinned worker thread per allowed CPU, each with its own monoio runtime
//! (io_uring, or the epoll driver as fallback) and its own SO_REUSEPORT listener.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use monoio::net::TcpListener;

use crate::admission::Admission;
use crate::cpu_quota::WorkerPlan;
use crate::kafka::KafkaSender;
use crate::metrics::Metrics;
use crate::reason::Reason;
use crate::server::config::{IoEngine, ServerConfig};
use crate::server::serve_connection;
use crate::snapshot::ConfigHub;
use crate::worker::Worker;

/// The driver actually used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// io_uring.
    IoUring,
    /// epoll (monoio's legacy driver).
    Epoll,
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Engine::IoUring => "io_uring",
            Engine::Epoll => "epoll",
        })
    }
}

/// Why the engine was chosen (for the start-up line).
#[derive(Debug, Clone)]
pub struct EngineChoice {
    /// The engine.
    pub engine: Engine,
    /// Why (`configured`, or the io_uring error that forced the fallback).
    pub why: String,
}

/// Decides the engine: `auto` probes io_uring (a kernel without it, or a seccomp filter that
/// refuses `io_uring_setup`, falls back to epoll).
pub fn choose_engine(cfg: IoEngine) -> Result<EngineChoice, String> {
    let probe = || {
        monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .with_entries(8)
            .build()
            .map(|_| ())
    };
    match cfg {
        IoEngine::Epoll => Ok(EngineChoice {
            engine: Engine::Epoll,
            why: "configured".into(),
        }),
        IoEngine::IoUring => match probe() {
            Ok(()) => Ok(EngineChoice {
                engine: Engine::IoUring,
                why: "configured".into(),
            }),
            Err(e) => Err(format!(
                "io_engine = \"io_uring\" but io_uring is unavailable ({e}); use io_engine = \"auto\" or \"epoll\""
            )),
        },
        IoEngine::Auto => match probe() {
            Ok(()) => Ok(EngineChoice {
                engine: Engine::IoUring,
                why: "auto: io_uring available".into(),
            }),
            Err(e) => Ok(EngineChoice {
                engine: Engine::Epoll,
                why: format!("auto: io_uring unavailable ({e})"),
            }),
        },
    }
}

/// Ring setup flags a worker's io_uring is created with. `RELAY_URING_SETUP` (a comma list
/// of `single_issuer`, `coop_taskrun`, `taskrun_flag`, `defer_taskrun`, or `none`) overrides
/// the default for the perf lab's A/B runs; see benches/README.md "Levers".
fn uring_setup() -> Vec<String> {
    const DEFAULT: &str = "single_issuer,coop_taskrun";
    std::env::var("RELAY_URING_SETUP")
        .unwrap_or_else(|_| DEFAULT.to_string())
        .split(',')
        .map(|f| f.trim().to_string())
        .filter(|f| !f.is_empty() && f != "none")
        .collect()
}

/// A worker's io_uring runtime (1024 entries, timers) with the [`uring_setup`] flags; when
/// the kernel refuses a flag (older than 6.1), the ring is created without them.
fn build_uring_runtime(
) -> std::io::Result<monoio::Runtime<monoio::time::TimeDriver<monoio::IoUringDriver>>> {
    let flags = uring_setup();
    let mut ring = io_uring::IoUring::builder();
    for f in &flags {
        match f.as_str() {
            "single_issuer" => ring.setup_single_issuer(),
            "coop_taskrun" => ring.setup_coop_taskrun(),
            "taskrun_flag" => ring.setup_taskrun_flag(),
            "defer_taskrun" => ring.setup_defer_taskrun(),
            other => {
                tracing::warn!(flag = other, "unknown RELAY_URING_SETUP flag ignored");
                &mut ring
            }
        };
    }
    let with_flags = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .with_entries(1024)
        .uring_builder(ring)
        .enable_timer()
        .build();
    match with_flags {
        Ok(rt) => Ok(rt),
        Err(e) if !flags.is_empty() => {
            tracing::info!(flags = ?flags, error = %e, "io_uring setup flags refused by the kernel; using a plain ring");
            monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                .with_entries(1024)
                .enable_timer()
                .build()
        }
        Err(e) => Err(e),
    }
}

/// Creates the SO_REUSEPORT listeners, all on one port (port 0 picks one for all).
pub fn bind_listeners(
    addr: SocketAddr,
    count: usize,
    backlog: u32,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    let mut out = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count {
        let sock = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        sock.set_reuse_address(true)?;
        sock.set_reuse_port(true)?;
        sock.set_nonblocking(true)?;
        sock.set_nodelay(true)?;
        sock.bind(&addr.into())?;
        sock.listen(backlog.min(i32::MAX as u32) as i32)?;
        let l: std::net::TcpListener = sock.into();
        if addr.port() == 0 {
            addr = l.local_addr()?;
        }
        out.push(l);
    }
    Ok(out)
}

/// The shared parts every worker gets.
#[derive(Clone)]
pub struct Shared {
    /// Config hub.
    pub hub: Arc<ConfigHub>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Kafka queue handle.
    pub kafka: Option<KafkaSender>,
    /// The spool, when `[spool]` is configured (each worker takes its own appender).
    pub spool: Option<Arc<crate::spool::Spool>>,
    /// Admission control.
    pub admission: Option<Arc<Admission>>,
    /// Per-worker heartbeat (ms since start), for the watchdog.
    pub heartbeats: Arc<Vec<AtomicU64>>,
    /// Process start, the heartbeat's epoch.
    pub epoch: Instant,
}

/// A running worker.
pub struct WorkerHandle {
    /// The thread.
    pub thread: JoinHandle<()>,
    /// Fires the worker's shutdown.
    pub stop: Option<oneshot::Sender<()>>,
}

/// Starts the workers; returns when every worker is listening (or with the first error).
pub fn start_workers(
    plan: &WorkerPlan,
    engine: Engine,
    server: &ServerConfig,
    listeners: Vec<std::net::TcpListener>,
    shared: Shared,
) -> Result<Vec<WorkerHandle>, String> {
    let mut handles = Vec::new();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<usize, String>>();
    for (i, listener) in listeners.into_iter().enumerate() {
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let cpu = plan.cpu_for(i);
        let server = server.clone();
        let shared = shared.clone();
        let ready = ready_tx.clone();
        let thread = std::thread::Builder::new()
            .name(format!("relay-worker-{i}"))
            .spawn(move || {
                if let Some(c) = cpu {
                    if !core_affinity::set_for_current(core_affinity::CoreId { id: c }) {
                        tracing::warn!(
                            worker = i,
                            cpu = c,
                            "could not pin the worker to its CPU; running unpinned"
                        );
                    }
                }
                let fut = worker_main(i, server, listener, shared, stop_rx, ready.clone());
                let built = match engine {
                    Engine::IoUring => build_uring_runtime().map(|mut rt| rt.block_on(fut)),
                    Engine::Epoll => monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                        .enable_timer()
                        .build()
                        .map(|mut rt| rt.block_on(fut)),
                };
                if let Err(e) = built {
                    let _ = ready.send(Err(format!(
                        "worker {i}: cannot build the {engine} runtime: {e}"
                    )));
                }
            })
            .map_err(|e| format!("cannot spawn worker thread: {e}"))?;
        handles.push(WorkerHandle {
            thread,
            stop: Some(stop_tx),
        });
    }
    drop(ready_tx);
    for _ in 0..handles.len() {
        match ready_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err("a worker did not start within 30 s".into()),
        }
    }
    Ok(handles)
}

async fn worker_main(
    index: usize,
    server: ServerConfig,
    listener: std::net::TcpListener,
    shared: Shared,
    stop: oneshot::Receiver<()>,
    ready: std::sync::mpsc::Sender<Result<usize, String>>,
) {
    let grace = Duration::from_millis(server.shutdown_grace_ms);
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(format!("worker {index}: listener: {e}")));
            return;
        }
    };
    let worker = Worker::new(
        index,
        server,
        shared.metrics.clone(),
        shared.kafka.clone(),
        shared.spool.as_ref().map(|s| s.appender(index)),
        shared.admission.clone(),
        shared.hub.clone(),
    );
    // Shutdown arrives from the main thread.
    {
        let w = worker.clone();
        monoio::spawn(async move {
            let _ = stop.await;
            w.shutdown.trigger();
        });
    }
    // Heartbeat for the watchdog: a stuck worker stops updating it.
    {
        let w = worker.clone();
        let hb = shared.heartbeats.clone();
        let epoch = shared.epoch;
        monoio::spawn(async move {
            while !w.shutdown.is_set() {
                hb[index].store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
                monoio::select! {
                    _ = monoio::time::sleep(Duration::from_millis(500)) => {},
                    _ = w.shutdown.wait() => {},
                }
            }
        });
    }
    // Upstream background work this worker owns: health checks and DNS refresh.
    monoio::spawn(supervise_upstreams(worker.clone(), shared.heartbeats.len()));
    let _ = ready.send(Ok(index));
    accept_loop(&listener, &worker).await;
    drop(listener);
    // Let in-flight requests finish within the grace period.
    let deadline = Instant::now() + grace;
    while worker.connections.get() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    if worker.connections.get() > 0 {
        tracing::warn!(
            worker = index,
            open = worker.connections.get(),
            "grace period over; closing the remaining connections"
        );
    }
}

/// Starts, for every upstream this worker owns (upstream index modulo the worker count), its
/// active health checks (on this runtime) and its DNS refresher (a thread of its own), again
/// after every reload; the previous generation's ones stop by themselves.
async fn supervise_upstreams(worker: Rc<Worker>, workers: usize) {
    let mut seen = 0;
    while !worker.shutdown.is_set() {
        let g = worker.hub.generation();
        if g != seen {
            seen = g;
            let snap = worker.hub.current();
            for (i, u) in snap.upstreams.iter().enumerate() {
                if i % workers.max(1) != worker.index {
                    continue;
                }
                let (w, hub) = (worker.clone(), worker.hub.clone());
                let alive = Rc::new(move || hub.generation() == g && !w.shutdown.is_set());
                crate::upstream::checker::start(u.clone(), worker.index, alive);
                let hub = worker.hub.clone();
                crate::upstream::dns::start(u.clone(), Arc::new(move || hub.generation() == g));
            }
        }
        monoio::select! {
            _ = monoio::time::sleep(Duration::from_millis(200)) => {},
            _ = worker.shutdown.wait() => {},
        }
    }
}

async fn accept_loop(listener: &TcpListener, worker: &Rc<Worker>) {
    let mut last_err_log: Option<Instant> = None;
    loop {
        let accepted = monoio::select! {
            _ = worker.shutdown.wait() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                if worker.connections.get() >= worker.server.max_connections {
                    worker.metrics.connections_refused.inc(worker.index);
                    drop(stream);
                    continue;
                }
                if let Some(a) = &worker.admission {
                    if a.shed_new_connection() {
                        worker.metrics.rejected(worker.index, Reason::Overloaded);
                        drop(stream);
                        continue;
                    }
                }
                monoio::spawn(serve_connection(stream, peer, worker.clone()));
            }
            Err(e) => {
                // EMFILE/ENFILE and friends: back off briefly instead of spinning.
                if last_err_log.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                    tracing::warn!(worker = worker.index, error = %e, "accept failed");
                    last_err_log = Some(Instant::now());
                }
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
