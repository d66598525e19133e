//! Content codings of request bodies (RFC 9110 §8.4): which `Content-Encoding` a request may
//! carry, decoding it with bounded memory (the bomb guard), and re-encoding the scrubbed body
//! for a route with `forward_encoding = "same"`.
//!
//! - Codings: `gzip` / `x-gzip` (RFC 1952; concatenated members are one body, anything else
//!   after a member is refused), `deflate` (RFC 9110: the zlib format of RFC 1950; raw RFC 1951
//!   deflate, which some clients send, is recognised by the absence of a zlib header), `zstd`
//!   (RFC 8878 frames, concatenated frames are one body, window at most 8 MiB as RFC 9659
//!   requires), and `identity`. One coding per body: a list of two or more (stacked codings)
//!   is refused like an unknown coding (415, with the supported ones named).
//! - Limits ([`Limits`]): the decoded body may hold at most `max_decoded_bytes`, and at most
//!   `max_expansion_ratio` times the encoded length; both are folded into one byte cap before
//!   decoding starts and checked in one place (`Sink`), as output is produced. The output
//!   grows by doubling up to the cap + 1 byte, never to a size the stream announces (a zstd
//!   frame's content size is not trusted), so a bomb costs at most the cap.
//! - A stream that ends early is `Truncated`, one that does not parse (or has bytes after its
//!   end) is `Corrupt`: both 400 `invalid_encoding`.
//!
//! Pure: no I/O, no runtime. [`config`] holds the route options and their defaults; the
//! per-route counters are `crate::metrics::decode` (metrics depend on this module, not back).

#![forbid(unsafe_code)]

pub mod config;
#[cfg(test)]
mod tests;

use std::io::Write as _;

use flate2::{Decompress, FlushDecompress, Status};
use zstd::stream::raw::{DParameter, Decoder as ZstdDecoder, InBuffer, Operation, OutBuffer};

pub use config::{ForwardEncoding, Limits};

/// The codings relay decodes, as named in errors and in `Accept-Encoding`.
pub const SUPPORTED: &str = "gzip, deflate, zstd";

/// Largest zstd window relay accepts, as a power of two: 2^23 = 8 MiB, the limit RFC 9659
/// sets for the `zstd` content coding. A frame asking for more is refused before its window
/// is allocated.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 23;

/// Smallest output buffer allocated at the start of a decode, in bytes (then doubled as needed).
const INITIAL_OUTPUT: usize = 8 * 1024;

/// A content coding relay decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Coding {
    /// `gzip` or `x-gzip` (RFC 1952).
    Gzip,
    /// `deflate`: zlib (RFC 1950) or raw deflate (RFC 1951).
    Deflate,
    /// `zstd` (RFC 8878).
    Zstd,
}

impl Coding {
    /// Every coding, in label order ([`Coding::index`]).
    pub const ALL: [Coding; 3] = [Coding::Gzip, Coding::Deflate, Coding::Zstd];

    /// The canonical name (`x-gzip` is `gzip`): the Kafka header and upstream
    /// `Content-Encoding` value, and the metrics label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
            Coding::Zstd => "zstd",
        }
    }

    /// The coding a canonical name ([`Coding::as_str`]) names.
    pub fn from_name(name: &str) -> Option<Coding> {
        Coding::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// The position in [`Coding::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Coding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the request's body coding was and what the forwarded body carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// The coding the client's body had (None: identity, or an empty body).
    pub request: Option<Coding>,
    /// The coding of the body sent upstream (`forward_encoding = "same"`), None: identity.
    pub forwarded: Option<Coding>,
}

/// A request body as read (the bytes on the wire, chunked framing removed) and, when it was
/// compressed, decoded.
#[derive(Debug, Default)]
pub struct Body {
    /// The body exactly as the client sent it (what Kafka gets).
    pub wire: Vec<u8>,
    decoded: Option<Vec<u8>>,
}

impl Body {
    /// A body without a content coding.
    pub fn identity(wire: Vec<u8>) -> Body {
        Body {
            wire,
            decoded: None,
        }
    }

    /// A compressed body and its decoded bytes.
    pub fn decoded_from(wire: Vec<u8>, decoded: Vec<u8>) -> Body {
        Body {
            wire,
            decoded: Some(decoded),
        }
    }

    /// The body to read (key fields, scrubbing): the decoded bytes, or the wire bytes.
    pub fn decoded(&self) -> &[u8] {
        self.decoded.as_deref().unwrap_or(&self.wire)
    }
}

