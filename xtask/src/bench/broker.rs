//! The Kafka side of the full-work scenario: a tansu broker in memory, and relay's delivered
//! record count.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::cpus::{taskset, Cpus};
use super::procs::Proc;
use super::BenchArgs;

/// The Kafka topic of the full-work scenario.
pub(super) const TOPIC: &str = "app-logs-raw";

/// Starts a tansu Kafka-protocol broker (in memory) on a free port and creates the topic;
/// `Err` with the reason when that is not possible here.
pub(super) fn start_broker(
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

/// `relay_kafka_records_delivered_total` summed over topics, from relay's `/metrics`.
pub(super) fn kafka_delivered(admin: &str) -> Option<u64> {
    metric_sum(admin, "relay_kafka_records_delivered_total")
}

/// The sum of every series of the metric family `name` on relay's `/metrics` (`None` when the
/// family has no series or the scrape fails).
pub(super) fn metric_sum(admin: &str, name: &str) -> Option<u64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(admin).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let mut sum = None;
    for l in buf.lines().filter(|l| {
        l.strip_prefix(name)
            .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
    }) {
        let v: f64 = l.rsplit(' ').next()?.parse().ok()?;
        sum = Some(sum.unwrap_or(0) + v as u64);
    }
    sum
}
