//! The XDP admission row: capabilities in the effective set and the configured interface.

use super::{Check, Status};

/// `CAP_NET_ADMIN`: attach XDP programs to interfaces.
pub const CAP_NET_ADMIN: u32 = 12;
/// `CAP_SYS_ADMIN`: the pre-5.8 superset of CAP_BPF.
pub const CAP_SYS_ADMIN: u32 = 21;
/// `CAP_PERFMON`: pointer-leaking BPF features and perf events.
pub const CAP_PERFMON: u32 = 38;
/// `CAP_BPF`: load BPF programs and create maps (Linux 5.8+).
pub const CAP_BPF: u32 = 39;

/// Parses a hex capability mask such as `/proc/self/status`'s `CapEff: 000001fffeffffff`.
pub fn parse_cap_mask(hex: &str) -> Option<u64> {
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// Whether capability number `cap` is in `mask`.
pub fn has_cap(mask: u64, cap: u32) -> bool {
    cap < 64 && mask & (1u64 << cap) != 0
}

/// The XDP row: `interface` from `[admission]`, `cap_eff` the effective capability set,
/// `exists` whether `/sys/class/net/<interface>` exists.
pub fn xdp_check(interface: Option<&str>, cap_eff: Option<u64>, exists: bool) -> Check {
    let name = "xdp admission";
    let Some(ifname) = interface else {
        return Check::pass(
            name,
            "no [admission] interface configured: user-space shedding only",
        );
    };
    if !exists {
        return Check::new(
            name,
            Status::Fail,
            format!("interface {ifname:?} does not exist (no /sys/class/net/{ifname})"),
            "set [admission] interface to one listed by `ip -br link`",
        );
    }
    let Some(mask) = cap_eff else {
        return Check::new(
            name,
            Status::Warn,
            format!("interface {ifname} exists; cannot read CapEff from /proc/self/status"),
            "run doctor as the relay user / under the relay unit to see its capabilities",
        );
    };
    let bpf = has_cap(mask, CAP_BPF) || has_cap(mask, CAP_SYS_ADMIN);
    let net = has_cap(mask, CAP_NET_ADMIN);
    let perfmon = has_cap(mask, CAP_PERFMON) || has_cap(mask, CAP_SYS_ADMIN);
    let mut missing = Vec::new();
    if !bpf {
        missing.push("CAP_BPF");
    }
    if !net {
        missing.push("CAP_NET_ADMIN");
    }
    if missing.is_empty() {
        let extra = if perfmon {
            ""
        } else {
            " (CAP_PERFMON absent: fine for XDP, needed for BPF perf events)"
        };
        Check::pass(
            name,
            format!("interface {ifname} exists; CAP_BPF and CAP_NET_ADMIN effective{extra}"),
        )
    } else {
        Check::new(
            name,
            Status::Warn,
            format!("interface {ifname} exists but {} not effective: relay will shed in user space instead of XDP", missing.join(" and ")),
            "run under systemd/relay.service (AmbientCapabilities=CAP_BPF CAP_NET_ADMIN CAP_PERFMON) or add them to the container's securityContext.capabilities",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::*;

    #[test]
    fn capability_masks() {
        let all = parse_cap_mask("000001fffeffffff").unwrap();
        assert!(has_cap(all, CAP_BPF) && has_cap(all, CAP_NET_ADMIN) && has_cap(all, CAP_PERFMON));
        assert_eq!(parse_cap_mask("zz"), None);
        let net_only = 1u64 << CAP_NET_ADMIN;
        assert!(!has_cap(net_only, CAP_BPF));
        assert!(!has_cap(net_only, 64));
        let s = "Name:\trelay\nCapEff:\t0000000000001000\nSeccomp:\t2\n";
        assert_eq!(
            status_field(s, "CapEff").as_deref(),
            Some("0000000000001000")
        );
        assert_eq!(status_field(s, "Seccomp").as_deref(), Some("2"));
        assert_eq!(status_field(s, "CapBnd"), None);
    }

    #[test]
    fn xdp_rows() {
        assert_eq!(xdp_check(None, Some(0), false).status, Status::Pass);
        let c = xdp_check(Some("eth9"), Some(u64::MAX), false);
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("eth9"));
        let c = xdp_check(Some("eth0"), Some(1 << CAP_NET_ADMIN), true);
        assert_eq!(c.status, Status::Warn);
        assert!(
            c.detail.contains("CAP_BPF") && !c.detail.contains("CAP_NET_ADMIN not"),
            "{}",
            c.detail
        );
        let c = xdp_check(
            Some("eth0"),
            Some((1 << CAP_NET_ADMIN) | (1 << CAP_SYS_ADMIN)),
            true,
        );
        assert_eq!(
            c.status,
            Status::Pass,
            "CAP_SYS_ADMIN covers CAP_BPF on old kernels"
        );
        let c = xdp_check(
            Some("eth0"),
            Some((1 << CAP_NET_ADMIN) | (1 << CAP_BPF) | (1 << CAP_PERFMON)),
            true,
        );
        assert_eq!(c.status, Status::Pass);
    }
}
