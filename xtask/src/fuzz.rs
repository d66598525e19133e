//! `cargo xtask fuzz [--secs N] [TARGET]`: runs the cargo-fuzz targets (`fuzz/`: relay-http's
//! three and relay-scrub's `scrub`), one or all, for N seconds each, installing cargo-fuzz (and
//! nightly) when missing. `cargo xtask test` type-checks every target ([`check_targets`]) so a
//! target that no longer compiles fails the suite, and replays the corpora through
//! `cargo test` (`relay-http/tests/fuzz_corpus.rs`, `relay-scrub/tests/fuzz_corpus.rs`).
//!
//! New inputs libFuzzer finds land in `fuzz/corpus/<target>/`, ignored by git except the seeds
//! (`seed_*`) and inputs kept on purpose (`min_*`); a crash lands in `fuzz/artifacts/<target>/`.

use std::process::Command;

use anyhow::{bail, Result};

use crate::{have, root, run};

/// The fuzz targets, in the order they run.
pub const TARGETS: &[&str] = &["request_head", "body_decoder", "response", "scrub"];

/// `cargo xtask fuzz` arguments.
#[derive(clap::Args, Debug)]
pub struct FuzzArgs {
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    pub secs: u64,
    /// One target (request_head, body_decoder, response, scrub); all of them when absent.
    pub target: Option<String>,
}

/// Installs what is missing, then runs the chosen targets one after the other. Every target
/// runs even when an earlier one crashed; the command fails if any did.
pub fn run_fuzz(args: FuzzArgs) -> Result<()> {
    let targets: Vec<&str> = match &args.target {
        Some(t) if TARGETS.contains(&t.as_str()) => vec![t.as_str()],
        Some(t) => bail!(
            "no fuzz target {t:?}; the targets are {}",
            TARGETS.join(", ")
        ),
        None => TARGETS.to_vec(),
    };
    ensure_tools()?;
    let dir = root().join("fuzz");
    let mut failed = Vec::new();
    for t in &targets {
        // Optimised with debug assertions, overflow checks and AddressSanitizer: cargo-fuzz's
        // default (`-O` would drop the assertions and overflow checks).
        let mut cmd = Command::new("cargo");
        cmd.current_dir(&dir)
            .env_remove("RUSTUP_TOOLCHAIN")
            .args(["+nightly", "fuzz", "run", t, "--"])
            .arg(format!("-max_total_time={}", args.secs))
            .arg("-print_final_stats=1");
        if let Err(e) = run(&mut cmd) {
            eprintln!("xtask: fuzz target {t} failed ({e}); the input is in fuzz/artifacts/{t}/");
            failed.push(*t);
        }
    }
    if !failed.is_empty() {
        bail!(
            "fuzz targets failed: {}; reproduce with `cargo +nightly fuzz run <target> <artifact>` in fuzz/, then add the input to fuzz/corpus/<target>/ as min_<name> with the fix",
            failed.join(", ")
        );
    }
    eprintln!(
        "xtask: {} fuzz target(s), {} s each: no crash",
        targets.len(),
        args.secs
    );
    Ok(())
}

/// Type-checks every fuzz target (`cargo check --manifest-path fuzz/Cargo.toml --bins`, on the
/// toolchain at hand: checking needs neither nightly nor cargo-fuzz, whose sanitizer flags
/// matter only when a target runs).
pub fn check_targets() -> Result<()> {
    let manifest = root().join("fuzz/Cargo.toml");
    run(Command::new("cargo")
        .arg("check")
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--bins"))
}

/// Nightly (libFuzzer needs `-Zsanitizer`) and cargo-fuzz.
fn ensure_tools() -> Result<()> {
    let nightly = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !nightly {
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    if !have("cargo-fuzz") {
        run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    Ok(())
}
