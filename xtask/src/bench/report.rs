//! The report: what a step and a scenario measured, the ratios between scenarios, and the
//! markdown rendering (the JSON is the same structs, serialised).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

/// One measured step.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Step {
    /// `None` for the closed-loop maximum.
    pub(super) target_tps: Option<u64>,
    pub(super) achieved_tps: f64,
    pub(super) answered: u64,
    pub(super) ok: u64,
    pub(super) p50_us: u64,
    pub(super) p95_us: u64,
    pub(super) p99_us: u64,
    pub(super) p999_us: u64,
    pub(super) max_us: u64,
    pub(super) errors: u64,
    /// Errors by class, e.g. `{"503": 12, "timeout": 3}`.
    pub(super) errors_by_class: BTreeMap<String, u64>,
    pub(super) relay_cpu_pct: Option<f64>,
    pub(super) relay_cpu_us_per_req: Option<f64>,
    pub(super) relay_rss_mib: Option<f64>,
    pub(super) upstream_requests: u64,
    pub(super) pii_violations: u64,
    pub(super) kafka_records: Option<u64>,
}

/// One scenario of the run.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Scenario {
    pub(super) name: String,
    pub(super) what: String,
    /// Where each process was pinned.
    pub(super) pinning: String,
    /// The io engine relay reported in its ready file.
    pub(super) io_engine: Option<String>,
    pub(super) workers: Option<u64>,
    /// Why the scenario did not run, when it did not.
    pub(super) skipped: Option<String>,
    pub(super) steps: Vec<Step>,
    pub(super) max: Option<Step>,
    /// Highest step with p99 under the threshold, no errors and at least 95 % of the target.
    pub(super) safe_tps: Option<u64>,
    /// Median relay CPU microseconds per request over the steps without errors.
    pub(super) median_cpu_us_per_req: Option<f64>,
}

#[derive(Debug, Serialize)]
pub(super) struct Report {
    pub(super) date: String,
    pub(super) commit: String,
    pub(super) machine: String,
    /// `/proc/loadavg` before and after the run: other work on the machine skews latencies.
    pub(super) load_before: String,
    pub(super) load_after: String,
    pub(super) command: String,
    pub(super) step_secs: f64,
    pub(super) warmup_secs: f64,
    pub(super) connections: usize,
    pub(super) body_size: usize,
    pub(super) p99_threshold_ms: f64,
    pub(super) scenarios: Vec<Scenario>,
    pub(super) ratios: BTreeMap<String, Option<f64>>,
}

pub(super) fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Whether a step counts as a safe operating point.
pub(super) fn is_safe(s: &Step, p99_ms: f64) -> bool {
    let t = s.target_tps.unwrap_or(0) as f64;
    s.errors == 0 && (s.p99_us as f64) < p99_ms * 1000.0 && s.achieved_tps >= 0.95 * t
}

pub(super) fn ratios(scs: &[Scenario], p99_ms: f64) -> BTreeMap<String, Option<f64>> {
    let get = |n: &str| scs.iter().find(|s| s.name == n && s.skipped.is_none());
    let max_tps = |n: &str| get(n).and_then(|s| s.max.as_ref()).map(|m| m.achieved_tps);
    let div = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    // A metric at the highest target rate that was a safe operating point for both.
    let common = |a: &str, b: &str, f: fn(&Step) -> Option<f64>| -> Option<f64> {
        let (sa, sb) = (get(a)?, get(b)?);
        let rate = sa
            .steps
            .iter()
            .filter(|s| is_safe(s, p99_ms))
            .filter_map(|s| s.target_tps)
            .filter(|r| {
                sb.steps
                    .iter()
                    .any(|t| is_safe(t, p99_ms) && t.target_tps == Some(*r))
            })
            .max()?;
        let va = f(sa.steps.iter().find(|s| s.target_tps == Some(rate))?);
        let vb = f(sb.steps.iter().find(|s| s.target_tps == Some(rate))?);
        div(va, vb)
    };
    let cpu: fn(&Step) -> Option<f64> = |s| s.relay_cpu_us_per_req;
    let p99: fn(&Step) -> Option<f64> = |s| Some(s.p99_us as f64);
    let mut m = BTreeMap::new();
    for (label, a, b) in [
        ("io_uring/epoll (1 worker)", "uring-1w", "epoll-1w"),
        ("2 workers/1 worker (io_uring)", "uring-2w", "uring-1w"),
        ("scrub/plain proxy (1 worker)", "scrub-1w", "uring-1w"),
        ("full work/plain proxy (1 worker)", "full-1w", "uring-1w"),
        ("relay io_uring 1 worker/direct", "uring-1w", "direct"),
    ] {
        m.insert(
            format!("{label}: closed-loop max TPS"),
            div(max_tps(a), max_tps(b)),
        );
        if b != "direct" {
            m.insert(
                format!("{label}: CPU µs/req, highest common safe step"),
                common(a, b, cpu),
            );
        }
        m.insert(
            format!("{label}: p99, highest common safe step"),
            common(a, b, p99),
        );
    }
    m
}

