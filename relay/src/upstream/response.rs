//! Reading an upstream's response with relay-http: the head scanned and parsed once, 1xx
//! skipped (a bounded number), then the body through the same decoder as request bodies
//! (Content-Length, chunked or close-delimited) with `max_response_bytes` as its limit, kept
//! whole so it can be relayed unchanged. Any framing error closes the connection.

use std::io;
use std::time::{Duration, Instant};

use relay_http::{
    BodyDecoder, BodyFraming, BodyLimits, HeadScanner, HttpError, ResponseHead,
    MAX_INTERIM_RESPONSES,
};

use super::config::UpstreamConfig;
use super::error::UpstreamError;
use super::stream::UpstreamStream;

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

/// What went wrong during one exchange (mapped to a [`UpstreamError`] once retries are decided).
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
    pub fn into_upstream_error(self, upstream: &str) -> UpstreamError {
        let upstream = upstream.to_string();
        match self {
            ExchangeError::Io { error, .. } => UpstreamError::Reset {
                upstream,
                detail: error.to_string(),
            },
            ExchangeError::Closed { .. } => UpstreamError::Reset {
                upstream,
                detail: "connection closed".into(),
            },
            ExchangeError::Timeout { phase, after } => UpstreamError::Timeout {
                upstream,
                phase,
                after,
            },
            ExchangeError::Bad(detail) => UpstreamError::BadResponse { upstream, detail },
        }
    }
}

/// Reads one response from `stream`: interim 1xx responses skipped (at most
/// [`MAX_INTERIM_RESPONSES`]), then the final head and its body, each read within
/// `read_timeout_ms` and all of it within `response_timeout_ms`. Returns the response and
/// whether the connection can be reused.
pub async fn read_response(
    stream: &mut UpstreamStream,
    is_head: bool,
    cfg: &UpstreamConfig,
) -> Result<(UpstreamResponse, bool), ExchangeError> {
    let mut reader = Reader {
        stream,
        buf: Vec::with_capacity(8 * 1024),
        got_any: false,
        read_limit: Duration::from_millis(cfg.read_timeout_ms),
        whole_limit: Duration::from_millis(cfg.response_timeout_ms),
        deadline: Instant::now() + Duration::from_millis(cfg.response_timeout_ms),
    };
    let mut interim = 0;
    let head = loop {
        let head = reader
            .read_head(is_head, cfg.max_response_header_bytes)
            .await?;
        if !head.is_interim() {
            break head;
        }
        interim += 1;
        if interim > MAX_INTERIM_RESPONSES {
            return Err(bad(HttpError::TooManyInterim {
                limit: MAX_INTERIM_RESPONSES,
            }));
        }
    };
    let limits = BodyLimits::new(cfg.max_response_bytes as u64);
    let mut decoder = BodyDecoder::new(head.framing, limits).map_err(bad)?;
    let mut body = Vec::with_capacity(decoder.admitted() as usize);
    let mut reusable = head.keep_alive;
    loop {
        let used = decoder.decode(&reader.buf, &mut body).map_err(bad)?;
        reader.buf.drain(..used);
        if decoder.is_done() {
            // Bytes after the response: the connection's framing can no longer be trusted.
            reusable &= reader.buf.is_empty();
            break;
        }
        if reader.read(decoder.want(256 * 1024)).await? == 0 {
            decoder.finish_at_eof().map_err(|_| ExchangeError::Closed {
                before_response: false,
            })?;
            reusable = false;
            break;
        }
    }
    Ok((
        UpstreamResponse {
            status: head.status,
            head: head.relayed,
            body,
            bodiless: head.framing == BodyFraming::None,
            head_content_length: head.content_length,
        },
        reusable,
    ))
}

fn bad(e: HttpError) -> ExchangeError {
    ExchangeError::Bad(e.to_string())
}

/// The response being read: the connection, the bytes read and not yet used, the deadlines.
struct Reader<'s> {
    stream: &'s mut UpstreamStream,
    buf: Vec<u8>,
    got_any: bool,
    read_limit: Duration,
    whole_limit: Duration,
    deadline: Instant,
}

impl Reader<'_> {
    /// Reads one head (interim or final), scanned as bytes arrive and parsed once.
    async fn read_head(
        &mut self,
        is_head: bool,
        max_head: usize,
    ) -> Result<ResponseHead, ExchangeError> {
        let mut scanner = HeadScanner::new();
        loop {
            if let Some(span) = scanner.scan(&self.buf, max_head).map_err(bad)? {
                let head = ResponseHead::parse_complete(&self.buf[span.start..span.end], is_head)
                    .map_err(bad)?;
                self.buf.drain(..span.end);
                return Ok(head);
            }
            if self.read(8 * 1024).await? == 0 {
                return Err(ExchangeError::Closed {
                    before_response: !self.got_any,
                });
            }
        }
    }

    /// One read of at least `min_spare` bytes, within the per-read and whole-response limits.
    async fn read(&mut self, min_spare: usize) -> Result<usize, ExchangeError> {
        let per_read = Instant::now() + self.read_limit;
        let (until, after) = if per_read < self.deadline {
            (per_read, self.read_limit)
        } else {
            (self.deadline, self.whole_limit)
        };
        let buf = std::mem::take(&mut self.buf);
        match monoio::time::timeout_at(until.into(), self.stream.read_more(buf, min_spare)).await {
            Ok((Ok(n), b)) => {
                self.buf = b;
                self.got_any |= n > 0;
                Ok(n)
            }
            Ok((Err(e), _)) => Err(ExchangeError::Io {
                error: e,
                before_response: !self.got_any,
            }),
            Err(_) => Err(ExchangeError::Timeout {
                phase: "respond",
                after,
            }),
        }
    }
}
