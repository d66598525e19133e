//! Shared helpers for the black-box suites: the built `relay` binary started with a config,
//! stub upstreams (plain or TLS) that record exactly what reached them, and raw HTTP clients.
//!
//! Everything binds port 0 and every child process is killed when its guard drops.

pub mod broker;

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The `relay` binary, built once per test process (`cargo build -p relay --bin relay`).
pub fn relay_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build_relay(&[])).clone()
}

/// The `relay` binary built with the `fault-injection` feature (a request header
/// `x-relay-fault: panic` panics inside the request phases). It replaces the plain binary in
/// the target dir: use it only from a test binary of its own (test binaries run one at a time,
/// and each rebuilds what it needs first).
pub fn relay_bin_with_fault_injection() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build_relay(&["--features", "fault-injection"]))
        .clone()
}

fn build_relay(extra: &[&str]) -> PathBuf {
    {
        let root = workspace_root();
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "-q", "-p", "relay", "--bin", "relay"])
            .args(extra)
            .current_dir(&root)
            .status()
            .expect("run cargo build for the relay binary");
        assert!(status.success(), "building relay failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        target.join("debug").join("relay")
    }
}

/// Polls `f` every 10 ms until it returns `Some`, for at most `limit`.
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A running relay process; killed on drop.
pub struct Relay {
    child: Option<Child>,
    /// Data address.
    pub addr: SocketAddr,
    /// Admin address, when configured.
    pub admin: Option<SocketAddr>,
    /// Workers it started.
    pub workers: usize,
    /// io engine in use.
    pub io_engine: String,
    /// The temp dir holding the config, ready file and logs.
    pub dir: tempfile::TempDir,
    /// Path of the config file.
    pub config_path: PathBuf,
}

/// How to start relay.
#[derive(Default)]
pub struct RelayOptions {
    /// Command and args put before the relay binary (e.g. `["taskset", "-c", "0"]`).
    pub prefix: Vec<String>,
    /// The binary to run instead of [`relay_bin`].
    pub bin: Option<PathBuf>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
}

impl Relay {
    /// Starts relay with `config` (TOML) and waits until it listens.
    pub fn start(config: &str) -> Relay {
        Self::start_with(config, RelayOptions::default())
    }

    /// Starts relay with options.
    pub fn start_with(config: &str, opts: RelayOptions) -> Relay {
        Self::try_start_with(config, opts).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts relay; `Err` with its stderr when it does not become ready.
    pub fn try_start_with(config: &str, opts: RelayOptions) -> Result<Relay, String> {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("relay.toml");
        std::fs::write(&config_path, config).unwrap();
        let ready = dir.path().join("ready.json");
        let log = std::fs::File::create(dir.path().join("relay.log")).unwrap();
        let bin = opts.bin.clone().unwrap_or_else(relay_bin);
        let mut cmd = if opts.prefix.is_empty() {
            Command::new(&bin)
        } else {
            let mut c = Command::new(&opts.prefix[0]);
            c.args(&opts.prefix[1..]).arg(&bin);
            c
        };
        cmd.arg("run")
            .arg("--config")
            .arg(&config_path)
            .arg("--ready-file")
            .arg(&ready)
            .env("RELAY_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().map_err(|e| format!("spawn relay: {e}"))?;
        let info = wait_for(Duration::from_secs(60), || {
            if let Ok(Some(_)) = child.try_wait() {
                return Some(None);
            }
            let text = std::fs::read_to_string(&ready).ok()?;
            serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .map(Some)
        })
        .flatten();
        let Some(info) = info else {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(dir.path().join("relay.log")).unwrap_or_default();
            return Err(format!("relay did not become ready; its log:\n{log}"));
        };
        let admin = info["admin"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap());
        Ok(Relay {
            child: Some(child),
            addr: info["listen"].as_str().unwrap().parse().unwrap(),
            admin,
            workers: info["workers"].as_u64().unwrap() as usize,
            io_engine: info["io_engine"].as_str().unwrap().to_string(),
            dir,
            config_path,
        })
    }

    /// What relay logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("relay.log")).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends a signal (e.g. `libc::SIGTERM`) via `kill`.
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status();
    }

    /// Sends SIGTERM and waits for the exit status (at most `limit`).
    pub fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        self.signal("TERM");
        let child = self.child.as_mut().unwrap();
        let st = wait_for(limit, || child.try_wait().ok().flatten());
        if st.is_some() {
            self.child = None;
        }
        st
    }

