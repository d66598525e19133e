//! A connection to an upstream node, plain TCP or TLS, with owned-buffer I/O helpers that work
//! the same on the io_uring and epoll drivers, and a non-blocking check that a pooled
//! connection has not been closed by the upstream while idle.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use monoio_rustls::ClientTlsStream;

/// Reads once into the spare capacity of `buf` (growing it by at least `min_spare` first).
/// Returns the bytes read (0 = end of stream) and the buffer with them appended.
pub async fn read_more<S: AsyncReadRent>(
    s: &mut S,
    mut buf: Vec<u8>,
    min_spare: usize,
) -> (io::Result<usize>, Vec<u8>) {
    if buf.capacity() - buf.len() < min_spare {
        buf.reserve(min_spare);
    }
    let len = buf.len();
    let cap = buf.capacity();
    let (r, slice) = s.read(buf.slice_mut(len..cap)).await;
    (r, slice.into_inner())
}

/// An upstream connection.
pub enum UpstreamStream {
    /// Plain HTTP.
    Plain(TcpStream),
    /// HTTPS, with the TCP socket's descriptor (for [`UpstreamStream::is_stale`]).
    Tls(Box<ClientTlsStream<TcpStream>>, RawFd),
}

impl UpstreamStream {
    /// A TLS stream over `tcp`.
    pub fn tls(s: ClientTlsStream<TcpStream>, fd: RawFd) -> UpstreamStream {
        UpstreamStream::Tls(Box::new(s), fd)
    }

    /// The descriptor of the TCP socket.
    pub fn raw_fd(&self) -> RawFd {
        match self {
            UpstreamStream::Plain(s) => s.as_raw_fd(),
            UpstreamStream::Tls(_, fd) => *fd,
        }
    }

    /// Whether an idle connection must not be reused: the upstream closed it (end of stream),
    /// reset it, or sent bytes nobody asked for (a TLS close_notify, a stray response).
    /// Never blocks: a `MSG_PEEK | MSG_DONTWAIT` receive of one byte.
    pub fn is_stale(&self) -> bool {
        let mut b = [0u8; 1];
        // SAFETY: `raw_fd` is the open socket this stream owns for as long as `self` lives;
        // `b` is a valid one-byte buffer; MSG_PEEK leaves the data in the socket and
        // MSG_DONTWAIT makes the call return at once.
        let n = unsafe {
            libc::recv(
                self.raw_fd(),
                b.as_mut_ptr().cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            )
        } else {
            true
        }
    }

    /// See [`read_more`].
    pub async fn read_more(
        &mut self,
        buf: Vec<u8>,
        min_spare: usize,
    ) -> (io::Result<usize>, Vec<u8>) {
        match self {
            UpstreamStream::Plain(s) => read_more(s, buf, min_spare).await,
            UpstreamStream::Tls(s, _) => read_more(s.as_mut(), buf, min_spare).await,
        }
    }

    /// Writes all of `buf`.
    pub async fn write_all(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let (r, buf) = match self {
            UpstreamStream::Plain(s) => s.write_all(buf).await,
            UpstreamStream::Tls(s, _) => {
                let (r, b) = s.write_all(buf).await;
                if r.is_err() {
                    return (r.map(|_| ()), b);
                }
                let f = s.flush().await;
                (f.map(|_| b.len()), b)
            }
        };
        (r.map(|_| ()), buf)
    }
}