/// Why a body's coding was refused. Client faults all; the status is chosen in
/// `crate::error` (415 / 413 / 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A coding relay does not decode (415 `unsupported_content_encoding`).
    #[error(
        "Content-Encoding {value:?} is not supported: relay decodes {SUPPORTED} (or identity); \
         send the body with one of them, or uncompressed"
    )]
    Unsupported {
        /// The coding as sent (at most 64 bytes).
        value: String,
    },
    /// More than one coding applied to the body (415 `unsupported_content_encoding`).
    #[error(
        "Content-Encoding lists {count} codings ({value:?}): relay decodes one coding per body \
         ({SUPPORTED}); compress the body once"
    )]
    Stacked {
        /// The codings as sent (at most 64 bytes).
        value: String,
        /// How many codings other than identity.
        count: usize,
    },
    /// The decoded body passed `max_decoded_bytes` (413 `decoded_body_too_large`).
    #[error(
        "the {coding} body decodes to more than max_decoded_bytes ({limit} bytes); \
         send smaller batches"
    )]
    TooLarge {
        /// The body's coding.
        coding: Coding,
        /// The route's `max_decoded_bytes`.
        limit: u64,
    },
    /// The decoded body passed `max_expansion_ratio` times the encoded length (413
    /// `expansion_ratio_exceeded`).
    #[error(
        "the {coding} body expands more than max_expansion_ratio ({ratio}x its {encoded} \
         encoded bytes, {limit} bytes); send it less compressed or uncompressed"
    )]
    RatioExceeded {
        /// The body's coding.
        coding: Coding,
        /// The route's `max_expansion_ratio`.
        ratio: u32,
        /// The encoded body's length, in bytes.
        encoded: u64,
        /// `ratio * encoded`, in bytes.
        limit: u64,
    },
    /// The stream ended before its end marker (400 `invalid_encoding`).
    #[error(
        "the {coding} body is truncated: the compressed stream ends before it is complete; \
         send the whole compressed body"
    )]
    Truncated {
        /// The body's coding.
        coding: Coding,
    },
    /// The stream does not decode, or has bytes after its end (400 `invalid_encoding`).
    #[error(
        "the body is not a valid {coding} stream ({detail}); compress it with a standard \
         {coding} encoder, or fix Content-Encoding"
    )]
    Corrupt {
        /// The body's coding.
        coding: Coding,
        /// What the decoder found (never body bytes).
        detail: String,
    },
}

impl DecodeError {
    /// The machine-readable code (also the `reason` label).
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::Unsupported { .. } | DecodeError::Stacked { .. } => {
                "unsupported_content_encoding"
            }
            DecodeError::TooLarge { .. } => "decoded_body_too_large",
            DecodeError::RatioExceeded { .. } => "expansion_ratio_exceeded",
            DecodeError::Truncated { .. } | DecodeError::Corrupt { .. } => "invalid_encoding",
        }
    }
}

/// Parses every `Content-Encoding` field value of a request (in order, as one list): None
/// for no coding (no header, empty list, only `identity`), else the one coding. Refuses an
/// unknown coding and a list with two or more codings other than identity.
pub fn parse<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Option<Coding>, DecodeError> {
    let mut found: Option<Coding> = None;
    let mut count = 0usize;
    let mut all = String::new();
    for value in values {
        let v = String::from_utf8_lossy(value);
        if !all.is_empty() {
            all.push_str(", ");
        }
        all.push_str(v.trim());
        for token in v.split(',') {
            let t = token.trim_matches([' ', '\t']);
            let coding = if t.is_empty() || t.eq_ignore_ascii_case("identity") {
                continue;
            } else if t.eq_ignore_ascii_case("gzip") || t.eq_ignore_ascii_case("x-gzip") {
                Coding::Gzip
            } else if t.eq_ignore_ascii_case("deflate") {
                Coding::Deflate
            } else if t.eq_ignore_ascii_case("zstd") {
                Coding::Zstd
            } else {
                return Err(DecodeError::Unsupported {
                    value: truncate(t).to_string(),
                });
            };
            count += 1;
            found = Some(coding);
        }
    }
    if count > 1 {
        return Err(DecodeError::Stacked {
            value: truncate(&all).to_string(),
            count,
        });
    }
    Ok(found)
}

