//! One client connection: read and frame requests (keep-alive, pipelining, 100-continue,
//! limits and deadlines), run each through the proxy phases in order, write the responses.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use crate::error::RequestError;
use crate::http::chunked::{ChunkError, ChunkedDecoder};
use crate::http::request::{BodyFraming, HeadLimits, RequestHead};
use crate::http::response::{write_error, CONTINUE};
use crate::proxy;
use crate::upstream::stream::read_more;
use crate::worker::Worker;

/// Serves one accepted connection until it closes.
pub async fn serve_connection(stream: TcpStream, peer: SocketAddr, worker: Rc<Worker>) {
    let w = worker.index;
    worker.connections.set(worker.connections.get() + 1);
    worker.metrics.connections_open.add(w, 1);
    worker.metrics.connections_accepted.inc(w);
    let _ = stream.set_nodelay(true);
    connection_loop(stream, peer, &worker).await;
    worker.metrics.connections_open.add(w, -1);
    worker.connections.set(worker.connections.get() - 1);
}

enum Read {
    Data(Vec<u8>),
    Eof,
    Timeout,
    Shutdown,
}

async fn read_until(
    stream: &mut TcpStream,
    buf: Vec<u8>,
    deadline: Instant,
    min_spare: usize,
) -> Read {
    match monoio::time::timeout_at(deadline.into(), read_more(stream, buf, min_spare)).await {
        Ok((Ok(0), _)) | Ok((Err(_), _)) => Read::Eof,
        Ok((Ok(_), b)) => Read::Data(b),
        Err(_) => Read::Timeout,
    }
}

