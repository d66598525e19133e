//! `relay-loadgen`: an HTTP/1.1 load generator for relay's perf lab.
//!
//! Two modes:
//! - **open loop** (`--rate N`): arrivals are scheduled on a fixed timeline (one every `1/N`
//!   s). A free keep-alive connection takes the next arrival; when every connection is busy
//!   the arrival waits, and the wait counts: latency is measured from the *scheduled* send
//!   time (no coordinated omission). An arrival already later than `--timeout` when a
//!   connection frees up is counted as a timeout without being sent (its client gave up).
//! - **closed loop** (no `--rate`): `--connections N` each send the next request as soon as
//!   the previous answer is in; the maximum throughput.
//!
//! Bodies are realistic app-log events from a seeded generator (`relay_lab::events`),
//! pre-built into a pool so that generating them costs nothing during the run. Runs on
//! tokio-uring, one thread: pin it with `taskset`.
//!
//! Output: a progress line per second on stderr, a table on stdout, `--json FILE` for
//! machines (see [`Report`]).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use hdrhistogram::Histogram;
use relay_lab::events::EventGen;
use relay_lab::http1::{chunked_len, parse_response, Framing};
use relay_lab::parse_duration;
use serde::Serialize;
use tokio_uring::net::TcpStream;

/// Command line of `relay-loadgen`.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "relay-loadgen",
    about = "open/closed-loop HTTP/1.1 load for relay's perf lab"
)]
struct Args {
    /// Full URL, e.g. `http://127.0.0.1:8080/v1/logs` (instead of --target/--path).
    #[arg(long)]
    url: Option<String>,
    /// `host:port` to load.
    #[arg(long)]
    target: Option<String>,
    /// Request path.
    #[arg(long, default_value = "/v1/logs")]
    path: String,
    /// Open loop: target requests per second on a fixed timeline. Without it: closed loop.
    #[arg(long)]
    rate: Option<u64>,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Measured duration (`10s`, `500ms`, `1m`).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Warm-up before the measurement, same load, not recorded.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// Bytes per event: 512, 1024 or 4096 (any value >= ~600 works).
    #[arg(long, default_value_t = 1024)]
    body_size: usize,
    /// Events per request; > 1 sends NDJSON batches.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Seed of the event generator.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Distinct pre-built requests, sent round-robin.
    #[arg(long, default_value_t = 4096)]
    pool: usize,
    /// Per-request timeout (from the send; an open-loop arrival later than this is dropped).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    timeout: Duration,
    /// Write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write every raw PII value of the pool (one per line) to this file, for
    /// `stub-upstream --forbid-file`; then exit unless a target is given.
    #[arg(long)]
    pii_out: Option<PathBuf>,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
    /// Extra request header `Name: value` on every request (repeatable), e.g. an API key.
    #[arg(long = "header")]
    headers: Vec<String>,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Default, Serialize)]
struct Latency {
    p50: u64,
    p95: u64,
    p99: u64,
    p999: u64,
    max: u64,
    mean: f64,
}

/// Errors by class (measured requests, plus every connect failure).
#[derive(Debug, Default, Clone, Serialize)]
struct Errors {
    total: u64,
    /// Responses with a status other than 2xx, by status code.
    status: BTreeMap<u16, u64>,
    timeout: u64,
    connect: u64,
    /// Connection reset, broken pipe or closed before a whole response.
    reset: u64,
    /// A response this tool could not frame.
    protocol: u64,
}

/// What `--json` writes.
#[derive(Debug, Serialize)]
struct Report {
    mode: &'static str,
    target: String,
    path: String,
    target_rate: Option<u64>,
    connections: usize,
    duration_s: f64,
    warmup_s: f64,
    body_size: usize,
    batch: usize,
    /// Measured requests that got a 2xx answer.
    ok: u64,
    /// Measured requests answered (any status).
    answered: u64,
    /// Answers completed inside the measured window, per second.
    achieved_tps: f64,
    /// Answers of the whole run (warm-up and drain included): the denominator for the
    /// server's CPU time per request.
    answered_total: u64,
    bytes_sent: u64,
    bytes_received: u64,
    /// Latency of measured answered requests, from the scheduled send time (open loop) or the
    /// send (closed loop).
    latency_us: Latency,
    errors: Errors,
    /// This process's CPU time (`/proc/self/stat` utime+stime, clock ticks) from the first
    /// connection to the last answer (building the request pool excluded): over
    /// `answered_total`, what the load generator spent per request.
    cpu_ticks: Option<u64>,
}

#[derive(Debug, Default)]
struct Counters {
    ok: u64,
    answered: u64,
    answered_in_window: u64,
    answered_total: u64,
    bytes_sent: u64,
    bytes_received: u64,
    errors: Errors,
    // Progress (per second).
    sec_answered: u64,
    sec_errors: u64,
}

