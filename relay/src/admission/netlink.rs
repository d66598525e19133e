//! Just enough rtnetlink to find and remove a stale XDP attachment on an interface.
//!
//! aya attaches with a `bpf_link`, which the kernel removes when the process dies; but an
//! attachment made through the legacy netlink path (older kernels, or another tool) outlives a
//! crashed relay and makes the next attach fail with `EBUSY`. This module asks the kernel which
//! program is attached (`RTM_GETLINK`, `IFLA_XDP`) and clears it (`RTM_SETLINK`, fd -1).
//!
//! Unsafe: raw `socket`/`sendto`/`recv` calls on a netlink socket (no safe std API exists);
//! each block says why it is sound.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const IFLA_XDP: u16 = 43;
const IFLA_XDP_FD: u16 = 1;
const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_XDP_FLAGS: u16 = 3;
const IFLA_XDP_PROG_ID: u16 = 4;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;
const XDP_FLAGS_SKB_MODE: u32 = 2;
const XDP_FLAGS_DRV_MODE: u32 = 4;
const XDP_FLAGS_HW_MODE: u32 = 8;

/// What the kernel says is attached to an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Attached {
    /// `IFLA_XDP_ATTACHED`: 0 none, 1 driver, 2 skb (generic), 3 hardware, 4 several.
    pub mode: u8,
    /// The attached program's id (0 when none or several).
    pub prog_id: u32,
}

struct Socket(OwnedFd);

impl Socket {
    fn open() -> io::Result<Socket> {
        // SAFETY: plain socket(2) call with constant arguments; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own and nothing else closes it.
        Ok(Socket(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn send(&self, msg: &[u8]) -> io::Result<()> {
        // SAFETY: sockaddr_nl is plain data; all-zero is a valid value (kernel as destination).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: msg and addr are valid for the lengths passed for the duration of the call.
        let n = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: buf is valid for writes of buf.len() bytes for the duration of the call.
        let n = unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

fn header(buf: &mut Vec<u8>, kind: u16, flags: u16, ifindex: u32) {
    buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched in finish()
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&1u32.to_ne_bytes()); // seq
    buf.extend_from_slice(&0u32.to_ne_bytes()); // pid
                                                // ifinfomsg: family, pad, type, index, flags, change
    buf.extend_from_slice(&[0u8, 0u8]);
    buf.extend_from_slice(&0u16.to_ne_bytes());
    buf.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
}

fn finish(buf: &mut [u8]) {
    let len = buf.len() as u32;
    buf[..4].copy_from_slice(&len.to_ne_bytes());
}

/// Walks netlink attributes in `data`: (type without flags, payload).
fn attrs(mut data: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if data.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([data[0], data[1]]) as usize;
        let kind = u16::from_ne_bytes([data[2], data[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > data.len() {
            return None;
        }
        let payload = &data[4..len];
        data = &data[((len + 3) & !3).min(data.len())..];
        Some((kind, payload))
    })
}

/// Which XDP program (if any) is attached to `ifindex`.
pub(crate) fn attached(ifindex: u32) -> io::Result<Attached> {
    let sock = Socket::open()?;
    let mut msg = Vec::with_capacity(32);
    header(&mut msg, RTM_GETLINK, NLM_F_REQUEST, ifindex);
    finish(&mut msg);
    sock.send(&msg)?;
    let mut buf = vec![0u8; 64 * 1024];
    let n = sock.recv(&mut buf)?;
    let buf = &buf[..n];
    if buf.len() < 16 {
        return Err(io::Error::other("short netlink reply"));
    }
    let kind = u16::from_ne_bytes([buf[4], buf[5]]);
    if kind == NLMSG_ERROR && buf.len() >= 20 {
        let errno = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
        return Err(io::Error::from_raw_os_error(-errno));
    }
    let len = (u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize).min(buf.len());
    let mut out = Attached {
        mode: 0,
        prog_id: 0,
    };
    if len < 32 {
        return Ok(out);
    }
    for (k, v) in attrs(&buf[32..len]) {
        if k != IFLA_XDP {
            continue;
        }
        for (k, v) in attrs(v) {
            match (k, v.len()) {
                (IFLA_XDP_ATTACHED, 1..) => out.mode = v[0],
                (IFLA_XDP_PROG_ID, 4..) => {
                    out.prog_id = u32::from_ne_bytes([v[0], v[1], v[2], v[3]])
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

/// Detaches whatever legacy (netlink) XDP attachment `ifindex` has in the mode `attached` says.
/// Fails with `EBUSY` when the attachment is a live `bpf_link` of another process.
pub(crate) fn detach(ifindex: u32, attached_mode: u8) -> io::Result<()> {
    let flags: &[u32] = match attached_mode {
        1 => &[XDP_FLAGS_DRV_MODE],
        2 => &[XDP_FLAGS_SKB_MODE],
        3 => &[XDP_FLAGS_HW_MODE],
        _ => &[XDP_FLAGS_SKB_MODE, XDP_FLAGS_DRV_MODE],
    };
    let sock = Socket::open()?;
    for &f in flags {
        let mut msg = Vec::with_capacity(48);
        header(&mut msg, RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK, ifindex);
        // IFLA_XDP { IFLA_XDP_FD = -1, IFLA_XDP_FLAGS = f }
        msg.extend_from_slice(&20u16.to_ne_bytes());
        msg.extend_from_slice(&(IFLA_XDP | NLA_F_NESTED).to_ne_bytes());
        msg.extend_from_slice(&8u16.to_ne_bytes());
        msg.extend_from_slice(&IFLA_XDP_FD.to_ne_bytes());
        msg.extend_from_slice(&(-1i32).to_ne_bytes());
        msg.extend_from_slice(&8u16.to_ne_bytes());
        msg.extend_from_slice(&IFLA_XDP_FLAGS.to_ne_bytes());
        msg.extend_from_slice(&f.to_ne_bytes());
        finish(&mut msg);
        sock.send(&msg)?;
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf)?;
        if n >= 20 {
            let kind = u16::from_ne_bytes([buf[4], buf[5]]);
            let errno = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
            if kind == NLMSG_ERROR && errno != 0 {
                return Err(io::Error::from_raw_os_error(-errno));
            }
            if kind != NLMSG_ERROR && kind != NLMSG_DONE {
                return Err(io::Error::other("unexpected netlink reply"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_has_no_xdp_program() {
        // ifindex 1 is `lo` in every network namespace; reading needs no privileges.
        let a = super::attached(1).unwrap();
        assert_eq!(a.mode, 0);
        assert_eq!(a.prog_id, 0);
    }
}
