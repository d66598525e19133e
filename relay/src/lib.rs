//! relay: a PII-scrubbing HTTP log relay appliance (library half; `main.rs` is the CLI).
//!
//! The request path: [`server`] reads and frames a request, [`proxy`] routes it, hands the
//! original to [`kafka`], scrubs it with [`scrub`] and forwards it with [`upstream`], then relays
//! the upstream's response. [`runtime`] runs one pinned single-threaded worker per allowed CPU.

pub mod admin;
pub mod admission;
pub mod admit;
pub mod app;
pub mod auth;
pub mod coding;
pub mod config;
pub mod cpu_quota;
pub mod delivery;
pub mod dispatch;
pub mod doctor;
pub mod error;
pub mod kafka;
pub mod limit;
pub mod metrics;
pub mod problems;
pub mod proxy;
pub mod reason;
pub mod reply;
pub mod route;
pub mod runtime;
pub mod scrub;
pub mod server;
pub mod snapshot;
pub mod spool;
pub mod systemd;
pub mod upstream;
pub mod worker;
