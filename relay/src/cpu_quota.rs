//! How many workers relay runs and on which CPUs: the CPU quota the process really has
//! (cgroup v2 `cpu.max`, cgroup v1 `cpu.cfs_quota_us / cpu.cfs_period_us`), capped by the
//! affinity mask, never the host's core count.
//!
//! `RELAY_CGROUP_ROOT` (default `/sys/fs/cgroup`) and `RELAY_PROC_CGROUP` (default
//! `/proc/self/cgroup`) point the detection at other files, for tests and unusual mounts.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::server::config::Workers;

/// Where the worker count came from.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerSource {
    /// `workers = N` in the config.
    Override,
    /// A cgroup v2 `cpu.max` quota (the file and the quota in CPUs).
    CgroupV2 {
        /// The `cpu.max` file that set the limit.
        file: PathBuf,
        /// quota / period, in CPUs.
        cpus: f64,
    },
    /// A cgroup v1 CFS quota.
    CgroupV1 {
        /// The `cpu.cfs_quota_us` file that set the limit.
        file: PathBuf,
        /// quota / period, in CPUs.
        cpus: f64,
    },
    /// No quota: the affinity mask decides.
    AffinityMask,
}

impl fmt::Display for WorkerSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkerSource::Override => write!(f, "override"),
            WorkerSource::CgroupV2 { file, cpus } => {
                write!(f, "quota (cgroup v2 {} = {cpus:.2} CPUs)", file.display())
            }
            WorkerSource::CgroupV1 { file, cpus } => {
                write!(f, "quota (cgroup v1 {} = {cpus:.2} CPUs)", file.display())
            }
            WorkerSource::AffinityMask => write!(f, "mask"),
        }
    }
}

/// The decided worker layout.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerPlan {
    /// Number of workers, at least 1.
    pub count: usize,
    /// What decided it.
    pub source: WorkerSource,
    /// Whether the affinity mask lowered the count below the quota.
    pub capped_by_mask: bool,
    /// The CPUs the process may run on (from `sched_getaffinity`), in order.
    pub allowed_cpus: Vec<usize>,
}

impl WorkerPlan {
    /// The CPU worker `i` is pinned to.
    pub fn cpu_for(&self, i: usize) -> Option<usize> {
        if self.allowed_cpus.is_empty() {
            None
        } else {
            Some(self.allowed_cpus[i % self.allowed_cpus.len()])
        }
    }
}

/// Decides the worker plan from the config and the real host (cgroup files, affinity mask).
pub fn plan(workers: Workers) -> WorkerPlan {
    let root = std::env::var_os("RELAY_CGROUP_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/sys/fs/cgroup"));
    let proc_cgroup = std::env::var_os("RELAY_PROC_CGROUP")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/proc/self/cgroup"));
    let proc_text = std::fs::read_to_string(&proc_cgroup).unwrap_or_default();
    plan_from(workers, &root, &proc_text, &affinity_cpus())
}

/// [`plan`] with every input given: testable with fixture files.
pub fn plan_from(
    workers: Workers,
    cgroup_root: &Path,
    proc_cgroup: &str,
    allowed: &[usize],
) -> WorkerPlan {
    let allowed_cpus = allowed.to_vec();
    let mask = allowed.len().max(1);
    if let Workers::Fixed(n) = workers {
        return WorkerPlan {
            count: n.max(1),
            source: WorkerSource::Override,
            capped_by_mask: false,
            allowed_cpus,
        };
    }
    match cpu_quota(cgroup_root, proc_cgroup) {
        Some(source) => {
            let cpus = match &source {
                WorkerSource::CgroupV2 { cpus, .. } | WorkerSource::CgroupV1 { cpus, .. } => *cpus,
                _ => mask as f64,
            };
            let by_quota = (cpus.ceil() as usize).max(1);
            WorkerPlan {
                count: by_quota.min(mask),
                source,
                capped_by_mask: by_quota > mask,
                allowed_cpus,
            }
        }
        None => WorkerPlan {
            count: mask,
            source: WorkerSource::AffinityMask,
            capped_by_mask: false,
            allowed_cpus,
        },
    }
}

