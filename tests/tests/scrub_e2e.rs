//! PII scrubbing through the running relay, black box: the upstream receives only pseudonyms
//! (body, query parameters and headers named in the policy) and `X-Relay-Key-Id`; NDJSON keeps
//! its lines; bodies that cannot be scrubbed get a 4xx with a machine-readable reason and the
//! upstream receives nothing; `relay scrub` prints exactly what the upstream received;
//! `path_params` segments are hashed in the forwarded target, hostile targets hash predictably
//! or get 400 `ambiguous_path`, and `relay check` refuses a pattern that cannot apply.

use std::path::Path;
use std::process::Command;

use relay_e2e::*;

const KEY: &str = "e2e-pii-key-0123456789abcdef-0123456789abcdef";

/// A config with route `logs` (`/v1/logs`, policy `default`, HMAC key `k1`) and an admin port.
fn scrub_config(engine: &str, upstream: std::net::SocketAddr, key_file: &Path) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
workers = 1
io_engine = "{engine}"

[admin]
listen = "127.0.0.1:0"

[[upstreams]]
name = "tracking"
nodes = ["{upstream}"]
connect_timeout_ms = 1000
read_timeout_ms = 1500

[[routes]]
name = "logs"
path = "/v1/logs"
methods = ["POST"]
upstream = "tracking"
pii = "default"

[pii.default]
fields = ["user_id", "device_id", "order_no"]
paths = ["user.id", "events[].device.id"]
query_params = ["uid"]
headers = ["x-device-id"]
hash = "hmac-sha256"
key_file = "{}"
key_id = "k1"
"#,
        key_file.display()
    )
}

struct Setup {
    up: StubUpstream,
    relay: Relay,
    _keys: tempfile::TempDir,
}

