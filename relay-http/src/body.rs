//! One push decoder for message bodies in both directions (RFC 9112 §6–7): Content-Length,
//! chunked, and close-delimited (responses only).
//!
//! Every size is admitted in exactly one place, [`BodyDecoder::admit`], with checked
//! arithmetic against the limit: a declared Content-Length when the decoder is made, each chunk
//! size when its line ends (before a byte of it is stored), each read of a close-delimited body.
//! A chunk size near `u64::MAX` or a sum that would wrap is refused, never wrapped.

use crate::error::HttpError;
use crate::fields::{is_field_value_byte, is_tchar};

/// How a body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Everything until the connection closes (responses only).
    Close,
}

/// The limits a body decoder enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// Most decoded body bytes.
    pub max_body: u64,
    /// Longest chunk-size line (size digits + extensions, CRLF excluded), bytes. Default 4096.
    pub max_chunk_line: usize,
    /// Largest trailer section, bytes. Default 16384.
    pub max_trailer: usize,
}

impl BodyLimits {
    /// Limits with `max_body` and the default chunk-line and trailer limits.
    pub fn new(max_body: u64) -> BodyLimits {
        BodyLimits {
            max_body,
            max_chunk_line: 4096,
            max_trailer: 16 * 1024,
        }
    }
}

/// Where the chunked decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Hex digits of a chunk size (`digits` seen so far).
    Size { digits: usize },
    /// Whitespace after the size: only `;` may follow (BWS before an extension).
    SizeWs,
    /// Before an extension name (after `;` and optional whitespace).
    ExtNameStart,
    /// Inside an extension name.
    ExtName,
    /// Whitespace after an extension name.
    ExtNameWs,
    /// After `=`, before the value.
    ExtValueStart,
    /// Inside a token value.
    ExtToken,
    /// Inside a quoted-string value.
    ExtQuoted,
    /// After a backslash inside a quoted string.
    ExtQuotedPair,
    /// After a value (whitespace allowed, then `;` or CR).
    ExtValueEnd,
    /// Saw the CR of the size line.
    SizeLf,
    /// Inside chunk data.
    Data,
    /// After data: expecting CR.
    DataCr,
    /// After data CR: expecting LF.
    DataLf,
    /// At the start of a trailer line.
    TrailerStart,
    /// Inside a trailer field name.
    TrailerName,
    /// Inside a trailer field value.
    TrailerValue,
    /// Saw the CR ending a trailer field line.
    TrailerLf,
    /// Saw the CR of the final empty line.
    EndLf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Length { remaining: u64 },
    Chunked(Chunk),
    Close,
    Done,
}

/// Decodes one body fed to it in pieces of any size.
#[derive(Debug, Clone)]
pub struct BodyDecoder {
    kind: Kind,
    limits: BodyLimits,
    /// Bytes admitted against `limits.max_body` so far.
    admitted: u64,
    /// Size of the chunk being read.
    chunk_size: u64,
    /// Bytes of chunk data still to come.
    chunk_left: u64,
    /// Length of the current chunk-size line.
    line_len: usize,
    /// Bytes of trailer section so far.
    trailer_len: usize,
}

fn chunk_err(detail: &str) -> HttpError {
    HttpError::invalid(
        "invalid_chunk",
        format!(
            "the chunked body is malformed ({detail}); send valid chunked framing (RFC 9112 §7.1)"
        ),
    )
}

impl BodyDecoder {
    /// A decoder for a body framed as `framing`. A Content-Length over the limit is refused
    /// here, before any byte is read.
    pub fn new(framing: BodyFraming, limits: BodyLimits) -> Result<BodyDecoder, HttpError> {
        let mut d = BodyDecoder {
            kind: Kind::Done,
            limits,
            admitted: 0,
            chunk_size: 0,
            chunk_left: 0,
            line_len: 0,
            trailer_len: 0,
        };
        d.kind = match framing {
            BodyFraming::None | BodyFraming::Length(0) => Kind::Done,
            BodyFraming::Length(n) => {
                d.admit(n)?;
                Kind::Length { remaining: n }
            }
            BodyFraming::Chunked => Kind::Chunked(Chunk::Size { digits: 0 }),
            BodyFraming::Close => Kind::Close,
        };
        Ok(d)
    }

