//! Reading an upstream's response: the head with httparse, 1xx skipped, then the body by
//! Content-Length, chunked or close-delimited, kept whole so it can be relayed unchanged.

use std::io;
use std::time::Duration;

use super::stream::UpstreamStream;
use crate::config::UpstreamConfig;
use crate::error::RequestError;
use crate::http::chunked::ChunkedDecoder;
use crate::http::{connection_tokens, is_hop_by_hop};

/// Largest upstream response head, in bytes.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// A complete upstream response, ready to relay.
#[derive(Debug)]
pub struct UpstreamResponse {
    /// Status code.
    pub status: u16,
    /// `HTTP/1.1 <status> <reason>\r\n` followed by the end-to-end headers (`Name: value\r\n`
    /// each); hop-by-hop fields and Content-Length removed. No terminating blank line.
    pub head: Vec<u8>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
    /// The response has no body by definition (HEAD, 204, 304): relay keeps the upstream's
    /// Content-Length (if any) in `head_content_length` and sends no body.
    pub bodiless: bool,
    /// Content-Length the upstream announced for a bodiless response.
    pub head_content_length: Option<u64>,
}

/// What went wrong during one exchange (mapped to a [`RequestError`] once retries are decided).
#[derive(Debug)]
pub enum ExchangeError {
    /// An I/O error.
    Io {
        /// The OS error.
        error: io::Error,
        /// No byte of the response had arrived.
        before_response: bool,
    },
    /// The upstream closed the connection.
    Closed {
        /// No byte of the response had arrived.
        before_response: bool,
    },
    /// A deadline passed.
    Timeout {
        /// What the upstream did not do in time.
        phase: &'static str,
        /// The deadline.
        after: Duration,
    },
    /// Not a valid HTTP/1.1 response, or too large.
    Bad(String),
}

impl std::fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExchangeError::Io { error, .. } => write!(f, "{error}"),
            ExchangeError::Closed { .. } => write!(f, "connection closed"),
            ExchangeError::Timeout { phase, after } => {
                write!(f, "did not {phase} within {after:?}")
            }
            ExchangeError::Bad(s) => write!(f, "{s}"),
        }
    }
}

impl ExchangeError {
    /// Whether it failed before any byte of the response (the only retryable case).
    pub fn before_response(&self) -> bool {
        matches!(
            self,
            ExchangeError::Io {
                before_response: true,
                ..
            } | ExchangeError::Closed {
                before_response: true
            }
        )
    }

    /// The client-facing error.
    pub fn into_request_error(self, upstream: &str, _cfg: &UpstreamConfig) -> RequestError {
        let upstream = upstream.to_string();
        match self {
            ExchangeError::Io { error, .. } => RequestError::UpstreamReset {
                upstream,
                detail: error.to_string(),
            },
            ExchangeError::Closed { .. } => RequestError::UpstreamReset {
                upstream,
                detail: "connection closed".into(),
            },
            ExchangeError::Timeout { phase, after } => RequestError::UpstreamTimeout {
                upstream,
                phase,
                after,
            },
            ExchangeError::Bad(detail) => RequestError::UpstreamBadResponse { upstream, detail },
        }
    }
}

enum Framing {
    None,
    Length(u64),
    Chunked,
    Close,
}

