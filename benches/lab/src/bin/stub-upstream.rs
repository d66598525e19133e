//! `stub-upstream`: a fast HTTP/1.1 server standing in for the external tracking server.
//!
//! Answers every request with a configured status, body and latency over keep-alive
//! connections (Content-Length and chunked request bodies, pipelining tolerated), counts
//! requests and bytes, and checks that no raw PII value listed in `--forbid-file` ever
//! reaches it (`violations` in the stats). `GET /__stats` answers the counters as JSON and is
//! not counted itself. The bound address is the first line on stdout.
//!
//! Runs on tokio-uring, one thread, independent of relay's code (see `relay_lab`).

use std::cell::Cell;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use aho_corasick::AhoCorasick;
use anyhow::{Context, Result};
use clap::Parser;
use relay_lab::http1::{chunked_len, parse_request, Framing};
use tokio_uring::net::{TcpListener, TcpStream};

/// Command line of `stub-upstream`.
#[derive(Parser, Debug)]
#[command(
    name = "stub-upstream",
    about = "fast HTTP/1.1 stub upstream for relay's perf lab"
)]
struct Args {
    /// Address to listen on; port 0 picks a free port (printed on stdout's first line).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Status of every answer.
    #[arg(long, default_value_t = 200)]
    status: u16,
    /// Body of every answer.
    #[arg(long, default_value = r#"{"ok":true}"#)]
    body: String,
    /// Delay before each answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// File of raw PII values, one per line, that must never appear in a received request.
    #[arg(long)]
    forbid_file: Option<PathBuf>,
    /// Largest request (head + body) accepted, in bytes.
    #[arg(long, default_value_t = 16 << 20)]
    max_request_bytes: usize,
}

#[derive(Default)]
struct Stats {
    requests: Cell<u64>,
    bytes: Cell<u64>,
    body_bytes: Cell<u64>,
    violations: Cell<u64>,
    bad_requests: Cell<u64>,
    connections: Cell<u64>,
}

struct Ctx {
    stats: Stats,
    answer: &'static [u8],
    latency: Duration,
    forbid: Option<AhoCorasick>,
    forbid_count: usize,
    max_request: usize,
}

fn bump(c: &Cell<u64>, by: u64) {
    c.set(c.get() + by);
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let (forbid, forbid_count) = match &args.forbid_file {
        None => (None, 0),
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            let pats: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            let n = pats.len();
            (
                Some(AhoCorasick::new(&pats).context("building the forbid matcher")?),
                n,
            )
        }
    };
    let answer = if args.status == 204 || args.status == 304 {
        format!("HTTP/1.1 {} {}\r\n\r\n", args.status, reason(args.status))
    } else {
        format!(
            "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
            args.status,
            reason(args.status),
            args.body.len(),
            args.body
        )
    };
    let ctx = Rc::new(Ctx {
        stats: Stats::default(),
        answer: Box::leak(answer.into_bytes().into_boxed_slice()),
        latency: Duration::from_millis(args.latency_ms),
        forbid,
        forbid_count,
        max_request: args.max_request_bytes,
    });
    tokio_uring::builder().entries(1024).start(async move {
        let listener =
            TcpListener::bind(args.listen).with_context(|| format!("binding {}", args.listen))?;
        let addr = listener.local_addr()?;
        println!("{addr}");
        use std::io::Write;
        std::io::stdout().flush()?;
        eprintln!(
            "stub-upstream: listening on {addr}, status {}, latency {} ms, {} forbidden values",
            args.status, args.latency_ms, ctx.forbid_count
        );
        loop {
            let (s, _) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    eprintln!("stub-upstream: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = s.set_nodelay(true);
            bump(&ctx.stats.connections, 1);
            let ctx = ctx.clone();
            tokio_uring::spawn(async move {
                let _ = serve(&ctx, s).await;
            });
        }
    })
}

fn stats_json(ctx: &Ctx) -> Vec<u8> {
    let s = &ctx.stats;
    let body = serde_json::json!({
        "requests": s.requests.get(),
        "bytes": s.bytes.get(),
        "body_bytes": s.body_bytes.get(),
        "violations": s.violations.get(),
        "bad_requests": s.bad_requests.get(),
        "connections": s.connections.get(),
        "forbidden_values": ctx.forbid_count,
    })
    .to_string();
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
        body.len(),
        body
    )
    .into_bytes()
}

/// Serves one connection until the client closes it or sends something unframeable.
async fn serve(ctx: &Ctx, s: TcpStream) -> std::io::Result<()> {
    let mut acc: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut rbuf: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        // Answer every whole request in the buffer.
        loop {
            let head = match parse_request(&acc) {
                Ok(Some(h)) => h,
                Ok(None) if acc.len() > 64 * 1024 => {
                    return bad(ctx, &s, "431 Request Header Fields Too Large").await
                }
                Ok(None) => break,
                Err(_) => return bad(ctx, &s, "400 Bad Request").await,
            };
            let body = &acc[head.head_len..];
            let (total, body_len) = match head.framing {
                Framing::Length(n) if head.head_len + n > ctx.max_request => {
                    return bad(ctx, &s, "413 Content Too Large").await
                }
                Framing::Length(n) if body.len() >= n => (head.head_len + n, n),
                Framing::Length(_) => break,
                Framing::Chunked => match chunked_len(body, None) {
                    Ok(Some(n)) => (head.head_len + n, n),
                    Ok(None) if acc.len() > ctx.max_request => {
                        return bad(ctx, &s, "413 Content Too Large").await
                    }
                    Ok(None) => break,
                    Err(_) => return bad(ctx, &s, "400 Bad Request").await,
                },
                Framing::UntilClose => return bad(ctx, &s, "400 Bad Request").await,
            };
            let dynamic: Option<Vec<u8>> = if head.method == "GET" && head.path == "/__stats" {
                Some(stats_json(ctx))
            } else {
                let st = &ctx.stats;
                bump(&st.requests, 1);
                bump(&st.bytes, total as u64);
                bump(&st.body_bytes, body_len as u64);
                if let Some(ac) = &ctx.forbid {
                    let hit = if head.framing == Framing::Chunked {
                        let mut dec = Vec::with_capacity(body_len);
                        let _ = chunked_len(&acc[head.head_len..total], Some(&mut dec));
                        ac.is_match(&acc[..head.head_len]) || ac.is_match(&dec)
                    } else {
                        ac.is_match(&acc[..total])
                    };
                    if hit {
                        bump(&st.violations, 1);
                    }
                }
                None
            };
            let close = head.close;
            acc.drain(..total);
            if !ctx.latency.is_zero() {
                tokio::time::sleep(ctx.latency).await;
            }
            match dynamic {
                Some(v) => s.write_all(v).await.0?,
                None => s.write_all(ctx.answer).await.0?,
            }
            if close {
                return Ok(());
            }
        }
        let mut b = std::mem::take(&mut rbuf);
        b.clear();
        b.reserve(64 * 1024);
        let (r, b) = s.read(b).await;
        rbuf = b;
        match r? {
            0 => return Ok(()),
            n => acc.extend_from_slice(&rbuf[..n]),
        }
    }
}

async fn bad(ctx: &Ctx, s: &TcpStream, status: &'static str) -> std::io::Result<()> {
    bump(&ctx.stats.bad_requests, 1);
    let msg = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let (r, _) = s.write_all(msg.into_bytes()).await;
    r
}
