//! relay's perf lab: the shared parts of `relay-loadgen` and `stub-upstream`.
//!
//! - [`events`]: a seeded generator of realistic app-log JSON events (the request bodies);
//! - [`http1`]: the minimal HTTP/1.1 message framing both tools need (head end, Content-Length,
//!   chunked);
//! - [`parse_duration`]: `"10s"`, `"500ms"`, `"2m"` command-line durations.
//!
//! Nothing here depends on the `relay` crate or on monoio, on purpose: a bug in relay's HTTP
//! code or runtime must not hide in the tool that measures it.

#![forbid(unsafe_code)]

pub mod events;
pub mod http1;

use std::time::Duration;

/// Parses a duration such as `10s`, `500ms`, `2m` or a bare number of seconds (`1.5`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (try 10s, 500ms, 2m)"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        _ => return Err(format!("unknown unit `{unit}` in `{s}` (use ms, s or m)")),
    };
    if !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("`{s}` is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("3h").is_err());
        assert!(parse_duration("x").is_err());
    }
}
