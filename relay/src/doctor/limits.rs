//! The open-files row: `RLIMIT_NOFILE` against the connections the config implies.

use crate::config::Config;

use super::network::kafka_brokers;
use super::{Check, Status};

/// Client connections one worker is expected to hold (keep-alive app fleets); sizes the
/// open-file check.
pub const CLIENT_CONNECTIONS_PER_WORKER: u64 = 16_384;

/// Below this many open files relay cannot serve a real fleet at all (the 1024 default trap).
pub const MIN_NOFILE: u64 = 4_096;

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

// Probe.

pub(super) fn nofile_limits() -> (u64, u64) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::*;

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
}