/// Decodes `body` (encoded with `coding`) within `limits`. Allocates at most the cap + 1
/// byte of output plus the decoder's own state (zlib: ~40 KiB; zstd: its window, at most
/// 8 MiB, and only as much of it as the frame uses).
pub fn decode(coding: Coding, body: &[u8], limits: Limits) -> Result<Vec<u8>, DecodeError> {
    let mut sink = Sink::new(coding, body.len(), limits);
    match coding {
        Coding::Gzip => gunzip(body, &mut sink)?,
        Coding::Deflate => {
            let mut d = Decompress::new(is_zlib(body));
            let used = inflate(&mut d, body, &mut sink)?;
            if used < body.len() {
                return Err(trailing(coding, body.len() - used));
            }
        }
        Coding::Zstd => unzstd(body, &mut sink)?,
    }
    Ok(sink.out)
}

/// Encodes `body` with `coding` (gzip and zlib-deflate at the default level 6, zstd at level
/// 3), for `forward_encoding = "same"`.
pub fn encode(coding: Coding, body: &[u8]) -> std::io::Result<Vec<u8>> {
    let out = Vec::with_capacity(body.len() / 2 + 64);
    match coding {
        Coding::Gzip => {
            let mut e = flate2::write::GzEncoder::new(out, flate2::Compression::default());
            e.write_all(body)?;
            e.finish()
        }
        Coding::Deflate => {
            let mut e = flate2::write::ZlibEncoder::new(out, flate2::Compression::default());
            e.write_all(body)?;
            e.finish()
        }
        Coding::Zstd => zstd::bulk::compress(body, 3),
    }
}

/// The decoded output, bounded by one cap: the only place `max_decoded_bytes` and
/// `max_expansion_ratio` are checked.
struct Sink {
    coding: Coding,
    out: Vec<u8>,
    /// Most decoded bytes allowed: min(max_decoded_bytes, ratio * encoded).
    cap: usize,
    /// The error to return when `cap` is passed.
    over: DecodeError,
}

impl Sink {
    fn new(coding: Coding, encoded: usize, limits: Limits) -> Sink {
        let by_ratio = (encoded as u64).saturating_mul(u64::from(limits.max_expansion_ratio));
        let (cap, over) = if by_ratio < limits.max_decoded_bytes {
            (
                by_ratio,
                DecodeError::RatioExceeded {
                    coding,
                    ratio: limits.max_expansion_ratio,
                    encoded: encoded as u64,
                    limit: by_ratio,
                },
            )
        } else {
            (
                limits.max_decoded_bytes,
                DecodeError::TooLarge {
                    coding,
                    limit: limits.max_decoded_bytes,
                },
            )
        };
        // Validated limits keep the cap far below usize::MAX; saturate anyway.
        let cap = usize::try_from(cap).unwrap_or(usize::MAX - 1);
        let first = (cap + 1).min(INITIAL_OUTPUT.max(encoded.saturating_mul(4)));
        Sink {
            coding,
            out: Vec::with_capacity(first),
            cap,
            over,
        }
    }

    /// Makes sure the output has spare capacity (doubling, never past cap + 1 bytes), or
    /// refuses when the cap has been passed.
    fn make_room(&mut self) -> Result<(), DecodeError> {
        self.check()?;
        if self.out.len() == self.out.capacity() {
            let limit = self.cap + 1;
            let mut want = self.out.capacity().saturating_mul(2).max(INITIAL_OUTPUT);
            if want > limit / 2 {
                // Past half way: the last step goes straight to the cap (one copy less, and
                // never two buffers of the cap's size alive at once).
                want = limit;
            }
            self.out.reserve_exact(want - self.out.len());
        }
        Ok(())
    }

    /// Refuses once more than `cap` bytes were decoded.
    fn check(&self) -> Result<(), DecodeError> {
        if self.out.len() > self.cap {
            return Err(self.over.clone());
        }
        Ok(())
    }

    /// Whether the last decoder call left output space unused (so it had nothing more to give).
    fn has_spare(&self) -> bool {
        self.out.len() < self.out.capacity()
    }
}

/// gzip: one member after another (RFC 1952 §2.2), each checked (CRC-32, ISIZE) by zlib.
fn gunzip(body: &[u8], sink: &mut Sink) -> Result<(), DecodeError> {
    let mut pos = 0;
    loop {
        let mut d = Decompress::new_gzip(15);
        pos += inflate(&mut d, &body[pos..], sink)?;
        let rest = &body[pos..];
        if rest.is_empty() {
            return Ok(());
        }
        if !rest.starts_with(&[0x1f, 0x8b]) {
            return Err(trailing(Coding::Gzip, rest.len()));
        }
    }
}

