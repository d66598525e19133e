//! Black-box reconciliation of the delivery modes against the built relay, a real tansu broker
//! and a stub upstream, counted from outside: the client's 2xx request ids against the ids read
//! back from the topic (header `relay-request-id`).
//!
//! - spool: relay SIGKILLed mid-load and restarted on the same spool: every id answered 2xx is
//!   in the topic at the end;
//! - spool: the broker frozen (SIGSTOP) for 60 s mid-load and thawed: 2xx throughout, same;
//! - ack: the broker frozen for 60 s: requests Kafka did not acknowledge get 503
//!   `kafka_unavailable`, every id answered 2xx is in the topic;
//! - spool and ack: the broker SIGKILLed and started again mid-load (its memory storage
//!   empty): every id answered 2xx is in the topic (read before the kill or after), duplicates
//!   counted apart;
//! - spool on a small tmpfs: `max_bytes` reached → 503 `spool_full` + Retry-After, the disk
//!   itself full → 503 `spool_unavailable` and /readyz 503; nothing refused was forwarded;
//!   everything answered 2xx is in the topic once the broker is back;
//! - spool and ack with a topic the broker does not have: refused (503 `kafka_unavailable`),
//!   /readyz names the error, never a 2xx whose original is lost;
//! - an oversize original: `relay check` refuses the config and names the value to raise.
//!
//! Each test is bounded (tens of seconds) and waits on conditions, never on sleeps alone.

use relay_e2e::broker;

use std::collections::HashSet;
use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use broker::{read_topic, Tansu};
use relay_e2e::{read_response, relay_bin, Behavior, Relay, StubUpstream};

const TOPIC: &str = "spool-topic";
const LONG: Duration = Duration::from_secs(60);
/// How long the broker stays frozen (issue 12: "the broker stopped for 60 s").
const FREEZE: Duration = Duration::from_secs(60);

fn tansu() -> Tansu {
    assert!(
        broker::tansu_bin().is_some(),
        "tansu is not installed: run `cargo xtask setup`"
    );
    let t = Tansu::start();
    t.create_topic(TOPIC);
    t
}

/// A relay config: 2 workers, one route to `topic` with `delivery`, the spool in `spool_dir`.
fn config(
    upstream: SocketAddr,
    brokers: &str,
    topic: &str,
    delivery: &str,
    spool_dir: &Path,
    spool_extra: &str,
) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
workers = 2
shutdown_grace_ms = 5000
shutdown_budget_ms = 10000

[admin]
listen = "127.0.0.1:0"

[kafka]
brokers = "{brokers}"
delivery = "{delivery}"
retry_after_s = 2
flush_timeout_ms = 2000
[kafka.properties]
"linger.ms" = "2"
"reconnect.backoff.max.ms" = "200"
"retry.backoff.max.ms" = "200"
"message.max.bytes" = "1049600"
"topic.metadata.propagation.max.ms" = "1000"

[spool]
dir = "{dir}"
retry_ms = 300
{spool_extra}

[[upstreams]]
name = "tracking"
nodes = ["{upstream}"]

[[routes]]
name = "app-logs"
path = "/v1/logs"
methods = ["POST"]
upstream = "tracking"
topic = "{topic}"
"#,
        dir = spool_dir.display()
    )
}

/// What the load saw, by request id.
#[derive(Default)]
struct Seen {
    ok: Vec<String>,
    /// (id, status, error code)
    refused: Vec<(String, u16, String, Option<String>)>,
}

