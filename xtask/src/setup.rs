//! Installs what the tests, the demo and the lab need and a fresh machine lacks: Debian
//! packages, rust-src for nightly, bpf-linker built against LLVM 22, and the tansu broker.

use std::process::Command;

use anyhow::Result;

use crate::{have, run};

/// Debian packages: C build tools for librdkafka, LLVM 22 for bpf-linker, iproute2 for the
/// namespace tests, systemd for `systemd-analyze verify`, linux-perf for profiling.
pub const APT_PACKAGES: &[&str] = &[
    "build-essential",
    "cmake",
    "pkg-config",
    "zlib1g-dev",
    "libzstd-dev",
    "llvm-22-dev",
    "libpolly-22-dev",
    "iproute2",
    "systemd",
    "linux-perf",
    "python3-prometheus-client",
];

/// Everything.
pub fn all() -> Result<()> {
    apt()?;
    rust_src()?;
    bpf_linker()?;
    tansu()?;
    Ok(())
}

/// Installs the missing Debian packages (one `apt-get update` only when something is missing).
pub fn apt() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
                .unwrap_or(false)
        })
        .collect();
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

/// bpf-linker against Debian's LLVM 22 (its default llvm-config is LLVM 14).
pub fn bpf_linker() -> Result<()> {
    if have("bpf-linker") {
        return Ok(());
    }
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

/// The tansu Kafka-protocol broker, for the tests against a real broker process (they look
/// for `$TANSU`, then `~/.cargo/bin/tansu`, then PATH).
pub fn tansu() -> Result<()> {
    let in_cargo_home = std::env::var_os("HOME")
        .map(|h| std::path::Path::new(&h).join(".cargo/bin/tansu").exists())
        .unwrap_or(false);
    if have("tansu") || in_cargo_home {
        return Ok(());
    }
    run(Command::new("cargo").args(["install", "--locked", "tansu", "--features", "dynostore"]))
}
