//! Payload routing and weighted splits, black box, on both io engines: the built binary, three
//! real stub upstreams that record what reached them, and a real Kafka-protocol broker (tansu).
//!
//! - `[[routes.match]]` on a root field (escaped, duplicated, a PII field matched on its raw
//!   value, non-string values, values at, under and over the 1024-byte capture limit) and on a
//!   header send each request to its upstream and its original to its topic; nothing refused
//!   is forwarded or published (non-UTF-8, malformed, mixed JSON batches, mixed NDJSON).
//! - `split_batches = true`: one request per destination with the lines in order, the worst
//!   status and that upstream's body for the client, each part's original on its own topic.
//! - `[[routes.split]]` sticky on `device_id`: one device always reaches the same side, also
//!   after an admin reload that keeps the weights; `relay-split` header and metric; a random
//!   split follows its weights.
//! - `delivery = "ack"` on a routed route: the chosen upstream is called while Kafka's round
//!   trip is in flight (Produce held back by a gate), and the answer waits for the ack.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use sha2::Digest as _;

use relay_e2e::broker::{read_topic, GatedTansu, ReadBack, Tansu};
use relay_e2e::on_both_engines;
use relay_e2e::{relay_bin, wait_for, Behavior, Client, Relay, Response, StubUpstream};

const LONG: Duration = Duration::from_secs(120);

/// 1024 bytes: exactly the capture limit (a rule value of this length can still match).
fn at_limit() -> String {
    "x".repeat(1024)
}

fn config(engine: &str, brokers: &str, ups: [SocketAddr; 3], extra: &str) -> String {
    let [tracking, payments, v2] = ups;
    let at_limit = at_limit();
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
workers = 2
io_engine = "{engine}"

[admin]
listen = "127.0.0.1:0"

[kafka]
brokers = "{brokers}"
[kafka.properties]
"linger.ms" = "5"
"message.max.bytes" = "1049600"

[[upstreams]]
name = "tracking"
nodes = ["{tracking}"]

[[upstreams]]
name = "payments-tracking"
nodes = ["{payments}"]

[[upstreams]]
name = "tracking-v2"
nodes = ["{v2}"]

[pii.default]
fields = ["user_id", "device_id"]
headers = ["x-device-id"]
hash = "sha256"

[[routes]]
name = "events"
path = "/v1/events"
upstream = "tracking"
topic = "events"
pii = "default"

[[routes.match]]
field = "event_type"
equals = ["purchase", "{at_limit}"]
upstream = "payments-tracking"
topic = "purchases"

[[routes.match]]
field = "user_id"
equals = ["vip-1"]
upstream = "tracking-v2"
topic = "vip"

[[routes.match]]
header = "x-event-type"
equals = ["beta"]
upstream = "tracking-v2"

[[routes]]
name = "batches"
path = "/v1/batch"
upstream = "tracking"
topic = "events"
pii = "default"
split_batches = true

[[routes.match]]
field = "event_type"
equals = ["purchase"]
upstream = "payments-tracking"
topic = "purchases"

[[routes]]
name = "ab"
path = "/v1/ab"
upstream = "tracking"
topic = "ab"
pii = "default"
sticky = "field:device_id"

[[routes.split]]
upstream = "tracking"
weight = 1

[[routes.split]]
upstream = "tracking-v2"
weight = 1

[[routes]]
name = "ab-random"
path = "/v1/ab-random"
upstream = "tracking"
pii = "default"

[[routes.split]]
upstream = "tracking"
weight = 80

[[routes.split]]
upstream = "tracking-v2"
weight = 20
{extra}
"#
    )
}

struct Setup {
    broker: Tansu,
    tracking: StubUpstream,
    payments: StubUpstream,
    v2: StubUpstream,
    relay: Relay,
}

fn setup(engine: &str) -> Setup {
    let broker = Tansu::start();
    for t in ["events", "purchases", "vip", "ab"] {
        broker.create_topic(t);
    }
    let tracking = StubUpstream::start(Behavior::default());
    let payments = StubUpstream::start(Behavior::default());
    let v2 = StubUpstream::start(Behavior::default());
    let relay = Relay::start(&config(
        engine,
        &broker.bootstrap(),
        [tracking.addr, payments.addr, v2.addr],
        "",
    ));
    assert_eq!(relay.io_engine, engine, "{}", relay.log());
    Setup {
        broker,
        tracking,
        payments,
        v2,
        relay,
    }
}