    /// The one place a size is admitted: `n` more body bytes, checked against the limit
    /// without wrapping.
    fn admit(&mut self, n: u64) -> Result<(), HttpError> {
        match self.admitted.checked_add(n) {
            Some(total) if total <= self.limits.max_body => {
                self.admitted = total;
                Ok(())
            }
            _ => Err(HttpError::BodyTooLarge {
                limit: self.limits.max_body,
            }),
        }
    }

    /// Whether the whole body has been decoded (what follows belongs to the next message).
    pub fn is_done(&self) -> bool {
        self.kind == Kind::Done
    }

    /// Decoded bytes admitted so far (for a Content-Length body: the whole declared length).
    pub fn admitted(&self) -> u64 {
        self.admitted
    }

    /// A good size for the next read, in bytes: what is known to be missing, at most `cap`.
    pub fn want(&self, cap: usize) -> usize {
        match self.kind {
            Kind::Length { remaining } => remaining.min(cap as u64) as usize,
            // At least 16 to take the data's CRLF and the next size line along, but never
            // over `cap` (`clamp(16, cap)` panicked for a cap under 16).
            Kind::Chunked(Chunk::Data) => self.chunk_left.max(16).min(cap as u64) as usize,
            _ => cap.min(16 * 1024),
        }
    }

    /// The connection ended: a close-delimited body is complete; any other unfinished body is
    /// [`HttpError::Incomplete`].
    pub fn finish_at_eof(&mut self) -> Result<(), HttpError> {
        match self.kind {
            Kind::Close | Kind::Done => {
                self.kind = Kind::Done;
                Ok(())
            }
            _ => Err(HttpError::Incomplete),
        }
    }