/// Reads one response from `stream`. Returns it and whether the connection can be reused.
pub async fn read_response(
    stream: &mut UpstreamStream,
    is_head: bool,
    cfg: &UpstreamConfig,
) -> Result<(UpstreamResponse, bool), ExchangeError> {
    let rlimit = Duration::from_millis(cfg.read_timeout_ms);
    let mut buf: Vec<u8> = Vec::with_capacity(8 * 1024);
    let mut got_any = false;
    // Head (skipping interim 1xx responses).
    let (status, head, framing, mut reusable, head_len, head_cl) = loop {
        if !buf.is_empty() {
            let mut hdrs = [httparse::EMPTY_HEADER; 128];
            let mut resp = httparse::Response::new(&mut hdrs);
            match resp.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let status = resp.code.unwrap_or(0);
                    if (100..200).contains(&status) {
                        if status == 101 {
                            return Err(ExchangeError::Bad(
                                "101 Switching Protocols is not supported".into(),
                            ));
                        }
                        buf.drain(..n);
                        continue;
                    }
                    let (head, framing, reusable, head_cl) = build_head(&resp, is_head)?;
                    break (status, head, framing, reusable, n, head_cl);
                }
                Ok(httparse::Status::Partial) => {
                    if buf.len() > MAX_RESPONSE_HEAD {
                        return Err(ExchangeError::Bad(format!(
                            "response head larger than {MAX_RESPONSE_HEAD} bytes"
                        )));
                    }
                }
                Err(e) => return Err(ExchangeError::Bad(format!("invalid response head: {e}"))),
            }
        }
        let (r, b) = match monoio::time::timeout(rlimit, stream.read_more(buf, 8 * 1024)).await {
            Ok(x) => x,
            Err(_) => {
                return Err(ExchangeError::Timeout {
                    phase: "respond",
                    after: rlimit,
                })
            }
        };
        buf = b;
        match r {
            Ok(0) => {
                return Err(ExchangeError::Closed {
                    before_response: !got_any,
                })
            }
            Ok(_) => got_any = true,
            Err(e) => {
                return Err(ExchangeError::Io {
                    error: e,
                    before_response: !got_any,
                })
            }
        }
    };
    let max = cfg.max_response_bytes;
    let mut leftover = buf.split_off(head_len);
    drop(buf);
    let body = match framing {
        Framing::None => {
            if !leftover.is_empty() {
                // Bytes after a bodiless response: the connection's framing is unclear.
                reusable = false;
            }
            Vec::new()
        }
        Framing::Length(n) => {
            if n > max as u64 {
                return Err(ExchangeError::Bad(format!(
                    "response body of {n} bytes is over the {max}-byte limit"
                )));
            }
            let n = n as usize;
            while leftover.len() < n {
                let want = n - leftover.len();
                let (r, b) = read_timed(stream, leftover, want.min(256 * 1024), rlimit).await?;
                leftover = b;
                if r == 0 {
                    return Err(ExchangeError::Closed {
                        before_response: false,
                    });
                }
            }
            if leftover.len() > n {
                leftover.truncate(n);
                reusable = false;
            }
            leftover
        }
        Framing::Chunked => {
            let mut dec = ChunkedDecoder::new(max);
            let mut out = Vec::with_capacity(leftover.len());
            let mut input = leftover;
            loop {
                let used = dec
                    .decode(&input, &mut out)
                    .map_err(|e| ExchangeError::Bad(format!("chunked response body: {e}")))?;
                if dec.is_done() {
                    if used < input.len() {
                        reusable = false;
                    }
                    break;
                }
                input.clear();
                let (r, b) = read_timed(stream, input, 16 * 1024, rlimit).await?;
                input = b;
                if r == 0 {
                    return Err(ExchangeError::Closed {
                        before_response: false,
                    });
                }
            }
            out
        }
        Framing::Close => {
            reusable = false;
            loop {
                if leftover.len() > max {
                    return Err(ExchangeError::Bad(format!(
                        "response body is over the {max}-byte limit"
                    )));
                }
                let (r, b) = read_timed(stream, leftover, 16 * 1024, rlimit).await?;
                leftover = b;
                if r == 0 {
                    break;
                }
            }
            leftover
        }
    };
    let bodiless = matches!(framing, Framing::None);
    Ok((
        UpstreamResponse {
            status,
            head,
            body,
            bodiless,
            head_content_length: head_cl,
        },
        reusable,
    ))
}

async fn read_timed(
    stream: &mut UpstreamStream,
    buf: Vec<u8>,
    min_spare: usize,
    limit: Duration,
) -> Result<(usize, Vec<u8>), ExchangeError> {
    match monoio::time::timeout(limit, stream.read_more(buf, min_spare)).await {
        Ok((Ok(n), b)) => Ok((n, b)),
        Ok((Err(e), _)) => Err(ExchangeError::Io {
            error: e,
            before_response: false,
        }),
        Err(_) => Err(ExchangeError::Timeout {
            phase: "respond",
            after: limit,
        }),
    }
}

fn build_head(
    resp: &httparse::Response<'_, '_>,
    is_head: bool,
) -> Result<(Vec<u8>, Framing, bool, Option<u64>), ExchangeError> {
    let status = resp.code.unwrap_or(0);
    let minor = resp.version.unwrap_or(1);
    let tokens = connection_tokens(resp.headers.iter().map(|h| (h.name, h.value)));
    let mut reusable = if minor == 0 {
        tokens.iter().any(|t| t == "keep-alive")
    } else {
        !tokens.iter().any(|t| t == "close")
    };
    let mut cl: Option<u64> = None;
    let mut chunked = false;
    let mut te = false;
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(
        format!("HTTP/1.1 {status} {}\r\n", resp.reason.unwrap_or("")).as_bytes(),
    );
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| ExchangeError::Bad("invalid Content-Length in response".into()))?;
            if cl.is_some_and(|c| c != v) {
                return Err(ExchangeError::Bad(
                    "conflicting Content-Length in response".into(),
                ));
            }
            cl = Some(v);
            continue;
        }
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            te = true;
            let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
            chunked = v
                .split(',')
                .next_back()
                .map(|c| c.trim() == "chunked")
                .unwrap_or(false);
            continue;
        }
        if is_hop_by_hop(h.name, &tokens) {
            continue;
        }
        head.extend_from_slice(h.name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(h.value);
        head.extend_from_slice(b"\r\n");
    }
    let framing = if is_head || status == 204 || status == 304 || (100..200).contains(&status) {
        Framing::None
    } else if te {
        if chunked {
            Framing::Chunked
        } else {
            reusable = false;
            Framing::Close
        }
    } else if let Some(n) = cl {
        Framing::Length(n)
    } else {
        reusable = false;
        Framing::Close
    };
    let head_cl = if matches!(framing, Framing::None) {
        cl
    } else {
        None
    };
    Ok((head, framing, reusable, head_cl))
}