/// The tightest CPU quota on the process's cgroup or any ancestor, v2 first, then v1.
pub fn cpu_quota(root: &Path, proc_cgroup: &str) -> Option<WorkerSource> {
    let mut v2_path = None;
    let mut v1_path = None;
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if id == "0" && ctrls.is_empty() {
            v2_path = Some(path.to_string());
        } else if ctrls.split(',').any(|c| c == "cpu") {
            v1_path = Some((ctrls.to_string(), path.to_string()));
        }
    }
    if v2_path.is_none() && v1_path.is_none() {
        // No /proc/self/cgroup (or an odd one): look at the root only.
        v2_path = Some("/".into());
    }
    if let Some(p) = v2_path {
        let mut best: Option<(PathBuf, f64)> = None;
        for dir in ancestors(root, &p) {
            let file = dir.join("cpu.max");
            if let Some(cpus) = std::fs::read_to_string(&file)
                .ok()
                .and_then(|t| parse_cpu_max(&t))
            {
                if best.as_ref().is_none_or(|(_, b)| cpus < *b) {
                    best = Some((file, cpus));
                }
            }
        }
        if let Some((file, cpus)) = best {
            return Some(WorkerSource::CgroupV2 { file, cpus });
        }
    }
    if let Some((ctrls, p)) = v1_path {
        let mounts = [
            root.join(&ctrls),
            root.join("cpu,cpuacct"),
            root.join("cpu"),
        ];
        for mount in mounts.iter().filter(|m| m.is_dir()) {
            let mut best: Option<(PathBuf, f64)> = None;
            for dir in ancestors(mount, &p) {
                let qf = dir.join("cpu.cfs_quota_us");
                let pf = dir.join("cpu.cfs_period_us");
                let q = read_i64(&qf);
                let per = read_i64(&pf);
                if let (Some(q), Some(per)) = (q, per) {
                    if q > 0 && per > 0 {
                        let cpus = q as f64 / per as f64;
                        if best.as_ref().is_none_or(|(_, b)| cpus < *b) {
                            best = Some((qf, cpus));
                        }
                    }
                }
            }
            if let Some((file, cpus)) = best {
                return Some(WorkerSource::CgroupV1 { file, cpus });
            }
        }
    }
    None
}

/// `root/a/b/c`, `root/a/b`, `root/a`, `root`: a cgroup and its ancestors that exist under
/// `root` (inside a cgroup namespace the process's own path may not exist; the root still does).
fn ancestors(root: &Path, cgroup_path: &str) -> Vec<PathBuf> {
    let rel = cgroup_path.trim_start_matches('/');
    let mut out = Vec::new();
    let mut cur = PathBuf::from(rel);
    loop {
        let dir = root.join(&cur);
        if dir.is_dir() {
            out.push(dir);
        }
        if !cur.pop() {
            break;
        }
    }
    if out.last().map(|d| d.as_path()) != Some(root) && root.is_dir() {
        out.push(root.to_path_buf());
    }
    out
}

/// `"max 100000"` -> None; `"150000 100000"` -> Some(1.5).
pub fn parse_cpu_max(text: &str) -> Option<f64> {
    let mut it = text.split_whitespace();
    let quota = it.next()?;
    let period: f64 = it.next().unwrap_or("100000").parse().ok()?;
    if quota == "max" || period <= 0.0 {
        return None;
    }
    let q: f64 = quota.parse().ok()?;
    (q > 0.0).then_some(q / period)
}

fn read_i64(p: &Path) -> Option<i64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// The CPUs this process may run on (`sched_getaffinity`), ascending.
pub fn affinity_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most size_of::<cpu_set_t>()
    // bytes into it, and CPU_ISSET only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return (0..std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1))
                .collect();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_max_parsing() {
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max("150000 100000\n"), Some(1.5));
        assert_eq!(parse_cpu_max("200000 100000"), Some(2.0));
    }

    #[test]
    fn v2_quota_rounds_up_and_is_capped_by_mask() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("kubepods/pod1")).unwrap();
        std::fs::write(d.path().join("cpu.max"), "max 100000\n").unwrap();
        std::fs::write(d.path().join("kubepods/pod1/cpu.max"), "150000 100000\n").unwrap();
        let p = plan_from(
            Workers::Auto,
            d.path(),
            "0::/kubepods/pod1\n",
            &(0..64).collect::<Vec<_>>(),
        );
        assert_eq!(p.count, 2);
        assert!(matches!(p.source, WorkerSource::CgroupV2 { .. }));
        let p = plan_from(Workers::Auto, d.path(), "0::/kubepods/pod1\n", &[3]);
        assert_eq!(p.count, 1);
        assert!(p.capped_by_mask);
        assert_eq!(p.cpu_for(0), Some(3));
    }

    #[test]
    fn v1_quota_and_no_quota() {
        let d = tempfile::tempdir().unwrap();
        let cpu = d.path().join("cpu,cpuacct/docker/abc");
        std::fs::create_dir_all(&cpu).unwrap();
        std::fs::write(cpu.join("cpu.cfs_quota_us"), "300000\n").unwrap();
        std::fs::write(cpu.join("cpu.cfs_period_us"), "100000\n").unwrap();
        let p = plan_from(
            Workers::Auto,
            d.path(),
            "4:cpu,cpuacct:/docker/abc\n",
            &(0..8).collect::<Vec<_>>(),
        );
        assert_eq!(p.count, 3);
        assert!(matches!(p.source, WorkerSource::CgroupV1 { .. }));
        let p = plan_from(Workers::Auto, d.path(), "4:memory:/x\n", &[0, 1]);
        assert_eq!((p.count, p.source), (2, WorkerSource::AffinityMask));
        let p = plan_from(Workers::Fixed(5), d.path(), "", &[0]);
        assert_eq!((p.count, p.source), (5, WorkerSource::Override));
    }
}
