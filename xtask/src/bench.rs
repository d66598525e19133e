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
//! the scheduled send time), errors by class, relay CPU % and CPU microseconds per request
//! (`/proc/<pid>/stat` utime+stime delta over the step divided by the answers of the step,
//! warm-up included on both sides), relay RSS, requests seen by the upstream, PII values that
//! reached it, Kafka records (not wired yet). Nothing here asserts a speed, except that
//! `--smoke` fails when requests go unanswered or error.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde::Serialize;
use serde_json::Value;

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
    /// Scenarios to run: direct, uring-1w, epoll-1w, uring-2w, scrub-1w, full-1w (full work,
    /// delivery "memory"), full-spool-1w, full-ack-1w (the same with delivery "spool" / "ack").
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "direct,uring-1w,epoll-1w,uring-2w,scrub-1w,full-1w"
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
}

impl Default for BenchArgs {
    fn default() -> Self {
        BenchArgs {
            smoke: false,
            rates: vec![2000, 5000, 10000, 20000, 30000, 40000, 60000, 80000],
            scenarios: [
                "direct", "uring-1w", "epoll-1w", "uring-2w", "scrub-1w", "full-1w",
            ]
            .map(String::from)
            .to_vec(),
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
        }
    }
}

impl BenchArgs {
    /// The smoke configuration: 2 s at 200 requests/s, direct, through relay, and through relay
    /// scrubbing (where no raw PII value may reach the upstream).
    pub fn smoke() -> Self {
        BenchArgs {
            smoke: true,
            rates: vec![200],
            scenarios: vec!["direct".into(), "uring-1w".into(), "scrub-1w".into()],
            step_secs: 2.0,
            warmup_secs: 0.5,
            connections: 8,
            no_max: true,
            ..BenchArgs::default()
        }
    }
}

/// One measured step.
#[derive(Debug, Clone, Serialize)]
struct Step {
    /// `None` for the closed-loop maximum.
    target_tps: Option<u64>,
    achieved_tps: f64,
    answered: u64,
    ok: u64,
    p50_us: u64,
    p95_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
    errors: u64,
    /// Errors by class, e.g. `{"503": 12, "timeout": 3}`.
    errors_by_class: BTreeMap<String, u64>,
    relay_cpu_pct: Option<f64>,
    relay_cpu_us_per_req: Option<f64>,
    relay_rss_mib: Option<f64>,
    upstream_requests: u64,
    pii_violations: u64,
    kafka_records: Option<u64>,
}

