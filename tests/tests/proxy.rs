//! The faithful proxy, black box: responses relayed byte for byte, keep-alive reuse, chunked
//! bodies, 100-continue, pipelining, framing attacks, limits and deadlines, upstream failures,
//! the stale-connection retry and TLS. Every case runs on both the io_uring and epoll engines.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use relay_e2e::*;

fn relay_for(engine: &str, up: &StubUpstream, extra: &str) -> Relay {
    let r = Relay::start(&basic_config(engine, up.addr, extra));
    assert_eq!(r.io_engine, engine, "{}", r.log());
    r
}

fn upstream_error_bodies_pass_byte_for_byte(engine: &str) {
    let up = StubUpstream::start(Behavior::default());
    let relay = relay_for(engine, &up, "");
    for (status, body) in [
        (400u16, &br#"{"error":"bad_event","detail":"field x"}"#[..]),
        (500, b"internal \x00\xff raw bytes"),
        (503, b""),
    ] {
        up.set(Behavior {
            status,
            body: body.to_vec(),
            headers: vec![("X-Tracking".into(), "kept".into())],
            ..Behavior::default()
        });
        let r = post(relay.addr, "/v1/logs", br#"{"e":1}"#);
        assert_eq!(r.status, status);
        assert_eq!(r.body, body);
        assert_eq!(r.header("x-tracking"), Some("kept"));
    }
    // Chunked and close-delimited upstream bodies arrive whole.
    let long: Vec<u8> = (0..5000u32).flat_map(|i| i.to_le_bytes()).collect();
    up.set(Behavior {
        status: 201,
        body: long.clone(),
        chunked: true,
        ..Behavior::default()
    });
    let r = post(relay.addr, "/v1/logs", b"{}");
    assert_eq!((r.status, r.body.len()), (201, long.len()));
    assert_eq!(r.body, long);
    up.set(Behavior {
        status: 202,
        body: long.clone(),
        close_delimited: true,
        ..Behavior::default()
    });
    let r = post(relay.addr, "/v1/logs", b"{}");
    assert_eq!(r.status, 202);
    assert_eq!(r.body, long);
}

fn keep_alive_reuses_one_upstream_connection(engine: &str) {
    let up = StubUpstream::start(Behavior::default());
    let relay = relay_for(engine, &up, "");
    let mut c = Client::connect(relay.addr);
    for i in 0..1000 {
        let r = c.post("/v1/logs", format!(r#"{{"n":{i}}}"#).as_bytes());
        assert_eq!(r.status, 200, "request {i}");
    }
    assert_eq!(up.count(), 1000);
    assert_eq!(
        up.connections.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one upstream connection for 1000 requests"
    );
    let reqs = up.requests();
    assert_eq!(reqs[999].body, br#"{"n":999}"#);
    // Forwarding headers.
    assert_eq!(reqs[0].header("x-forwarded-for"), Some("127.0.0.1"));
    assert!(reqs[0]
        .header("x-request-id")
        .is_some_and(|v| v.len() == 32));
    assert_eq!(reqs[0].header("host").unwrap(), up.addr.to_string());
}

fn request_headers_are_forwarded_faithfully(engine: &str) {
    let up = StubUpstream::start(Behavior::default());
    let relay = relay_for(engine, &up, "");
    let r = http_request(
        relay.addr,
        "POST /v1/logs?a=1&b=%20 HTTP/1.1\r\nHost: relay.example\r\nX-Request-Id: client-id-1\r\nX-Forwarded-For: 10.9.8.7\r\nConnection: keep-alive, X-Hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\nX-App: 1\r\nContent-Length: 2\r\n\r\n{}",
    );
    assert_eq!(r.status, 200);
    let got = &up.requests()[0];
    assert_eq!(got.target, "/v1/logs?a=1&b=%20");
    assert_eq!(got.header("x-request-id"), Some("client-id-1"));
    assert_eq!(got.header("x-forwarded-for"), Some("10.9.8.7, 127.0.0.1"));
    assert_eq!(got.header("x-app"), Some("1"));
    assert_eq!(
        got.header("x-hop"),
        None,
        "headers named by Connection are hop-by-hop"
    );
    assert_eq!(got.header("keep-alive"), None);
    assert_eq!(got.header("content-length"), Some("2"));
    // Absolute form is routed on its path; the upstream gets origin form.
    let r = http_request(relay.addr, "POST http://relay.example/v1/logs?q=1 HTTP/1.1\r\nHost: relay.example\r\nContent-Length: 2\r\n\r\n{}");
    assert_eq!(r.status, 200);
    assert_eq!(up.requests()[1].target, "/v1/logs?q=1");
}

fn chunked_request_bodies(engine: &str) {
    let up = StubUpstream::start(Behavior::default());
    let relay = relay_for(engine, &up, "");
    let mut c = Client::connect(relay.addr);
    c.send(b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\n{\"a\":\r\n");
    std::thread::sleep(Duration::from_millis(20));
    c.send(b"3\r\n12}\r\n0\r\nX-Trailer: t\r\n\r\n");
    let r = c.recv().unwrap();
    assert_eq!(r.status, 200);
    let got = &up.requests()[0];
    assert_eq!(got.body, br#"{"a":12}"#);
    assert_eq!(got.header("content-length"), Some("8"));
    assert_eq!(got.header("transfer-encoding"), None);
    // The connection is still usable.
    assert_eq!(c.post("/v1/logs", b"{}").status, 200);
}

fn expect_100_continue(engine: &str) {
    let up = StubUpstream::start(Behavior::default());
    let relay = relay_for(engine, &up, "");
    let mut s = TcpStream::connect(relay.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 7\r\n\r\n",
    )
    .unwrap();
    let mut buf = [0u8; 25];
    std::io::Read::read_exact(&mut s, &mut buf).unwrap();
    assert_eq!(&buf, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"{\"x\":1}").unwrap();
    let mut r = std::io::BufReader::new(s);
    let resp = read_response(&mut r).unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(up.requests()[0].body, b"{\"x\":1}");
    assert_eq!(up.requests()[0].header("expect"), None);
    // A too-large body announced with Expect gets 413 without 100 Continue.
    let mut s = TcpStream::connect(relay.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 99999999\r\n\r\n").unwrap();
    let resp = read_response(&mut std::io::BufReader::new(s)).unwrap();
    assert_eq!(resp.status, 413);
    assert_eq!(up.count(), 1);
}

fn pipelined_requests_answered_in_order(engine: &str) {
    let up = StubUpstream::start(Behavior::default());
    let relay = relay_for(engine, &up, "");
    let mut c = Client::connect(relay.addr);
    let mut batch = Vec::new();
    for i in 0..10 {
        let body = format!(r#"{{"i":{i}}}"#);
        batch.extend_from_slice(
            format!(
                "POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
    }
    // One in the middle goes nowhere (404), still answered in order.
    batch.extend_from_slice(b"GET /elsewhere HTTP/1.1\r\nHost: x\r\n\r\n");
    batch.extend_from_slice(b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}");
    c.send(&batch);
    for i in 0..10 {
        assert_eq!(c.recv().unwrap().status, 200, "response {i}");
    }
    assert_eq!(c.recv().unwrap().status, 404);
    assert_eq!(c.recv().unwrap().status, 200);
    let bodies: Vec<Vec<u8>> = up.requests().into_iter().map(|r| r.body).collect();
    let want: Vec<Vec<u8>> = (0..10)
        .map(|i| format!(r#"{{"i":{i}}}"#).into_bytes())
        .chain([b"{}".to_vec()])
        .collect();
    assert_eq!(bodies, want);
}

fn framing_attacks_get_400_and_never_reach_upstream(engine: &str) {
    let up = StubUpstream::start(Behavior::default());
    let relay = relay_for(engine, &up, "");
    let attacks: &[(&str, &str)] = &[
        ("POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "conflicting_framing"),
        ("POST /v1/logs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", "conflicting_framing"),
        ("POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello", "conflicting_content_length"),
        ("POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n{}", "conflicting_content_type"),
        ("POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", "invalid_content_length"),
        ("POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Length: 0x10\r\n\r\n", "invalid_content_length"),
        ("POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Length: 1 0\r\n\r\n", "invalid_content_length"),
        ("POST /v1/logs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", "unsupported_transfer_encoding"),
        ("POST /v1/logs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", "unsupported_transfer_encoding"),
        ("POST /v1/logs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "unsupported_transfer_encoding"),
        ("POST /v1/logs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", "unsupported_transfer_encoding"),
        ("POST /v1/logs HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "unsupported_transfer_encoding"),
        ("POST /v1/logs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", "invalid_chunk"),
        ("POST /v1/logs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n", "invalid_chunk"),
        ("POST /v1/logs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", "invalid_chunk"),
        ("POST /v1/logs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n", "invalid_chunk"),
        ("POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent Length: 5\r\n\r\nhello", "malformed_request"),
        ("POST /v1/logs HTTP/1.1\r\nHost: x\r\n Content-Length: 5\r\n\r\nhello", "malformed_request"),
        ("POST /v1/logs HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", "missing_host"),
        ("POST /v1/logs HTTP/1.1\r\nHost: a\r\nHost: b\r\nContent-Length: 2\r\n\r\n{}", "invalid_host"),
    ];
    for (raw, code) in attacks {
        let mut c = Client::connect(relay.addr);
        c.send(raw.as_bytes());
        let r = c.recv().unwrap_or_else(|| panic!("no answer to {raw:?}"));
        assert_eq!(r.status, 400, "{raw:?}");
        assert_eq!(r.json()["error"], *code, "{raw:?}");
        assert!(r.json()["message"].as_str().unwrap().len() > 10);
        assert_eq!(r.header("connection"), Some("close"));
        assert!(c.is_closed(), "connection closed after {raw:?}");
    }
    assert_eq!(up.count(), 0, "no attack reached the upstream");
    assert_eq!(up.bytes.load(std::sync::atomic::Ordering::SeqCst), 0);
}

fn limits_431_413_408(engine: &str) {
    let up = StubUpstream::start(Behavior::default());
    let relay = relay_for(
        engine,
        &up,
        "header_timeout_ms = 300\nbody_timeout_ms = 300\nmax_body_bytes = 1000",
    );
    // 431: too many headers, and too large a head.
    let many: String = (0..101).map(|i| format!("X-H{i}: v\r\n")).collect();
    let r = http_request(
        relay.addr,
        &format!("POST /v1/logs HTTP/1.1\r\nHost: x\r\n{many}Content-Length: 0\r\n\r\n"),
    );
    assert_eq!(
        (r.status, r.json()["error"].as_str().unwrap()),
        (431, "too_many_headers")
    );
    let big = "a".repeat(70 * 1024);
    let mut c = Client::connect(relay.addr);
    c.send(format!("POST /v1/logs HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes());
    let r = c.recv().unwrap();
    assert_eq!(
        (r.status, r.json()["error"].as_str().unwrap()),
        (431, "request_header_too_large")
    );
    // 413: by Content-Length and by chunked size.
    let r = http_request(
        relay.addr,
        "POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n",
    );
    assert_eq!(
        (r.status, r.json()["error"].as_str().unwrap()),
        (413, "payload_too_large")
    );
    let chunk = "x".repeat(600);
    let r = http_request(
        relay.addr,
        &format!("POST /v1/logs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n"),
    );
    assert_eq!(r.status, 413);
    // 408: a head that never completes, and a body that never completes.
    let mut c = Client::connect(relay.addr);
    c.send(b"POST /v1/logs HTTP/1.1\r\nHost: x\r\n");
    let r = c.recv().unwrap();
    assert_eq!(
        (r.status, r.json()["error"].as_str().unwrap()),
        (408, "request_timeout")
    );
    assert!(c.is_closed());
    let mut c = Client::connect(relay.addr);
    c.send(b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{\"a\"");
    let r = c.recv().unwrap();
    assert_eq!(r.status, 408);
    assert_eq!(up.count(), 0);
    // 404 and 405 are JSON too.
    let r = http_request(relay.addr, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(
        (r.status, r.json()["error"].as_str().unwrap()),
        (404, "no_route")
    );
    let r = http_request(relay.addr, "GET /v1/logs HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(
        (r.status, r.json()["error"].as_str().unwrap()),
        (405, "method_not_allowed")
    );
}

fn idle_keep_alive_is_closed(engine: &str) {
    let up = StubUpstream::start(Behavior::default());
    let relay = relay_for(engine, &up, "idle_timeout_ms = 200");
    let mut c = Client::connect(relay.addr);
    assert_eq!(c.post("/v1/logs", b"{}").status, 200);
    // Nothing more is sent: relay closes the idle connection quietly.
    assert!(c.is_closed());
}

/// Whether the next request arrives inside `keepalive_read_window_ms` (read by the receive
/// already posted) or after it (the connection idled bufferless, then read), it is served; the
/// same with the window off.
fn keep_alive_inside_and_after_the_read_window(engine: &str) {
    let up = StubUpstream::start(Behavior::default());
    for window in [5, 0] {
        let relay = relay_for(engine, &up, &format!("keepalive_read_window_ms = {window}"));
        let mut c = Client::connect(relay.addr);
        for i in 0..6 {
            if i % 2 == 1 {
                // Well past the window: the posted receive was cancelled.
                std::thread::sleep(Duration::from_millis(40));
            }
            let r = c.post("/v1/logs", format!(r#"{{"n":{i}}}"#).as_bytes());
            assert_eq!(r.status, 200, "window {window} ms, request {i}");
        }
        assert_eq!(up.requests().last().unwrap().body, br#"{"n":5}"#);
    }
}

fn http_1_0_closes_unless_keep_alive(engine: &str) {
    let up = StubUpstream::start(Behavior::default());
    let relay = relay_for(engine, &up, "");
    let mut c = Client::connect(relay.addr);
    c.send(b"POST /v1/logs HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}");
    let r = c.recv().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.is_closed());
    let mut c = Client::connect(relay.addr);
    c.send(b"POST /v1/logs HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n{}");
    let r = c.recv().unwrap();
    assert_eq!(r.header("connection"), Some("keep-alive"));
    c.send(b"POST /v1/logs HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n{}");
    assert_eq!(c.recv().unwrap().status, 200);
}

fn upstream_down_502_and_stall_504(engine: &str) {
    let dead = dead_addr();
    let relay = Relay::start(&basic_config(engine, dead, ""));
    let r = post(relay.addr, "/v1/logs", b"{}");
    assert_eq!(
        (r.status, r.json()["error"].as_str().unwrap()),
        (502, "upstream_unreachable")
    );

    let up = StubUpstream::start(Behavior {
        stall: true,
        ..Behavior::default()
    });
    let relay = relay_for(engine, &up, "");
    let r = post(relay.addr, "/v1/logs", b"{}");
    assert_eq!(
        (r.status, r.json()["error"].as_str().unwrap()),
        (504, "upstream_timeout")
    );
    assert_eq!(up.count(), 1);
}

fn stale_pooled_connection_is_never_used(engine: &str) {
    let up = StubUpstream::start(Behavior {
        close_after_response: true,
        ..Behavior::default()
    });
    let relay = relay_for(engine, &up, "\n[admin]\nlisten = \"127.0.0.1:0\"");
    let mut c = Client::connect(relay.addr);
    assert_eq!(c.post("/v1/logs", br#"{"n":1}"#).status, 200);
    // The upstream has closed the connection relay pooled; wait until it has surely done so.
    wait_for(Duration::from_secs(5), || {
        (up.connections.load(std::sync::atomic::Ordering::SeqCst) == 1).then_some(())
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let r = c.post("/v1/logs", br#"{"n":2}"#);
    assert_eq!(r.status, 200, "the client never sees the stale connection");
    assert_eq!(up.count(), 2);
    assert_eq!(up.connections.load(std::sync::atomic::Ordering::SeqCst), 2);
    // Found closed before reuse (never written to), so no retry was needed.
    assert_eq!(
        relay.metric("relay_upstream_connections_stale_total{upstream=\"tracking\"}"),
        1.0
    );
    assert_eq!(
        relay.metric("relay_upstream_retries_total{upstream=\"tracking\"}"),
        0.0
    );
}

fn tls_upstream_with_test_ca(engine: &str) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "relay test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let srv_key = rcgen::KeyPair::generate().unwrap();
    let srv_params = rcgen::CertificateParams::new(vec!["tracking.test".to_string()]).unwrap();
    let srv = srv_params.signed_by(&srv_key, &ca, &ca_key).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let server_cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![srv.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(srv_key.serialize_der().into()),
        )
        .unwrap();
    let up = StubUpstream::start_tls(
        Behavior {
            status: 400,
            body: br#"{"error":"over tls"}"#.to_vec(),
            ..Behavior::default()
        },
        std::sync::Arc::new(server_cfg),
    );
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let cfg = basic_config(engine, up.addr, "").replace(
        "read_timeout_ms = 1500",
        &format!("read_timeout_ms = 1500\n[upstreams.tls]\nca_file = \"{}\"\nserver_name = \"tracking.test\"", ca_file.display()),
    );
    let relay = Relay::start(&cfg);
    let mut c = Client::connect(relay.addr);
    for _ in 0..3 {
        let r = c.post("/v1/logs", br#"{"secure":true}"#);
        assert_eq!(r.status, 400);
        assert_eq!(r.body, br#"{"error":"over tls"}"#);
    }
    assert_eq!(up.count(), 3);
    assert_eq!(
        up.connections.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "TLS connection kept alive"
    );
    assert_eq!(
        up.requests()[0].header("host"),
        Some(format!("tracking.test:{}", up.addr.port()).as_str())
    );

    // Verification is on: the wrong name fails with 502 upstream_tls, nothing is sent.
    let cfg = basic_config(engine, up.addr, "").replace(
        "read_timeout_ms = 1500",
        &format!("read_timeout_ms = 1500\n[upstreams.tls]\nca_file = \"{}\"\nserver_name = \"other.test\"", ca_file.display()),
    );
    let relay = Relay::start(&cfg);
    let r = post(relay.addr, "/v1/logs", b"{}");
    assert_eq!(
        (r.status, r.json()["error"].as_str().unwrap()),
        (502, "upstream_tls")
    );
    assert_eq!(up.count(), 3);
}

fn weighted_round_robin_over_nodes(engine: &str) {
    let a = StubUpstream::start(Behavior::default());
    let b = StubUpstream::start(Behavior::default());
    let cfg = basic_config(engine, a.addr, "").replace(
        &format!("nodes = [\"{}\"]", a.addr),
        &format!(
            "nodes = [{{ address = \"{}\", weight = 3 }}, {{ address = \"{}\", weight = 1 }}]",
            a.addr, b.addr
        ),
    );
    let relay = Relay::start(&cfg);
    let mut c = Client::connect(relay.addr);
    for _ in 0..40 {
        assert_eq!(c.post("/v1/logs", b"{}").status, 200);
    }
    assert_eq!((a.count(), b.count()), (30, 10));
}

fn sigterm_finishes_in_flight_and_exits_0(engine: &str) {
    let up = StubUpstream::start(Behavior::default());
    let mut relay = relay_for(engine, &up, "\n[admin]\nlisten = \"127.0.0.1:0\"");
    let mut idle = Client::connect(relay.addr);
    assert_eq!(idle.post("/v1/logs", b"{}").status, 200);
    // A request whose body is still arriving when SIGTERM comes is finished, then closed.
    let mut c = Client::connect(relay.addr);
    c.send(b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\n{\"a\"");
    // Signal only once relay holds both connections (one not yet accepted would be refused).
    wait_for(Duration::from_secs(10), || {
        (relay.metric("relay_connections_open") == 2.0).then_some(())
    })
    .expect("relay accepted both connections");
    relay.signal("TERM");
    // Once the idle connection is closed, the worker is shutting down; then the body completes.
    assert!(
        idle.is_closed(),
        "idle keep-alive connections are closed at shutdown"
    );
    c.send(b":12}");
    let r = c.recv().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    let st = relay
        .terminate(Duration::from_secs(20))
        .expect("relay exits");
    assert_eq!(st.code(), Some(0));
    assert_eq!(up.count(), 2);
}

on_both_engines!(
    upstream_error_bodies_pass_byte_for_byte,
    keep_alive_reuses_one_upstream_connection,
    request_headers_are_forwarded_faithfully,
    chunked_request_bodies,
    expect_100_continue,
    pipelined_requests_answered_in_order,
    framing_attacks_get_400_and_never_reach_upstream,
    limits_431_413_408,
    idle_keep_alive_is_closed,
    keep_alive_inside_and_after_the_read_window,
    http_1_0_closes_unless_keep_alive,
    upstream_down_502_and_stall_504,
    stale_pooled_connection_is_never_used,
    tls_upstream_with_test_ca,
    weighted_round_robin_over_nodes,
    sigterm_finishes_in_flight_and_exits_0,
);
