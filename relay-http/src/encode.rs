//! Encoders for the heads relay writes: the upstream request head and the client response
//! head. Names and values come from parsed, validated heads or from relay itself; a CR or LF in
//! either would be a bug, checked in debug builds.

/// Writes an HTTP/1.1 request head: request line, fields, framing, blank line.
pub struct RequestHeadEncoder<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> RequestHeadEncoder<'a> {
    /// Starts `METHOD path[?query] HTTP/1.1` at the end of `out`.
    pub fn new(
        out: &'a mut Vec<u8>,
        method: &str,
        path: &str,
        query: Option<&str>,
    ) -> RequestHeadEncoder<'a> {
        out.extend_from_slice(method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(path.as_bytes());
        if let Some(q) = query {
            out.push(b'?');
            out.extend_from_slice(q.as_bytes());
        }
        out.extend_from_slice(b" HTTP/1.1\r\n");
        RequestHeadEncoder { out }
    }

    /// One field.
    pub fn header(&mut self, name: &str, value: &[u8]) -> &mut Self {
        write_field(self.out, name.as_bytes(), value);
        self
    }

    /// One field whose value is written in parts (e.g. `prev, peer` for X-Forwarded-For).
    pub fn header_parts(&mut self, name: &str, parts: &[&[u8]]) -> &mut Self {
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b": ");
        for p in parts {
            debug_assert!(!p.iter().any(|&b| b == b'\r' || b == b'\n'));
            self.out.extend_from_slice(p);
        }
        self.out.extend_from_slice(b"\r\n");
        self
    }

    /// `Content-Length` when `Some`, then the blank line.
    pub fn finish(self, content_length: Option<u64>) {
        if let Some(n) = content_length {
            self.out.extend_from_slice(b"Content-Length: ");
            push_decimal(self.out, n);
            self.out.extend_from_slice(b"\r\n");
        }
        self.out.extend_from_slice(b"\r\n");
    }
}

/// Writes an HTTP/1.1 response head. Build the relayed part with [`ResponseHeadEncoder::new`]
/// and [`ResponseHeadEncoder::header`], keep it with [`ResponseHeadEncoder::into_partial`], and
/// finish it for a client with [`finish_response_head`].
pub struct ResponseHeadEncoder {
    out: Vec<u8>,
}

impl ResponseHeadEncoder {
    /// `HTTP/1.1 <status> <reason>`.
    pub fn new(status: u16, reason: &str) -> ResponseHeadEncoder {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(b"HTTP/1.1 ");
        push_decimal(&mut out, u64::from(status));
        out.push(b' ');
        out.extend_from_slice(reason.as_bytes());
        out.extend_from_slice(b"\r\n");
        ResponseHeadEncoder { out }
    }

    /// One field.
    pub fn header(&mut self, name: &str, value: &[u8]) -> &mut Self {
        write_field(&mut self.out, name.as_bytes(), value);
        self
    }

    /// The status line and fields so far, without framing or the blank line.
    pub fn into_partial(self) -> Vec<u8> {
        self.out
    }
}

/// Appends a response head to `out`: the `partial` status line and fields, then
/// `Content-Length` when `Some`, `Connection`, and the blank line.
pub fn finish_response_head(
    out: &mut Vec<u8>,
    partial: &[u8],
    content_length: Option<u64>,
    keep_alive: bool,
) {
    out.extend_from_slice(partial);
    if let Some(n) = content_length {
        out.extend_from_slice(b"Content-Length: ");
        push_decimal(out, n);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(if keep_alive {
        b"Connection: keep-alive\r\n\r\n"
    } else {
        b"Connection: close\r\n\r\n"
    });
}

fn write_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    debug_assert!(!name.iter().chain(value).any(|&b| b == b'\r' || b == b'\n'));
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends `n` in decimal without allocating.
pub fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_and_response_heads() {
        let mut out = Vec::new();
        let mut e = RequestHeadEncoder::new(&mut out, "POST", "/v1/logs", Some("a=1"));
        e.header("Host", b"up")
            .header_parts("X-Forwarded-For", &[b"1.1.1.1", b", ", b"2.2.2.2"]);
        e.finish(Some(12));
        assert_eq!(
            out,
            b"POST /v1/logs?a=1 HTTP/1.1\r\nHost: up\r\nX-Forwarded-For: 1.1.1.1, 2.2.2.2\r\nContent-Length: 12\r\n\r\n"
        );
        let mut r = ResponseHeadEncoder::new(404, "Not Found");
        r.header("X", b"y");
        let mut out = Vec::new();
        finish_response_head(&mut out, &r.into_partial(), Some(0), false);
        assert_eq!(
            out,
            b"HTTP/1.1 404 Not Found\r\nX: y\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let mut d = Vec::new();
        push_decimal(&mut d, u64::MAX);
        assert_eq!(d, u64::MAX.to_string().as_bytes());
    }
}
