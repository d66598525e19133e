//! Request heads: parsed once with httparse when [`crate::HeadScanner`] found their end, then
//! the RFC 9112 framing decisions (Content-Length vs Transfer-Encoding, keep-alive, Expect,
//! Host). Names and values are kept as ranges into one owned copy of the head, so a request
//! costs one allocation for its head.

use std::ops::Range;

use crate::body::BodyFraming;
use crate::error::HttpError;
use crate::fields::{check_authority, check_field_value, parse_content_length};
use crate::scan::HeadScanner;

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
    /// How the body is framed (never [`BodyFraming::Close`] for a request).
    pub framing: BodyFraming,
    /// Whether the connection stays open after this request (before relay's own decisions).
    pub keep_alive: bool,
    /// `Expect: 100-continue` was sent.
    pub expect_continue: bool,
}

/// Limits applied while reading a head.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// Start line + header fields + blank line, bytes; empty lines before the start line count.
    pub max_header_bytes: usize,
    /// Number of header fields.
    pub max_headers: usize,
}

impl RequestHead {
    /// Finds and parses a head at the start of `buf` in one call (for tests and tools; a server
    /// keeps a [`HeadScanner`] across reads instead). `Ok(None)`: incomplete. On success, also
    /// returns how many bytes of `buf` the head used.
    pub fn parse(
        buf: &[u8],
        limits: HeadLimits,
    ) -> Result<Option<(RequestHead, usize)>, HttpError> {
        match HeadScanner::new().scan(buf, limits.max_header_bytes)? {
            None => Ok(None),
            Some(span) => RequestHead::parse_complete(&buf[span.start..span.end], limits)
                .map(|h| Some((h, span.end))),
        }
    }

    /// Parses a complete head (start line through the blank line), as found by
    /// [`HeadScanner::scan`].
    pub fn parse_complete(head: &[u8], limits: HeadLimits) -> Result<RequestHead, HttpError> {
        // Up to 128 header slots live on the stack, uninitialised (httparse fills what it
        // uses); more use the heap. A field line takes at least 4 bytes (`a:\r\n`), so the head
        // holds at most `len / 4` fields: more slots than that are never needed, whatever the
        // configured limit (it once sized the allocation: `u32::MAX` asked for 137 GB).
        let n_slots = limits.max_headers.min(head.len() / 4 + 1);
        let mut stack_headers =
            [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; 128];
        let mut heap_headers;
        let slots: &mut [std::mem::MaybeUninit<httparse::Header<'_>>] = if n_slots <= 128 {
            &mut stack_headers[..n_slots]
        } else {
            heap_headers = (0..n_slots)
                .map(|_| std::mem::MaybeUninit::uninit())
                .collect::<Vec<_>>();
            &mut heap_headers
        };
        let mut req = httparse::Request::new(&mut []);
        match req.parse_with_uninit_headers(head, slots) {
            Ok(httparse::Status::Complete(n)) if n == head.len() => {}
            Ok(_) => {
                return Err(HttpError::invalid(
                    "malformed_request",
                    "the request head is not valid HTTP/1.1; check the request line and header syntax",
                ))
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(HttpError::TooManyHeaders {
                    limit: limits.max_headers,
                })
            }
            Err(httparse::Error::HeaderValue) => {
                return Err(HttpError::invalid(
                    "invalid_header_value",
                    "a header value holds a control byte; send only visible characters, spaces and tabs (RFC 9110 §5.5)",
                ))
            }
            Err(e) => {
                return Err(HttpError::invalid(
                    "malformed_request",
                    format!("the request head is not valid HTTP/1.1 ({e})"),
                ))
            }
        }
        let base = head.as_ptr() as usize;
        let off = |s: &[u8]| {
            let start = s.as_ptr() as usize - base;
            start..start + s.len()
        };
        let method = off(req.method.unwrap_or("").as_bytes());
        let mut target = off(req.path.unwrap_or("").as_bytes());
        let mut authority = None;
        // Absolute form (RFC 9112 §3.2.2): route on its path and authority.
        let t = &head[target.clone()];
        for scheme in [&b"http://"[..], &b"https://"[..]] {
            if t.len() >= scheme.len() && t[..scheme.len()].eq_ignore_ascii_case(scheme) {
                let a_start = target.start + scheme.len();
                let a_end = head[a_start..target.end]
                    .iter()
                    .position(|&b| b == b'/' || b == b'?')
                    .map(|p| a_start + p)
                    .unwrap_or(target.end);
                check_authority(&head[a_start..a_end], false)?;
                authority = Some(a_start..a_end);
                target = a_end..target.end;
                break;
            }
        }
        if authority.is_none() && !head[target.clone()].starts_with(b"/") {
            // Asterisk form only for OPTIONS; authority form only for CONNECT (not relayed).
            let ok = &head[target.clone()] == b"*" && &head[method.clone()] == b"OPTIONS";
            if !ok {
                return Err(HttpError::invalid(
                    "invalid_target",
                    "the request target must be a path starting with `/` or an absolute http(s) URL",
                ));
            }
        }
        let minor_version = req.version.unwrap_or(1);
        let mut headers = Vec::with_capacity(req.headers.len());
        for h in req.headers.iter() {
            check_field_value(h.name, h.value)?;
            headers.push((off(h.name.as_bytes()), off(h.value)));
        }
        let mut head = RequestHead {
            raw: head.to_vec(),
            method,
            target,
            authority,
            minor_version,
            headers,
            framing: BodyFraming::None,
            keep_alive: minor_version == 1,
            expect_continue: false,
        };
        head.decide_framing()?;
        Ok(head)
    }

