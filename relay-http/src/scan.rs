//! Finding the end of a head as bytes arrive, in one pass over each byte.
//!
//! [`HeadScanner`] remembers where its last search stopped, so a head sent one byte per
//! segment costs O(n) in total, not O(n²): the head is parsed once, when its end is known.
//! On the way it enforces the line rules that a relay in front of other parsers must be strict
//! about (RFC 9112 §2.2): every line ends in CRLF; a bare LF or a bare CR is refused at once,
//! not after waiting for more bytes. Empty lines before the start line are skipped.

use crate::error::HttpError;

/// Incremental search for the blank line that ends a head.
#[derive(Debug, Clone, Default)]
pub struct HeadScanner {
    /// Bytes of the buffer already examined.
    scanned: usize,
    /// Where the start line begins (after skipped empty lines).
    start: usize,
    /// Bytes in the current line so far (CR excluded).
    line_len: usize,
    /// The last byte examined was a CR.
    cr: bool,
    /// A non-empty line has been seen (so an empty line ends the head).
    in_head: bool,
}

/// Where a complete head lies in the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadSpan {
    /// First byte of the start line.
    pub start: usize,
    /// One past the blank line's LF: the first byte after the head.
    pub end: usize,
}

impl HeadScanner {
    /// A scanner at the start of a new message.
    pub fn new() -> HeadScanner {
        HeadScanner::default()
    }

    /// Examines the bytes of `buf` not seen yet. `Ok(Some(span))` once the head is complete;
    /// `Ok(None)` when more bytes are needed. `max_head` bounds the head (empty lines before it
    /// included): past it, [`HttpError::HeadTooLarge`].
    ///
    /// `buf` must be the same buffer (possibly grown) on every call for one message.
    pub fn scan(&mut self, buf: &[u8], max_head: usize) -> Result<Option<HeadSpan>, HttpError> {
        let mut i = self.scanned;
        while i < buf.len() {
            if i >= max_head {
                return Err(HttpError::HeadTooLarge { limit: max_head });
            }
            let b = buf[i];
            if self.cr {
                if b != b'\n' {
                    return Err(HttpError::invalid(
                        "bare_cr",
                        "a CR in the head is not followed by LF; end every line with CRLF (RFC 9112 §2.2)",
                    ));
                }
                self.cr = false;
                if self.line_len == 0 {
                    if self.in_head {
                        self.scanned = i + 1;
                        return Ok(Some(HeadSpan {
                            start: self.start,
                            end: i + 1,
                        }));
                    }
                    // An empty line before the start line: skipped (RFC 9112 §2.2).
                    self.start = i + 1;
                }
                self.line_len = 0;
            } else if b == b'\r' {
                self.cr = true;
            } else if b == b'\n' {
                return Err(HttpError::invalid(
                    "bare_lf",
                    "a line in the head ends with a bare LF; end every line with CRLF (RFC 9112 §2.2)",
                ));
            } else {
                self.in_head = true;
                self.line_len += 1;
            }
            i += 1;
        }
        self.scanned = i;
        Ok(None)
    }

    /// Bytes examined so far.
    pub fn scanned(&self) -> usize {
        self.scanned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_end_byte_by_byte() {
        let msg = b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\nNEXT";
        let mut s = HeadScanner::new();
        let mut found = None;
        for n in 1..=msg.len() {
            if let Some(span) = s.scan(&msg[..n], 1024).unwrap() {
                found = Some(span);
                break;
            }
        }
        let span = found.unwrap();
        assert_eq!(
            &msg[span.start..span.end],
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        );
    }

    #[test]
    fn bare_lf_and_bare_cr_are_refused_at_once() {
        let mut s = HeadScanner::new();
        assert_eq!(
            s.scan(b"GET / HTTP/1.1\nHost", 1024).unwrap_err().code(),
            "bare_lf"
        );
        let mut s = HeadScanner::new();
        assert_eq!(
            s.scan(b"GET / HTTP/1.1\r\nX: a\rb", 1024)
                .unwrap_err()
                .code(),
            "bare_cr"
        );
    }

    #[test]
    fn limit_at_under_and_over() {
        let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let n = head.len();
        assert!(HeadScanner::new().scan(head, n).unwrap().is_some());
        assert_eq!(
            HeadScanner::new().scan(head, n - 1).unwrap_err(),
            HttpError::HeadTooLarge { limit: n - 1 }
        );
        assert!(HeadScanner::new()
            .scan(&head[..n - 1], n - 1)
            .unwrap()
            .is_none());
    }
}
