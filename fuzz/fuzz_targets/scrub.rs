//! Fuzz target: arbitrary bytes as a request body under one of four PII policies and four
//! Content-Types; the simd engine, the walker and the production default must give the same
//! output or the same refusal, and the output never grows past its limit. Input layout and
//! invariants: `relay_scrub::fuzzing::check_engines`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| relay_scrub::fuzzing::check_engines(data));
