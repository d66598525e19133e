//! `systemd/`: `relay.service` passes `systemd-analyze verify` (no warning at all, with its
//! example drop-ins applied) and keeps its hardening (`systemd-analyze security --offline`
//! exposure at most 3.0) and the settings relay depends on (notify, watchdog, reload,
//! capabilities, a syscall filter that still allows io_uring and bpf); `relay.sysusers` and
//! `relay.tmpfiles` create the user and `/etc/relay` in a scratch root; the example
//! `etc/relay/relay.toml` passes `relay check`.
//!
//! Needs systemd's tools (252+), which `cargo xtask test` installs.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn unit_text() -> String {
    std::fs::read_to_string(repo().join("systemd/relay.service")).unwrap()
}

/// An executable for ExecStart: `verify` checks that the command exists. The built binary when
/// `cargo build` made one (target/debug/relay next to this test's deps/), else a stub script.
fn exec_start(dir: &Path) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    if let Some(built) = exe.parent().and_then(Path::parent).map(|d| d.join("relay")) {
        if built.is_file() {
            return built;
        }
    }
    use std::os::unix::fs::PermissionsExt;
    let stub = dir.join("relay");
    std::fs::write(&stub, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    stub
}

/// Copies the unit (pointed at an existing binary) and its example drop-ins into a temp dir.
fn staged() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let bin = exec_start(dir.path());
    let text = unit_text().replace("/usr/local/bin/relay", bin.to_str().unwrap());
    let unit = dir.path().join("relay.service");
    std::fs::write(&unit, text).unwrap();
    let dropins = dir.path().join("relay.service.d");
    std::fs::create_dir(&dropins).unwrap();
    for e in std::fs::read_dir(repo().join("systemd/relay.service.d")).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap();
        if let Some(stem) = name.strip_suffix(".example") {
            std::fs::copy(&p, dropins.join(stem)).unwrap();
        }
    }
    (dir, unit)
}

fn systemd_analyze(args: &[&str]) -> std::process::Output {
    Command::new("systemd-analyze")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run systemd-analyze ({e}); install systemd (`cargo xtask test` does)")
        })
}

#[test]
fn unit_verifies_without_any_warning() {
    let (_dir, unit) = staged();
    let out = systemd_analyze(&["verify", "--man=no", unit.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "verify failed:\n{stdout}\n{stderr}");
    // verify exits 0 on unknown or unparsable settings; every such line is a bug in the unit.
    let unit_lines: Vec<_> = stderr
        .lines()
        .chain(stdout.lines())
        .filter(|l| l.contains("relay.service"))
        .collect();
    assert!(
        unit_lines.is_empty(),
        "verify complained:\n{}",
        unit_lines.join("\n")
    );
}

#[test]
fn a_broken_setting_is_caught() {
    // Proves the test above can fail: an unknown key and a bad value are reported.
    let (dir, unit) = staged();
    let text = std::fs::read_to_string(&unit).unwrap().replace(
        "WatchdogSec=10s",
        "WatchdogSec=ten seconds\nWatchdogSecs=10s",
    );
    let bad = dir.path().join("relay-bad.service");
    std::fs::write(&bad, text).unwrap();
    let out = systemd_analyze(&["verify", "--man=no", bad.to_str().unwrap()]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("WatchdogSecs"), "{all}");
    assert!(all.contains("ten seconds"), "{all}");
}

#[test]
fn hardening_exposure_stays_low() {
    let (_dir, unit) = staged();
    let out = systemd_analyze(&[
        "security",
        "--offline=yes",
        "--threshold=30", // in tenths: exposure 3.0
        "--no-pager",
        unit.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exposure above 3.0 or error:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Overall exposure level"), "{stdout}");
}

#[test]
fn the_unit_keeps_what_relay_depends_on() {
    let text = unit_text();
    let keys: Vec<(&str, &str)> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .collect();
    let get = |k: &str| {
        keys.iter()
            .filter(|(key, _)| *key == k)
            .map(|(_, v)| *v)
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(get("Type"), "notify");
    assert_eq!(get("ExecReload"), "/bin/kill -HUP $MAINPID");
    assert!(get("ExecStart").starts_with("/usr/local/bin/relay run --config /etc/relay/relay.toml"));
    assert!(!get("WatchdogSec").is_empty());
    assert_eq!(get("LimitNOFILE"), "1048576");
    assert_eq!(get("User"), "relay");
    for cap in ["CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON"] {
        assert!(get("AmbientCapabilities").contains(cap), "{cap}");
        assert!(get("CapabilityBoundingSet").contains(cap), "{cap}");
    }
    for (k, v) in [
        ("ProtectSystem", "strict"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
        ("ProtectHome", "yes"),
    ] {
        assert_eq!(get(k), v, "{k}");
    }
    // The syscall filter must not take io_uring or bpf away (relay would silently fall back).
    let filter = get("SystemCallFilter");
    assert!(filter.contains("@aio"), "io_uring_* are in @aio: {filter}");
    assert!(filter.contains("bpf"), "{filter}");
    assert!(filter.contains("sched_setaffinity"), "{filter}");
    assert!(get("RestrictAddressFamilies").contains("AF_NETLINK"));
    // The ExecStart line of a test copy really points at an executable.
    let (_d, unit) = staged();
    let staged = std::fs::read_to_string(unit).unwrap();
    assert!(!staged.contains("/usr/local/bin/relay "));
}

#[test]
fn io_uring_and_bpf_are_in_the_allowed_syscall_sets() {
    // Ask systemd itself what @aio contains, so a future systemd regrouping is caught.
    let out = systemd_analyze(&["syscall-filter", "--no-pager", "@aio"]);
    let s = String::from_utf8_lossy(&out.stdout);
    for call in ["io_uring_setup", "io_uring_enter", "io_uring_register"] {
        assert!(
            s.lines().any(|l| l.trim() == call),
            "@aio lacks {call}:\n{s}"
        );
    }
}

#[test]
fn the_example_config_is_valid() {
    // The example names its key file (never shipped): check a copy beside a generated key.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.toml");
    std::fs::copy(repo().join("systemd/etc/relay/relay.toml"), &path).unwrap();
    std::fs::write(
        dir.path().join("pii.key"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    let out = Command::new(relay_e2e::relay_bin())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let effective = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "relay check refused the example:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(effective.contains("workers = \"auto\""), "{effective}");
    // The unit's ExecStart names this path.
    assert!(unit_text().contains("--config /etc/relay/relay.toml"));
}

#[test]
fn sysusers_and_tmpfiles_create_the_user_and_etc_relay() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("etc")).unwrap();
    let run = |tool: &str, args: &[&str]| {
        let out = Command::new(tool)
            .arg(format!("--root={}", root.path().display()))
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {tool} ({e}); install systemd"));
        assert!(
            out.status.success(),
            "{tool}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let sysusers = repo().join("systemd/relay.sysusers");
    run("systemd-sysusers", &[sysusers.to_str().unwrap()]);
    let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).unwrap();
    let relay = passwd
        .lines()
        .find(|l| l.starts_with("relay:"))
        .unwrap_or_else(|| panic!("no relay user:\n{passwd}"));
    assert!(
        relay.ends_with(":/var/lib/relay:/usr/sbin/nologin"),
        "{relay}"
    );

    let tmpfiles = repo().join("systemd/relay.tmpfiles");
    run(
        "systemd-tmpfiles",
        &["--create", tmpfiles.to_str().unwrap()],
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(root.path().join("etc/relay"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o750);
}
