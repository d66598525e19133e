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
        "usage:\n  conn-storm upstream --listen ADDR\n  conn-storm run --steady ADDR --storm ADDR [--path /v1/logs] [--duration-s 10]\n      [--steady-clients 8] [--steady-rate 100] [--storm-threads 16] [--storm-rate 0]\n      [--timeout-ms 1000] [--label TEXT]"
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
