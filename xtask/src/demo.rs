//! `cargo xtask demo`: relay between a sample app and a stub tracking server, with an embedded
//! Kafka (librdkafka's mock cluster). For each sample log it prints the original read back from
//! the topic, what the tracking server received, and the response the app got, side by side.
//! Then the spool: a `delivery = "spool"` route with Kafka down, relay SIGKILLed mid-batch and
//! restarted, and every original answered 2xx arriving in Kafka once it is back.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const TOPIC: &str = "app-log-topic";
const WIDTH: usize = 58;

/// Sample app logs: (description, device header, body, send chunked).
const LOGS: &[(&str, &str, &str, bool)] = &[
    (
        "page view",
        "a1f3-77",
        r#"{"event":"page_view","user_id":"u-10042","device_id":"a1f3-77","page":"/shoes/42"}"#,
        false,
    ),
    (
        "purchase (chunked upload)",
        "a1f3-77",
        r#"{"event":"purchase","user_id":"u-10042","order_no":"ORD-2026-000981","amount":129.90,"currency":"EUR"}"#,
        true,
    ),
    (
        "sign-up",
        "c9d0-12",
        r#"{"event":"sign_up","user_id":"u-77310","email":"jane.doe@example.com","phone":"+33 6 12 34 56 78"}"#,
        false,
    ),
    (
        "batch of two events",
        "c9d0-12",
        r#"[{"event":"add_to_cart","user_id":"u-77310","sku":"SKU-1"},{"event":"add_to_cart","user_id":"u-77310","sku":"SKU-2"}]"#,
        false,
    ),
    (
        "event the tracker refuses (400 passes through)",
        "ffee-01",
        r#"{"event":"","user_id":"u-1"}"#,
        false,
    ),
];

/// Runs the demo.
pub fn run() -> Result<()> {
    crate::setup::for_demo()?;
    let root = crate::root();
    crate::run(
        Command::new("cargo")
            .args(["build", "-q", "-p", "relay", "--bin", "relay"])
            .current_dir(&root),
    )?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let relay_bin = target.join("debug").join("relay");

    // 1. Kafka: an embedded mock cluster, one partition so the topic reads back in order.
    let kafka = MockCluster::new(1).context("start the mock Kafka cluster")?;
    kafka
        .create_topic(TOPIC, 1, 1)
        .context("create the topic")?;
    let brokers = kafka.bootstrap_servers();

    // 2. The tracking server.
    let upstream = Stub::start()?;

    // 3. relay.
    let dir = std::env::temp_dir().join(format!("relay-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // The HMAC key for pseudonymisation (a fresh random one per run).
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut key))
        .context("read /dev/urandom")?;
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(dir.join("pii.key"), format!("{hex}\n"))?;
    let config = sample_config(upstream.addr, &brokers);
    let mut relay = RelayProc::start(&relay_bin, &dir, &config)?;
    println!(
        "relay demo: relay on {}, tracking stub on {}, Kafka (mock) on {brokers}",
        relay.addr, upstream.addr
    );
    println!("config:\n{}", indent(&config));

    // 4. The app sends its logs.
    let mut responses = Vec::new();
    let mut conn = TcpStream::connect(relay.addr)?;
    conn.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    for (_, device, body, chunked) in LOGS {
        conn.write_all(&request(device, body.as_bytes(), *chunked))?;
        responses.push(read_response(&mut reader)?);
    }
    drop(reader);
    drop(conn);

    // 5. Read the originals back from the topic.
    let accepted = responses.iter().filter(|r| r.status != 503).count();
    let originals = read_topic(&brokers, accepted)?;

    // 6. Side by side.
    let received = upstream.received.lock().unwrap().clone();
    for (i, ((what, _, body, chunked), resp)) in LOGS.iter().zip(&responses).enumerate() {
        println!(
            "\n=== log {} of {}: {what}{} ===",
            i + 1,
            LOGS.len(),
            if *chunked { " [chunked]" } else { "" }
        );
        // The original is found by its bytes; the upstream request by relay's request id.
        let orig = originals.iter().find(|o| o.payload == body.as_bytes());
        let rid = orig
            .and_then(|o| o.header("relay-request-id"))
            .map(str::to_string);
        let up = received
            .iter()
            .find(|r| rid.is_some() && r.header("x-request-id") == rid);
        let left = match orig {
            Some(o) => {
                let mut s = raw(&o.payload);
                s.push_str(&format!(
                    "\n\nkey: {}\ntimestamp (CreateTime): {} ms\nheaders: {}\nbyte-identical to what the app sent: yes",
                    o.key.as_deref().map(String::from_utf8_lossy).unwrap_or("(none)".into()),
                    o.timestamp_ms,
                    o.headers.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", "),
                ));
                s
            }
            None => "(no byte-identical original in Kafka)".to_string(),
        };
        let right = match up {
            Some(u) => {
                let mut s = raw(&u.body);
                s.push_str("\n\n");
                for h in ["x-device-id", "x-relay-key-id", "x-request-id"] {
                    s.push_str(&format!(
                        "{h}: {}\n",
                        u.header(h).unwrap_or_else(|| "(none)".into())
                    ));
                }
                s
            }
            None => "(the tracking server got nothing)".to_string(),
        };
        side_by_side(
            "ORIGINAL (read back from Kafka)",
            &left,
            "WHAT THE TRACKING SERVER RECEIVED",
            &right,
        );
        println!(
            "the app got: HTTP {} {}",
            resp.status,
            String::from_utf8_lossy(&resp.body)
        );
    }

    // 7. Shutdown: SIGTERM, flush report.
    let code = relay.terminate()?;
    let log = std::fs::read_to_string(dir.join("relay.log")).unwrap_or_default();
    println!();
    for l in log.lines().filter(|l| l.contains("Kafka flush")) {
        println!("relay: {l}");
    }
    println!(
        "relay exited with {code}; originals in Kafka: {}, requests the tracking server got: {}, app responses: {}",
        originals.len(),
        received.len(),
        responses.len()
    );
    if code != 0 {
        let _ = std::fs::remove_dir_all(&dir);
        bail!("relay exited with {code}");
    }

    // 8. The spool survives a relay kill.
    let res = spool_kill(&relay_bin, &dir, &kafka, upstream.addr);
    let _ = std::fs::remove_dir_all(&dir);
    res
}