async fn connection_loop(mut stream: TcpStream, peer: SocketAddr, worker: &Worker) {
    let cfg = &worker.server;
    let limits = HeadLimits {
        max_header_bytes: cfg.max_header_bytes,
        max_headers: cfg.max_headers,
    };
    let header_timeout = Duration::from_millis(cfg.header_timeout_ms);
    let body_timeout = Duration::from_millis(cfg.body_timeout_ms);
    let idle_timeout = Duration::from_millis(cfg.idle_timeout_ms);
    let mut buf: Vec<u8> = Vec::with_capacity(8 * 1024);
    let mut out: Vec<u8> = Vec::with_capacity(8 * 1024);
    let mut served: u64 = 0;

    loop {
        // ---- the head
        let mut head_deadline = (!buf.is_empty()).then(|| Instant::now() + header_timeout);
        let head = loop {
            if !buf.is_empty() {
                match RequestHead::parse(&buf, limits) {
                    Ok(Some(h)) => break h,
                    Ok(None) => {}
                    Err(e) => {
                        reject(&mut stream, worker, out, &e, None).await;
                        return;
                    }
                }
            }
            let r = match head_deadline {
                None => {
                    // Idle between requests: the idle timeout, or shutdown, closes quietly.
                    if worker.shutdown.is_set() {
                        return;
                    }
                    let fut = read_until(
                        &mut stream,
                        std::mem::take(&mut buf),
                        Instant::now() + idle_timeout,
                        8 * 1024,
                    );
                    monoio::select! {
                        _ = worker.shutdown.wait() => Read::Shutdown,
                        r = fut => r,
                    }
                }
                Some(d) => read_until(&mut stream, std::mem::take(&mut buf), d, 8 * 1024).await,
            };
            match r {
                Read::Data(b) => {
                    buf = b;
                    if head_deadline.is_none() {
                        head_deadline = Some(Instant::now() + header_timeout);
                    }
                }
                Read::Eof | Read::Shutdown => return,
                Read::Timeout if head_deadline.is_none() => return,
                Read::Timeout => {
                    reject(
                        &mut stream,
                        worker,
                        out,
                        &RequestError::HeaderTimeout(header_timeout),
                        None,
                    )
                    .await;
                    return;
                }
            }
        };
        buf.drain(..head.head_len());

        // ---- the body
        let max_body = cfg.max_body_bytes;
        let body_deadline = Instant::now() + body_timeout;
        let body = match head.framing {
            BodyFraming::None => Vec::new(),
            BodyFraming::Length(n) => {
                if n > max_body as u64 {
                    reject(
                        &mut stream,
                        worker,
                        out,
                        &RequestError::BodyTooLarge { limit: max_body },
                        None,
                    )
                    .await;
                    return;
                }
                let n = n as usize;
                if head.expect_continue && buf.len() < n {
                    let (r, _) = stream.write_all(CONTINUE.to_vec()).await;
                    if r.is_err() {
                        return;
                    }
                }
                while buf.len() < n {
                    let want = (n - buf.len()).min(256 * 1024);
                    let more =
                        read_body(&mut stream, std::mem::take(&mut buf), body_deadline, want);
                    match more.await {
                        Ok(b) => buf = b,
                        Err(timed_out) => {
                            return body_failed(&mut stream, worker, out, timed_out, body_timeout)
                                .await
                        }
                    }
                }
                let rest = buf.split_off(n);
                std::mem::replace(&mut buf, rest)
            }
            BodyFraming::Chunked => {
                if head.expect_continue && buf.is_empty() {
                    let (r, _) = stream.write_all(CONTINUE.to_vec()).await;
                    if r.is_err() {
                        return;
                    }
                }
                let mut dec = ChunkedDecoder::new(max_body);
                let mut body = Vec::with_capacity(buf.len().min(max_body));
                loop {
                    match dec.decode(&buf, &mut body) {
                        Ok(used) => {
                            buf.drain(..used);
                        }
                        Err(e) => {
                            let err = match e {
                                ChunkError::TooLarge => RequestError::BodyTooLarge { limit: max_body },
                                other => RequestError::Malformed {
                                    code: "invalid_chunk",
                                    detail: format!("the chunked body is malformed ({other}); send valid chunked framing"),
                                },
                            };
                            reject(&mut stream, worker, out, &err, None).await;
                            return;
                        }
                    }
                    if dec.is_done() {
                        break;
                    }
                    let more = read_body(
                        &mut stream,
                        std::mem::take(&mut buf),
                        body_deadline,
                        16 * 1024,
                    );
                    match more.await {
                        Ok(b) => buf = b,
                        Err(timed_out) => {
                            return body_failed(&mut stream, worker, out, timed_out, body_timeout)
                                .await
                        }
                    }
                }
                body
            }
        };

        // ---- the exchange
        served += 1;
        let mut keep_alive = head.keep_alive
            && !worker.shutdown.is_set()
            && (cfg.max_requests_per_connection == 0 || served < cfg.max_requests_per_connection);
        let started = Instant::now();
        let received_at = SystemTime::now();
        let view = worker.view();
        let w = worker.index;
        worker.metrics.inflight.add(w, 1);
        let body_len = body.len() as u64;
        let handled = proxy::handle(worker, &view, &head, body, peer, received_at).await;
        keep_alive = keep_alive && !worker.shutdown.is_set();
        out.clear();
        let status = match &handled.result {
            Ok(resp) => {
                proxy::write_response(&mut out, resp, keep_alive);
                resp.status
            }
            Err(e) => {
                keep_alive = keep_alive && !e.closes_connection();
                worker.metrics.rejected(w, e.status_and_code().1);
                tracing::debug!(peer = %peer, request_id = %handled.request_id, error = %e, "request not relayed");
                write_error(&mut out, e, keep_alive, Some(&handled.request_id));
                e.status_and_code().0
            }
        };
        let out_len = out.len() as u64;
        // A client that does not read its response within the body deadline is dropped.
        let r = match monoio::time::timeout(body_timeout, stream.write_all(out)).await {
            Ok((r, o)) => {
                out = o;
                r.map(|_| ())
            }
            Err(_) => {
                out = Vec::new();
                Err(std::io::ErrorKind::TimedOut.into())
            }
        };
        worker.metrics.inflight.add(w, -1);
        let log_cfg = &view.snap.config.log;
        if log_cfg.access_log && worker.sample(log_cfg.access_log_sample_rate) {
            tracing::info!(
                target: "relay::access",
                peer = %peer,
                method = head.method(),
                path = head.path(),
                route = handled.route.map(|r| &*r.name).unwrap_or("-"),
                status,
                bytes_in = body_len,
                bytes_out = out_len,
                duration_us = started.elapsed().as_micros() as u64,
                request_id = %handled.request_id,
                "access"
            );
        }
        if let Some(route) = handled.route {
            let m = &view.snap.route_metrics[route.index];
            m.status(w, status);
            m.duration.observe(w, started.elapsed());
            m.bytes_in.add(w, body_len);
            m.bytes_out.add(w, out_len);
            m.pii_hashed.add(w, handled.fields_hashed);
        }
        drop(handled);
        drop(view);
        if r.is_err() || !keep_alive {
            linger_close(stream).await;
            return;
        }
    }
}

/// Reads more of a body before `deadline`: the grown buffer, or `Err(true)` on the deadline and
/// `Err(false)` when the client closed (or broke) the connection mid-body.
async fn read_body(
    stream: &mut TcpStream,
    buf: Vec<u8>,
    deadline: Instant,
    min_spare: usize,
) -> Result<Vec<u8>, bool> {
    match read_until(stream, buf, deadline, min_spare).await {
        Read::Data(b) => Ok(b),
        Read::Timeout => Err(true),
        Read::Eof | Read::Shutdown => Err(false),
    }
}

/// Ends a connection whose body did not arrive: 408 after the deadline; a client that went away
/// mid-body is only counted (nobody is left to answer).
async fn body_failed(
    stream: &mut TcpStream,
    worker: &Worker,
    out: Vec<u8>,
    timed_out: bool,
    limit: Duration,
) {
    if timed_out {
        reject(stream, worker, out, &RequestError::BodyTimeout(limit), None).await;
    } else {
        worker.metrics.rejected(worker.index, "incomplete_body");
    }
}

/// Writes relay's own error response and counts it. The caller closes the connection.
async fn reject(
    stream: &mut TcpStream,
    worker: &Worker,
    mut out: Vec<u8>,
    err: &RequestError,
    request_id: Option<&str>,
) {
    worker
        .metrics
        .rejected(worker.index, err.status_and_code().1);
    out.clear();
    write_error(&mut out, err, false, request_id);
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
