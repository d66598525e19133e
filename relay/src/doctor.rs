//! `relay doctor`: inspects the host (and the config, when given) and prints a table of checks,
//! each `pass`, `warn` or `fail` with the fix for anything not passing.
//!
//! What it checks, in order:
//! - **CPU**: the worker count relay derives from the CPU quota and affinity mask against the
//!   cores the host shows (the seed team's trap: nginx `worker_processes auto` counted the node's
//!   64 cores inside a 2-CPU pod); fractional quotas and over-subscribed fixed counts.
//! - **io_uring**: a real `io_uring_setup` probe, and if it fails why (`kernel.io_uring_disabled`,
//!   seccomp, missing kernel support, memlock), plus a monoio io_uring runtime build.
//! - **XDP admission**: `CAP_BPF`/`CAP_NET_ADMIN` in the effective set and the configured
//!   interface in `/sys/class/net`.
//! - **open files**: `RLIMIT_NOFILE` against the connections the config implies.
//! - **sysctls**: every key of `tuning/sysctl.d/90-relay.conf` (embedded at build time) against
//!   `/proc/sys`, plus the listen backlog against `net.core.somaxconn`.
//! - **Kafka** brokers and **upstream** nodes reachable over TCP, and the upstream TLS handshake
//!   with certificate verification (the same rustls setup as the data path).
//!
//! The checks are split into pure functions over their inputs (unit-tested here) and thin probes
//! of the real host. Exit code: 1 when any check fails, 0 otherwise (warnings do not fail).
//!
//! `unsafe` is used for four libc calls std does not wrap (`io_uring_setup`, `close`,
//! `getrlimit`, `sysconf`); each block says why it is sound.

use std::fmt;
use std::io::Write as _;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use crate::config::{Config, IoEngine, UpstreamConfig, Workers};
use crate::cpu_quota::{self, WorkerPlan, WorkerSource};

/// The sysctl profile shipped in `tuning/`, embedded so doctor checks exactly what is shipped.
pub const SYSCTL_PROFILE: &str = include_str!("../../tuning/sysctl.d/90-relay.conf");

/// Client connections one worker is expected to hold (keep-alive app fleets); sizes the
/// open-file check.
pub const CLIENT_CONNECTIONS_PER_WORKER: u64 = 16_384;

/// Below this many open files relay cannot serve a real fleet at all (the 1024 default trap).
pub const MIN_NOFILE: u64 = 4_096;

/// TCP connect deadline for Kafka brokers (upstreams use their own `connect_timeout_ms`).
pub const BROKER_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// Fine as it is.
    Pass,
    /// relay runs, but slower, less protected or closer to a limit than it should.
    Warn,
    /// relay will not run properly (or at all) like this.
    Fail,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
        })
    }
}

/// One row of the doctor's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked (`cpu quota`, `sysctl net.core.somaxconn`, `upstream tracking 10.0.0.5:443`).
    pub name: String,
    /// The outcome.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do about it; empty when passing.
    pub fix: String,
}

impl Check {
    fn new(
        name: impl Into<String>,
        status: Status,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            name: name.into(),
            status,
            detail: detail.into(),
            fix: fix.into(),
        }
    }
    fn pass(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check::new(name, Status::Pass, detail, "")
    }
}

/// Runs every check, prints the table on stdout and returns the exit code (1 on any fail).
pub fn run(cfg: Option<&Config>) -> i32 {
    let checks = checks(cfg);
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(render(&checks).as_bytes());
    let _ = out.flush();
    exit_code(&checks)
}

/// Runs every check against this host (and `cfg`'s Kafka brokers, upstreams and interface).
pub fn checks(cfg: Option<&Config>) -> Vec<Check> {
    let mut v = Vec::new();
    let workers = cfg.map(|c| c.server.workers).unwrap_or_default();
    let plan = cpu_quota::plan(workers);
    let std_par = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    v.push(cpu_check(workers, &plan, online_cpus(), std_par));

    let engine = cfg.map(|c| c.server.io_engine).unwrap_or_default();
    v.push(io_uring_check(
        engine,
        probe_io_uring_setup(),
        probe_monoio(),
        read_proc_sys("kernel.io_uring_disabled").and_then(|s| s.trim().parse().ok()),
        proc_status_field("Seccomp").and_then(|s| s.parse().ok()),
    ));

    let interface = cfg
        .and_then(|c| c.admission.as_ref())
        .and_then(|a| a.interface.as_deref());
    let exists = interface
        .map(|i| Path::new("/sys/class/net").join(i).exists())
        .unwrap_or(false);
    let cap_eff = proc_status_field("CapEff").and_then(|s| parse_cap_mask(&s));
    v.push(xdp_check(interface, cap_eff, exists));

    let (soft, hard) = nofile_limits();
    v.push(nofile_check(soft, hard, expected_fds(cfg, plan.count)));

    for want in parse_sysctl_profile(SYSCTL_PROFILE) {
        let actual = read_proc_sys(&want.key);
        v.push(sysctl_check(&want, actual.as_deref()));
    }
    if let Some(c) = cfg {
        let somaxconn = read_proc_sys("net.core.somaxconn").and_then(|s| s.trim().parse().ok());
        v.push(backlog_check(c.server.backlog, somaxconn));
    }

    match cfg {
        None => v.push(Check::new(
            "config",
            Status::Warn,
            "no --config given: Kafka, upstream and XDP interface checks skipped",
            "run `relay doctor --config /etc/relay/relay.toml`",
        )),
        Some(c) => {
            for b in kafka_brokers(c) {
                v.push(broker_check(&b));
            }
            for u in &c.upstreams {
                for n in &u.nodes {
                    v.push(upstream_check(u, n.address()));
                }
            }
        }
    }
    v
}

