//! The lab's child processes: killed when dropped, and their CPU time and RSS from `/proc`.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A child process killed (SIGTERM, then SIGKILL) when dropped.
pub(super) struct Proc {
    pub(super) child: Child,
    pub(super) name: &'static str,
}

impl Proc {
    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .arg(self.child.id().to_string())
                .status();
            let until = Instant::now() + Duration::from_secs(5);
            while Instant::now() < until {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            eprintln!(
                "xtask bench: {} did not stop on SIGTERM, killing it",
                self.name
            );
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `(utime + stime)` of a process, in clock ticks.
pub(super) fn cpu_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the `(comm)`, which may contain spaces.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after `state`.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

pub(super) fn rss_mib(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// `pid` and all its descendants (nginx's master and its worker), found by their parent pid
/// in `/proc/<pid>/stat`.
pub(super) fn tree(pid: u32) -> Vec<u32> {
    let procs: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .filter_map(|p| Some((p, parent_pid(p)?)))
                .collect()
        })
        .unwrap_or_default();
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(
            procs
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(c, _)| *c),
        );
        i += 1;
    }
    out
}

/// `(utime + stime)` of a process and all its descendants, in clock ticks.
pub(super) fn tree_cpu_ticks(pid: u32) -> Option<u64> {
    let root = cpu_ticks(pid)?;
    Some(
        root + tree(pid)[1..]
            .iter()
            .filter_map(|&p| cpu_ticks(p))
            .sum::<u64>(),
    )
}

/// The summed RSS of a process and its descendants, in MiB (pages shared between them count
/// once per process).
pub(super) fn tree_rss_mib(pid: u32) -> Option<f64> {
    let root = rss_mib(pid)?;
    Some(
        root + tree(pid)[1..]
            .iter()
            .filter_map(|&p| rss_mib(p))
            .sum::<f64>(),
    )
}

/// The parent pid of `pid` (field 4 of `/proc/<pid>/stat`).
fn parent_pid(pid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.get(s.rfind(')')? + 2..)?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_tree_costs_at_least_its_root() {
        let me = std::process::id();
        let own = cpu_ticks(me).unwrap();
        assert!(tree_cpu_ticks(me).unwrap() >= own);
        assert_eq!(tree(me)[0], me);
        let child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let mut child = Proc {
            child,
            name: "sleep",
        };
        assert!(tree(me).contains(&child.pid()), "{:?}", tree(me));
        assert!(tree_rss_mib(me).unwrap() >= rss_mib(me).unwrap());
        let _ = child.child.kill();
        assert_eq!(parent_pid(me), Some(std::os::unix::process::parent_id()));
    }
}
