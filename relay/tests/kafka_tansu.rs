//! The Kafka path against a real broker process (tansu, memory storage): round trip,
//! backpressure with the broker frozen (SIGSTOP) and thawed, with the broker killed and
//! restarted, and the shutdown flush.

mod kafka_support;

use kafka_support::*;

fn tansu() -> Tansu {
    assert!(
        tansu_bin().is_some(),
        "tansu is not installed: run `cargo xtask setup`"
    );
    Tansu::start()
}

#[test]
fn tansu_roundtrip_is_byte_identical_and_counted() {
    let b = tansu();
    let r = roundtrip(&b, "app-log-topic", 2000, 4);
    eprintln!("tansu roundtrip: {r}");
}

#[test]
fn tansu_backpressure_rejects_when_full_and_recovers() {
    let mut b = tansu();
    let (accepted, rejected, r) = backpressure(&mut b, "bp-topic");
    eprintln!("tansu backpressure: accepted={accepted} rejected={rejected} {r}");
}

#[test]
fn tansu_killed_and_restarted_without_idempotence_recovers() {
    let mut b = TansuRestart(tansu());
    let (accepted, rejected, r) = backpressure(&mut b, "restart-topic");
    eprintln!("tansu kill+restart: accepted={accepted} rejected={rejected} {r}");
}

#[test]
fn tansu_shutdown_flushes_everything_under_load() {
    let b = tansu();
    let r = shutdown_flushes_under_load(&b, "flush-topic", 5000);
    eprintln!("tansu shutdown under load: {r}");
}

#[test]
fn tansu_shutdown_with_broker_down_reports_pending() {
    let mut b = tansu();
    let r = shutdown_with_broker_down(&mut b, "down-topic");
    eprintln!("tansu shutdown with broker down: {r}");
}