/// 1 when any check failed, else 0.
pub fn exit_code(checks: &[Check]) -> i32 {
    i32::from(checks.iter().any(|c| c.status == Status::Fail))
}

/// The table: `STATUS  CHECK  DETAIL`, a `fix:` line under every row that does not pass, and a
/// closing count.
pub fn render(checks: &[Check]) -> String {
    let w = checks
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let mut s = format!("{:<6}  {:<w$}  DETAIL\n", "STATUS", "CHECK");
    for c in checks {
        s.push_str(&format!(
            "{:<6}  {:<w$}  {}\n",
            c.status.to_string(),
            c.name,
            c.detail
        ));
        if c.status != Status::Pass && !c.fix.is_empty() {
            s.push_str(&format!("{:<6}  {:<w$}  fix: {}\n", "", "", c.fix));
        }
    }
    let count = |st| checks.iter().filter(|c| c.status == st).count();
    s.push_str(&format!(
        "doctor: {} pass, {} warn, {} fail\n",
        count(Status::Pass),
        count(Status::Warn),
        count(Status::Fail)
    ));
    s
}

// ---------------------------------------------------------------------------------------------
// CPU

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

fn online_cpus() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n > 0 {
        n as usize
    } else {
        1
    }
}

// ---------------------------------------------------------------------------------------------
// io_uring