fn send(addr: SocketAddr, path: &str, ct: &str, headers: &str, body: &[u8]) -> Response {
    let mut c = Client::connect(addr);
    c.send(
        format!(
            "POST {path} HTTP/1.1\r\nHost: relay\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n{headers}\r\n",
            body.len()
        )
        .as_bytes(),
    );
    c.send(body);
    c.recv().expect("a response")
}

fn json(addr: SocketAddr, path: &str, body: &str) -> Response {
    send(addr, path, "application/json", "", body.as_bytes())
}

fn assert_error(r: &Response, status: u16, code: &str, says: &[&str]) {
    assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["error"], code, "{v}");
    let msg = v["message"].as_str().unwrap_or_default();
    for s in says {
        assert!(msg.contains(s), "{msg:?} does not say {s:?}");
    }
}

fn bodies(up: &StubUpstream) -> Vec<String> {
    up.requests()
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect()
}

fn payloads(records: &[ReadBack]) -> HashSet<String> {
    records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
        .collect()
}

/// Reads exactly `n` records of `topic` (and checks no more arrive within the read).
fn topic(broker: &Tansu, topic: &str, n: usize) -> Vec<ReadBack> {
    let got = read_topic(&broker.bootstrap(), topic, n + 1, Duration::from_secs(8));
    if got.len() < n {
        let got = read_topic(&broker.bootstrap(), topic, n, LONG);
        assert_eq!(got.len(), n, "{topic}: {:?}", payloads(&got));
        return got;
    }
    assert_eq!(got.len(), n, "{topic}: {:?}", payloads(&got));
    got
}

