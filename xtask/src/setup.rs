//! Installs what the tests, the demo and the lab need and a fresh machine lacks: Debian
//! packages, rust-src for nightly, bpf-linker built against LLVM 22, the tansu broker, and the
//! reference proxies of the lab (nginx, HAProxy).
//!
//! Every `cargo xtask` command calls the steps it depends on (`setup` and `test` call them
//! all): each step first asks whether its tool is already there (`dpkg-query`, `rustup
//! component list`, PATH), so a second call costs a few milliseconds per package.
//!
//! | command | steps |
//! | --- | --- |
//! | `build-ebpf` | [`BUILD`] + [`EBPF`] packages, rust-src, bpf-linker |
//! | `demo` | [`BUILD`] packages |
//! | `bench` | [`BUILD`] + [`BENCH`] packages; tansu for `full-1w`; with the storm: `build-ebpf`'s |
//! | `setup`, `test` | everything |

use std::process::Command;

use anyhow::Result;

use crate::{have, run};

/// C build tools for librdkafka (rdkafka-sys builds it with cmake): everything that builds
/// relay or xtask needs them.
pub const BUILD: &[&str] = &[
    "build-essential",
    "cmake",
    "pkg-config",
    "zlib1g-dev",
    "libzstd-dev",
];

/// LLVM 22, which bpf-linker is built against (Debian's default `llvm-config` is LLVM 14).
pub const EBPF: &[&str] = &["llvm-22-dev", "libpolly-22-dev"];

/// The test suites: iproute2 for the namespace tests, systemd for `systemd-analyze verify`,
/// the Prometheus client for the dashboard check, linux-perf for profiling, openssl for the
/// RSA/EC keys of the JWT tests.
pub const TEST: &[&str] = &[
    "iproute2",
    "openssl",
    "systemd",
    "linux-perf",
    "python3-prometheus-client",
];

/// The perf lab: the reference proxies relay is measured against, and iproute2 for the
/// connection storm's namespaces.
pub const BENCH: &[&str] = &["nginx", "haproxy", "iproute2"];

/// Everything (`cargo xtask setup`, `cargo xtask test`).
pub fn all() -> Result<()> {
    apt(&[BUILD, EBPF, TEST, BENCH].concat())?;
    rust_src()?;
    bpf_linker()?;
    tansu()?;
    Ok(())
}

/// What `cargo xtask build-ebpf` needs.
pub fn for_ebpf() -> Result<()> {
    apt(&[BUILD, EBPF].concat())?;
    rust_src()?;
    bpf_linker()
}

/// What `cargo xtask demo` needs (it builds relay; its Kafka is rdkafka's mock cluster).
pub fn for_demo() -> Result<()> {
    apt(BUILD)
}

/// What `cargo xtask bench` needs: `ebpf` when the run embeds the XDP program (the storm),
/// `broker` when it runs the full-work scenario (tansu).
pub fn for_bench(ebpf: bool, broker: bool) -> Result<()> {
    apt(&[BUILD, BENCH].concat())?;
    if ebpf {
        for_ebpf()?;
    }
    if broker {
        tansu()?;
    }
    Ok(())
}

/// Whether Debian package `p` is installed.
fn installed(p: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", p])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// Installs the missing ones of `packages` (one `apt-get update` only when something is
/// missing). Without `dpkg-query` (not Debian) it says what it would need and goes on.
pub fn apt(packages: &[&str]) -> Result<()> {
    if !have("dpkg-query") {
        eprintln!(
            "xtask: not a Debian system: make sure these are installed: {}",
            packages.join(" ")
        );
        return Ok(());
    }
    let mut missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// `rustup component add rust-src --toolchain nightly` when missing.
pub fn rust_src() -> Result<()> {
    let out = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .output();
    let have_src = out
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.starts_with("rust-src"))
        })
        .unwrap_or(false);
    if !have_src {
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    Ok(())
}

/// bpf-linker against Debian's LLVM 22 (its default llvm-config is LLVM 14). Installs LLVM 22
/// first: bpf-linker's build script fails without it.
pub fn bpf_linker() -> Result<()> {
    if have("bpf-linker") {
        return Ok(());
    }
    apt(&[BUILD, EBPF].concat())?;
    run(Command::new("cargo")
        .args([
            "install",
            "--locked",
            "bpf-linker",
            "--no-default-features",
            "--features",
            "llvm-22",
        ])
        .env("LLVM_PREFIX", "/usr/lib/llvm-22"))
}

/// The tansu Kafka-protocol broker, for the tests against a real broker process and the lab's
/// full-work scenario (they look for `$TANSU`, then `~/.cargo/bin/tansu`, then PATH).
pub fn tansu() -> Result<()> {
    let in_cargo_home = std::env::var_os("HOME")
        .map(|h| std::path::Path::new(&h).join(".cargo/bin/tansu").exists())
        .unwrap_or(false);
    if have("tansu") || in_cargo_home {
        return Ok(());
    }
    apt(BUILD)?;
    run(Command::new("cargo").args(["install", "--locked", "tansu", "--features", "dynostore"]))
}
