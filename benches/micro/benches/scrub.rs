//! PII scrubbing micro-benchmark: one JSON event of about 0.5, 1 and 4 KB with 3 PII fields
//! (`user_id`, `device_id`, `order_no`), scrubbed in place with HMAC-SHA-256 through the same
//! `Scrubber::scrub_body` the proxy calls. Criterion reports time per iteration (= ns per event)
//! and throughput in bytes of input (MB/s).
//!
//! Also, for the split: `walk_only_no_pii` (same events, nothing matches: the validating walk
//! and copy) and `hmac_3_values` (the three pseudonyms alone).
//!
//! Run: `cargo bench -p relay-micro --bench scrub`

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use relay::scrub::{PiiPolicyConfig, Scrubber};

/// A realistic app log event padded to about `size` bytes.
fn event(size: usize) -> Vec<u8> {
    let head = r#"{"event":"purchase","ts":"2026-11-22T05:40:00.123Z","app":{"name":"shop","version":"7.4.1","build":20261121},"user_id":"u-8f14e45fceea167a5a36dedd4bea2543","device_id":"3F2504E0-4F89-11D3-9A0C-0305E82C3301","session":{"id":"s-42","start":1763790000,"screen":"checkout"},"order_no":987654321,"items":[{"sku":"A-1","qty":2,"price":19.99},{"sku":"B-7","qty":1,"price":5.5}],"props":{"#;
    let mut s = String::from(head);
    let mut i = 0;
    while s.len() + 40 < size {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!("\"k{i:03}\":\"value-{i:05}-lorem ipsum\""));
        i += 1;
    }
    s.push_str("}}");
    s.into_bytes()
}

fn scrubber(fields: &[&str]) -> Scrubber {
    std::env::set_var("RELAY_BENCH_PII_KEY", "0123456789abcdef0123456789abcdef");
    Scrubber::new(&PiiPolicyConfig {
        fields: fields.iter().map(|f| f.to_string()).collect(),
        key_env: Some("RELAY_BENCH_PII_KEY".into()),
        key_id: Some("bench".into()),
        ..PiiPolicyConfig::default()
    })
    .expect("bench policy")
}

fn bench(c: &mut Criterion) {
    let s = scrubber(&["user_id", "device_id", "order_no"]);
    let mut g = c.benchmark_group("scrub_event_3_pii");
    for size in [512usize, 1024, 4096] {
        let body = event(size);
        let out = s
            .scrub_body(Some("application/json"), None, &body)
            .expect("valid event");
        assert_eq!(out.fields_hashed, 3);
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_with_input(
            BenchmarkId::from_parameter(format!("{}B", body.len())),
            &body,
            |b, body| {
                b.iter(|| {
                    s.scrub_body(Some("application/json"), None, black_box(body))
                        .expect("valid event")
                })
            },
        );
    }
    g.finish();

    // The same events with a policy that matches nothing: the validating walk and copy alone.
    let none = scrubber(&["no_such_field"]);
    let mut g = c.benchmark_group("walk_only_no_pii");
    for size in [512usize, 1024, 4096] {
        let body = event(size);
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_with_input(
            BenchmarkId::from_parameter(format!("{}B", body.len())),
            &body,
            |b, body| {
                b.iter(|| {
                    none.scrub_body(Some("application/json"), None, black_box(body))
                        .expect("valid")
                })
            },
        );
    }
    g.finish();

    // The three HMAC-SHA-256 pseudonyms of one event alone (cloned pre-keyed state).
    c.bench_function("hmac_3_values", |b| {
        b.iter(|| {
            (
                s.hash_value(black_box(b"u-8f14e45fceea167a5a36dedd4bea2543")),
                s.hash_value(black_box(b"3F2504E0-4F89-11D3-9A0C-0305E82C3301")),
                s.hash_value(black_box(b"987654321")),
            )
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