    /// GET on the admin port; (status, body).
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        let r = http_request(
            self.admin.expect("admin configured"),
            &format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
        );
        (r.status, String::from_utf8_lossy(&r.body).into_owned())
    }

    /// POST on the admin port; (status, body).
    pub fn admin_post(&self, path: &str) -> (u16, String) {
        let r = http_request(
            self.admin.expect("admin configured"),
            &format!(
                "POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            ),
        );
        (r.status, String::from_utf8_lossy(&r.body).into_owned())
    }

    /// The value of a metric line `name{labels}` (exact text before the value), or 0.
    pub fn metric(&self, series: &str) -> f64 {
        let (_, text) = self.admin_get("/metrics");
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|r| r.strip_prefix(' '))
                    .map(|v| v.trim().parse().unwrap_or(0.0))
            })
            .unwrap_or(0.0)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers (name as sent, value).
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl Response {
    /// First header value by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// The body parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
}

/// Reads one response from `r` (Content-Length, chunked or until close). `None` on EOF before
/// a status line.
pub fn read_response<R: BufRead>(r: &mut R) -> Option<Response> {
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end().to_string();
        let mut parts = line.splitn(3, ' ');
        let _v = parts.next()?;
        let status: u16 = parts.next()?.parse().ok()?;
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            r.read_line(&mut h).ok()?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (n, v) = h.split_once(':')?;
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
        if (100..200).contains(&status) {
            continue;
        }
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.clone())
        };
        let mut body = Vec::new();
        if status == 204 || status == 304 {
        } else if get("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        {
            loop {
                let mut sz = String::new();
                r.read_line(&mut sz).ok()?;
                let n = usize::from_str_radix(sz.trim().split(';').next()?, 16).ok()?;
                if n == 0 {
                    let mut end = String::new();
                    r.read_line(&mut end).ok()?;
                    break;
                }
                let mut chunk = vec![0; n + 2];
                r.read_exact(&mut chunk).ok()?;
                body.extend_from_slice(&chunk[..n]);
            }
        } else if let Some(cl) = get("content-length") {
            let n: usize = cl.parse().ok()?;
            body.resize(n, 0);
            r.read_exact(&mut body).ok()?;
        } else {
            r.read_to_end(&mut body).ok()?;
        }
        return Some(Response {
            status,
            headers,
            body,
        });
    }
}

/// A keep-alive client connection.
pub struct Client {
    reader: std::io::BufReader<TcpStream>,
}

impl Client {
    /// Connects to `addr` (10 s read timeout).
    pub fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Client {
            reader: std::io::BufReader::new(s),
        }
    }
    /// Writes raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).expect("write");
    }
    /// Reads one response.
    pub fn recv(&mut self) -> Option<Response> {
        read_response(&mut self.reader)
    }
    /// POST `body` to `path` as JSON, keep-alive; returns the response.
    pub fn post(&mut self, path: &str, body: &[u8]) -> Response {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        // One write: a head and a body sent apart wait on Nagle and the peer's delayed ACK
        // (~20 ms a request on loopback).
        let mut req = head.into_bytes();
        req.extend_from_slice(body);
        self.send(&req);
        self.recv().expect("a response")
    }
    /// Whether the server closed the connection (EOF on read within the timeout).
    pub fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.reader.read(&mut b), Ok(0) | Err(_))
    }
    /// The underlying stream.
    pub fn stream(&mut self) -> &mut TcpStream {
        self.reader.get_mut()
    }
}