/// Part two: a `delivery = "spool"` route with Kafka unreachable, so every original answered
/// 2xx exists only in relay's spool; relay is SIGKILLed in the middle of a batch, started
/// again on the same spool, Kafka comes back, and every acknowledged original arrives.
fn spool_kill(
    relay_bin: &Path,
    dir: &Path,
    kafka: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    upstream: SocketAddr,
) -> Result<()> {
    const SPOOL_TOPIC: &str = "app-log-spooled";
    const BATCH: usize = 400;
    println!("\n=== the spool survives a relay kill ===");
    kafka
        .create_topic(SPOOL_TOPIC, 1, 1)
        .context("create the spool topic")?;
    let brokers = kafka.bootstrap_servers();
    let spool_dir = dir.join("spool");
    let config = spool_config(upstream, &brokers, SPOOL_TOPIC, &spool_dir);
    println!("config:\n{}", indent(&config));
    kafka.broker_down(1).context("take the mock broker down")?;
    println!("Kafka is down: an original answered 2xx now exists only in relay's spool");
    let relay = RelayProc::start(relay_bin, dir, &config)?;
    let addr = relay.addr;
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let sender = {
        let acked = acked.clone();
        std::thread::spawn(move || -> Result<()> {
            let mut conn = TcpStream::connect(addr)?;
            conn.set_read_timeout(Some(Duration::from_secs(10)))?;
            let mut reader = BufReader::new(conn.try_clone()?);
            for i in 0..BATCH {
                let id = format!("demo-spool-{i:04}");
                let body = format!("{{\"event\":\"page_view\",\"n\":{i}}}");
                let req = format!(
                    "POST /v1/logs HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\nX-Request-Id: {id}\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                // The kill ends the connection: the rest of the batch was never answered.
                if conn.write_all(req.as_bytes()).is_err() {
                    break;
                }
                match read_response(&mut reader) {
                    Ok(r) if (200..300).contains(&r.status) => acked.lock().unwrap().push(id),
                    Ok(r) => bail!("unexpected HTTP {} for {id}", r.status),
                    Err(_) => break,
                }
            }
            Ok(())
        })
    };
    let start = Instant::now();
    while acked.lock().unwrap().len() < BATCH / 4 {
        if sender.is_finished() {
            let log = std::fs::read_to_string(dir.join("relay.log")).unwrap_or_default();
            sender
                .join()
                .map_err(|_| anyhow!("the app thread panicked"))?
                .with_context(|| format!("relay log:\n{log}"))?;
            bail!(
                "the app stopped after {} answers",
                acked.lock().unwrap().len()
            );
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!(
                "relay answered only {} requests in 60 s",
                acked.lock().unwrap().len()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let pid = relay.pid();
    Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()?;
    drop(relay);
    sender
        .join()
        .map_err(|_| anyhow!("the app thread panicked"))??;
    let acked = acked.lock().unwrap().clone();
    println!(
        "relay SIGKILLed (pid {pid}) mid-batch: {} of {BATCH} requests had been answered 2xx, the rest never were",
        acked.len()
    );
    let relay = RelayProc::start(relay_bin, dir, &config)?;
    let log = std::fs::read_to_string(dir.join("relay.log")).unwrap_or_default();
    for l in log.lines().filter(|l| l.contains("spool opened")) {
        println!("relay (restarted): {l}");
    }
    kafka.broker_up(1).context("bring the mock broker back")?;
    println!("Kafka is back: relay replays what Kafka never acknowledged");
    let got = read_topic_named(&brokers, SPOOL_TOPIC, acked.len())?;
    let ids: std::collections::HashSet<&str> = got
        .iter()
        .filter_map(|o| o.header("relay-request-id"))
        .collect();
    let missing: Vec<&String> = acked
        .iter()
        .filter(|id| !ids.contains(id.as_str()))
        .collect();
    println!(
        "originals in Kafka: {} records, {} distinct request ids; answered 2xx and missing: {}",
        got.len(),
        ids.len(),
        missing.len()
    );
    drop(relay);
    if !missing.is_empty() {
        bail!(
            "{} originals answered 2xx are missing, e.g. {}",
            missing.len(),
            missing[0]
        );
    }
    println!("every original answered 2xx before the kill reached Kafka");
    Ok(())
}

fn spool_config(upstream: SocketAddr, brokers: &str, topic: &str, spool: &Path) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
workers = 1

[[upstreams]]
name = "tracking"
nodes = ["{upstream}"]

[[routes]]
name = "app-logs"
path = "/v1/logs"
methods = ["POST"]
upstream = "tracking"
topic = "{topic}"

[kafka]
brokers = "{brokers}"
delivery = "spool"
[kafka.properties]
"linger.ms" = "5"
"message.max.bytes" = "1049600"
"reconnect.backoff.max.ms" = "200"

[spool]
dir = "{}"
retry_ms = 200
"#,
        spool.display()
    )
}

fn sample_config(upstream: SocketAddr, brokers: &str) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
workers = 1

[[upstreams]]
name = "tracking"
nodes = ["{upstream}"]

[[routes]]
name = "app-logs"
path = "/v1/logs"
methods = ["POST"]
upstream = "tracking"
topic = "{TOPIC}"
key = "header:x-device-id"
pii = "default"

[pii.default]
fields = ["user_id", "device_id", "order_no", "email", "phone"]
headers = ["x-device-id"]
key_file = "pii.key"
key_id = "demo-2026"

[kafka]
brokers = "{brokers}"
queue_capacity = 1024
flush_timeout_ms = 10000
[kafka.properties]
"linger.ms" = "5"
"message.max.bytes" = "1049600"
"#
    )
}

