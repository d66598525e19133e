//! Profiling harness for the scrub benchmark: scrubs one of its inputs N times with one engine
//! and nothing else, so `valgrind --tool=callgrind --toggle-collect=relay_scrub::Scrubber::scrub_body`
//! (or `perf record`) counts exactly the benchmark's work per iteration (total / N).
//!
//! `cargo run --release -p relay-micro --example scrub_profile -- ENGINE SIZE [BATCH] [N]`:
//! ENGINE `simd` | `walker` | `auto`; SIZE the event size asked of `relay_micro::event` (512,
//! 1024, 4096, 65536); BATCH events per NDJSON body (1: one JSON event; default 1); N iterations
//! (default 10000). Prints the input size, N and the fields hashed per iteration.

use relay_micro::{batch, event, scrubber};
use relay_scrub::Engine;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: scrub_profile simd|walker|auto SIZE [BATCH] [N]";
    let engine = match args.first().map(String::as_str) {
        Some("simd") => Engine::Simd,
        Some("walker") => Engine::Walker,
        Some("auto") => Engine::Auto,
        _ => panic!("{usage}"),
    };
    let num = |i: usize, d: usize| args.get(i).map_or(d, |a| a.parse().expect(usage));
    let (size, events, n) = (num(1, 1024), num(2, 1), num(3, 10_000));
    let (ct, body) = if events > 1 {
        ("application/x-ndjson", batch(size, events))
    } else {
        ("application/json", event(size))
    };
    let s = scrubber(&["user_id", "device_id", "order_no"]).with_engine(engine);
    let mut hashed = 0;
    for _ in 0..n {
        let out = s
            .scrub_body(Some(ct), None, std::hint::black_box(&body))
            .expect("valid input");
        hashed = out.fields_hashed;
        std::hint::black_box(out);
    }
    println!(
        "{} bytes, {n} iterations, {hashed} values hashed each",
        body.len()
    );
}
