//! Shared by the `kafka_*` suites: a tansu broker child process, a read-back consumer, and
//! bounded polling.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use relay::kafka::OriginalRecord;

/// Logs to the test output, filtered by `RUST_LOG` (default: warn).
pub fn init_log() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Polls `f` every 20 ms until it is true or `limit` passes; panics with `what` on timeout.
pub fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A free TCP port on 127.0.0.1 (bound to 0, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Where `tansu` is: `$TANSU`, `~/.cargo/bin/tansu`, or PATH.
pub fn tansu_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TANSU") {
        return Some(p.into());
    }
    let home = std::env::var_os("HOME").map(PathBuf::from)?;
    let p = home.join(".cargo/bin/tansu");
    if p.exists() {
        return Some(p);
    }
    let out = Command::new("sh")
        .arg("-c")
        .arg("command -v tansu")
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!s.is_empty()).then(|| s.into())
}

/// A tansu broker child on a fixed (free) port, killed on drop. `stop` and `start` keep the
/// port, so clients reconnect to the same address (memory storage: a restart loses data, so
/// tests read back only what was produced to the running instance).
pub struct Tansu {
    pub port: u16,
    child: Option<Child>,
    log: PathBuf,
    topics: std::sync::Mutex<Vec<String>>,
    _dir: tempfile::TempDir,
}

impl Tansu {
    /// Starts tansu on a free port and waits until it accepts TCP connections.
    pub fn start() -> Tansu {
        init_log();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("tansu.log");
        let mut t = Tansu {
            port: free_port(),
            child: None,
            log,
            topics: Default::default(),
            _dir: dir,
        };
        t.restart();
        t
    }

    /// `host:port` for clients.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the broker (SIGKILL) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// (Re)starts the broker on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let bin = tansu_bin().expect("tansu is not installed: run `cargo xtask setup`");
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .expect("spawn tansu");
        self.child = Some(child);
        let addr = self.bootstrap();
        let log = self.log.clone();
        wait_for(
            &format!("tansu on {addr} (log {})", log.display()),
            Duration::from_secs(30),
            || std::net::TcpStream::connect(&addr).is_ok(),
        );
        // Memory storage: a restarted broker has no topics; tansu does not auto-create them.
        let topics = self.topics.lock().unwrap().clone();
        for t in topics {
            self.create(&t);
        }
    }

    /// Creates `topic` (3 partitions) with `tansu topic create`; remembered for restarts.
    pub fn create_topic(&self, topic: &str) {
        self.create(topic);
        self.topics.lock().unwrap().push(topic.to_string());
    }

    fn create(&self, topic: &str) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let out = Command::new(tansu_bin().unwrap())
            .args([
                "topic",
                "create",
                topic,
                "--partitions",
                "3",
                "--broker",
                &url,
            ])
            .output()
            .expect("tansu topic create");
        assert!(
            out.status.success(),
            "tansu topic create {topic}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One record read back from Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadBack {
    pub partition: i32,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub timestamp_ms: Option<i64>,
    pub create_time: bool,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl ReadBack {
    pub fn header(&self, k: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| &v[..])
    }
}

