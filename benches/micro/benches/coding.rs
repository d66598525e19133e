//! Criterion micro-benchmarks of compressed request bodies: decoding a gzip, deflate or zstd
//! body under the route's limits (`relay::coding::decode`, what a `Content-Encoding` request
//! adds before scrubbing) and re-encoding the scrubbed body (`relay::coding::encode`, what
//! `forward_encoding = "same"` adds), on one 1 KiB event and on a 100-event NDJSON batch.
//!
//! Run: `cargo bench -p relay-micro --bench coding`.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use relay::coding::{decode, encode, Coding, Limits};
use relay_micro::{batch, event};

/// Generous limits: the generated batch repeats itself so much that zstd packs it 250x, past
/// the default ratio of 100 (real logs, with their ids and timestamps, pack 5-30x).
const LIMITS: Limits = Limits {
    max_decoded_bytes: 16 << 20,
    max_expansion_ratio: 10_000,
};

fn bench(c: &mut Criterion) {
    let bodies = [
        ("1KiB_event", event(1024)),
        ("100_event_batch", batch(1024, 100)),
    ];
    let mut g = c.benchmark_group("coding");
    for coding in [Coding::Gzip, Coding::Deflate, Coding::Zstd] {
        for (name, body) in &bodies {
            let wire = encode(coding, body).unwrap();
            assert_eq!(decode(coding, &wire, LIMITS).unwrap(), *body);
            g.throughput(Throughput::Bytes(body.len() as u64));
            g.bench_with_input(
                BenchmarkId::new(format!("decode_{coding}"), name),
                &wire,
                |b, wire| b.iter(|| decode(coding, black_box(wire), LIMITS).unwrap()),
            );
            g.bench_with_input(
                BenchmarkId::new(format!("encode_{coding}"), name),
                body,
                |b, body| b.iter(|| encode(coding, black_box(body)).unwrap()),
            );
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
