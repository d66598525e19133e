//! `cargo xtask bench --plan`: how many cores and pods a target rate needs, from the safe
//! per-core TPS measured in the run (or in a saved `report.json`, `--plan-from`).
//!
//! Per scenario measured on one core (relay's full job, `full-1w`, and nginx as the reference):
//! the **safe per-core TPS** is the highest fixed rate whose step had p99 under the bound, no
//! errors and at least 95 % of the rate achieved. The seed team ran their pods at up to 70 % CPU
//! (`--headroom-pct`), so a core is planned for `safe × 70 %`:
//!
//! - cores = ⌈target / (safe per-core TPS × headroom)⌉;
//! - pods = ⌈cores / pod CPUs⌉ (`--pod-cpus`, 2).
//!
//! Beside it, the same from CPU time alone (CPU µs/request at the safe step: cores =
//! ⌈target × µs / 10⁶ / headroom⌉), which does not depend on how well this machine schedules.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::report::{is_safe, Scenario};

/// The scenarios a plan is computed for, with their label.
pub(super) const PLANNED: &[(&str, &str)] = &[
    ("full-1w", "relay, full job (Kafka + scrub + forward)"),
    ("nginx", "nginx, plain proxy (no Kafka, no scrub)"),
];

/// The seed team's figure for their APISIX plugin: requests/s per pod, and its CPUs.
pub(super) const SEED_TPS_PER_POD: u64 = 5_000;
/// The seed team's pod size.
pub(super) const SEED_POD_CPUS: u32 = 2;

/// What a plan is asked for.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(super) struct PlanAsk {
    pub(super) target_tps: u64,
    pub(super) p99_ms: f64,
    pub(super) pod_cpus: u32,
    pub(super) headroom_pct: u32,
}

/// One scenario's answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(super) struct PlanRow {
    pub(super) scenario: String,
    pub(super) what: String,
    /// `None` when no step of the scenario was safe (or it did not run).
    pub(super) safe_tps_per_core: Option<u64>,
    /// CPU µs/request of the proxy at the safe step.
    pub(super) cpu_us_per_req: Option<f64>,
    pub(super) cores: Option<u64>,
    pub(super) pods: Option<u64>,
    pub(super) cores_by_cpu: Option<u64>,
    pub(super) pods_by_cpu: Option<u64>,
}

/// The capacity plan of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct CapacityPlan {
    pub(super) ask: PlanAsk,
    pub(super) rows: Vec<PlanRow>,
    /// The seed team's pods for the same target, from their reported 5,000 req/s per 2-CPU pod.
    pub(super) seed_team_pods: u64,
}

/// ⌈target / (per-core × headroom)⌉ in integers; `None` for a per-core TPS or headroom of 0.
pub(super) fn cores_for(target_tps: u64, per_core_tps: u64, headroom_pct: u32) -> Option<u64> {
    let usable = per_core_tps.checked_mul(u64::from(headroom_pct))?;
    (usable > 0).then(|| (target_tps * 100).div_ceil(usable))
}

/// ⌈target × µs/request / 10⁶ / headroom⌉: the cores the CPU time alone asks for.
pub(super) fn cores_by_cpu(target_tps: u64, cpu_us_per_req: f64, headroom_pct: u32) -> Option<u64> {
    if headroom_pct == 0 || !cpu_us_per_req.is_finite() || cpu_us_per_req <= 0.0 {
        return None;
    }
    let cores = target_tps as f64 * cpu_us_per_req / 1e6 / (f64::from(headroom_pct) / 100.0);
    // A hair below an integer is that integer (float noise), not one core more.
    Some((cores - 1e-9).ceil().max(1.0) as u64)
}

/// ⌈cores / pod CPUs⌉.
pub(super) fn pods_for(cores: u64, pod_cpus: u32) -> Option<u64> {
    (pod_cpus > 0).then(|| cores.div_ceil(u64::from(pod_cpus)))
}

