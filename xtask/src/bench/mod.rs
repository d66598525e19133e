//! `cargo xtask bench`: the perf lab driver.
//!
//! Builds relay and the lab (`relay-loadgen`, `stub-upstream`) in release mode, then for each
//! scenario starts the stub upstream and (except for `direct`) relay with CPU pinning, sweeps
//! open-loop target rates until relay saturates, finishes with a closed-loop maximum, and
//! writes `target/bench/<date>/report.md` + `report.json`.
//!
//! Pinning (`taskset`): relay gets its own CPUs (the upper half; CPU 1 on a 2-CPU machine),
//! the load generator and the stub upstream share the rest (CPU 0). The 2-worker scenario
//! needs two CPUs for relay, so on a 2-CPU machine relay runs on CPUs 0-1 and shares CPU 0
//! with the lab; the report says so.
//!
//! Per step: target and achieved TPS, latency percentiles from the loadgen (measured from
//! the scheduled send time), errors by class, the proxy's CPU % and CPU microseconds per
//! request (`/proc/<pid>/stat` utime+stime delta over the step divided by the answers of the
//! step, warm-up included on both sides), the same per request for the load generator and the
//! stub upstream, the proxy's RSS, requests seen by the upstream, PII values that reached it,
//! Kafka records. Nothing here asserts a speed, except that `--smoke` fails when requests go
//! unanswered or error.
//!
//! Every run also measures the reference proxies (`nginx`, `haproxy-http`, `haproxy-tcp`)
//! pinned where relay's one worker runs, in front of the same stub upstream, under the same
//! load; the report sets relay's CPU µs/request against theirs, with the load generator's and
//! the stub upstream's beside each row. `--plan` adds the cores and pods a target rate needs.
//!
//! Layout: `scenarios` (what runs, the sweep and its steps), `references` (nginx and HAProxy:
//! configuration and process), `cpus` (pinning), `procs` (child processes and their `/proc`
//! figures), `broker` (tansu for the full-work scenario), `report` (the figures, ratios and
//! markdown), `plan` (the capacity plan), `storm` (the connection-storm section).

mod broker;
mod cpus;
mod plan;
mod procs;
mod references;
mod report;
mod scenarios;
mod storm;

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};

use cpus::cpus;
use plan::PlanAsk;
use report::{comparisons, markdown, ratios, Report};
use scenarios::run_scenario;
use storm::connection_storm;

/// Options of `cargo xtask bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// A few seconds at a low rate, to keep the lab from rotting (run by `cargo xtask test`).
    #[arg(long)]
    pub smoke: bool,
    /// Skip the connection-storm scenario (XDP admission on vs off, in network namespaces;
    /// needs root). It runs after the sweep unless `--smoke` or this flag is given.
    #[arg(long)]
    pub no_storm: bool,
    /// Open-loop target rates to sweep, in requests/s (the sweep stops after the first
    /// saturated step).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "2000,5000,10000,20000,30000,40000,60000,80000"
    )]
    pub rates: Vec<u64>,
    /// Scenarios to run: direct, uring-1w, epoll-1w, uring-2w, scrub-1w, full-1w, and the
    /// references nginx, haproxy-http, haproxy-tcp. Also available: dead-node-1w (one of two
    /// upstream nodes dead), circuit-open-1w (the only node dead, breaker open), full-spool-1w and full-ack-1w (delivery modes), full-auth-1w
    /// (API-key consumer with a rate limit and a quota).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "direct,uring-1w,epoll-1w,uring-2w,scrub-1w,full-1w,nginx,haproxy-http,haproxy-tcp"
    )]
    pub scenarios: Vec<String>,
    /// Measured seconds per step.
    #[arg(long, default_value_t = 5.0)]
    pub step_secs: f64,
    /// Warm-up seconds per step.
    #[arg(long, default_value_t = 1.0)]
    pub warmup_secs: f64,
    /// Keep-alive connections of the load generator.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Bytes per app-log event in the request body (512, 1024, 4096).
    #[arg(long, default_value_t = 1024)]
    pub body_size: usize,
    /// p99 threshold of the safe operating point, in milliseconds.
    #[arg(long, default_value_t = 25.0)]
    pub p99_ms: f64,
    /// Skip the closed-loop maximum-throughput step.
    #[arg(long)]
    pub no_max: bool,
    /// Do not run `cargo build --release` first.
    #[arg(long)]
    pub no_build: bool,
    /// Niceness of every lab process (relay, loadgen, stub), e.g. `-10` on a machine busy
    /// with other work (needs root for negative values); 0 leaves it alone.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    pub nice: i32,
    /// Runs relay (only relay) as SCHED_FIFO priority 1 (`chrt -f 1`, root): on a CPU shared
    /// with other busy processes, a normal-priority relay waits for the scheduler on every
    /// wake-up. RT throttling still leaves 5 % of each CPU to the rest of the machine.
    #[arg(long)]
    pub rt: bool,
    /// Adds a capacity plan to the report: the cores and pods `--target-tps` needs at the safe
    /// per-core TPS of relay's full job and of nginx (both added to `--scenarios` if missing).
    #[arg(long)]
    pub plan: bool,
    /// Only the capacity plan, from a saved `report.json` (no run, no build).
    #[arg(long, value_name = "REPORT_JSON")]
    pub plan_from: Option<PathBuf>,
    /// The rate the capacity plan is for, in requests/s (the seed team's peak).
    #[arg(long, default_value_t = 55_000)]
    pub target_tps: u64,
    /// CPUs per pod (the CPU quota) of the capacity plan.
    #[arg(long, default_value_t = 2)]
    pub pod_cpus: u32,
    /// The CPU a pod may use at the planned rate, in % (the seed team's 70 %).
    #[arg(long, default_value_t = 70)]
    pub headroom_pct: u32,
}

