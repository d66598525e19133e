//! The scenarios: what runs (stub upstream, relay with which engine, workers and work), and
//! the measured steps of a sweep.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use super::broker::{kafka_delivered, metric_sum, start_broker, TOPIC};
use super::cpus::{taskset, Cpus};
use super::procs::{cpu_ticks, tree_cpu_ticks, tree_rss_mib, Proc};
use super::references::{self, Reference};
use super::report::{is_safe, median, Scenario, Step};
use super::BenchArgs;

/// What relay does with each request in a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Work {
    /// Plain proxy: route and forward.
    Proxy,
    /// Proxy + PII scrubbing (HMAC-SHA-256 of user_id, device_id, order_no), no Kafka.
    Scrub,
    /// Kafka copy of the original + scrubbing + forward.
    Full,
}

pub(super) struct ScenarioSpec {
    pub(super) what: &'static str,
    /// relay's io engine, workers and work; `None` for `direct` and the references.
    pub(super) relay: Option<(&'static str, u32, Work)>,
    /// The reference proxy in relay's place.
    pub(super) reference: Option<Reference>,
}

/// Every scenario, in the default order.
pub(super) const ALL: &[&str] = &[
    "direct",
    "uring-1w",
    "dead-node-1w",
    "epoll-1w",
    "uring-2w",
    "scrub-1w",
    "full-1w",
    "full-auth-1w",
    "nginx",
    "haproxy-http",
    "haproxy-tcp",
];

pub(super) fn spec(name: &str) -> Result<ScenarioSpec> {
    Ok(match name {
        "direct" => ScenarioSpec {
            what: "loadgen -> stub upstream, no relay (the floor)",
            relay: None,
            reference: None,
        },
        "uring-1w" => ScenarioSpec {
            what: "relay plain proxy, io_uring, 1 worker",
            relay: Some(("io_uring", 1, Work::Proxy)),
            reference: None,
        },
        "dead-node-1w" => ScenarioSpec {
            what: "relay plain proxy, io_uring, 1 worker, two upstream nodes of which one is dead (refuses connections): outlier ejection + health checks on",
            relay: Some(("io_uring", 1, Work::Proxy)),
            reference: None,
        },
        "circuit-open-1w" => ScenarioSpec {
            what: "relay plain proxy, io_uring, 1 worker, the only upstream node dead (refuses connections) and the circuit breaker on: after the first failures every request is answered 503 upstream_unavailable at once (every answer counts as an error here)",
            relay: Some(("io_uring", 1, Work::Proxy)),
            reference: None,
        },
        "epoll-1w" => ScenarioSpec {
            what: "relay plain proxy, epoll, 1 worker",
            relay: Some(("epoll", 1, Work::Proxy)),
            reference: None,
        },
        "uring-2w" => ScenarioSpec {
            what: "relay plain proxy, io_uring, 2 workers",
            relay: Some(("io_uring", 2, Work::Proxy)),
            reference: None,
        },
        "scrub-1w" => ScenarioSpec {
            what: "relay proxy + PII scrubbing (no Kafka), io_uring, 1 worker",
            relay: Some(("io_uring", 1, Work::Scrub)),
            reference: None,
        },
        "full-1w" => ScenarioSpec {
            what: "relay full work (Kafka + PII scrubbing), io_uring, 1 worker",
            relay: Some(("io_uring", 1, Work::Full)),
            reference: None,
        },
        "full-auth-1w" => ScenarioSpec {
            what: "relay full work + an API-key consumer (route auth required) with a rate limit and a quota that never trip, io_uring, 1 worker",
            relay: Some(("io_uring", 1, Work::Full)),
            reference: None,
        },
        "full-spool-1w" => ScenarioSpec {
            what: "relay full work, delivery spool (durable before forwarding), io_uring, 1 worker",
            relay: Some(("io_uring", 1, Work::Full)),
            reference: None,
        },
        "full-ack-1w" => ScenarioSpec {
            what: "relay full work, delivery ack (Kafka acknowledged before answering), io_uring, 1 worker",
            relay: Some(("io_uring", 1, Work::Full)),
            reference: None,
        },
        "nginx" => ScenarioSpec {
            what: "nginx reference: proxy_pass with upstream keep-alive, 1 worker process, no body work",
            relay: None,
            reference: Some(Reference::Nginx),
        },
        "haproxy-http" => ScenarioSpec {
            what: "HAProxy reference: mode http, keep-alive both sides, nbthread 1",
            relay: None,
            reference: Some(Reference::HaproxyHttp),
        },
        "haproxy-tcp" => ScenarioSpec {
            what: "HAProxy reference: mode tcp (the floor of a proxy), nbthread 1",
            relay: None,
            reference: Some(Reference::HaproxyTcp),
        },
        other => bail!("unknown scenario `{other}` ({})", ALL.join(", ")),
    })
}

/// relay's configuration for a scenario: plain proxy, `scrub` adds the `[pii.app]` policy,
/// `kafka` (bootstrap brokers) adds the topic and `[kafka]`.
pub(super) fn relay_config(
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

/// The API key the load generator sends in `full-auth-1w` (a lab value, not a secret).
pub(super) const LAB_API_KEY: &str = "relay-lab-key";
/// Its SHA-256, as `[[consumers]] api_key_sha256` stores it.
const LAB_API_KEY_SHA256: &str = "c0f13d8ee5fb8e80192b8f7aa18f575de5e7c442f1d3dd8f15dd013cdc8ecf48";

/// The `full-auth-1w` configuration: one consumer with the lab's API key, a per-consumer rate
/// limit and quota far above any lab rate (so both are evaluated on every request and never
/// refuse), and the route requiring authentication.
fn with_auth(config: String) -> String {
    let c = config.replacen(
        "upstream = \"tracking\"\n",
        "upstream = \"tracking\"\nauth = \"required\"\n",
        1,
    );
    c.replacen(
        "\n[[routes]]",
        &format!(
            "\n[[consumers]]\nname = \"lab\"\napi_key_sha256 = [\"{LAB_API_KEY_SHA256}\"]\nlimits = {{ rate = 1000000.0, burst = 100000, quota = 4000000000, window = \"day\" }}\n\n[[routes]]"
        ),
        1,
    )
}

/// The `dead-node-1w` configuration: a second node where nothing listens (a port bound and
/// released), passive outlier ejection and active health checks on the upstream (probing the
/// stub's `GET /__stats`, which its request counters leave out).
fn with_dead_node(config: String) -> Result<String> {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    Ok(dead_node_config(config, dead))
}

fn dead_node_config(config: String, dead: std::net::SocketAddr) -> String {
    let c = config.replacen("\"]\n", &format!("\", \"{dead}\"]\n"), 1);
    c.replacen(
        "\n[[routes]]",
        "\n[upstreams.outlier]\nconsecutive_failures = 3\nbase_ejection_ms = 5000\n\n[upstreams.health]\npath = \"/__stats\"\ninterval_ms = 1000\ntimeout_ms = 500\n\n[[routes]]",
        1,
    )
}

/// The `circuit-open-1w` configuration: the upstream's only node is where nothing listens, and
/// the circuit breaker opens after 20 requests in its window (half-open probes every 5 s).
fn with_open_circuit(config: String) -> Result<String> {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    Ok(open_circuit_config(config, dead))
}

fn open_circuit_config(config: String, dead: std::net::SocketAddr) -> String {
    let start = config
        .find("nodes = [\"")
        .expect("relay_config has a node list");
    let end = start + config[start..].find("]\n").expect("node list ends");
    let mut c = config.clone();
    c.replace_range(start..end + 1, &format!("nodes = [\"{dead}\"]"));
    c.replacen(
        "\n[[routes]]",
        "\n[upstreams.breaker]\nmin_requests = 20\nfailure_rate_percent = 50\nopen_ms = 5000\nhalf_open_probes = 1\n\n[[routes]]",
        1,
    )
}

#[allow(clippy::too_many_arguments)]
pub(super) fn run_scenario(
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
    let stub_pid = stub.pid();

    // relay.
    let mut relay = None;
    let mut broker: Option<Proc> = None;
    let mut admin: Option<String> = None;
    let mut target = upstream.clone();
    sc.pinning = format!("loadgen + stub upstream: CPU {}", cpus.lab);
    let mut reference = None;
    if let Some(r) = spec.reference {
        let Some(prog) = references::find(r.program()) else {
            let why = format!(
                "not available: no `{}` on PATH or in /usr/sbin (`cargo xtask setup` installs it)",
                r.program()
            );
            eprintln!("xtask bench: {name}: {why}");
            sc.skipped = Some(why);
            return Ok(sc);
        };
        // Pinned and prioritised like relay's one worker.
        let wrap = taskset(
            use_taskset,
            if args.rt { i32::MIN } else { args.nice },
            &cpus.relay1,
            &prog,
        );
        match references::start(r, wrap, &upstream, out) {
            Ok((p, addr)) => {
                sc.pinning
                    .push_str(&format!("; {}: CPU {}", r.program(), cpus.relay1));
                target = addr;
                reference = Some(p);
            }
            Err(why) => {
                eprintln!("xtask bench: {name}: {why}");
                sc.skipped = Some(why);
                return Ok(sc);
            }
        }
    }
    if let Some((engine, workers, work)) = spec.relay {
        let cfg = match work {
            Work::Full => match start_broker(args, cpus, use_taskset, out) {
                Ok((b, addr)) => {
                    broker = Some(b);
                    sc.pinning
                        .push_str("; tansu broker (in memory): with the lab");
                    let c = with_delivery(
                        name,
                        out,
                        relay_config(engine, workers, &upstream, true, Some(&addr)),
                    );
                    if name == "full-auth-1w" {
                        with_auth(c)
                    } else {
                        c
                    }
                }
                Err(why) => {
                    eprintln!("xtask bench: {name}: {why}");
                    sc.skipped = Some(why);
                    return Ok(sc);
                }
            },
            Work::Scrub => relay_config(engine, workers, &upstream, true, None),
            Work::Proxy if name == "dead-node-1w" => {
                with_dead_node(relay_config(engine, workers, &upstream, false, None))?
            }
            Work::Proxy if name == "circuit-open-1w" => {
                with_open_circuit(relay_config(engine, workers, &upstream, false, None))?
            }
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
    // The proxy under test: relay (its threads) or a reference (its process tree).
    let proxy_pid = relay.as_ref().or(reference.as_ref()).map(|p| p.pid());
    // Kafka records are counted only where relay has a Kafka path.
    let kafka_admin = if broker.is_some() {
        admin.as_deref()
    } else {
        None
    };

    let run = Running {
        proxy_pid,
        stub_pid,
        kafka_admin,
        upstream: &upstream,
        target: &target,
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
            &run,
            Some(rate),
            name,
            i,
        )?;
        // With the circuit open, 502/503 answers are the point; anything else still stops.
        let expected: u64 = if name == "circuit-open-1w" {
            st.errors_by_class
                .iter()
                .filter(|(k, _)| matches!(k.as_str(), "502" | "503"))
                .map(|(_, v)| v)
                .sum()
        } else {
            0
        };
        let saturated = st.achieved_tps < 0.9 * rate as f64
            || st.errors > expected
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
            &run,
            None,
            name,
            99,
        )?);
    }
    drop(relay);
    drop(reference);
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
        .filter_map(|s| s.proxy_cpu_us_per_req)
        .collect();
    sc.median_cpu_us_per_req = median(&mut cpu);
    Ok(sc)
}

pub(super) fn stub_stats(upstream: &str) -> Result<Value> {
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

/// The processes of a running scenario that each step talks to and measures.
#[derive(Clone, Copy)]
pub(super) struct Running<'a> {
    /// The proxy under test (relay, or a reference's master process); `None` for `direct`.
    proxy_pid: Option<u32>,
    stub_pid: u32,
    /// relay's admin address where it has a Kafka path (records are counted there).
    kafka_admin: Option<&'a str>,
    upstream: &'a str,
    /// Where the load generator sends.
    target: &'a str,
}

/// CPU microseconds per request from a tick delta (`None` when either reading is missing or
/// nothing was answered).
fn us_per_req(ticks: Option<u64>, clk_tck: f64, answered: u64) -> Option<f64> {
    let t = ticks?;
    (answered > 0).then(|| t as f64 / clk_tck * 1e6 / answered as f64)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn step(
    args: &BenchArgs,
    bin: &Path,
    out: &Path,
    cpus: &Cpus,
    use_taskset: bool,
    clk_tck: f64,
    run: &Running,
    rate: Option<u64>,
    name: &str,
    i: usize,
) -> Result<Step> {
    let json = out.join(format!(
        "{name}-{i:02}-{}.json",
        rate.map(|r| r.to_string()).unwrap_or("max".into())
    ));
    let Running {
        proxy_pid,
        stub_pid,
        kafka_admin,
        upstream,
        target,
    } = *run;
    let before = stub_stats(upstream)?;
    // The counter appears with the first record: absent means 0.
    let kafka0 = kafka_admin.map(|a| kafka_delivered(a).unwrap_or(0));
    // Spool group commits: present only where relay has a spool.
    let fsync0 = kafka_admin.and_then(spool_fsync_counts);
    let cpu0 = proxy_pid.and_then(tree_cpu_ticks);
    let stub0 = cpu_ticks(stub_pid);
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
    if name == "full-auth-1w" {
        cmd.args(["--header", &format!("X-API-Key: {LAB_API_KEY}")]);
    }
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
    let cpu1 = proxy_pid.and_then(tree_cpu_ticks);
    let stub1 = cpu_ticks(stub_pid);
    let after = stub_stats(upstream)?;
    let fsync1 = kafka_admin.and_then(spool_fsync_counts);
    let (spool_fsyncs, spool_records_per_fsync) = match (fsync0, fsync1) {
        (Some((f0, r0)), Some((f1, r1))) => {
            let (f, r) = (f1.saturating_sub(f0), r1.saturating_sub(r0));
            (Some(f), (f > 0).then(|| r as f64 / f as f64))
        }
        _ => (None, None),
    };
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
            let secs = b.saturating_sub(a) as f64 / clk_tck;
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
        proxy_cpu_pct: cpu_pct,
        proxy_cpu_us_per_req: cpu_us,
        proxy_rss_mib: proxy_pid.and_then(tree_rss_mib),
        loadgen_cpu_us_per_req: us_per_req(r["cpu_ticks"].as_u64(), clk_tck, answered_total),
        upstream_cpu_us_per_req: us_per_req(
            stub0.zip(stub1).map(|(a, b)| b.saturating_sub(a)),
            clk_tck,
            answered_total,
        ),
        upstream_requests: u(&after["requests"]).saturating_sub(u(&before["requests"])),
        // The second stats query's own connection is in `after`.
        upstream_connections: u(&after["connections"])
            .saturating_sub(u(&before["connections"]))
            .saturating_sub(1),
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
        spool_fsyncs,
        spool_records_per_fsync,
    };
    Ok(st)
}

/// (`relay_spool_fsyncs_total`, `relay_spool_fsync_records_total`), all workers; `None`
/// without a spool (the families have no series).
fn spool_fsync_counts(admin: &str) -> Option<(u64, u64)> {
    Some((
        metric_sum(admin, "relay_spool_fsyncs_total")?,
        metric_sum(admin, "relay_spool_fsync_records_total")?,
    ))
}

#[cfg(test)]
mod dead_node_tests {
    use super::*;