/// Client threads posting unique ids over keep-alive connections to whatever address `target`
/// holds; connection errors (relay killed) just reconnect. Only whole responses count.
struct Load {
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(target: Arc<Mutex<SocketAddr>>, threads: usize, prefix: &str, body: usize) -> Load {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..threads)
            .map(|t| {
                let (seen, stop, target) = (seen.clone(), stop.clone(), target.clone());
                let prefix = format!("{prefix}-{t}");
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    let mut conn: Option<BufReader<TcpStream>> = None;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let id = format!("{prefix}-{n:06}");
                        let payload = payload(&id, body);
                        if conn.is_none() {
                            let addr = *target.lock().unwrap();
                            match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                                Ok(s) => {
                                    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
                                    conn = Some(BufReader::new(s));
                                }
                                Err(_) => {
                                    std::thread::sleep(Duration::from_millis(20));
                                    continue;
                                }
                            }
                        }
                        let c = conn.as_mut().unwrap();
                        let head = format!(
                            "POST /v1/logs HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\nX-Request-Id: {id}\r\nContent-Length: {}\r\n\r\n",
                            payload.len()
                        );
                        let sent = c
                            .get_mut()
                            .write_all(head.as_bytes())
                            .and_then(|_| c.get_mut().write_all(&payload));
                        let resp = sent.ok().and_then(|_| read_response(c));
                        let Some(r) = resp else {
                            conn = None;
                            continue;
                        };
                        let mut s = seen.lock().unwrap();
                        if (200..300).contains(&r.status) {
                            s.ok.push(id);
                        } else {
                            let code = serde_json::from_slice::<serde_json::Value>(&r.body)
                                .ok()
                                .and_then(|v| v["error"].as_str().map(str::to_string))
                                .unwrap_or_default();
                            let retry = r.header("retry-after").map(str::to_string);
                            s.refused.push((id, r.status, code, retry));
                            drop(s);
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        if r.header("connection") == Some("close") {
                            conn = None;
                        }
                    }
                })
            })
            .collect();
        Load {
            seen,
            stop,
            threads,
        }
    }

    fn ok_count(&self) -> usize {
        self.seen.lock().unwrap().ok.len()
    }

    fn refused_count(&self, code: &str) -> usize {
        let s = self.seen.lock().unwrap();
        s.refused.iter().filter(|r| r.2 == code).count()
    }

    fn finish(mut self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

fn payload(id: &str, size: usize) -> Vec<u8> {
    let mut b = format!("{{\"event\":\"view\",\"id\":\"{id}\",\"pad\":\"").into_bytes();
    while b.len() + 2 < size {
        b.push(b'x');
    }
    b.extend_from_slice(b"\"}");
    b
}

fn ids_of(records: &[broker::ReadBack]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8(r.header("relay-request-id").unwrap().to_vec()).unwrap())
        .collect()
}

/// The request ids in `topic`: read until as many records as `expect` arrived; when some of
/// `expect` are not among them (duplicates took their place, or they are not there), read
/// everything the topic serves within 5 s. (Not by high watermarks: tansu's ListOffsets can
/// trail what a fetch returns.)
fn topic_ids(bootstrap: &str, topic: &str, expect: &[String]) -> Vec<String> {
    let ids = ids_of(&read_topic(bootstrap, topic, expect.len(), LONG));
    let set: HashSet<&String> = ids.iter().collect();
    if expect.iter().all(|e| set.contains(e)) {
        return ids;
    }
    ids_of(&read_topic(
        bootstrap,
        topic,
        usize::MAX,
        Duration::from_secs(5),
    ))
}

fn spool_records(relay: &Relay) -> f64 {
    (0..relay.workers)
        .map(|w| relay.metric(&format!("relay_spool_records{{worker=\"{w}\"}}")))
        .sum()
}

/// Waits until relay's spool holds no unacknowledged record (everything is in Kafka).
fn wait_spool_drained(relay: &Relay) {
    broker::wait_for("the spool to drain into Kafka", LONG, || {
        spool_records(relay) == 0.0
    });
}

/// Every id answered 2xx is in the topic; returns (2xx, records in topic, duplicates).
fn reconcile(ok: &[String], in_topic: &[String]) -> (usize, usize, usize) {
    let set: HashSet<&String> = in_topic.iter().collect();
    let missing: Vec<&String> = ok.iter().filter(|id| !set.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} ids answered 2xx are missing from Kafka, e.g. {:?}",
        missing.len(),
        ok.len(),
        &missing[..missing.len().min(5)]
    );
    (ok.len(), in_topic.len(), in_topic.len() - set.len())
}

fn wait_ok(load: &Load, n: usize) {
    let base = load.ok_count();
    broker::wait_for(&format!("{n} more 2xx answers"), LONG, || {
        load.ok_count() >= base + n
    });
}

