//! The command line and start-up, black box: `relay check` on the documented example and on
//! broken files, and the worker count decided from cgroup v1/v2 fixture files and the affinity
//! mask (never the host's core count).

use std::process::Command;

use relay_e2e::*;

const EXAMPLE: &str = r#"[server]
listen = "127.0.0.1:8080"
workers = "auto"
io_engine = "auto"

[[upstreams]]
name = "tracking"
nodes = ["127.0.0.1:9000"]

[[routes]]
name = "app-logs"
path = "/v1/logs"
methods = ["POST"]
upstream = "tracking"
"#;

#[test]
fn check_prints_the_effective_config_of_the_example() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("relay.toml");
    std::fs::write(&f, EXAMPLE).unwrap();
    let out = Command::new(relay_bin())
        .arg("check")
        .arg("--config")
        .arg(&f)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for want in [
        "listen = \"127.0.0.1:8080\"",
        "workers = \"auto\"",
        "io_engine = \"auto\"",
        "max_header_bytes = 65536",
        "max_headers = 100",
        "max_body_bytes = 1048576",
        "header_timeout_ms = 10000",
        "idle_timeout_ms = 60000",
        "connect_timeout_ms = 2000",
        "name = \"app-logs\"",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}

#[test]
fn check_names_every_broken_field_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("relay.toml");
    let bad = EXAMPLE
        .replace("upstream = \"tracking\"", "upstream = \"missing\"")
        .replace("path = \"/v1/logs\"", "path = \"v1/logs\"");
    std::fs::write(&f, bad).unwrap();
    let out = Command::new(relay_bin())
        .arg("check")
        .arg("--config")
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("routes[0].upstream") && err.contains("missing"),
        "{err}"
    );
    assert!(err.contains("routes[0].path"), "{err}");

    std::fs::write(
        &f,
        EXAMPLE.replace("workers = \"auto\"", "workers = \"auto\"\nworker = 3"),
    )
    .unwrap();
    let out = Command::new(relay_bin())
        .arg("check")
        .arg("--config")
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("unknown field") && err.contains("worker"),
        "{err}"
    );

    let out = Command::new(relay_bin())
        .arg("check")
        .arg("--config")
        .arg(dir.path().join("nope.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

fn config_auto(up: std::net::SocketAddr) -> String {
    basic_config("auto", up, "").replace("workers = 1", "workers = \"auto\"")
}

fn start_line(relay: &Relay) -> String {
    relay
        .log()
        .lines()
        .find(|l| l.contains("relay started"))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn workers_from_a_cgroup_v2_quota() {
    let up = StubUpstream::start(Behavior::default());
    let fx = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(fx.path().join("kubepods/pod-a")).unwrap();
    std::fs::write(fx.path().join("cgroup.controllers"), "cpu memory\n").unwrap();
    std::fs::write(fx.path().join("cpu.max"), "max 100000\n").unwrap();
    std::fs::write(fx.path().join("kubepods/pod-a/cpu.max"), "100000 100000\n").unwrap();
    let proc_cg = fx.path().join("proc-self-cgroup");
    std::fs::write(&proc_cg, "0::/kubepods/pod-a\n").unwrap();
    let relay = Relay::start_with(
        &config_auto(up.addr),
        RelayOptions {
            env: vec![
                ("RELAY_CGROUP_ROOT".into(), fx.path().display().to_string()),
                ("RELAY_PROC_CGROUP".into(), proc_cg.display().to_string()),
            ],
            ..Default::default()
        },
    );
    assert_eq!(relay.workers, 1);
    let line = start_line(&relay);
    assert!(
        line.contains("cgroup v2") && line.contains("1.00 CPUs"),
        "{line}"
    );
    assert_eq!(post(relay.addr, "/v1/logs", b"{}").status, 200);
}

#[test]
fn workers_from_a_cgroup_v1_quota_capped_by_the_mask() {
    let up = StubUpstream::start(Behavior::default());
    let fx = tempfile::tempdir().unwrap();
    let d = fx.path().join("cpu,cpuacct/docker/abc");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("cpu.cfs_quota_us"), "50000\n").unwrap();
    std::fs::write(d.join("cpu.cfs_period_us"), "100000\n").unwrap();
    let proc_cg = fx.path().join("proc-self-cgroup");
    std::fs::write(
        &proc_cg,
        "5:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n",
    )
    .unwrap();
    let env = vec![
        ("RELAY_CGROUP_ROOT".into(), fx.path().display().to_string()),
        ("RELAY_PROC_CGROUP".into(), proc_cg.display().to_string()),
    ];
    // 0.5 CPU rounds up to 1 worker.
    let relay = Relay::start_with(
        &config_auto(up.addr),
        RelayOptions {
            env: env.clone(),
            ..Default::default()
        },
    );
    assert_eq!(relay.workers, 1);
    assert!(
        start_line(&relay).contains("cgroup v1"),
        "{}",
        start_line(&relay)
    );
    drop(relay);
    // 64 CPUs of quota on a process allowed one CPU: the mask caps it.
    std::fs::write(d.join("cpu.cfs_quota_us"), "6400000\n").unwrap();
    let relay = Relay::start_with(
        &config_auto(up.addr),
        RelayOptions {
            env,
            prefix: vec!["taskset".into(), "-c".into(), "0".into()],
            ..RelayOptions::default()
        },
    );
    assert_eq!(relay.workers, 1);
    assert!(
        start_line(&relay).contains("capped by the affinity mask"),
        "{}",
        start_line(&relay)
    );
}

#[test]
fn taskset_one_cpu_gives_one_worker() {
    let up = StubUpstream::start(Behavior::default());
    let fx = tempfile::tempdir().unwrap();
    let relay = Relay::start_with(
        &config_auto(up.addr),
        RelayOptions {
            // An empty cgroup root: no quota anywhere, so the mask decides.
            env: vec![("RELAY_CGROUP_ROOT".into(), fx.path().display().to_string())],
            prefix: vec!["taskset".into(), "-c".into(), "0".into()],
            ..RelayOptions::default()
        },
    );
    assert_eq!(relay.workers, 1);
    let line = start_line(&relay);
    assert!(line.contains("1 workers (mask)"), "{line}");
    assert!(line.contains("io_engine"), "{line}");
    assert_eq!(post(relay.addr, "/v1/logs", b"{}").status, 200);
}

#[test]
fn explicit_workers_override() {
    let up = StubUpstream::start(Behavior::default());
    let relay =
        Relay::start(&basic_config("epoll", up.addr, "").replace("workers = 1", "workers = 3"));
    assert_eq!(relay.workers, 3);
    assert!(
        start_line(&relay).contains("3 workers (override)"),
        "{}",
        start_line(&relay)
    );
    // All three SO_REUSEPORT listeners answer on the same port.
    for _ in 0..30 {
        assert_eq!(post(relay.addr, "/v1/logs", b"{}").status, 200);
    }
}
