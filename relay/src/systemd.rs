//! systemd integration: `sd_notify` readiness, reload and stop notifications, and the watchdog.
//!
//! relay runs as `Type=notify` (see `systemd/relay.service`). The protocol is one datagram per
//! notification, `KEY=VALUE` lines, sent to the unix socket named by `$NOTIFY_SOCKET` (a path, or
//! an abstract-namespace name when it starts with `@`). Every function here is a no-op that
//! returns `Ok(false)` when `$NOTIFY_SOCKET` is unset, so the same binary runs unchanged under a
//! shell, a container runtime or tests.
//!
//! When to call what (the CLI owns the calls):
//! - [`notify_ready`] once every worker's listener is bound and accepting;
//! - [`notify_reloading`] when a SIGHUP / `POST /reload` starts, then [`notify_ready`] again
//!   when the new config is live (or was refused and the old one kept);
//! - [`notify_stopping`] when SIGTERM starts the graceful drain;
//! - [`spawn_watchdog`] once after ready, with a closure that says whether every worker is alive.
//!
//! Written on `std` only (no `sd-notify` crate): the protocol is ten lines and this keeps the
//! abstract-socket and `WATCHDOG_PID` handling visible and testable. The one `unsafe` block
//! reads `CLOCK_MONOTONIC` for `MONOTONIC_USEC=` (std's `Instant` does not expose its value).

use std::ffi::OsString;
use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Where notifications go: the `$NOTIFY_SOCKET` address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyAddr {
    /// A filesystem socket path.
    Path(PathBuf),
    /// An abstract-namespace socket name (without the leading `@`).
    Abstract(Vec<u8>),
}

/// A handle on the service manager's notification socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notifier {
    addr: NotifyAddr,
}

impl Notifier {
    /// A notifier for an explicit address (tests; normally use [`Notifier::from_env`]).
    pub fn new(addr: NotifyAddr) -> Notifier {
        Notifier { addr }
    }

    /// The notifier named by `$NOTIFY_SOCKET`, or `None` when relay is not run by systemd.
    pub fn from_env() -> Option<Notifier> {
        parse_notify_socket(std::env::var_os("NOTIFY_SOCKET")).map(Notifier::new)
    }

    /// Sends one notification datagram (`KEY=VALUE` lines).
    pub fn send(&self, state: &str) -> io::Result<()> {
        let sock = UnixDatagram::unbound()?;
        match &self.addr {
            NotifyAddr::Path(p) => sock.send_to(state.as_bytes(), p)?,
            NotifyAddr::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                sock.send_to_addr(state.as_bytes(), &addr)?
            }
        };
        Ok(())
    }
}

/// Parses a `$NOTIFY_SOCKET` value: `None` when unset or empty, `@name` is abstract.
pub fn parse_notify_socket(value: Option<OsString>) -> Option<NotifyAddr> {
    use std::os::unix::ffi::OsStringExt;
    let bytes = value?.into_vec();
    match bytes.first() {
        None => None,
        Some(b'@') => Some(NotifyAddr::Abstract(bytes[1..].to_vec())),
        Some(_) => Some(NotifyAddr::Path(PathBuf::from(OsString::from_vec(bytes)))),
    }
}

/// The watchdog timeout from `$WATCHDOG_USEC`, if it is meant for process `pid`
/// (`$WATCHDOG_PID` unset or equal to `pid`). `None`: no watchdog configured.
pub fn parse_watchdog(
    usec: Option<&str>,
    watchdog_pid: Option<&str>,
    pid: u32,
) -> Option<Duration> {
    if let Some(p) = watchdog_pid {
        if p.trim().parse::<u32>().ok()? != pid {
            return None;
        }
    }
    let usec: u64 = usec?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// The watchdog timeout systemd set for this process (`WatchdogSec=`), if any.
pub fn watchdog_timeout() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    parse_watchdog(usec.as_deref(), pid.as_deref(), std::process::id())
}

fn notify_env(state: &str) -> io::Result<bool> {
    match Notifier::from_env() {
        Some(n) => n.send(state).map(|()| true),
        None => Ok(false),
    }
}

/// `READY=1`: start-up (or a reload) finished, workers are accepting. `Ok(false)` when not
/// under systemd.
pub fn notify_ready() -> io::Result<bool> {
    notify_env("READY=1\nSTATUS=serving")
}

/// `RELOADING=1`: a config reload started; call [`notify_ready`] when it is done.
///
/// Carries `MONOTONIC_USEC` (required by `Type=notify-reload` on systemd >= 253, ignored by
/// older ones), so the same call works if the unit is ever switched to that type.
pub fn notify_reloading() -> io::Result<bool> {
    notify_env(&format!(
        "RELOADING=1\nSTATUS=reloading configuration\nMONOTONIC_USEC={}",
        monotonic_usec()
    ))
}

/// `STOPPING=1`: graceful shutdown started (listeners closing, in-flight requests draining).
///
/// From then on the watchdog thread pings unconditionally: systemd keeps the watchdog armed
/// while the unit stops, and workers that finished draining early must not get relay killed
/// (SIGABRT) in the middle of the others' drain. `TimeoutStopSec=` bounds a drain that hangs.
pub fn notify_stopping() -> io::Result<bool> {
    STOPPING.store(true, Ordering::Release);
    notify_env("STOPPING=1\nSTATUS=draining")
}

