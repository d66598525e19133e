//! `relay run`: load the config, decide the workers and engine, bind, start the Kafka path,
//! admission and workers, serve the admin port, then wait for signals (SIGHUP reloads;
//! SIGTERM/SIGINT drain and exit).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use crate::admin::{self, AdminHooks};
use crate::config::Config;
use crate::cpu_quota;
use crate::kafka::{KafkaPath, KafkaStats};
use crate::metrics::{esc, family, histogram_series, Metrics};
use crate::runtime::{self, Shared};
use crate::snapshot::{ConfigHub, Snapshot};
use crate::spool::Spool;
use crate::systemd;

/// Options of `relay run` beyond the config file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// When listening, write `{"listen": ..., "admin": ..., "workers": N, "io_engine": ...}` here.
    pub ready_file: Option<PathBuf>,
}

/// Runs relay until SIGTERM/SIGINT; returns the process exit code.
pub fn run(config_path: &Path, opts: RunOptions) -> i32 {
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            return 1;
        }
    };
    let plan = cpu_quota::plan(config.server.workers);
    let engine = match runtime::choose_engine(config.server.io_engine) {
        Ok(e) => e,
        Err(msg) => {
            tracing::error!("{msg}");
            return 1;
        }
    };
    let metrics = Metrics::new(plan.count);
    *metrics.io_engine.lock().unwrap_or_else(|p| p.into_inner()) = engine.engine.to_string();
    let file_bytes = std::fs::read(config_path).unwrap_or_default();
    let snapshot = match Snapshot::build(config.clone(), &file_bytes, &metrics) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            eprintln!("{e}");
            return 1;
        }
    };
    *metrics
        .config_hash
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = snapshot.hash.clone();
    let hub = ConfigHub::new(snapshot, config_path.to_path_buf());

    let listeners = match runtime::bind_listeners(
        config.server.listen,
        plan.count,
        config.server.backlog,
    ) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(listen = %config.server.listen, error = %e, "cannot listen; is the address in use or not local?");
            return 1;
        }
    };
    let listen_addr = listeners[0]
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();

    let kafka = match &config.kafka {
        Some(k) => match KafkaPath::start(k) {
            Ok(p) => {
                let stats = p.stats();
                metrics.add_renderer(Box::new(move |out| render_kafka(out, Some(&stats))));
                Some(p)
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start the Kafka path");
                eprintln!("cannot start the Kafka path: {e}");
                return 1;
            }
        },
        None => {
            metrics.add_renderer(Box::new(|out| render_kafka(out, None)));
            None
        }
    };
    let spool = match (&config.spool, &kafka) {
        (Some(sc), Some(k)) => match Spool::open(sc, plan.count, k.sender()) {
            Ok((s, _report)) => Some(Arc::new(s)),
            Err(e) => {
                tracing::error!(dir = %sc.dir.display(), error = %e, "cannot open the spool");
                eprintln!("cannot open the spool {}: {e}", sc.dir.display());
                return 1;
            }
        },
        _ => None,
    };
    {
        let st = spool.as_ref().map(|s| s.stats());
        metrics.add_renderer(Box::new(move |out| {
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            crate::spool::stats::render(out, st.as_deref(), now_ms)
        }));
    }
    let kafka_ready: Arc<dyn Fn() -> Result<(), String> + Send + Sync> = {
        let stats = kafka.as_ref().map(|p| p.stats());
        let spool_stats = spool.as_ref().map(|s| s.stats());
        Arc::new(move || {
            if let Some(s) = &stats {
                crate::kafka::readiness(s)?;
            }
            if let Some(s) = &spool_stats {
                s.health()?;
            }
            Ok(())
        })
    };
    let admission = {
        let m = metrics.clone();
        let kafka_fill: Box<dyn Fn() -> f64 + Send + Sync> = match &kafka {
            Some(p) => {
                let stats = p.stats();
                Box::new(move || stats.depth() as f64 / stats.capacity().max(1) as f64)
            }
            None => Box::new(|| 0.0),
        };
        let load: Arc<dyn Fn() -> crate::admission::LoadSample + Send + Sync> =
            Arc::new(move || crate::admission::LoadSample {
                inflight_per_worker: m.inflight.per_worker(),
                kafka_fill: kafka_fill(),
                accept_backlog: 0,
            });
        let port = listeners[0].local_addr().map(|a| a.port()).unwrap_or(0);
        Arc::new(crate::admission::Admission::start(
            config.admission.as_ref(),
            port,
            load,
        ))
    };
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
    let mut workers =
        match runtime::start_workers(&plan, engine.engine, &config.server, listeners, shared) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the workers");
                return 1;
            }
        };

    let workers_alive = {
        let hb = heartbeats.clone();
        move || {
            let now = epoch.elapsed().as_millis() as u64;
            hb.iter()
                .all(|h| now.saturating_sub(h.load(Ordering::Relaxed)) < 5_000)
        }
    };

    let mut admin_addr = String::new();
    if let Some(a) = &config.admin {
        let policy = match admin::AdminPolicy::build(a) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the admin listener");
                return 1;
            }
        };
        match std::net::TcpListener::bind(a.listen) {
            Ok(l) => {
                admin_addr = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
                let m = metrics.clone();
                let m2 = metrics.clone();
                let hub2 = hub.clone();
                let alive = workers_alive.clone();
                let kafka_ready = kafka_ready.clone();
                let hooks = AdminHooks {
                    metrics: Box::new(move || m.render()),
                    ready: Box::new(move || {
                        if !alive() {
                            return Err("a worker is not responding".into());
                        }
                        kafka_ready().map_err(|e| format!("the Kafka path cannot accept: {e}"))
                    }),
                    reload: Box::new(move || reload(&hub2, &m2)),
                    shed: {
                        let a = admission.clone();
                        Box::new(move |level| {
                            a.set_shed_override(level);
                            Ok(format!("shed level {level:?} ({})", a.mode()))
                        })
                    },
                };
                admin::spawn(l, Arc::new(hooks), policy);
            }
            Err(e) => {
                tracing::error!(listen = %a.listen, error = %e, "cannot listen on the admin address");
                return 1;
            }
        }
    }

    tracing::info!(
        workers = plan.count,
        source = %plan.source,
        capped_by_mask = plan.capped_by_mask,
        cpus = ?plan.allowed_cpus,
        io_engine = %engine.engine,
        engine_reason = %engine.why,
        listen = %listen_addr,
        admin = %admin_addr,
        "relay started: {} workers ({}{}), io_engine {}",
        plan.count,
        plan.source,
        if plan.capped_by_mask { ", capped by the affinity mask" } else { "" },
        engine.engine
    );
    if let Some(path) = &opts.ready_file {
        let info = serde_json::json!({
            "listen": listen_addr,
            "admin": admin_addr,
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
    let _watchdog = systemd::spawn_watchdog(workers_alive.clone());

    let mut signals = match signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP]) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install signal handlers");
            return 1;
        }
    };
    let mut stop_signal = 0;
    for sig in signals.forever() {
        match sig {
            SIGHUP => {
                let _ = systemd::notify_reloading();
                let _ = reload(&hub, &metrics);
                let _ = systemd::notify_ready();
            }
            s => {
                stop_signal = s;
                break;
            }
        }
    }

    // The whole sequence fits in `shutdown_budget_ms`: drain first (at most
    // `shutdown_grace_ms`), then the Kafka flush gets what is left (at most
    // `flush_timeout_ms`), keeping a little for the spool's last group commit.
    let stop_started = Instant::now();
    let budget_end = stop_started + Duration::from_millis(config.server.shutdown_budget_ms);
    if let Err(e) = systemd::notify_stopping() {
        tracing::warn!(error = %e, "cannot notify systemd (STOPPING=1)");
    }
    tracing::info!(
        signal = stop_signal,
        grace_ms = config.server.shutdown_grace_ms,
        budget_ms = config.server.shutdown_budget_ms,
        "stopping: no new connections; finishing in-flight requests"
    );
    for w in &mut workers {
        if let Some(tx) = w.stop.take() {
            let _ = tx.send(());
        }
    }
    const SPOOL_STOP_RESERVE: Duration = Duration::from_millis(500);
    let deadline = (stop_started + Duration::from_millis(config.server.shutdown_grace_ms))
        .min(budget_end - SPOOL_STOP_RESERVE);
    for w in workers {
        while !w.thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if w.thread.is_finished() {
            let _ = w.thread.join();
        }
    }
    admission.shutdown();
    let mut code = 0;
    if let (Some(path), Some(k)) = (kafka, &config.kafka) {
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
    if let Some(s) = &spool {
        s.shutdown();
    }
    tracing::info!(
        elapsed_ms = stop_started.elapsed().as_millis() as u64,
        budget_ms = config.server.shutdown_budget_ms,
        "shutdown sequence done"
    );
    tracing::info!(exit_code = code, "stopped");
    code
}

