//! `cargo xtask test`: set-up, then every check and suite, in the order that fails fastest.

use std::process::Command;

use anyhow::Result;

use crate::{root, setup};

/// Runs the whole suite.
pub fn run() -> Result<()> {
    setup::all()?;
    let root = root();
    run_in(
        &root,
        Command::new("cargo").args(["fmt", "--all", "--check"]),
    )?;
    crate::ebpf::build()?;
    run_in(
        &root,
        Command::new("cargo").args(["build", "--workspace", "--all-targets"]),
    )?;
    run_in(
        &root,
        Command::new("cargo").args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    // The fuzz crate is its own workspace (nightly, sanitizer flags): type-check its targets
    // here; their corpora are replayed by the workspace tests below.
    crate::fuzz::check_targets()?;
    run_in(
        &root,
        Command::new("cargo").args([
            "test",
            "--workspace",
            "--no-fail-fast",
            "--",
            "--test-threads=2",
        ]),
    )?;
    crate::bench::run(crate::bench::BenchArgs::smoke())?;
    eprintln!("xtask: all checks passed");
    Ok(())
}

fn run_in(dir: &std::path::Path, cmd: &mut Command) -> Result<()> {
    crate::run(cmd.current_dir(dir))
}
