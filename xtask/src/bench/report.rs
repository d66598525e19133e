//! The report: what a step and a scenario measured, the ratios between scenarios, and the
//! markdown rendering (the JSON is the same structs, serialised).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::plan::CapacityPlan;

/// One measured step.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// CPU % of the proxy under test (relay, or a reference's processes) over the step.
    pub(super) proxy_cpu_pct: Option<f64>,
    /// CPU µs of the proxy under test per answered request.
    pub(super) proxy_cpu_us_per_req: Option<f64>,
    pub(super) proxy_rss_mib: Option<f64>,
    /// CPU µs the load generator spent per answered request (its own `/proc/self/stat`).
    #[serde(default)]
    pub(super) loadgen_cpu_us_per_req: Option<f64>,
    /// CPU µs the stub upstream spent per answered request: a proxy that makes its peers work
    /// harder shows here.
    #[serde(default)]
    pub(super) upstream_cpu_us_per_req: Option<f64>,
    pub(super) upstream_requests: u64,
    /// Connections the stub upstream accepted during the step (its own stats query not
    /// counted): a proxy that keeps its upstream connections alive opens few.
    #[serde(default)]
    pub(super) upstream_connections: u64,
    pub(super) pii_violations: u64,
    pub(super) kafka_records: Option<u64>,
    /// Spool group commits (`fdatasync`s) during the step (`spool` scenarios only).
    #[serde(default)]
    pub(super) spool_fsyncs: Option<u64>,
    /// Records made durable per `fdatasync` during the step (`spool` scenarios only).
    #[serde(default)]
    pub(super) spool_records_per_fsync: Option<f64>,
}

/// One scenario of the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// Median CPU microseconds per request of the proxy under test over the steps without
    /// errors.
    pub(super) median_cpu_us_per_req: Option<f64>,
}

#[derive(Debug, Serialize, Deserialize)]
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
    /// relay against the reference proxies (empty when none ran).
    #[serde(default)]
    pub(super) references: Vec<Comparison>,
    /// `--plan`: cores and pods for a target rate.
    #[serde(default)]
    pub(super) capacity_plan: Option<CapacityPlan>,
}

/// relay scenario against a reference proxy, from the same run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Comparison {
    pub(super) relay: String,
    pub(super) reference: String,
    /// relay's CPU µs/request over the reference's, the median of the per-rate ratios over
    /// the fixed rates both ran without errors.
    pub(super) cpu_ratio_median: Option<f64>,
    /// The same ratio at each of those rates: `(rate, ratio)`.
    pub(super) cpu_ratio_by_rate: Vec<(u64, f64)>,
    /// CPU µs/request ratio at saturation (the closed-loop maximum steps).
    pub(super) cpu_ratio_at_max: Option<f64>,
    /// Closed-loop maximum TPS ratio.
    pub(super) max_tps_ratio: Option<f64>,
}

/// relay's scenarios compared with the references: the plain proxy on both engines and the
/// full job.
pub(super) const RELAY_VS: &[(&str, &str)] = &[
    ("uring-1w", "relay plain proxy (io_uring)"),
    ("epoll-1w", "relay plain proxy (epoll)"),
    ("full-1w", "relay full job (Kafka + scrub)"),
];

/// The reference proxies.
pub(super) const REFERENCES: &[&str] = &["nginx", "haproxy-http", "haproxy-tcp"];

/// Every relay-vs-reference pair where both scenarios ran.
pub(super) fn comparisons(scs: &[Scenario]) -> Vec<Comparison> {
    let get = |n: &str| scs.iter().find(|s| s.name == n && s.skipped.is_none());
    let cpu_at = |s: &Scenario, rate: u64| {
        s.steps
            .iter()
            .find(|t| t.target_tps == Some(rate) && t.errors == 0)
            .and_then(|t| t.proxy_cpu_us_per_req)
    };
    let mut out = Vec::new();
    for &(a, _) in RELAY_VS {
        for &b in REFERENCES {
            let (Some(sa), Some(sb)) = (get(a), get(b)) else {
                continue;
            };
            let by_rate: Vec<(u64, f64)> = sa
                .steps
                .iter()
                .filter_map(|t| t.target_tps)
                .filter_map(|r| Some((r, ratio(cpu_at(sa, r), cpu_at(sb, r))?)))
                .collect();
            let mut v: Vec<f64> = by_rate.iter().map(|(_, x)| *x).collect();
            let max_of = |s: &Scenario, f: fn(&Step) -> Option<f64>| s.max.as_ref().and_then(f);
            out.push(Comparison {
                relay: a.into(),
                reference: b.into(),
                cpu_ratio_median: median(&mut v),
                cpu_ratio_by_rate: by_rate,
                cpu_ratio_at_max: ratio(
                    max_of(sa, |m| m.proxy_cpu_us_per_req),
                    max_of(sb, |m| m.proxy_cpu_us_per_req),
                ),
                max_tps_ratio: ratio(
                    max_of(sa, |m| Some(m.achieved_tps)),
                    max_of(sb, |m| Some(m.achieved_tps)),
                ),
            });
        }
    }
    out
}

