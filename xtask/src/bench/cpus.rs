//! Which CPUs each process of the lab gets, and the `nice`/`chrt`/`taskset` wrapper that puts it
//! there.

use std::path::Path;
use std::process::Command;

pub(super) struct Cpus {
    /// Load generator and stub upstream.
    pub(super) lab: String,
    /// relay with one worker.
    pub(super) relay1: String,
    /// relay with two workers.
    pub(super) relay2: String,
    pub(super) note: String,
}

pub(super) fn cpus() -> Cpus {
    let n = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    if n < 2 {
        let all = "0".to_string();
        return Cpus {
            lab: all.clone(),
            relay1: all.clone(),
            relay2: all,
            note: "1 CPU: everything shares CPU 0".into(),
        };
    }
    let half = n / 2;
    let lab = if half == 1 {
        "0".into()
    } else {
        format!("0-{}", half - 1)
    };
    let relay1 = format!("{}", n - 1);
    let (relay2, note2) = if n >= 4 {
        (
            format!("{}-{}", n - 2, n - 1),
            "relay (2 workers) on its own CPUs".to_string(),
        )
    } else {
        (
            format!("0-{}", n - 1),
            format!(
                "2 workers need 2 CPUs: relay on CPUs 0-{} shares CPU 0 with the lab",
                n - 1
            ),
        )
    };
    Cpus {
        note: format!("{n} CPUs: loadgen + stub upstream on CPU {lab}; relay (1 worker) on CPU {relay1}; {note2}"),
        lab,
        relay1,
        relay2,
    }
}

/// `[nice -n N | chrt -f 1] [taskset -c CPUS] prog` (`nice` of `i32::MIN` means `chrt`).
pub(super) fn taskset(use_taskset: bool, nice: i32, cpus: &str, prog: &Path) -> Command {
    let mut argv: Vec<String> = vec![];
    if nice == i32::MIN {
        argv.extend(["chrt".into(), "-f".into(), "1".into()]);
    } else if nice != 0 {
        argv.extend(["nice".into(), "-n".into(), nice.to_string()]);
    }
    if use_taskset {
        argv.extend(["taskset".into(), "-c".into(), cpus.into()]);
    }
    argv.push(prog.to_string_lossy().into_owned());
    let mut c = Command::new(&argv[0]);
    c.args(&argv[1..]);
    c
}
