//! Fuzz target: an upstream's bytes through interim and final ResponseHeads and the body
//! decoder. Input layout and invariants: `relay_http::fuzzing::check_response`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| relay_http::fuzzing::check_response(data));
