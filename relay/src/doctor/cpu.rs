//! The CPU row: the worker count relay derives from the CPU quota and affinity mask against
//! the cores the host shows.

use crate::cpu_quota::{WorkerPlan, WorkerSource};
use crate::server::config::Workers;

use super::{Check, Status};

/// CPU quota vs the cores the host shows. `online`: what `sysconf(_SC_NPROCESSORS_ONLN)` (and so
/// nginx `worker_processes auto`) sees; `std_par`: `std::thread::available_parallelism`.
pub fn cpu_check(workers: Workers, plan: &WorkerPlan, online: usize, std_par: usize) -> Check {
    let name = "cpu quota / workers";
    let quota = match &plan.source {
        WorkerSource::CgroupV2 { cpus, .. } | WorkerSource::CgroupV1 { cpus, .. } => Some(*cpus),
        _ => None,
    };
    let mut detail = format!(
        "{} worker(s) from {}; host shows {online} online CPU(s), affinity mask {}, available_parallelism {std_par}",
        plan.count,
        plan.source,
        plan.allowed_cpus.len()
    );
    if online > plan.count {
        detail.push_str(&format!(
            " (a host-core count, like nginx `worker_processes auto`, would start {online})"
        ));
    }
    if let Some(q) = quota {
        if (q - q.round()).abs() > 0.01 {
            return Check::new(
                name,
                Status::Warn,
                format!("{detail}; the quota {q:.2} CPUs is fractional: {} pinned workers share it and get CFS-throttled", plan.count),
                "give the pod/unit an integer CPU limit (requests = limits, Guaranteed QoS; CPUQuota=200%) or set workers to the whole part",
            );
        }
    }
    if plan.capped_by_mask {
        return Check::new(
            name,
            Status::Warn,
            format!("{detail}; the quota exceeds the {} CPU(s) of the affinity mask, the rest of the quota is unused", plan.allowed_cpus.len()),
            "widen CPUAffinity / the cpuset, or lower the CPU limit to match",
        );
    }
    if let Workers::Fixed(n) = workers {
        let budget = quota
            .map(|q| q.ceil() as usize)
            .unwrap_or(plan.allowed_cpus.len())
            .max(1);
        if n > budget {
            return Check::new(
                name,
                Status::Warn,
                format!("{detail}; workers = {n} is more than the {budget} CPU(s) the process may use: workers preempt each other"),
                "set `workers = \"auto\"` in [server], or raise the CPU quota",
            );
        }
    }
    Check::pass(name, detail)
}

// Probe.

pub(super) fn online_cpus() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n > 0 {
        n as usize
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::*;

    fn plan(count: usize, source: WorkerSource, capped: bool, cpus: usize) -> WorkerPlan {
        WorkerPlan {
            count,
            source,
            capped_by_mask: capped,
            allowed_cpus: (0..cpus).collect(),
        }
    }

    fn v2(cpus: f64) -> WorkerSource {
        WorkerSource::CgroupV2 {
            file: "/sys/fs/cgroup/cpu.max".into(),
            cpus,
        }
    }

    #[test]
    fn cpu_quota_in_a_big_node_passes_and_names_the_trap() {
        let c = cpu_check(Workers::Auto, &plan(2, v2(2.0), false, 64), 64, 2);
        assert_eq!(c.status, Status::Pass, "{c:?}");
        assert!(c.detail.contains("2 worker(s)"), "{}", c.detail);
        assert!(c.detail.contains("would start 64"), "{}", c.detail);
    }

    #[test]
    fn fractional_quota_capped_mask_and_oversubscription_warn() {
        let c = cpu_check(Workers::Auto, &plan(2, v2(1.5), false, 64), 64, 2);
        assert_eq!(c.status, Status::Warn);
        assert!(c.detail.contains("fractional"));
        let c = cpu_check(Workers::Auto, &plan(2, v2(4.0), true, 2), 64, 2);
        assert_eq!(c.status, Status::Warn);
        assert!(c.fix.contains("CPUAffinity"));
        let c = cpu_check(
            Workers::Fixed(8),
            &plan(8, WorkerSource::Override, false, 4),
            4,
            4,
        );
        assert_eq!(c.status, Status::Warn);
        assert!(c.detail.contains("workers = 8"));
        let c = cpu_check(
            Workers::Fixed(2),
            &plan(2, WorkerSource::Override, false, 4),
            4,
            4,
        );
        assert_eq!(c.status, Status::Pass);
    }
}
