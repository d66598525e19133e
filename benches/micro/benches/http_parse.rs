//! Criterion micro-benchmarks of relay-http's request path: `RequestHead::parse` (the head
//! scanner, httparse, the framing decisions and one owned copy of the head) and the chunked
//! `BodyDecoder`.
//!
//! Run: `cargo bench -p relay-micro --bench http_parse`. Inputs are what the perf lab sends:
//! a mobile SDK's POST head, a browser-sized head, and app-log bodies in chunked framing.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use relay_http::{BodyDecoder, BodyFraming, BodyLimits, HeadLimits, HeadScanner, RequestHead};

const LIMITS: HeadLimits = HeadLimits {
    max_header_bytes: 16 * 1024,
    max_headers: 100,
};

/// What relay-loadgen and a typical mobile SDK send.
const SDK_HEAD: &[u8] = b"POST /v1/logs HTTP/1.1\r\n\
Host: logs.example.com\r\n\
User-Agent: shop-ios/5.13.1 (iPhone15,2; iOS 17.4.1) okhttp/4.12.0\r\n\
Content-Type: application/json\r\n\
Content-Length: 1024\r\n\
Accept: */*\r\n\
Accept-Encoding: gzip\r\n\
X-Request-Id: 6f1c2a7e-93b4-4a51-a0c2-1b9d8e3f5a27\r\n\
\r\n";

fn browser_head() -> Vec<u8> {
    let mut h = b"POST /v1/logs?source=web&v=2 HTTP/1.1\r\nHost: logs.example.com\r\n".to_vec();
    for (k, v) in [
        ("User-Agent", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15"),
        ("Accept", "application/json, text/plain, */*"),
        ("Accept-Language", "ko-KR,ko;q=0.9,en-US;q=0.8,en;q=0.7"),
        ("Accept-Encoding", "gzip, deflate, br"),
        ("Content-Type", "application/json;charset=UTF-8"),
        ("Content-Length", "4096"),
        ("Origin", "https://shop.example.com"),
        ("Referer", "https://shop.example.com/checkout?step=2&coupon=WINTER"),
        ("Sec-Fetch-Dest", "empty"),
        ("Sec-Fetch-Mode", "cors"),
        ("Sec-Fetch-Site", "same-site"),
        ("Connection", "keep-alive"),
        ("Cookie", "sid=9f8e7d6c5b4a39281716; ab=exp_checkout_v2:B; _ga=GA1.2.1234567890.1732250000; consent=analytics,ads"),
        ("X-Request-Id", "6f1c2a7e-93b4-4a51-a0c2-1b9d8e3f5a27"),
        ("X-Forwarded-For", "203.0.113.7, 198.51.100.23"),
        ("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    ] {
        h.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    h.extend_from_slice(b"\r\n");
    h
}

/// A JSON-ish payload of `n` bytes, chunked in pieces of `chunk` bytes.
fn chunked_body(n: usize, chunk: usize) -> Vec<u8> {
    let payload: Vec<u8> =
        br#"{"event":"purchase_completed","user_id":"u00012345678","props":{"amount":129000}}"#
            .iter()
            .copied()
            .cycle()
            .take(n)
            .collect();
    let mut out = Vec::with_capacity(n + n / chunk * 8 + 8);
    for piece in payload.chunks(chunk) {
        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

fn head_parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("head_parse");
    let browser = browser_head();
    for (name, head) in [
        ("sdk_8_headers", SDK_HEAD.to_vec()),
        ("browser_18_headers", browser),
    ] {
        g.throughput(Throughput::Bytes(head.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(name), &head, |b, head| {
            b.iter(|| {
                RequestHead::parse(black_box(head), LIMITS)
                    .unwrap()
                    .unwrap()
            })
        });
    }
    // A head cut short: what a read that ends mid-head costs (only the scanner runs; the
    // next read resumes where it stopped).
    let partial = &SDK_HEAD[..SDK_HEAD.len() - 20];
    g.throughput(Throughput::Bytes(partial.len() as u64));
    g.bench_function("sdk_partial", |b| {
        b.iter(|| {
            assert!(HeadScanner::new()
                .scan(black_box(partial), LIMITS.max_header_bytes)
                .unwrap()
                .is_none())
        })
    });
    g.finish();
}

fn chunked(c: &mut Criterion) {
    let mut g = c.benchmark_group("chunked_decode");
    for (size, chunk) in [(1024, 256), (4096, 4096), (4096, 512), (65536, 8192)] {
        let body = chunked_body(size, chunk);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(
            BenchmarkId::new("whole", format!("{size}B_in_{chunk}B_chunks")),
            &body,
            |b, body| {
                let mut out = Vec::with_capacity(size);
                b.iter(|| {
                    out.clear();
                    let mut d =
                        BodyDecoder::new(BodyFraming::Chunked, BodyLimits::new(1 << 20)).unwrap();
                    let used = d.decode(black_box(body), &mut out).unwrap();
                    assert!(d.is_done() && used == body.len());
                })
            },
        );
    }
    // Fed as the network might deliver it: 1460-byte segments.
    let body = chunked_body(4096, 512);
    g.throughput(Throughput::Bytes(4096));
    g.bench_function("segments_1460B/4096B_in_512B_chunks", |b| {
        let mut out = Vec::with_capacity(4096);
        b.iter(|| {
            out.clear();
            let mut d = BodyDecoder::new(BodyFraming::Chunked, BodyLimits::new(1 << 20)).unwrap();
            for seg in body.chunks(1460) {
                d.decode(black_box(seg), &mut out).unwrap();
            }
            assert!(d.is_done());
        })
    });
    g.finish();
}

criterion_group!(benches, head_parse, chunked);
criterion_main!(benches);
