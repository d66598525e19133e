//! Kafka brokers for tests (librdkafka's mock cluster, a tansu child process) and a read-back
//! consumer. No dependency on relay: the black-box suites in `tests/` include this file too.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

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
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    /// The port it advertises in metadata (`port`, or a proxy's).
    advertised: u16,
    child: Option<Child>,
    log: PathBuf,
    topics: std::sync::Mutex<Vec<String>>,
    _dir: tempfile::TempDir,
}

impl Tansu {
    /// Starts tansu on a free port and waits until it accepts TCP connections.
    pub fn start() -> Tansu {
        let port = free_port();
        Tansu::start_advertising(port, port)
    }

    /// Starts tansu on `port`, advertising `advertised` to clients (a proxy in front of it).
    pub fn start_advertising(port: u16, advertised: u16) -> Tansu {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("tansu.log");
        let mut t = Tansu {
            port,
            advertised,
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
        let adv = format!("tcp://127.0.0.1:{}", self.advertised);
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
                &adv,
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

    /// Freezes the broker process (SIGSTOP): connections stay open but nothing is answered,
    /// and its state (topics, records, producer ids) survives [`resume`](Self::resume).
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Thaws a [`pause`](Self::pause)d broker (SIGCONT).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("tansu running").id().to_string();
        let st = Command::new("kill")
            .args([&format!("-{sig}"), &pid])
            .status()
            .unwrap();
        assert!(st.success(), "kill -{sig} {pid}");
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
    /// The partition it was read from.
    pub partition: i32,
    /// The record key.
    pub key: Option<Vec<u8>>,
    /// The record value.
    pub payload: Vec<u8>,
    /// The record timestamp, in ms since the epoch.
    pub timestamp_ms: Option<i64>,
    /// Whether the timestamp is CreateTime (not LogAppendTime).
    pub create_time: bool,
    /// The record headers, in order.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl ReadBack {
    /// The value of the record header named `k`, if any.
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
    /// librdkafka properties this broker needs.
    fn properties(&self) -> Vec<(&'static str, &'static str)> {
        Vec::new()
    }
}

/// tansu, "stopped" with SIGSTOP and brought back with SIGCONT: the process keeps its state.
impl Broker for Tansu {
    fn bootstrap(&self) -> String {
        Tansu::bootstrap(self)
    }
    fn stop(&mut self) {
        self.pause()
    }
    fn start(&mut self) {
        self.resume()
    }
    fn keeps_data(&self) -> bool {
        true
    }
    fn create_topic(&self, topic: &str) {
        Tansu::create_topic(self, topic)
    }
}

/// tansu killed (SIGKILL) and started again on the same port. Its memory storage loses
/// everything, producer ids included, and tansu answers an idempotent producer's retried
/// batches with UNKNOWN_PRODUCER_ID forever (librdkafka bumps the epoch, KIP-360, and tansu
/// never accepts it), so this variant runs with `enable.idempotence = false`.
pub struct TansuRestart(pub Tansu);

impl TansuRestart {
    /// The librdkafka properties a producer needs to survive this broker's restart.
    pub const PROPERTIES: &'static [(&'static str, &'static str)] =
        &[("enable.idempotence", "false")];
}

impl Broker for TansuRestart {
    fn bootstrap(&self) -> String {
        self.0.bootstrap()
    }
    fn stop(&mut self) {
        self.0.stop()
    }
    fn start(&mut self) {
        self.0.restart()
    }
    fn keeps_data(&self) -> bool {
        false
    }
    fn create_topic(&self, topic: &str) {
        self.0.create_topic(topic)
    }
    fn properties(&self) -> Vec<(&'static str, &'static str)> {
        TansuRestart::PROPERTIES.to_vec()
    }
}

/// librdkafka's mock cluster (one broker, id 1).
pub struct Mock(
    pub rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
);

impl Default for Mock {
    fn default() -> Mock {
        Mock::new()
    }
}

impl Mock {
    /// A new mock cluster.
    pub fn new() -> Mock {
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

/// A Kafka-protocol-aware TCP proxy in front of a broker that can hold back Produce requests
/// (api key 0) while every other request (Metadata, Fetch, ...) passes: with the gate closed a
/// producer's records stop reaching the broker, while a consumer can still read everything
/// the broker has. Responses are counted per connection in request order (Kafka answers in
/// order), so [`produce_in_flight`](Self::produce_in_flight) says how many forwarded Produce
/// requests the broker has not answered yet.
pub struct ProduceGate {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    state: std::sync::Arc<GateState>,
}

#[derive(Default)]
struct GateState {
    closed: std::sync::atomic::AtomicBool,
    stop: std::sync::atomic::AtomicBool,
    in_flight: std::sync::atomic::AtomicUsize,
    forwarded: std::sync::atomic::AtomicUsize,
}

/// One proxied connection's requests awaiting an answer (api keys, in order); `None` once the
/// connection is dead.
type Pending = std::sync::Arc<std::sync::Mutex<Option<std::collections::VecDeque<i16>>>>;

const PRODUCE: i16 = 0;

impl ProduceGate {
    /// Listens on a free port and forwards every connection to `127.0.0.1:broker_port`
    /// (connecting when the client does; a broker that is down closes the client at once).
    pub fn start(broker_port: u16) -> ProduceGate {
        use std::sync::atomic::Ordering::SeqCst;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        l.set_nonblocking(true).unwrap();
        let state = std::sync::Arc::new(GateState::default());
        let st = state.clone();
        std::thread::spawn(move || {
            while !st.stop.load(SeqCst) {
                match l.accept() {
                    Ok((c, _)) => {
                        c.set_nonblocking(false).unwrap();
                        let _ = c.set_nodelay(true);
                        match std::net::TcpStream::connect(("127.0.0.1", broker_port)) {
                            Ok(b) => {
                                let _ = b.set_nodelay(true);
                                proxy(c, b, st.clone());
                            }
                            Err(_) => drop(c),
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        ProduceGate { port, state }
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Holds every Produce request from now on (the connection carrying one stalls).
    pub fn close(&self) {
        self.state
            .closed
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Lets Produce requests through again.
    pub fn open(&self) {
        self.state
            .closed
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Produce requests forwarded to the broker and not answered yet (on live connections).
    pub fn produce_in_flight(&self) -> usize {
        self.state
            .in_flight
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Produce requests forwarded to the broker so far.
    pub fn produce_forwarded(&self) -> usize {
        self.state
            .forwarded
            .load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for ProduceGate {
    fn drop(&mut self) {
        self.state
            .stop
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Reads one size-prefixed Kafka frame.
fn read_frame(r: &mut impl std::io::Read) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let n = i32::from_be_bytes(len);
    if !(0..=(256 << 20)).contains(&n) {
        return Err(std::io::Error::other("bad frame length"));
    }
    let mut f = vec![0u8; 4 + n as usize];
    f[..4].copy_from_slice(&len);
    r.read_exact(&mut f[4..])?;
    Ok(f)
}

/// Forwards one connection both ways until either side ends.
fn proxy(client: std::net::TcpStream, broker: std::net::TcpStream, st: std::sync::Arc<GateState>) {
    use std::io::Write;
    use std::sync::atomic::Ordering::SeqCst;
    let pending: Pending = std::sync::Arc::new(std::sync::Mutex::new(Some(Default::default())));
    let kill = {
        let (c, b) = (client.try_clone().unwrap(), broker.try_clone().unwrap());
        let (pending, st) = (pending.clone(), st.clone());
        std::sync::Arc::new(move || {
            let _ = c.shutdown(std::net::Shutdown::Both);
            let _ = b.shutdown(std::net::Shutdown::Both);
            // Requests of a dead connection are never answered.
            if let Some(q) = pending.lock().unwrap().take() {
                let n = q.iter().filter(|k| **k == PRODUCE).count();
                st.in_flight.fetch_sub(n, SeqCst);
            }
        })
    };
    let kill2 = kill.clone();
    let (mut c_in, mut b_out) = (client.try_clone().unwrap(), broker.try_clone().unwrap());
    let (p_up, st_up) = (pending.clone(), st.clone());
    std::thread::spawn(move || {
        while let Ok(f) = read_frame(&mut c_in) {
            let key = if f.len() >= 6 {
                i16::from_be_bytes([f[4], f[5]])
            } else {
                -1
            };
            if key == PRODUCE {
                while st_up.closed.load(SeqCst) && !st_up.stop.load(SeqCst) {
                    if p_up.lock().unwrap().is_none() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            {
                let mut q = p_up.lock().unwrap();
                let Some(q) = q.as_mut() else { return };
                q.push_back(key);
                if key == PRODUCE {
                    st_up.in_flight.fetch_add(1, SeqCst);
                    st_up.forwarded.fetch_add(1, SeqCst);
                }
            }
            if b_out.write_all(&f).is_err() {
                break;
            }
        }
        kill();
    });
    let (mut b_in, mut c_out) = (broker, client);
    std::thread::spawn(move || {
        while let Ok(f) = read_frame(&mut b_in) {
            {
                let mut q = pending.lock().unwrap();
                let Some(q) = q.as_mut() else { break };
                if q.pop_front() == Some(PRODUCE) {
                    st.in_flight.fetch_sub(1, SeqCst);
                }
            }
            if c_out.write_all(&f).is_err() {
                break;
            }
        }
        kill2();
    });
}

/// tansu behind a [`ProduceGate`]: clients bootstrap through the gate and tansu advertises
/// the gate's address, so every connection (producer and consumer) goes through it.
pub struct GatedTansu {
    /// The gate clients connect to.
    pub gate: ProduceGate,
    /// The broker behind it.
    pub tansu: Tansu,
}

impl GatedTansu {
    /// Starts the gate (open) and tansu behind it.
    pub fn start() -> GatedTansu {
        let port = free_port();
        let gate = ProduceGate::start(port);
        let tansu = Tansu::start_advertising(port, gate.port);
        GatedTansu { gate, tansu }
    }

    /// The gate's address, for clients.
    pub fn bootstrap(&self) -> String {
        self.gate.addr()
    }
}
