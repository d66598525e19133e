//! Compressed request bodies, black box, on both io engines: `Content-Encoding: gzip`
//! (`x-gzip`), `deflate` (zlib and raw) and `zstd` through the built relay, a real tansu broker
//! and a recording stub upstream. Kafka gets the compressed bytes exactly as sent with a
//! `content-encoding` header and the key of the decoded body; the upstream gets the scrubbed
//! JSON decoded (or re-encoded with `forward_encoding = "same"`); `max_decoded_bytes` and
//! `max_expansion_ratio` at, just under and just over their boundary; bombs refused 413 with
//! relay's peak RSS bounded; corrupt, truncated, unknown and stacked codings refused.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use flate2::{Compression, GzBuilder};
use relay_e2e::broker::{read_topic, Tansu};
use relay_e2e::on_both_engines;
use relay_e2e::{Behavior, Client, Relay, Response, StubUpstream};
use sha2::{Digest, Sha256};

const TOPIC: &str = "compressed-originals";
const KEY: &str = "e2e-pii-key-0123456789abcdef-0123456789abcdef";
const LONG: Duration = Duration::from_secs(60);
const BODY: &str = r#"{"event":"purchase","user_id":"alice-5f1e","device_id":"dev-77ab","n":1}"#;

/// Routes: `logs` (defaults, key from the body), `same` (`forward_encoding = "same"`),
/// `limited` (max_decoded_bytes 2000), `ratio` (max_expansion_ratio 10), `bomb` (4 MiB,
/// ratio 100000). With `brokers`, `logs` and `same` publish to [`TOPIC`].
fn config(engine: &str, up: SocketAddr, brokers: Option<&str>, key_file: &Path) -> String {
    config_with_spool(engine, up, brokers, key_file, None)
}

/// [`config`], plus with `spool` a `[spool]` in that directory and route `spooled`
/// (`delivery = "spool"`, `/v1/spooled`).
fn config_with_spool(
    engine: &str,
    up: SocketAddr,
    brokers: Option<&str>,
    key_file: &Path,
    spool: Option<&Path>,
) -> String {
    let spool = match spool {
        Some(dir) => format!(
            "[spool]\ndir = \"{}\"\nretry_ms = 300\n\n[[routes]]\nname = \"spooled\"\n\
             path = \"/v1/spooled\"\nupstream = \"tracking\"\npii = \"default\"\n\
             topic = \"{TOPIC}\"\ndelivery = \"spool\"\n",
            dir.display()
        ),
        None => String::new(),
    };
    let (kafka, topic) = match brokers {
        Some(b) => (
            format!(
                "[kafka]\nbrokers = \"{b}\"\n[kafka.properties]\n\"linger.ms\" = \"5\"\n\
                 \"message.max.bytes\" = \"1049600\"\n"
            ),
            format!("topic = \"{TOPIC}\""),
        ),
        None => (String::new(), String::new()),
    };
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
workers = 1
io_engine = "{engine}"

[admin]
listen = "127.0.0.1:0"

{kafka}

[[upstreams]]
name = "tracking"
nodes = ["{up}"]

[[routes]]
name = "logs"
path = "/v1/logs"
upstream = "tracking"
pii = "default"
{topic}
{key}

[[routes]]
name = "same"
path = "/v1/same"
upstream = "tracking"
pii = "default"
forward_encoding = "same"
{topic}

[[routes]]
name = "limited"
path = "/v1/limited"
upstream = "tracking"
pii = "default"
max_decoded_bytes = 2000
max_expansion_ratio = 1000

[[routes]]
name = "ratio"
path = "/v1/ratio"
upstream = "tracking"
pii = "default"
max_expansion_ratio = 10

[[routes]]
name = "bomb"
path = "/v1/bomb"
upstream = "tracking"
pii = "default"
max_decoded_bytes = 4194304
max_expansion_ratio = 100000

[[routes]]
name = "plain"
path = "/v1/plain"
upstream = "tracking"

[[routes]]
name = "plain-same"
path = "/v1/plain-same"
upstream = "tracking"
forward_encoding = "same"

{spool}

[pii.default]
fields = ["user_id", "device_id"]
hash = "hmac-sha256"
key_file = "{kf}"
key_id = "k1"
"#,
        key = if brokers.is_some() {
            "key = \"field:device_id\""
        } else {
            ""
        },
        kf = key_file.display(),
    )
}

