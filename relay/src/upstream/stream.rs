//! A connection to an upstream node, plain TCP or TLS, with owned-buffer I/O helpers that work
//! the same on the io_uring and epoll drivers.

use std::io;

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
    /// HTTPS.
    Tls(Box<ClientTlsStream<TcpStream>>),
}

impl UpstreamStream {
    /// See [`read_more`].
    pub async fn read_more(
        &mut self,
        buf: Vec<u8>,
        min_spare: usize,
    ) -> (io::Result<usize>, Vec<u8>) {
        match self {
            UpstreamStream::Plain(s) => read_more(s, buf, min_spare).await,
            UpstreamStream::Tls(s) => read_more(s.as_mut(), buf, min_spare).await,
        }
    }

    /// Writes all of `buf`.
    pub async fn write_all(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let (r, buf) = match self {
            UpstreamStream::Plain(s) => s.write_all(buf).await,
            UpstreamStream::Tls(s) => {
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
