//! One client connection: read a head, read its body, respond; again while keep-alive lasts.
//!
//! Framing is relay-http's ([`HeadScanner`], [`RequestHead`], [`BodyDecoder`]): this module owns
//! the socket, the deadlines and the buffers. Memory per connection is bounded by the limits:
//! the head by `max_header_bytes` (checked by the scanner as bytes arrive), the body by
//! `max_body_bytes` (checked by the decoder before bytes are stored), each read by its size.
//! An idle keep-alive connection holds no buffer: it waits for readability, then allocates;
//! only for `keepalive_read_window_ms` after a response does it keep its buffer with a receive
//! posted (the next request then costs one receive instead of a readiness wait plus one).
//! A panic while handling a request ends that connection only (500 if nothing was written).

pub mod config;

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use relay_http::{BodyDecoder, BodyLimits, HeadLimits, HeadScanner, HttpError, RequestHead};

use crate::error::RequestError;
use crate::proxy::{self, Handled};
use crate::reason::Reason;
use crate::reply::{write_error, CONTINUE};
use crate::snapshot::WorkerView;
use crate::upstream::stream::read_more;
use crate::worker::Worker;

/// Bytes asked for per read while a head or a body arrives.
const READ_CHUNK: usize = 16 * 1024;
/// Largest single read of a body, in bytes.
const MAX_BODY_READ: usize = 256 * 1024;

/// Serves one accepted connection until it closes. A panic inside ends this connection only.
pub async fn serve_connection(stream: TcpStream, peer: SocketAddr, worker: Rc<Worker>) {
    let w = worker.index;
    worker.connections.set(worker.connections.get() + 1);
    worker.metrics.connections_open.add(w, 1);
    worker.metrics.connections_accepted.inc(w);
    let _ = stream.set_nodelay(true);
    let conn = Connection {
        stream,
        peer,
        worker: &worker,
        buf: Vec::new(),
        served: 0,
    };
    if let Err(msg) = CatchUnwind::new(conn.run()).await {
        worker.metrics.panics.inc(w);
        tracing::error!(worker = w, peer = %peer, panic = %msg, "panic while serving a connection; closed it");
    }
    worker.metrics.connections_open.add(w, -1);
    worker.connections.set(worker.connections.get() - 1);
}

/// Why reading a request stopped short of a request to handle.
enum Stop {
    /// Close quietly: the client went away, idled out, or relay is shutting down.
    Close,
    /// Answer with this error, then close.
    Reject(RequestError),
    /// The client closed mid-body: count it, nobody is left to answer.
    Gone,
}

impl From<HttpError> for Stop {
    fn from(e: HttpError) -> Stop {
        Stop::Reject(e.into())
    }
}

/// One client connection and its read buffer.
struct Connection<'w> {
    stream: TcpStream,
    peer: SocketAddr,
    worker: &'w Worker,
    /// Bytes read but not yet used (the next pipelined request, or nothing).
    buf: Vec<u8>,
    /// Requests answered so far.
    served: u64,
}