#[test]
fn spool_sigkill_mid_load_loses_nothing_answered_2xx() {
    let b = tansu();
    let up = StubUpstream::start(Behavior::default());
    let spool = tempfile::tempdir().unwrap();
    let cfg = config(up.addr, &b.bootstrap(), TOPIC, "spool", spool.path(), "");
    let relay = Relay::start(&cfg);
    let target = Arc::new(Mutex::new(relay.addr));
    let load = Load::start(target.clone(), 4, "kill", 300);
    wait_ok(&load, 300);
    // SIGKILL at an arbitrary instant under load: group commits and deliveries in flight.
    relay.signal("KILL");
    drop(relay);
    let before_restart = load.ok_count();
    let relay = Relay::start(&cfg);
    *target.lock().unwrap() = relay.addr;
    wait_ok(&load, 300);
    let seen = load.finish();
    wait_spool_drained(&relay);
    let replayed: f64 = (0..relay.workers)
        .map(|w| {
            relay.metric(&format!(
                "relay_spool_replayed_records_total{{worker=\"{w}\"}}"
            ))
        })
        .sum();
    let ids = topic_ids(&b.bootstrap(), TOPIC, &seen.ok);
    let (ok, n, dup) = reconcile(&seen.ok, &ids);
    eprintln!(
        "spool SIGKILL: {ok} ids answered 2xx ({before_restart} before the kill), {n} records in Kafka ({dup} duplicates), {replayed} replayed after restart, {} refused",
        seen.refused.len()
    );
    assert!(seen.refused.is_empty(), "{:?}", &seen.refused[..1]);
}

#[test]
fn spool_broker_frozen_and_thawed_loses_nothing_answered_2xx() {
    let b = tansu();
    let up = StubUpstream::start(Behavior::default());
    let spool = tempfile::tempdir().unwrap();
    let cfg = config(up.addr, &b.bootstrap(), TOPIC, "spool", spool.path(), "");
    let relay = Relay::start(&cfg);
    let target = Arc::new(Mutex::new(relay.addr));
    let load = Load::start(target, 4, "freeze", 300);
    wait_ok(&load, 200);
    b.pause();
    let frozen = Instant::now();
    // The app keeps getting 2xx while Kafka is frozen (60 s, the issue's outage: longer than
    // librdkafka's request timeout): the originals are durable on disk.
    let mut during = 0;
    while frozen.elapsed() < FREEZE {
        wait_ok(&load, 100);
        during += 100;
    }
    let spooled = spool_records(&relay);
    assert!(
        spooled > 0.0,
        "records wait in the spool while Kafka is frozen"
    );
    b.resume();
    let held = frozen.elapsed();
    wait_ok(&load, 200);
    let seen = load.finish();
    wait_spool_drained(&relay);
    let ids = topic_ids(&b.bootstrap(), TOPIC, &seen.ok);
    let (ok, n, dup) = reconcile(&seen.ok, &ids);
    eprintln!(
        "spool broker frozen {held:?}: {ok} ids answered 2xx ({during}+ during the freeze), {spooled} unacknowledged in the spool while frozen, {n} records in Kafka ({dup} duplicates)"
    );
    assert!(seen.refused.is_empty(), "{:?}", &seen.refused[..1]);
}

#[test]
fn ack_broker_frozen_60s_refuses_unacknowledged_and_loses_nothing_answered_2xx() {
    let b = tansu();
    let up = StubUpstream::start(Behavior::default());
    let spool = tempfile::tempdir().unwrap();
    // Kafka's verdict within 10 s of a request: shorter than the client's 15 s read timeout.
    // Idempotence off: after records time out an idempotent producer bumps its epoch (KIP-360),
    // which tansu never accepts (see broker::TansuRestart), so nothing would flow after the thaw.
    let cfg = config(up.addr, &b.bootstrap(), TOPIC, "ack", spool.path(), "").replace(
        "[kafka.properties]\n",
        "[kafka.properties]\n\"message.timeout.ms\" = \"10000\"\n\"request.timeout.ms\" = \"5000\"\n\"enable.idempotence\" = \"false\"\n",
    );
    let relay = Relay::start(&cfg);
    let target = Arc::new(Mutex::new(relay.addr));
    let load = Load::start(target, 4, "ackfreeze", 300);
    wait_ok(&load, 200);
    b.pause();
    let frozen = Instant::now();
    // ack: nothing Kafka did not acknowledge is answered 2xx; while frozen the requests end in
    // 503 kafka_unavailable once their delivery times out.
    broker::wait_for("503 kafka_unavailable while frozen", LONG, || {
        load.refused_count("kafka_unavailable") > 0
    });
    while frozen.elapsed() < FREEZE {
        std::thread::sleep(Duration::from_millis(200));
    }
    let refused_frozen = load.refused_count("kafka_unavailable");
    b.resume();
    let held = frozen.elapsed();
    wait_ok(&load, 200);
    let seen = load.finish();
    let ids = topic_ids(&b.bootstrap(), TOPIC, &seen.ok);
    let (ok, n, dup) = reconcile(&seen.ok, &ids);
    let other: Vec<_> = seen
        .refused
        .iter()
        .filter(|r| r.2 != "kafka_unavailable")
        .collect();
    assert!(other.is_empty(), "{:?}", &other[..1]);
    assert!(seen
        .refused
        .iter()
        .all(|r| r.1 == 503 && r.3.as_deref() == Some("2")));
    eprintln!(
        "ack broker frozen {held:?}: {ok} ids answered 2xx, {refused_frozen} refused 503 kafka_unavailable while frozen, {n} records in Kafka ({dup} duplicates)"
    );
}