struct Setup {
    up: StubUpstream,
    relay: Relay,
    _keys: tempfile::TempDir,
}

fn setup(engine: &str, brokers: Option<&str>) -> Setup {
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("pii.key");
    std::fs::write(&key_file, KEY).unwrap();
    let up = StubUpstream::start(Behavior::default());
    let relay = Relay::start(&config(engine, up.addr, brokers, &key_file));
    assert_eq!(relay.io_engine, engine, "{}", relay.log());
    Setup {
        up,
        relay,
        _keys: keys,
    }
}

/// POSTs `body` with Content-Length and the extra `headers` (each line ending in CRLF).
fn send(addr: SocketAddr, path: &str, headers: &str, body: &[u8]) -> Response {
    let mut c = Client::connect(addr);
    c.send(
        format!(
            "POST {path} HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n{headers}\
             Content-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    c.send(body);
    c.recv().expect("a response")
}

fn ce(coding: &str) -> String {
    format!("Content-Encoding: {coding}\r\n")
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), Compression::best());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn zlib(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), Compression::best());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn raw_deflate(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), Compression::best());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn zstd(b: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(b, 3).unwrap()
}

fn gunzip(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(b)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// A gzip body of exactly `len` bytes for `b`: the header's file name (FNAME) takes the slack.
fn gzip_exact(b: &[u8], len: usize) -> Vec<u8> {
    let base = gzip(b).len();
    assert!(len > base + 1, "{len} bytes cannot hold a {base}-byte gzip");
    let name = vec![b'n'; len - base - 1];
    let mut e = GzBuilder::new()
        .filename(name)
        .write(Vec::new(), Compression::best());
    e.write_all(b).unwrap();
    let g = e.finish().unwrap();
    assert_eq!(g.len(), len);
    g
}

/// A JSON body of exactly `n` bytes with PII (the padding compresses well).
fn json_of(n: usize) -> Vec<u8> {
    let head = br#"{"user_id":"alice-5f1e","pad":""#;
    let tail = br#""}"#;
    let mut v = head.to_vec();
    v.resize(n - tail.len(), b'a');
    v.extend_from_slice(tail);
    assert_eq!(v.len(), n);
    v
}

/// A zstd frame of `blocks` RLE blocks of 128 KiB zeros each (4 bytes a block): 1 KiB holds
/// 32 MiB, 32 KiB holds 1 GiB.
fn zstd_rle_bomb(blocks: usize) -> Vec<u8> {
    // Magic, frame header descriptor 0 (no content size, no checksum), window 2^17.
    let mut f = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 7 << 3];
    for i in 0..blocks {
        let last = u32::from(i + 1 == blocks);
        let header = last | (1 << 1) | (128 * 1024) << 3;
        f.extend_from_slice(&header.to_le_bytes()[..3]);
        f.push(0);
    }
    f
}

