//! The sysctl rows: every key of `tuning/sysctl.d/90-relay.conf` (embedded at build time)
//! against `/proc/sys`, and the listen backlog against `net.core.somaxconn`.

use super::{Check, Status};

/// The sysctl profile shipped in `tuning/`, embedded so doctor checks exactly what is shipped.
pub const SYSCTL_PROFILE: &str = include_str!("../../../tuning/sysctl.d/90-relay.conf");

/// How a host value is compared with the profile's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Each number at least the profile's (`[min]`, the default).
    Min,
    /// Each number at most the profile's (`[max]`).
    Max,
    /// Equal (`[exact]`).
    Exact,
    /// A `low high` range containing the profile's (`[range]`).
    Range,
}

/// One key of the sysctl profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysctlWant {
    /// Dotted key, `net.core.somaxconn`.
    pub key: String,
    /// The profile's value, whitespace-normalised.
    pub value: String,
    /// How to compare.
    pub rule: Rule,
    /// The comment line above the key (the reason), without `#` and the rule marker.
    pub reason: String,
}

/// Parses a `sysctl.d` file: `key = value` lines, each rule taken from a trailing `[min]`,
/// `[max]`, `[exact]` or `[range]` on the comment line just above (default `[min]`).
pub fn parse_sysctl_profile(text: &str) -> Vec<SysctlWant> {
    let mut out = Vec::new();
    let mut comment = String::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(c) = line.strip_prefix('#').or_else(|| line.strip_prefix(';')) {
            comment = c.trim().to_string();
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            comment.clear();
            continue;
        };
        let (rule, reason) = [
            ("[min]", Rule::Min),
            ("[max]", Rule::Max),
            ("[exact]", Rule::Exact),
            ("[range]", Rule::Range),
        ]
        .iter()
        .find_map(|(m, r)| {
            comment
                .strip_suffix(m)
                .map(|rest| (*r, rest.trim().to_string()))
        })
        .unwrap_or((Rule::Min, comment.clone()));
        out.push(SysctlWant {
            key: k.trim().trim_start_matches('-').to_string(),
            value: normalise(v),
            rule,
            reason,
        });
        comment.clear();
    }
    out
}

