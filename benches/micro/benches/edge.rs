//! Criterion micro-benchmarks of the edge policies on the request path: finding the consumer
//! of an API key (`Authenticator::authenticate`: SHA-256 of the key, then a lookup) and one
//! consumer's rate limit + quota (`Limiter::check`: GCRA and a windowed counter on shared
//! atomics). Together they are what `auth = "required"` with `limits` adds to a request.
//!
//! Run: `cargo bench -p relay-micro --bench edge`.

use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use relay::auth::{AuthConfig, Authenticator, ConsumerConfig};
use relay::limit::{LimitConfig, LimitState, Limiter, Window};
use relay_http::{HeadLimits, RequestHead};

const LIMITS: HeadLimits = HeadLimits {
    max_header_bytes: 16 * 1024,
    max_headers: 100,
};

/// The lab's request head with an API key (what `full-auth-1w` sends).
const HEAD: &[u8] = b"POST /v1/logs HTTP/1.1\r\n\
Host: logs.example.com\r\n\
User-Agent: relay-loadgen/0.1\r\n\
Content-Type: application/json\r\n\
Content-Length: 1024\r\n\
X-Request-Id: lg-42-1\r\n\
X-API-Key: relay-lab-key\r\n\
\r\n";

/// SHA-256 of `relay-lab-key`.
const KEY_SHA256: &str = "c0f13d8ee5fb8e80192b8f7aa18f575de5e7c442f1d3dd8f15dd013cdc8ecf48";

fn consumers(n: usize) -> Vec<ConsumerConfig> {
    (0..n)
        .map(|i| ConsumerConfig {
            name: format!("app-{i}"),
            // Consumer 0 holds the lab key; the others hold keys nobody sends.
            api_key_sha256: vec![if i == 0 {
                KEY_SHA256.to_string()
            } else {
                format!("{i:064x}")
            }],
            jwt: None,
            limits: None,
        })
        .collect()
}

fn edge(c: &mut Criterion) {
    let (head, _) = RequestHead::parse(HEAD, LIMITS).unwrap().unwrap();
    let mut g = c.benchmark_group("edge");
    for n in [1, 100] {
        let auth = Authenticator::build(&AuthConfig::default(), &consumers(n)).unwrap();
        g.bench_function(format!("api_key_{n}_consumers"), |b| {
            b.iter(|| {
                let r = auth.authenticate(black_box(&head)).unwrap();
                assert_eq!(r.map(|(i, _)| i), Some(0));
            })
        });
    }
    let limiter = Limiter::new(
        &LimitConfig {
            rate: Some(1e9),
            burst: Some(1_000_000),
            quota: Some(u32::MAX),
            window: Window::Day,
        },
        Arc::new(LimitState::default()),
    );
    let (mut mono, unix) = relay::limit::now();
    g.bench_function("rate_and_quota_check", |b| {
        b.iter(|| {
            mono += 1_000;
            limiter.check(black_box(mono), black_box(unix)).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, edge);
criterion_main!(benches);