/// `a / b` when both are known and `b > 0`.
pub(super) fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
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
    let cpu: fn(&Step) -> Option<f64> = |s| s.proxy_cpu_us_per_req;
    let p99: fn(&Step) -> Option<f64> = |s| Some(s.p99_us as f64);
    let mut m = BTreeMap::new();
    for (label, a, b) in [
        ("io_uring/epoll (1 worker)", "uring-1w", "epoll-1w"),
        ("2 workers/1 worker (io_uring)", "uring-2w", "uring-1w"),
        ("scrub/plain proxy (1 worker)", "scrub-1w", "uring-1w"),
        (
            "one dead node/healthy (1 worker)",
            "dead-node-1w",
            "uring-1w",
        ),
        ("full work/plain proxy (1 worker)", "full-1w", "uring-1w"),
        (
            "full work spool/memory (1 worker)",
            "full-spool-1w",
            "full-1w",
        ),
        ("full work ack/memory (1 worker)", "full-ack-1w", "full-1w"),
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
        "- CPU µs/req: /proc/<pid>/stat utime+stime over the step (warm-up included) / answers of the step, for the proxy under test (relay's threads; a reference's master and workers), the stub upstream (same window) and the load generator (its own run); latencies in ms\n"
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
            "| target TPS | achieved TPS | p50 | p95 | p99 | p99.9 | max | errors | proxy CPU % | proxy CPU µs/req | loadgen CPU µs/req | upstream CPU µs/req | proxy RSS MiB | upstream reqs | PII leaks | Kafka records | records/fsync |"
        );
        let _ = writeln!(
            m,
            "|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"
        );
        for st in sc.steps.iter().chain(sc.max.iter()) {
            let _ = writeln!(
                m,
                "| {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
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
                opt(st.proxy_cpu_pct, 0),
                opt(st.proxy_cpu_us_per_req, 1),
                opt(st.loadgen_cpu_us_per_req, 1),
                opt(st.upstream_cpu_us_per_req, 1),
                opt(st.proxy_rss_mib, 1),
                st.upstream_requests,
                if sc.name.starts_with("full") || sc.name.starts_with("scrub") {
                    st.pii_violations.to_string()
                } else {
                    "–".into()
                },
                st.kafka_records
                    .map(|k| k.to_string())
                    .unwrap_or_else(|| "n/a".into()),
                match (st.spool_records_per_fsync, st.spool_fsyncs) {
                    (Some(r), Some(n)) => format!("{r:.1} ({n} fsyncs)"),
                    _ => "–".into(),
                },
            );
        }
        let _ = writeln!(
            m,
            "\nSafe operating point (p99 < {} ms, no errors, ≥ 95 % of target): **{}**; median proxy CPU µs/request over clean steps: **{}**\n",
            r.p99_threshold_ms,
            sc.safe_tps.map(|t| format!("{t} req/s")).unwrap_or_else(|| "none".into()),
            opt(sc.median_cpu_us_per_req, 1)
        );
    }
    m.push_str(&delivery_modes_md(r));
    let _ = writeln!(m, "## Ratios (same run)\n");
    let _ = writeln!(m, "| ratio | value |\n|---|---:|");
    for (k, v) in &r.ratios {
        let _ = writeln!(
            m,
            "| {k} | {} |",
            v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "n/a".into())
        );
    }
    if !r.references.is_empty() {
        m.push_str(&references_md(r));
    }
    if let Some(p) = &r.capacity_plan {
        m.push_str(&p.markdown());
    }
    m
}

/// The full-work scenario in each delivery mode side by side (issue 12): CPU µs/request and
/// p99 at each mode's highest safe step and over all clean steps, and records per `fdatasync`
/// (spool only). Empty when none of those scenarios ran.
fn delivery_modes_md(r: &Report) -> String {
    let modes = [
        ("memory", "full-1w"),
        ("spool", "full-spool-1w"),
        ("ack", "full-ack-1w"),
    ];
    let ran: Vec<(&str, &Scenario)> = modes
        .iter()
        .filter_map(|(mode, n)| {
            r.scenarios
                .iter()
                .find(|s| s.name == *n && s.skipped.is_none())
                .map(|s| (*mode, s))
        })
        .collect();
    if ran.is_empty() {
        return String::new();
    }
    let mut m = String::new();
    let _ = writeln!(m, "## Delivery modes (full work, 1 worker)\n");
    let _ = writeln!(
        m,
        "| delivery | scenario | safe TPS | p99 ms at safe TPS | CPU µs/req at safe TPS | median CPU µs/req | records/fsync (all steps) |\n|---|---|---:|---:|---:|---:|---:|"
    );
    for (mode, sc) in ran {
        let at = sc
            .safe_tps
            .and_then(|t| sc.steps.iter().find(|s| s.target_tps == Some(t)));
        let (fsyncs, recs) = sc
            .steps
            .iter()
            .chain(sc.max.iter())
            .filter_map(|s| Some((s.spool_fsyncs?, s.spool_records_per_fsync?)))
            .fold((0u64, 0f64), |(f, r), (n, per)| (f + n, r + per * n as f64));
        let per_fsync = (fsyncs > 0).then(|| recs / fsyncs as f64);
        let _ = writeln!(
            m,
            "| {mode} | {} | {} | {} | {} | {} | {} |",
            sc.name,
            sc.safe_tps
                .map(|t| t.to_string())
                .unwrap_or_else(|| "none".into()),
            at.map(|s| ms(s.p99_us)).unwrap_or_else(|| "–".into()),
            opt(at.and_then(|s| s.proxy_cpu_us_per_req), 1),
            opt(sc.median_cpu_us_per_req, 1),
            opt(per_fsync, 1),
        );
    }
    let _ = writeln!(
        m,
        "\nGoal (issue 12): spool costs at most 15 % more CPU per request than memory at 10k req/s; see the ratio `full work spool/memory` below.\n"
    );
    m
}

