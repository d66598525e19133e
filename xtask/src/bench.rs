//! `cargo xtask bench`: the perf lab driver.

use anyhow::Result;

/// Options of `cargo xtask bench`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct BenchArgs {
    /// A few seconds at a low rate, to keep the lab from rotting (run by `cargo xtask test`).
    #[arg(long)]
    pub smoke: bool,
}

impl BenchArgs {
    /// The smoke configuration.
    pub fn smoke() -> Self {
        BenchArgs { smoke: true }
    }
}

/// Runs the lab.
pub fn run(_args: BenchArgs) -> Result<()> {
    Ok(())
}
