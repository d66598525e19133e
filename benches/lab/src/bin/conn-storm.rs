//! `conn-storm`: the perf-lab connection-storm scenario (issue 6).
//!
//! `conn-storm run --steady ADDR --storm ADDR [...]`: `--steady-clients` keep-alive clients send
//! `POST --path` at `--steady-rate` requests/s each against `--steady` while `--storm-threads`
//! threads open a new connection per request against `--storm` as fast as they can (or at
//! `--storm-rate` connections/s in total). Prints one markdown row: the steady clients' success
//! rate and latency percentiles, and the storm's attempted and answered rates. Use two target
//! addresses of the same relay (from two client source addresses) to put the storm and the
//! steady clients behind different per-source budgets.
//!
//! `conn-storm lab --relay BIN [--duration-s 10] [--storm-threads 400]` (root): the whole
//! scenario. Builds two network namespaces joined by a veth pair, runs the stub upstream and
//! relay (1 worker) in one, and both client groups in the other (storm from `10.200.1.2`, steady
//! clients from `10.200.1.3`), once per admission setting: off, user-space shedding, XDP with a
//! per-source budget, XDP driven by the shed level only. Prints the markdown table. Namespaces
//! and processes are removed on the way out, even when a run fails.
//!
//! `conn-storm upstream --listen ADDR`: a tiny keep-alive HTTP/1.1 upstream answering 200 to
//! everything (thread per connection; relay pools its upstream connections).
//!
//! std only.
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn usage() -> ! {
    eprintln!(
        "usage:\n  conn-storm upstream --listen ADDR\n  conn-storm run --steady ADDR --storm ADDR [--path /v1/logs] [--duration-s 10]\n      [--steady-clients 8] [--steady-rate 100] [--storm-threads 16] [--storm-rate 0]\n      [--timeout-ms 1000] [--label TEXT]\n  conn-storm lab --relay BIN [--duration-s 10] [--storm-threads 400]"
    );
    std::process::exit(2)
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn num(args: &[String], name: &str, default: u64) -> u64 {
    arg(args, name)
        .map(|v| v.parse().unwrap_or_else(|_| usage()))
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("upstream") => upstream(&arg(&args, "--listen").unwrap_or_else(|| usage())),
        Some("run") => run(&args),
        Some("lab") => lab(&args),
        _ => usage(),
    }
}

fn upstream(listen: &str) {
    let l = TcpListener::bind(listen).expect("bind the upstream");
    eprintln!("conn-storm upstream on {}", l.local_addr().unwrap());
    for c in l.incoming().flatten() {
        std::thread::spawn(move || {
            let _ = c.set_nodelay(true);
            let mut w = c.try_clone().expect("clone");
            let mut r = BufReader::new(c);
            loop {
                let mut len = 0usize;
                let mut line = String::new();
                loop {
                    line.clear();
                    match r.read_line(&mut line) {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    if line == "\r\n" {
                        break;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; len];
                if r.read_exact(&mut body).is_err() {
                    return;
                }
                if w
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}")
                    .is_err()
                {
                    return;
                }
            }
        });
    }
}

const BODY: &str = r#"{"event":"view","user_id":"u-12345","ts":1700000000}"#;

fn request(path: &str, keep_alive: bool) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n{BODY}",
        BODY.len(),
        if keep_alive { "keep-alive" } else { "close" }
    )
    .into_bytes()
}

/// Reads one response; returns its status. Handles Content-Length bodies only.
fn read_response(r: &mut BufReader<TcpStream>) -> std::io::Result<u16> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("bad status line"))?;
    let mut len = 0usize;
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(status)
}

fn connect(addr: SocketAddr, timeout: Duration) -> std::io::Result<BufReader<TcpStream>> {
    let s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    Ok(BufReader::new(s))
}

