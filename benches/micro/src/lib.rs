//! Micro-benchmarks live in benches/; this library holds the scrub benchmark's inputs and
//! policy, shared with the profiling harness (`examples/scrub_profile.rs`), so a profile runs
//! exactly what the benchmark measures.

use relay_scrub::{ActiveKey, PiiPolicyConfig, Scrubber};

/// A realistic app log event padded to about `size` bytes (a little under: 512 gives 480 B,
/// 1024 gives 1008 B), with 3 PII fields (`user_id`, `device_id`, `order_no`).
pub fn event(size: usize) -> Vec<u8> {
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

/// `n` events of about `size` bytes, one per line (NDJSON).
pub fn batch(size: usize, n: usize) -> Vec<u8> {
    let e = event(size);
    let mut b = Vec::with_capacity((e.len() + 1) * n);
    for _ in 0..n {
        b.extend_from_slice(&e);
        b.push(b'\n');
    }
    b
}

/// The benchmark's policy: HMAC-SHA-256 of `fields` with a fixed 32-byte key.
pub fn scrubber(fields: &[&str]) -> Scrubber {
    Scrubber::new(
        &PiiPolicyConfig {
            fields: fields.iter().map(|f| f.to_string()).collect(),
            key_id: Some("bench".into()),
            ..PiiPolicyConfig::default()
        },
        Some(ActiveKey {
            id: Some("bench"),
            bytes: b"0123456789abcdef0123456789abcdef",
        }),
    )
    .expect("bench policy")
}
