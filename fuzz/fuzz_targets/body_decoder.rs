//! Fuzz target: BodyDecoder with arbitrary framing, limits and reads, against the reference
//! decoder. Input layout and invariants: `relay_http::fuzzing::check_body_decoder`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| relay_http::fuzzing::check_body_decoder(data));
