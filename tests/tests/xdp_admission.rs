//! XDP admission in network namespaces made by the test: a TCP echo listener in one namespace,
//! clients in another, relay-ebpf attached to the server-side veth through relay's admission
//! API. Needs root and the XDP object (`cargo xtask build-ebpf`); without them each test says
//! so and passes vacuously. Namespaces are removed by a Drop guard, even when a test fails.
//!
//! A dropped SYN is retransmitted only after the initial RTO (1 s); clients give up after
//! `CONNECT_TIMEOUT` (well under it), so every failed connect is exactly one dropped SYN and
//! the kernel counters can be compared with the client-side failures exactly.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use relay::admission::{Admission, AdmissionConfig, AdmissionMode, LoadSample, XdpModeConfig};

const CONNECT_TIMEOUT: Duration = Duration::from_millis(250);
const CLONE_NEWNET: i32 = 0x4000_0000;

extern "C" {
    fn setns(fd: i32, nstype: i32) -> i32;
    fn geteuid() -> u32;
}

/// Two namespaces joined by a veth pair: server `10.200.1.1` and `.11` on `veth`, client
/// `10.200.1.2` (default source) and `.3` (used towards `.11`).
struct Lab {
    server: String,
    client: String,
    veth: String,
}

const SERVER_A: &str = "10.200.1.1";
const SERVER_B: &str = "10.200.1.11";

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn ip_out(args: &[&str]) -> String {
    Command::new("ip")
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

impl Lab {
    /// None (and a note) when this is not root or has no `ip` / no XDP object.
    fn new(tag: &str) -> Option<Lab> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { geteuid() } != 0 {
            eprintln!("skipping: the XDP admission tests need root");
            return None;
        }
        if relay::admission::xdp::embedded().is_none() {
            eprintln!("skipping: no XDP object embedded; run `cargo xtask build-ebpf` first");
            return None;
        }
        let id = std::process::id() % 100_000;
        let lab = Lab {
            server: format!("rxs{tag}{id}"),
            client: format!("rxc{tag}{id}"),
            veth: format!("vs{tag}{id}"),
        };
        let peer = format!("vc{tag}{id}");
        let _ = ip(&["netns", "del", &lab.server]);
        let _ = ip(&["netns", "del", &lab.client]);
        let (s, c, v) = (lab.server.as_str(), lab.client.as_str(), lab.veth.as_str());
        for args in [
            vec!["netns", "add", s],
            vec!["netns", "add", c],
            vec![
                "link", "add", v, "netns", s, "type", "veth", "peer", "name", &peer, "netns", c,
            ],
            vec!["-n", s, "addr", "add", "10.200.1.1/24", "dev", v],
            vec!["-n", s, "addr", "add", "10.200.1.11/24", "dev", v],
            vec!["-n", c, "addr", "add", "10.200.1.2/24", "dev", &peer],
            vec!["-n", c, "addr", "add", "10.200.1.3/24", "dev", &peer],
            vec!["-n", s, "link", "set", v, "up"],
            vec!["-n", s, "link", "set", "lo", "up"],
            vec!["-n", c, "link", "set", &peer, "up"],
            vec!["-n", c, "link", "set", "lo", "up"],
            vec![
                "-n",
                c,
                "route",
                "add",
                "10.200.1.11/32",
                "dev",
                &peer,
                "src",
                "10.200.1.3",
            ],
        ] {
            ip(&args).expect("namespace set-up");
        }
        Some(lab)
    }

    /// Runs `f` on a thread inside namespace `ns`.
    fn run<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{ns}");
        std::thread::spawn(move || {
            let file = File::open(&path).expect("open netns");
            // SAFETY: file is an open netns descriptor for the duration of the call; setns
            // only changes this (fresh) thread's network namespace.
            let rc = unsafe { setns(file.as_raw_fd(), CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("namespace thread")
    }

    fn xdp_attached(&self) -> bool {
        ip_out(&["-n", &self.server, "-d", "link", "show", "dev", &self.veth]).contains("prog/xdp")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.server]);
        let _ = ip(&["netns", "del", &self.client]);
    }
}

/// An echo listener on all addresses of the server namespace; stops on drop.
struct Echo {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Echo {
    fn start(lab: &Lab) -> Echo {
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let ns = lab.server.clone();
        std::thread::spawn(move || {
            Lab::run(&ns, move || {
                let l = TcpListener::bind("0.0.0.0:0").expect("bind");
                l.set_nonblocking(true).unwrap();
                tx.send(l.local_addr().unwrap().port()).unwrap();
                while !st.load(Ordering::Relaxed) {
                    match l.accept() {
                        Ok((mut c, _)) => {
                            c.set_nonblocking(false).unwrap();
                            std::thread::spawn(move || {
                                let mut buf = [0u8; 1024];
                                while let Ok(n) = c.read(&mut buf) {
                                    if n == 0 || c.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
            })
        });
        Echo {
            port: rx.recv().unwrap(),
            stop,
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Connects `n` times from the client namespace to `dst`; returns (ok, failed). Successful
/// connections are held until all attempts are done.
fn connect_many(lab: &Lab, dst: &str, port: u16, n: usize) -> (usize, usize) {
    let addr: SocketAddr = format!("{dst}:{port}").parse().unwrap();
    Lab::run(&lab.client, move || {
        let mut held = Vec::new();
        let mut failed = 0;
        for _ in 0..n {
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(s) => held.push(s),
                Err(_) => failed += 1,
            }
        }
        (held.len(), failed)
    })
}

fn config(lab: &Lab, port: u16, f: impl FnOnce(&mut AdmissionConfig)) -> AdmissionConfig {
    let mut c = AdmissionConfig {
        interface: Some(lab.veth.clone()),
        ports: vec![port],
        ..AdmissionConfig::default()
    };
    f(&mut c);
    c
}

fn start(lab: &Lab, cfg: AdmissionConfig) -> Admission {
    Lab::run(&lab.server, move || {
        let a = Admission::start(Some(&cfg), 0, Arc::new(LoadSample::default));
        assert!(
            matches!(a.mode(), AdmissionMode::Xdp { .. }),
            "expected XDP mode, got {}: {}",
            a.mode(),
            a.reason()
        );
        a
    })
}

#[test]
fn verifier_accepts_in_driver_and_skb_mode_and_stop_detaches() {
    let Some(lab) = Lab::new("v") else { return };
    for (mode, want) in [
        (XdpModeConfig::Driver, "driver"),
        (XdpModeConfig::Skb, "skb"),
    ] {
        let a = start(&lab, config(&lab, 80, |c| c.mode = mode));
        match a.mode() {
            AdmissionMode::Xdp { attach, .. } => assert_eq!(attach.to_string(), want),
            m => panic!("{m}"),
        }
        assert!(lab.xdp_attached(), "{want}: attached");
        a.stop();
        assert!(!lab.xdp_attached(), "{want}: detached after stop");
    }
}

#[test]
fn shed_zero_admits_everything() {
    let Some(lab) = Lab::new("z") else { return };
    let echo = Echo::start(&lab);
    let a = start(&lab, config(&lab, echo.port, |_| {}));
    let (ok, failed) = connect_many(&lab, SERVER_A, echo.port, 50);
    assert_eq!((ok, failed), (50, 0));
    let s = a.snapshot();
    assert_eq!(s.passed, 50, "{s:?}");
    assert_eq!(s.dropped_by_rate + s.dropped_by_shed, 0, "{s:?}");
}

#[test]
fn burst_beyond_budget_is_dropped_and_second_source_unaffected() {
    let Some(lab) = Lab::new("b") else { return };
    let echo = Echo::start(&lab);
    let a = start(
        &lab,
        config(&lab, echo.port, |c| {
            c.rate_per_source = 1;
            c.burst = Some(5);
        }),
    );
    let (ok, failed) = connect_many(&lab, SERVER_A, echo.port, 20);
    assert!(ok >= 5, "the burst is admitted: {ok}");
    assert!(failed >= 5, "beyond the budget is dropped: {failed}");
    // The other source has its own bucket.
    let (ok2, failed2) = connect_many(&lab, SERVER_B, echo.port, 5);
    assert_eq!((ok2, failed2), (5, 0));
    let s = a.snapshot();
    assert_eq!(s.dropped_by_rate, failed as u64, "{s:?}");
    assert_eq!(s.passed, (ok + ok2) as u64, "{s:?}");
}

#[test]
fn shed_100_drops_new_syns_but_established_keeps_answering() {
    let Some(lab) = Lab::new("s") else { return };
    let echo = Echo::start(&lab);
    let a = start(&lab, config(&lab, echo.port, |_| {}));
    let addr: SocketAddr = format!("{SERVER_A}:{}", echo.port).parse().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<usize>();
    let ns = lab.client.clone();
    // A keep-alive client: connects before the shed, then answers a round trip per signal.
    let keep = std::thread::spawn(move || {
        Lab::run(&ns, move || {
            let mut s =
                TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).expect("keep-alive connect");
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut answered = 0;
            while rx.recv().is_ok() {
                let mut buf = [0u8; 5];
                if s.write_all(b"ping\n").is_ok()
                    && s.read_exact(&mut buf).is_ok()
                    && &buf == b"ping\n"
                {
                    answered += 1;
                }
                done_tx.send(answered).unwrap();
            }
        })
    });
    tx.send(()).unwrap();
    assert_eq!(done_rx.recv().unwrap(), 1);

    a.set_shed_override(Some(100));
    let (ok, failed) = connect_many(&lab, SERVER_A, echo.port, 10);
    assert_eq!((ok, failed), (0, 10));
    for i in 2..=11 {
        tx.send(()).unwrap();
        assert_eq!(
            done_rx.recv().unwrap(),
            i,
            "the established connection keeps answering"
        );
    }
    let s = a.snapshot();
    assert_eq!(s.dropped_by_shed, 10, "{s:?}");
    assert_eq!(s.shed_level_percent, 100);

    a.set_shed_override(Some(0));
    assert_eq!(connect_many(&lab, SERVER_A, echo.port, 3), (3, 0));
    drop(tx);
    keep.join().unwrap();
}

#[test]
fn allow_listed_sources_are_never_dropped() {
    let Some(lab) = Lab::new("a") else { return };
    let echo = Echo::start(&lab);
    let a = start(
        &lab,
        config(&lab, echo.port, |c| {
            c.rate_per_source = 1;
            c.burst = Some(1);
            c.allow = vec!["10.200.1.3/32".into()];
        }),
    );
    a.set_shed_override(Some(100));
    // .3 is the source towards .11 (allow-listed); .2 towards .1 is not.
    assert_eq!(connect_many(&lab, SERVER_B, echo.port, 10), (10, 0));
    assert_eq!(connect_many(&lab, SERVER_A, echo.port, 3), (0, 3));
    let s = a.snapshot();
    assert_eq!(s.allowed_listed, 10, "{s:?}");
    assert_eq!(s.dropped_by_rate + s.dropped_by_shed, 3, "{s:?}");
}

#[test]
fn other_ports_and_established_flows_pass() {
    let Some(lab) = Lab::new("p") else { return };
    let guarded = Echo::start(&lab);
    let other = Echo::start(&lab);
    let a = start(&lab, config(&lab, guarded.port, |_| {}));
    a.set_shed_override(Some(100));
    assert_eq!(connect_many(&lab, SERVER_A, other.port, 5), (5, 0));
    assert_eq!(connect_many(&lab, SERVER_A, guarded.port, 2), (0, 2));
}

#[test]
fn detached_when_dropped_without_stop() {
    let Some(lab) = Lab::new("d") else { return };
    let a = start(&lab, config(&lab, 80, |_| {}));
    assert!(lab.xdp_attached());
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(5);
    while lab.xdp_attached() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!lab.xdp_attached());
}

/// A relay config for the server namespace: listens on every address, XDP on `veth`.
fn relay_config(veth: &str) -> String {
    format!(
        r#"
[server]
listen = "0.0.0.0:0"
workers = 1

[admin]
listen = "127.0.0.1:0"

[admission]
interface = "{veth}"

[[upstreams]]
name = "tracking"
nodes = ["127.0.0.1:9"]
connect_timeout_ms = 200
read_timeout_ms = 500

[[routes]]
name = "app-logs"
path = "/v1/logs"
methods = ["POST"]
upstream = "tracking"
"#
    )
}

/// POST to relay's admin port, from inside the server namespace; returns the status.
fn admin_post(lab: &Lab, admin: SocketAddr, path: &str) -> u16 {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    Lab::run(&lab.server, move || {
        let mut s =
            TcpStream::connect_timeout(&admin, Duration::from_secs(2)).expect("admin connect");
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    })
}

#[test]
fn relay_binary_attaches_sheds_via_admin_and_detaches_on_exit() {
    let Some(lab) = Lab::new("r") else { return };
    let opts = || relay_e2e::RelayOptions {
        prefix: vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            lab.server.clone(),
        ],
        ..Default::default()
    };
    let mut relay = relay_e2e::Relay::start_with(&relay_config(&lab.veth), opts());
    assert!(relay.log().contains("mode=xdp-"), "{}", relay.log());
    assert!(lab.xdp_attached());
    let port = relay.addr.port();
    assert_eq!(connect_many(&lab, SERVER_A, port, 3), (3, 0));
    let admin = relay.admin.expect("admin");
    assert_eq!(admin_post(&lab, admin, "/admission/shed?level=100"), 200);
    assert_eq!(connect_many(&lab, SERVER_A, port, 3), (0, 3));
    assert_eq!(admin_post(&lab, admin, "/admission/shed?level=0"), 200);
    assert_eq!(connect_many(&lab, SERVER_A, port, 3), (3, 0));

    // A clean exit detaches.
    assert!(relay.terminate(Duration::from_secs(10)).is_some());
    assert!(!lab.xdp_attached(), "detached after SIGTERM");

    // A crash (SIGKILL) leaves nothing behind that stops the next run from attaching.
    let relay = relay_e2e::Relay::start_with(&relay_config(&lab.veth), opts());
    assert!(lab.xdp_attached());
    relay.signal("KILL");
    let gone = relay_e2e::wait_for(Duration::from_secs(10), || {
        (!lab.xdp_attached()).then_some(())
    });
    assert!(gone.is_some(), "detached after SIGKILL");
    let relay2 = relay_e2e::Relay::start_with(&relay_config(&lab.veth), opts());
    assert!(relay2.log().contains("mode=xdp-"), "{}", relay2.log());
    drop(relay2);
    drop(relay);
}

#[test]
fn a_live_attachment_is_not_stolen_by_a_second_start() {
    let Some(lab) = Lab::new("l") else { return };
    let first = start(&lab, config(&lab, 80, |_| {}));
    let cfg = config(&lab, 80, |_| {});
    let (mode, reason) = Lab::run(&lab.server, move || {
        let second = Admission::start(Some(&cfg), 0, Arc::new(LoadSample::default));
        (second.mode().clone(), second.reason().to_string())
    });
    assert_eq!(mode, AdmissionMode::UserSpace, "{reason}");
    assert!(reason.contains("cannot be detached"), "{reason}");
    assert!(lab.xdp_attached(), "the first attachment survives");
    assert!(matches!(first.mode(), AdmissionMode::Xdp { .. }));
}