/// Sends a raw request on a new connection and reads one response.
pub fn http_request(addr: SocketAddr, raw: &str) -> Response {
    let mut c = Client::connect(addr);
    c.send(raw.as_bytes());
    c.recv().expect("a response")
}

/// POSTs JSON to relay on a fresh connection.
pub fn post(addr: SocketAddr, path: &str, body: &[u8]) -> Response {
    Client::connect(addr).post(path, body)
}

/// POSTs `body` to `path` on new connections until relay answers 503, within `limit`; every
/// answer before it must be 200. Returns the 200s counted and the 503. Panics at `limit`.
pub fn post_until_refused(
    addr: SocketAddr,
    path: &str,
    body: &[u8],
    limit: Duration,
) -> (usize, Response) {
    let mut oks = 0;
    let refused = wait_for(limit, || {
        let r = post(addr, path, body);
        if r.status == 503 {
            return Some(r);
        }
        assert_eq!(r.status, 200, "before the route refuses, only 200s");
        oks += 1;
        None
    })
    .expect("the route to refuse with 503");
    (oks, refused)
}

/// One request as the stub upstream received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// Method.
    pub method: String,
    /// Request target.
    pub target: String,
    /// Headers, in order.
    pub headers: Vec<(String, String)>,
    /// Body (de-chunked).
    pub body: Vec<u8>,
    /// Which accepted connection (0-based) carried it.
    pub connection: usize,
}

impl Received {
    /// First header value by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// How the stub upstream answers.
#[derive(Debug, Clone)]
pub struct Behavior {
    /// Status code.
    pub status: u16,
    /// Extra response headers.
    pub headers: Vec<(String, String)>,
    /// Response body.
    pub body: Vec<u8>,
    /// Send the body chunked instead of with Content-Length.
    pub chunked: bool,
    /// Send the body close-delimited (no length; closes after).
    pub close_delimited: bool,
    /// Never answer (hold the connection).
    pub stall: bool,
    /// Close the connection right after each response (without saying so).
    pub close_after_response: bool,
    /// Read the whole request, then close the connection without answering (the request
    /// was fully written: a reset after write, from the client's side).
    pub reset: bool,
    /// When set, `GET /health` is answered with this status (empty body) whatever the rest
    /// says, so a node's health checks and its traffic can fail apart.
    pub health_status: Option<u16>,
}

impl Default for Behavior {
    fn default() -> Self {
        Behavior {
            status: 200,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: br#"{"ok":true}"#.to_vec(),
            chunked: false,
            close_delimited: false,
            stall: false,
            close_after_response: false,
            reset: false,
            health_status: None,
        }
    }
}

/// An HTTP/1.1 upstream on 127.0.0.1:0 that records everything it receives.
pub struct StubUpstream {
    /// Its address.
    pub addr: SocketAddr,
    /// What it received, in order.
    pub received: Arc<Mutex<Vec<Received>>>,
    /// Connections accepted.
    pub connections: Arc<AtomicUsize>,
    /// Raw bytes received over all connections.
    pub bytes: Arc<AtomicUsize>,
    /// The behavior, changeable while running.
    pub behavior: Arc<Mutex<Behavior>>,
    stop: Arc<AtomicBool>,
}

/// Server TLS material for a TLS stub.
pub type TlsServer = Arc<rustls::ServerConfig>;

impl StubUpstream {
    /// A plain HTTP stub answering with `behavior`.
    pub fn start(behavior: Behavior) -> StubUpstream {
        Self::start_inner(TcpListener::bind("127.0.0.1:0").unwrap(), behavior, None)
    }

    /// A plain HTTP stub on `addr` (e.g. `127.0.0.2:<port>`, for several addresses of one
    /// name); `Err` when the address is taken.
    pub fn start_on(addr: SocketAddr, behavior: Behavior) -> std::io::Result<StubUpstream> {
        Ok(Self::start_inner(TcpListener::bind(addr)?, behavior, None))
    }

