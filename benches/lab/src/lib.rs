//! relay perf lab.