/// Set by [`notify_stopping`]: the watchdog no longer consults the worker check.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// `STATUS=...`: a free-form line shown by `systemctl status`.
pub fn notify_status(status: &str) -> io::Result<bool> {
    notify_env(&format!("STATUS={}", status.replace('\n', " ")))
}

/// `CLOCK_MONOTONIC` now, in microseconds (what `MONOTONIC_USEC=` must carry).
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime only writes into it.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// The running watchdog thread; dropping it leaves the thread running, [`WatchdogHandle::stop`]
/// ends it (for shutdown: stop pinging only once the drain is over).
#[derive(Debug)]
pub struct WatchdogHandle {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    interval: Duration,
}

impl WatchdogHandle {
    /// How often the thread pings (half the watchdog timeout).
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Stops the thread and waits for it (at most one interval).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// Starts the watchdog thread when systemd asked for one (`WatchdogSec=` sets `$WATCHDOG_USEC`)
/// and `$NOTIFY_SOCKET` is set; `None` otherwise.
///
/// The thread sends `WATCHDOG=1` every half timeout, but only while `check()` returns true: the
/// CLI passes a closure that returns false when any worker's heartbeat is stale, so a stuck
/// worker makes systemd kill and restart relay (`Restart=on-failure`) after `WatchdogSec`.
pub fn spawn_watchdog(check: impl Fn() -> bool + Send + 'static) -> Option<WatchdogHandle> {
    let notifier = Notifier::from_env()?;
    let timeout = watchdog_timeout()?;
    spawn_watchdog_with(notifier, timeout / 2, &STOPPING, check).ok()
}

/// [`spawn_watchdog`] with the socket, the ping interval and the "stopping" flag given (tests).
/// While `stopping` is set the thread pings without calling `check`.
pub fn spawn_watchdog_with(
    notifier: Notifier,
    interval: Duration,
    stopping: &'static AtomicBool,
    check: impl Fn() -> bool + Send + 'static,
) -> io::Result<WatchdogHandle> {
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let thread = std::thread::Builder::new()
        .name("relay-watchdog".into())
        .spawn(move || {
            let mut healthy = true;
            while !stop2.load(Ordering::Acquire) {
                if stopping.load(Ordering::Acquire) || check() {
                    if !healthy {
                        tracing::info!("workers healthy again; watchdog pings resumed");
                        healthy = true;
                    }
                    if let Err(e) = notifier.send("WATCHDOG=1") {
                        tracing::warn!(error = %e, "cannot send the systemd watchdog ping");
                    }
                } else if healthy {
                    tracing::error!(
                        "a worker is stuck; withholding watchdog pings so systemd restarts relay"
                    );
                    let _ = notifier.send("STATUS=a worker is stuck; watchdog pings withheld");
                    healthy = false;
                }
                std::thread::park_timeout(interval);
            }
        })?;
    Ok(WatchdogHandle {
        stop,
        thread: Some(thread),
        interval,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn listener() -> (tempfile::TempDir, UnixDatagram, Notifier) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (dir, sock, Notifier::new(NotifyAddr::Path(path)))
    }

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn notify_socket_parsing() {
        assert_eq!(parse_notify_socket(None), None);
        assert_eq!(parse_notify_socket(Some("".into())), None);
        assert_eq!(
            parse_notify_socket(Some("/run/systemd/notify".into())),
            Some(NotifyAddr::Path("/run/systemd/notify".into()))
        );
        assert_eq!(
            parse_notify_socket(Some("@/org/systemd/x".into())),
            Some(NotifyAddr::Abstract(b"/org/systemd/x".to_vec()))
        );
    }

    #[test]
    fn watchdog_env_parsing() {
        assert_eq!(
            parse_watchdog(Some("30000000"), None, 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_watchdog(Some("30000000"), Some("7"), 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_watchdog(Some("30000000"), Some("8"), 7),
            None,
            "meant for another pid"
        );
        assert_eq!(parse_watchdog(Some("0"), None, 7), None);
        assert_eq!(parse_watchdog(Some("x"), None, 7), None);
        assert_eq!(parse_watchdog(None, None, 7), None);
    }

    #[test]
    fn sends_datagrams_to_a_path_socket() {
        let (_dir, sock, n) = listener();
        n.send("READY=1\nSTATUS=serving").unwrap();
        assert_eq!(recv(&sock), "READY=1\nSTATUS=serving");
    }

    #[test]
    fn sends_datagrams_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!(
            "relay-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        );
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = Notifier::new(parse_notify_socket(Some(format!("@{name}").into())).unwrap());
        n.send("STOPPING=1").unwrap();
        assert_eq!(recv(&sock), "STOPPING=1");
    }

    #[test]
    fn no_notify_socket_is_a_no_op() {
        // NOTIFY_SOCKET is not set under `cargo test` (and no test here sets it).
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            assert!(!notify_ready().unwrap());
            assert!(!notify_reloading().unwrap());
            assert!(!notify_stopping().unwrap());
            assert!(!notify_status("x").unwrap());
            assert!(spawn_watchdog(|| true).is_none());
        }
    }

    #[test]
    fn watchdog_pings_only_while_the_check_passes() {
        let (_dir, sock, n) = listener();
        let healthy = Arc::new(AtomicBool::new(true));
        let calls = Arc::new(AtomicUsize::new(0));
        let (h2, c2) = (healthy.clone(), calls.clone());
        static DRAINING: AtomicBool = AtomicBool::new(false);
        let wd = spawn_watchdog_with(n, Duration::from_millis(20), &DRAINING, move || {
            c2.fetch_add(1, Ordering::SeqCst);
            h2.load(Ordering::SeqCst)
        })
        .unwrap();
        assert_eq!(wd.interval(), Duration::from_millis(20));
        assert_eq!(recv(&sock), "WATCHDOG=1");
        assert_eq!(recv(&sock), "WATCHDOG=1");

        // A stuck worker: one status line, then silence while the check keeps failing.
        healthy.store(false, Ordering::SeqCst);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let m = recv(&sock);
            if m.starts_with("STATUS=") {
                assert!(m.contains("stuck"), "{m}");
                break;
            }
            assert_eq!(m, "WATCHDOG=1");
            assert!(std::time::Instant::now() < deadline);
        }
        let before = calls.load(Ordering::SeqCst);
        sock.set_read_timeout(Some(Duration::from_millis(150)))
            .unwrap();
        let mut buf = [0u8; 64];
        let silent = sock.recv(&mut buf);
        assert!(
            silent.is_err(),
            "no ping while unhealthy, got {:?}",
            silent.map(|n| buf[..n].to_vec())
        );
        assert!(
            calls.load(Ordering::SeqCst) > before,
            "the check keeps being polled"
        );

        // Recovery resumes the pings.
        healthy.store(true, Ordering::SeqCst);
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(recv(&sock), "WATCHDOG=1");

        // During the drain a stale worker no longer withholds the pings.
        healthy.store(false, Ordering::SeqCst);
        DRAINING.store(true, Ordering::SeqCst);
        let end = std::time::Instant::now() + Duration::from_millis(200);
        let mut pings = 0;
        while std::time::Instant::now() < end {
            let m = recv(&sock);
            if m == "WATCHDOG=1" {
                pings += 1;
            }
        }
        assert!(pings >= 3, "pings while draining: {pings}");
        wd.stop();
    }

    /// Runs in a child process (see below) with `$NOTIFY_SOCKET` and `$WATCHDOG_USEC` set: the
    /// public, environment-driven API end to end. Ignored in normal runs; a no-op without the
    /// variables.
    #[test]
    #[ignore = "run by through_the_environment_in_a_child_process"]
    fn child_sends_through_the_environment() {
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            return;
        }
        assert!(notify_ready().unwrap());
        assert!(notify_reloading().unwrap());
        assert!(notify_status("reloaded").unwrap());
        let wd = spawn_watchdog(|| true).expect("a watchdog with WATCHDOG_USEC set");
        assert_eq!(wd.interval(), Duration::from_millis(20));
        std::thread::sleep(Duration::from_millis(60));
        wd.stop();
        assert!(notify_stopping().unwrap());
    }

    #[test]
    fn through_the_environment_in_a_child_process() {
        // The environment is process-wide: set it in a child, never in this multi-threaded one.
        let (_dir, sock, n) = listener();
        let NotifyAddr::Path(path) = &n.addr else {
            unreachable!()
        };
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "systemd::tests::child_sends_through_the_environment",
                "--ignored",
                "--test-threads=1",
            ])
            .env("NOTIFY_SOCKET", path)
            .env("WATCHDOG_USEC", "40000")
            .env("WATCHDOG_PID", std::process::id().to_string())
            .output()
            .unwrap();
        // WATCHDOG_PID names this process, not the child: the child must not start a watchdog.
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            !out.status.success(),
            "the child should refuse a watchdog meant for another pid"
        );
        assert!(
            stdout.contains("a watchdog with WATCHDOG_USEC set"),
            "{stdout}"
        );

        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "systemd::tests::child_sends_through_the_environment",
                "--ignored",
                "--test-threads=1",
            ])
            .env("NOTIFY_SOCKET", path)
            .env("WATCHDOG_USEC", "40000")
            .env_remove("WATCHDOG_PID")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));

        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        while let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        // The first child sent READY, RELOADING and STATUS before failing on the watchdog.
        let ready = got.iter().filter(|m| m.starts_with("READY=1")).count();
        assert_eq!(ready, 2, "{got:?}");
        assert!(got
            .iter()
            .any(|m| m.starts_with("RELOADING=1\n") && m.contains("MONOTONIC_USEC=")));
        assert!(got.iter().any(|m| m == "STATUS=reloaded"));
        assert!(
            got.iter().filter(|m| *m == "WATCHDOG=1").count() >= 2,
            "{got:?}"
        );
        assert_eq!(
            got.last().map(String::as_str),
            Some("STOPPING=1\nSTATUS=draining")
        );
    }
}