/// Tries `io_uring_setup(1, ..)`: `Ok` when the kernel hands out a ring, else the errno.
pub fn probe_io_uring_setup() -> Result<(), i32> {
    // struct io_uring_params is 120 bytes of integers; all-zero asks for a default ring.
    let mut params = [0u32; 30];
    // SAFETY: io_uring_setup reads and writes at most sizeof(struct io_uring_params) = 120
    // bytes at the pointer, which `params` provides; no other memory is touched.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    // SAFETY: `fd` is the ring descriptor just returned to us and owned by no one else.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}

/// Builds (and drops) a monoio io_uring runtime, the exact thing a worker does.
pub fn probe_monoio() -> Result<(), String> {
    std::thread::spawn(|| {
        monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .build()
            .map(drop)
            .map_err(|e| e.to_string())
    })
    .join()
    .unwrap_or_else(|_| Err("the probe thread panicked".into()))
}

/// The io_uring row. `setup`: the raw probe; `monoio`: the runtime build; `disabled`:
/// `kernel.io_uring_disabled` (absent on kernels < 6.6); `seccomp`: `/proc/self/status` mode.
pub fn io_uring_check(
    engine: IoEngine,
    setup: Result<(), i32>,
    monoio: Result<(), String>,
    disabled: Option<u8>,
    seccomp: Option<u8>,
) -> Check {
    let name = "io_uring";
    let why = match (&setup, &monoio) {
        (Ok(()), Ok(())) => None,
        (Ok(()), Err(e)) => Some((
            format!("io_uring_setup works but the monoio io_uring runtime does not build: {e}"),
            "the kernel lacks a feature monoio needs (5.6+ recommended); use a newer kernel or io_engine = \"epoll\"".to_string(),
        )),
        (Err(errno), _) => Some(explain_io_uring_errno(*errno, disabled, seccomp)),
    };
    match (why, engine) {
        (None, IoEngine::Epoll) => Check::new(
            name,
            Status::Warn,
            "available, but io_engine = \"epoll\" is configured",
            "set io_engine = \"auto\" in [server] to use io_uring",
        ),
        (None, _) => Check::pass(
            name,
            "io_uring_setup works and a monoio io_uring runtime builds",
        ),
        (Some((d, _)), IoEngine::Epoll) => Check::pass(
            name,
            format!("unavailable ({d}); io_engine = \"epoll\" is configured"),
        ),
        (Some((d, fix)), IoEngine::Auto) => Check::new(
            name,
            Status::Warn,
            format!("unavailable: {d}; relay falls back to epoll"),
            fix,
        ),
        (Some((d, fix)), IoEngine::IoUring) => Check::new(
            name,
            Status::Fail,
            format!("unavailable: {d}; io_engine = \"io_uring\" will not start"),
            format!("{fix}; or set io_engine = \"auto\""),
        ),
    }
}

/// Why `io_uring_setup` failed with `errno`, and the fix.
pub fn explain_io_uring_errno(
    errno: i32,
    disabled: Option<u8>,
    seccomp: Option<u8>,
) -> (String, String) {
    let filtered = seccomp == Some(2);
    match errno {
        libc::EPERM if disabled == Some(2) => (
            "EPERM: kernel.io_uring_disabled = 2 forbids io_uring for every process".into(),
            "sysctl -w kernel.io_uring_disabled=0 (persist: tuning/sysctl.d/90-relay.conf)".into(),
        ),
        libc::EPERM if disabled == Some(1) => (
            "EPERM: kernel.io_uring_disabled = 1 allows io_uring only to kernel.io_uring_group (and CAP_SYS_ADMIN)".into(),
            "sysctl -w kernel.io_uring_disabled=0, or add the relay user to the group in kernel.io_uring_group".into(),
        ),
        libc::EPERM | libc::EACCES if filtered => (
            format!("{}: a seccomp filter denies io_uring_setup (container runtimes' default profiles do)", errno_name(errno)),
            "allow io_uring_setup/io_uring_enter/io_uring_register in the seccomp profile (k8s: a Localhost seccompProfile; systemd: SystemCallFilter=@aio)".into(),
        ),
        libc::EPERM | libc::EACCES => (
            format!("{}: denied by a security module (SELinux/AppArmor) or policy", errno_name(errno)),
            "allow io_uring in the LSM policy for relay, or run with io_engine = \"epoll\"".into(),
        ),
        libc::ENOSYS if filtered => (
            "ENOSYS: a seccomp filter hides io_uring_setup, or the kernel lacks CONFIG_IO_URING".into(),
            "allow io_uring_setup/io_uring_enter/io_uring_register in the seccomp profile, or use a kernel with io_uring".into(),
        ),
        libc::ENOSYS => (
            "ENOSYS: the kernel has no io_uring (older than 5.1, or built without CONFIG_IO_URING)".into(),
            "use a 5.10+ kernel with CONFIG_IO_URING=y".into(),
        ),
        libc::ENOMEM => (
            "ENOMEM: the ring could not be allocated; kernels < 5.11 charge it to RLIMIT_MEMLOCK".into(),
            "raise the memlock limit (LimitMEMLOCK=infinity in the unit, tuning/limits.d/relay.conf)".into(),
        ),
        e => (
            format!("{}: unexpected error from io_uring_setup", errno_name(e)),
            "check dmesg and the kernel's io_uring support, or use io_engine = \"epoll\"".into(),
        ),
    }
}

fn errno_name(e: i32) -> String {
    match e {
        libc::EPERM => "EPERM".into(),
        libc::EACCES => "EACCES".into(),
        libc::ENOSYS => "ENOSYS".into(),
        libc::ENOMEM => "ENOMEM".into(),
        libc::EINVAL => "EINVAL".into(),
        e => format!("errno {e} ({})", std::io::Error::from_raw_os_error(e)),
    }
}

// ---------------------------------------------------------------------------------------------
// XDP admission

/// `CAP_NET_ADMIN`: attach XDP programs to interfaces.
pub const CAP_NET_ADMIN: u32 = 12;
/// `CAP_SYS_ADMIN`: the pre-5.8 superset of CAP_BPF.
pub const CAP_SYS_ADMIN: u32 = 21;
/// `CAP_PERFMON`: pointer-leaking BPF features and perf events.
pub const CAP_PERFMON: u32 = 38;
/// `CAP_BPF`: load BPF programs and create maps (Linux 5.8+).
pub const CAP_BPF: u32 = 39;

/// Parses a hex capability mask such as `/proc/self/status`'s `CapEff: 000001fffeffffff`.
pub fn parse_cap_mask(hex: &str) -> Option<u64> {
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// Whether capability number `cap` is in `mask`.
pub fn has_cap(mask: u64, cap: u32) -> bool {
    cap < 64 && mask & (1u64 << cap) != 0
}

/// The XDP row: `interface` from `[admission]`, `cap_eff` the effective capability set,
/// `exists` whether `/sys/class/net/<interface>` exists.
pub fn xdp_check(interface: Option<&str>, cap_eff: Option<u64>, exists: bool) -> Check {
    let name = "xdp admission";
    let Some(ifname) = interface else {
        return Check::pass(
            name,
            "no [admission] interface configured: user-space shedding only",
        );
    };
    if !exists {
        return Check::new(
            name,
            Status::Fail,
            format!("interface {ifname:?} does not exist (no /sys/class/net/{ifname})"),
            "set [admission] interface to one listed by `ip -br link`",
        );
    }
    let Some(mask) = cap_eff else {
        return Check::new(
            name,
            Status::Warn,
            format!("interface {ifname} exists; cannot read CapEff from /proc/self/status"),
            "run doctor as the relay user / under the relay unit to see its capabilities",
        );
    };
    let bpf = has_cap(mask, CAP_BPF) || has_cap(mask, CAP_SYS_ADMIN);
    let net = has_cap(mask, CAP_NET_ADMIN);
    let perfmon = has_cap(mask, CAP_PERFMON) || has_cap(mask, CAP_SYS_ADMIN);
    let mut missing = Vec::new();
    if !bpf {
        missing.push("CAP_BPF");
    }
    if !net {
        missing.push("CAP_NET_ADMIN");
    }
    if missing.is_empty() {
        let extra = if perfmon {
            ""
        } else {
            " (CAP_PERFMON absent: fine for XDP, needed for BPF perf events)"
        };
        Check::pass(
            name,
            format!("interface {ifname} exists; CAP_BPF and CAP_NET_ADMIN effective{extra}"),
        )
    } else {
        Check::new(
            name,
            Status::Warn,
            format!("interface {ifname} exists but {} not effective: relay will shed in user space instead of XDP", missing.join(" and ")),
            "run under systemd/relay.service (AmbientCapabilities=CAP_BPF CAP_NET_ADMIN CAP_PERFMON) or add them to the container's securityContext.capabilities",
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Open files

/// File descriptors the config implies: client connections per worker, the upstream pools
/// (idle per node per worker), a few per Kafka broker, and 256 for listeners, rings and logs.
pub fn expected_fds(cfg: Option<&Config>, workers: usize) -> u64 {
    let w = workers.max(1) as u64;
    let mut n = CLIENT_CONNECTIONS_PER_WORKER * w + 256;
    if let Some(c) = cfg {
        for u in &c.upstreams {
            n += u.nodes.len() as u64 * u.max_idle_per_node as u64 * w;
        }
        n += kafka_brokers(c).len() as u64 * 4;
    }
    n
}

/// The open-file row: `soft`/`hard` `RLIMIT_NOFILE` (`u64::MAX` = unlimited) vs `expected`.
pub fn nofile_check(soft: u64, hard: u64, expected: u64) -> Check {
    let name = "open files (RLIMIT_NOFILE)";
    let fmt_lim = |v: u64| {
        if v == u64::MAX {
            "unlimited".to_string()
        } else {
            v.to_string()
        }
    };
    let detail = format!(
        "soft {}, hard {}; ~{expected} expected ({CLIENT_CONNECTIONS_PER_WORKER} client connections per worker + upstream pools + Kafka)",
        fmt_lim(soft),
        fmt_lim(hard)
    );
    let fix = "LimitNOFILE=1048576 in the unit (systemd/relay.service), `ulimit -n 1048576`, or tuning/limits.d/relay.conf";
    if soft < MIN_NOFILE {
        Check::new(
            name,
            Status::Fail,
            format!("{detail}; below {MIN_NOFILE}, relay refuses connections early (EMFILE)"),
            fix,
        )
    } else if soft < expected {
        Check::new(
            name,
            Status::Warn,
            format!("{detail}; accepts fail with EMFILE beyond the soft limit"),
            fix,
        )
    } else {
        Check::pass(name, detail)
    }
}

fn nofile_limits() -> (u64, u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid, writable rlimit; getrlimit only writes into it.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return (0, 0);
    }
    // rlim_t is u64 on every 64-bit Linux target relay builds for.
    let conv = |v: libc::rlim_t| -> u64 {
        if v == libc::RLIM_INFINITY {
            u64::MAX
        } else {
            v
        }
    };
    (conv(r.rlim_cur), conv(r.rlim_max))
}

// ---------------------------------------------------------------------------------------------
// sysctls

/// How a host value is compared with the profile's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Each number at least the profile's (`[min]`, the default).
    Min,
    /// Each number at most the profile's (`[max]`).
    Max,
    /// Equal (`[exact]`).
    Exact,
    /// A `low high` range containing the profile's (`[range]`).
    Range,
}

/// One key of the sysctl profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysctlWant {
    /// Dotted key, `net.core.somaxconn`.
    pub key: String,
    /// The profile's value, whitespace-normalised.
    pub value: String,
    /// How to compare.
    pub rule: Rule,
    /// The comment line above the key (the reason), without `#` and the rule marker.
    pub reason: String,
}

/// Parses a `sysctl.d` file: `key = value` lines, each rule taken from a trailing `[min]`,
/// `[max]`, `[exact]` or `[range]` on the comment line just above (default `[min]`).
pub fn parse_sysctl_profile(text: &str) -> Vec<SysctlWant> {
    let mut out = Vec::new();
    let mut comment = String::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(c) = line.strip_prefix('#').or_else(|| line.strip_prefix(';')) {
            comment = c.trim().to_string();
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            comment.clear();
            continue;
        };
        let (rule, reason) = [
            ("[min]", Rule::Min),
            ("[max]", Rule::Max),
            ("[exact]", Rule::Exact),
            ("[range]", Rule::Range),
        ]
        .iter()
        .find_map(|(m, r)| {
            comment
                .strip_suffix(m)
                .map(|rest| (*r, rest.trim().to_string()))
        })
        .unwrap_or((Rule::Min, comment.clone()));
        out.push(SysctlWant {
            key: k.trim().trim_start_matches('-').to_string(),
            value: normalise(v),
            rule,
            reason,
        });
        comment.clear();
    }
    out
}

fn normalise(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn numbers(v: &str) -> Option<Vec<i64>> {
    v.split_whitespace().map(|n| n.parse().ok()).collect()
}

/// Whether host value `actual` satisfies `want`.
pub fn sysctl_satisfied(want: &SysctlWant, actual: &str) -> bool {
    let (Some(w), Some(a)) = (numbers(&want.value), numbers(actual)) else {
        return normalise(actual) == want.value;
    };
    if w.len() != a.len() {
        return false;
    }
    match want.rule {
        Rule::Exact => w == a,
        Rule::Min => w.iter().zip(&a).all(|(w, a)| a >= w),
        Rule::Max => w.iter().zip(&a).all(|(w, a)| a <= w),
        Rule::Range => w.len() == 2 && a[0] <= w[0] && a[1] >= w[1],
    }
}

/// One sysctl row. `actual`: the `/proc/sys` value, `None` when the key is absent.
pub fn sysctl_check(want: &SysctlWant, actual: Option<&str>) -> Check {
    let name = format!("sysctl {}", want.key);
    let rule = match want.rule {
        Rule::Min => ">=",
        Rule::Max => "<=",
        Rule::Exact => "=",
        Rule::Range => "within",
    };
    let Some(actual) = actual else {
        return Check::pass(
            name,
            "absent on this kernel / in this namespace: nothing to set",
        );
    };
    let actual = normalise(actual);
    if sysctl_satisfied(want, &actual) {
        Check::pass(name, format!("{actual} (profile {rule} {})", want.value))
    } else {
        Check::new(
            name,
            Status::Warn,
            format!("{actual}, profile wants {rule} {}: {}", want.value, want.reason),
            format!(
                "sysctl -w {}=\"{}\" (persist: tuning/sysctl.d/90-relay.conf in /etc/sysctl.d, `sysctl --system`)",
                want.key, want.value
            ),
        )
    }
}

/// The listen backlog against `net.core.somaxconn`, which silently caps it.
pub fn backlog_check(backlog: u32, somaxconn: Option<u32>) -> Check {
    let name = "listen backlog";
    match somaxconn {
        Some(m) if m < backlog => Check::new(
            name,
            Status::Warn,
            format!("[server] backlog = {backlog} but net.core.somaxconn = {m}: the kernel caps the accept queue at {m}"),
            format!("sysctl -w net.core.somaxconn={backlog} (or more; the profile sets 65535)"),
        ),
        Some(m) => Check::pass(name, format!("[server] backlog = {backlog} <= net.core.somaxconn = {m}")),
        None => Check::pass(name, format!("[server] backlog = {backlog}; net.core.somaxconn not readable")),
    }
}

/// Reads `/proc/sys/<key with dots as slashes>`.
pub fn read_proc_sys(key: &str) -> Option<String> {
    std::fs::read_to_string(Path::new("/proc/sys").join(key.replace('.', "/"))).ok()
}

fn proc_status_field(field: &str) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    status_field(&text, field)
}

/// The value of `Field:` in a `/proc/<pid>/status` text.
pub fn status_field(status: &str, field: &str) -> Option<String> {
    status.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == field).then(|| v.trim().to_string())
    })
}

