//! The io_uring row: a real `io_uring_setup` probe, a monoio io_uring runtime build, and why
//! either failed.

use crate::server::config::IoEngine;

use super::{Check, Status};

/// The io_uring row. `setup`: the raw probe; `monoio`: the runtime build; `disabled`:
/// `kernel.io_uring_disabled` (absent on kernels < 6.6); `seccomp`: `/proc/self/status` mode.
pub fn io_uring_check(
    engine: IoEngine,
    setup: Result<(), i32>,
    monoio: Result<(), String>,
    disabled: Option<u8>,
    seccomp: Option<u8>,
) -> Check {
    let name = "io_uring";
    let why = match (&setup, &monoio) {
        (Ok(()), Ok(())) => None,
        (Ok(()), Err(e)) => Some((
            format!("io_uring_setup works but the monoio io_uring runtime does not build: {e}"),
            "the kernel lacks a feature monoio needs (5.6+ recommended); use a newer kernel or io_engine = \"epoll\"".to_string(),
        )),
        (Err(errno), _) => Some(explain_io_uring_errno(*errno, disabled, seccomp)),
    };
    match (why, engine) {
        (None, IoEngine::Epoll) => Check::new(
            name,
            Status::Warn,
            "available, but io_engine = \"epoll\" is configured",
            "set io_engine = \"auto\" in [server] to use io_uring",
        ),
        (None, _) => Check::pass(
            name,
            "io_uring_setup works and a monoio io_uring runtime builds",
        ),
        (Some((d, _)), IoEngine::Epoll) => Check::pass(
            name,
            format!("unavailable ({d}); io_engine = \"epoll\" is configured"),
        ),
        (Some((d, fix)), IoEngine::Auto) => Check::new(
            name,
            Status::Warn,
            format!("unavailable: {d}; relay falls back to epoll"),
            fix,
        ),
        (Some((d, fix)), IoEngine::IoUring) => Check::new(
            name,
            Status::Fail,
            format!("unavailable: {d}; io_engine = \"io_uring\" will not start"),
            format!("{fix}; or set io_engine = \"auto\""),
        ),
    }
}

/// Why `io_uring_setup` failed with `errno`, and the fix.
pub fn explain_io_uring_errno(
    errno: i32,
    disabled: Option<u8>,
    seccomp: Option<u8>,
) -> (String, String) {
    let filtered = seccomp == Some(2);
    match errno {
        libc::EPERM if disabled == Some(2) => (
            "EPERM: kernel.io_uring_disabled = 2 forbids io_uring for every process".into(),
            "sysctl -w kernel.io_uring_disabled=0 (persist: tuning/sysctl.d/90-relay.conf)".into(),
        ),
        libc::EPERM if disabled == Some(1) => (
            "EPERM: kernel.io_uring_disabled = 1 allows io_uring only to kernel.io_uring_group (and CAP_SYS_ADMIN)".into(),
            "sysctl -w kernel.io_uring_disabled=0, or add the relay user to the group in kernel.io_uring_group".into(),
        ),
        libc::EPERM | libc::EACCES if filtered => (
            format!("{}: a seccomp filter denies io_uring_setup (container runtimes' default profiles do)", errno_name(errno)),
            "allow io_uring_setup/io_uring_enter/io_uring_register in the seccomp profile (k8s: a Localhost seccompProfile; systemd: SystemCallFilter=@aio)".into(),
        ),
        libc::EPERM | libc::EACCES => (
            format!("{}: denied by a security module (SELinux/AppArmor) or policy", errno_name(errno)),
            "allow io_uring in the LSM policy for relay, or run with io_engine = \"epoll\"".into(),
        ),
        libc::ENOSYS if filtered => (
            "ENOSYS: a seccomp filter hides io_uring_setup, or the kernel lacks CONFIG_IO_URING".into(),
            "allow io_uring_setup/io_uring_enter/io_uring_register in the seccomp profile, or use a kernel with io_uring".into(),
        ),
        libc::ENOSYS => (
            "ENOSYS: the kernel has no io_uring (older than 5.1, or built without CONFIG_IO_URING)".into(),
            "use a 5.10+ kernel with CONFIG_IO_URING=y".into(),
        ),
        libc::ENOMEM => (
            "ENOMEM: the ring could not be allocated; kernels < 5.11 charge it to RLIMIT_MEMLOCK".into(),
            "raise the memlock limit (LimitMEMLOCK=infinity in the unit, tuning/limits.d/relay.conf)".into(),
        ),
        e => (
            format!("{}: unexpected error from io_uring_setup", errno_name(e)),
            "check dmesg and the kernel's io_uring support, or use io_engine = \"epoll\"".into(),
        ),
    }
}