/// Reads `topic` from the beginning of every partition until `want` records arrived (or
/// `limit` passed), then returns what was read.
pub fn read_topic(bootstrap: &str, topic: &str, want: usize, limit: Duration) -> Vec<ReadBack> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("relay-test-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    let start = Instant::now();
    let md = loop {
        match consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            Ok(md)
                if md
                    .topics()
                    .first()
                    .is_some_and(|t| !t.partitions().is_empty() && t.error().is_none()) =>
            {
                break md
            }
            other => {
                assert!(
                    start.elapsed() < limit,
                    "no metadata for {topic}: {other:?}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    let mut tpl = TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    while out.len() < want && start.elapsed() < limit {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let (ts, ct) = match m.timestamp() {
                    rdkafka::Timestamp::CreateTime(t) => (Some(t), true),
                    rdkafka::Timestamp::LogAppendTime(t) => (Some(t), false),
                    rdkafka::Timestamp::NotAvailable => (None, false),
                };
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|x| {
                                (
                                    x.key.to_string(),
                                    x.value.map(|v| v.to_vec()).unwrap_or_default(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(ReadBack {
                    partition: m.partition(),
                    key: m.key().map(|k| k.to_vec()),
                    payload: m.payload().map(|p| p.to_vec()).unwrap_or_default(),
                    timestamp_ms: ts,
                    create_time: ct,
                    headers,
                });
            }
            Some(Err(e)) => eprintln!("consumer: {e}"),
            None => {}
        }
    }
    out
}

/// A sample original: distinct payload (binary bytes included), key, timestamp and headers.
pub fn sample(topic: &Arc<str>, i: usize) -> OriginalRecord {
    let mut payload = format!(
        "{{\"event\":\"view\",\"user_id\":\"u-{i}\",\"n\":{i},\"note\":\"caf\u{e9} \\\"q\\\"\"}}\n"
    )
    .into_bytes();
    payload.extend_from_slice(&[0, 0xff, 0xfe, b'\r', b'\n']);
    OriginalRecord {
        topic: topic.clone(),
        key: (i % 3 >= 1).then(|| format!("device-{}", i % 7).into_bytes()),
        payload,
        timestamp_ms: 1_700_000_000_000 + i as i64,
        route: "app-logs".into(),
        request_id: format!("req-{i:06}"),
        content_type: (i % 2 < 1).then(|| "application/json".to_string()),
        key_id: (i % 4 != 3).then(|| "k2026".to_string()),
    }
}

/// Asserts that `got` holds exactly `sent` (any order): bytes, key, CreateTime, headers.
pub fn assert_same_records(sent: &[OriginalRecord], got: &[ReadBack]) {
    assert_eq!(got.len(), sent.len(), "count in Kafka != records accepted");
    let mut by_id = std::collections::HashMap::new();
    for g in got {
        let id = String::from_utf8(
            g.header("relay-request-id")
                .expect("relay-request-id header")
                .to_vec(),
        )
        .unwrap();
        assert!(
            by_id.insert(id.clone(), g).is_none(),
            "duplicate record {id} in Kafka"
        );
    }
    for s in sent {
        let g = by_id
            .get(&s.request_id)
            .unwrap_or_else(|| panic!("{} missing from Kafka", s.request_id));
        assert_eq!(g.payload, s.payload, "payload of {}", s.request_id);
        assert_eq!(g.key, s.key, "key of {}", s.request_id);
        assert_eq!(
            g.timestamp_ms,
            Some(s.timestamp_ms),
            "timestamp of {}",
            s.request_id
        );
        assert!(
            g.create_time,
            "timestamp type of {} is not CreateTime",
            s.request_id
        );
        assert_eq!(g.header("relay-route"), Some(s.route.as_bytes()));
        assert_eq!(
            g.header("content-type"),
            s.content_type.as_deref().map(str::as_bytes)
        );
        assert_eq!(
            g.header("relay-key-id"),
            s.key_id.as_deref().map(str::as_bytes)
        );
        let n = 2 + usize::from(s.content_type.is_some()) + usize::from(s.key_id.is_some());
        assert_eq!(
            g.headers.len(),
            n,
            "headers of {}: {:?}",
            s.request_id,
            g.headers
        );
    }
}

/// A broker the scenarios can stop and bring back.
pub trait Broker {
    /// `host:port[,...]`.
    fn bootstrap(&self) -> String;
    /// Makes the broker unreachable.
    fn stop(&mut self);
    /// Brings it back on the same address.
    fn start(&mut self);
    /// Whether records written before `stop` are still there after `start`.
    fn keeps_data(&self) -> bool;
    /// Prepares `topic` (create it where the broker does not auto-create).
    fn create_topic(&self, topic: &str);
}

impl Broker for Tansu {
    fn bootstrap(&self) -> String {
        Tansu::bootstrap(self)
    }
    fn stop(&mut self) {
        Tansu::stop(self)
    }
    fn start(&mut self) {
        self.restart()
    }
    fn keeps_data(&self) -> bool {
        false
    }
    fn create_topic(&self, topic: &str) {
        Tansu::create_topic(self, topic)
    }
}

/// librdkafka's mock cluster (one broker, id 1).
pub struct Mock(
    pub rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
);

impl Mock {
    pub fn new() -> Mock {
        init_log();
        Mock(rdkafka::mocking::MockCluster::new(1).expect("mock cluster"))
    }
}

impl Broker for Mock {
    fn bootstrap(&self) -> String {
        self.0.bootstrap_servers()
    }
    fn stop(&mut self) {
        self.0.broker_down(-1).unwrap()
    }
    fn start(&mut self) {
        self.0.broker_up(-1).unwrap()
    }
    fn keeps_data(&self) -> bool {
        true
    }
    fn create_topic(&self, topic: &str) {
        self.0.create_topic(topic, 3, 1).unwrap()
    }
}

use relay::kafka::{FlushReport, KafkaConfig, KafkaPath, KafkaRejected};

const LONG: Duration = Duration::from_secs(120);

fn test_config(b: &dyn Broker) -> KafkaConfig {
    let mut cfg = KafkaConfig::new(b.bootstrap());
    for (k, v) in [
        ("linger.ms", "5"),
        ("reconnect.backoff.max.ms", "500"),
        ("retry.backoff.max.ms", "500"),
    ] {
        cfg.properties.insert(k.into(), v.into());
    }
    cfg
}

/// Sends `n` records from `threads` threads, waits for every delivery report, shuts down, reads
/// the topic back and compares. Returns the flush report.
pub fn roundtrip(b: &dyn Broker, topic: &str, n: usize, threads: usize) -> FlushReport {
    b.create_topic(topic);
    let topic: Arc<str> = topic.into();
    let path = KafkaPath::start(&test_config(b)).expect("start");
    let sent: Vec<OriginalRecord> = (0..n).map(|i| sample(&topic, i)).collect();
    std::thread::scope(|s| {
        for chunk in sent.chunks(n.div_ceil(threads)) {
            let tx = path.sender();
            s.spawn(move || {
                for r in chunk {
                    tx.try_send(r.clone()).expect("queue has room");
                }
            });
        }
    });
    let stats = path.stats();
    wait_for("every delivery report", LONG, || {
        stats.delivered_total() + stats.failed_total() == n as u64
    });
    let report = path.shutdown(Duration::from_secs(30));
    assert_eq!(
        report,
        FlushReport {
            enqueued: n as u64,
            delivered: n as u64,
            failed: 0,
            pending: 0
        }
    );
    let t = stats.topics();
    assert_eq!(t.len(), 1);
    assert_eq!((t[0].enqueued, t[0].delivered), (n as u64, n as u64));
    assert_eq!(t[0].latency.count, n as u64);
    assert!(t[0].failed.iter().all(|(_, c)| *c == 0));
    let got = read_topic(&b.bootstrap(), &topic, n, LONG);
    assert_same_records(&sent, &got);
    report
}

/// Broker stopped + small queue: exactly `capacity` records are accepted, then `try_send`
/// refuses; the broker comes back: everything accepted is delivered and new records flow.
/// Returns (accepted, rejected, report).
pub fn backpressure(b: &mut dyn Broker, topic: &str) -> (u64, u64, FlushReport) {
    const CAP: usize = 8;
    b.create_topic(topic);
    let topic: Arc<str> = topic.into();
    let mut cfg = test_config(b);
    cfg.queue_capacity = CAP;
    cfg.retry_after_s = 2;
    let path = KafkaPath::start(&cfg).expect("start");
    let tx = path.sender();
    let stats = path.stats();
    // Warm up: connection, producer id, metadata.
    let mut seq = 0;
    let mut next = || {
        seq += 1;
        sample(&topic, seq)
    };
    let first = next();
    tx.try_send(first.clone()).unwrap();
    wait_for("the first delivery", LONG, || stats.delivered_total() == 1);
    assert!(path.is_accepting().is_ok());

    b.stop();
    let mut after_stop = Vec::new();
    let mut rejected = 0;
    for _ in 0..CAP + 5 {
        let r = next();
        match tx.try_send(r.clone()) {
            Ok(()) => after_stop.push(r),
            Err(e) => {
                assert_eq!(e, KafkaRejected { retry_after_s: 2 });
                rejected += 1;
            }
        }
    }
    assert_eq!(after_stop.len(), CAP, "accepted while the broker is down");
    assert_eq!(rejected, 5);
    assert_eq!(stats.depth(), CAP as u64);
    assert_eq!(stats.rejected_full_total(), 5);
    let why = path.is_accepting().expect_err("full");
    assert!(why.contains("full"), "{why}");

    b.start();
    wait_for(
        "the queued records to be delivered after the broker came back",
        LONG,
        || stats.delivered_total() == 1 + CAP as u64,
    );
    assert!(path.is_accepting().is_ok());
    let mut later = Vec::new();
    for _ in 0..5 {
        let r = next();
        tx.try_send(r.clone()).expect("flows again");
        later.push(r);
    }
    wait_for("the new records", LONG, || {
        stats.delivered_total() == 1 + CAP as u64 + 5
    });
    let report = path.shutdown(Duration::from_secs(30));
    let accepted = (1 + CAP + 5) as u64;
    assert_eq!(
        report,
        FlushReport {
            enqueued: accepted,
            delivered: accepted,
            failed: 0,
            pending: 0
        }
    );
    let mut expect = Vec::new();
    if b.keeps_data() {
        expect.push(first);
    }
    expect.extend(after_stop);
    expect.extend(later);
    let got = read_topic(&b.bootstrap(), &topic, expect.len(), LONG);
    assert_same_records(&expect, &got);
    (accepted, rejected, report)
}

/// Broker down at shutdown: the flush deadline passes and the report counts every accepted
/// record as pending.
pub fn shutdown_with_broker_down(b: &mut dyn Broker, topic: &str) -> FlushReport {
    b.create_topic(topic);
    let topic: Arc<str> = topic.into();
    let path = KafkaPath::start(&test_config(b)).expect("start");
    let tx = path.sender();
    let stats = path.stats();
    tx.try_send(sample(&topic, 0)).unwrap();
    wait_for("the first delivery", LONG, || stats.delivered_total() == 1);
    b.stop();
    for i in 1..=10 {
        tx.try_send(sample(&topic, i)).unwrap();
    }
    let report = path.shutdown(Duration::from_millis(300));
    b.start();
    assert_eq!(
        report,
        FlushReport {
            enqueued: 11,
            delivered: 1,
            failed: 0,
            pending: 10
        }
    );
    assert!(report.lost_any());
    report
}

/// SIGTERM-like shutdown under load: records still queued when shutdown starts are all
/// delivered before it returns.
pub fn shutdown_flushes_under_load(b: &dyn Broker, topic: &str, n: usize) -> FlushReport {
    b.create_topic(topic);
    let topic: Arc<str> = topic.into();
    let path = KafkaPath::start(&test_config(b)).expect("start");
    let tx = path.sender();
    let sent: Vec<OriginalRecord> = (0..n).map(|i| sample(&topic, i)).collect();
    for r in &sent {
        tx.try_send(r.clone()).expect("room");
    }
    // No waiting: shut down with (nearly) everything still queued or in flight.
    let report = path.shutdown(Duration::from_secs(60));
    assert_eq!(
        report,
        FlushReport {
            enqueued: n as u64,
            delivered: n as u64,
            failed: 0,
            pending: 0
        }
    );
    let got = read_topic(&b.bootstrap(), &topic, n, LONG);
    assert_same_records(&sent, &got);
    report
}