pub(super) fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

pub(super) fn opt(v: Option<f64>, prec: usize) -> String {
    v.map(|v| format!("{v:.prec$}"))
        .unwrap_or_else(|| "–".into())
}

pub(super) fn errs(s: &Step) -> String {
    if s.errors == 0 {
        return "0".into();
    }
    let parts: Vec<String> = s
        .errors_by_class
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    format!("{} ({})", s.errors, parts.join(", "))
}

pub(super) fn markdown(r: &Report, pin_note: &str, taskset: bool) -> String {
    let mut m = String::new();
    let _ = writeln!(m, "# relay perf lab: {}\n", r.date);
    let _ = writeln!(m, "- command: `{}` (commit {})", r.command.trim(), r.commit);
    let _ = writeln!(
        m,
        "- machine: {}; /proc/loadavg before: {}, after: {} (other work on the machine skews the latencies; CPU µs/request much less)",
        r.machine, r.load_before, r.load_after
    );
    let _ = writeln!(
        m,
        "- pinning: {}",
        if taskset {
            pin_note.to_string()
        } else {
            "none (taskset not found)".into()
        }
    );
    let _ = writeln!(
        m,
        "- load: relay-loadgen open loop, {} keep-alive connections, latency from the scheduled send time; {} s measured + {} s warm-up per step; body: one {} B app-log JSON event",
        r.connections, r.step_secs, r.warmup_secs, r.body_size
    );
    let _ = writeln!(
        m,
        "- relay CPU: /proc/<pid>/stat utime+stime over the step (warm-up included) / answers of the step; latencies in ms\n"
    );
    for sc in &r.scenarios {
        let _ = writeln!(m, "## {}: {}\n", sc.name, sc.what);
        if let Some(why) = &sc.skipped {
            let _ = writeln!(m, "Skipped: {why}\n");
            continue;
        }
        let _ = writeln!(
            m,
            "Pinning: {}{}{}\n",
            sc.pinning,
            sc.io_engine
                .as_ref()
                .map(|e| format!("; io_engine (reported): {e}"))
                .unwrap_or_default(),
            sc.workers
                .map(|w| format!("; workers: {w}"))
                .unwrap_or_default()
        );
        let _ = writeln!(
            m,
            "| target TPS | achieved TPS | p50 | p95 | p99 | p99.9 | max | errors | relay CPU % | relay CPU µs/req | relay RSS MiB | upstream reqs | PII leaks | Kafka records |"
        );
        let _ = writeln!(
            m,
            "|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---|"
        );
        for st in sc.steps.iter().chain(sc.max.iter()) {
            let _ = writeln!(
                m,
                "| {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                st.target_tps
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "max (closed loop)".into()),
                st.achieved_tps,
                ms(st.p50_us),
                ms(st.p95_us),
                ms(st.p99_us),
                ms(st.p999_us),
                ms(st.max_us),
                errs(st),
                opt(st.relay_cpu_pct, 0),
                opt(st.relay_cpu_us_per_req, 1),
                opt(st.relay_rss_mib, 1),
                st.upstream_requests,
                if sc.name.starts_with("full") || sc.name.starts_with("scrub") {
                    st.pii_violations.to_string()
                } else {
                    "–".into()
                },
                st.kafka_records
                    .map(|k| k.to_string())
                    .unwrap_or_else(|| "n/a".into()),
            );
        }
        let _ = writeln!(
            m,
            "\nSafe operating point (p99 < {} ms, no errors, ≥ 95 % of target): **{}**; median relay CPU µs/request over clean steps: **{}**\n",
            r.p99_threshold_ms,
            sc.safe_tps.map(|t| format!("{t} req/s")).unwrap_or_else(|| "none".into()),
            opt(sc.median_cpu_us_per_req, 1)
        );
    }
    let _ = writeln!(m, "## Ratios (same run)\n");
    let _ = writeln!(m, "| ratio | value |\n|---|---:|");
    for (k, v) in &r.ratios {
        let _ = writeln!(
            m,
            "| {k} | {} |",
            v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "n/a".into())
        );
    }
    m
}
