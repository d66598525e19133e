//! Placeholder until the http_parse micro-benchmark lands.
fn main() {}