// ---------------------------------------------------------------------------------------------
// Kafka and upstreams

/// The Kafka bootstrap brokers of the config, `host:port` each.
///
/// The one place that knows the shape of `[kafka] brokers` (today a comma-separated string).
pub fn kafka_brokers(cfg: &Config) -> Vec<String> {
    cfg.kafka
        .as_ref()
        .map(|k| split_brokers(&k.brokers))
        .unwrap_or_default()
}

/// Splits `host:port[,host:port...]`, trimming blanks.
pub fn split_brokers(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// TCP connect to `addr` (`host:port`, resolved) within `timeout`.
pub fn tcp_connect(addr: &str, timeout: Duration) -> Result<TcpStream, String> {
    let addrs: Vec<_> = addr
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {addr}: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{addr} resolves to no address"));
    }
    let mut last = String::new();
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = format!("connect {a}: {e}"),
        }
    }
    Err(last)
}

/// One Kafka broker row.
pub fn broker_check(addr: &str) -> Check {
    let name = format!("kafka broker {addr}");
    match tcp_connect(addr, BROKER_CONNECT_TIMEOUT) {
        Ok(_) => Check::pass(name, "TCP connect ok"),
        Err(e) => Check::new(
            name,
            Status::Fail,
            format!("unreachable: {e}"),
            "check [kafka] brokers, DNS, firewalls/NetworkPolicy and that the broker listens there",
        ),
    }
}

