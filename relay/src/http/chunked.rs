//! Incremental decoder for `Transfer-Encoding: chunked` (RFC 9112 §7.1), strict: hex sizes
//! only, CRLF line ends, chunk data followed by CRLF. Used for request bodies and upstream
//! responses alike.

/// What was wrong with the chunked framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// A chunk-size line that is not hex digits (optionally followed by `;extensions`).
    #[error("invalid chunk size line")]
    BadSize,
    /// The chunk size does not fit in 64 bits.
    #[error("chunk size overflows")]
    SizeOverflow,
    /// Chunk data not followed by CRLF, or a bare LF line end.
    #[error("chunk data not terminated by CRLF")]
    BadTerminator,
    /// Trailer section longer than the limit.
    #[error("chunked trailer section too large")]
    TrailerTooLarge,
    /// The decoded body grew beyond the limit.
    #[error("body too large")]
    TooLarge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size.
    Size { digits: u8 },
    /// After `;`: chunk extensions, up to CR.
    Ext,
    /// Saw CR after the size line; expecting LF.
    SizeLf,
    /// Inside chunk data.
    Data,
    /// After data; expecting CR.
    DataCr,
    /// After data CR; expecting LF.
    DataLf,
    /// At the start of a trailer line (after the last chunk).
    TrailerStart,
    /// Inside a trailer field line.
    TrailerLine,
    /// Saw CR at the start of a trailer line: expecting the final LF.
    EndLf,
    /// Saw CR ending a trailer field line.
    TrailerLf,
    /// The whole body has been read.
    Done,
}

/// Decodes a chunked body fed to it in pieces.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    size: u64,
    remaining: u64,
    trailer_bytes: usize,
    ext_bytes: usize,
    max_body: usize,
}

/// Trailer and extension limit, in bytes.
const MAX_TRAILER: usize = 16 * 1024;

impl ChunkedDecoder {
    /// A decoder that fails with [`ChunkError::TooLarge`] past `max_body` decoded bytes.
    pub fn new(max_body: usize) -> Self {
        ChunkedDecoder {
            state: State::Size { digits: 0 },
            size: 0,
            remaining: 0,
            trailer_bytes: 0,
            ext_bytes: 0,
            max_body,
        }
    }

    /// Whether the terminating chunk and trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from `input`, appending data to `out`. Returns how many input bytes were used;
    /// stops right after the end of the body (what follows belongs to the next message).
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Size { digits } => {
                    if let Some(v) = hex_val(b) {
                        if digits >= 16 {
                            return Err(ChunkError::SizeOverflow);
                        }
                        self.size = (self.size << 4) | v as u64;
                        self.state = State::Size { digits: digits + 1 };
                    } else if digits == 0 {
                        return Err(ChunkError::BadSize);
                    } else if b == b';' {
                        self.state = State::Ext;
                    } else if b == b'\r' {
                        self.state = State::SizeLf;
                    } else if b == b' ' || b == b'\t' {
                        // BWS before extensions is tolerated by RFC 9112 §7.1.1.
                        self.state = State::Ext;
                    } else {
                        return Err(ChunkError::BadSize);
                    }
                    i += 1;
                }
                State::Ext => {
                    self.ext_bytes += 1;
                    if self.ext_bytes > MAX_TRAILER {
                        return Err(ChunkError::TrailerTooLarge);
                    }
                    if b == b'\r' {
                        self.state = State::SizeLf;
                    } else if b == b'\n' || b == 0 {
                        return Err(ChunkError::BadSize);
                    }
                    i += 1;
                }
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkError::BadSize);
                    }
                    i += 1;
                    if self.size == 0 {
                        self.state = State::TrailerStart;
                    } else {
                        if out.len() as u64 + self.size > self.max_body as u64 {
                            return Err(ChunkError::TooLarge);
                        }
                        self.remaining = self.size;
                        self.state = State::Data;
                    }
                }
                State::Data => {
                    let n = (input.len() - i).min(self.remaining as usize);
                    out.extend_from_slice(&input[i..i + n]);
                    i += n;
                    self.remaining -= n as u64;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(ChunkError::BadTerminator);
                    }
                    self.state = State::DataLf;
                    i += 1;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkError::BadTerminator);
                    }
                    self.size = 0;
                    self.ext_bytes = 0;
                    self.state = State::Size { digits: 0 };
                    i += 1;
                }
                State::TrailerStart => {
                    if b == b'\r' {
                        self.state = State::EndLf;
                    } else if b == b'\n' {
                        return Err(ChunkError::BadTerminator);
                    } else {
                        self.state = State::TrailerLine;
                        self.trailer_bytes += 1;
                    }
                    i += 1;
                }
                State::TrailerLine => {
                    self.trailer_bytes += 1;
                    if self.trailer_bytes > MAX_TRAILER {
                        return Err(ChunkError::TrailerTooLarge);
                    }
                    if b == b'\r' {
                        self.state = State::TrailerLf;
                    } else if b == b'\n' {
                        return Err(ChunkError::BadTerminator);
                    }
                    i += 1;
                }
                State::TrailerLf => {
                    if b != b'\n' {
                        return Err(ChunkError::BadTerminator);
                    }
                    self.state = State::TrailerStart;
                    i += 1;
                }
                State::EndLf => {
                    if b != b'\n' {
                        return Err(ChunkError::BadTerminator);
                    }
                    self.state = State::Done;
                    return Ok(i + 1);
                }
                State::Done => return Ok(i),
            }
        }
        Ok(i)
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

    fn decode_all(input: &[u8]) -> Result<(Vec<u8>, usize, bool), ChunkError> {
        let mut d = ChunkedDecoder::new(1 << 20);
        let mut out = Vec::new();
        let n = d.decode(input, &mut out)?;
        Ok((out, n, d.is_done()))
    }

    #[test]
    fn decodes_in_one_piece_and_byte_by_byte() {
        let input = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let (out, n, done) = decode_all(input).unwrap();
        assert_eq!(out, b"hello world");
        assert!(done);
        assert_eq!(&input[n..], b"NEXT");

        let mut d = ChunkedDecoder::new(1 << 20);
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
    fn rejects_bad_framing() {
        assert_eq!(decode_all(b"zz\r\n").unwrap_err(), ChunkError::BadSize);
        assert_eq!(decode_all(b"-1\r\n").unwrap_err(), ChunkError::BadSize);
        assert_eq!(decode_all(b"5\nhello").unwrap_err(), ChunkError::BadSize);
        assert_eq!(
            decode_all(b"5\r\nhelloXX").unwrap_err(),
            ChunkError::BadTerminator
        );
        assert_eq!(
            decode_all(b"11111111111111111\r\n").unwrap_err(),
            ChunkError::SizeOverflow
        );
        let mut d = ChunkedDecoder::new(4);
        assert_eq!(
            d.decode(b"5\r\nhello\r\n", &mut Vec::new()).unwrap_err(),
            ChunkError::TooLarge
        );
    }
}
