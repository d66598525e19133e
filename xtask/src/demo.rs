//! `cargo xtask demo`: relay on an embedded default, original vs scrubbed side by side.

use anyhow::Result;

/// Runs the demo.
pub fn run() -> Result<()> {
    anyhow::bail!("the demo is not built yet")
}
