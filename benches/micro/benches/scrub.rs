//! Placeholder until the scrub micro-benchmark lands.
fn main() {}