impl Connection<'_> {
    async fn run(mut self) {
        loop {
            let head = match self.read_head().await {
                Ok(h) => h,
                Err(stop) => return self.stop(stop).await,
            };
            let body = match self.read_body(&head).await {
                Ok(b) => b,
                Err(stop) => return self.stop(stop).await,
            };
            if !self.respond(head, body).await {
                return linger_close(self.stream).await;
            }
        }
    }

    async fn stop(&mut self, stop: Stop) {
        match stop {
            Stop::Close => {}
            Stop::Gone => self
                .worker
                .metrics
                .rejected(self.worker.index, Reason::IncompleteBody),
            Stop::Reject(e) => reject(&mut self.stream, self.worker, &e).await,
        }
    }

    /// Reads the next head. Between requests the connection idles without a buffer until it is
    /// readable (or the idle timeout or shutdown closes it); the head deadline starts with the
    /// first byte. The head is scanned incrementally and parsed once, when complete.
    async fn read_head(&mut self) -> Result<RequestHead, Stop> {
        let cfg = &self.worker.server;
        let limits = HeadLimits {
            max_header_bytes: cfg.max_header_bytes,
            max_headers: cfg.max_headers,
        };
        let header_timeout = Duration::from_millis(cfg.header_timeout_ms);
        if self.buf.is_empty() && !(self.served > 0 && self.read_while_hot().await?) {
            self.buf = Vec::new();
            self.wait_readable().await?;
        }
        let deadline = Instant::now() + header_timeout;
        let mut scanner = HeadScanner::new();
        loop {
            if let Some(span) = scanner.scan(&self.buf, limits.max_header_bytes)? {
                let head = RequestHead::parse_complete(&self.buf[span.start..span.end], limits)?;
                self.buf.drain(..span.end);
                return Ok(head);
            }
            match self.read(deadline, READ_CHUNK).await {
                Read::Data => {}
                // Closed between requests, or mid-head: nothing to answer.
                Read::Eof => return Err(Stop::Close),
                Read::Timeout => {
                    return Err(Stop::Reject(RequestError::HeaderTimeout(header_timeout)))
                }
            }
        }
    }

    /// Right after a response: one receive into the connection's own buffer (its capacity
    /// kept from the last request), for at most `keepalive_read_window_ms`. `Ok(true)`: bytes
    /// arrived; `Ok(false)`: the window passed and the buffer went with the cancelled receive.
    async fn read_while_hot(&mut self) -> Result<bool, Stop> {
        let worker = self.worker;
        let window = worker.server.keepalive_read_window_ms;
        if window == 0 {
            return Ok(false);
        }
        if worker.shutdown.is_set() {
            return Err(Stop::Close);
        }
        let buf = std::mem::take(&mut self.buf);
        let read = monoio::time::timeout(
            Duration::from_millis(window),
            read_more(&mut self.stream, buf, READ_CHUNK),
        );
        let got = monoio::select! {
            _ = worker.shutdown.wait() => None,
            r = read => Some(r),
        };
        match got {
            Some(Ok((Ok(n), b))) if n > 0 => {
                self.buf = b;
                Ok(true)
            }
            Some(Err(_)) => Ok(false),
            // Closed, reset, or shutdown: nothing to answer.
            _ => Err(Stop::Close),
        }
    }

    /// Idles until the client sends something, the idle timeout passes, or shutdown begins.
    async fn wait_readable(&mut self) -> Result<(), Stop> {
        if self.worker.shutdown.is_set() {
            return Err(Stop::Close);
        }
        let idle = Duration::from_millis(self.worker.server.idle_timeout_ms);
        // Not relaxed: on the epoll driver a relaxed wait may report a stale readiness at once.
        let readable = monoio::time::timeout(idle, self.stream.readable(false));
        monoio::select! {
            _ = self.worker.shutdown.wait() => Err(Stop::Close),
            r = readable => match r {
                Ok(Ok(())) => Ok(()),
                _ => Err(Stop::Close),
            },
        }
    }

    /// Reads the body the head announced, de-chunked, within `body_timeout_ms`. Sends
    /// `100 Continue` first when asked and the body has not started arriving.
    async fn read_body(&mut self, head: &RequestHead) -> Result<Vec<u8>, Stop> {
        let cfg = &self.worker.server;
        let limits = BodyLimits {
            max_body: cfg.max_body_bytes as u64,
            max_chunk_line: cfg.max_chunk_line_bytes,
            max_trailer: cfg.max_trailer_bytes,
        };
        let mut decoder = BodyDecoder::new(head.framing, limits)?;
        if decoder.is_done() {
            return Ok(Vec::new());
        }
        if head.expect_continue && self.buf.is_empty() {
            let (r, _) = self.stream.write_all(CONTINUE).await;
            r.map_err(|_| Stop::Close)?;
        }
        let body_timeout = Duration::from_millis(cfg.body_timeout_ms);
        let deadline = Instant::now() + body_timeout;
        // A Content-Length body was admitted whole by the decoder: reserve it once.
        let mut body = Vec::with_capacity(decoder.admitted() as usize);
        loop {
            let used = decoder.decode(&self.buf, &mut body)?;
            self.buf.drain(..used);
            if decoder.is_done() {
                return Ok(body);
            }
            match self.read(deadline, decoder.want(MAX_BODY_READ)).await {
                Read::Data => {}
                Read::Eof => return Err(Stop::Gone),
                Read::Timeout => return Err(Stop::Reject(RequestError::BodyTimeout(body_timeout))),
            }
        }
    }

    /// One read of at least `want` spare bytes into the buffer, before `deadline`.
    async fn read(&mut self, deadline: Instant, want: usize) -> Read {
        let buf = std::mem::take(&mut self.buf);
        let fut = read_more(&mut self.stream, buf, want.max(1));
        match monoio::time::timeout_at(deadline.into(), fut).await {
            Ok((Ok(n), b)) => {
                self.buf = b;
                if n == 0 {
                    Read::Eof
                } else {
                    Read::Data
                }
            }
            Ok((Err(_), b)) => {
                self.buf = b;
                Read::Eof
            }
            Err(_) => Read::Timeout,
        }
    }

    /// Runs the request through the proxy phases and writes the response. Returns whether the
    /// connection stays open for another request.
    async fn respond(&mut self, head: RequestHead, body: Vec<u8>) -> bool {
        let worker = self.worker;
        let cfg = &worker.server;
        self.served += 1;
        let keep_alive = head.keep_alive
            && (cfg.max_requests_per_connection == 0
                || self.served < cfg.max_requests_per_connection);
        let started = Instant::now();
        let view = worker.view();
        worker.metrics.inflight.add(worker.index, 1);
        let bytes_in = body.len() as u64;
        let handled = self.handle(&view, &head, body).await;
        let keep_alive = keep_alive && !worker.shutdown.is_set();
        let (out, status, keep_alive) = self.render(&handled, keep_alive);
        let bytes_out = out.len() as u64;
        // A client that does not read its response within the body deadline is dropped.
        let write_limit = Duration::from_millis(cfg.body_timeout_ms);
        let written = matches!(
            monoio::time::timeout(write_limit, self.stream.write_all(out)).await,
            Ok((Ok(_), _))
        );
        worker.metrics.inflight.add(worker.index, -1);
        let exchanged = proxy::Exchanged {
            peer: self.peer,
            status,
            bytes_in,
            bytes_out,
            started,
        };
        proxy::log(worker, &view, &head, &handled, &exchanged);
        written && keep_alive
    }

    /// The proxy phases, with a panic inside them turned into 500 `internal_error`.
    async fn handle<'v>(
        &self,
        view: &'v WorkerView,
        head: &RequestHead,
        body: Vec<u8>,
    ) -> Handled<'v> {
        let w = self.worker.index;
        let phases = proxy::handle(self.worker, view, head, body, self.peer, SystemTime::now());
        CatchUnwind::new(phases).await.unwrap_or_else(|msg| {
            self.worker.metrics.panics.inc(w);
            tracing::error!(worker = w, peer = %self.peer, panic = %msg, "panic while handling a request; answered 500 and closed the connection");
            Handled::failed(self.worker.next_request_id(), self.peer, RequestError::Internal)
        })
    }

    /// The bytes to write for `handled`, its status, and whether keep-alive survives it.
    fn render(&self, handled: &Handled<'_>, keep_alive: bool) -> (Vec<u8>, u16, bool) {
        let mut out = Vec::new();
        match &handled.result {
            Ok(resp) => {
                proxy::write_response(&mut out, resp, keep_alive);
                (out, resp.status, keep_alive)
            }
            Err(e) => {
                let keep_alive = keep_alive && !e.closes_connection();
                let (status, reason) = e.status_and_reason();
                self.worker.metrics.rejected(self.worker.index, reason);
                tracing::debug!(peer = %self.peer, request_id = %handled.request_id(), fault = ?e.fault(), error = %e, "request not relayed");
                write_error(&mut out, e, keep_alive, Some(handled.request_id()));
                (out, status, keep_alive)
            }
        }
    }
}