/// One upstream node row: TCP connect within the upstream's `connect_timeout_ms`, then, when the
/// upstream has `[upstreams.tls]`, a verified TLS handshake with its CA and server name.
pub fn upstream_check(u: &UpstreamConfig, addr: &str) -> Check {
    let name = format!("upstream {} {addr}", u.name);
    let timeout = Duration::from_millis(u.connect_timeout_ms.max(1));
    let stream = match tcp_connect(addr, timeout) {
        Ok(s) => s,
        Err(e) => {
            return Check::new(
                name,
                Status::Fail,
                format!("unreachable within {} ms: {e}", u.connect_timeout_ms),
                "check the node address, DNS, egress firewall/proxy, and that the upstream listens there",
            )
        }
    };
    let Some(tls) = &u.tls else {
        return Check::pass(name, "TCP connect ok (plain HTTP)");
    };
    let host = crate::upstream::parse_node_address(addr)
        .map(|(h, _)| h)
        .unwrap_or_else(|_| addr.to_string());
    let sni = tls.server_name.clone().unwrap_or(host);
    match tls_handshake(stream, tls.ca_file.as_deref(), &sni, timeout.max(Duration::from_secs(2))) {
        Ok(d) => Check::pass(name, format!("TCP ok; TLS ok for {sni:?}: {d}")),
        Err(e) => Check::new(
            name,
            Status::Fail,
            format!("TCP ok; TLS handshake for {sni:?} failed: {e}"),
            "check [upstreams.tls] server_name and ca_file against the server's certificate chain (openssl s_client -connect ADDR -servername NAME)",
        ),
    }
}