enum Fail {
    Timeout,
    Reset,
    Protocol,
}

struct Shared {
    addr: SocketAddr,
    start: Instant,
    measure_start: Instant,
    end: Instant,
    interval: Option<f64>,
    next_slot: Cell<u64>,
    timeout: Duration,
    pool: Vec<&'static [u8]>,
    hist: RefCell<Histogram<u64>>,
    sec_hist: RefCell<Histogram<u64>>,
    c: RefCell<Counters>,
    inflight: Cell<u64>,
    live_tasks: Cell<usize>,
}

impl Shared {
    /// The next arrival: its number, scheduled time and whether it is measured; `None` at
    /// the end.
    fn next(&self) -> Option<(u64, Instant, bool)> {
        let i = self.next_slot.get();
        self.next_slot.set(i + 1);
        let at = match self.interval {
            Some(iv) => self.start + Duration::from_secs_f64(i as f64 * iv),
            None => Instant::now(),
        };
        (at < self.end).then_some((i, at, at >= self.measure_start))
    }

    fn request(&self, i: u64) -> &'static [u8] {
        self.pool[(i as usize) % self.pool.len()]
    }

    fn error(&self, measured: bool, f: impl FnOnce(&mut Errors)) {
        let mut c = self.c.borrow_mut();
        c.sec_errors += 1;
        if measured {
            c.errors.total += 1;
            f(&mut c.errors);
        }
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let (target, path) = match (&args.url, &args.target) {
        (Some(u), None) => split_url(u)?,
        (None, Some(t)) => (t.clone(), args.path.clone()),
        (None, None) if args.pii_out.is_some() => (String::new(), args.path.clone()),
        _ => bail!("give exactly one of --url or --target"),
    };
    if args.connections == 0 || args.pool == 0 || args.rate == Some(0) {
        bail!("--connections, --pool and --rate must be > 0");
    }
    let mut extra = String::new();
    for h in &args.headers {
        match h.split_once(':') {
            Some((n, v)) if !n.trim().is_empty() && !h.contains(['\r', '\n']) => {
                extra.push_str(&format!("{}: {}\r\n", n.trim(), v.trim()));
            }
            _ => bail!("--header {h:?}: expected `Name: value` on one line"),
        }
    }
    let mut gen = EventGen::new(args.seed);
    let mut pool = Vec::with_capacity(args.pool);
    let mut pii = String::new();
    for i in 0..args.pool {
        let b = gen.body(args.body_size, args.batch);
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: relay-loadgen/0.1\r\n\
             Content-Type: {ct}\r\nContent-Length: {len}\r\nX-Request-Id: lg-{seed}-{i}\r\n{extra}\r\n",
            host = if target.is_empty() {
                "localhost"
            } else {
                &target
            },
            ct = b.content_type,
            len = b.bytes.len(),
            seed = args.seed,
        )
        .into_bytes();
        req.extend_from_slice(&b.bytes);
        pool.push(&*Box::leak(req.into_boxed_slice()));
        for v in b.pii {
            pii.push_str(&v);
            pii.push('\n');
        }
    }
    if let Some(p) = &args.pii_out {
        std::fs::write(p, pii).with_context(|| format!("writing {}", p.display()))?;
        if target.is_empty() {
            return Ok(());
        }
    }
    let addr = target
        .to_socket_addrs()
        .with_context(|| format!("resolving {target}"))?
        .next()
        .with_context(|| format!("{target} resolves to nothing"))?;

    let cpu0 = relay_lab::self_cpu_ticks();
    let mut report =
        tokio_uring::builder()
            .entries(1024)
            .start(run(args.clone(), addr, target, path, pool))?;
    report.cpu_ticks = match (cpu0, relay_lab::self_cpu_ticks()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    print_table(&report);
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

fn split_url(u: &str) -> Result<(String, String)> {
    let rest = u
        .strip_prefix("http://")
        .with_context(|| format!("{u}: only http:// URLs are supported"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let host = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    Ok((host, path.to_string()))
}

async fn run(
    args: Args,
    addr: SocketAddr,
    target: String,
    path: String,
    pool: Vec<&'static [u8]>,
) -> Result<Report> {
    let start = Instant::now() + Duration::from_millis(20);
    let measure_start = start + args.warmup;
    let end = measure_start + args.duration;
    let hist = || Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("static bounds");
    let sh = Rc::new(Shared {
        addr,
        start,
        measure_start,
        end,
        interval: args.rate.map(|r| 1.0 / r as f64),
        next_slot: Cell::new(0),
        timeout: args.timeout,
        pool,
        hist: RefCell::new(hist()),
        sec_hist: RefCell::new(hist()),
        c: RefCell::new(Counters::default()),
        inflight: Cell::new(0),
        live_tasks: Cell::new(args.connections),
    });
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let sh = sh.clone();
        tasks.push(tokio_uring::spawn(async move {
            connection(&sh).await;
            sh.live_tasks.set(sh.live_tasks.get() - 1);
        }));
    }
    // Progress, once a second, until every connection is done or the drain deadline.
    let deadline = end + args.timeout + Duration::from_secs(1);
    let mut tick = start + Duration::from_secs(1);
    let mut secs = 0;
    while sh.live_tasks.get() > 0 && Instant::now() < deadline {
        tokio::time::sleep_until(tick.min(deadline).into()).await;
        if Instant::now() < tick {
            continue;
        }
        tick += Duration::from_secs(1);
        secs += 1;
        let (n, e) = {
            let mut c = sh.c.borrow_mut();
            let r = (c.sec_answered, c.sec_errors);
            c.sec_answered = 0;
            c.sec_errors = 0;
            r
        };
        let p99 = {
            let mut h = sh.sec_hist.borrow_mut();
            let v = h.value_at_quantile(0.99);
            h.reset();
            v
        };
        if !args.quiet {
            let phase = if Instant::now() < measure_start {
                "warmup"
            } else if Instant::now() < end {
                "run"
            } else {
                "drain"
            };
            eprintln!(
                "relay-loadgen [{secs:>3}s {phase:>6}] {n:>7} answers/s  errors {e:>5}  inflight {:>4}  p99 {}",
                sh.inflight.get(),
                fmt_us(p99)
            );
        }
    }
    for t in tasks {
        t.abort();
    }
    // Whatever is still in flight after the deadline timed out.
    {
        let mut c = sh.c.borrow_mut();
        let stuck = sh.inflight.get();
        c.errors.timeout += stuck;
        c.errors.total += stuck;
    }
    let h = sh.hist.borrow();
    let c = sh.c.borrow();
    let q = |x: f64| {
        if h.is_empty() {
            0
        } else {
            h.value_at_quantile(x)
        }
    };
    Ok(Report {
        mode: if args.rate.is_some() {
            "open"
        } else {
            "closed"
        },
        target,
        path,
        target_rate: args.rate,
        connections: args.connections,
        duration_s: args.duration.as_secs_f64(),
        warmup_s: args.warmup.as_secs_f64(),
        body_size: args.body_size,
        batch: args.batch,
        ok: c.ok,
        answered: c.answered,
        achieved_tps: c.answered_in_window as f64 / args.duration.as_secs_f64(),
        answered_total: c.answered_total,
        bytes_sent: c.bytes_sent,
        bytes_received: c.bytes_received,
        latency_us: Latency {
            p50: q(0.50),
            p95: q(0.95),
            p99: q(0.99),
            p999: q(0.999),
            max: if h.is_empty() { 0 } else { h.max() },
            mean: if h.is_empty() { 0.0 } else { h.mean() },
        },
        errors: c.errors.clone(),
        cpu_ticks: None,
    })
}

/// One keep-alive connection's loop: take the next arrival, (re)connect if needed, send,
/// read the whole answer, record.
async fn connection(sh: &Shared) {
    let mut stream: Option<TcpStream> = None;
    let mut acc: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut rbuf: Vec<u8> = Vec::with_capacity(16 * 1024);
    while let Some((slot, at, measured)) = sh.next() {
        // Wake up to 1 ms early (the timer's granularity) rather than late; latency is then
        // measured from the real send, so an early send never flatters the result.
        let now = Instant::now();
        if at > now + Duration::from_millis(1) {
            tokio::time::sleep_until((at - Duration::from_millis(1)).into()).await;
        }
        if Instant::now().saturating_duration_since(at) > sh.timeout {
            sh.error(measured, |e| e.timeout += 1);
            continue;
        }
        if stream.is_none() {
            match tokio::time::timeout(sh.timeout, TcpStream::connect(sh.addr)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    acc.clear();
                    stream = Some(s);
                }
                Ok(Err(_)) | Err(_) => {
                    // Connect failures always count: nothing was measured without them.
                    {
                        let mut c = sh.c.borrow_mut();
                        c.errors.total += 1;
                        c.errors.connect += 1;
                        c.sec_errors += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let s = stream.as_ref().expect("connected above");
        let req = sh.request(slot);
        let sent = Instant::now();
        let t0 = at.min(sent);
        sh.inflight.set(sh.inflight.get() + 1);
        let res = tokio::time::timeout(sh.timeout, exchange(s, req, &mut acc, &mut rbuf)).await;
        sh.inflight.set(sh.inflight.get() - 1);
        let done = Instant::now();
        let res = match res {
            Ok(r) => r,
            Err(_) => Err(Fail::Timeout),
        };
        match res {
            Ok((status, received, close)) => {
                let us = (done - t0).as_micros() as u64;
                let mut c = sh.c.borrow_mut();
                c.answered_total += 1;
                c.sec_answered += 1;
                c.bytes_sent += req.len() as u64;
                c.bytes_received += received as u64;
                if done >= sh.measure_start && done < sh.end {
                    c.answered_in_window += 1;
                }
                sh.sec_hist.borrow_mut().saturating_record(us.max(1));
                if measured {
                    c.answered += 1;
                    sh.hist.borrow_mut().saturating_record(us.max(1));
                    if (200..300).contains(&status) {
                        c.ok += 1;
                    } else {
                        c.errors.total += 1;
                        *c.errors.status.entry(status).or_default() += 1;
                        c.sec_errors += 1;
                    }
                }
                if close {
                    stream = None;
                }
            }
            Err(f) => {
                sh.error(measured, |e| match f {
                    Fail::Timeout => e.timeout += 1,
                    Fail::Reset => e.reset += 1,
                    Fail::Protocol => e.protocol += 1,
                });
                stream = None;
            }
        }
    }
}

/// Writes one request and reads its whole response: `(status, bytes read, server closes)`.
async fn exchange(
    s: &TcpStream,
    req: &'static [u8],
    acc: &mut Vec<u8>,
    rbuf: &mut Vec<u8>,
) -> Result<(u16, usize, bool), Fail> {
    let (r, _) = s.write_all(req).await;
    r.map_err(|_| Fail::Reset)?;
    let mut eof = false;
    loop {
        if !acc.is_empty() || eof {
            match parse_response(acc) {
                Err(_) => return Err(Fail::Protocol),
                Ok(None) if eof => return Err(Fail::Reset),
                Ok(None) => {}
                Ok(Some(h)) => {
                    let body = &acc[h.head_len..];
                    let total = match h.framing {
                        Framing::Length(n) => (body.len() >= n).then_some(h.head_len + n),
                        Framing::Chunked => match chunked_len(body, None) {
                            Err(_) => return Err(Fail::Protocol),
                            Ok(n) => n.map(|n| h.head_len + n),
                        },
                        Framing::UntilClose => eof.then_some(acc.len()),
                    };
                    match total {
                        Some(n) => {
                            let close = h.close || h.framing == Framing::UntilClose;
                            acc.drain(..n);
                            return Ok((h.status, n, close));
                        }
                        None if eof => return Err(Fail::Reset),
                        None => {}
                    }
                }
            }
        }
        let mut b = std::mem::take(rbuf);
        b.clear();
        // A read cancelled by a timeout takes its buffer with it: never read into an empty one
        // (a zero-length read returns 0, which would look like the peer closing).
        b.reserve(16 * 1024);
        let (r, b) = s.read(b).await;
        *rbuf = b;
        match r {
            Ok(0) => eof = true,
            Ok(n) => acc.extend_from_slice(&rbuf[..n]),
            Err(_) => return Err(Fail::Reset),
        }
    }
}

fn fmt_us(us: u64) -> String {
    if us >= 10_000 {
        format!("{:.1} ms", us as f64 / 1000.0)
    } else {
        format!("{:.2} ms", us as f64 / 1000.0)
    }
}

fn print_table(r: &Report) {
    let l = &r.latency_us;
    println!();
    println!(
        "relay-loadgen: {} loop, {} connections, {}{} for {:.1}s (+{:.1}s warm-up), body {} B x{}",
        r.mode, r.connections, r.target, r.path, r.duration_s, r.warmup_s, r.body_size, r.batch
    );
    println!("| target TPS | achieved TPS | ok | p50 | p95 | p99 | p99.9 | max | errors |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    println!(
        "| {} | {:.0} | {} | {} | {} | {} | {} | {} | {} |",
        r.target_rate
            .map(|t| t.to_string())
            .unwrap_or_else(|| "max".into()),
        r.achieved_tps,
        r.ok,
        fmt_us(l.p50),
        fmt_us(l.p95),
        fmt_us(l.p99),
        fmt_us(l.p999),
        fmt_us(l.max),
        fmt_errors(&r.errors)
    );
}

fn fmt_errors(e: &Errors) -> String {
    if e.total == 0 {
        return "0".into();
    }
    let mut parts = vec![];
    for (s, n) in &e.status {
        parts.push(format!("{n}x{s}"));
    }
    for (name, n) in [
        ("timeout", e.timeout),
        ("connect", e.connect),
        ("reset", e.reset),
        ("protocol", e.protocol),
    ] {
        if n > 0 {
            parts.push(format!("{n} {name}"));
        }
    }
    format!("{} ({})", e.total, parts.join(", "))
}