    #[test]
    fn the_dead_node_scenario_adds_a_node_and_the_resilience_tables() {
        let c = dead_node_config(
            relay_config("io_uring", 1, "127.0.0.1:9000", false, None),
            "127.0.0.1:1".parse().unwrap(),
        );
        assert!(
            c.contains("nodes = [\"127.0.0.1:9000\", \"127.0.0.1:1\"]"),
            "{c}"
        );
        let outlier = c.find("[upstreams.outlier]").unwrap();
        let routes = c.find("[[routes]]").unwrap();
        assert!(outlier < routes && c.contains("[upstreams.health]"), "{c}");
    }

    #[test]
    fn the_open_circuit_scenario_has_only_the_dead_node_and_a_breaker() {
        let c = open_circuit_config(
            relay_config("io_uring", 1, "127.0.0.1:9000", false, None),
            "127.0.0.1:1".parse().unwrap(),
        );
        assert!(c.contains("nodes = [\"127.0.0.1:1\"]\n"), "{c}");
        assert!(!c.contains("9000"), "{c}");
        let breaker = c.find("[upstreams.breaker]").unwrap();
        assert!(breaker < c.find("[[routes]]").unwrap(), "{c}");
    }

    #[test]
    fn the_auth_scenario_adds_a_consumer_and_requires_auth_on_the_route() {
        let c = with_auth(relay_config(
            "io_uring",
            1,
            "127.0.0.1:9000",
            true,
            Some("127.0.0.1:9092"),
        ));
        let consumer = c.find("[[consumers]]").unwrap();
        let routes = c.find("[[routes]]").unwrap();
        assert!(consumer < routes, "{c}");
        assert!(c[routes..].contains("auth = \"required\""), "{c}");
        assert!(c.contains(LAB_API_KEY_SHA256), "{c}");
    }
}