    /// Decodes from `input`, appending body bytes to `out`. Returns how many input bytes were
    /// used; stops right after the end of the body.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, HttpError> {
        match self.kind {
            Kind::Done => Ok(0),
            Kind::Length { remaining } => {
                let n = (input.len() as u64).min(remaining) as usize;
                out.extend_from_slice(&input[..n]);
                let left = remaining - n as u64;
                self.kind = if left == 0 {
                    Kind::Done
                } else {
                    Kind::Length { remaining: left }
                };
                Ok(n)
            }
            Kind::Close => {
                self.admit(input.len() as u64)?;
                out.extend_from_slice(input);
                Ok(input.len())
            }
            Kind::Chunked(_) => self.decode_chunked(input, out),
        }
    }

    fn decode_chunked(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, HttpError> {
        let mut i = 0;
        while i < input.len() {
            let Kind::Chunked(state) = self.kind else {
                return Ok(i);
            };
            if state == Chunk::Data {
                let n = (input.len() - i).min(self.chunk_left.min(usize::MAX as u64) as usize);
                out.extend_from_slice(&input[i..i + n]);
                i += n;
                self.chunk_left -= n as u64;
                if self.chunk_left == 0 {
                    self.kind = Kind::Chunked(Chunk::DataCr);
                }
                continue;
            }
            let b = input[i];
            i += 1;
            let next = self.chunk_byte(state, b)?;
            self.kind = next;
            if next == Kind::Done {
                return Ok(i);
            }
        }
        Ok(i)
    }

    /// One byte of chunk framing (everything but chunk data).
    fn chunk_byte(&mut self, state: Chunk, b: u8) -> Result<Kind, HttpError> {
        use Chunk::*;
        let in_size_line = matches!(
            state,
            Size { .. }
                | SizeWs
                | ExtNameStart
                | ExtName
                | ExtNameWs
                | ExtValueStart
                | ExtToken
                | ExtQuoted
                | ExtQuotedPair
                | ExtValueEnd
        );
        if in_size_line && b != b'\r' {
            self.line_len += 1;
            if self.line_len > self.limits.max_chunk_line {
                return Err(HttpError::ChunkLineTooLarge {
                    limit: self.limits.max_chunk_line,
                });
            }
        }
        let ws = b == b' ' || b == b'\t';
        let next = match state {
            Size { digits } => {
                if let Some(v) = hex_val(b) {
                    self.chunk_size = self
                        .chunk_size
                        .checked_mul(16)
                        .and_then(|s| s.checked_add(u64::from(v)))
                        .ok_or_else(|| chunk_err("the chunk size does not fit 64 bits"))?;
                    Size { digits: digits + 1 }
                } else if digits == 0 {
                    return Err(chunk_err(
                        "a chunk-size line does not start with hex digits",
                    ));
                } else if b == b'\r' {
                    SizeLf
                } else if b == b';' {
                    ExtNameStart
                } else if ws {
                    SizeWs
                } else {
                    return Err(chunk_err(
                        "a chunk size is followed by something other than `;` or CRLF",
                    ));
                }
            }
            SizeWs => match b {
                b';' => ExtNameStart,
                _ if ws => SizeWs,
                _ => {
                    return Err(chunk_err(
                        "whitespace after a chunk size is not followed by `;`",
                    ))
                }
            },
            ExtNameStart => match b {
                _ if ws => ExtNameStart,
                _ if is_tchar(b) => ExtName,
                _ => return Err(chunk_err("a chunk extension has no valid name")),
            },
            ExtName => match b {
                _ if is_tchar(b) => ExtName,
                _ if ws => ExtNameWs,
                b'=' => ExtValueStart,
                b';' => ExtNameStart,
                b'\r' => SizeLf,
                _ => return Err(chunk_err("an invalid byte in a chunk extension name")),
            },
            ExtNameWs => match b {
                _ if ws => ExtNameWs,
                b'=' => ExtValueStart,
                b';' => ExtNameStart,
                b'\r' => SizeLf,
                _ => return Err(chunk_err("an invalid byte after a chunk extension name")),
            },
            ExtValueStart => match b {
                _ if ws => ExtValueStart,
                b'"' => ExtQuoted,
                _ if is_tchar(b) => ExtToken,
                _ => return Err(chunk_err("a chunk extension has no valid value")),
            },
            ExtToken => match b {
                _ if is_tchar(b) => ExtToken,
                _ if ws => ExtValueEnd,
                b';' => ExtNameStart,
                b'\r' => SizeLf,
                _ => return Err(chunk_err("an invalid byte in a chunk extension value")),
            },
            ExtQuoted => match b {
                b'"' => ExtValueEnd,
                b'\\' => ExtQuotedPair,
                b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff => ExtQuoted,
                _ => {
                    return Err(chunk_err(
                        "an invalid byte in a quoted chunk extension value",
                    ))
                }
            },
            ExtQuotedPair => match b {
                b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff => ExtQuoted,
                _ => {
                    return Err(chunk_err(
                        "an invalid escaped byte in a quoted chunk extension value",
                    ))
                }
            },
            ExtValueEnd => match b {
                _ if ws => ExtValueEnd,
                b';' => ExtNameStart,
                b'\r' => SizeLf,
                _ => return Err(chunk_err("an invalid byte after a chunk extension value")),
            },
            SizeLf => {
                if b != b'\n' {
                    return Err(chunk_err("a chunk-size line ends with a bare CR"));
                }
                self.line_len = 0;
                let size = std::mem::take(&mut self.chunk_size);
                if size == 0 {
                    TrailerStart
                } else {
                    self.admit(size)?;
                    self.chunk_left = size;
                    Data
                }
            }
            Data => unreachable!("chunk data is copied in bulk"),
            DataCr => {
                if b != b'\r' {
                    return Err(chunk_err(
                        "chunk data is longer than its size, or not followed by CRLF",
                    ));
                }
                DataLf
            }
            DataLf => {
                if b != b'\n' {
                    return Err(chunk_err("chunk data is followed by a bare CR"));
                }
                Size { digits: 0 }
            }
            TrailerStart => match b {
                b'\r' => EndLf,
                _ if is_tchar(b) => {
                    self.trailer_byte()?;
                    TrailerName
                }
                _ => return Err(chunk_err("a trailer line does not start with a field name")),
            },
            TrailerName => {
                self.trailer_byte()?;
                match b {
                    b':' => TrailerValue,
                    _ if is_tchar(b) => TrailerName,
                    _ => return Err(chunk_err("an invalid byte in a trailer field name")),
                }
            }
            TrailerValue => {
                self.trailer_byte()?;
                match b {
                    b'\r' => TrailerLf,
                    _ if is_field_value_byte(b) => TrailerValue,
                    _ => return Err(chunk_err("an invalid byte in a trailer field value")),
                }
            }
            TrailerLf => {
                if b != b'\n' {
                    return Err(chunk_err("a trailer line ends with a bare CR"));
                }
                self.trailer_byte()?;
                TrailerStart
            }
            EndLf => {
                if b != b'\n' {
                    return Err(chunk_err("the final line ends with a bare CR"));
                }
                return Ok(Kind::Done);
            }
        };
        Ok(Kind::Chunked(next))
    }

    fn trailer_byte(&mut self) -> Result<(), HttpError> {
        self.trailer_len += 1;
        if self.trailer_len > self.limits.max_trailer {
            return Err(HttpError::TrailerTooLarge {
                limit: self.limits.max_trailer,
            });
        }
        Ok(())
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked(limit: u64) -> BodyDecoder {
        BodyDecoder::new(BodyFraming::Chunked, BodyLimits::new(limit)).unwrap()
    }

    fn decode_all(input: &[u8], limit: u64) -> Result<(Vec<u8>, usize, bool), HttpError> {
        let mut d = chunked(limit);
        let mut out = Vec::new();
        let n = d.decode(input, &mut out)?;
        Ok((out, n, d.is_done()))
    }

    #[test]
    fn decodes_in_one_piece_and_byte_by_byte() {
        let input = b"5;ext=1;q=\"a\\\"b\"\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let (out, n, done) = decode_all(input, 1 << 20).unwrap();
        assert_eq!(out, b"hello world");
        assert!(done);
        assert_eq!(&input[n..], b"NEXT");
        let mut d = chunked(1 << 20);
        let mut out = Vec::new();
        let mut used = 0;
        for i in 0..input.len() {
            if d.is_done() {
                break;
            }
            used += d.decode(&input[i..i + 1], &mut out).unwrap();
        }
        assert_eq!(out, b"hello world");
        assert_eq!(used, input.len() - 4);
    }

    #[test]
    fn a_chunk_size_that_would_wrap_is_refused() {
        // The attack from issue 10: 1 byte, then a chunk of u64::MAX bytes.
        let e = decode_all(b"1\r\na\r\nffffffffffffffff\r\nxxxx", 1 << 20).unwrap_err();
        assert_eq!(e, HttpError::BodyTooLarge { limit: 1 << 20 });
        let e = decode_all(b"10000000000000000\r\n", u64::MAX).unwrap_err();
        assert_eq!(e.code(), "invalid_chunk");
        // u64::MAX alone with an unlimited limit is admitted, and one more byte is not.
        let e = decode_all(b"ffffffffffffffff\r\n", u64::MAX).unwrap();
        assert!(!e.2);
        let e = decode_all(b"1\r\na\r\nffffffffffffffff\r\n", u64::MAX).unwrap_err();
        assert_eq!(e, HttpError::BodyTooLarge { limit: u64::MAX });
    }

    #[test]
    fn body_limit_at_under_and_over() {
        assert!(decode_all(b"4\r\nabcd\r\n0\r\n\r\n", 4).unwrap().2);
        assert!(decode_all(b"3\r\nabc\r\n0\r\n\r\n", 4).unwrap().2);
        assert_eq!(
            decode_all(b"5\r\nabcde\r\n0\r\n\r\n", 4).unwrap_err(),
            HttpError::BodyTooLarge { limit: 4 }
        );
        assert_eq!(
            decode_all(b"2\r\nab\r\n3\r\nabc\r\n", 4).unwrap_err(),
            HttpError::BodyTooLarge { limit: 4 }
        );
        let l = BodyLimits::new(4);
        BodyDecoder::new(BodyFraming::Length(4), l).unwrap();
        assert_eq!(
            BodyDecoder::new(BodyFraming::Length(5), l).unwrap_err(),
            HttpError::BodyTooLarge { limit: 4 }
        );
        assert_eq!(
            BodyDecoder::new(BodyFraming::Length(u64::MAX), l).unwrap_err(),
            HttpError::BodyTooLarge { limit: 4 }
        );
        let mut d = BodyDecoder::new(BodyFraming::Close, l).unwrap();
        let mut out = Vec::new();
        d.decode(b"abcd", &mut out).unwrap();
        assert_eq!(
            d.decode(b"e", &mut out).unwrap_err(),
            HttpError::BodyTooLarge { limit: 4 }
        );
    }

    #[test]
    fn chunk_line_and_trailer_limits() {
        let mut l = BodyLimits::new(100);
        l.max_chunk_line = 8;
        l.max_trailer = 9;
        let ok = |s: &[u8]| {
            let mut d = BodyDecoder::new(BodyFraming::Chunked, l).unwrap();
            d.decode(s, &mut Vec::new())
        };
        ok(b"1;a=bcde\r\nx\r\n").unwrap(); // 8 bytes: at the limit
        assert_eq!(
            ok(b"1;a=bcdef\r\n").unwrap_err(),
            HttpError::ChunkLineTooLarge { limit: 8 }
        );
        ok(b"0\r\nA: 1234\r\n\r\n").unwrap(); // "A: 1234\r\n" = 9 bytes: at the limit
        assert_eq!(
            ok(b"0\r\nA: 12345\r\n\r\n").unwrap_err(),
            HttpError::TrailerTooLarge { limit: 9 }
        );
    }

    #[test]
    fn rejects_bad_framing_at_once() {
        for bad in [
            &b"zz\r\n"[..],
            b"-1\r\n",
            b"5\nhello",
            b"5\r\nhelloXX",
            b"5 \r\n",
            b"5;\r\n",
            b"5;a=\"\x01\"\r\n",
            b"5;a=\"x\x7f\"\r\n",
            b"5;a\rb\r\n",
            b"5;a=b c\r\n",
            b"5;=x\r\n",
            b"0\r\nX\n",
            b"0\r\nX: a\x00\r\n",
            b"0\r\n: a\r\n",
            b"0\r\n\rX",
            b"5\r\nhello\r\r",
        ] {
            assert_eq!(
                decode_all(bad, 1 << 20).unwrap_err().code(),
                "invalid_chunk",
                "{bad:?}"
            );
        }
        for good in [
            &b"5 ;a\r\n"[..],
            b"5;a ; b = \"c\\\"\" \r\n",
            b"5;a=tok\r\n",
        ] {
            decode_all(good, 1 << 20).unwrap();
        }
    }

    /// Regression (fuzzing): `want` panicked with a cap under 16 inside chunk data.
    #[test]
    fn want_never_exceeds_the_cap() {
        let mut d = chunked(100);
        d.decode(b"20\r\nab", &mut Vec::new()).unwrap();
        for cap in [0, 1, 15, 16, 17, usize::MAX] {
            assert!(d.want(cap) <= cap);
            assert!(cap == 0 || d.want(cap) >= 1);
        }
        assert_eq!(d.want(1024), 30);
    }

    #[test]
    fn eof_rules() {
        let l = BodyLimits::new(100);
        let mut d = BodyDecoder::new(BodyFraming::Length(3), l).unwrap();
        d.decode(b"ab", &mut Vec::new()).unwrap();
        assert_eq!(d.finish_at_eof().unwrap_err(), HttpError::Incomplete);
        let mut d = BodyDecoder::new(BodyFraming::Close, l).unwrap();
        d.finish_at_eof().unwrap();
        assert!(d.is_done());
        let mut d = chunked(100);
        assert_eq!(d.finish_at_eof().unwrap_err(), HttpError::Incomplete);
    }
}