fn run(args: &[String]) {
    let steady: SocketAddr = arg(args, "--steady")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| usage());
    let storm: SocketAddr = arg(args, "--storm")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| usage());
    let path = arg(args, "--path").unwrap_or_else(|| "/v1/logs".into());
    let duration = Duration::from_secs(num(args, "--duration-s", 10));
    let clients = num(args, "--steady-clients", 8);
    let rate = num(args, "--steady-rate", 100).max(1);
    let storm_threads = num(args, "--storm-threads", 16);
    let storm_rate = num(args, "--storm-rate", 0);
    let timeout = Duration::from_millis(num(args, "--timeout-ms", 1000));
    let label = arg(args, "--label").unwrap_or_else(|| "run".into());

    let stop = Arc::new(AtomicBool::new(false));
    let storm_attempts = Arc::new(AtomicU64::new(0));
    let storm_answered = Arc::new(AtomicU64::new(0));
    let latencies: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(Vec::new()));
    let steady_ok = Arc::new(AtomicU64::new(0));
    let steady_fail = Arc::new(AtomicU64::new(0));

    let mut handles = Vec::new();
    // Steady clients first, so they are established before the storm.
    for _ in 0..clients {
        let (stop, lat, ok, fail, path) = (
            stop.clone(),
            latencies.clone(),
            steady_ok.clone(),
            steady_fail.clone(),
            path.clone(),
        );
        handles.push(std::thread::spawn(move || {
            let req = request(&path, true);
            let interval = Duration::from_nanos(1_000_000_000 / rate);
            let mut conn = connect(steady, timeout).ok();
            let mut next = Instant::now();
            let mut mine = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let now = Instant::now();
                if now < next {
                    std::thread::sleep(next - now);
                }
                next += interval;
                let t0 = Instant::now();
                let result = (|| -> std::io::Result<u16> {
                    if conn.is_none() {
                        conn = Some(connect(steady, timeout)?);
                    }
                    let c = conn.as_mut().expect("set above");
                    c.get_mut().write_all(&req)?;
                    read_response(c)
                })();
                match result {
                    Ok(s) if s < 500 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        mine.push(t0.elapsed().as_micros() as u64);
                    }
                    Ok(_) => {
                        fail.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        fail.fetch_add(1, Ordering::Relaxed);
                        conn = None;
                    }
                }
            }
            lat.lock().unwrap().extend(mine);
        }));
    }
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    for _ in 0..storm_threads {
        let (stop, attempts, answered, path) = (
            stop.clone(),
            storm_attempts.clone(),
            storm_answered.clone(),
            path.clone(),
        );
        handles.push(std::thread::spawn(move || {
            let req = request(&path, false);
            let per_thread = if storm_rate == 0 {
                0
            } else {
                (storm_rate / storm_threads.max(1)).max(1)
            };
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                if let Some(gap) = 1_000_000_000u64.checked_div(per_thread) {
                    let now = Instant::now();
                    if now < next {
                        std::thread::sleep(next - now);
                    }
                    next += Duration::from_nanos(gap);
                }
                attempts.fetch_add(1, Ordering::Relaxed);
                let r = (|| -> std::io::Result<u16> {
                    let mut c = connect(storm, Duration::from_millis(200))?;
                    c.get_mut().write_all(&req)?;
                    read_response(&mut c)
                })();
                if matches!(r, Ok(s) if s < 500) {
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    let secs = started.elapsed().as_secs_f64();
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return f64::NAN;
        }
        lat[((lat.len() as f64 - 1.0) * p) as usize] as f64 / 1000.0
    };
    let ok = steady_ok.load(Ordering::Relaxed);
    let fail = steady_fail.load(Ordering::Relaxed);
    let total = (ok + fail).max(1);
    println!(
        "| {label} | {:.0} | {:.0} | {} | {:.2} % | {:.2} | {:.2} | {:.2} |",
        storm_attempts.load(Ordering::Relaxed) as f64 / secs,
        storm_answered.load(Ordering::Relaxed) as f64 / secs,
        ok + fail,
        ok as f64 * 100.0 / total as f64,
        pct(0.5),
        pct(0.99),
        pct(0.999),
    );
}

/// Namespaces and processes of one lab run; removed on drop.
struct Lab {
    children: Vec<std::process::Child>,
}

const NS_SERVER: &str = "relaystormS";
const NS_CLIENT: &str = "relaystormC";

fn ip(args: &[&str]) -> bool {
    std::process::Command::new("ip")
        .args(args)
        .stderr(if args[0] == "netns" && args[1] == "del" {
            std::process::Stdio::null()
        } else {
            std::process::Stdio::inherit()
        })
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

impl Lab {
    fn new() -> Lab {
        let _ = ip(&["netns", "del", NS_SERVER]);
        let _ = ip(&["netns", "del", NS_CLIENT]);
        let lab = Lab {
            children: Vec::new(),
        };
        let ok = [
            vec!["netns", "add", NS_SERVER],
            vec!["netns", "add", NS_CLIENT],
            vec![
                "link", "add", "vstorm", "netns", NS_SERVER, "type", "veth", "peer", "name",
                "vstormc", "netns", NS_CLIENT,
            ],
            vec![
                "-n",
                NS_SERVER,
                "addr",
                "add",
                "10.200.1.1/24",
                "dev",
                "vstorm",
            ],
            vec![
                "-n",
                NS_SERVER,
                "addr",
                "add",
                "10.200.1.11/24",
                "dev",
                "vstorm",
            ],
            vec![
                "-n",
                NS_CLIENT,
                "addr",
                "add",
                "10.200.1.2/24",
                "dev",
                "vstormc",
            ],
            vec![
                "-n",
                NS_CLIENT,
                "addr",
                "add",
                "10.200.1.3/24",
                "dev",
                "vstormc",
            ],
            vec!["-n", NS_SERVER, "link", "set", "vstorm", "up"],
            vec!["-n", NS_SERVER, "link", "set", "lo", "up"],
            vec!["-n", NS_CLIENT, "link", "set", "vstormc", "up"],
            vec!["-n", NS_CLIENT, "link", "set", "lo", "up"],
            vec![
                "-n",
                NS_CLIENT,
                "route",
                "add",
                "10.200.1.11/32",
                "dev",
                "vstormc",
                "src",
                "10.200.1.3",
            ],
        ]
        .iter()
        .all(|a| ip(a));
        assert!(
            ok,
            "conn-storm lab: namespace set-up failed (root and iproute2 needed)"
        );
        lab
    }

    fn spawn(&mut self, ns: &str, cmd: &[&str], log: &std::path::Path) {
        let out = std::fs::File::create(log).expect("log file");
        let child = std::process::Command::new("ip")
            .args(["netns", "exec", ns])
            .args(cmd)
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("spawn");
        self.children.push(child);
    }

    fn stop_children(&mut self) {
        for mut c in self.children.drain(..) {
            let _ = std::process::Command::new("kill")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop_children();
        let _ = ip(&["netns", "del", NS_SERVER]);
        let _ = ip(&["netns", "del", NS_CLIENT]);
    }
}

fn lab(args: &[String]) {
    let relay = arg(args, "--relay").unwrap_or_else(|| usage());
    let duration = num(args, "--duration-s", 10).to_string();
    let threads = num(args, "--storm-threads", 400).to_string();
    let me = std::env::current_exe().expect("own path");
    let me = me.to_str().expect("utf-8 path");
    let dir = std::env::temp_dir().join(format!("conn-storm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let runs: [(&str, &str); 4] = [
        (
            "off",
            "inflight_high = 1000000\nbacklog_high = 1000000\nkafka_fill_high = 1.0",
        ),
        ("user-space shed (inflight_high 4)", "inflight_high = 4"),
        (
            "xdp, per-source budget (rate 100/s, burst 200)",
            "interface = \"vstorm\"\nrate_per_source = 100\nburst = 200",
        ),
        (
            "xdp, shed level only (rate 0, inflight_high 4)",
            "interface = \"vstorm\"\nrate_per_source = 0\ninflight_high = 4",
        ),
    ];
    println!("| admission | storm attempted conn/s | storm answered/s | steady requests | steady success | p50 ms | p99 ms | p99.9 ms |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for (i, (label, admission)) in runs.iter().enumerate() {
        let mut lab = Lab::new();
        lab.spawn(
            NS_SERVER,
            &[me, "upstream", "--listen", "127.0.0.1:19090"],
            &dir.join("upstream.log"),
        );
        let config = dir.join(format!("relay-{i}.toml"));
        let ready = dir.join(format!("ready-{i}.json"));
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"0.0.0.0:8080\"\nworkers = 1\nbacklog = 128\n\n[admission]\n{admission}\n\n\
                 [[upstreams]]\nname = \"tracking\"\nnodes = [\"127.0.0.1:19090\"]\nconnect_timeout_ms = 1000\nread_timeout_ms = 1500\n\n\
                 [[routes]]\nname = \"app-logs\"\npath = \"/v1/logs\"\nmethods = [\"POST\"]\nupstream = \"tracking\"\n"
            ),
        )
        .expect("write config");
        let (c, r) = (config.to_str().unwrap(), ready.to_str().unwrap());
        lab.spawn(
            NS_SERVER,
            &[&relay, "run", "--config", c, "--ready-file", r],
            &dir.join(format!("relay-{i}.log")),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ready.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            ready.exists(),
            "relay did not start; see {}",
            dir.join(format!("relay-{i}.log")).display()
        );
        let out = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                NS_CLIENT,
                me,
                "run",
                "--steady",
                "10.200.1.11:8080",
                "--storm",
                "10.200.1.1:8080",
            ])
            .args([
                "--duration-s",
                &duration,
                "--steady-clients",
                "8",
                "--steady-rate",
                "100",
            ])
            .args(["--storm-threads", &threads, "--label", label])
            .output()
            .expect("run the clients");
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
