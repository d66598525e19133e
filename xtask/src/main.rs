//! `cargo xtask`: set-up, demo, tests, eBPF build and the perf lab, so that a fresh machine
//! needs nothing but these commands.

mod bench;
mod demo;
mod ebpf;
mod fuzz;
mod setup;
mod test;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "relay's project tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Installs what is missing (apt packages, rust-src, bpf-linker, tansu).
    Setup,
    /// Runs relay on an embedded default (mock Kafka cluster + stub upstream) and shows
    /// original vs scrubbed side by side.
    Demo,
    /// Installs what is missing and runs every test (what `.ci/run` calls).
    Test,
    /// Builds the XDP program (nightly + rust-src + bpf-linker).
    BuildEbpf,
    /// The perf lab: sweeps target rates and writes target/bench/<date>/report.{md,json}.
    Bench(bench::BenchArgs),
    /// Runs the fuzz targets (relay-http's and relay-scrub's; nightly + cargo-fuzz, installed
    /// when missing), one or all, for `--secs` each (default 60).
    Fuzz(fuzz::FuzzArgs),
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Setup => setup::all(),
        Cmd::Demo => demo::run(),
        Cmd::Test => test::run(),
        Cmd::BuildEbpf => ebpf::build().map(|_| ()),
        Cmd::Bench(a) => bench::run(a),
        Cmd::Fuzz(a) => fuzz::run_fuzz(a),
    }
}

/// The workspace root (xtask's parent directory).
pub fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Runs a command, failing with its name and exit status when it fails.
pub fn run(cmd: &mut std::process::Command) -> Result<()> {
    eprintln!("xtask: $ {cmd:?}");
    let st = cmd
        .status()
        .map_err(|e| anyhow::anyhow!("cannot start {cmd:?}: {e}"))?;
    anyhow::ensure!(st.success(), "{cmd:?} failed: {st}");
    Ok(())
}

/// Whether a program is on PATH.
pub fn have(prog: &str) -> bool {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {prog} >/dev/null 2>&1"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}
