//! PII scrubbing micro-benchmark, both engines side by side: one JSON event of about 0.5, 1, 4
//! and 64 KiB with 3 PII fields (`user_id`, `device_id`, `order_no`), and NDJSON batches of 100
//! such events (0.5, 1 and 4 KiB each), scrubbed with HMAC-SHA-256 through `Scrubber::scrub_body`
//! (what the proxy calls). `simd` is the simd-json engine, `walker` the strict scalar walker
//! (the reference), `auto` the production default (simd from 2 KiB per JSON text, walker below).
//! Criterion reports time per iteration and throughput in bytes of input.
//!
//! Also, for the split: `walk_only_no_pii` (a policy that matches nothing: validation, walk and
//! copy alone) and `hmac_3_values` (the three pseudonyms alone).
//!
//! Run: `cargo bench -p relay-micro --bench scrub`

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use relay_micro::{batch, event, scrubber};
use relay_scrub::Engine;

fn bench(c: &mut Criterion) {
    let pii = scrubber(&["user_id", "device_id", "order_no"]);
    let none = scrubber(&["no_such_field"]);
    let mut inputs: Vec<(String, &str, Vec<u8>, u64)> = Vec::new();
    for size in [512usize, 1024, 4096, 65536] {
        inputs.push((
            format!("{}B", event(size).len()),
            "application/json",
            event(size),
            3,
        ));
    }
    for size in [512usize, 1024, 4096] {
        let b = batch(size, 100);
        inputs.push((
            format!("ndjson_100x{}B", event(size).len()),
            "application/x-ndjson",
            b,
            300,
        ));
    }
    for (group, s) in [("scrub_event_3_pii", &pii), ("walk_only_no_pii", &none)] {
        let mut g = c.benchmark_group(group);
        for (name, ct, body, want) in &inputs {
            g.throughput(Throughput::Bytes(body.len() as u64));
            for engine in [Engine::Simd, Engine::Walker, Engine::Auto] {
                let s = s.clone().with_engine(engine);
                let out = s.scrub_body(Some(ct), None, body).expect("valid input");
                if group == "scrub_event_3_pii" {
                    assert_eq!(out.fields_hashed, *want);
                }
                if engine == Engine::Simd {
                    assert!(
                        s.scrub_body_simd_only(Some(ct), body).is_some(),
                        "the simd engine must not fall back on the bench input"
                    );
                }
                let label = match engine {
                    Engine::Simd => "simd",
                    Engine::Walker => "walker",
                    Engine::Auto => "auto",
                };
                g.bench_with_input(BenchmarkId::new(label, name), body, |b, body| {
                    b.iter(|| {
                        s.scrub_body(Some(ct), None, black_box(body))
                            .expect("valid input")
                    })
                });
            }
        }
        g.finish();
    }

    // The three HMAC-SHA-256 pseudonyms of one event alone (cloned pre-keyed state).
    c.bench_function("hmac_3_values", |b| {
        b.iter(|| {
            (
                pii.hash_value(black_box(b"u-8f14e45fceea167a5a36dedd4bea2543")),
                pii.hash_value(black_box(b"3F2504E0-4F89-11D3-9A0C-0305E82C3301")),
                pii.hash_value(black_box(b"987654321")),
            )
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
