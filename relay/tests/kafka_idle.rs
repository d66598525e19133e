//! An idle producer thread parks instead of spinning (its own test binary, so the only
//! `relay-kafka-0` thread in the process is this test's).

mod kafka_support;

use kafka_support::*;

#[test]
fn idle_producer_thread_does_not_spin() {
    use relay::kafka::{KafkaConfig, KafkaPath};
    use std::time::Duration;
    let b = Mock::new();
    let path = KafkaPath::start(&KafkaConfig::new(b.0.bootstrap_servers())).unwrap();
    let mut tid = None;
    wait_for("the producer thread", Duration::from_secs(30), || {
        tid = thread_named("relay-kafka-0");
        tid.is_some()
    });
    let tid = tid.unwrap();
    let before = thread_cpu_ticks(tid);
    std::thread::sleep(Duration::from_secs(2));
    let used = thread_cpu_ticks(tid) - before;
    // A spinning thread would use ~200 ticks (2 s at 100 Hz); parked, it uses ~0.
    assert!(used < 40, "idle producer thread used {used} ticks in 2 s");
    drop(path);
}

fn thread_named(name: &str) -> Option<u64> {
    for e in std::fs::read_dir("/proc/self/task").ok()? {
        let p = e.ok()?.path();
        if std::fs::read_to_string(p.join("comm")).ok()?.trim() == name {
            return p.file_name()?.to_str()?.parse().ok();
        }
    }
    None
}

fn thread_cpu_ticks(tid: u64) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
    let rest = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // Fields after the comm: state is index 0; utime and stime are stat fields 14 and 15.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}