/// The broker SIGKILLed and started again under load, in `delivery` mode. tansu keeps its data
/// in memory, so the restarted broker starts empty: to reconcile from outside, Produce
/// requests are held at a gate in front of the broker just before the kill (the load keeps
/// running), everything the first instance holds is read, then the broker is killed with
/// requests in flight, started again (topic re-created), the gate opened, and the rest is read
/// from the second instance. Every id answered 2xx is in one of the two reads.
fn broker_killed_and_restarted(delivery: &str) {
    assert!(
        broker::tansu_bin().is_some(),
        "tansu is not installed: run `cargo xtask setup`"
    );
    let mut b = broker::GatedTansu::start();
    b.tansu.create_topic(TOPIC);
    let up = StubUpstream::start(Behavior::default());
    let spool = tempfile::tempdir().unwrap();
    // A restarted tansu forgets producer ids and answers an idempotent producer's retries
    // with UNKNOWN_PRODUCER_ID forever (see broker::TansuRestart): idempotence off, so the
    // retries after the restart may duplicate (at least once), never lose.
    let idem = broker::TansuRestart::PROPERTIES;
    let props: String = idem
        .iter()
        .map(|(k, v)| format!("\"{k}\" = \"{v}\"\n"))
        .collect();
    let cfg = config(up.addr, &b.bootstrap(), TOPIC, delivery, spool.path(), "").replace(
        "[kafka.properties]\n",
        &format!("[kafka.properties]\n{props}"),
    );
    let relay = Relay::start(&cfg);
    let target = Arc::new(Mutex::new(relay.addr));
    let prefix = format!("restart-{delivery}");
    let load = Load::start(target, 4, &prefix, 300);
    wait_ok(&load, 300);

    // Hold Produce at the gate; once the broker answered everything it got, its topic holds
    // still: read all of it.
    b.gate.close();
    broker::wait_for(
        "the broker to answer the Produce requests it got",
        LONG,
        || b.gate.produce_in_flight() == 0,
    );
    let first = ids_of(&read_topic(
        &b.bootstrap(),
        TOPIC,
        usize::MAX,
        Duration::from_secs(10),
    ));
    // SIGKILL with the load running and Produce requests in flight (held at the gate).
    b.tansu.stop();
    let ok_at_kill = load.ok_count();
    if delivery == "spool" {
        // Durable on disk: the app keeps getting 2xx while there is no broker at all.
        wait_ok(&load, 200);
    } else {
        std::thread::sleep(Duration::from_secs(2));
    }
    b.tansu.restart();
    b.gate.open();
    wait_ok(&load, 300);
    let seen = load.finish();
    if delivery == "spool" {
        wait_spool_drained(&relay);
    }
    let first_set: HashSet<&String> = first.iter().collect();
    let rest: Vec<String> = seen
        .ok
        .iter()
        .filter(|id| !first_set.contains(id))
        .cloned()
        .collect();
    let second = topic_ids(&b.bootstrap(), TOPIC, &rest);
    let mut all = first.clone();
    all.extend(second.iter().cloned());
    let (ok, n, dup) = reconcile(&seen.ok, &all);
    // ack: requests Kafka could not acknowledge in time may be refused, never answered 2xx;
    // spool refuses nothing (the disk takes everything).
    let refused: Vec<_> = seen
        .refused
        .iter()
        .filter(|r| delivery == "spool" || r.2 != "kafka_unavailable")
        .collect();
    assert!(refused.is_empty(), "{:?}", &refused[..1]);
    eprintln!(
        "{delivery}: broker killed and restarted: {ok} ids answered 2xx ({ok_at_kill} before the kill), {} read from the first broker, {} from the second, {n} records in all ({dup} duplicates), {} refused",
        first.len(),
        second.len(),
        seen.refused.len()
    );
}