/// A verified TLS handshake over `stream`, the data path's rustls setup; returns the protocol
/// and cipher suite.
pub fn tls_handshake(
    mut stream: TcpStream,
    ca_file: Option<&Path>,
    server_name: &str,
    timeout: Duration,
) -> Result<String, String> {
    let cfg = crate::upstream::tls::client_config(ca_file).map_err(|e| e.to_string())?;
    let name = crate::upstream::tls::server_name(server_name).map_err(|e| e.to_string())?;
    let mut conn = rustls::ClientConnection::new(cfg, name).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    while conn.is_handshaking() {
        conn.complete_io(&mut stream).map_err(|e| e.to_string())?;
    }
    let version = conn
        .protocol_version()
        .map(|v| format!("{v:?}"))
        .unwrap_or_default();
    let suite = conn
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()))
        .unwrap_or_default();
    conn.send_close_notify();
    let _ = conn.complete_io(&mut stream);
    Ok(format!("{version} {suite}, certificate verified"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

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

    #[test]
    fn io_uring_reasons() {
        let ok = io_uring_check(IoEngine::Auto, Ok(()), Ok(()), Some(0), Some(0));
        assert_eq!(ok.status, Status::Pass);
        let c = io_uring_check(
            IoEngine::Auto,
            Err(libc::EPERM),
            Err("x".into()),
            Some(2),
            Some(0),
        );
        assert_eq!(c.status, Status::Warn);
        assert!(c.detail.contains("io_uring_disabled = 2"), "{}", c.detail);
        assert!(c.detail.contains("falls back to epoll"));
        let c = io_uring_check(
            IoEngine::IoUring,
            Err(libc::EPERM),
            Err("x".into()),
            Some(0),
            Some(2),
        );
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("seccomp"), "{}", c.detail);
        let c = io_uring_check(
            IoEngine::Auto,
            Err(libc::ENOSYS),
            Err("x".into()),
            None,
            Some(0),
        );
        assert!(c.detail.contains("CONFIG_IO_URING"), "{}", c.detail);
        let c = io_uring_check(
            IoEngine::Auto,
            Err(libc::EPERM),
            Err("x".into()),
            Some(1),
            Some(0),
        );
        assert!(c.detail.contains("io_uring_group"), "{}", c.detail);
        let c = io_uring_check(
            IoEngine::Epoll,
            Err(libc::ENOSYS),
            Err("x".into()),
            None,
            None,
        );
        assert_eq!(c.status, Status::Pass);
        let c = io_uring_check(IoEngine::Epoll, Ok(()), Ok(()), None, None);
        assert_eq!(c.status, Status::Warn);
        let c = io_uring_check(IoEngine::Auto, Ok(()), Err("EINVAL".into()), None, None);
        assert!(c.detail.contains("monoio"), "{}", c.detail);
    }

    #[test]
    fn the_io_uring_probe_agrees_with_monoio() {
        // Whatever this host allows, the raw syscall and the runtime build must agree.
        assert_eq!(probe_io_uring_setup().is_ok(), probe_monoio().is_ok());
    }

    #[test]
    fn capability_masks() {
        let all = parse_cap_mask("000001fffeffffff").unwrap();
        assert!(has_cap(all, CAP_BPF) && has_cap(all, CAP_NET_ADMIN) && has_cap(all, CAP_PERFMON));
        assert_eq!(parse_cap_mask("zz"), None);
        let net_only = 1u64 << CAP_NET_ADMIN;
        assert!(!has_cap(net_only, CAP_BPF));
        assert!(!has_cap(net_only, 64));
        let s = "Name:\trelay\nCapEff:\t0000000000001000\nSeccomp:\t2\n";
        assert_eq!(
            status_field(s, "CapEff").as_deref(),
            Some("0000000000001000")
        );
        assert_eq!(status_field(s, "Seccomp").as_deref(), Some("2"));
        assert_eq!(status_field(s, "CapBnd"), None);
    }

    #[test]
    fn xdp_rows() {
        assert_eq!(xdp_check(None, Some(0), false).status, Status::Pass);
        let c = xdp_check(Some("eth9"), Some(u64::MAX), false);
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("eth9"));
        let c = xdp_check(Some("eth0"), Some(1 << CAP_NET_ADMIN), true);
        assert_eq!(c.status, Status::Warn);
        assert!(
            c.detail.contains("CAP_BPF") && !c.detail.contains("CAP_NET_ADMIN not"),
            "{}",
            c.detail
        );
        let c = xdp_check(
            Some("eth0"),
            Some((1 << CAP_NET_ADMIN) | (1 << CAP_SYS_ADMIN)),
            true,
        );
        assert_eq!(
            c.status,
            Status::Pass,
            "CAP_SYS_ADMIN covers CAP_BPF on old kernels"
        );
        let c = xdp_check(
            Some("eth0"),
            Some((1 << CAP_NET_ADMIN) | (1 << CAP_BPF) | (1 << CAP_PERFMON)),
            true,
        );
        assert_eq!(c.status, Status::Pass);
    }

    #[test]
    fn nofile_thresholds() {
        assert_eq!(nofile_check(1024, 4096, 40_000).status, Status::Fail);
        assert_eq!(nofile_check(20_000, 20_000, 40_000).status, Status::Warn);
        assert_eq!(nofile_check(1 << 20, 1 << 20, 40_000).status, Status::Pass);
        assert!(nofile_check(u64::MAX, u64::MAX, 1)
            .detail
            .contains("unlimited"));
    }

    const EXAMPLE: &str = r#"
