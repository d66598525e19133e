//! `relay run`: [`App::build`] loads what the configuration describes (the snapshot, listeners,
//! the Kafka path, the spool, admission, the workers and the admin port); [`App::serve`]
//! announces readiness, waits for signals (SIGHUP reloads) and, on SIGTERM/SIGINT, runs the
//! shutdown sequence within the budget ([`App::shutdown`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use crate::admin::{self, AdminHooks};
use crate::admission::{Admission, LoadSample};
use crate::config::Config;
use crate::cpu_quota::{self, WorkerPlan};
use crate::kafka::KafkaPath;
use crate::metrics::Metrics;
use crate::runtime::{self, EngineChoice, Shared, WorkerHandle};
use crate::snapshot::{ConfigHub, Snapshot};
use crate::spool::Spool;
use crate::systemd;

/// Options of `relay run` beyond the config file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// When listening, write `{"listen": ..., "admin": ..., "workers": N, "io_engine": ...}` here.
    pub ready_file: Option<PathBuf>,
}

/// Time kept at the end of the shutdown budget for the spool's last group commit.
const SPOOL_STOP_RESERVE: Duration = Duration::from_millis(500);

/// Runs relay until SIGTERM/SIGINT; returns the process exit code (1: could not start;
/// 3: some memory-mode originals answered 2xx were not delivered at shutdown).
pub fn run(config_path: &Path, opts: RunOptions) -> i32 {
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            return 1;
        }
    };
    match App::build(&config, config_path) {
        Ok(app) => app.serve(&opts),
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            eprintln!("{e}");
            1
        }
    }
}

/// Everything `relay run` started, built from one configuration.
pub struct App {
    config: Config,
    plan: WorkerPlan,
    engine: EngineChoice,
    metrics: Arc<Metrics>,
    hub: Arc<ConfigHub>,
    kafka: Option<KafkaPath>,
    spool: Option<Arc<Spool>>,
    admission: Arc<Admission>,
    workers: Vec<WorkerHandle>,
    heartbeats: Arc<Vec<AtomicU64>>,
    epoch: Instant,
    listen_addr: String,
    admin_addr: String,
}

impl App {
    /// Builds and starts everything `config` (read from `config_path`, which reloads re-read)
    /// describes: the worker plan and I/O engine, the snapshot (upstreams resolved, keys
    /// read), the listeners, the Kafka path, the spool (recovering what it holds), admission,
    /// the workers and the admin listener. `Err` says what could not start and why.
    pub fn build(config: &Config, config_path: &Path) -> Result<App, String> {
        let plan = cpu_quota::plan(config.server.workers);
        let engine = runtime::choose_engine(config.server.io_engine)?;
        let metrics = Metrics::new(plan.count);
        *metrics.io_engine.lock().unwrap_or_else(|p| p.into_inner()) = engine.engine.to_string();
        let file_bytes = std::fs::read(config_path).unwrap_or_default();
        let snapshot = Snapshot::build(config.clone(), &file_bytes, &metrics, None)?;
        *metrics
            .config_hash
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = snapshot.hash.clone();
        let hub = ConfigHub::new(snapshot, config_path.to_path_buf());
        let listen = config.server.listen;
        let listeners = runtime::bind_listeners(listen, plan.count, config.server.backlog)
            .map_err(|e| {
                format!("cannot listen on {listen} ({e}); is the address in use or not local?")
            })?;
        let listen_addr = listeners[0]
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let port = listeners[0].local_addr().map(|a| a.port()).unwrap_or(0);

        let kafka = match &config.kafka {
            Some(k) => {
                Some(KafkaPath::start(k).map_err(|e| format!("cannot start the Kafka path: {e}"))?)
            }
            None => None,
        };
        let kafka_stats = kafka.as_ref().map(|p| p.stats());
        metrics.add_renderer(Box::new(move |out| {
            crate::kafka::metrics::render(out, kafka_stats.as_deref())
        }));
        let spool = match (&config.spool, &kafka) {
            (Some(sc), Some(k)) => {
                let (s, _report) = Spool::open(sc, plan.count, k.sender())
                    .map_err(|e| format!("cannot open the spool {}: {e}", sc.dir.display()))?;
                Some(Arc::new(s))
            }
            _ => None,
        };
        let spool_stats = spool.as_ref().map(|s| s.stats());
        metrics.add_renderer(Box::new(move |out| {
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            crate::spool::stats::render(out, spool_stats.as_deref(), now_ms)
        }));
        let admission = Arc::new(Admission::start(
            config.admission.as_ref(),
            port,
            load_sampler(&metrics, kafka.as_ref()),
        ));
        {
            let a = admission.clone();
            metrics.add_renderer(Box::new(move |out| a.snapshot().render(out)));
        }

        let heartbeats: Arc<Vec<AtomicU64>> =
            Arc::new((0..plan.count).map(|_| AtomicU64::new(0)).collect());
        let epoch = Instant::now();
        let shared = Shared {
            hub: hub.clone(),
            metrics: metrics.clone(),
            kafka: kafka.as_ref().map(|k| k.sender()),
            spool: spool.clone(),
            admission: Some(admission.clone()),
            heartbeats: heartbeats.clone(),
            epoch,
        };
        let workers =
            runtime::start_workers(&plan, engine.engine, &config.server, listeners, shared)
                .map_err(|e| format!("cannot start the workers: {e}"))?;
        let mut app = App {
            config: config.clone(),
            plan,
            engine,
            metrics,
            hub,
            kafka,
            spool,
            admission,
            workers,
            heartbeats,
            epoch,
            listen_addr,
            admin_addr: String::new(),
        };
        app.start_admin()?;
        Ok(app)
    }

