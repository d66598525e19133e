//! Request heads: parsing with httparse and the RFC 9112 framing decisions (Content-Length vs
//! Transfer-Encoding, keep-alive, Expect). Header names and values are kept as ranges into one
//! owned copy of the head, so a request costs one allocation for its head.

use std::ops::Range;

use crate::error::RequestError;

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed request head.
#[derive(Debug, Clone)]
pub struct RequestHead {
    raw: Vec<u8>,
    method: Range<usize>,
    target: Range<usize>,
    /// For an absolute-form target (`http://host/path`): the authority's range.
    authority: Option<Range<usize>>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    headers: Vec<(Range<usize>, Range<usize>)>,
    /// How the body is framed.
    pub framing: BodyFraming,
    /// Whether the connection stays open after this request (before relay's own decisions).
    pub keep_alive: bool,
    /// `Expect: 100-continue` was sent.
    pub expect_continue: bool,
}

/// Limits applied while parsing a head.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// Request line + headers, bytes.
    pub max_header_bytes: usize,
    /// Number of header fields.
    pub max_headers: usize,
}

impl RequestHead {
    /// Parses a head from the start of `buf`. `Ok(None)`: incomplete, read more. On success the
    /// head occupies `buf[..head_len()]`.
    pub fn parse(buf: &[u8], limits: HeadLimits) -> Result<Option<RequestHead>, RequestError> {
        // Up to 256 header slots live on the stack, uninitialised (httparse fills what it
        // uses); a larger configured limit uses the heap.
        let mut stack_headers =
            [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; 256];
        let mut heap_headers;
        let slots: &mut [std::mem::MaybeUninit<httparse::Header<'_>>] = if limits.max_headers <= 256
        {
            &mut stack_headers[..limits.max_headers.max(1)]
        } else {
            heap_headers = (0..limits.max_headers)
                .map(|_| std::mem::MaybeUninit::uninit())
                .collect::<Vec<_>>();
            &mut heap_headers
        };
        let mut req = httparse::Request::new(&mut []);
        let status = req.parse_with_uninit_headers(buf, slots);
        let head_len = match status {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                if buf.len() > limits.max_header_bytes {
                    return Err(RequestError::HeaderTooLarge {
                        limit: limits.max_header_bytes,
                    });
                }
                return Ok(None);
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(RequestError::TooManyHeaders {
                    limit: limits.max_headers,
                })
            }
            Err(e) => {
                return Err(RequestError::Malformed {
                    code: "malformed_request",
                    detail: format!("the request head is not valid HTTP/1.1 ({e})"),
                })
            }
        };
        if head_len > limits.max_header_bytes {
            return Err(RequestError::HeaderTooLarge {
                limit: limits.max_header_bytes,
            });
        }
        let raw = buf[..head_len].to_vec();
        let base = buf.as_ptr() as usize;
        let off = |s: &[u8]| {
            let start = s.as_ptr() as usize - base;
            start..start + s.len()
        };
        let method = off(req.method.unwrap_or("").as_bytes());
        let mut target = off(req.path.unwrap_or("").as_bytes());
        let mut authority = None;
        // Absolute form (RFC 9112 §3.2.2): route on its path and authority.
        let t = &buf[target.clone()];
        for scheme in [&b"http://"[..], &b"https://"[..]] {
            if t.len() >= scheme.len() && t[..scheme.len()].eq_ignore_ascii_case(scheme) {
                let a_start = target.start + scheme.len();
                let a_end = buf[a_start..target.end]
                    .iter()
                    .position(|&b| b == b'/' || b == b'?')
                    .map(|p| a_start + p)
                    .unwrap_or(target.end);
                authority = Some(a_start..a_end);
                target = a_end..target.end;
                break;
            }
        }
        let minor_version = req.version.unwrap_or(1);
        let hdrs: Vec<_> = req
            .headers
            .iter()
            .map(|h| (off(h.name.as_bytes()), off(h.value)))
            .collect();
        let mut head = RequestHead {
            raw,
            method,
            target,
            authority,
            minor_version,
            headers: hdrs,
            framing: BodyFraming::None,
            keep_alive: minor_version == 1,
            expect_continue: false,
        };
        head.decide_framing()?;
        Ok(Some(head))
    }