impl Default for BenchArgs {
    fn default() -> Self {
        BenchArgs {
            smoke: false,
            rates: vec![2000, 5000, 10000, 20000, 30000, 40000, 60000, 80000],
            scenarios: scenarios::ALL.iter().map(|s| s.to_string()).collect(),
            step_secs: 5.0,
            warmup_secs: 1.0,
            connections: 64,
            body_size: 1024,
            p99_ms: 25.0,
            no_max: false,
            no_build: false,
            nice: 0,
            rt: false,
            no_storm: false,
            plan: false,
            plan_from: None,
            target_tps: 55_000,
            pod_cpus: 2,
            headroom_pct: 70,
        }
    }
}

impl BenchArgs {
    /// The smoke configuration: 2 s at 200 requests/s, direct, through relay, through relay
    /// scrubbing (where no raw PII value may reach the upstream), and through the three
    /// references (their packages are small and installed by `setup`, so the generated
    /// configurations are exercised on every `cargo xtask test`).
    pub fn smoke() -> Self {
        BenchArgs {
            smoke: true,
            rates: vec![200],
            scenarios: [
                "direct",
                "uring-1w",
                "scrub-1w",
                "nginx",
                "haproxy-http",
                "haproxy-tcp",
            ]
            .map(String::from)
            .to_vec(),
            step_secs: 2.0,
            warmup_secs: 0.5,
            connections: 8,
            no_max: true,
            ..BenchArgs::default()
        }
    }
}