    fn decide_framing(&mut self) -> Result<(), HttpError> {
        let mut content_length: Option<u64> = None;
        let mut te_values = 0;
        let mut chunked = false;
        let mut conn_close = false;
        let mut conn_keep_alive = false;
        let mut expect: Option<String> = None;
        let mut hosts = 0;
        let mut content_types = 0;
        for i in 0..self.headers.len() {
            let (name, value) = self.header_at(i);
            if name.eq_ignore_ascii_case("host") {
                hosts += 1;
                check_authority(value, true)?;
            } else if name.eq_ignore_ascii_case("content-length") {
                if content_length.is_some() {
                    return Err(HttpError::invalid(
                        "conflicting_content_length",
                        "the request has more than one Content-Length; send exactly one",
                    ));
                }
                content_length = Some(parse_content_length(value)?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                te_values += 1;
                chunked = value.eq_ignore_ascii_case(b"chunked");
                if !chunked {
                    return Err(HttpError::invalid(
                        "unsupported_transfer_encoding",
                        format!(
                            "Transfer-Encoding {:?} is not accepted; send a body with Content-Length or `Transfer-Encoding: chunked` alone",
                            String::from_utf8_lossy(value)
                        ),
                    ));
                }
            } else if name.eq_ignore_ascii_case("connection") {
                for t in value.split(|&b| b == b',') {
                    let t = t.trim_ascii();
                    if t.eq_ignore_ascii_case(b"close") {
                        conn_close = true;
                    } else if t.eq_ignore_ascii_case(b"keep-alive") {
                        conn_keep_alive = true;
                    }
                }
            } else if name.eq_ignore_ascii_case("expect") {
                expect = Some(String::from_utf8_lossy(value).trim().to_ascii_lowercase());
            } else if name.eq_ignore_ascii_case("content-type") {
                content_types += 1;
            }
        }
        // A singleton field (RFC 9110 §8.3): relay would read the first while the upstream
        // may read another, and judge the body as a different media type.
        if content_types > 1 {
            return Err(HttpError::invalid(
                "conflicting_content_type",
                "the request has more than one Content-Type; send exactly one",
            ));
        }
        if hosts > 1 {
            return Err(HttpError::invalid(
                "invalid_host",
                "the request has more than one Host header; send exactly one",
            ));
        }
        if hosts == 0 && self.minor_version == 1 {
            return Err(HttpError::invalid(
                "missing_host",
                "an HTTP/1.1 request needs a Host header (RFC 9112 §3.2); add `Host: <server>`",
            ));
        }
        if te_values > 0 {
            if content_length.is_some() {
                return Err(HttpError::invalid(
                    "conflicting_framing",
                    "the request has both Content-Length and Transfer-Encoding; send only one of them",
                ));
            }
            if self.minor_version == 0 {
                return Err(HttpError::invalid(
                    "unsupported_transfer_encoding",
                    "Transfer-Encoding is not allowed in HTTP/1.0; send Content-Length",
                ));
            }
            if te_values > 1 || !chunked {
                return Err(HttpError::invalid(
                    "unsupported_transfer_encoding",
                    "send `Transfer-Encoding: chunked` once, alone",
                ));
            }
            self.framing = BodyFraming::Chunked;
        } else if let Some(n) = content_length {
            self.framing = BodyFraming::Length(n);
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
                return Err(HttpError::ExpectationFailed { value: e });
            }
        }
        Ok(())
    }

    /// The method, e.g. `POST`.
    pub fn method(&self) -> &str {
        // httparse checked the method is a token (ASCII).
        std::str::from_utf8(&self.raw[self.method.clone()]).unwrap_or("")
    }