    /// Whether every worker's heartbeat is recent (5 s), for `/readyz` and the watchdog.
    fn workers_alive(&self) -> impl Fn() -> bool + Clone + Send + Sync + 'static {
        let hb = self.heartbeats.clone();
        let epoch = self.epoch;
        move || {
            let now = epoch.elapsed().as_millis() as u64;
            hb.iter()
                .all(|h| now.saturating_sub(h.load(Ordering::Relaxed)) < 5_000)
        }
    }

    /// Binds and spawns the admin listener when `[admin]` is configured.
    fn start_admin(&mut self) -> Result<(), String> {
        let Some(a) = &self.config.admin else {
            return Ok(());
        };
        let policy = admin::AdminPolicy::build(a)
            .map_err(|e| format!("cannot start the admin listener: {e}"))?;
        let l = std::net::TcpListener::bind(a.listen)
            .map_err(|e| format!("cannot listen on the admin address {} ({e})", a.listen))?;
        self.admin_addr = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
        let kafka_stats = self.kafka.as_ref().map(|p| p.stats());
        let spool_stats = self.spool.as_ref().map(|s| s.stats());
        let alive = self.workers_alive();
        let (m, m2, hub) = (self.metrics.clone(), self.metrics.clone(), self.hub.clone());
        let hub2 = self.hub.clone();
        let shed_admission = self.admission.clone();
        let hooks = AdminHooks {
            metrics: Box::new(move || m.render()),
            ready: Box::new(move || {
                if !alive() {
                    return Err("a worker is not responding".into());
                }
                let kafka_ready = || -> Result<(), String> {
                    if let Some(s) = &kafka_stats {
                        crate::kafka::readiness(s)?;
                    }
                    if let Some(s) = &spool_stats {
                        s.health()?;
                    }
                    Ok(())
                };
                kafka_ready().map_err(|e| format!("the Kafka path cannot accept: {e}"))
            }),
            reload: Box::new(move || reload(&hub, &m2)),
            upstreams: Box::new(move || {
                let snap = hub2.current();
                let list: Vec<serde_json::Value> =
                    snap.upstreams.iter().map(|u| u.status_json()).collect();
                serde_json::json!({ "upstreams": list }).to_string()
            }),
            shed: Box::new(move |level| {
                shed_admission.set_shed_override(level);
                Ok(format!("shed level {level:?} ({})", shed_admission.mode()))
            }),
        };
        admin::spawn(l, Arc::new(hooks), policy);
        Ok(())
    }

    /// Says relay is up (log line, ready file, `READY=1`, watchdog), serves until
    /// SIGTERM/SIGINT (SIGHUP reloads), then shuts down. Returns the exit code.
    pub fn serve(self, opts: &RunOptions) -> i32 {
        self.announce(opts);
        let _watchdog = systemd::spawn_watchdog(self.workers_alive());
        let signal = match self.wait_for_stop() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot install signal handlers");
                return 1;
            }
        };
        self.shutdown(signal)
    }

    /// The start log line, the ready file and `READY=1`.
    fn announce(&self, opts: &RunOptions) {
        let (plan, engine) = (&self.plan, &self.engine);
        tracing::info!(
            workers = plan.count,
            source = %plan.source,
            capped_by_mask = plan.capped_by_mask,
            cpus = ?plan.allowed_cpus,
            io_engine = %engine.engine,
            engine_reason = %engine.why,
            listen = %self.listen_addr,
            admin = %self.admin_addr,
            "relay started: {} workers ({}{}), io_engine {}",
            plan.count,
            plan.source,
            if plan.capped_by_mask { ", capped by the affinity mask" } else { "" },
            engine.engine
        );
        if let Some(path) = &opts.ready_file {
            let info = serde_json::json!({
                "listen": self.listen_addr,
                "admin": self.admin_addr,
                "workers": plan.count,
                "io_engine": engine.engine.to_string(),
                "pid": std::process::id(),
            });
            let tmp = path.with_extension("tmp");
            if std::fs::write(&tmp, info.to_string())
                .and_then(|_| std::fs::rename(&tmp, path))
                .is_err()
            {
                tracing::warn!(path = %path.display(), "cannot write the ready file");
            }
        }
        if let Err(e) = systemd::notify_ready() {
            tracing::warn!(error = %e, "cannot notify systemd (READY=1)");
        }
    }

    /// Blocks until SIGTERM or SIGINT (returned); SIGHUP reloads the configuration.
    fn wait_for_stop(&self) -> Result<i32, std::io::Error> {
        let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
        for sig in signals.forever() {
            if sig == SIGHUP {
                let _ = systemd::notify_reloading();
                let _ = reload(&self.hub, &self.metrics);
                let _ = systemd::notify_ready();
            } else {
                return Ok(sig);
            }
        }
        Ok(SIGTERM)
    }

    /// The shutdown sequence, within `shutdown_budget_ms`: `STOPPING=1`, the workers stop
    /// accepting and drain (at most `shutdown_grace_ms`), the Kafka flush gets what is left (at
    /// most `flush_timeout_ms`), then the spool's last group commit. Returns the exit code.
    pub fn shutdown(self, signal: i32) -> i32 {
        let server = &self.config.server;
        let stop_started = Instant::now();
        let budget_end = stop_started + Duration::from_millis(server.shutdown_budget_ms);
        if let Err(e) = systemd::notify_stopping() {
            tracing::warn!(error = %e, "cannot notify systemd (STOPPING=1)");
        }
        tracing::info!(
            signal,
            grace_ms = server.shutdown_grace_ms,
            budget_ms = server.shutdown_budget_ms,
            "stopping: no new connections; finishing in-flight requests"
        );
        let deadline = (stop_started + Duration::from_millis(server.shutdown_grace_ms))
            .min(budget_end - SPOOL_STOP_RESERVE);
        drain_workers(self.workers, deadline);
        self.admission.shutdown();
        let mut code = 0;
        if let (Some(path), Some(k)) = (self.kafka, &self.config.kafka) {
            let left = budget_end
                .saturating_duration_since(Instant::now())
                .saturating_sub(SPOOL_STOP_RESERVE);
            let report = path.shutdown(Duration::from_millis(k.flush_timeout_ms).min(left));
            if report.lost_any() {
                tracing::error!(
                    enqueued = report.enqueued,
                    delivered = report.delivered,
                    failed = report.failed,
                    pending = report.pending,
                    spooled = report.spooled,
                    lost = report.lost,
                    "Kafka flush: some originals answered 2xx in memory mode were NOT delivered"
                );
                code = 3;
            } else {
                tracing::info!(
                    enqueued = report.enqueued,
                    delivered = report.delivered,
                    failed = report.failed,
                    pending = report.pending,
                    spooled = report.spooled,
                    "Kafka flush: every memory-mode original delivered; spooled ones stay on disk"
                );
            }
        }
        if let Some(s) = &self.spool {
            s.shutdown();
        }
        tracing::info!(
            elapsed_ms = stop_started.elapsed().as_millis() as u64,
            budget_ms = server.shutdown_budget_ms,
            "shutdown sequence done"
        );
        tracing::info!(exit_code = code, "stopped");
        code
    }
}