/// One scenario of the run.
#[derive(Debug, Clone, Serialize)]
struct Scenario {
    name: String,
    what: String,
    /// Where each process was pinned.
    pinning: String,
    /// The io engine relay reported in its ready file.
    io_engine: Option<String>,
    workers: Option<u64>,
    /// Why the scenario did not run, when it did not.
    skipped: Option<String>,
    steps: Vec<Step>,
    max: Option<Step>,
    /// Highest step with p99 under the threshold, no errors and at least 95 % of the target.
    safe_tps: Option<u64>,
    /// Median relay CPU microseconds per request over the steps without errors.
    median_cpu_us_per_req: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Report {
    date: String,
    commit: String,
    machine: String,
    /// `/proc/loadavg` before and after the run: other work on the machine skews latencies.
    load_before: String,
    load_after: String,
    command: String,
    step_secs: f64,
    warmup_secs: f64,
    connections: usize,
    body_size: usize,
    p99_threshold_ms: f64,
    scenarios: Vec<Scenario>,
    ratios: BTreeMap<String, Option<f64>>,
}

/// A child process killed (SIGTERM, then SIGKILL) when dropped.
struct Proc {
    child: Child,
    name: &'static str,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .arg(self.child.id().to_string())
                .status();
            let until = Instant::now() + Duration::from_secs(5);
            while Instant::now() < until {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            eprintln!(
                "xtask bench: {} did not stop on SIGTERM, killing it",
                self.name
            );
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

struct Cpus {
    /// Load generator and stub upstream.
    lab: String,
    /// relay with one worker.
    relay1: String,
    /// relay with two workers.
    relay2: String,
    note: String,
}

fn cpus() -> Cpus {
    let n = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    if n < 2 {
        let all = "0".to_string();
        return Cpus {
            lab: all.clone(),
            relay1: all.clone(),
            relay2: all,
            note: "1 CPU: everything shares CPU 0".into(),
        };
    }
    let half = n / 2;
    let lab = if half == 1 {
        "0".into()
    } else {
        format!("0-{}", half - 1)
    };
    let relay1 = format!("{}", n - 1);
    let (relay2, note2) = if n >= 4 {
        (
            format!("{}-{}", n - 2, n - 1),
            "relay (2 workers) on its own CPUs".to_string(),
        )
    } else {
        (
            format!("0-{}", n - 1),
            format!(
                "2 workers need 2 CPUs: relay on CPUs 0-{} shares CPU 0 with the lab",
                n - 1
            ),
        )
    };
    Cpus {
        note: format!("{n} CPUs: loadgen + stub upstream on CPU {lab}; relay (1 worker) on CPU {relay1}; {note2}"),
        lab,
        relay1,
        relay2,
    }
}

fn sh(cmd: &str) -> String {
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
    let root = crate::root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let storm = !args.smoke && !args.no_storm;
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
        scenarios,
    };
    std::fs::write(out.join("report.json"), serde_json::to_vec_pretty(&report)?)?;
    let mut note = cpus.note.clone();
    if args.nice != 0 {
        note.push_str(&format!("; every lab process at nice {}", args.nice));
    }
    if args.rt {
        note.push_str("; relay as SCHED_FIFO 1 (`--rt`)");
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

/// The connection-storm scenario (issue 6): a storm of new connections from one namespace host
/// while steady keep-alive clients on another run at a fixed rate; established clients' success
/// and p99 with admission off, user-space shedding, and XDP. Needs root (network namespaces,
/// XDP); otherwise the section says why it is missing.
fn connection_storm(bin: &std::path::Path, out: &std::path::Path) -> String {
    let mut md =
        String::from("\n## Connection storm: established clients with admission off vs on\n\n");
    if sh("id -u").trim() != "0" {
        md.push_str("Not run: needs root (network namespaces and XDP).\n");
        return md;
    }
    let cmd = format!(
        "{} lab --relay {} --duration-s 10 --storm-threads 400",
        bin.join("conn-storm").display(),
        bin.join("relay").display()
    );
    eprintln!("xtask bench: $ {cmd}");
    match Command::new(bin.join("conn-storm"))
        .args(["lab", "--relay"])
        .arg(bin.join("relay"))
        .args(["--duration-s", "10", "--storm-threads", "400"])
        .output()
    {
        Ok(o) if o.status.success() => {
            let table = String::from_utf8_lossy(&o.stdout).to_string();
            let _ = std::fs::write(out.join("storm.md"), &table);
            md.push_str(&format!("Command: `{cmd}`\n\n{table}\n"));
        }
        Ok(o) => md.push_str(&format!(
            "conn-storm failed ({}): {}\n",
            o.status,
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("")
        )),
        Err(e) => md.push_str(&format!("cannot run conn-storm: {e}\n")),
    }
    md
}

/// What relay does with each request in a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Work {
    /// Plain proxy: route and forward.
    Proxy,
    /// Proxy + PII scrubbing (HMAC-SHA-256 of user_id, device_id, order_no), no Kafka.
    Scrub,
    /// Kafka copy of the original + scrubbing + forward.
    Full,
}

struct ScenarioSpec {
    what: &'static str,
    relay: Option<(&'static str, u32, Work)>,
}

fn spec(name: &str) -> Result<ScenarioSpec> {
    Ok(match name {
        "direct" => ScenarioSpec {
            what: "loadgen -> stub upstream, no relay (the floor)",
            relay: None,
        },
        "uring-1w" => ScenarioSpec {
            what: "relay plain proxy, io_uring, 1 worker",
            relay: Some(("io_uring", 1, Work::Proxy)),
        },
        "epoll-1w" => ScenarioSpec {
            what: "relay plain proxy, epoll, 1 worker",
            relay: Some(("epoll", 1, Work::Proxy)),
        },
        "uring-2w" => ScenarioSpec {
            what: "relay plain proxy, io_uring, 2 workers",
            relay: Some(("io_uring", 2, Work::Proxy)),
        },
        "scrub-1w" => ScenarioSpec {
            what: "relay proxy + PII scrubbing (no Kafka), io_uring, 1 worker",
            relay: Some(("io_uring", 1, Work::Scrub)),
        },
        "full-1w" => ScenarioSpec {
            what: "relay full work (Kafka + PII scrubbing), io_uring, 1 worker",
            relay: Some(("io_uring", 1, Work::Full)),
        },
        "full-spool-1w" => ScenarioSpec {
            what: "relay full work, delivery spool (durable before forwarding), io_uring, 1 worker",
            relay: Some(("io_uring", 1, Work::Full)),
        },
        "full-ack-1w" => ScenarioSpec {
            what: "relay full work, delivery ack (Kafka acknowledged before answering), io_uring, 1 worker",
            relay: Some(("io_uring", 1, Work::Full)),
        },
        other => {
            bail!("unknown scenario `{other}` (direct, uring-1w, epoll-1w, uring-2w, scrub-1w, full-1w, full-spool-1w, full-ack-1w)")
        }
    })
}

/// relay's configuration for a scenario: plain proxy, `scrub` adds the `[pii.app]` policy,
/// `kafka` (bootstrap brokers) adds the topic and `[kafka]`.
fn relay_config(
    engine: &str,
    workers: u32,
    upstream: &str,
    scrub: bool,
    kafka: Option<&str>,
) -> String {
    let mut c = format!(
        r#"# generated by cargo xtask bench
[server]
listen = "127.0.0.1:0"
workers = {workers}
io_engine = "{engine}"
shutdown_grace_ms = 1000

[admin]
listen = "127.0.0.1:0"

[[upstreams]]
name = "tracking"
nodes = ["{upstream}"]

[[routes]]
name = "app-logs"
path = "/v1/logs"
methods = ["POST"]
upstream = "tracking"
"#
    );
    if kafka.is_some() {
        c.push_str(&format!("topic = \"{TOPIC}\"\n"));
    }
    if scrub {
        c.push_str(
            r#"pii = "app"

[pii.app]
fields = ["user_id", "device_id", "order_no"]
hash = "hmac-sha256"
key_file = "pii.key"
key_id = "bench"
"#,
        );
    }
    if let Some(b) = kafka {
        c.push_str(&format!(
            "\n[kafka]\nbrokers = \"{b}\"\n[kafka.properties]\n\"message.max.bytes\" = \"1049600\"\n"
        ));
    }
    c
}

/// The delivery mode of a full-work scenario (`full-spool-1w`, `full-ack-1w`; `full-1w` keeps
/// "memory"): sets `[kafka] delivery` and, for spool, a `[spool]` under the output directory.
/// (Kept separate from `relay_config` for the spool branch: issue 12.)
fn with_delivery(scenario: &str, out: &Path, config: String) -> String {
    let delivery = if scenario.contains("-spool-") {
        "spool"
    } else if scenario.contains("-ack-") {
        "ack"
    } else {
        return config;
    };
    let mut c = config.replace(
        "\n[kafka]\n",
        &format!("\n[kafka]\ndelivery = \"{delivery}\"\n"),
    );
    if delivery == "spool" {
        let dir = out.join(format!("spool-{scenario}"));
        let _ = std::fs::remove_dir_all(&dir);
        c.push_str(&format!("\n[spool]\ndir = \"{}\"\n", dir.display()));
    }
    c
}

/// The Kafka topic of the full-work scenario.
const TOPIC: &str = "app-logs-raw";

/// Starts a tansu Kafka-protocol broker (in memory) on a free port and creates the topic;
/// `Err` with the reason when that is not possible here.
fn start_broker(
    args: &BenchArgs,
    cpus: &Cpus,
    use_taskset: bool,
    out: &Path,
) -> Result<(Proc, String), String> {
    if !crate::have("tansu") {
        return Err(
            "not available: no `tansu` broker on PATH (`cargo xtask setup` installs it)".into(),
        );
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))?
        .port();
    let url = format!("tcp://127.0.0.1:{port}");
    let log = std::fs::File::create(out.join("tansu.log")).map_err(|e| e.to_string())?;
    let child = taskset(use_taskset, args.nice, &cpus.lab, Path::new("tansu"))
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "memory://tansu/"])
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start tansu: {e}"))?;
    let broker = Proc {
        child,
        name: "tansu",
    };
    let addr = format!("127.0.0.1:{port}");
    let until = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&addr).is_err() {
        if Instant::now() > until {
            return Err("tansu did not listen within 10 s (see tansu.log)".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let st = Command::new("tansu")
        .args([
            "topic",
            "create",
            "--broker",
            &url,
            "--partitions",
            "1",
            TOPIC,
        ])
        .output()
        .map_err(|e| e.to_string())?;
    if !st.status.success() {
        return Err(format!(
            "tansu topic create failed: {}",
            String::from_utf8_lossy(&st.stderr).trim()
        ));
    }
    Ok((broker, addr))
}

/// Sum of `relay_kafka_records_delivered_total` on relay's admin endpoint.
fn kafka_delivered(admin: &str) -> Option<u64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(admin).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let mut sum = None;
    for l in buf
        .lines()
        .filter(|l| l.starts_with("relay_kafka_records_delivered_total"))
    {
        let v: f64 = l.rsplit(' ').next()?.parse().ok()?;
        sum = Some(sum.unwrap_or(0) + v as u64);
    }
    sum
}

/// `[nice -n N | chrt -f 1] [taskset -c CPUS] prog` (`nice` of `i32::MIN` means `chrt`).
fn taskset(use_taskset: bool, nice: i32, cpus: &str, prog: &Path) -> Command {
    let mut argv: Vec<String> = vec![];
    if nice == i32::MIN {
        argv.extend(["chrt".into(), "-f".into(), "1".into()]);
    } else if nice != 0 {
        argv.extend(["nice".into(), "-n".into(), nice.to_string()]);
    }
    if use_taskset {
        argv.extend(["taskset".into(), "-c".into(), cpus.into()]);
    }
    argv.push(prog.to_string_lossy().into_owned());
    let mut c = Command::new(&argv[0]);
    c.args(&argv[1..]);
    c
}

#[allow(clippy::too_many_arguments)]
fn run_scenario(
    name: &str,
    args: &BenchArgs,
    bin: &Path,
    out: &Path,
    cpus: &Cpus,
    use_taskset: bool,
    clk_tck: f64,
    pii_file: &Path,
) -> Result<Scenario> {
    let spec = spec(name)?;
    let mut sc = Scenario {
        name: name.into(),
        what: spec.what.into(),
        pinning: String::new(),
        io_engine: None,
        workers: None,
        skipped: None,
        steps: vec![],
        max: None,
        safe_tps: None,
        median_cpu_us_per_req: None,
    };
    eprintln!("xtask bench: === {name}: {} ===", spec.what);

    // Stub upstream.
    let mut cmd = taskset(
        use_taskset,
        args.nice,
        &cpus.lab,
        &bin.join("stub-upstream"),
    );
    cmd.args(["--listen", "127.0.0.1:0"]);
    // Only the full-work relay scrubs: there, no raw PII value may reach the upstream.
    if matches!(spec.relay, Some((_, _, Work::Scrub | Work::Full))) {
        cmd.args(["--forbid-file", pii_file.to_str().unwrap()]);
    }
    let mut stub = Proc {
        child: cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting stub-upstream")?,
        name: "stub-upstream",
    };
    let mut line = String::new();
    BufReader::new(stub.child.stdout.take().unwrap()).read_line(&mut line)?;
    let upstream = line.trim().to_string();
    ensure!(!upstream.is_empty(), "stub-upstream printed no address");

    // relay.
    let mut relay = None;
    let mut broker: Option<Proc> = None;
    let mut admin: Option<String> = None;
    let mut target = upstream.clone();
    sc.pinning = format!("loadgen + stub upstream: CPU {}", cpus.lab);
    if let Some((engine, workers, work)) = spec.relay {
        let cfg = match work {
            Work::Full => match start_broker(args, cpus, use_taskset, out) {
                Ok((b, addr)) => {
                    broker = Some(b);
                    sc.pinning
                        .push_str("; tansu broker (in memory): with the lab");
                    with_delivery(
                        name,
                        out,
                        relay_config(engine, workers, &upstream, true, Some(&addr)),
                    )
                }
                Err(why) => {
                    eprintln!("xtask bench: {name}: {why}");
                    sc.skipped = Some(why);
                    return Ok(sc);
                }
            },
            Work::Scrub => relay_config(engine, workers, &upstream, true, None),
            Work::Proxy => relay_config(engine, workers, &upstream, false, None),
        };
        let cfg_path = out.join(format!("relay-{name}.toml"));
        // A fixed lab key (not a secret): 64 hex characters.
        std::fs::write(
            out.join("pii.key"),
            format!("{}\n", "6c61622d6b6579".repeat(10)),
        )?;
        std::fs::write(&cfg_path, cfg)?;
        // A relay without these features rejects the configuration: report it, do not fail.
        let check = Command::new(bin.join("relay"))
            .args(["check", "--config", cfg_path.to_str().unwrap()])
            .output()
            .context("running relay check")?;
        if !check.status.success() {
            let why = format!(
                "not available yet: `relay check` rejects the configuration: {}",
                String::from_utf8_lossy(&check.stderr)
                    .lines()
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" / ")
            );
            eprintln!("xtask bench: {name}: {why}");
            sc.skipped = Some(why);
            return Ok(sc);
        }
        let ready = out.join(format!("relay-{name}.ready.json"));
        let _ = std::fs::remove_file(&ready);
        let relay_cpus = if workers > 1 {
            &cpus.relay2
        } else {
            &cpus.relay1
        };
        sc.pinning.push_str(&format!("; relay: CPU {relay_cpus}"));
        let log = std::fs::File::create(out.join(format!("relay-{name}.log")))?;
        let mut p = Proc {
            child: taskset(
                use_taskset,
                if args.rt { i32::MIN } else { args.nice },
                relay_cpus,
                &bin.join("relay"),
            )
            .args([
                "run",
                "--config",
                cfg_path.to_str().unwrap(),
                "--ready-file",
                ready.to_str().unwrap(),
            ])
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting relay")?,
            name: "relay",
        };
        let until = Instant::now() + Duration::from_secs(15);
        let info: Value = loop {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                if let Ok(v) = serde_json::from_str(&text) {
                    break v;
                }
            }
            if let Ok(Some(st)) = p.child.try_wait() {
                bail!(
                    "relay exited ({st}) before it was ready: see {}/relay-{name}.log",
                    out.display()
                );
            }
            ensure!(
                Instant::now() < until,
                "relay wrote no ready file in 15 s: see relay-{name}.log"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        relay = Some(p);
        target = info["listen"]
            .as_str()
            .context("ready file without listen")?
            .to_string();
        admin = info["admin"]
            .as_str()
            .filter(|a| !a.is_empty())
            .map(String::from);
        sc.io_engine = info["io_engine"].as_str().map(String::from);
        sc.workers = info["workers"].as_u64();
    }
    let relay_pid = relay.as_ref().map(|p| p.pid());
    // Kafka records are counted only where relay has a Kafka path.
    let kafka_admin = if broker.is_some() {
        admin.as_deref()
    } else {
        None
    };

    // The sweep.
    for (i, &rate) in args.rates.iter().enumerate() {
        let st = step(
            args,
            bin,
            out,
            cpus,
            use_taskset,
            clk_tck,
            relay_pid,
            kafka_admin,
            &upstream,
            &target,
            Some(rate),
            name,
            i,
        )?;
        let saturated = st.achieved_tps < 0.9 * rate as f64
            || st.errors > 0
            || st.p99_us as f64 > 4.0 * args.p99_ms * 1000.0;
        sc.steps.push(st);
        if saturated {
            eprintln!("xtask bench: {name}: saturated at {rate} req/s, sweep stops");
            break;
        }
    }
    if !args.no_max {
        sc.max = Some(step(
            args,
            bin,
            out,
            cpus,
            use_taskset,
            clk_tck,
            relay_pid,
            kafka_admin,
            &upstream,
            &target,
            None,
            name,
            99,
        )?);
    }
    drop(relay);
    drop(stub);
    drop(broker);

    sc.safe_tps = sc
        .steps
        .iter()
        .filter(|s| is_safe(s, args.p99_ms))
        .filter_map(|s| s.target_tps)
        .max();
    let mut cpu: Vec<f64> = sc
        .steps
        .iter()
        .filter(|s| s.errors == 0)
        .filter_map(|s| s.relay_cpu_us_per_req)
        .collect();
    sc.median_cpu_us_per_req = median(&mut cpu);
    Ok(sc)
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// `(utime + stime)` of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the `(comm)`, which may contain spaces.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after `state`.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn rss_mib(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn stub_stats(upstream: &str) -> Result<Value> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(upstream)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /__stats HTTP/1.1\r\nHost: stub\r\nConnection: close\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let body = buf
        .split("\r\n\r\n")
        .nth(1)
        .context("stats answer without body")?;
    Ok(serde_json::from_str(body)?)
}

#[allow(clippy::too_many_arguments)]
fn step(
    args: &BenchArgs,
    bin: &Path,
    out: &Path,
    cpus: &Cpus,
    use_taskset: bool,
    clk_tck: f64,
    relay_pid: Option<u32>,
    kafka_admin: Option<&str>,
    upstream: &str,
    target: &str,
    rate: Option<u64>,
    name: &str,
    i: usize,
) -> Result<Step> {
    let json = out.join(format!(
        "{name}-{i:02}-{}.json",
        rate.map(|r| r.to_string()).unwrap_or("max".into())
    ));
    let before = stub_stats(upstream)?;
    // The counter appears with the first record: absent means 0.
    let kafka0 = kafka_admin.map(|a| kafka_delivered(a).unwrap_or(0));
    let cpu0 = relay_pid.and_then(cpu_ticks);
    let t0 = Instant::now();
    let mut cmd = taskset(
        use_taskset,
        args.nice,
        &cpus.lab,
        &bin.join("relay-loadgen"),
    );
    cmd.args(["--target", target, "--path", "/v1/logs"])
        .args(["--connections", &args.connections.to_string()])
        .args(["--duration", &format!("{}s", args.step_secs)])
        .args(["--warmup", &format!("{}s", args.warmup_secs)])
        .args(["--body-size", &args.body_size.to_string()])
        .args(["--json", json.to_str().unwrap()]);
    if let Some(r) = rate {
        cmd.args(["--rate", &r.to_string()]);
    }
    eprintln!(
        "xtask bench: {name}: {} for {}s (+{}s warm-up)",
        rate.map(|r| format!("{r} req/s open loop"))
            .unwrap_or("closed loop max".into()),
        args.step_secs,
        args.warmup_secs
    );
    crate::run(&mut cmd)?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu1 = relay_pid.and_then(cpu_ticks);
    let after = stub_stats(upstream)?;
    let r: Value = serde_json::from_slice(&std::fs::read(&json)?)?;
    let u = |v: &Value| v.as_u64().unwrap_or(0);
    let lat = &r["latency_us"];
    let e = &r["errors"];
    let mut by_class = BTreeMap::new();
    if let Some(m) = e["status"].as_object() {
        for (k, v) in m {
            by_class.insert(k.clone(), u(v));
        }
    }
    for k in ["timeout", "connect", "reset", "protocol"] {
        if u(&e[k]) > 0 {
            by_class.insert(k.to_string(), u(&e[k]));
        }
    }
    let answered_total = u(&r["answered_total"]);
    let (cpu_pct, cpu_us) = match (cpu0, cpu1) {
        (Some(a), Some(b)) => {
            let secs = (b - a) as f64 / clk_tck;
            (
                Some(100.0 * secs / wall),
                (answered_total > 0).then(|| secs * 1e6 / answered_total as f64),
            )
        }
        _ => (None, None),
    };
    let st = Step {
        target_tps: rate,
        achieved_tps: r["achieved_tps"].as_f64().unwrap_or(0.0),
        answered: u(&r["answered"]),
        ok: u(&r["ok"]),
        p50_us: u(&lat["p50"]),
        p95_us: u(&lat["p95"]),
        p99_us: u(&lat["p99"]),
        p999_us: u(&lat["p999"]),
        max_us: u(&lat["max"]),
        errors: u(&e["total"]),
        errors_by_class: by_class,
        relay_cpu_pct: cpu_pct,
        relay_cpu_us_per_req: cpu_us,
        relay_rss_mib: relay_pid.and_then(rss_mib),
        upstream_requests: u(&after["requests"]).saturating_sub(u(&before["requests"])),
        pii_violations: u(&after["violations"]).saturating_sub(u(&before["violations"])),
        kafka_records: match (
            kafka0,
            kafka_admin.map(|a| {
                // Give the producer a moment to get the last acknowledgements.
                std::thread::sleep(Duration::from_millis(500));
                kafka_delivered(a).unwrap_or(0)
            }),
        ) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        },
    };
    Ok(st)
}

/// Whether a step counts as a safe operating point.
fn is_safe(s: &Step, p99_ms: f64) -> bool {
    let t = s.target_tps.unwrap_or(0) as f64;
    s.errors == 0 && (s.p99_us as f64) < p99_ms * 1000.0 && s.achieved_tps >= 0.95 * t
}

fn ratios(scs: &[Scenario], p99_ms: f64) -> BTreeMap<String, Option<f64>> {
    let get = |n: &str| scs.iter().find(|s| s.name == n && s.skipped.is_none());
    let max_tps = |n: &str| get(n).and_then(|s| s.max.as_ref()).map(|m| m.achieved_tps);
    let div = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    // A metric at the highest target rate that was a safe operating point for both.
    let common = |a: &str, b: &str, f: fn(&Step) -> Option<f64>| -> Option<f64> {
        let (sa, sb) = (get(a)?, get(b)?);
        let rate = sa
            .steps
            .iter()
            .filter(|s| is_safe(s, p99_ms))
            .filter_map(|s| s.target_tps)
            .filter(|r| {
                sb.steps
                    .iter()
                    .any(|t| is_safe(t, p99_ms) && t.target_tps == Some(*r))
            })
            .max()?;
        let va = f(sa.steps.iter().find(|s| s.target_tps == Some(rate))?);
        let vb = f(sb.steps.iter().find(|s| s.target_tps == Some(rate))?);
        div(va, vb)
    };
    let cpu: fn(&Step) -> Option<f64> = |s| s.relay_cpu_us_per_req;
    let p99: fn(&Step) -> Option<f64> = |s| Some(s.p99_us as f64);
    let mut m = BTreeMap::new();
    for (label, a, b) in [
        ("io_uring/epoll (1 worker)", "uring-1w", "epoll-1w"),
        ("2 workers/1 worker (io_uring)", "uring-2w", "uring-1w"),
        ("scrub/plain proxy (1 worker)", "scrub-1w", "uring-1w"),
        ("full work/plain proxy (1 worker)", "full-1w", "uring-1w"),
        (
            "full work spool/memory (1 worker)",
            "full-spool-1w",
            "full-1w",
        ),
        ("full work ack/memory (1 worker)", "full-ack-1w", "full-1w"),
        ("relay io_uring 1 worker/direct", "uring-1w", "direct"),
    ] {
        m.insert(
            format!("{label}: closed-loop max TPS"),
            div(max_tps(a), max_tps(b)),
        );
        if b != "direct" {
            m.insert(
                format!("{label}: CPU µs/req, highest common safe step"),
                common(a, b, cpu),
            );
        }
        m.insert(
            format!("{label}: p99, highest common safe step"),
            common(a, b, p99),
        );
    }
    m
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map(|v| format!("{v:.prec$}"))
        .unwrap_or_else(|| "–".into())
}

fn errs(s: &Step) -> String {
    if s.errors == 0 {
        return "0".into();
    }
    let parts: Vec<String> = s
        .errors_by_class
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    format!("{} ({})", s.errors, parts.join(", "))
}

fn markdown(r: &Report, pin_note: &str, taskset: bool) -> String {
    let mut m = String::new();
    let _ = writeln!(m, "# relay perf lab: {}\n", r.date);
    let _ = writeln!(m, "- command: `{}` (commit {})", r.command.trim(), r.commit);
    let _ = writeln!(
        m,
        "- machine: {}; /proc/loadavg before: {}, after: {} (other work on the machine skews the latencies; CPU µs/request much less)",
        r.machine, r.load_before, r.load_after
    );
    let _ = writeln!(
        m,
        "- pinning: {}",
        if taskset {
            pin_note.to_string()
        } else {
            "none (taskset not found)".into()
        }
    );
    let _ = writeln!(
        m,
        "- load: relay-loadgen open loop, {} keep-alive connections, latency from the scheduled send time; {} s measured + {} s warm-up per step; body: one {} B app-log JSON event",
        r.connections, r.step_secs, r.warmup_secs, r.body_size
    );
    let _ = writeln!(
        m,
        "- relay CPU: /proc/<pid>/stat utime+stime over the step (warm-up included) / answers of the step; latencies in ms\n"
    );
    for sc in &r.scenarios {
        let _ = writeln!(m, "## {}: {}\n", sc.name, sc.what);
        if let Some(why) = &sc.skipped {
            let _ = writeln!(m, "Skipped: {why}\n");
            continue;
        }
        let _ = writeln!(
            m,
            "Pinning: {}{}{}\n",
            sc.pinning,
            sc.io_engine
                .as_ref()
                .map(|e| format!("; io_engine (reported): {e}"))
                .unwrap_or_default(),
            sc.workers
                .map(|w| format!("; workers: {w}"))
                .unwrap_or_default()
        );
        let _ = writeln!(
            m,
            "| target TPS | achieved TPS | p50 | p95 | p99 | p99.9 | max | errors | relay CPU % | relay CPU µs/req | relay RSS MiB | upstream reqs | PII leaks | Kafka records |"
        );
        let _ = writeln!(
            m,
            "|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---|"
        );
        for st in sc.steps.iter().chain(sc.max.iter()) {
            let _ = writeln!(
                m,
                "| {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                st.target_tps
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "max (closed loop)".into()),
                st.achieved_tps,
                ms(st.p50_us),
                ms(st.p95_us),
                ms(st.p99_us),
                ms(st.p999_us),
                ms(st.max_us),
                errs(st),
                opt(st.relay_cpu_pct, 0),
                opt(st.relay_cpu_us_per_req, 1),
                opt(st.relay_rss_mib, 1),
                st.upstream_requests,
                if sc.name.starts_with("full") || sc.name.starts_with("scrub") {
                    st.pii_violations.to_string()
                } else {
                    "–".into()
                },
                st.kafka_records
                    .map(|k| k.to_string())
                    .unwrap_or_else(|| "n/a".into()),
            );
        }
        let _ = writeln!(
            m,
            "\nSafe operating point (p99 < {} ms, no errors, ≥ 95 % of target): **{}**; median relay CPU µs/request over clean steps: **{}**\n",
            r.p99_threshold_ms,
            sc.safe_tps.map(|t| format!("{t} req/s")).unwrap_or_else(|| "none".into()),
            opt(sc.median_cpu_us_per_req, 1)
        );
    }
    let _ = writeln!(m, "## Ratios (same run)\n");
    let _ = writeln!(m, "| ratio | value |\n|---|---:|");
    for (k, v) in &r.ratios {
        let _ = writeln!(
            m,
            "| {k} | {} |",
            v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "n/a".into())
        );
    }
    m
}
