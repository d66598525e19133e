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
//!
//! One module per section of the report (`cpu`, `io_uring`, `xdp`, `limits`,
//! `sysctl`, `network`, `tls`), each with its pure check functions first and the probes
//! of the real host after them; `procfs` holds the `/proc` readers the sections share. This
//! module owns the row type, the order of the report and the table.

mod cpu;
mod io_uring;
mod limits;
mod network;
mod procfs;
mod sysctl;
mod tls;
mod xdp;

pub use cpu::*;
pub use io_uring::*;
pub use limits::*;
pub use network::*;
pub use procfs::*;
pub use sysctl::*;
pub use tls::*;
pub use xdp::*;

use std::fmt;
use std::io::Write as _;
use std::path::Path;

use crate::config::Config;
use crate::cpu_quota;

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
    v.push(cpu_check(workers, &plan, cpu::online_cpus(), std_par));

    let engine = cfg.map(|c| c.server.io_engine).unwrap_or_default();
    v.push(io_uring_check(
        engine,
        probe_io_uring_setup(),
        probe_monoio(),
        read_proc_sys("kernel.io_uring_disabled").and_then(|s| s.trim().parse().ok()),
        procfs::proc_status_field("Seccomp").and_then(|s| s.parse().ok()),
    ));

    let interface = cfg
        .and_then(|c| c.admission.as_ref())
        .and_then(|a| a.interface.as_deref());
    let exists = interface
        .map(|i| Path::new("/sys/class/net").join(i).exists())
        .unwrap_or(false);
    let cap_eff = procfs::proc_status_field("CapEff").and_then(|s| parse_cap_mask(&s));
    v.push(xdp_check(interface, cap_eff, exists));

    let (soft, hard) = limits::nofile_limits();
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

#[cfg(test)]
mod tests {
    use super::*;

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