/// Tells every worker to stop accepting and waits for them until `deadline`.
fn drain_workers(mut workers: Vec<WorkerHandle>, deadline: Instant) {
    for w in &mut workers {
        if let Some(tx) = w.stop.take() {
            let _ = tx.send(());
        }
    }
    for w in workers {
        while !w.thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if w.thread.is_finished() {
            let _ = w.thread.join();
        }
    }
}

/// What the admission controller samples: in-flight requests per worker and the Kafka
/// queue's fill.
fn load_sampler(
    metrics: &Arc<Metrics>,
    kafka: Option<&KafkaPath>,
) -> Arc<dyn Fn() -> LoadSample + Send + Sync> {
    let m = metrics.clone();
    let kafka_fill: Box<dyn Fn() -> f64 + Send + Sync> = match kafka {
        Some(p) => {
            let stats = p.stats();
            Box::new(move || stats.depth() as f64 / stats.capacity().max(1) as f64)
        }
        None => Box::new(|| 0.0),
    };
    Arc::new(move || LoadSample {
        inflight_per_worker: m.inflight.per_worker(),
        kafka_fill: kafka_fill(),
        accept_backlog: 0,
    })
}

/// Re-reads the config file and publishes it to every worker when it is valid as a whole.
/// Settings that need a restart are reported and keep their running values.
pub fn reload(hub: &ConfigHub, metrics: &Metrics) -> Result<String, String> {
    let old = hub.current();
    match Snapshot::load(&hub.path, metrics, Some(&old)) {
        Ok(new) => {
            let mut restart = Vec::new();
            let (o, n) = (&old.config, &new.config);
            if o.server.listen != n.server.listen {
                restart.push("server.listen");
            }
            if o.server.workers != n.server.workers {
                restart.push("server.workers");
            }
            if o.server.io_engine != n.server.io_engine {
                restart.push("server.io_engine");
            }
            if o.admin != n.admin {
                restart.push("admin");
            }
            if o.kafka != n.kafka {
                restart.push("kafka");
            }
            if o.admission != n.admission {
                restart.push("admission");
            }
            if o.server != n.server && restart.is_empty() {
                restart.push("server (limits and timeouts)");
            }
            let hash = new.hash.clone();
            hub.publish(new);
            *metrics
                .config_hash
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = hash.clone();
            metrics.reloads_ok.fetch_add(1, Ordering::Relaxed);
            let msg = if restart.is_empty() {
                format!(
                    "configuration {hash} loaded: routes, PII policies, keys and upstreams swapped"
                )
            } else {
                format!(
                    "configuration {hash} loaded: routes, PII policies, keys and upstreams swapped; these changes need a restart and keep their running values: {}",
                    restart.join(", ")
                )
            };
            tracing::info!(hash = %hash, restart_needed = ?restart, "{msg}");
            Ok(msg)
        }
        Err(e) => {
            metrics.reloads_failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!(errors = %e, "reload refused; the previous configuration keeps serving");
            Err(e)
        }
    }
}
