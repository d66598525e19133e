//! A panic while handling one request ends that connection only (issue 10, item 7): the client
//! gets 500 `internal_error`, `relay_panics_total` counts it, and the worker, its listener and
//! its other connections go on. Uses the binary built with the `fault-injection` feature.

use relay_e2e::*;

fn panic_ends_one_connection_only(engine: &str) {
    let up = StubUpstream::start(Behavior::default());
    let cfg = format!(
        "{}\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        basic_config(engine, up.addr, "")
    );
    let relay = Relay::start_with(
        &cfg,
        RelayOptions {
            bin: Some(relay_bin_with_fault_injection()),
            ..RelayOptions::default()
        },
    );
    // A keep-alive connection that stays open across the panic on another one.
    let mut other = Client::connect(relay.addr);
    assert_eq!(other.post("/v1/logs", b"{}").status, 200);

    let mut c = Client::connect(relay.addr);
    c.send(
        b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nX-Relay-Fault: panic\r\nContent-Length: 2\r\n\r\n{}",
    );
    let r = c.recv().expect("a 500 before the connection closes");
    assert_eq!(
        (r.status, r.json()["error"].as_str().unwrap()),
        (500, "internal_error")
    );
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.is_closed());

    assert_eq!(
        other.post("/v1/logs", b"{}").status,
        200,
        "other connections go on"
    );
    assert_eq!(
        post(relay.addr, "/v1/logs", b"{}").status,
        200,
        "the listener goes on"
    );
    assert_eq!(relay.metric("relay_panics_total"), 1.0);
    assert_eq!(up.count(), 3, "the panicking request was not forwarded");
}

#[test]
fn io_uring() {
    panic_ends_one_connection_only("io_uring");
}

#[test]
fn epoll() {
    panic_ends_one_connection_only("epoll");
}
