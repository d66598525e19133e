//! `cargo xtask build-ebpf`: builds relay-ebpf for bpfel-unknown-none with nightly.
//!
//! Needs nightly with `rust-src` and bpf-linker (built against LLVM 22, so Debian's LLVM 22
//! first); installs them when missing ([`setup::for_ebpf`]). The object lands in `target/ebpf/bpfel-unknown-none/release/relay-ebpf`, where
//! relay's build script finds and embeds it on the next `cargo build`.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};

use crate::{root, run, setup};

/// Builds the XDP object; returns its path.
pub fn build() -> Result<Option<PathBuf>> {
    setup::for_ebpf()?;
    let root = root();
    let target_dir = root.join("target/ebpf");
    let mut cmd = Command::new("rustup");
    cmd.args([
        "run",
        "nightly",
        "cargo",
        "build",
        "--release",
        "--target-dir",
    ])
    .arg(&target_dir)
    .current_dir(root.join("relay-ebpf"));
    // What the outer (stable) cargo set must not leak into the nightly build.
    for var in [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTUP_TOOLCHAIN",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO",
        "CARGO_MANIFEST_DIR",
    ] {
        cmd.env_remove(var);
    }
    run(&mut cmd)?;
    let object = target_dir.join("bpfel-unknown-none/release/relay-ebpf");
    anyhow::ensure!(
        object.is_file(),
        "build-ebpf: {} was not produced",
        object.display()
    );
    let bytes = std::fs::read(&object).with_context(|| format!("reading {}", object.display()))?;
    anyhow::ensure!(
        bytes.starts_with(b"\x7fELF"),
        "build-ebpf: {} is not an ELF object",
        object.display()
    );
    eprintln!("xtask: XDP object at {}", object.display());
    Ok(Some(object))
}