/// The plan for `ask` from the scenarios of a run.
pub(super) fn plan(scenarios: &[Scenario], ask: PlanAsk) -> CapacityPlan {
    let rows = PLANNED
        .iter()
        .map(|&(name, what)| {
            let safe = scenarios
                .iter()
                .find(|s| s.name == name && s.skipped.is_none())
                .and_then(|s| {
                    s.steps
                        .iter()
                        .filter(|t| is_safe(t, ask.p99_ms))
                        .max_by_key(|t| t.target_tps)
                });
            let safe_tps = safe.and_then(|t| t.target_tps);
            let cpu = safe.and_then(|t| t.proxy_cpu_us_per_req);
            let cores = safe_tps.and_then(|t| cores_for(ask.target_tps, t, ask.headroom_pct));
            let cores_cpu = cpu.and_then(|c| cores_by_cpu(ask.target_tps, c, ask.headroom_pct));
            PlanRow {
                scenario: name.into(),
                what: what.into(),
                safe_tps_per_core: safe_tps,
                cpu_us_per_req: cpu,
                cores,
                pods: cores.and_then(|c| pods_for(c, ask.pod_cpus)),
                cores_by_cpu: cores_cpu,
                pods_by_cpu: cores_cpu.and_then(|c| pods_for(c, ask.pod_cpus)),
            }
        })
        .collect();
    CapacityPlan {
        ask,
        rows,
        seed_team_pods: ask.target_tps.div_ceil(SEED_TPS_PER_POD),
    }
}

