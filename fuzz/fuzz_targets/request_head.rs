//! Fuzz target: a client's bytes through HeadScanner (in arbitrary reads), RequestHead and the
//! body decoder, with arbitrary limits. Input layout and invariants:
//! `relay_http::fuzzing::check_request_head`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| relay_http::fuzzing::check_request_head(data));