    fn decide_framing(&mut self) -> Result<(), RequestError> {
        let mut content_length: Option<u64> = None;
        let mut te_seen = false;
        let mut te_codings: Vec<String> = Vec::new();
        let mut conn_close = false;
        let mut conn_keep_alive = false;
        let mut expect: Option<String> = None;
        let mut hosts = 0;
        for i in 0..self.headers.len() {
            let (name, value) = self.header_at(i);
            if name.eq_ignore_ascii_case("host") {
                hosts += 1;
                if value
                    .iter()
                    .any(|b| b.is_ascii_whitespace() || *b == b'/' || *b == b'@')
                {
                    return Err(RequestError::Malformed {
                        code: "invalid_host",
                        detail: "the Host header is not a valid host[:port]".into(),
                    });
                }
            }
            if name.eq_ignore_ascii_case("content-length") {
                let v = std::str::from_utf8(value).map_err(|_| bad_cl())?;
                // A list of identical values is allowed (RFC 9110 §8.6); anything else is not.
                for part in v.split(',') {
                    let part = part.trim();
                    if part.is_empty()
                        || part.len() > 18
                        || !part.bytes().all(|b| b.is_ascii_digit())
                    {
                        return Err(bad_cl());
                    }
                    let n: u64 = part.parse().map_err(|_| bad_cl())?;
                    match content_length {
                        Some(prev) if prev != n => {
                            return Err(RequestError::Malformed {
                                code: "conflicting_content_length",
                                detail: "the request has Content-Length values that disagree; send exactly one".into(),
                            })
                        }
                        _ => content_length = Some(n),
                    }
                }
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                te_seen = true;
                let v = String::from_utf8_lossy(value);
                for c in v.split(',') {
                    te_codings.push(c.trim().to_ascii_lowercase());
                }
            } else if name.eq_ignore_ascii_case("connection") {
                for t in String::from_utf8_lossy(value).split(',') {
                    let t = t.trim();
                    if t.eq_ignore_ascii_case("close") {
                        conn_close = true;
                    } else if t.eq_ignore_ascii_case("keep-alive") {
                        conn_keep_alive = true;
                    }
                }
            } else if name.eq_ignore_ascii_case("expect") {
                expect = Some(String::from_utf8_lossy(value).trim().to_ascii_lowercase());
            }
        }
        if hosts > 1 {
            return Err(RequestError::Malformed {
                code: "invalid_host",
                detail: "the request has more than one Host header; send exactly one".into(),
            });
        }
        if hosts == 0 && self.minor_version == 1 {
            return Err(RequestError::Malformed {
                code: "missing_host",
                detail:
                    "an HTTP/1.1 request needs a Host header (RFC 9112 §3.2); add `Host: <server>`"
                        .into(),
            });
        }
        if te_seen {
            if content_length.is_some() {
                return Err(RequestError::Malformed {
                    code: "conflicting_framing",
                    detail: "the request has both Content-Length and Transfer-Encoding; send only one of them".into(),
                });
            }
            if self.minor_version == 0 {
                return Err(RequestError::Malformed {
                    code: "unsupported_transfer_encoding",
                    detail: "Transfer-Encoding is not allowed in HTTP/1.0; send Content-Length"
                        .into(),
                });
            }
            if te_codings.len() != 1 || te_codings[0] != "chunked" {
                return Err(RequestError::Malformed {
                    code: "unsupported_transfer_encoding",
                    detail: format!(
                        "Transfer-Encoding {:?} is not accepted; send a body with Content-Length or `Transfer-Encoding: chunked` alone",
                        te_codings.join(", ")
                    ),
                });
            }
            self.framing = BodyFraming::Chunked;
        } else if let Some(n) = content_length {
            self.framing = if n == 0 {
                BodyFraming::None
            } else {
                BodyFraming::Length(n)
            };
        }
        self.keep_alive = if self.minor_version == 0 {
            conn_keep_alive && !conn_close
        } else {
            !conn_close
        };
        if let Some(e) = expect {
            if e == "100-continue" {
                self.expect_continue = self.minor_version == 1;
            } else {
                return Err(RequestError::ExpectationFailed { value: e });
            }
        }
        Ok(())
    }

    /// The method, e.g. `POST`.
    pub fn method(&self) -> &str {
        // httparse checked the method is a token (ASCII).
        std::str::from_utf8(&self.raw[self.method.clone()]).unwrap_or("")
    }

    /// The request target as sent, e.g. `/v1/logs?uid=1`.
    /// (In origin form: an absolute-form target's path and query; `/` when it has no path.)
    pub fn target(&self) -> &str {
        let t = std::str::from_utf8(&self.raw[self.target.clone()]).unwrap_or("");
        if self.authority.is_some() && !t.starts_with('/') {
            // `http://host` or `http://host?q`: the path is `/`.
            return if t.is_empty() { "/" } else { t };
        }
        t
    }

