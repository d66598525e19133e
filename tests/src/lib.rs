//! Shared helpers for the black-box suites: spawning relay, stub upstreams, raw clients.