/// Runs a zlib-family decoder over `input` to its stream end; returns the input bytes it used.
fn inflate(d: &mut Decompress, input: &[u8], sink: &mut Sink) -> Result<usize, DecodeError> {
    let coding = sink.coding;
    let mut pos = 0usize;
    loop {
        sink.make_room()?;
        let (in0, out0) = (d.total_in(), d.total_out());
        let status = d
            .decompress_vec(&input[pos..], &mut sink.out, FlushDecompress::None)
            .map_err(|e| DecodeError::Corrupt {
                coding,
                detail: match e.needs_dictionary() {
                    Some(_) => "a preset dictionary is not supported".to_string(),
                    None => e.message().unwrap_or("invalid data").to_string(),
                },
            })?;
        let used = (d.total_in() - in0) as usize;
        pos += used;
        sink.check()?;
        if status == Status::StreamEnd {
            return Ok(pos);
        }
        if sink.has_spare() && pos == input.len() {
            // All input read, room to write, no stream end: the stream stops before its end.
            return Err(DecodeError::Truncated { coding });
        }
        if sink.has_spare() && used == 0 && d.total_out() == out0 {
            return Err(DecodeError::Corrupt {
                coding,
                detail: "the decoder made no progress".to_string(),
            });
        }
    }
}

/// zstd: frames one after another (skippable frames included), window at most 8 MiB.
fn unzstd(body: &[u8], sink: &mut Sink) -> Result<(), DecodeError> {
    let coding = Coding::Zstd;
    let corrupt = |e: std::io::Error| DecodeError::Corrupt {
        coding,
        detail: zstd_detail(&e),
    };
    ZSTD_DECODER.with(|cell| {
        let mut slot = cell.borrow_mut();
        // A context left mid-frame by a refused body starts over; one that cannot is rebuilt.
        if let Some(d) = slot.as_mut() {
            if d.reinit().is_err() {
                *slot = None;
            }
        }
        let d = match slot.as_mut() {
            Some(d) => d,
            None => {
                let mut d = ZstdDecoder::new().map_err(corrupt)?;
                d.set_parameter(DParameter::WindowLogMax(ZSTD_WINDOW_LOG_MAX))
                    .map_err(corrupt)?;
                slot.insert(d)
            }
        };
        unzstd_with(d, body, sink)
    })
}

thread_local! {
    /// This worker's zstd decoding context, reused: creating one costs about 6 µs, more than
    /// decoding a 1 KiB event. Its window limit is set once; `reinit` keeps it.
    static ZSTD_DECODER: std::cell::RefCell<Option<ZstdDecoder<'static>>> =
        const { std::cell::RefCell::new(None) };
}

fn unzstd_with(
    d: &mut ZstdDecoder<'static>,
    body: &[u8],
    sink: &mut Sink,
) -> Result<(), DecodeError> {
    let coding = Coding::Zstd;
    let corrupt = |e: std::io::Error| DecodeError::Corrupt {
        coding,
        detail: zstd_detail(&e),
    };
    let mut input = InBuffer::around(body);
    loop {
        sink.make_room()?;
        let (in0, out0) = (input.pos(), sink.out.len());
        let hint = {
            let mut out = OutBuffer::around_pos(&mut sink.out, out0);
            d.run(&mut input, &mut out).map_err(corrupt)?
        };
        sink.check()?;
        if sink.has_spare() && input.pos() == body.len() {
            // Everything was read and all it gave was flushed.
            return if hint == 0 {
                Ok(())
            } else {
                Err(DecodeError::Truncated { coding })
            };
        }
        if sink.has_spare() && input.pos() == in0 && sink.out.len() == out0 {
            return Err(DecodeError::Corrupt {
                coding,
                detail: "the decoder made no progress".to_string(),
            });
        }
    }
}

/// zstd's error, with what relay's window limit means when that is the cause.
fn zstd_detail(e: &std::io::Error) -> String {
    let m = e.to_string();
    if m.contains("too much memory") || m.contains("window") {
        format!("{m}: relay accepts zstd windows up to 8 MiB (RFC 9659)")
    } else {
        m
    }
}

/// Whether a deflate body starts with a zlib header (RFC 1950 §2.2: CM 8, CINFO ≤ 7, the
/// header a multiple of 31); otherwise it is taken as raw deflate.
fn is_zlib(body: &[u8]) -> bool {
    match body {
        [cmf, flg, ..] => {
            cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0
        }
        _ => false,
    }
}

fn trailing(coding: Coding, n: usize) -> DecodeError {
    DecodeError::Corrupt {
        coding,
        detail: format!("{n} bytes after the end of the compressed stream"),
    }
}

/// Header values are echoed in errors only up to 64 bytes.
fn truncate(s: &str) -> &str {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