impl CapacityPlan {
    /// The markdown section.
    pub(super) fn markdown(&self) -> String {
        let a = &self.ask;
        let n = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "–".into());
        let mut m = String::new();
        let _ = writeln!(
            m,
            "\n## Capacity plan: {} req/s at p99 < {} ms, {}-CPU pods at ≤ {} % CPU\n",
            a.target_tps, a.p99_ms, a.pod_cpus, a.headroom_pct
        );
        let _ = writeln!(
            m,
            "Safe per-core TPS: the highest fixed rate of the run with p99 < {} ms, 0 errors and ≥ 95 % of the rate achieved, one worker on one CPU. cores = ⌈target / (safe × {} %)⌉, pods = ⌈cores / {}⌉; \"by CPU\": cores = ⌈target × CPU µs/req at the safe step / 10⁶ / {} %⌉ (what the CPU time alone asks for, insensitive to this machine's scheduling). The sweep's rates are coarse: the safe TPS is a lower bound.\n",
            a.p99_ms, a.headroom_pct, a.pod_cpus, a.headroom_pct
        );
        let _ = writeln!(
            m,
            "| scenario | safe TPS per core | cores | {}-CPU pods | CPU µs/req at the safe step | cores by CPU | pods by CPU |\n|---|---:|---:|---:|---:|---:|---:|",
            a.pod_cpus
        );
        for r in &self.rows {
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} | {} | {} |",
                r.what,
                n(r.safe_tps_per_core),
                n(r.cores),
                n(r.pods),
                r.cpu_us_per_req
                    .map(|c| format!("{c:.1}"))
                    .unwrap_or_else(|| "–".into()),
                n(r.cores_by_cpu),
                n(r.pods_by_cpu),
            );
        }
        let _ = writeln!(
            m,
            "| the seed team's APISIX (reported: {SEED_TPS_PER_POD} req/s per {SEED_POD_CPUS}-CPU pod) | – | {} | {} ({SEED_POD_CPUS}-CPU) | – | – | – |",
            self.seed_team_pods * u64::from(SEED_POD_CPUS),
            self.seed_team_pods
        );
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::Step;

    #[test]
    fn cores_and_pods_round_up() {
        // 55,000 req/s on cores that are safe at 10,000: 7,000 usable each -> 7.86 -> 8 cores.
        assert_eq!(cores_for(55_000, 10_000, 70), Some(8));
        // Exactly filled: 7,000 at 10,000 x 70 % is one core, not two.
        assert_eq!(cores_for(7_000, 10_000, 70), Some(1));
        assert_eq!(cores_for(7_001, 10_000, 70), Some(2));
        assert_eq!(cores_for(55_000, 0, 70), None);
        assert_eq!(cores_for(55_000, 10_000, 0), None);
        assert_eq!(pods_for(8, 2), Some(4));
        assert_eq!(pods_for(7, 2), Some(4));
        assert_eq!(pods_for(1, 2), Some(1));
        assert_eq!(pods_for(3, 0), None);
        // The seed team: 5,000 per pod -> 11 pods for the 55,000 peak.
        assert_eq!(55_000u64.div_ceil(SEED_TPS_PER_POD), 11);
    }

    #[test]
    fn cores_from_cpu_time() {
        // 55,000 x 45.5 µs = 2.5025 CPU-s/s; at 70 %: 3.575 -> 4 cores.
        assert_eq!(cores_by_cpu(55_000, 45.5, 70), Some(4));
        // 70,000 x 10 µs = 0.7 CPU at 70 % = exactly 1 core.
        assert_eq!(cores_by_cpu(70_000, 10.0, 70), Some(1));
        // Anything at all needs one core.
        assert_eq!(cores_by_cpu(1, 0.001, 70), Some(1));
        assert_eq!(cores_by_cpu(55_000, 0.0, 70), None);
        assert_eq!(cores_by_cpu(55_000, f64::NAN, 70), None);
        assert_eq!(cores_by_cpu(55_000, 10.0, 0), None);
    }

    fn step(rate: u64, achieved: f64, p99_ms: u64, errors: u64, cpu: f64) -> Step {
        Step {
            target_tps: Some(rate),
            achieved_tps: achieved,
            answered: 0,
            ok: 0,
            p50_us: 0,
            p95_us: 0,
            p99_us: p99_ms * 1000,
            p999_us: 0,
            max_us: 0,
            errors,
            errors_by_class: Default::default(),
            proxy_cpu_pct: None,
            proxy_cpu_us_per_req: Some(cpu),
            proxy_rss_mib: None,
            loadgen_cpu_us_per_req: None,
            upstream_cpu_us_per_req: None,
            upstream_requests: 0,
            upstream_connections: 0,
            pii_violations: 0,
            kafka_records: None,
            spool_fsyncs: None,
            spool_records_per_fsync: None,
        }
    }

    fn scenario(name: &str, steps: Vec<Step>) -> Scenario {
        Scenario {
            name: name.into(),
            what: String::new(),
            pinning: String::new(),
            io_engine: None,
            workers: None,
            skipped: None,
            steps,
            max: None,
            safe_tps: None,
            median_cpu_us_per_req: None,
        }
    }

    #[test]
    fn the_plan_takes_the_highest_safe_step_of_each_scenario() {
        let scs = vec![
            scenario(
                "full-1w",
                vec![
                    step(5_000, 5_000.0, 3, 0, 60.0),
                    step(10_000, 9_990.0, 12, 0, 45.0),
                    // p99 over the bound: not safe.
                    step(20_000, 19_000.0, 40, 0, 40.0),
                ],
            ),
            scenario(
                "nginx",
                vec![
                    step(10_000, 10_000.0, 2, 0, 30.0),
                    // Errors: not safe, whatever the latency.
                    step(20_000, 20_000.0, 2, 3, 25.0),
                ],
            ),
        ];
        let ask = PlanAsk {
            target_tps: 55_000,
            p99_ms: 25.0,
            pod_cpus: 2,
            headroom_pct: 70,
        };
        let p = plan(&scs, ask);
        assert_eq!(p.seed_team_pods, 11);
        let full = &p.rows[0];
        assert_eq!(full.scenario, "full-1w");
        assert_eq!(full.safe_tps_per_core, Some(10_000));
        assert_eq!(full.cpu_us_per_req, Some(45.0));
        assert_eq!((full.cores, full.pods), (Some(8), Some(4)));
        assert_eq!((full.cores_by_cpu, full.pods_by_cpu), (Some(4), Some(2)));
        let nginx = &p.rows[1];
        assert_eq!(nginx.safe_tps_per_core, Some(10_000));
        assert_eq!((nginx.cores, nginx.pods), (Some(8), Some(4)));
        // 55,000 x 30 µs = 1.65 CPU at 70 % = 2.36 -> 3 cores, 2 pods.
        assert_eq!((nginx.cores_by_cpu, nginx.pods_by_cpu), (Some(3), Some(2)));
        // A tighter bound leaves the full job only its 5,000 step.
        let p = plan(
            &scs,
            PlanAsk {
                p99_ms: 10.0,
                ..ask
            },
        );
        assert_eq!(p.rows[0].safe_tps_per_core, Some(5_000));
        assert_eq!(p.rows[0].cores, Some(16));
        let md = p.markdown();
        assert!(md.contains("| relay, full job"), "{md}");
        assert!(md.contains("| 5000 | 16 | 8 |"), "{md}");
        // A scenario that did not run has no plan, and says so.
        let p = plan(&scs[..1], ask);
        assert_eq!(p.rows[1].safe_tps_per_core, None);
        assert_eq!(p.rows[1].pods, None);
    }
}