    /// The host the request is for: an absolute-form target's authority, else `Host`.
    pub fn host(&self) -> Option<&str> {
        match &self.authority {
            Some(a) => std::str::from_utf8(&self.raw[a.clone()]).ok(),
            None => self.header_str("host"),
        }
    }

    /// The path part of the target (before `?`).
    pub fn path(&self) -> &str {
        let t = self.target();
        match t.split_once('?') {
            Some(("", _)) => "/",
            Some((p, _)) => p,
            None => t,
        }
    }

    /// The query part of the target (after `?`), if any.
    pub fn query(&self) -> Option<&str> {
        self.target().split_once('?').map(|(_, q)| q)
    }

    /// Number of header fields.
    pub fn header_count(&self) -> usize {
        self.headers.len()
    }

    /// Header `i` as (name, value).
    pub fn header_at(&self, i: usize) -> (&str, &[u8]) {
        let (n, v) = &self.headers[i];
        (
            std::str::from_utf8(&self.raw[n.clone()]).unwrap_or(""),
            &self.raw[v.clone()],
        )
    }

    /// All headers as (name, value), in order.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        (0..self.headers.len()).map(move |i| self.header_at(i))
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The first value of header `name` as text (None when absent or not UTF-8).
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Bytes of the head (request line + headers + blank line).
    pub fn head_len(&self) -> usize {
        self.raw.len()
    }
}

fn bad_cl() -> RequestError {
    RequestError::Malformed {
        code: "invalid_content_length",
        detail: "Content-Length must be one decimal number of bytes".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: HeadLimits = HeadLimits {
        max_header_bytes: 65536,
        max_headers: 100,
    };

    fn parse(s: &str) -> Result<Option<RequestHead>, RequestError> {
        RequestHead::parse(s.as_bytes(), L)
    }

    fn code(s: &str) -> &'static str {
        parse(s).unwrap_err().status_and_code().1
    }

    #[test]
    fn parses_a_simple_post() {
        let h = parse("POST /v1/logs?uid=7 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
            .unwrap()
            .unwrap();
        assert_eq!(h.method(), "POST");
        assert_eq!(h.path(), "/v1/logs");
        assert_eq!(h.query(), Some("uid=7"));
        assert_eq!(h.framing, BodyFraming::Length(5));
        assert!(h.keep_alive);
        assert_eq!(h.header_str("host"), Some("x"));
        assert!(parse("POST / HTTP/1.1\r\nHost: x\r\n").unwrap().is_none());
    }

    #[test]
    fn framing_attacks_are_rejected() {
        assert_eq!(
            code("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
            "conflicting_framing"
        );
        assert_eq!(
            code("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
            "conflicting_content_length"
        );
        assert_eq!(
            code("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n"),
            "invalid_content_length"
        );
        assert_eq!(
            code("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\n"),
            "conflicting_content_length"
        );
        assert_eq!(
            code("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            "unsupported_transfer_encoding"
        );
        assert_eq!(
            code("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
            "unsupported_transfer_encoding"
        );
        assert_eq!(
            code("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n"),
            "unsupported_transfer_encoding"
        );
        let ok = parse("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(ok.framing, BodyFraming::Length(5));
    }

    #[test]
    fn host_rules_and_absolute_form() {
        assert_eq!(code("GET / HTTP/1.1\r\n\r\n"), "missing_host");
        assert_eq!(
            code("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            "invalid_host"
        );
        assert_eq!(code("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"), "invalid_host");
        assert!(parse("GET / HTTP/1.0\r\n\r\n").unwrap().is_some());
        let h = parse("POST http://Relay.example:8080/v1/logs?x=1 HTTP/1.1\r\nHost: other\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.path(), h.query(), h.host()),
            ("/v1/logs", Some("x=1"), Some("Relay.example:8080"))
        );
        let h = parse("GET http://relay.example HTTP/1.1\r\nHost: relay.example\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((h.path(), h.target()), ("/", "/"));
    }

    #[test]
    fn keep_alive_rules() {
        let h = parse("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive);
        let h = parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.keep_alive);
        let h = parse("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive);
    }

    #[test]
    fn limits() {
        let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            code(&format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n")),
            "too_many_headers"
        );
        let big = "a".repeat(70_000);
        assert_eq!(
            code(&format!("GET / HTTP/1.1\r\nX: {big}")),
            "request_header_too_large"
        );
    }
}