#[test]
fn spool_broker_killed_and_restarted_loses_nothing_answered_2xx() {
    broker_killed_and_restarted("spool");
}

#[test]
fn ack_broker_killed_and_restarted_loses_nothing_answered_2xx() {
    broker_killed_and_restarted("ack");
}

/// A tmpfs mounted for the test, unmounted (and its mount point removed) on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .ok()?;
        st.success().then_some(Tmpfs { dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn spool_on_a_small_tmpfs_refuses_when_full_and_forwards_nothing_refused() {
    let Some(fs) = Tmpfs::mount("6m") else {
        panic!("cannot mount a tmpfs (this test needs root)");
    };
    let b = tansu();
    let up = StubUpstream::start(Behavior::default());
    // Phase 1: max_bytes (2 MiB) below the disk: 503 spool_full.
    let spool = fs.dir.path().join("a");
    let cfg = config(
        up.addr,
        &b.bootstrap(),
        TOPIC,
        "spool",
        &spool,
        "max_bytes = 2097152\nsegment_bytes = 262144",
    );
    let relay = Relay::start(&cfg);
    let target = Arc::new(Mutex::new(relay.addr));
    b.pause();
    let load = Load::start(target.clone(), 4, "full", 8000);
    broker::wait_for("503 spool_full", LONG, || {
        load.refused_count("spool_full") > 20
    });
    let (code, why) = relay.admin_get("/readyz");
    assert_eq!(code, 503, "{why}");
    assert!(why.contains("spool is full"), "{why}");
    let seen = load.finish();
    b.resume();
    wait_spool_drained(&relay);
    let refused: Vec<_> = seen
        .refused
        .iter()
        .filter(|r| r.2 == "spool_full")
        .collect();
    assert!(refused
        .iter()
        .all(|r| r.1 == 503 && r.3.as_deref() == Some("2")));
    assert_eq!(relay.admin_get("/readyz").0, 200);
    let forwarded: HashSet<String> = up
        .requests()
        .iter()
        .filter_map(|r| r.header("x-request-id").map(str::to_string))
        .collect();
    for r in &refused {
        assert!(
            !forwarded.contains(&r.0),
            "{} was refused but forwarded",
            r.0
        );
    }
    let ids = topic_ids(&b.bootstrap(), TOPIC, &seen.ok);
    let (ok, n, _) = reconcile(&seen.ok, &ids);
    eprintln!(
        "spool max_bytes: {ok} answered 2xx, {} refused spool_full, {n} records in Kafka",
        refused.len()
    );
    drop(relay);

    // Phase 2: max_bytes above the 6 MiB disk: the disk fills, 503 spool_unavailable, /readyz 503.
    let spool = fs.dir.path().join("b");
    let cfg = config(
        up.addr,
        &b.bootstrap(),
        TOPIC,
        "spool",
        &spool,
        "max_bytes = 67108864\nsegment_bytes = 262144",
    );
    let relay = Relay::start(&cfg);
    *target.lock().unwrap() = relay.addr;
    b.pause();
    let load = Load::start(target, 4, "enospc", 8000);
    broker::wait_for("503 spool_unavailable", LONG, || {
        load.refused_count("spool_unavailable") > 5
    });
    let (code, why) = relay.admin_get("/readyz");
    assert_eq!(code, 503, "{why}");
    assert!(why.contains("cannot write"), "{why}");
    let seen = load.finish();
    b.resume();
    wait_spool_drained(&relay);
    let forwarded: HashSet<String> = up
        .requests()
        .iter()
        .filter_map(|r| r.header("x-request-id").map(str::to_string))
        .collect();
    let refused: Vec<_> = seen
        .refused
        .iter()
        .filter(|r| r.2 == "spool_unavailable")
        .collect();
    for r in &refused {
        assert!(
            !forwarded.contains(&r.0),
            "{} was refused but forwarded",
            r.0
        );
    }
    let ids = topic_ids(&b.bootstrap(), TOPIC, &seen.ok);
    let (ok, n, _) = reconcile(&seen.ok, &ids);
    eprintln!(
        "spool disk full: {ok} answered 2xx, {} refused spool_unavailable, {n} records in Kafka (both phases)",
        refused.len()
    );
}

#[test]
fn unknown_topic_is_refused_never_a_lost_2xx() {
    let b = tansu();
    let up = StubUpstream::start(Behavior::default());
    let spool = tempfile::tempdir().unwrap();

    // ack: the upstream answers, Kafka does not acknowledge: 503 kafka_unavailable.
    let relay = Relay::start(&config(
        up.addr,
        &b.bootstrap(),
        "no-such-topic",
        "ack",
        spool.path(),
        "",
    ));
    let r = relay_e2e::post(relay.addr, "/v1/logs", b"{\"n\":1}");
    assert_eq!(r.status, 503, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error"], "kafka_unavailable");
    broker::wait_for("readyz 503", LONG, || relay.admin_get("/readyz").0 == 503);
    let (_, why) = relay.admin_get("/readyz");
    assert!(
        why.contains("no-such-topic") && why.contains("unknown_topic"),
        "{why}"
    );
    drop(relay);

    // spool: the first original is durable (2xx); its delivery fails permanently, the route then
    // refuses with 503 kafka_unavailable; once the topic exists the spooled one is delivered.
    let relay = Relay::start(&config(
        up.addr,
        &b.bootstrap(),
        "late-topic",
        "spool",
        spool.path(),
        "",
    ));
    let first = relay_e2e::post(relay.addr, "/v1/logs", b"{\"n\":1}");
    assert_eq!(first.status, 200);
    let (more, r) = relay_e2e::post_until_refused(relay.addr, "/v1/logs", b"{\"n\":2}", LONG);
    let oks = 1 + more;
    assert_eq!(r.json()["error"], "kafka_unavailable");
    assert!(r.header("retry-after").is_some());
    let (code, why) = relay.admin_get("/readyz");
    assert_eq!(code, 503);
    assert!(why.contains("late-topic"), "{why}");
    assert_eq!(
        spool_records(&relay),
        oks as f64,
        "the originals answered 2xx stay spooled"
    );
    b.create_topic("late-topic");
    wait_spool_drained(&relay);
    broker::wait_for("readyz 200", LONG, || relay.admin_get("/readyz").0 == 200);
    let got = read_topic(&b.bootstrap(), "late-topic", oks, LONG);
    assert!(got.len() >= oks, "{} of {oks} in Kafka", got.len());
    eprintln!("unknown topic: ack refused; spool kept {oks} originals answered 2xx, refused the rest, delivered all {oks} once the topic existed");
}

#[test]
fn ack_mode_answers_after_kafka_acknowledged() {
    let b = tansu();
    let up = StubUpstream::start(Behavior::default());
    let spool = tempfile::tempdir().unwrap();
    let relay = Relay::start(&config(
        up.addr,
        &b.bootstrap(),
        TOPIC,
        "ack",
        spool.path(),
        "",
    ));
    let target = Arc::new(Mutex::new(relay.addr));
    let load = Load::start(target, 4, "ack", 300);
    wait_ok(&load, 300);
    let seen = load.finish();
    // Every 2xx was acknowledged before it was answered: in the topic, no wait needed.
    let ids = topic_ids(&b.bootstrap(), TOPIC, &seen.ok);
    let (ok, n, _) = reconcile(&seen.ok, &ids);
    eprintln!("ack: {ok} answered 2xx, {n} in Kafka");
    assert!(seen.refused.is_empty());
}

#[test]
fn relay_check_refuses_a_body_limit_kafka_cannot_carry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.toml");
    let cfg = config(
        "127.0.0.1:9".parse().unwrap(),
        "127.0.0.1:9092",
        TOPIC,
        "spool",
        dir.path(),
        "",
    )
    .replace("\"message.max.bytes\" = \"1049600\"\n", "");
    std::fs::write(&path, &cfg).unwrap();
    let out = Command::new(relay_bin())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("server.max_body_bytes"), "{text}");
    assert!(text.contains("message.max.bytes"), "{text}");
    assert!(text.contains("at least 1049600"), "{text}");
    assert!(text.contains("at most 998976"), "{text}");
    // Raised as told: accepted.
    std::fs::write(
        &path,
        cfg.replace(
            "[kafka.properties]\n",
            "[kafka.properties]\n\"message.max.bytes\" = \"1049600\"\n",
        ),
    )
    .unwrap();
    let out = Command::new(relay_bin())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sigterm_sequence_fits_the_shutdown_budget_and_says_stopping() {
    use std::os::unix::net::UnixDatagram;
    let up = StubUpstream::start(Behavior::default());
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // No broker: memory-mode originals stay queued, and the flush (30 s) would outlast the
    // budget (3 s) without the cap.
    let dead = relay_e2e::dead_addr();
    let cfg = config(up.addr, &dead.to_string(), TOPIC, "memory", dir.path(), "")
        .replace("shutdown_grace_ms = 5000", "shutdown_grace_ms = 1000")
        .replace("shutdown_budget_ms = 10000", "shutdown_budget_ms = 3000")
        .replace("flush_timeout_ms = 2000", "flush_timeout_ms = 30000");
    let mut relay = Relay::start_with(
        &cfg,
        relay_e2e::RelayOptions {
            env: vec![(
                "NOTIFY_SOCKET".into(),
                sock_path.to_string_lossy().into_owned(),
            )],
            ..Default::default()
        },
    );
    for _ in 0..3 {
        assert_eq!(relay_e2e::post(relay.addr, "/v1/logs", b"{}").status, 200);
    }
    let started = std::time::Instant::now();
    let st = relay
        .terminate(Duration::from_secs(20))
        .expect("relay exits");
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(3000 + 1500),
        "the SIGTERM sequence took {took:?}, budget 3 s: {}",
        relay.log()
    );
    assert_eq!(st.code(), Some(3), "memory originals were lost: exit 3");
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while let Ok(n) = sock.recv(&mut buf) {
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        if got.iter().any(|m| m.contains("STOPPING=1")) {
            break;
        }
    }
    assert!(got.iter().any(|m| m.contains("STOPPING=1")), "{got:?}");
    let log = relay.log();
    assert!(log.contains("lost=3"), "{log}");
    eprintln!(
        "SIGTERM with 3 memory originals queued and no broker: exit 3 after {took:?} (budget 3 s)"
    );
}

#[test]
fn shipped_stop_timeouts_exceed_the_shutdown_budget() {
    let root = relay_e2e::workspace_root();
    let num = |text: &str, key: &str| -> u64 {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(key))
            .map(|v| {
                v.trim_start_matches([' ', '=', ':'])
                    .trim_end_matches('s')
                    .trim()
                    .parse()
                    .unwrap()
            })
            .unwrap_or_else(|| panic!("{key} not found"))
    };
    let unit = std::fs::read_to_string(root.join("systemd/relay.service")).unwrap();
    let example = std::fs::read_to_string(root.join("systemd/etc/relay/relay.toml")).unwrap();
    let stop_s = num(&unit, "TimeoutStopSec");
    let budget = num(&example, "shutdown_budget_ms");
    assert!(
        budget < stop_s * 1000,
        "budget {budget} ms >= TimeoutStopSec {stop_s} s"
    );
    let cm = std::fs::read_to_string(root.join("deploy/k8s/configmap.yaml")).unwrap();
    let dep = std::fs::read_to_string(root.join("deploy/k8s/deployment.yaml")).unwrap();
    let grace_s = num(&dep, "terminationGracePeriodSeconds");
    let budget = num(&cm, "shutdown_budget_ms");
    let after_pre_stop = &dep[dep.find("preStop:").expect("a preStop hook")..];
    let pre_stop_s = num(after_pre_stop, "seconds");
    assert!(
        budget + pre_stop_s * 1000 < grace_s * 1000,
        "budget {budget} ms + preStop {pre_stop_s} s >= terminationGracePeriodSeconds {grace_s}"
    );
}