pub(super) fn sh(cmd: &str) -> String {
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Runs the lab.
pub fn run(args: BenchArgs) -> Result<()> {
    // `--smoke` on the command line means the smoke configuration, whatever the defaults.
    let args = if args.smoke {
        BenchArgs {
            no_build: args.no_build,
            nice: args.nice,
            ..BenchArgs::smoke()
        }
    } else {
        args
    };
    let ask = PlanAsk {
        target_tps: args.target_tps,
        p99_ms: args.p99_ms,
        pod_cpus: args.pod_cpus,
        headroom_pct: args.headroom_pct,
    };
    if let Some(path) = &args.plan_from {
        let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let report: Report = serde_json::from_slice(&text)
            .with_context(|| format!("{} is not a bench report.json", path.display()))?;
        println!(
            "Capacity plan from {} (run {}, commit {}){}",
            path.display(),
            report.date,
            report.commit,
            plan::plan(&report.scenarios, ask).markdown()
        );
        return Ok(());
    }
    let mut args = args;
    if args.plan {
        for (name, _) in plan::PLANNED {
            if !args.scenarios.iter().any(|s| s == name) {
                args.scenarios.push(name.to_string());
            }
        }
    }
    let root = crate::root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let storm = !args.smoke && !args.no_storm;
    crate::setup::for_bench(
        storm && !args.no_build,
        args.scenarios.iter().any(|s| s == "full-1w"),
    )?;
    if !args.no_build {
        if storm {
            // The storm compares XDP admission on and off: embed the program into relay.
            crate::ebpf::build()?;
        }
        crate::run(
            Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .current_dir(&root)
                .args(["build", "--release", "-p", "relay", "-p", "relay-lab"]),
        )?;
    }
    let bin = target.join("release");
    for b in ["relay", "relay-loadgen", "stub-upstream"] {
        ensure!(
            bin.join(b).exists(),
            "{} is missing: build it with cargo build --release",
            bin.join(b).display()
        );
    }
    let date = sh("date -u +%Y-%m-%dT%H-%M-%SZ");
    let out = target.join("bench").join(if args.smoke {
        format!("{date}-smoke")
    } else {
        date.clone()
    });
    std::fs::create_dir_all(&out)?;
    let use_taskset = crate::have("taskset");
    let cpus = cpus();
    let clk_tck: f64 = sh("getconf CLK_TCK").parse().unwrap_or(100.0);
    let pii_file = out.join("pii-values.txt");
    crate::run(
        Command::new(bin.join("relay-loadgen"))
            .args(["--pii-out", pii_file.to_str().unwrap()])
            .args(["--body-size", &args.body_size.to_string()]),
    )?;

    let load_before = sh("cat /proc/loadavg");
    let mut scenarios = Vec::new();
    for name in &args.scenarios {
        let sc = run_scenario(
            name,
            &args,
            &bin,
            &out,
            &cpus,
            use_taskset,
            clk_tck,
            &pii_file,
        )
        .with_context(|| format!("scenario {name}"))?;
        scenarios.push(sc);
    }

    if args.smoke {
        for sc in &scenarios {
            if let Some(why) = &sc.skipped {
                bail!("smoke: scenario {} did not run: {why}", sc.name);
            }
            for st in &sc.steps {
                ensure!(
                    st.ok > 0 && st.errors == 0,
                    "smoke: scenario {}: {} ok, {} errors ({:?}) at {} req/s: see {}",
                    sc.name,
                    st.ok,
                    st.errors,
                    st.errors_by_class,
                    st.target_tps.unwrap_or(0),
                    out.display()
                );
                ensure!(
                    st.pii_violations == 0,
                    "smoke: raw PII reached the upstream"
                );
            }
        }
    }

    let report = Report {
        date,
        commit: sh("git rev-parse --short HEAD"),
        machine: format!(
            "{} CPUs ({}), kernel {}",
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").trim(),
            sh("uname -r")
        ),
        load_before,
        load_after: sh("cat /proc/loadavg"),
        command: format!(
            "cargo xtask bench {}",
            std::env::args().skip(2).collect::<Vec<_>>().join(" ")
        ),
        step_secs: args.step_secs,
        warmup_secs: args.warmup_secs,
        connections: args.connections,
        body_size: args.body_size,
        p99_threshold_ms: args.p99_ms,
        ratios: ratios(&scenarios, args.p99_ms),
        references: comparisons(&scenarios),
        capacity_plan: args.plan.then(|| plan::plan(&scenarios, ask)),
        scenarios,
    };
    std::fs::write(out.join("report.json"), serde_json::to_vec_pretty(&report)?)?;
    let mut note = cpus.note.clone();
    if args.nice != 0 {
        note.push_str(&format!("; every lab process at nice {}", args.nice));
    }
    if args.rt {
        note.push_str("; relay and the references as SCHED_FIFO 1 (`--rt`)");
    }
    let mut md = markdown(&report, &note, use_taskset);
    if storm {
        md.push_str(&connection_storm(&bin, &out));
    }
    std::fs::write(out.join("report.md"), &md)?;
    println!("{md}");
    eprintln!(
        "xtask bench: wrote {}/report.md and report.json",
        out.display()
    );
    Ok(())
}