/// The section comparing relay with the reference proxies: every fixed rate (and the
/// closed-loop maximum) with each scenario's proxy, load generator and upstream CPU per
/// request, then the ratios.
fn references_md(r: &Report) -> String {
    let mut m = String::new();
    let _ = writeln!(
        m,
        "\n## relay against the references (same run, same pinning, same load)\n"
    );
    let _ = writeln!(
        m,
        "CPU µs per request of the proxy under test, and beside it what the load generator and the stub upstream spent per request (a proxy that makes its peers work harder shows there). `vs X`: this row's proxy CPU µs/req over X's at the same rate.\n"
    );
    let order: Vec<&str> = RELAY_VS
        .iter()
        .map(|(n, _)| *n)
        .chain(REFERENCES.iter().copied())
        .chain(["direct"])
        .collect();
    let shown: Vec<&Scenario> = order
        .iter()
        .filter_map(|n| {
            r.scenarios
                .iter()
                .find(|s| s.name == *n && s.skipped.is_none())
        })
        .collect();
    let refs: Vec<&Scenario> = shown
        .iter()
        .copied()
        .filter(|s| REFERENCES.contains(&s.name.as_str()))
        .collect();
    let _ = write!(
        m,
        "| rate | scenario | achieved TPS | p99 ms | errors | proxy CPU µs/req | loadgen CPU µs/req | upstream CPU µs/req | upstream conns |"
    );
    for x in &refs {
        let _ = write!(m, " vs {} |", x.name);
    }
    let _ = writeln!(
        m,
        "\n|---:|---|---:|---:|---|---:|---:|---:|---:|{}",
        "---:|".repeat(refs.len())
    );
    let mut rates: Vec<Option<u64>> = Vec::new();
    for sc in &shown {
        for st in &sc.steps {
            if !rates.contains(&st.target_tps) {
                rates.push(st.target_tps);
            }
        }
    }
    rates.sort();
    rates.push(None);
    for rate in rates {
        let step_of = |sc: &Scenario| -> Option<Step> {
            match rate {
                Some(_) => sc.steps.iter().find(|s| s.target_tps == rate).cloned(),
                None => sc.max.clone(),
            }
        };
        for sc in &shown {
            let Some(st) = step_of(sc) else { continue };
            let _ = write!(
                m,
                "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} |",
                rate.map(|r| r.to_string()).unwrap_or_else(|| "max".into()),
                sc.name,
                st.achieved_tps,
                ms(st.p99_us),
                errs(&st),
                opt(st.proxy_cpu_us_per_req, 1),
                opt(st.loadgen_cpu_us_per_req, 1),
                opt(st.upstream_cpu_us_per_req, 1),
                st.upstream_connections,
            );
            for x in &refs {
                let v = step_of(x)
                    .filter(|t| t.errors == 0 && st.errors == 0)
                    .and_then(|t| ratio(st.proxy_cpu_us_per_req, t.proxy_cpu_us_per_req));
                let _ = write!(m, " {} |", opt(v, 2));
            }
            let _ = writeln!(m);
        }
    }
    let _ = writeln!(
        m,
        "\n| relay / reference | CPU µs/req: median of the per-rate ratios (clean common rates) | CPU µs/req at saturation | closed-loop max TPS |\n|---|---:|---:|---:|"
    );
    for c in &r.references {
        let label = RELAY_VS
            .iter()
            .find(|(n, _)| *n == c.relay)
            .map(|(_, l)| *l)
            .unwrap_or(&c.relay);
        let _ = writeln!(
            m,
            "| {label} / {} | {} ({} rates) | {} | {} |",
            c.reference,
            opt(c.cpu_ratio_median, 2),
            c.cpu_ratio_by_rate.len(),
            opt(c.cpu_ratio_at_max, 2),
            opt(c.max_tps_ratio, 2),
        );
    }
    m
}