fn errno_name(e: i32) -> String {
    match e {
        libc::EPERM => "EPERM".into(),
        libc::EACCES => "EACCES".into(),
        libc::ENOSYS => "ENOSYS".into(),
        libc::ENOMEM => "ENOMEM".into(),
        libc::EINVAL => "EINVAL".into(),
        e => format!("errno {e} ({})", std::io::Error::from_raw_os_error(e)),
    }
}

// Probes.

/// Tries `io_uring_setup(1, ..)`: `Ok` when the kernel hands out a ring, else the errno.
pub fn probe_io_uring_setup() -> Result<(), i32> {
    // struct io_uring_params is 120 bytes of integers; all-zero asks for a default ring.
    let mut params = [0u32; 30];
    // SAFETY: io_uring_setup reads and writes at most sizeof(struct io_uring_params) = 120
    // bytes at the pointer, which `params` provides; no other memory is touched.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    // SAFETY: `fd` is the ring descriptor just returned to us and owned by no one else.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}

/// Builds (and drops) a monoio io_uring runtime, the exact thing a worker does.
pub fn probe_monoio() -> Result<(), String> {
    std::thread::spawn(|| {
        monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .build()
            .map(drop)
            .map_err(|e| e.to_string())
    })
    .join()
    .unwrap_or_else(|_| Err("the probe thread panicked".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::*;

    #[test]
    fn io_uring_reasons() {
        let ok = io_uring_check(IoEngine::Auto, Ok(()), Ok(()), Some(0), Some(0));
        assert_eq!(ok.status, Status::Pass);
        let c = io_uring_check(
            IoEngine::Auto,
            Err(libc::EPERM),
            Err("x".into()),
            Some(2),
            Some(0),
        );
        assert_eq!(c.status, Status::Warn);
        assert!(c.detail.contains("io_uring_disabled = 2"), "{}", c.detail);
        assert!(c.detail.contains("falls back to epoll"));
        let c = io_uring_check(
            IoEngine::IoUring,
            Err(libc::EPERM),
            Err("x".into()),
            Some(0),
            Some(2),
        );
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("seccomp"), "{}", c.detail);
        let c = io_uring_check(
            IoEngine::Auto,
            Err(libc::ENOSYS),
            Err("x".into()),
            None,
            Some(0),
        );
        assert!(c.detail.contains("CONFIG_IO_URING"), "{}", c.detail);
        let c = io_uring_check(
            IoEngine::Auto,
            Err(libc::EPERM),
            Err("x".into()),
            Some(1),
            Some(0),
        );
        assert!(c.detail.contains("io_uring_group"), "{}", c.detail);
        let c = io_uring_check(
            IoEngine::Epoll,
            Err(libc::ENOSYS),
            Err("x".into()),
            None,
            None,
        );
        assert_eq!(c.status, Status::Pass);
        let c = io_uring_check(IoEngine::Epoll, Ok(()), Ok(()), None, None);
        assert_eq!(c.status, Status::Warn);
        let c = io_uring_check(IoEngine::Auto, Ok(()), Err("EINVAL".into()), None, None);
        assert!(c.detail.contains("monoio"), "{}", c.detail);
    }

    #[test]
    fn the_io_uring_probe_agrees_with_monoio() {
        // Whatever this host allows, the raw syscall and the runtime build must agree.
        assert_eq!(probe_io_uring_setup().is_ok(), probe_monoio().is_ok());
    }
}
