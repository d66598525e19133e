//! Minimal HTTP/1.1 framing for the lab tools: where a head ends, how long the body is
//! (Content-Length or chunked), and whether the connection stays open.
//!
//! Heads are parsed with `httparse`; the chunked scanner is written here. It is an
//! independent implementation from relay's own, on purpose.

use std::fmt;

/// Most headers either tool accepts in one message.
pub const MAX_HEADERS: usize = 64;

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Exactly this many bytes.
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// A response without length: the body runs until the peer closes.
    UntilClose,
}

/// A framing error: the peer sent something this tool will not guess about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FramingError(pub String);

impl fmt::Display for FramingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FramingError {}

fn err<T>(m: impl Into<String>) -> Result<T, FramingError> {
    Err(FramingError(m.into()))
}

/// A parsed response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHead {
    /// Status code.
    pub status: u16,
    /// Bytes of the head, CRLFCRLF included.
    pub head_len: usize,
    /// How the body is delimited.
    pub framing: Framing,
    /// Whether the server will close the connection after this response.
    pub close: bool,
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// Method, e.g. `POST`.
    pub method: String,
    /// Request target, e.g. `/v1/logs`.
    pub path: String,
    /// Bytes of the head, CRLFCRLF included.
    pub head_len: usize,
    /// How the body is delimited (`Length(0)` when there is none).
    pub framing: Framing,
    /// Whether the client asked to close the connection after this exchange.
    pub close: bool,
}

fn framing_of(headers: &[httparse::Header<'_>]) -> Result<(Option<Framing>, bool), FramingError> {
    let mut length = None;
    let mut chunked = false;
    let mut close = false;
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok());
            match (v, length) {
                (None, _) => return err("bad Content-Length"),
                (Some(v), Some(old)) if v != old => return err("conflicting Content-Length"),
                (Some(v), _) => length = Some(v),
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = h
                .value
                .rsplit(|&c| c == b',')
                .next()
                .map(|v| v.trim_ascii().eq_ignore_ascii_case(b"chunked"))
                .unwrap_or(false);
            if !chunked {
                return err("unsupported Transfer-Encoding");
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            close = h
                .value
                .split(|&c| c == b',')
                .any(|v| v.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
    }
    if chunked && length.is_some() {
        return err("both Content-Length and Transfer-Encoding");
    }
    Ok((
        if chunked {
            Some(Framing::Chunked)
        } else {
            length.map(Framing::Length)
        },
        close,
    ))
}

/// Parses a response head; `Ok(None)` when `buf` does not hold a whole head yet.
pub fn parse_response(buf: &[u8]) -> Result<Option<ResponseHead>, FramingError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut r = httparse::Response::new(&mut headers);
    let head_len = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return err(format!("bad response head: {e}")),
    };
    let status = r.code.unwrap_or(0);
    let (framing, mut close) = framing_of(r.headers)?;
    if r.version == Some(0) {
        close = true;
    }
    let framing = if status / 100 == 1 || status == 204 || status == 304 {
        Framing::Length(0)
    } else {
        framing.unwrap_or(Framing::UntilClose)
    };
    Ok(Some(ResponseHead {
        status,
        head_len,
        framing,
        close,
    }))
}

/// Parses a request head; `Ok(None)` when `buf` does not hold a whole head yet.
pub fn parse_request(buf: &[u8]) -> Result<Option<RequestHead>, FramingError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut r = httparse::Request::new(&mut headers);
    let head_len = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return err(format!("bad request head: {e}")),
    };
    let (framing, mut close) = framing_of(r.headers)?;
    if r.version == Some(0) {
        close = true;
    }
    Ok(Some(RequestHead {
        method: r.method.unwrap_or("").to_string(),
        path: r.path.unwrap_or("").to_string(),
        head_len,
        framing: framing.unwrap_or(Framing::Length(0)),
        close,
    }))
}

/// Scans a chunked body at the start of `buf`. `Ok(Some(n))`: the whole body (last chunk and
/// trailers included) is the first `n` bytes; `Ok(None)`: more bytes are needed. When `out`
/// is given, the decoded payload is appended to it.
pub fn chunked_len(
    buf: &[u8],
    mut out: Option<&mut Vec<u8>>,
) -> Result<Option<usize>, FramingError> {
    let mut pos = 0;
    loop {
        let Some(eol) = find_crlf(&buf[pos..]) else {
            return if buf.len() - pos > 1024 {
                err("chunk size line too long")
            } else {
                Ok(None)
            };
        };
        let line = &buf[pos..pos + eol];
        let hex = line
            .split(|&c| c == b';')
            .next()
            .unwrap_or(b"")
            .trim_ascii();
        if hex.is_empty() || hex.len() > 15 {
            return err("bad chunk size");
        }
        let size = usize::from_str_radix(
            std::str::from_utf8(hex).map_err(|_| FramingError("bad chunk size".into()))?,
            16,
        )
        .map_err(|_| FramingError("bad chunk size".into()))?;
        pos += eol + 2;
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let Some(eol) = find_crlf(&buf[pos..]) else {
                    return Ok(None);
                };
                pos += eol + 2;
                if eol == 0 {
                    return Ok(Some(pos));
                }
            }
        }
        if buf.len() < pos + size + 2 {
            return Ok(None);
        }
        if &buf[pos + size..pos + size + 2] != b"\r\n" {
            return err("chunk not followed by CRLF");
        }
        if let Some(o) = out.as_deref_mut() {
            o.extend_from_slice(&buf[pos..pos + size]);
        }
        pos += size + 2;
    }
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_heads() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.status, r.head_len, r.framing, r.close),
            (200, 38, Framing::Length(5), false)
        );
        let r = parse_response(
            b"HTTP/1.1 503 X\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (r.status, r.framing, r.close),
            (503, Framing::Chunked, true)
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Le").unwrap(),
            None
        );
        assert!(parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
        )
        .is_err());
    }

    #[test]
    fn request_heads() {
        let r = parse_request(b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.method.as_str(), r.path.as_str(), r.framing),
            ("POST", "/v1/logs", Framing::Length(3))
        );
        let r = parse_request(b"GET /__stats HTTP/1.1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.framing, Framing::Length(0));
    }

    #[test]
    fn chunked() {
        let body = b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nT: v\r\n\r\nNEXT";
        let mut out = Vec::new();
        assert_eq!(
            chunked_len(body, Some(&mut out)).unwrap(),
            Some(body.len() - 4)
        );
        assert_eq!(out, b"hello world");
        for cut in 0..body.len() - 4 {
            assert_eq!(chunked_len(&body[..cut], None).unwrap(), None, "cut {cut}");
        }
        assert!(chunked_len(b"zz\r\n", None).is_err());
        assert!(chunked_len(b"2\r\nabX\r\n", None).is_err());
    }
}