/// The Kafka path's metric families. Without `[kafka]` (`None`) the families still exist,
/// with zero depth and capacity and no per-topic series, so dashboards and alerts resolve.
fn render_kafka(out: &mut String, stats: Option<&KafkaStats>) {
    use std::fmt::Write as _;
    family(
        out,
        "relay_kafka_queue_depth",
        "gauge",
        "Originals accepted and not yet acknowledged by Kafka.",
    );
    let _ = writeln!(
        out,
        "relay_kafka_queue_depth {}",
        stats.map_or(0, |s| s.depth())
    );
    family(
        out,
        "relay_kafka_queue_capacity",
        "gauge",
        "Capacity of the Kafka path, records (0 without [kafka]).",
    );
    let _ = writeln!(
        out,
        "relay_kafka_queue_capacity {}",
        stats.map_or(0, |s| s.capacity())
    );
    family(
        out,
        "relay_kafka_queue_bytes",
        "gauge",
        "Payload + key bytes of the originals accepted and not yet acknowledged by Kafka.",
    );
    let _ = writeln!(
        out,
        "relay_kafka_queue_bytes {}",
        stats.map_or(0, |s| s.depth_bytes())
    );
    family(
        out,
        "relay_kafka_queue_max_bytes",
        "gauge",
        "queue_max_bytes: the byte bound of the Kafka path (0 without [kafka]).",
    );
    let _ = writeln!(
        out,
        "relay_kafka_queue_max_bytes {}",
        stats.map_or(0, |s| s.capacity_bytes())
    );
    family(
        out,
        "relay_kafka_originals_lost_total",
        "counter",
        "Originals of memory-mode routes answered 2xx and then not delivered, by reason.",
    );
    if let Some(s) = stats {
        for (reason, n) in s.lost() {
            let _ = writeln!(
                out,
                "relay_kafka_originals_lost_total{{reason=\"{}\"}} {n}",
                reason.label()
            );
        }
    }
    let topics = stats.map(|s| s.topics()).unwrap_or_default();
    family(
        out,
        "relay_kafka_records_enqueued_total",
        "counter",
        "Originals queued for Kafka, by topic.",
    );
    for t in &topics {
        let _ = writeln!(
            out,
            "relay_kafka_records_enqueued_total{{topic=\"{}\"}} {}",
            esc(&t.topic),
            t.enqueued
        );
    }
    family(
        out,
        "relay_kafka_records_delivered_total",
        "counter",
        "Originals acknowledged by Kafka, by topic.",
    );
    for t in &topics {
        let _ = writeln!(
            out,
            "relay_kafka_records_delivered_total{{topic=\"{}\"}} {}",
            esc(&t.topic),
            t.delivered
        );
    }
    family(
        out,
        "relay_kafka_records_failed_total",
        "counter",
        "Originals whose delivery failed, by topic and reason.",
    );
    for t in &topics {
        for (reason, n) in &t.failed {
            let _ = writeln!(
                out,
                "relay_kafka_records_failed_total{{topic=\"{}\",reason=\"{}\"}} {n}",
                esc(&t.topic),
                reason.label()
            );
        }
    }
    family(
        out,
        "relay_kafka_delivery_duration_seconds",
        "histogram",
        "Time from queueing an original to its delivery report, by topic.",
    );
    if let Some(stats) = stats {
        for t in &topics {
            histogram_series(
                out,
                "relay_kafka_delivery_duration_seconds",
                &format!("topic=\"{}\"", esc(&t.topic)),
                stats.buckets(),
                &t.latency.cumulative,
                t.latency.sum_seconds,
                t.latency.count,
            );
        }
    }
}

/// Re-reads the config file and publishes it to every worker when it is valid as a whole.
/// Settings that need a restart are reported and keep their running values.
pub fn reload(hub: &ConfigHub, metrics: &Metrics) -> Result<String, String> {
    let old = hub.current();
    match Snapshot::load(&hub.path, metrics) {
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
            if format!("{:?}", o.admin) != format!("{:?}", n.admin) {
                restart.push("admin");
            }
            if format!("{:?}", o.kafka) != format!("{:?}", n.kafka) {
                restart.push("kafka");
            }
            if format!("{:?}", o.admission) != format!("{:?}", n.admission) {
                restart.push("admission");
            }
            if toml::to_string(&o.server).ok() != toml::to_string(&n.server).ok()
                && restart.is_empty()
            {
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