    /// A TLS stub.
    pub fn start_tls(behavior: Behavior, tls: TlsServer) -> StubUpstream {
        Self::start_inner(
            TcpListener::bind("127.0.0.1:0").unwrap(),
            behavior,
            Some(tls),
        )
    }

    fn start_inner(l: TcpListener, behavior: Behavior, tls: Option<TlsServer>) -> StubUpstream {
        let addr = l.local_addr().unwrap();
        let s = StubUpstream {
            addr,
            received: Arc::new(Mutex::new(Vec::new())),
            connections: Arc::new(AtomicUsize::new(0)),
            bytes: Arc::new(AtomicUsize::new(0)),
            behavior: Arc::new(Mutex::new(behavior)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (rec, conns, bytes, beh, stop) = (
            s.received.clone(),
            s.connections.clone(),
            s.bytes.clone(),
            s.behavior.clone(),
            s.stop.clone(),
        );
        std::thread::spawn(move || {
            for c in l.incoming() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(c) = c else { continue };
                let id = conns.fetch_add(1, Ordering::SeqCst);
                let (rec, bytes, beh, tls) = (rec.clone(), bytes.clone(), beh.clone(), tls.clone());
                std::thread::spawn(move || {
                    let _ = c.set_read_timeout(Some(Duration::from_secs(30)));
                    match tls {
                        Some(cfg) => {
                            let conn = rustls::ServerConnection::new(cfg).unwrap();
                            let stream = rustls::StreamOwned::new(conn, c);
                            serve_stub(stream, id, &rec, &bytes, &beh);
                        }
                        None => serve_stub(c, id, &rec, &bytes, &beh),
                    }
                });
            }
        });
        s
    }

    /// Requests received so far.
    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Number of requests received.
    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    /// Number of requests received for `target` (e.g. to leave health probes out).
    pub fn count_to(&self, target: &str) -> usize {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.target == target)
            .count()
    }

    /// Changes the behavior.
    pub fn set(&self, b: Behavior) {
        *self.behavior.lock().unwrap() = b;
    }
}

impl Drop for StubUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

struct Counting<S> {
    inner: S,
    bytes: Arc<AtomicUsize>,
}

impl<S: Read> Read for Counting<S> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes.fetch_add(n, Ordering::SeqCst);
        Ok(n)
    }
}

impl<S: Write> Write for Counting<S> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn serve_stub<S: Read + Write>(
    s: S,
    id: usize,
    rec: &Mutex<Vec<Received>>,
    bytes: &Arc<AtomicUsize>,
    beh: &Mutex<Behavior>,
) {
    let mut r = std::io::BufReader::new(Counting {
        inner: s,
        bytes: bytes.clone(),
    });
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((n, v)) = h.split_once(':') {
                headers.push((n.trim().to_string(), v.trim().to_string()));
            }
        }
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _): &&(String, String)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.clone())
        };
        let mut body = Vec::new();
        if get("transfer-encoding").is_some() {
            loop {
                let mut sz = String::new();
                r.read_line(&mut sz).unwrap_or(0);
                let n = usize::from_str_radix(sz.trim(), 16).unwrap_or(0);
                if n == 0 {
                    let mut e = String::new();
                    r.read_line(&mut e).unwrap_or(0);
                    break;
                }
                let mut chunk = vec![0; n + 2];
                if r.read_exact(&mut chunk).is_err() {
                    return;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        } else if let Some(cl) = get("content-length") {
            body.resize(cl.parse().unwrap_or(0), 0);
            if r.read_exact(&mut body).is_err() {
                return;
            }
        }
        let is_health = target == "/health";
        rec.lock().unwrap().push(Received {
            method: method.clone(),
            target,
            headers,
            body,
            connection: id,
        });
        let mut b = beh.lock().unwrap().clone();
        if let (true, Some(status)) = (is_health, b.health_status) {
            b = Behavior {
                status,
                body: Vec::new(),
                ..Behavior::default()
            };
        }
        if b.stall {
            std::thread::sleep(Duration::from_secs(60));
            return;
        }
        if b.reset {
            return;
        }
        let mut out = format!("HTTP/1.1 {} {}\r\n", b.status, reason(b.status)).into_bytes();
        for (n, v) in &b.headers {
            out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        let no_body = method == "HEAD" || b.status == 204 || b.status == 304;
        if b.close_delimited {
            out.extend_from_slice(b"Connection: close\r\n\r\n");
            out.extend_from_slice(&b.body);
        } else if b.chunked {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            if !no_body {
                for part in b.body.chunks(7) {
                    out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                    out.extend_from_slice(part);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n\r\n");
            }
        } else {
            out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", b.body.len()).as_bytes());
            if !no_body {
                out.extend_from_slice(&b.body);
            }
        }
        let w = r.get_mut();
        if w.write_all(&out).is_err() || w.flush().is_err() {
            return;
        }
        if b.close_delimited || b.close_after_response {
            return;
        }
    }
}

fn reason(s: u16) -> &'static str {
    match s {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Whatever",
    }
}

/// A relay config with one upstream and one route (`/v1/logs`, POST) plus `extra` TOML.
pub fn basic_config(engine: &str, upstream: SocketAddr, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
workers = 1
io_engine = "{engine}"
{extra}

[[upstreams]]
name = "tracking"
nodes = ["{upstream}"]
connect_timeout_ms = 1000
read_timeout_ms = 1500

[[routes]]
name = "app-logs"
path = "/v1/logs"
methods = ["POST"]
upstream = "tracking"
"#
    )
}