fn request(device: &str, body: &[u8], chunked: bool) -> Vec<u8> {
    let mut r = format!(
        "POST /v1/logs HTTP/1.1\r\nHost: relay\r\nUser-Agent: demo-app/1.0\r\nContent-Type: application/json\r\nX-Device-Id: {device}\r\n"
    )
    .into_bytes();
    if chunked {
        r.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
        for part in body.chunks(23) {
            r.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
            r.extend_from_slice(part);
            r.extend_from_slice(b"\r\n");
        }
        r.extend_from_slice(b"0\r\n\r\n");
    } else {
        r.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        r.extend_from_slice(body);
    }
    r
}

/// A request or response: headers and de-chunked body.
#[derive(Clone, Debug)]
struct Msg {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Msg {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }
}

/// Reads a head (first line returned) and its body.
fn read_msg<R: BufRead>(r: &mut R) -> Result<Option<(String, Msg)>> {
    let mut first = String::new();
    if r.read_line(&mut first)? == 0 {
        return Ok(None);
    }
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
    }
    let mut m = Msg {
        status: 0,
        headers,
        body: Vec::new(),
    };
    if m.header("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"))
    {
        loop {
            let mut sz = String::new();
            r.read_line(&mut sz)?;
            let n = usize::from_str_radix(sz.trim().split(';').next().unwrap_or("0"), 16)?;
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            m.body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(cl) = m.header("content-length") {
        m.body.resize(cl.parse()?, 0);
        r.read_exact(&mut m.body)?;
    }
    Ok(Some((first.trim_end().to_string(), m)))
}

fn read_response<R: BufRead>(r: &mut R) -> Result<Msg> {
    let (line, mut m) = read_msg(r)?.ok_or_else(|| anyhow!("relay closed the connection"))?;
    m.status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok(m)
}

/// The tracking server: records every request; 400 for an empty event name, 202 otherwise.
struct Stub {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Msg>>>,
}

impl Stub {
    fn start() -> Result<Stub> {
        let l = TcpListener::bind("127.0.0.1:0")?;
        let addr = l.local_addr()?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let rec = received.clone();
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                let rec = rec.clone();
                std::thread::spawn(move || {
                    let mut w = match c.try_clone() {
                        Ok(w) => w,
                        Err(_) => return,
                    };
                    let mut r = BufReader::new(c);
                    while let Ok(Some((_, m))) = read_msg(&mut r) {
                        let n = {
                            let mut g = rec.lock().unwrap();
                            g.push(m.clone());
                            g.len()
                        };
                        let (status, body) =
                            if String::from_utf8_lossy(&m.body).contains("\"event\":\"\"") {
                                (
                                    "400 Bad Request",
                                    r#"{"error":"event name is empty"}"#.to_string(),
                                )
                            } else {
                                (
                                    "202 Accepted",
                                    format!(r#"{{"accepted":true,"tracking_id":"trk-{n:04}"}}"#),
                                )
                            };
                        let resp = format!(
                            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nX-Tracker: stub\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if w.write_all(resp.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Ok(Stub { addr, received })
    }
}

/// The relay child process; killed on drop.
struct RelayProc {
    child: Option<Child>,
    addr: SocketAddr,
}

impl RelayProc {
    fn start(bin: &Path, dir: &Path, config: &str) -> Result<RelayProc> {
        let cfg = dir.join("relay.toml");
        let ready = dir.join("ready.json");
        let _ = std::fs::remove_file(&ready);
        std::fs::write(&cfg, config)?;
        let log = std::fs::File::create(dir.join("relay.log"))?;
        let mut child = Command::new(bin)
            .arg("run")
            .arg("--config")
            .arg(&cfg)
            .arg("--ready-file")
            .arg(&ready)
            .env("RELAY_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let start = Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                    let addr = v["listen"]
                        .as_str()
                        .ok_or_else(|| anyhow!("no listen in {text}"))?
                        .parse()?;
                    return Ok(RelayProc {
                        child: Some(child),
                        addr,
                    });
                }
            }
            if let Some(st) = child.try_wait()? {
                let log = std::fs::read_to_string(dir.join("relay.log")).unwrap_or_default();
                bail!("relay exited ({st}) before becoming ready:\n{log}");
            }
            if start.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                bail!("relay did not become ready within 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id.
    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// SIGTERM, then the exit code.
    fn terminate(&mut self) -> Result<i32> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("relay already stopped"))?;
        Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()?;
        let start = Instant::now();
        loop {
            if let Some(st) = child.try_wait()? {
                return Ok(st.code().unwrap_or(-1));
            }
            if start.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                bail!("relay did not stop within 60 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RelayProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One record read back from Kafka.
struct Original {
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    timestamp_ms: i64,
    headers: Vec<(String, String)>,
}

impl Original {
    fn header(&self, k: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

fn read_topic(brokers: &str, want: usize) -> Result<Vec<Original>> {
    read_topic_named(brokers, TOPIC, want)
}

fn read_topic_named(brokers: &str, topic: &str, want: usize) -> Result<Vec<Original>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "relay-demo")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)?;
    consumer.assign(&tpl)?;
    let mut out = Vec::new();
    let start = Instant::now();
    while out.len() < want && start.elapsed() < Duration::from_secs(60) {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m?;
            out.push(Original {
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                timestamp_ms: m.timestamp().to_millis().unwrap_or(0),
                headers: m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|x| {
                                (
                                    x.key.to_string(),
                                    String::from_utf8_lossy(x.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            });
        }
    }
    if out.len() < want {
        bail!("only {} of {want} originals arrived in {topic}", out.len());
    }
    Ok(out)
}

/// The bytes as text, exactly (wrapped for display only).
fn raw(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn wrap(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in s.lines() {
        let chars: Vec<char> = line.chars().collect();
        if chars.is_empty() {
            out.push(String::new());
        }
        for c in chars.chunks(WIDTH) {
            out.push(c.iter().collect());
        }
    }
    out
}

fn side_by_side(lt: &str, left: &str, rt: &str, right: &str) {
    let (l, r) = (wrap(left), wrap(right));
    println!("{lt:<WIDTH$} | {rt}");
    println!("{:-<WIDTH$}-+-{:-<WIDTH$}", "", "");
    for i in 0..l.len().max(r.len()) {
        let a = l.get(i).map(String::as_str).unwrap_or("");
        let b = r.get(i).map(String::as_str).unwrap_or("");
        println!("{a:<WIDTH$} | {b}");
    }
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}\n")).collect()
}