fn normalise(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn numbers(v: &str) -> Option<Vec<i64>> {
    v.split_whitespace().map(|n| n.parse().ok()).collect()
}

/// Whether host value `actual` satisfies `want`.
pub fn sysctl_satisfied(want: &SysctlWant, actual: &str) -> bool {
    let (Some(w), Some(a)) = (numbers(&want.value), numbers(actual)) else {
        return normalise(actual) == want.value;
    };
    if w.len() != a.len() {
        return false;
    }
    match want.rule {
        Rule::Exact => w == a,
        Rule::Min => w.iter().zip(&a).all(|(w, a)| a >= w),
        Rule::Max => w.iter().zip(&a).all(|(w, a)| a <= w),
        Rule::Range => w.len() == 2 && a[0] <= w[0] && a[1] >= w[1],
    }
}

/// One sysctl row. `actual`: the `/proc/sys` value, `None` when the key is absent.
pub fn sysctl_check(want: &SysctlWant, actual: Option<&str>) -> Check {
    let name = format!("sysctl {}", want.key);
    let rule = match want.rule {
        Rule::Min => ">=",
        Rule::Max => "<=",
        Rule::Exact => "=",
        Rule::Range => "within",
    };
    let Some(actual) = actual else {
        return Check::pass(
            name,
            "absent on this kernel / in this namespace: nothing to set",
        );
    };
    let actual = normalise(actual);
    if sysctl_satisfied(want, &actual) {
        Check::pass(name, format!("{actual} (profile {rule} {})", want.value))
    } else {
        Check::new(
            name,
            Status::Warn,
            format!("{actual}, profile wants {rule} {}: {}", want.value, want.reason),
            format!(
                "sysctl -w {}=\"{}\" (persist: tuning/sysctl.d/90-relay.conf in /etc/sysctl.d, `sysctl --system`)",
                want.key, want.value
            ),
        )
    }
}

/// The listen backlog against `net.core.somaxconn`, which silently caps it.
pub fn backlog_check(backlog: u32, somaxconn: Option<u32>) -> Check {
    let name = "listen backlog";
    match somaxconn {
        Some(m) if m < backlog => Check::new(
            name,
            Status::Warn,
            format!("[server] backlog = {backlog} but net.core.somaxconn = {m}: the kernel caps the accept queue at {m}"),
            format!("sysctl -w net.core.somaxconn={backlog} (or more; the profile sets 65535)"),
        ),
        Some(m) => Check::pass(name, format!("[server] backlog = {backlog} <= net.core.somaxconn = {m}")),
        None => Check::pass(name, format!("[server] backlog = {backlog}; net.core.somaxconn not readable")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::*;

    #[test]
    fn the_shipped_profile_parses_with_a_reason_and_rule_for_every_key() {
        let p = parse_sysctl_profile(SYSCTL_PROFILE);
        assert!(p.len() >= 15, "{p:?}");
        for k in [
            "net.core.somaxconn",
            "net.ipv4.tcp_max_syn_backlog",
            "net.ipv4.ip_local_port_range",
            "net.ipv4.tcp_tw_reuse",
            "net.core.rmem_max",
            "net.core.wmem_max",
            "net.ipv4.tcp_rmem",
            "net.ipv4.tcp_wmem",
            "fs.file-max",
            "net.core.netdev_max_backlog",
        ] {
            assert!(p.iter().any(|w| w.key == k), "{k} missing from the profile");
        }
        for w in &p {
            assert!(!w.reason.is_empty(), "{} has no reason", w.key);
            assert!(
                numbers(&w.value).is_some(),
                "{} = {} is not numeric",
                w.key,
                w.value
            );
        }
        let range = p
            .iter()
            .find(|w| w.key == "net.ipv4.ip_local_port_range")
            .unwrap();
        assert_eq!(
            (range.rule, range.value.as_str()),
            (Rule::Range, "1024 65535")
        );
        let tw = p.iter().find(|w| w.key == "net.ipv4.tcp_tw_reuse").unwrap();
        assert_eq!(tw.rule, Rule::Exact);
    }

    #[test]
    fn sysctl_comparisons() {
        let p = parse_sysctl_profile(
            "# a [min]\nnet.core.somaxconn = 65535\n# b [range]\nnet.ipv4.ip_local_port_range = 1024   65535\n\
             # c [exact]\nnet.ipv4.tcp_tw_reuse=1\n# d [max]\nnet.ipv4.tcp_fin_timeout = 15\nnet.ipv4.tcp_rmem = 4096 87380 16777216\n",
        );
        assert_eq!(p.len(), 5);
        assert_eq!(p[4].rule, Rule::Min, "no marker: [min]");
        assert_eq!(p[0].reason, "a");
        let ok = |i: usize, a: &str| sysctl_satisfied(&p[i], a);
        assert!(ok(0, "65535") && ok(0, "100000") && !ok(0, "4096"));
        assert!(ok(1, "1024\t65535") && ok(1, "1000 65535") && !ok(1, "32768 60999"));
        assert!(ok(2, "1") && !ok(2, "2") && !ok(2, "0"));
        assert!(ok(3, "10") && !ok(3, "60"));
        assert!(ok(4, "4096 131072 33554432") && !ok(4, "4096 16384 4194304") && !ok(4, "4096"));
        let c = sysctl_check(&p[0], Some("4096\n"));
        assert_eq!(c.status, Status::Warn);
        assert!(
            c.fix.contains("sysctl -w net.core.somaxconn=\"65535\""),
            "{}",
            c.fix
        );
        assert_eq!(sysctl_check(&p[0], None).status, Status::Pass);
        assert_eq!(sysctl_check(&p[0], Some("65535")).status, Status::Pass);
    }

    #[test]
    fn backlog_vs_somaxconn() {
        assert_eq!(backlog_check(4096, Some(128)).status, Status::Warn);
        assert_eq!(backlog_check(4096, Some(4096)).status, Status::Pass);
        assert_eq!(backlog_check(4096, None).status, Status::Pass);
    }
}