/// An address where nothing listens (bound, then released).
pub fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Every metric family relay's `/metrics` must publish (issue 7's list), shared by the
/// metrics compliance test and the dashboard check.
pub const REQUIRED_METRICS: &[&str] = &[
    "relay_requests_total",
    "relay_request_duration_seconds",
    "relay_upstream_duration_seconds",
    "relay_bytes_received_total",
    "relay_bytes_sent_total",
    "relay_rejected_requests_total",
    "relay_pii_fields_hashed_total",
    "relay_guard_findings_total",
    "relay_guard_quarantine_failed_total",
    "relay_kafka_queue_depth",
    "relay_kafka_queue_capacity",
    "relay_kafka_records_enqueued_total",
    "relay_kafka_records_delivered_total",
    "relay_kafka_records_failed_total",
    "relay_kafka_delivery_duration_seconds",
    "relay_upstream_connections_open",
    "relay_upstream_connections_reused_total",
    "relay_upstream_connections_created_total",
    "relay_upstream_retries_total",
    "relay_upstream_errors_total",
    "relay_upstream_connections_stale_total",
    "relay_upstream_node_healthy",
    "relay_upstream_node_ejected_workers",
    "relay_upstream_ejections_total",
    "relay_upstream_circuit_opened_total",
    "relay_upstream_circuit_rejected_total",
    "relay_upstream_circuit_open_workers",
    "relay_upstream_health_probe_failures_total",
    "relay_upstream_retry_budget_exhausted_total",
    "relay_kafka_originals_lost_total",
    "relay_spool_bytes",
    "relay_spool_max_bytes",
    "relay_spool_oldest_unacked_age_seconds",
    "relay_spool_fsyncs_total",
    "relay_spool_fsync_records_total",
    "relay_spool_write_errors_total",
    "relay_request_decoded_bytes_total",
    "relay_request_decode_refusals_total",
    "relay_admission_shed_level_ratio",
    "relay_admission_dropped_total",
    "relay_build_info",
    "relay_config_reloads_total",
    "relay_config_info",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
];

/// Turns each `case(engine: &str)` function of a test file into two tests, `io_uring::case`
/// and `epoll::case`, so every black-box case runs on both io engines.
#[macro_export]
macro_rules! on_both_engines {
    ($($case:ident),* $(,)?) => {
        mod io_uring {
            $( #[test] fn $case() { super::$case("io_uring") } )*
        }
        mod epoll {
            $( #[test] fn $case() { super::$case("epoll") } )*
        }
    };
}