    /// The request target in origin form, e.g. `/v1/logs?uid=1` (an absolute-form target's
    /// path and query; `/` when it has no path).
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

    /// Bytes of the head (start line + headers + blank line).
    pub fn head_len(&self) -> usize {
        self.raw.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: HeadLimits = HeadLimits {
        max_header_bytes: 65536,
        max_headers: 100,
    };

    fn parse(s: &str) -> Result<Option<RequestHead>, HttpError> {
        RequestHead::parse(s.as_bytes(), L).map(|o| o.map(|(h, _)| h))
    }

    fn code(s: &str) -> &'static str {
        parse(s).unwrap_err().code()
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

    /// RFC 9112 §6.3 (framing) and §2.2 (line endings), RFC 9110 §5.5 (field values).
    #[test]
    fn framing_attacks_are_rejected() {
        for (req, want) in [
            ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", "conflicting_framing"),
            ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", "conflicting_content_length"),
            ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", "conflicting_content_length"),
            ("POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\ncontent-type: text/plain\r\nContent-Length: 2\r\n\r\n", "conflicting_content_type"),
            ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n", "invalid_content_length"),
            ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\n", "invalid_content_length"),
            ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\n", "invalid_content_length"),
            ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n", "invalid_content_length"),
            ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "unsupported_transfer_encoding"),
            ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", "unsupported_transfer_encoding"),
            ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n", "unsupported_transfer_encoding"),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", "unsupported_transfer_encoding"),
            ("POST / HTTP/1.1\nHost: x\r\n\r\n", "bare_lf"),
            ("POST / HTTP/1.1\r\nHost: x\n\n", "bare_lf"),
            ("POST / HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n", "bare_cr"),
            ("POST / HTTP/1.1\r\nHost: x\r\nX: a\x01b\r\n\r\n", "invalid_header_value"),
            ("POST / HTTP/1.1\r\nHost: x\r\nX: a\x7fb\r\n\r\n", "invalid_header_value"),
            ("POST http://a@b/ HTTP/1.1\r\nHost: b\r\n\r\n", "invalid_host"),
            ("POST http://:80/ HTTP/1.1\r\nHost: b\r\n\r\n", "invalid_host"),
            ("POST http://a:b/ HTTP/1.1\r\nHost: b\r\n\r\n", "invalid_host"),
            ("POST v1/logs HTTP/1.1\r\nHost: b\r\n\r\n", "invalid_target"),
            ("POST / HTTP/1.1\r\nHost: x\r\n X: folded\r\n\r\n", "malformed_request"),
            ("POST / HTTP/1.1\r\nHost: x\r\nX : y\r\n\r\n", "malformed_request"),
        ] {
            assert_eq!(code(req), want, "{req:?}");
        }
        let ok = parse("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")
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
    fn limits_at_under_and_over() {
        let fields = |n: usize| -> String { (0..n).map(|i| format!("X-{i}: v\r\n")).collect() };
        // Host + 99 = 100 fields: at the limit.
        assert!(
            parse(&format!("GET / HTTP/1.1\r\nHost: x\r\n{}\r\n", fields(99)))
                .unwrap()
                .is_some()
        );
        assert_eq!(
            code(&format!("GET / HTTP/1.1\r\nHost: x\r\n{}\r\n", fields(100))),
            "too_many_headers"
        );
        let head = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let l = |n| HeadLimits {
            max_header_bytes: n,
            max_headers: 100,
        };
        assert!(RequestHead::parse(head.as_bytes(), l(head.len()))
            .unwrap()
            .is_some());
        assert_eq!(
            RequestHead::parse(head.as_bytes(), l(head.len() - 1)).unwrap_err(),
            HttpError::HeadTooLarge {
                limit: head.len() - 1
            }
        );
        // Regression (fuzzing): the limit sized an allocation (`u32::MAX` slots aborted), and
        // `max_headers: 0` admitted one field.
        let huge = HeadLimits {
            max_header_bytes: 65536,
            max_headers: u32::MAX as usize,
        };
        let h = RequestHead::parse(head.as_bytes(), huge)
            .unwrap()
            .unwrap()
            .0;
        assert_eq!(h.header_count(), 1);
        let zero = HeadLimits {
            max_header_bytes: 65536,
            max_headers: 0,
        };
        assert_eq!(
            RequestHead::parse(head.as_bytes(), zero).unwrap_err(),
            HttpError::TooManyHeaders { limit: 0 }
        );
        assert!(RequestHead::parse(b"GET / HTTP/1.0\r\n\r\n", zero)
            .unwrap()
            .is_some());
        let big = "a".repeat(70_000);
        assert_eq!(
            code(&format!("GET / HTTP/1.1\r\nX: {big}")),
            "request_header_too_large"
        );
    }
}
