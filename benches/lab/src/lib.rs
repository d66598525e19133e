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

/// `utime + stime` of this process in clock ticks (`/proc/self/stat` fields 14 and 15), or
/// `None` where `/proc` is missing. The load generator reports its own CPU time with it, so
/// that the lab can show what each peer of the proxy under test spent per request.
pub fn self_cpu_ticks() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    stat_cpu_ticks(&s)
}

/// `utime + stime` from the text of a `/proc/<pid>/stat` file (the command name may contain
/// spaces and parentheses: fields are counted after the last `)`).
pub fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: 11 and 12 after `state` (field 3).
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

#[cfg(test)]
mod cpu_tests {
    use super::*;

    #[test]
    fn stat_fields_after_a_command_with_spaces() {
        let line = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 1 0 9 0 0";
        assert_eq!(stat_cpu_ticks(line), Some(12));
        assert!(self_cpu_ticks().is_some());
    }
}