/// `members` concatenated gzip members of 1 MiB of zeros each (~1 KiB a member).
fn gzip_bomb(members: usize) -> Vec<u8> {
    let one = gzip(&vec![0u8; 1 << 20]);
    one.repeat(members)
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

fn assert_error(r: &Response, status: u16, code: &str) {
    assert_eq!(r.status, status, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["error"], code, "{v}");
    let m = v["message"].as_str().unwrap_or_default();
    assert!(!m.is_empty(), "{v}");
    assert!(!m.contains("alice-5f1e"), "the error echoes PII: {m}");
}

fn is_scrubbed(body: &[u8]) -> bool {
    let s = String::from_utf8_lossy(body);
    !s.contains("alice-5f1e") && !s.contains("dev-77ab") && s.contains("\"event\":\"purchase\"")
}

fn each_coding_round_trips_to_kafka_and_upstream(engine: &str) {
    let broker = Tansu::start();
    broker.create_topic(TOPIC);
    let s = setup(engine, Some(&broker.bootstrap()));
    let a = s.relay.addr;
    let rid = |id: &str| format!("X-Request-Id: {id}\r\n");

    // The identity request: the scrubbed body and the Kafka key every coding must reproduce.
    let r = send(a, "/v1/logs", &rid("plain"), BODY.as_bytes());
    assert_eq!(r.status, 200, "{}", s.relay.log());
    let want = s.up.requests().pop().unwrap().body;
    assert!(is_scrubbed(&want), "{}", String::from_utf8_lossy(&want));

    let b = BODY.as_bytes();
    let cases: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        ("gz", "gzip", gzip(b), "gzip"),
        ("xgz", "x-gzip", gzip(b), "gzip"),
        ("zlib", "deflate", zlib(b), "deflate"),
        ("raw", "deflate", raw_deflate(b), "deflate"),
        ("zst", "zstd", zstd(b), "zstd"),
    ];
    for (id, coding, wire, _) in &cases {
        let r = send(a, "/v1/logs", &(rid(id) + &ce(coding)), wire);
        assert_eq!(
            r.status,
            200,
            "{coding}: {:?}",
            String::from_utf8_lossy(&r.body)
        );
        let got = s.up.requests().pop().unwrap();
        assert_eq!(
            got.body, want,
            "{id}: the upstream gets the scrubbed JSON, decoded"
        );
        assert_eq!(got.header("content-encoding"), None, "{id}");
        assert_eq!(
            got.header("content-length"),
            Some(want.len().to_string().as_str()),
            "{id}"
        );
    }

    // Chunked framing and gzip together: Kafka gets the de-chunked compressed bytes.
    let chunked_wire = gzip(b);
    let mut req = String::from(
        "POST /v1/logs HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n\
         Content-Encoding: gzip\r\nX-Request-Id: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .into_bytes();
    for part in chunked_wire.chunks(7) {
        req.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        req.extend_from_slice(part);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let mut c = Client::connect(a);
    c.send(&req);
    assert_eq!(c.recv().unwrap().status, 200);
    assert_eq!(s.up.requests().pop().unwrap().body, want, "chunked + gzip");

    // forward_encoding = "same": the upstream gets the scrubbed JSON encoded again.
    let mut same_sent = Vec::new();
    for (id, coding, wire) in [("same-gz", "gzip", gzip(b)), ("same-zst", "zstd", zstd(b))] {
        let r = send(a, "/v1/same", &(rid(id) + &ce(coding)), &wire);
        assert_eq!(r.status, 200, "{id}");
        let got = s.up.requests().pop().unwrap();
        assert_eq!(got.header("content-encoding"), Some(coding), "{id}");
        assert_eq!(
            got.header("content-length"),
            Some(got.body.len().to_string().as_str())
        );
        let decoded = match coding {
            "gzip" => gunzip(&got.body),
            _ => zstd::stream::decode_all(&got.body[..]).unwrap(),
        };
        assert_eq!(decoded, want, "{id}: re-encoded, scrubbed");
        assert_ne!(
            got.body, wire,
            "{id}: the PII-bearing original is not forwarded"
        );
        same_sent.push((id, got.body));
    }

    // A refused body is neither forwarded nor published.
    let before = s.up.count();
    let r = send(
        a,
        "/v1/logs",
        &(rid("corrupt") + &ce("gzip")),
        b"not gzip at all",
    );
    assert_error(&r, 400, "invalid_encoding");
    assert_eq!(s.up.count(), before);
    // A body that decodes but does not scrub: refused by the policy, not forwarded, and (like
    // every request the policy refuses) its original is published, as sent, without a receipt.
    let bad_json = gzip(b"{\"user_id\":\"alice-5f1e\",oops}");
    let r = send(a, "/v1/logs", &(rid("badjson") + &ce("gzip")), &bad_json);
    assert_error(&r, 400, "invalid_json");
    assert_eq!(s.up.count(), before);

    let total = 1 + cases.len() + 1 + 2 + 1;
    let got = read_topic(&broker.bootstrap(), TOPIC, total, LONG);
    assert_eq!(got.len(), total, "Kafka holds every accepted request, once");
    let by_id = |id: &str| {
        got.iter()
            .find(|g| g.header("relay-request-id") == Some(id.as_bytes()))
            .unwrap_or_else(|| panic!("no record for {id}"))
    };
    let plain = by_id("plain");
    assert_eq!(plain.payload, BODY.as_bytes());
    assert_eq!(plain.header("content-encoding"), None);
    let key = plain.key.clone().expect("a key from the body's device_id");
    for (id, _, wire, canonical) in &cases {
        let g = by_id(id);
        assert_eq!(
            &g.payload, wire,
            "{id}: Kafka has the exact compressed bytes"
        );
        assert_eq!(
            g.header("content-encoding"),
            Some(canonical.as_bytes()),
            "{id}"
        );
        assert_eq!(
            g.key.as_ref(),
            Some(&key),
            "{id}: key from the decoded body"
        );
    }
    // Receipts: the digest of exactly the bytes the upstream received (decoded JSON, or the
    // re-encoded body with `same`).
    let sha = |b: &[u8]| format!("{:x}", Sha256::digest(b));
    for (id, _, _, _) in &cases {
        assert_eq!(
            by_id(id).header("relay-scrubbed-sha256"),
            Some(sha(&want).as_bytes()),
            "{id}"
        );
    }
    for (id, sent) in &same_sent {
        assert_eq!(
            by_id(id).header("relay-scrubbed-sha256"),
            Some(sha(sent).as_bytes()),
            "{id}"
        );
    }
    assert_eq!(by_id("chunked").payload, chunked_wire);
    let g = by_id("badjson");
    assert_eq!(g.payload, bad_json);
    assert_eq!(g.header("content-encoding"), Some(&b"gzip"[..]));
    assert_eq!(g.header("relay-scrubbed-sha256"), None);
    assert_eq!(
        by_id("same-zst").header("content-encoding"),
        Some(&b"zstd"[..])
    );
    assert!(got
        .iter()
        .all(|g| g.header("relay-request-id") != Some(b"corrupt")));

    let decoded = s
        .relay
        .metric(r#"relay_request_decoded_bytes_total{route="logs",coding="gzip"}"#);
    let bad_json_len = br#"{"user_id":"alice-5f1e",oops}"#.len();
    assert_eq!(
        decoded,
        (3 * BODY.len() + bad_json_len) as f64,
        "gz + xgz + chunked + badjson (decoded, then refused by the policy)"
    );
    assert_eq!(
        s.relay.metric(
            r#"relay_request_decode_refusals_total{route="logs",reason="invalid_encoding"}"#
        ),
        1.0
    );
}

fn limits_at_just_under_and_just_over_the_boundary(engine: &str) {
    let s = setup(engine, None);
    let a = s.relay.addr;
    // max_decoded_bytes = 2000 on every coding (the ratio, 1000, does not bind).
    for coding in ["gzip", "deflate", "zstd"] {
        let enc = |b: &[u8]| match coding {
            "gzip" => gzip(b),
            "deflate" => zlib(b),
            _ => zstd(b),
        };
        for n in [1999, 2000] {
            let r = send(a, "/v1/limited", &ce(coding), &enc(&json_of(n)));
            assert_eq!(
                r.status,
                200,
                "{coding} {n}: {:?}",
                String::from_utf8_lossy(&r.body)
            );
            let got = s.up.requests().pop().unwrap();
            assert_eq!(
                got.body.len(),
                n - "alice-5f1e".len() + 64,
                "hashed, same size else"
            );
        }
        let before = s.up.count();
        let r = send(a, "/v1/limited", &ce(coding), &enc(&json_of(2001)));
        assert_error(&r, 413, "decoded_body_too_large");
        let m = r.json()["message"].as_str().unwrap().to_string();
        assert!(m.contains("max_decoded_bytes (2000 bytes)"), "{m}");
        assert_eq!(s.up.count(), before, "nothing forwarded");
    }
    // max_expansion_ratio = 10: a 200-byte gzip may decode to 2000 bytes, not 2001.
    for (n, ok) in [(1999, true), (2000, true), (2001, false)] {
        let body = gzip_exact(&json_of(n), 200);
        let r = send(a, "/v1/ratio", &ce("gzip"), &body);
        if ok {
            assert_eq!(r.status, 200, "{n}: {:?}", String::from_utf8_lossy(&r.body));
        } else {
            assert_error(&r, 413, "expansion_ratio_exceeded");
            let m = r.json()["message"].as_str().unwrap().to_string();
            assert!(
                m.contains("max_expansion_ratio (10x its 200 encoded bytes"),
                "{m}"
            );
        }
    }
    // The same decoded bytes with one encoded byte less: 199 * 10 < 2000.
    let r = send(
        a,
        "/v1/ratio",
        &ce("gzip"),
        &gzip_exact(&json_of(2000), 199),
    );
    assert_error(&r, 413, "expansion_ratio_exceeded");
    let refused = |route: &str, reason: &str| {
        s.relay.metric(&format!(
            "relay_request_decode_refusals_total{{route=\"{route}\",reason=\"{reason}\"}}"
        ))
    };
    assert_eq!(refused("limited", "decoded_body_too_large"), 3.0);
    assert_eq!(refused("ratio", "expansion_ratio_exceeded"), 2.0);
    assert_eq!(
        s.relay
            .metric(r#"relay_rejected_requests_total{reason="decoded_body_too_large"}"#),
        3.0
    );
}

fn bombs_get_413_within_bounded_memory(engine: &str) {
    let s = setup(engine, None);
    let a = s.relay.addr;
    assert_eq!(send(a, "/v1/logs", "", BODY.as_bytes()).status, 200);
    let pid = s.relay.pid();
    let before = vm_hwm_kib(pid);

    // ~1 KiB that expands past the default limits (ratio 100 binds first).
    let small_gz = gzip_bomb(1);
    let small_zst = zstd_rle_bomb(256);
    assert!(small_gz.len() < 1100 && small_zst.len() < 1100);
    for (coding, bomb) in [("gzip", &small_gz), ("zstd", &small_zst)] {
        let r = send(a, "/v1/logs", &ce(coding), bomb);
        assert_error(&r, 413, "expansion_ratio_exceeded");
    }
    // 256 MiB (gzip, 256 KiB on the wire) and 1 GiB (zstd, 32 KiB): refused at the route's
    // 4 MiB, several times; relay's peak RSS grows by far less than one decoded bomb.
    let big_gz = gzip_bomb(256);
    let big_zst = zstd_rle_bomb(8192);
    for _ in 0..4 {
        for (coding, bomb) in [("gzip", &big_gz), ("zstd", &big_zst)] {
            let r = send(a, "/v1/bomb", &ce(coding), bomb);
            assert_error(&r, 413, "decoded_body_too_large");
            let m = r.json()["message"].as_str().unwrap().to_string();
            assert!(m.contains("max_decoded_bytes (4194304 bytes)"), "{m}");
        }
    }
    let after = vm_hwm_kib(pid);
    let growth_mib = after.saturating_sub(before) / 1024;
    eprintln!("{engine}: VmHWM {before} kB -> {after} kB (+{growth_mib} MiB)");
    assert!(growth_mib < 64, "peak RSS grew by {growth_mib} MiB");
    assert_eq!(s.up.count(), 1, "no bomb reached the upstream");
    assert_eq!(send(a, "/v1/logs", "", BODY.as_bytes()).status, 200);
}

fn corrupt_truncated_unknown_and_stacked_codings_are_refused(engine: &str) {
    let s = setup(engine, None);
    let a = s.relay.addr;
    let b = BODY.as_bytes();
    let g = gzip(b);
    let z = zstd(b);
    let mut flipped = zlib(b);
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0xff;
    let mut trailing = g.clone();
    trailing.extend_from_slice(b"garbage");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("gzip", g[..g.len() - 5].to_vec(), "truncated"),
        ("gzip", g[..g.len() / 2].to_vec(), "truncated"),
        ("zstd", z[..z.len() - 3].to_vec(), "truncated"),
        ("gzip", b.to_vec(), "not a valid gzip stream"),
        ("zstd", b.to_vec(), "not a valid zstd stream"),
        ("deflate", flipped, "not a valid deflate stream"),
        ("gzip", trailing, "7 bytes after the end"),
    ];
    for (coding, body, says) in &cases {
        let r = send(a, "/v1/logs", &ce(coding), body);
        assert_error(&r, 400, "invalid_encoding");
        let m = r.json()["message"].as_str().unwrap().to_string();
        assert!(m.contains(says), "{coding}: {m}");
    }
    for value in ["br", "compress", "gzip, zstd", "gzip, gzip"] {
        let r = send(a, "/v1/logs", &ce(value), &g);
        assert_error(&r, 415, "unsupported_content_encoding");
        assert_eq!(r.header("accept-encoding"), Some("gzip, deflate, zstd"));
        let m = r.json()["message"].as_str().unwrap().to_string();
        assert!(m.contains("gzip, deflate, zstd"), "{m}");
    }
    // Two header lines are one list: stacked.
    let r = send(a, "/v1/logs", &(ce("gzip") + &ce("gzip")), &gzip(&g));
    assert_error(&r, 415, "unsupported_content_encoding");
    assert_eq!(
        s.up.count(),
        0,
        "nothing of a refused body reaches the upstream"
    );
    // identity is no coding; an empty body is empty under every coding.
    let r = send(a, "/v1/logs", &ce("identity"), b);
    assert_eq!(r.status, 200);
    let r = send(a, "/v1/logs", &ce("gzip"), b"");
    assert_error(&r, 400, "empty_body");
    let refused = |reason: &str| {
        s.relay.metric(&format!(
            "relay_request_decode_refusals_total{{route=\"logs\",reason=\"{reason}\"}}"
        ))
    };
    assert_eq!(refused("invalid_encoding"), cases.len() as f64);
    assert_eq!(refused("unsupported_content_encoding"), 5.0);
    assert_eq!(send(a, "/v1/logs", "", b).status, 200, "relay still serves");
}

/// A route without a PII policy decodes too (limits, validity): the upstream gets the body
/// decoded, or with `forward_encoding = "same"` the bytes exactly as sent.
fn routes_without_a_policy_decode_too(engine: &str) {
    let s = setup(engine, None);
    let a = s.relay.addr;
    let b = BODY.as_bytes();
    for (coding, wire) in [
        ("gzip", gzip(b)),
        ("deflate", raw_deflate(b)),
        ("zstd", zstd(b)),
    ] {
        assert_eq!(send(a, "/v1/plain", &ce(coding), &wire).status, 200);
        let got = s.up.requests().pop().unwrap();
        assert_eq!(got.body, b, "{coding}: decoded, unscrubbed (no policy)");
        assert_eq!(got.header("content-encoding"), None);
        assert_eq!(send(a, "/v1/plain-same", &ce(coding), &wire).status, 200);
        let got = s.up.requests().pop().unwrap();
        assert_eq!(got.body, wire, "{coding}: the bytes as sent");
        assert_eq!(got.header("content-encoding"), Some(coding));
    }
    let r = send(a, "/v1/plain", &ce("gzip"), &gzip_bomb(1));
    assert_error(&r, 413, "expansion_ratio_exceeded");
    let r = send(a, "/v1/plain-same", &ce("zstd"), b"{}");
    assert_error(&r, 400, "invalid_encoding");
    assert_eq!(s.up.count(), 6, "refused bodies are not forwarded");
}

/// A spooled compressed original survives a SIGKILL with its coding: the broker frozen, two
/// compressed requests answered 200 from the spool, relay killed, the broker thawed, relay
/// started again on the same spool: the records replayed from disk carry `content-encoding`
/// and the bytes as sent.
fn spooled_original_keeps_its_coding_across_a_relay_kill(engine: &str) {
    let broker = Tansu::start();
    broker.create_topic(TOPIC);
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("pii.key");
    std::fs::write(&key_file, KEY).unwrap();
    let spool = tempfile::tempdir().unwrap();
    let up = StubUpstream::start(Behavior::default());
    let cfg = config_with_spool(
        engine,
        up.addr,
        Some(&broker.bootstrap()),
        &key_file,
        Some(spool.path()),
    );
    let relay = Relay::start(&cfg);
    let rid = |id: &str| format!("X-Request-Id: {id}\r\n");
    let b = BODY.as_bytes();
    let r = send(relay.addr, "/v1/spooled", &rid("warm"), b);
    assert_eq!(r.status, 200, "{}", relay.log());
    assert_eq!(read_topic(&broker.bootstrap(), TOPIC, 1, LONG).len(), 1);

    broker.pause();
    let cases = [("sp-gz", "gzip", gzip(b)), ("sp-zst", "zstd", zstd(b))];
    for (id, coding, wire) in &cases {
        let r = send(relay.addr, "/v1/spooled", &(rid(id) + &ce(coding)), wire);
        assert_eq!(
            r.status,
            200,
            "{id}: {:?}",
            String::from_utf8_lossy(&r.body)
        );
    }
    relay.signal("KILL");
    drop(relay);
    broker.resume();
    let relay = Relay::start(&cfg);
    // Both ids, however many copies (a Produce in flight at the kill may land too: at least
    // once); records are read again, one more each time, until both are there.
    let has = |got: &[relay_e2e::broker::ReadBack], id: &str| {
        got.iter()
            .any(|g| g.header("relay-request-id") == Some(id.as_bytes()))
    };
    let mut want = 3;
    let got = relay_e2e::wait_for(LONG, || {
        let got = read_topic(&broker.bootstrap(), TOPIC, want, Duration::from_secs(10));
        if cases.iter().all(|(id, _, _)| has(&got, id)) {
            return Some(got);
        }
        want = got.len() + 1;
        None
    })
    .unwrap_or_else(|| panic!("the spooled originals never reached Kafka: {}", relay.log()));
    for (id, coding, wire) in &cases {
        let copies: Vec<_> = got
            .iter()
            .filter(|g| g.header("relay-request-id") == Some(id.as_bytes()))
            .collect();
        assert!(
            !copies.is_empty(),
            "{id} is missing from Kafka: {}",
            relay.log()
        );
        for g in copies {
            assert_eq!(&g.payload, wire, "{id}");
            assert_eq!(
                g.header("content-encoding"),
                Some(coding.as_bytes()),
                "{id}"
            );
        }
    }
    let replayed = relay.metric(r#"relay_spool_replayed_records_total{worker="0"}"#);
    eprintln!("{engine}: {replayed} records replayed from the spool after the kill");
    assert!(
        replayed >= 2.0,
        "the broker was frozen: both came from the spool on disk"
    );
}

on_both_engines!(
    each_coding_round_trips_to_kafka_and_upstream,
    limits_at_just_under_and_just_over_the_boundary,
    bombs_get_413_within_bounded_memory,
    corrupt_truncated_unknown_and_stacked_codings_are_refused,
    spooled_original_keeps_its_coding_across_a_relay_kill,
    routes_without_a_policy_decode_too,
);