fn setup(engine: &str) -> Setup {
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("pii.key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let up = StubUpstream::start(Behavior::default());
    let relay = Relay::start(&scrub_config(engine, up.addr, &key_file));
    assert_eq!(relay.io_engine, engine, "{}", relay.log());
    Setup {
        up,
        relay,
        _keys: keys,
    }
}

fn send(relay: &Relay, target: &str, headers: &str, body: &[u8]) -> Response {
    let mut c = Client::connect(relay.addr);
    c.send(
        format!(
            "POST {target} HTTP/1.1\r\nHost: relay\r\n{headers}Content-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    c.send(body);
    c.recv().expect("a response")
}

fn is_pseudonym(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The pseudonym relay gives `value`, learned through the query string (`uid=value`).
fn pseudonym_via_query(s: &Setup, value: &str) -> String {
    let before = s.up.count();
    let r = send(
        &s.relay,
        &format!("/v1/logs?uid={value}"),
        "Content-Type: application/json\r\n",
        b"{}",
    );
    assert_eq!(r.status, 200);
    let got = s.up.requests()[before].target.clone();
    got.strip_prefix("/v1/logs?uid=").unwrap().to_string()
}

const BODY: &str = "{\n  \"event\": \"purchase\",\n  \"user_id\": \"alice-5f1e\",\n  \
    \"user\": {\"id\": \"alice-5f1e\", \"name\": \"kept\"},\n  \
    \"events\": [ {\"device\": {\"id\": \"dev-77ab\", \"os\": \"ios\"}}, {\"device\": {\"id\": \"dev-77ab\"}} ],\n  \
    \"order_no\": 987654321,\n  \"n\": null\n}\n";

fn upstream_receives_only_pseudonyms(engine: &str) {
    let s = setup(engine);
    let r = send(
        &s.relay,
        "/v1/logs?x=1&uid=alice-5f1e&y=%20",
        "Content-Type: application/json; charset=utf-8\r\nX-Device-Id: dev-77ab\r\nX-Other: stays\r\n",
        BODY.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", s.relay.log());
    let got = s.up.requests().pop().unwrap();
    let body = String::from_utf8(got.body.clone()).unwrap();
    for raw in ["alice-5f1e", "dev-77ab", "987654321"] {
        assert!(!body.contains(raw), "{raw} leaked in the body: {body}");
        assert!(!got.target.contains(raw), "{raw} leaked in the query");
        for (n, v) in &got.headers {
            assert!(!v.contains(raw), "{raw} leaked in header {n}");
        }
    }
    assert_eq!(got.header("x-relay-key-id"), Some("k1"));
    assert_eq!(got.header("x-other"), Some("stays"));
    // The query keeps its order and other parameters; the header and query pseudonyms are the
    // ones the body carries for the same values.
    let q = got.target.strip_prefix("/v1/logs?").unwrap();
    let parts: Vec<&str> = q.split('&').collect();
    assert_eq!((parts[0], parts[2]), ("x=1", "y=%20"));
    let uid = parts[1].strip_prefix("uid=").unwrap();
    assert!(is_pseudonym(uid));
    let dev = got.header("x-device-id").unwrap();
    assert!(is_pseudonym(dev) && dev != uid);
    let order = pseudonym_via_query(&s, "987654321");
    // Byte for byte: the input with only the PII values replaced; formatting kept.
    let want = BODY
        .replace("\"alice-5f1e\"", &format!("\"{uid}\""))
        .replace("\"dev-77ab\"", &format!("\"{dev}\""))
        .replace("987654321", &format!("\"{order}\""));
    assert_eq!(body, want);
    assert_eq!(
        s.relay
            .metric("relay_pii_fields_hashed_total{route=\"logs\"}"),
        // 5 body values (null is not one), the header, and the query values (this request's
        // uid and the one pseudonym_via_query sent), as relay-pii-count counts them.
        8.0
    );
}

fn ndjson_keeps_its_lines(engine: &str) {
    let s = setup(engine);
    let body = "{\"user_id\":\"bob-1\",\"a\":1}\n\n{\"b\":2, \"device_id\" : \"dev-2\"}\r\n{\"user_id\":\"bob-1\"}\n";
    let r = send(
        &s.relay,
        "/v1/logs",
        "Content-Type: application/x-ndjson\r\n",
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", s.relay.log());
    let got = String::from_utf8(s.up.requests().pop().unwrap().body).unwrap();
    let bob = pseudonym_via_query(&s, "bob-1");
    let dev = pseudonym_via_query(&s, "dev-2");
    let want = body
        .replace("\"bob-1\"", &format!("\"{bob}\""))
        .replace("\"dev-2\"", &format!("\"{dev}\""));
    assert_eq!(got, want);
    assert_eq!(got.split('\n').count(), body.split('\n').count());
}

fn unscrubbable_bodies_are_refused_and_never_forwarded(engine: &str) {
    let s = setup(engine);
    let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
    let cases: Vec<(&str, &[u8], u16, &str)> = vec![
        (
            "Content-Type: application/json\r\n",
            b"{\"user_id\":\"carol-9\"",
            400,
            "invalid_json",
        ),
        (
            "Content-Type: application/json\r\n",
            b"{\"user_id\":\"carol-9\",}",
            400,
            "invalid_json",
        ),
        (
            "Content-Type: application/json\r\n",
            b"{\"user_id\":\"\xff\"}",
            400,
            "invalid_utf8",
        ),
        (
            "Content-Type: application/json\r\n",
            deep.as_bytes(),
            400,
            "too_deep",
        ),
        (
            "Content-Type: application/x-ndjson\r\n",
            b"{\"user_id\":1}\n{oops}\n",
            400,
            "invalid_json",
        ),
        (
            "Content-Type: text/plain\r\n",
            b"{\"user_id\":\"carol-9\"}",
            415,
            "unsupported_media_type",
        ),
        (
            "Content-Type: application/json\r\nContent-Encoding: br\r\n",
            b"{\"user_id\":\"carol-9\"}",
            415,
            "unsupported_content_encoding",
        ),
        (
            "Content-Type: application/json\r\n",
            b"  \n ",
            400,
            "empty_body",
        ),
    ];
    for (headers, body, status, code) in &cases {
        let r = send(&s.relay, "/v1/logs?uid=carol-9", headers, body);
        assert_eq!(
            r.status,
            *status,
            "{code}: {:?}",
            String::from_utf8_lossy(&r.body)
        );
        let v = r.json();
        assert_eq!(v["error"], *code);
        assert!(
            !String::from_utf8_lossy(&r.body).contains("carol-9"),
            "the error echoes PII"
        );
    }
    assert_eq!(
        s.up.count(),
        0,
        "nothing of a refused request reaches the upstream"
    );
    for (code, n) in [
        ("invalid_json", 3.0),
        ("invalid_utf8", 1.0),
        ("too_deep", 1.0),
        ("unsupported_media_type", 1.0),
        ("unsupported_content_encoding", 1.0),
        ("empty_body", 1.0),
    ] {
        assert_eq!(
            s.relay.metric(&format!(
                "relay_rejected_requests_total{{reason=\"{code}\"}}"
            )),
            n,
            "{code}"
        );
    }
}

#[test]
fn upstream_receives_only_pseudonyms_io_uring() {
    upstream_receives_only_pseudonyms("io_uring");
}
#[test]
fn upstream_receives_only_pseudonyms_epoll() {
    upstream_receives_only_pseudonyms("epoll");
}
#[test]
fn ndjson_keeps_its_lines_io_uring() {
    ndjson_keeps_its_lines("io_uring");
}
#[test]
fn ndjson_keeps_its_lines_epoll() {
    ndjson_keeps_its_lines("epoll");
}
#[test]
fn unscrubbable_bodies_are_refused_io_uring() {
    unscrubbable_bodies_are_refused_and_never_forwarded("io_uring");
}
#[test]
fn unscrubbable_bodies_are_refused_epoll() {
    unscrubbable_bodies_are_refused_and_never_forwarded("epoll");
}

/// `relay scrub --config FILE --route NAME FILE` prints exactly what the upstream received.
#[test]
fn relay_scrub_prints_what_the_upstream_receives() {
    let s = setup("epoll");
    let fixtures: Vec<(&str, Vec<u8>)> = vec![
        ("application/json", BODY.as_bytes().to_vec()),
        (
            "application/x-ndjson",
            b"{\"user_id\":\"d-1\"}\n\n{\"events\":[{\"device\":{\"id\":[1,{\"a\" : 2}]}}]}\n"
                .to_vec(),
        ),
        (
            "application/json",
            br#"[{"user":{"id":"\u0065ve"}},{"order_no":{"x":true}}]"#.to_vec(),
        ),
    ];
    for (i, (ct, body)) in fixtures.iter().enumerate() {
        let r = send(
            &s.relay,
            "/v1/logs",
            &format!("Content-Type: {ct}\r\n"),
            body,
        );
        assert_eq!(r.status, 200);
        let received = s.up.requests().pop().unwrap().body;
        let file = s.relay.dir.path().join(format!("fixture{i}.json"));
        std::fs::write(&file, body).unwrap();
        let out = Command::new(relay_bin())
            .arg("scrub")
            .arg("--config")
            .arg(&s.relay.config_path)
            .arg("--route")
            .arg("logs")
            .arg("--content-type")
            .arg(ct)
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, received, "fixture {i}");
    }
    // Standard input (`-`) gives the same bytes.
    let mut child = Command::new(relay_bin())
        .args(["scrub", "--route", "logs", "--config"])
        .arg(&s.relay.config_path)
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), BODY.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let r = send(
        &s.relay,
        "/v1/logs",
        "Content-Type: application/json\r\n",
        BODY.as_bytes(),
    );
    assert_eq!(r.status, 200);
    assert_eq!(out.stdout, s.up.requests().pop().unwrap().body);
    // A body the proxy would refuse: non-zero exit with the reason, nothing on stdout.
    let file = s.relay.dir.path().join("bad.json");
    std::fs::write(&file, b"{\"user_id\":").unwrap();
    let out = Command::new(relay_bin())
        .args(["scrub", "--route", "logs", "--config"])
        .arg(&s.relay.config_path)
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid_json"));
}

/// The egress guard (`[pii.NAME.guard]`): `reject` refuses with 422 `pii_detected` whether the
/// data is in the body, the query or a header, and nothing reaches the upstream; `hash` replaces
/// the matched span; `relay scrub --receipt` prints the receipt of exactly what was forwarded.
#[test]
fn egress_guard_rejects_or_hashes_and_receipts_match() {
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("pii.key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let up = StubUpstream::start(Behavior::default());
    let cfg = format!(
        "{}\n[pii.default.guard]\nemail = \"reject\"\ncard = \"hash\"\n",
        scrub_config("epoll", up.addr, &key_file)
    );
    let relay = Relay::start(&cfg);
    let json = "Content-Type: application/json\r\n";
    for (target, headers, body, place) in [
        (
            "/v1/logs",
            json.to_string(),
            r#"{"user_id":"u1","note":"write to carol@example.com"}"#,
            "$.note",
        ),
        (
            "/v1/logs?to=carol%40example.com",
            json.to_string(),
            r#"{"user_id":"u1"}"#,
            "query.to",
        ),
        (
            "/v1/logs",
            format!("{json}X-Note: carol@example.com\r\n"),
            r#"{"user_id":"u1"}"#,
            "header.x-note",
        ),
    ] {
        let r = send(&relay, target, &headers, body.as_bytes());
        assert_eq!(r.status, 422, "{}", String::from_utf8_lossy(&r.body));
        let text = String::from_utf8_lossy(&r.body).to_string();
        assert_eq!(r.json()["error"], "pii_detected");
        assert!(text.contains(place) && text.contains("email"), "{text}");
        assert!(!text.contains("carol"), "the error echoes PII: {text}");
    }
    assert_eq!(
        up.count(),
        0,
        "nothing of a refused request reaches the upstream"
    );
    assert_eq!(
        relay.metric("relay_rejected_requests_total{reason=\"pii_detected\"}"),
        3.0
    );

    let body = r#"{"user_id":"u1","pay":"card 4111 1111 1111 1111 ok"}"#;
    let r = send(&relay, "/v1/logs", json, body.as_bytes());
    assert_eq!(r.status, 200);
    let got = up.requests().pop().unwrap().body;
    let got_s = String::from_utf8(got.clone()).unwrap();
    assert!(
        !got_s.contains("4111") && got_s.contains("\"card "),
        "{got_s}"
    );

    let file = relay.dir.path().join("card.json");
    std::fs::write(&file, body).unwrap();
    let out = Command::new(relay_bin())
        .args(["scrub", "--receipt", "--route", "logs", "--config"])
        .arg(&relay.config_path)
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let receipt = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = receipt.lines().collect();
    assert_eq!(lines.len(), 3, "{receipt}");
    assert!(lines[0].starts_with("relay-policy: default:"), "{receipt}");
    let sha = lines[1].strip_prefix("relay-scrubbed-sha256: ").unwrap();
    assert_eq!(sha, relay::scrub::hashing::Hasher::Sha256.hex(&got));
    assert_eq!(lines[2], "relay-pii-count: 2");
}

/// Route `users` (`/users/` prefix, policy `default`) added to [`scrub_config`]; with
/// `path_params` on, `/users/{user_id}/events` segments are hashed in the forwarded target.
fn path_config(up: std::net::SocketAddr, key_file: &Path, on: bool) -> String {
    let pp = if on {
        "path_params = [\"/users/{user_id}/events\"]\n"
    } else {
        ""
    };
    format!(
        "{}{pp}\n[[routes]]\nname = \"users\"\npath = \"/users/\"\nmatch = \"prefix\"\nmethods = [\"POST\"]\nupstream = \"tracking\"\npii = \"default\"\n",
        scrub_config("epoll", up, key_file)
    )
}

/// The pseudonym of `encoded` (percent-encoded) learned through the query string.
fn pseudonym_of(relay: &Relay, up: &StubUpstream, encoded: &str) -> String {
    let before = up.count();
    let r = send(
        relay,
        &format!("/v1/logs?uid={encoded}"),
        "Content-Type: application/json\r\n",
        b"{}",
    );
    assert_eq!(r.status, 200);
    let t = up.requests()[before].target.clone();
    let h = t.strip_prefix("/v1/logs?uid=").unwrap().to_string();
    assert!(is_pseudonym(&h), "{t}");
    h
}

/// `path_params`: the named segments are hashed in the forwarded target (the query keeps its
/// own rules), the same requests pass unchanged when the option is off, and hostile targets
/// either hash predictably (encoded slashes and bytes, dot-like parameters, long segments) or
/// get 400 `ambiguous_path` (paths that match only once normalised), with nothing forwarded.
#[test]
fn path_params_hash_named_segments_and_hostile_targets_hash_predictably_or_get_400() {
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("pii.key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let up = StubUpstream::start(Behavior::default());
    let relay = Relay::start(&path_config(up.addr, &key_file, true));
    let json = "Content-Type: application/json\r\n";
    let h_u1 = pseudonym_of(&relay, &up, "u-1");

    // Hashed, with the query's own rule applied too; the receipt count includes both.
    let before = up.count();
    let r = send(&relay, "/users/u-1/events?uid=u-1&x=u-1", json, b"{}");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        up.requests()[before].target,
        format!("/users/{h_u1}/events?uid={h_u1}&x=u-1")
    );
    // Other paths of the route are forwarded as sent; so is an empty parameter segment (no
    // value to hash, and it matches no pattern even once normalised).
    for t in [
        "/users/u-1/profile",
        "/users//events",
        "/users/u-1/events/x",
    ] {
        let before = up.count();
        assert_eq!(send(&relay, t, json, b"{}").status, 200, "{t}");
        assert_eq!(up.requests()[before].target, t);
    }
    // Predictable: a segment is hashed as its percent-decoded bytes, the same pseudonym the
    // query (and a body value) gives; an encoded slash is part of the value; a non-UTF-8 byte
    // and a dot-like parameter are hashed like any other; long segments are hashed whole.
    let long = "a".repeat(8000);
    for (seg, query_form) in [
        ("a%2Fb", "a%2Fb"),
        ("a%40b", "a%40b"),
        ("%FF", "%FF"),
        ("%2e%2e", "%2e%2e"),
        ("caf%C3%A9", "caf%C3%A9"),
        (long.as_str(), long.as_str()),
    ] {
        let want = pseudonym_of(&relay, &up, query_form);
        let before = up.count();
        let t = format!("/users/{seg}/events");
        let r = send(&relay, &t, json, b"{}");
        assert_eq!(r.status, 200, "{seg}: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(
            up.requests()[before].target,
            format!("/users/{want}/events"),
            "{}",
            &seg[..seg.len().min(20)]
        );
    }
    // Paths that match the pattern only once normalised: 400, nothing forwarded, the message
    // names the pattern and never the value.
    let before = up.count();
    for t in [
        "/users/u-1//events",
        "/users/u-1/events/",
        "/users/u-1/./events",
        "/users/x/../u-1/events",
        "/users/u-1/EVENTS",
        "/users/u-1%2Fevents",
        "/users/u-1\\events",
    ] {
        let r = send(&relay, t, json, b"{}");
        assert_eq!(r.status, 400, "{t}: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["error"], "ambiguous_path", "{t}");
        let m = r.json()["message"].as_str().unwrap().to_string();
        assert!(
            m.contains("/users/{user_id}/events") && !m.contains("u-1"),
            "{m}"
        );
    }
    assert_eq!(
        up.count(),
        before,
        "nothing of a refused path was forwarded"
    );
    assert_eq!(
        relay.metric("relay_rejected_requests_total{reason=\"ambiguous_path\"}"),
        7.0
    );
    // A raw non-UTF-8 byte in the target (400 `malformed_request`), and a target over
    // max_header_bytes (431): refused by the HTTP layer, nothing forwarded.
    let mut c = Client::connect(relay.addr);
    c.send(b"POST /users/\xff/events HTTP/1.1\r\nHost: relay\r\nContent-Length: 2\r\n\r\n{}");
    let r = c.recv().expect("a response");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "malformed_request");
    let huge = format!("/users/{}/events", "b".repeat(70_000));
    let r = send(&relay, &huge, json, b"{}");
    assert_eq!(r.status, 431);
    assert_eq!(up.count(), before);

    // Off: the same requests pass unchanged (hostile ones included).
    let up_off = StubUpstream::start(Behavior::default());
    let off = Relay::start(&path_config(up_off.addr, &key_file, false));
    for t in [
        "/users/u-1/events",
        "/users/a%2Fb/events",
        "/users/u-1//events",
        "/users/u-1/events/",
    ] {
        let before = up_off.count();
        assert_eq!(send(&off, t, json, b"{}").status, 200, "{t}");
        assert_eq!(up_off.requests()[before].target, t);
    }
}

/// `relay check` refuses a `path_params` pattern that no route of its policy can reach, and
/// names the pattern and the routes; and PII rules on headers relay handles itself, by name.
#[test]
fn relay_check_refuses_a_path_pattern_that_cannot_apply() {
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("pii.key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("relay.toml");
    let up = dead_addr();
    let check = |text: String| {
        std::fs::write(&f, text).unwrap();
        Command::new(relay_bin())
            .args(["check", "--config"])
            .arg(&f)
            .output()
            .unwrap()
    };
    let out = check(format!(
        "{}path_params = [\"/users/{{user_id}}/events\"]\n",
        scrub_config("epoll", up, &key_file)
    ));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pii.default.path_params[0]")
            && err.contains("\"/users/{user_id}/events\"")
            && err.contains("logs (exact \"/v1/logs\")"),
        "{err}"
    );
    let out = check(path_config(up, &key_file, true));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // PII header rules on headers relay handles itself are refused by name too.
    let out = check(scrub_config("epoll", up, &key_file).replace(
        "headers = [\"x-device-id\"]",
        "headers = [\"x-device-id\", \"X-Forwarded-For\", \"x-relay-policy\"]",
    ));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for (i, h) in [(1, "X-Forwarded-For"), (2, "x-relay-policy")] {
        assert!(
            err.contains(&format!("pii.default.headers[{i}]"))
                && err.contains(&format!("the rule \"{h}\""))
                && err.contains("relay handles itself"),
            "{err}"
        );
    }
}