[server]
listen = "127.0.0.1:0"
workers = 2

[[upstreams]]
name = "tracking"
nodes = ["127.0.0.1:1", { address = "127.0.0.1:2", weight = 2 }]
max_idle_per_node = 10

[kafka]
brokers = "k1:9092, k2:9092,"
"#;

    #[test]
    fn expected_fds_and_brokers_follow_the_config() {
        let c = Config::from_toml(EXAMPLE, Path::new("x.toml")).unwrap();
        assert_eq!(kafka_brokers(&c), vec!["k1:9092", "k2:9092"]);
        assert_eq!(
            expected_fds(Some(&c), 2),
            2 * CLIENT_CONNECTIONS_PER_WORKER + 256 + 2 * 10 * 2 + 2 * 4
        );
        assert_eq!(expected_fds(None, 1), CLIENT_CONNECTIONS_PER_WORKER + 256);
    }

    #[test]
    fn the_shipped_profile_parses_with_a_reason_and_rule_for_every_key() {
        let p = parse_sysctl_profile(SYSCTL_PROFILE);
        assert!(p.len() >= 15, "{p:?}");
        for k in [
            "net.core.somaxconn",
            "net.ipv4.tcp_max_syn_backlog",
            "net.ipv4.ip_local_port_range",
            "net.ipv4.tcp_tw_reuse",
            "net.core.rmem_max",
            "net.core.wmem_max",
            "net.ipv4.tcp_rmem",
            "net.ipv4.tcp_wmem",
            "fs.file-max",
            "net.core.netdev_max_backlog",
        ] {
            assert!(p.iter().any(|w| w.key == k), "{k} missing from the profile");
        }
        for w in &p {
            assert!(!w.reason.is_empty(), "{} has no reason", w.key);
            assert!(
                numbers(&w.value).is_some(),
                "{} = {} is not numeric",
                w.key,
                w.value
            );
        }
        let range = p
            .iter()
            .find(|w| w.key == "net.ipv4.ip_local_port_range")
            .unwrap();
        assert_eq!(
            (range.rule, range.value.as_str()),
            (Rule::Range, "1024 65535")
        );
        let tw = p.iter().find(|w| w.key == "net.ipv4.tcp_tw_reuse").unwrap();
        assert_eq!(tw.rule, Rule::Exact);
    }

    #[test]
    fn sysctl_comparisons() {
        let p = parse_sysctl_profile(
            "# a [min]\nnet.core.somaxconn = 65535\n# b [range]\nnet.ipv4.ip_local_port_range = 1024   65535\n\
             # c [exact]\nnet.ipv4.tcp_tw_reuse=1\n# d [max]\nnet.ipv4.tcp_fin_timeout = 15\nnet.ipv4.tcp_rmem = 4096 87380 16777216\n",
        );
        assert_eq!(p.len(), 5);
        assert_eq!(p[4].rule, Rule::Min, "no marker: [min]");
        assert_eq!(p[0].reason, "a");
        let ok = |i: usize, a: &str| sysctl_satisfied(&p[i], a);
        assert!(ok(0, "65535") && ok(0, "100000") && !ok(0, "4096"));
        assert!(ok(1, "1024\t65535") && ok(1, "1000 65535") && !ok(1, "32768 60999"));
        assert!(ok(2, "1") && !ok(2, "2") && !ok(2, "0"));
        assert!(ok(3, "10") && !ok(3, "60"));
        assert!(ok(4, "4096 131072 33554432") && !ok(4, "4096 16384 4194304") && !ok(4, "4096"));
        let c = sysctl_check(&p[0], Some("4096\n"));
        assert_eq!(c.status, Status::Warn);
        assert!(
            c.fix.contains("sysctl -w net.core.somaxconn=\"65535\""),
            "{}",
            c.fix
        );
        assert_eq!(sysctl_check(&p[0], None).status, Status::Pass);
        assert_eq!(sysctl_check(&p[0], Some("65535")).status, Status::Pass);
    }

    #[test]
    fn backlog_vs_somaxconn() {
        assert_eq!(backlog_check(4096, Some(128)).status, Status::Warn);
        assert_eq!(backlog_check(4096, Some(4096)).status, Status::Pass);
        assert_eq!(backlog_check(4096, None).status, Status::Pass);
    }

    #[test]
    fn table_and_exit_code() {
        let rows = vec![
            Check::pass("a", "fine"),
            Check::new("longer name", Status::Warn, "meh", "do x"),
        ];
        assert_eq!(exit_code(&rows), 0);
        let t = render(&rows);
        assert!(t.starts_with("STATUS  CHECK        DETAIL\n"), "{t}");
        assert!(t.contains("warn    longer name  meh\n"), "{t}");
        assert!(t.contains("fix: do x"), "{t}");
        assert!(t.ends_with("doctor: 1 pass, 1 warn, 0 fail\n"), "{t}");
        let mut rows = rows;
        rows.push(Check::new("b", Status::Fail, "bad", "fix it"));
        assert_eq!(exit_code(&rows), 1);
    }

    #[test]
    fn reachable_and_unreachable_nodes() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let open = l.local_addr().unwrap().to_string();
        let closed = {
            let l2 = TcpListener::bind("127.0.0.1:0").unwrap();
            l2.local_addr().unwrap().to_string()
        };
        assert_eq!(broker_check(&open).status, Status::Pass);
        let c = broker_check(&closed);
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("unreachable"), "{}", c.detail);
        let cfg = Config::from_toml(
            &format!("[server]\nlisten = \"127.0.0.1:0\"\n[[upstreams]]\nname = \"t\"\nnodes = [\"{open}\", \"{closed}\"]\n"),
            Path::new("x.toml"),
        )
        .unwrap();
        let rows = checks(Some(&cfg));
        let up: Vec<_> = rows
            .iter()
            .filter(|r| r.name.starts_with("upstream t "))
            .collect();
        assert_eq!(up.len(), 2);
        assert_eq!(up[0].status, Status::Pass, "{:?}", up[0]);
        assert_eq!(up[1].status, Status::Fail, "{:?}", up[1]);
        assert_eq!(exit_code(&rows), 1);
        assert!(rows.iter().any(|r| r.name == "listen backlog"));
    }

    struct TlsUpstream {
        addr: String,
        ca_pem: std::path::PathBuf,
        _dir: tempfile::TempDir,
    }

    /// A TLS server for `upstream.test` (certificate from a throw-away CA) on 127.0.0.1:0,
    /// completing handshakes until the test process ends.
    fn tls_upstream() -> TlsUpstream {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        use std::sync::Arc;
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["upstream.test".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &ca, &ca_key)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca_pem = dir.path().join("ca.pem");
        std::fs::write(&ca_pem, ca.pem()).unwrap();

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], key)
            .unwrap();
        let server = Arc::new(server);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for tcp in listener.incoming() {
                let Ok(mut tcp) = tcp else { continue };
                let server = server.clone();
                std::thread::spawn(move || {
                    let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut conn = rustls::ServerConnection::new(server).unwrap();
                    while conn.is_handshaking() {
                        if conn.complete_io(&mut tcp).is_err() {
                            return;
                        }
                    }
                    let _ = conn.complete_io(&mut tcp);
                });
            }
        });
        TlsUpstream {
            addr,
            ca_pem,
            _dir: dir,
        }
    }

    #[test]
    fn tls_upstream_verified_wrong_name_and_untrusted() {
        let up = tls_upstream();
        let cfg = Config::from_toml(
            &format!(
                r#"
[server]
listen = "127.0.0.1:0"

[[upstreams]]
name = "good"
nodes = ["{addr}"]
[upstreams.tls]
ca_file = "{ca}"
server_name = "upstream.test"

[[upstreams]]
name = "wrongname"
nodes = ["{addr}"]
[upstreams.tls]
ca_file = "{ca}"
server_name = "other.test"

[[upstreams]]
name = "untrusted"
nodes = ["{addr}"]
[upstreams.tls]
server_name = "upstream.test"
"#,
                addr = up.addr,
                ca = up.ca_pem.display()
            ),
            Path::new("x.toml"),
        )
        .unwrap();
        let u = |name: &str| cfg.upstreams.iter().find(|u| u.name == name).unwrap();

        let good = upstream_check(u("good"), &up.addr);
        assert_eq!(good.status, Status::Pass, "{good:?}");
        assert!(good.detail.contains("certificate verified"), "{good:?}");

        let wrong = upstream_check(u("wrongname"), &up.addr);
        assert_eq!(wrong.status, Status::Fail, "{wrong:?}");
        assert!(wrong.detail.contains("TLS handshake"), "{wrong:?}");
        assert!(wrong.detail.contains("not valid for name"), "{wrong:?}");
        assert!(wrong.fix.contains("server_name"), "{wrong:?}");

        // The system roots do not know the throw-away CA.
        let untrusted = upstream_check(u("untrusted"), &up.addr);
        assert_eq!(untrusted.status, Status::Fail, "{untrusted:?}");
        assert!(
            untrusted.detail.to_lowercase().contains("issuer"),
            "{untrusted:?}"
        );
    }

    #[test]
    fn host_rows_cover_the_whole_profile() {
        let rows = checks(None);
        for prefix in [
            "cpu quota",
            "io_uring",
            "xdp admission",
            "open files",
            "config",
        ] {
            assert!(rows.iter().any(|r| r.name.starts_with(prefix)), "{prefix}");
        }
        for want in parse_sysctl_profile(SYSCTL_PROFILE) {
            let name = format!("sysctl {}", want.key);
            assert!(rows.iter().any(|r| r.name == name), "{name}");
        }
        for r in &rows {
            assert!(
                r.status == Status::Pass || !r.fix.is_empty(),
                "no fix: {r:?}"
            );
        }
        assert_eq!(run(None), exit_code(&rows));
    }
}