enum Read {
    Data,
    Eof,
    Timeout,
}

/// Writes relay's own error response and counts it. The caller closes the connection.
async fn reject(stream: &mut TcpStream, worker: &Worker, err: &RequestError) {
    worker
        .metrics
        .rejected(worker.index, err.status_and_reason().1);
    let mut out = Vec::with_capacity(512);
    write_error(&mut out, err, false, None);
    let _ = stream.write_all(out).await;
    let _ = stream.shutdown().await;
    drain_briefly(stream).await;
}

/// Half-closes, then reads (and discards) what the client still sends for a moment, so that
/// closing with unread data does not reset the connection before the client read our response.
async fn linger_close(mut stream: TcpStream) {
    let _ = stream.shutdown().await;
    drain_briefly(&mut stream).await;
}

async fn drain_briefly(stream: &mut TcpStream) {
    let deadline = Instant::now() + Duration::from_millis(500);
    let mut total = 0usize;
    let mut buf = vec![0u8; 16 * 1024];
    while total < 1024 * 1024 {
        match monoio::time::timeout_at(deadline.into(), stream.read(buf)).await {
            Ok((Ok(n), b)) if n > 0 => {
                total += n;
                buf = b;
            }
            _ => return,
        }
    }
}

/// Polls a future, turning a panic inside it into `Err(message)`. The future is boxed, which
/// also keeps a connection task small while it idles.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> CatchUnwind<F> {
    fn new(f: F) -> Self {
        CatchUnwind(Box::pin(f))
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let fut = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(payload) => {
                let msg = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic payload".into());
                Poll::Ready(Err(msg))
            }
        }
    }
}