fn matches_land_on_their_upstream_and_topic(engine: &str) {
    let s = setup(engine);
    let a = s.relay.addr;
    let at = at_limit();
    let under = "x".repeat(1023);
    let over = "x".repeat(1025);
    // (body, header, which stub, which topic)
    let cases: Vec<(String, &str, &StubUpstream, &str)> = vec![
        (
            r#"{"event_type":"purchase","user_id":"u-1"}"#.into(),
            "",
            &s.payments,
            "purchases",
        ),
        (
            r#"{"ev\u0065nt_type":"purch\u0061se","user_id":"u-2"}"#.into(),
            "",
            &s.payments,
            "purchases",
        ),
        (
            r#"{"event_type":"view","event_type":"purchase"}"#.into(),
            "",
            &s.payments,
            "purchases",
        ),
        (
            r#"{"event_type":"view","user_id":"u-3"}"#.into(),
            "",
            &s.tracking,
            "events",
        ),
        (
            r#"{"event_type":"view","user_id":"vip-1"}"#.into(),
            "",
            &s.v2,
            "vip",
        ),
        (
            r#"{"event_type":"view","user_id":"u-4"}"#.into(),
            "X-Event-Type: beta\r\n",
            &s.v2,
            "events",
        ),
        (
            r#"{"event_type":{"purchase":1},"n":1}"#.into(),
            "",
            &s.tracking,
            "events",
        ),
        (
            r#"{"event_type":["purchase"],"n":2}"#.into(),
            "",
            &s.tracking,
            "events",
        ),
        (
            r#"{"event_type":5,"n":3}"#.into(),
            "",
            &s.tracking,
            "events",
        ),
        (
            r#"{"nested":{"event_type":"purchase"}}"#.into(),
            "",
            &s.tracking,
            "events",
        ),
        (
            format!(r#"{{"event_type":"{at}","n":4}}"#),
            "",
            &s.payments,
            "purchases",
        ),
        (
            format!(r#"{{"event_type":"{under}","n":5}}"#),
            "",
            &s.tracking,
            "events",
        ),
        (
            format!(r#"{{"event_type":"{over}","n":6}}"#),
            "",
            &s.tracking,
            "events",
        ),
        (
            format!(
                r#"{{"event_type":"purchase{}","n":7}}"#,
                "y".repeat(100_000)
            ),
            "",
            &s.tracking,
            "events",
        ),
        (
            r#"[{"event_type":"purchase"},{"event_type":"purchase","n":8}]"#.into(),
            "",
            &s.payments,
            "purchases",
        ),
    ];
    for (body, headers, _, _) in &cases {
        let r = send(
            a,
            "/v1/events",
            "application/json",
            headers,
            body.as_bytes(),
        );
        assert_eq!(
            r.status,
            200,
            "{body:.80}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    for (up, name) in [
        (&s.payments, "payments"),
        (&s.tracking, "tracking"),
        (&s.v2, "v2"),
    ] {
        let want: Vec<usize> = (0..cases.len())
            .filter(|i| std::ptr::eq(cases[*i].2, up))
            .collect();
        let got = bodies(up);
        assert_eq!(got.len(), want.len(), "{name}: {got:.100?}");
    }
    // The PII member matched on its raw value; upstream only the pseudonym.
    let vip = bodies(&s.v2);
    assert!(
        vip.iter()
            .all(|b| !b.contains("vip-1") && !b.contains("u-4")),
        "{vip:?}"
    );

    // Refused: nothing forwarded; the raw original goes to the route's topic like any refused
    // request's (without a receipt), never to a rule's topic.
    let before = s.tracking.count() + s.payments.count() + s.v2.count();
    let r = send(
        a,
        "/v1/events",
        "application/json",
        "",
        b"{\"event_type\":\"purch\xffse\"}",
    );
    assert_error(&r, 400, "invalid_utf8", &[]);
    assert_error(
        &json(a, "/v1/events", r#"{"event_type":"purchase""#),
        400,
        "invalid_json",
        &[],
    );
    assert_error(
        &json(
            a,
            "/v1/events",
            r#"[{"event_type":"purchase"},{"event_type":"view"}]"#,
        ),
        422,
        "mixed_destinations",
        &[
            "events 0 and 1",
            "payments-tracking",
            "tracking",
            "split_batches",
        ],
    );
    let mixed = "{\"event_type\":\"view\"}\n{\"event_type\":\"purchase\"}\n";
    assert_error(
        &send(
            a,
            "/v1/events",
            "application/x-ndjson",
            "",
            mixed.as_bytes(),
        ),
        422,
        "mixed_destinations",
        &[
            "line 1",
            "line 2",
            "split_batches = true on route \"events\"",
        ],
    );
    let in_line = "[{\"event_type\":\"view\"},{\"event_type\":\"purchase\"}]\n";
    assert_error(
        &send(
            a,
            "/v1/batch",
            "application/x-ndjson",
            "",
            in_line.as_bytes(),
        ),
        422,
        "mixed_destinations",
        &["line 1 holds events for different destinations"],
    );
    assert_eq!(
        s.tracking.count() + s.payments.count() + s.v2.count(),
        before
    );

    // Kafka: each original, byte for byte, on its case's topic; the refused ones on the
    // route's, without a receipt.
    let refused: Vec<String> = [
        &b"{\"event_type\":\"purch\xffse\"}"[..],
        br#"{"event_type":"purchase""#,
        br#"[{"event_type":"purchase"},{"event_type":"view"}]"#,
        mixed.as_bytes(),
        in_line.as_bytes(),
    ]
    .iter()
    .map(|b| String::from_utf8_lossy(b).into_owned())
    .collect();
    for t in ["purchases", "events", "vip"] {
        let mut want: HashSet<String> = cases
            .iter()
            .filter(|c| c.3 == t)
            .map(|c| c.0.clone())
            .collect();
        if t == "events" {
            want.extend(refused.iter().cloned());
        }
        let got = topic(&s.broker, t, want.len());
        assert_eq!(payloads(&got), want, "{t}");
        assert!(got.iter().all(|r| r.header("relay-split").is_none()));
        for r in &got {
            let p = String::from_utf8_lossy(&r.payload).into_owned();
            assert_eq!(
                r.header("relay-scrubbed-sha256").is_none(),
                refused.contains(&p),
                "a receipt exactly on the forwarded ones: {p:.80}"
            );
        }
    }
    assert_eq!(
        s.relay
            .metric(r#"relay_rejected_requests_total{reason="mixed_destinations"}"#),
        3.0
    );
}

fn split_batches_forward_per_destination_with_the_worst_status(engine: &str) {
    let s = setup(engine);
    let a = s.relay.addr;
    let lines = [
        r#"{"event_type":"view","n":1,"user_id":"u-1"}"#,
        r#"{"event_type":"purchase","n":2}"#,
        "",
        r#"{"event_type":"view","n":3}"#,
        r#"{"event_type":"purchase","n":4}"#,
    ];
    let batch = lines.join("\n") + "\n";
    let answer = |status: u16, body: &str| Behavior {
        status,
        body: body.as_bytes().to_vec(),
        ..Behavior::default()
    };
    // 5xx beats 2xx; 4xx beats 2xx; all 2xx: the first part's answer.
    for (tracking, payments, want) in [
        (
            answer(200, "t-ok"),
            answer(500, "payments down"),
            (500, "payments down"),
        ),
        (
            answer(404, "t-missing"),
            answer(201, "p-created"),
            (404, "t-missing"),
        ),
        (answer(202, "t-ok"), answer(201, "p-created"), (202, "t-ok")),
    ] {
        s.tracking.set(tracking);
        s.payments.set(payments);
        let r = send(
            a,
            "/v1/batch",
            "application/x-ndjson",
            "X-Request-Id: batch-1\r\nX-Device-Id: dev-7\r\n",
            batch.as_bytes(),
        );
        assert_eq!((r.status, String::from_utf8_lossy(&r.body).as_ref()), want);
    }
    let t = s.tracking.requests();
    let p = s.payments.requests();
    assert_eq!((t.len(), p.len()), (3, 3));
    for (got, n, id) in [(&t[0], [1, 3], "batch-1-1"), (&p[0], [2, 4], "batch-1-2")] {
        let text = String::from_utf8_lossy(&got.body);
        let ns: Vec<&str> = text.lines().collect();
        assert_eq!(ns.len(), 2, "{text}");
        assert!(
            ns[0].contains(&format!("\"n\":{}", n[0]))
                && ns[1].contains(&format!("\"n\":{}", n[1])),
            "{text}"
        );
        assert!(!text.contains("u-1"), "scrubbed: {text}");
        assert_eq!(got.header("x-request-id"), Some(id));
        let device = got
            .header("x-device-id")
            .expect("the PII header on every part");
        assert!(device.len() == 64 && device != "dev-7", "{device}");
        assert_eq!(
            got.header("content-length"),
            Some(got.body.len().to_string().as_str())
        );
    }
    // Per request: one body value (line 1's user_id) and one header, counted once, not per part.
    wait_for(LONG, || {
        (s.relay
            .metric(r#"relay_pii_fields_hashed_total{route="batches"}"#)
            == 6.0)
            .then_some(())
    })
    .expect("2 PII values per batch request, 3 requests");
    // Kafka: each part's original lines on its topic, with the part's request id.
    let events = topic(&s.broker, "events", 3);
    let purchases = topic(&s.broker, "purchases", 3);
    let want_events = format!("{}\n{}\n", lines[0], lines[3]);
    let want_purchases = format!("{}\n{}\n", lines[1], lines[4]);
    assert_eq!(payloads(&events), HashSet::from([want_events]));
    assert_eq!(payloads(&purchases), HashSet::from([want_purchases]));
    assert!(events
        .iter()
        .all(|r| r.header("relay-request-id") == Some(&b"batch-1-1"[..])));
    assert!(purchases
        .iter()
        .all(|r| r.header("relay-request-id") == Some(&b"batch-1-2"[..])));
    // Each part's receipt is the digest of exactly the bytes that part forwarded.
    let sha = |b: &[u8]| format!("{:x}", sha2::Sha256::digest(b));
    for (records, got) in [(&events, &t), (&purchases, &p)] {
        let digests: HashSet<String> = got.iter().map(|r| sha(&r.body)).collect();
        assert_eq!(digests.len(), 1, "the same part three times");
        for r in records.iter() {
            let d = std::str::from_utf8(r.header("relay-scrubbed-sha256").expect("a receipt"))
                .unwrap()
                .to_string();
            assert!(digests.contains(&d), "{d} is not a forwarded part's digest");
        }
    }
    // One destination: the body whole, byte for byte (blank line kept), one request.
    let same = "{\"event_type\":\"view\",\"n\":5}\n\n{\"n\":6}\n";
    s.tracking.set(Behavior::default());
    assert_eq!(
        send(a, "/v1/batch", "application/x-ndjson", "", same.as_bytes()).status,
        200
    );
    assert_eq!(s.tracking.requests()[3].body, same.as_bytes());
    let events = topic(&s.broker, "events", 4);
    assert!(payloads(&events).contains(same));
}

/// 10,000 generated requests from 10,000 devices over one keep-alive connection: the 1:1
/// sticky split lands each side within 2 % of half, and Kafka's `relay-split` agrees with the
/// upstream that got each request. Deterministic: the side is a hash of the device id.
fn ten_thousand_devices_land_in_the_configured_proportions(engine: &str) {
    let s = setup(engine);
    let mut c = Client::connect(s.relay.addr);
    let n = 10_000;
    for d in 0..n {
        let body = format!(r#"{{"device_id":"gen-{d}","event_type":"view"}}"#);
        assert_eq!(c.post("/v1/ab", body.as_bytes()).status, 200);
    }
    let (t, v2) = (s.tracking.count(), s.v2.count());
    assert_eq!(t + v2, n, "every request forwarded once");
    assert_eq!(s.payments.count(), 0);
    let share = v2 as f64 / n as f64;
    assert!(
        (share - 0.5).abs() <= 0.02,
        "{v2} of {n} on tracking-v2 with weights 1:1 ({share:.4})"
    );
    let records = topic(&s.broker, "ab", n);
    let on_v2 = records
        .iter()
        .filter(|r| r.header("relay-split") == Some(b"tracking-v2".as_slice()))
        .count();
    assert_eq!(
        on_v2, v2,
        "Kafka's relay-split matches where the requests went"
    );
}

fn splits_are_sticky_by_device_across_a_reload(engine: &str) {
    let s = setup(engine);
    let a = s.relay.addr;
    let devices = 40;
    let side_of = |s: &Setup, round: usize| -> HashMap<usize, &'static str> {
        let mut side = HashMap::new();
        for d in 0..devices {
            for k in 0..3 {
                let before = (s.tracking.count(), s.v2.count());
                let body = format!(r#"{{"device_id":"device-{d}","round":{round},"k":{k}}}"#);
                let mut c = Client::connect(a);
                assert_eq!(c.post("/v1/ab", body.as_bytes()).status, 200);
                let now = if s.tracking.count() > before.0 {
                    "tracking"
                } else {
                    "tracking-v2"
                };
                assert_eq!(s.tracking.count() + s.v2.count(), before.0 + before.1 + 1);
                let prev = side.insert(d, now);
                assert!(
                    prev.is_none() || prev == Some(now),
                    "device-{d} moved from {prev:?} to {now}"
                );
            }
        }
        side
    };
    let first = side_of(&s, 0);
    let on_v2 = first.values().filter(|v| **v == "tracking-v2").count();
    assert!(
        (8..=32).contains(&on_v2),
        "{on_v2} of {devices} devices on v2 with 1:1 weights"
    );
    // Kafka: the chosen side in relay-split; the metric counts each request once.
    let records = topic(&s.broker, "ab", devices * 3);
    for r in &records {
        let body = String::from_utf8_lossy(&r.payload);
        let d: usize = body
            .split("device-")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            r.header("relay-split"),
            Some(first[&d].as_bytes()),
            "{body}"
        );
    }
    let metric = |side: &str| {
        s.relay.metric(&format!(
            r#"relay_split_requests_total{{route="ab",upstream="{side}"}}"#
        ))
    };
    assert_eq!(metric("tracking-v2"), (on_v2 * 3) as f64);
    assert_eq!(
        metric("tracking") + metric("tracking-v2"),
        (devices * 3) as f64
    );

    // Reload with the same weights (and one more route): every device keeps its side.
    let extra = "[[routes]]\nname = \"extra\"\npath = \"/v1/extra\"\nupstream = \"tracking\"\n";
    let cfg = config(
        engine,
        &s.broker.bootstrap(),
        [s.tracking.addr, s.payments.addr, s.v2.addr],
        extra,
    );
    std::fs::write(&s.relay.config_path, cfg).unwrap();
    let (status, body) = s.relay.admin_post("/reload");
    assert_eq!(status, 200, "{body}");
    wait_for(Duration::from_secs(10), || {
        (s.relay
            .metric(r#"relay_config_reloads_total{result="success"}"#)
            >= 1.0)
            .then_some(())
    })
    .expect("reloaded");
    assert_eq!(
        json(a, "/v1/extra", "{}").status,
        200,
        "the reloaded config is in use"
    );
    let second = side_of(&s, 1);
    assert_eq!(first, second, "a device changed sides across the reload");
    // And across a SIGHUP reload.
    let extra2 = format!(
        "{extra}[[routes]]\nname = \"extra2\"\npath = \"/v1/extra2\"\nupstream = \"tracking\"\n"
    );
    let cfg = config(
        engine,
        &s.broker.bootstrap(),
        [s.tracking.addr, s.payments.addr, s.v2.addr],
        &extra2,
    );
    std::fs::write(&s.relay.config_path, cfg).unwrap();
    s.relay.signal("HUP");
    wait_for(Duration::from_secs(10), || {
        (s.relay
            .metric(r#"relay_config_reloads_total{result="success"}"#)
            >= 2.0)
            .then_some(())
    })
    .expect("reloaded on SIGHUP");
    assert_eq!(json(a, "/v1/extra2", "{}").status, 200);
    assert_eq!(
        first,
        side_of(&s, 2),
        "a device changed sides across the SIGHUP reload"
    );

    // No sticky value: a weighted random choice (80:20) per request.
    let (t0, v0) = (s.tracking.count(), s.v2.count());
    let n = 400;
    for i in 0..n {
        assert_eq!(
            json(a, "/v1/ab-random", &format!(r#"{{"i":{i}}}"#)).status,
            200
        );
    }
    let v2 = s.v2.count() - v0;
    assert_eq!(s.tracking.count() - t0 + v2, n);
    assert!((40..=120).contains(&v2), "{v2} of {n} on the 20% side");
    assert_eq!(s.payments.count(), 0);
}

fn ack_routes_call_the_upstream_while_kafka_acknowledges(engine: &str) {
    let b = GatedTansu::start();
    b.tansu.create_topic("purchases");
    b.tansu.create_topic("events");
    let tracking = StubUpstream::start(Behavior::default());
    let payments = StubUpstream::start(Behavior::default());
    let v2 = StubUpstream::start(Behavior::default());
    let cfg = config(
        engine,
        &b.bootstrap(),
        [tracking.addr, payments.addr, v2.addr],
        "",
    )
    .replacen(
        "topic = \"events\"\npii = \"default\"\n",
        "topic = \"events\"\npii = \"default\"\ndelivery = \"ack\"\n",
        1,
    );
    assert!(cfg.contains("delivery = \"ack\""));
    let relay = Relay::start(&cfg);
    let a = relay.addr;
    // Warm: metadata and connections in place.
    assert_eq!(
        json(a, "/v1/events", r#"{"event_type":"view"}"#).status,
        200
    );
    b.gate.close();
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        let _ = tx.send(json(a, "/v1/events", r#"{"event_type":"purchase","n":1}"#));
    });
    // The upstream gets the request although Kafka cannot have acknowledged (Produce held).
    wait_for(LONG, || (payments.count() == 1).then_some(()))
        .expect("payments called during the Kafka round trip");
    assert!(rx.try_recv().is_err(), "answered before Kafka acknowledged");
    b.gate.open();
    let r = rx
        .recv_timeout(LONG)
        .expect("the answer once Kafka acknowledged");
    t.join().unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let got = read_topic(&b.bootstrap(), "purchases", 1, LONG);
    assert_eq!(
        payloads(&got),
        HashSet::from([r#"{"event_type":"purchase","n":1}"#.to_string()])
    );
    assert_eq!(tracking.count(), 1);
}

fn gzip(b: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn gunzip(b: &[u8]) -> Vec<u8> {
    use std::io::Read as _;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(b)
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn compressed_split_batches_publish_decoded_lines(engine: &str) {
    let broker = Tansu::start();
    for t in ["events", "purchases"] {
        broker.create_topic(t);
    }
    let tracking = StubUpstream::start(Behavior::default());
    let payments = StubUpstream::start(Behavior::default());
    let v2 = StubUpstream::start(Behavior::default());
    let same = "[[routes]]\nname = \"batches-same\"\npath = \"/v1/batch-same\"\nupstream = \"tracking\"\ntopic = \"events\"\npii = \"default\"\nsplit_batches = true\nforward_encoding = \"same\"\n[[routes.match]]\nfield = \"event_type\"\nequals = [\"purchase\"]\nupstream = \"payments-tracking\"\ntopic = \"purchases\"\n";
    let relay = Relay::start(&config(
        engine,
        &broker.bootstrap(),
        [tracking.addr, payments.addr, v2.addr],
        same,
    ));
    let a = relay.addr;
    let batch = "{\"event_type\":\"view\",\"n\":1,\"user_id\":\"u-1\"}\n{\"event_type\":\"purchase\",\"n\":2}\n{\"n\":3}\n";
    let gz = gzip(batch.as_bytes());
    for path in ["/v1/batch", "/v1/batch-same"] {
        let r = send(
            a,
            path,
            "application/x-ndjson",
            "Content-Encoding: gzip\r\n",
            &gz,
        );
        assert_eq!(
            r.status,
            200,
            "{path}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    let (t, p) = (tracking.requests(), payments.requests());
    assert_eq!((t.len(), p.len()), (2, 2));
    // identity: the scrubbed lines as they are; same: those lines gzip-encoded again.
    assert_eq!(t[0].header("content-encoding"), None);
    let t0 = String::from_utf8(t[0].body.clone()).unwrap();
    assert!(
        t0.contains("\"n\":1") && t0.contains("\"n\":3") && !t0.contains("u-1"),
        "{t0}"
    );
    assert_eq!(t[1].header("content-encoding"), Some("gzip"));
    assert_eq!(gunzip(&t[1].body), t0.as_bytes());
    assert_eq!(gunzip(&p[1].body), p[0].body);
    // Kafka: each part's lines as decoded (compressed bytes cannot be cut), no coding header.
    let events = topic(&broker, "events", 2);
    let want = "{\"event_type\":\"view\",\"n\":1,\"user_id\":\"u-1\"}\n{\"n\":3}\n";
    assert_eq!(payloads(&events), HashSet::from([want.to_string()]));
    assert!(events
        .iter()
        .all(|r| r.header("content-encoding").is_none()));
    let purchases = topic(&broker, "purchases", 2);
    assert_eq!(
        payloads(&purchases),
        HashSet::from(["{\"event_type\":\"purchase\",\"n\":2}\n".to_string()])
    );
}

/// `relay check` prints the effective routing config and refuses bad references with the field.
#[test]
fn relay_check_validates_named_upstreams_topics_and_splits() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("relay.toml");
    let ups = [
        relay_e2e::dead_addr(),
        relay_e2e::dead_addr(),
        relay_e2e::dead_addr(),
    ];
    let good = config("auto", "127.0.0.1:9092", ups, "");
    let check = |text: &str| {
        std::fs::write(&f, text).unwrap();
        std::process::Command::new(relay_bin())
            .arg("check")
            .arg("--config")
            .arg(&f)
            .output()
            .unwrap()
    };
    let out = check(&good);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    for want in [
        "[[routes.match]]",
        "[[routes.split]]",
        "split_batches = true",
        "sticky = \"field:device_id\"",
    ] {
        assert!(printed.contains(want), "{want} not in {printed}");
    }
    for (from, to, field) in [
        (
            "upstream = \"payments-tracking\"\ntopic = \"purchases\"",
            "upstream = \"payment\"\ntopic = \"purchases\"",
            "routes[0].match[0].upstream",
        ),
        (
            "upstream = \"tracking-v2\"\nweight = 1\n",
            "upstream = \"tracking-v3\"\nweight = 1\n",
            "routes[2].split[1].upstream",
        ),
        (
            "sticky = \"field:device_id\"",
            "sticky = \"field:\"",
            "routes[2].sticky",
        ),
    ] {
        assert!(good.contains(from), "{from}");
        let out = check(&good.replacen(from, to, 1));
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains(field), "{field} not named: {err}");
    }
}

on_both_engines!(
    ten_thousand_devices_land_in_the_configured_proportions,
    matches_land_on_their_upstream_and_topic,
    split_batches_forward_per_destination_with_the_worst_status,
    splits_are_sticky_by_device_across_a_reload,
    ack_routes_call_the_upstream_while_kafka_acknowledges,
    compressed_split_batches_publish_decoded_lines,
);
