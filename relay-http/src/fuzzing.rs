//! Invariant checks shared by the cargo-fuzz targets and the corpus replay on stable.
//!
//! Compiled only with the `fuzzing` cargo feature, which nothing in relay enables: the fuzz crate
//! (`fuzz/`, its own workspace) depends on relay-http with `features = ["fuzzing"]`, and
//! relay-http's own tests get it through a dev-dependency of the crate on itself. Both call the
//! same three entry points ([`check_request_head`], [`check_body_decoder`], [`check_response`]),
//! so one definition says how a fuzz input's bytes become limits, framing and a split into
//! reads, and a corpus file means the same thing to libFuzzer and to `cargo test`. The checks
//! live in the library (not in a file included by `#[path]`) so they are built, linted and
//! documented like the rest of the crate.
//!
//! Each check panics when an invariant breaks:
//! - the [`HeadScanner`], fed any bytes in any split, decides exactly what a simple
//!   non-incremental oracle ([`reference_scan`]) decides on the same prefix: the same span, and
//!   a bare LF / bare CR / size refusal on the call that brought the offending byte;
//! - a parsed request or response head is consistent with its own fields (one Content-Length,
//!   never with Transfer-Encoding, field values without control bytes, a status 100–999, ...)
//!   and survives being re-encoded by relay's encoders and parsed again;
//! - a [`BodyDecoder`], fed a body in any split with any limits, never panics, never yields or
//!   admits more than `max_body` bytes, consumes all it is given until the body ends, and
//!   agrees with a straightforward reference decoder ([`reference_body`]): same output, same
//!   bytes consumed, and it refuses exactly what the reference refuses.

use crate::body::{BodyDecoder, BodyFraming, BodyLimits};
use crate::encode::RequestHeadEncoder;
use crate::error::HttpError;
use crate::fields::{is_field_value_byte, is_hop_by_hop, is_tchar, parse_content_length};
use crate::request::{HeadLimits, RequestHead};
use crate::response::{ResponseHead, MAX_INTERIM_RESPONSES};
use crate::scan::{HeadScanner, HeadSpan};

// ---------------------------------------------------------------------------------------------
// Input layout
// ---------------------------------------------------------------------------------------------

/// Reads fixed-size little-endian fields off the front of a fuzz input; missing bytes read as 0.
struct Fields<'a> {
    data: &'a [u8],
}

impl<'a> Fields<'a> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        let n = N.min(self.data.len());
        a[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        a
    }
    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
}

/// How an input is cut into reads: sizes drawn from a xorshift generator seeded with `seed`,
/// each 1..=`max_read` bytes; `max_read == 0` means one read of everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reads {
    /// Seed of the size generator.
    pub seed: u32,
    /// Largest read, bytes; 0: the whole input in one read.
    pub max_read: u8,
}

impl Reads {
    /// One read of everything.
    pub const WHOLE: Reads = Reads {
        seed: 0,
        max_read: 0,
    };

    /// A generator of read sizes: called with the bytes left, returns how many to read next.
    pub fn sizes(self) -> impl FnMut(usize) -> usize {
        let mut state = u64::from(self.seed) | 1 << 40;
        let max = usize::from(self.max_read);
        move |left| {
            if max == 0 {
                return left;
            }
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            1 + (state % max as u64) as usize
        }
    }

    fn encode(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.seed.to_le_bytes());
        out.push(self.max_read);
    }

    fn decode(f: &mut Fields<'_>) -> Reads {
        Reads {
            seed: f.u32(),
            max_read: f.u8(),
        }
    }
}

fn encode_limits(l: BodyLimits, out: &mut Vec<u8>) {
    out.extend_from_slice(&l.max_body.to_le_bytes());
    out.extend_from_slice(&(l.max_chunk_line.min(usize::from(u16::MAX)) as u16).to_le_bytes());
    out.extend_from_slice(&(l.max_trailer.min(usize::from(u16::MAX)) as u16).to_le_bytes());
}

fn decode_limits(f: &mut Fields<'_>) -> BodyLimits {
    BodyLimits {
        max_body: f.u64(),
        max_chunk_line: usize::from(f.u16()),
        max_trailer: usize::from(f.u16()),
    }
}

/// A `body_decoder` fuzz input: a framing, limits, reads and the bytes that follow a head.
///
/// Layout (little endian): framing selector `u8` (`% 4`: 0 Content-Length, 1 chunked,
/// 2 close-delimited, 3 none), Content-Length `u64`, `max_body` `u64`, `max_chunk_line` `u16`,
/// `max_trailer` `u16`, reads seed `u32`, `max_read` `u8`, then the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyCase {
    /// How the body is framed.
    pub framing: BodyFraming,
    /// The decoder's limits.
    pub limits: BodyLimits,
    /// How the payload is cut into reads.
    pub reads: Reads,
    /// The bytes after the head.
    pub payload: Vec<u8>,
}

impl BodyCase {
    /// The fuzz input for this case.
    pub fn to_bytes(&self) -> Vec<u8> {
        let (sel, n) = match self.framing {
            BodyFraming::Length(n) => (0u8, n),
            BodyFraming::Chunked => (1, 0),
            BodyFraming::Close => (2, 0),
            BodyFraming::None => (3, 0),
        };
        let mut out = vec![sel];
        out.extend_from_slice(&n.to_le_bytes());
        encode_limits(self.limits, &mut out);
        self.reads.encode(&mut out);
        out.extend_from_slice(&self.payload);
        out
    }

    /// The case a fuzz input stands for (every input stands for one).
    pub fn from_bytes(data: &[u8]) -> BodyCase {
        let mut f = Fields { data };
        let sel = f.u8();
        let n = f.u64();
        let framing = match sel % 4 {
            0 => BodyFraming::Length(n),
            1 => BodyFraming::Chunked,
            2 => BodyFraming::Close,
            _ => BodyFraming::None,
        };
        let limits = decode_limits(&mut f);
        let reads = Reads::decode(&mut f);
        BodyCase {
            framing,
            limits,
            reads,
            payload: f.data.to_vec(),
        }
    }
}

/// A `request_head` fuzz input: head limits, body limits, reads and the bytes a client sent.
///
/// Layout (little endian): `max_header_bytes` `u32`, `max_headers` `u32`, `max_body` `u64`,
/// `max_chunk_line` `u16`, `max_trailer` `u16`, reads seed `u32`, `max_read` `u8`, then the
/// payload (head, then body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestCase {
    /// Limits on the head.
    pub head: HeadLimitsCase,
    /// Limits on the body.
    pub limits: BodyLimits,
    /// How the payload is cut into reads.
    pub reads: Reads,
    /// What the client sent.
    pub payload: Vec<u8>,
}

/// [`HeadLimits`] as a fuzz input holds them (`u32` each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimitsCase {
    /// [`HeadLimits::max_header_bytes`].
    pub max_header_bytes: u32,
    /// [`HeadLimits::max_headers`].
    pub max_headers: u32,
}

impl HeadLimitsCase {
    fn limits(self) -> HeadLimits {
        HeadLimits {
            max_header_bytes: self.max_header_bytes as usize,
            max_headers: self.max_headers as usize,
        }
    }
}

impl RequestCase {
    /// The fuzz input for this case.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.head.max_header_bytes.to_le_bytes());
        out.extend_from_slice(&self.head.max_headers.to_le_bytes());
        encode_limits(self.limits, &mut out);
        self.reads.encode(&mut out);
        out.extend_from_slice(&self.payload);
        out
    }

    /// The case a fuzz input stands for.
    pub fn from_bytes(data: &[u8]) -> RequestCase {
        let mut f = Fields { data };
        let head = HeadLimitsCase {
            max_header_bytes: f.u32(),
            max_headers: f.u32(),
        };
        let limits = decode_limits(&mut f);
        let reads = Reads::decode(&mut f);
        RequestCase {
            head,
            limits,
            reads,
            payload: f.data.to_vec(),
        }
    }
}

/// A `response` fuzz input: whether the request was a HEAD, head and body limits, reads and
/// the bytes an upstream sent (interim heads, the final head, its body).
///
/// Layout (little endian): flags `u8` (bit 0: the request was HEAD), `max_head` `u32`,
/// `max_body` `u64`, `max_chunk_line` `u16`, `max_trailer` `u16`, reads seed `u32`, `max_read`
/// `u8`, then the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseCase {
    /// The request was `HEAD`: the response has no body.
    pub request_was_head: bool,
    /// Largest response head, bytes.
    pub max_head: u32,
    /// Limits on the body.
    pub limits: BodyLimits,
    /// How the payload is cut into reads.
    pub reads: Reads,
    /// What the upstream sent.
    pub payload: Vec<u8>,
}

impl ResponseCase {
    /// The fuzz input for this case.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![u8::from(self.request_was_head)];
        out.extend_from_slice(&self.max_head.to_le_bytes());
        encode_limits(self.limits, &mut out);
        self.reads.encode(&mut out);
        out.extend_from_slice(&self.payload);
        out
    }

    /// The case a fuzz input stands for.
    pub fn from_bytes(data: &[u8]) -> ResponseCase {
        let mut f = Fields { data };
        let request_was_head = f.u8() & 1 == 1;
        let max_head = f.u32();
        let limits = decode_limits(&mut f);
        let reads = Reads::decode(&mut f);
        ResponseCase {
            request_was_head,
            max_head,
            limits,
            reads,
            payload: f.data.to_vec(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------------------------

/// The `request_head` target: scans the payload for a head in the case's reads, parses it, and
/// decodes what follows as its body; panics when an invariant breaks.
pub fn check_request_head(data: &[u8]) {
    let case = RequestCase::from_bytes(data);
    let limits = case.head.limits();
    let buf = &case.payload;
    let scanned = scan_in_reads(buf, limits.max_header_bytes, &mut case.reads.sizes());
    let whole = RequestHead::parse(buf, limits);
    let span = match scanned {
        Err(e) => {
            assert_eq!(
                whole.unwrap_err(),
                e,
                "RequestHead::parse disagrees with the scanner"
            );
            return;
        }
        Ok(None) => {
            assert!(matches!(whole, Ok(None)), "RequestHead::parse found a head");
            return;
        }
        Ok(Some(span)) => span,
    };
    let parsed = RequestHead::parse_complete(&buf[span.start..span.end], limits);
    match (&parsed, &whole) {
        (Ok(h), Ok(Some((w, used)))) => {
            assert_eq!(*used, span.end);
            assert_eq!(h.head_len(), w.head_len());
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        _ => panic!("RequestHead::parse and parse_complete disagree: {parsed:?} vs {whole:?}"),
    }
    let Ok(head) = parsed else { return };
    check_request_invariants(&head, span, limits);
    let body = &buf[span.end..];
    check_body(head.framing, case.limits, body, &mut case.reads.sizes());
}

/// The `body_decoder` target: decodes the payload with the case's framing, limits and reads,
/// and compares with [`reference_body`]; panics when an invariant breaks.
pub fn check_body_decoder(data: &[u8]) {
    let case = BodyCase::from_bytes(data);
    check_body(
        case.framing,
        case.limits,
        &case.payload,
        &mut case.reads.sizes(),
    );
}

/// The `response` target: reads interim and final response heads as relay's upstream client
/// does, then the final response's body; panics when an invariant breaks.
pub fn check_response(data: &[u8]) {
    let case = ResponseCase::from_bytes(data);
    let max_head = case.max_head as usize;
    let mut pos = 0;
    let mut interim = 0;
    loop {
        let buf = &case.payload[pos..];
        let Ok(Some(span)) = scan_in_reads(buf, max_head, &mut case.reads.sizes()) else {
            return;
        };
        let Ok(head) =
            ResponseHead::parse_complete(&buf[span.start..span.end], case.request_was_head)
        else {
            return;
        };
        check_response_invariants(&head, &buf[span.start..span.end], case.request_was_head);
        pos += span.end;
        if head.is_interim() {
            interim += 1;
            if interim > MAX_INTERIM_RESPONSES {
                return;
            }
            continue;
        }
        check_body(
            head.framing,
            case.limits,
            &case.payload[pos..],
            &mut case.reads.sizes(),
        );
        return;
    }
}

// ---------------------------------------------------------------------------------------------
// Head scanning
// ---------------------------------------------------------------------------------------------

/// What a [`HeadScanner`] must decide on `buf`, found without any incremental state: the first
/// of (the byte at `max_head`, the first bare LF / bare CR, the LF of the blank line ending the
/// head) decides; nothing yet is `Ok(None)`.
pub fn reference_scan(buf: &[u8], max_head: usize) -> Result<Option<HeadSpan>, HttpError> {
    let bad = (0..buf.len()).find(|&j| {
        let after_cr = j > 0 && buf[j - 1] == b'\r';
        (buf[j] == b'\n' && !after_cr) || (after_cr && buf[j] != b'\n')
    });
    let mut start = 0;
    while buf[start..].starts_with(b"\r\n") {
        start += 2;
    }
    let end_lf = buf[start..]
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| start + p + 3);
    let first = match (bad, end_lf) {
        (Some(b), Some(e)) => Some(b.min(e)),
        (b, e) => b.or(e),
    };
    if buf.len() > max_head && first.is_none_or(|f| max_head <= f) {
        return Err(HttpError::HeadTooLarge { limit: max_head });
    }
    match first {
        None => Ok(None),
        Some(f) if Some(f) == end_lf => Ok(Some(HeadSpan { start, end: f + 1 })),
        Some(f) => {
            let code = if buf[f] == b'\n' {
                "bare_lf"
            } else {
                "bare_cr"
            };
            Err(HttpError::invalid(code, ""))
        }
    }
}

/// Feeds `buf` to a [`HeadScanner`] in growing prefixes cut by `next_read`, checking each
/// answer against [`reference_scan`] on the same prefix, and returns the scanner's decision.
pub fn scan_in_reads(
    buf: &[u8],
    max_head: usize,
    next_read: &mut dyn FnMut(usize) -> usize,
) -> Result<Option<HeadSpan>, HttpError> {
    let mut scanner = HeadScanner::new();
    let mut k = 0;
    loop {
        let left = buf.len() - k;
        k += next_read(left).clamp(left.min(1), left);
        let got = scanner.scan(&buf[..k], max_head);
        let want = reference_scan(&buf[..k], max_head);
        match (&got, &want) {
            (Err(g), Err(w)) => assert_eq!(g.code(), w.code(), "prefix {k} of {buf:?}"),
            _ => assert_eq!(got, want, "prefix {k} of {buf:?}"),
        }
        if got.is_err() || matches!(got, Ok(Some(_))) || k == buf.len() {
            if let Ok(None) = got {
                assert_eq!(scanner.scanned(), buf.len());
            }
            return got;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Heads
// ---------------------------------------------------------------------------------------------

fn check_request_invariants(head: &RequestHead, span: HeadSpan, limits: HeadLimits) {
    assert_eq!(head.head_len(), span.end - span.start);
    assert!(head.head_len() <= limits.max_header_bytes);
    assert!(
        head.header_count() <= limits.max_headers,
        "{} header fields admitted with max_headers = {}",
        head.header_count(),
        limits.max_headers
    );
    assert_ne!(
        head.framing,
        BodyFraming::Close,
        "a request is never close-delimited"
    );
    assert!(head.minor_version <= 1);
    let count = |name: &str| {
        head.headers()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
    };
    for (n, v) in head.headers() {
        assert!(!n.is_empty() && n.bytes().all(is_tchar), "field name {n:?}");
        assert!(
            v.iter().all(|&b| is_field_value_byte(b)),
            "field value {v:?}"
        );
    }
    assert!(!head.method().is_empty() && head.method().bytes().all(is_tchar));
    let (cl, te) = (count("content-length"), count("transfer-encoding"));
    assert!(cl <= 1, "more than one Content-Length admitted");
    assert!(
        cl == 0 || te == 0,
        "Content-Length with Transfer-Encoding admitted"
    );
    match head.framing {
        BodyFraming::Chunked => {
            assert_eq!(te, 1);
            assert_eq!(head.minor_version, 1);
            assert!(head
                .header("transfer-encoding")
                .is_some_and(|v| v.eq_ignore_ascii_case(b"chunked")));
        }
        BodyFraming::Length(n) => {
            assert_eq!(te, 0);
            let v = head.header("content-length").expect("a Content-Length");
            assert_eq!(parse_content_length(v), Ok(n));
        }
        _ => assert_eq!((cl, te), (0, 0)),
    }
    let hosts = count("host");
    assert!(hosts <= 1);
    if head.minor_version == 1 {
        assert_eq!(hosts, 1, "an HTTP/1.1 request without Host admitted");
    }
    let path = head.path();
    assert!(
        path.starts_with('/') || (path == "*" && head.method() == "OPTIONS"),
        "path {path:?}"
    );
    assert!(!path.contains('?'));

    // What relay sends upstream must mean the same to the next parser: re-encode the request
    // with relay's encoder, parse it again, and compare.
    let mut out = Vec::new();
    let mut enc = RequestHeadEncoder::new(&mut out, head.method(), path, head.query());
    let mut kept = 0;
    for (n, v) in head.headers() {
        if n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("transfer-encoding") {
            continue;
        }
        enc.header(n, v);
        kept += 1;
    }
    if hosts == 0 {
        enc.header("Host", head.host().unwrap_or("relay").as_bytes());
        kept += 1;
    }
    let length = match head.framing {
        BodyFraming::Length(n) => Some(n),
        _ => None,
    };
    enc.finish(length);
    let again = RequestHead::parse(
        &out,
        HeadLimits {
            max_header_bytes: out.len(),
            max_headers: kept + 1,
        },
    );
    let (again, used) = match again {
        Ok(Some(a)) => a,
        other => panic!("the re-encoded request {out:?} does not parse: {other:?}"),
    };
    assert_eq!(used, out.len());
    assert_eq!(again.method(), head.method());
    assert_eq!(again.path(), path);
    assert_eq!(again.query(), head.query());
    assert_eq!(
        again.framing,
        length.map_or(BodyFraming::None, BodyFraming::Length)
    );
    assert_eq!(again.header_count(), kept + usize::from(length.is_some()));
}

fn check_response_invariants(head: &ResponseHead, raw: &[u8], request_was_head: bool) {
    assert!(
        (100..=999).contains(&head.status),
        "status {} admitted",
        head.status
    );
    let bodiless = request_was_head || head.status < 200 || matches!(head.status, 204 | 304);
    if bodiless {
        assert_eq!(head.framing, BodyFraming::None);
    }
    if head.framing == BodyFraming::Close {
        assert!(
            !head.keep_alive,
            "a close-delimited body on a kept-alive connection"
        );
    }
    // The framing follows from the fields, worked out here independently: the last non-empty
    // element of the combined Transfer-Encoding list decides (RFC 9112 §6.3, RFC 9110 §5.6.1).
    let mut hdrs = [httparse::EMPTY_HEADER; 256];
    let mut resp = httparse::Response::new(&mut hdrs);
    assert!(resp.parse(raw).is_ok_and(|s| s.is_complete()));
    let has_te = resp
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"));
    let last_coding = resp
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .rfind(|c| !c.is_empty());
    if !bodiless {
        let want = match (has_te, last_coding) {
            (true, Some(c)) if c.eq_ignore_ascii_case(b"chunked") => BodyFraming::Chunked,
            (true, _) => BodyFraming::Close,
            (false, _) => head
                .content_length
                .map_or(BodyFraming::Close, BodyFraming::Length),
        };
        assert_eq!(head.framing, want, "framing of {raw:?}");
    }
    if let BodyFraming::Length(n) = head.framing {
        assert_eq!(head.content_length, Some(n));
    }
    let prefix = format!("HTTP/1.1 {} ", head.status);
    assert!(head.relayed.starts_with(prefix.as_bytes()));
    assert!(head.relayed.ends_with(b"\r\n"));
    // The relayed head is a head of its own (plus the blank line): it parses to the same
    // status and relays identically, with no framing or hop-by-hop field left.
    let mut again = head.relayed.clone();
    again.extend_from_slice(b"\r\n");
    assert_eq!(
        reference_scan(&again, usize::MAX),
        Ok(Some(HeadSpan {
            start: 0,
            end: again.len()
        }))
    );
    let reparsed = ResponseHead::parse_complete(&again, false)
        .unwrap_or_else(|e| panic!("the relayed head {again:?} does not parse: {e}"));
    assert_eq!(reparsed.status, head.status);
    assert_eq!(reparsed.relayed, head.relayed);
    assert_eq!(reparsed.content_length, None);
    let mut hdrs = [httparse::EMPTY_HEADER; 256];
    let mut resp = httparse::Response::new(&mut hdrs);
    assert!(resp.parse(&again).is_ok_and(|s| s.is_complete()));
    for h in resp.headers.iter() {
        assert!(!is_hop_by_hop(h.name, &[]), "hop-by-hop {} relayed", h.name);
        assert!(!h.name.eq_ignore_ascii_case("content-length"));
    }
}

// ---------------------------------------------------------------------------------------------
// Bodies
// ---------------------------------------------------------------------------------------------

/// What a straightforward decoder makes of a whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefBody {
    /// The body ends in the input: its bytes, and how much input it used.
    Complete {
        /// The decoded body.
        body: Vec<u8>,
        /// Input bytes the body used.
        used: usize,
    },
    /// The input is a valid start of a body: what is decoded so far.
    Incomplete {
        /// The body bytes so far.
        body: Vec<u8>,
    },
    /// The input breaks the framing or a limit.
    Rejected,
}

/// The reference: decodes a whole `input` framed as `framing`, non-incrementally. For a
/// close-delimited body the input ends with the connection.
pub fn reference_body(framing: BodyFraming, limits: BodyLimits, input: &[u8]) -> RefBody {
    match framing {
        BodyFraming::None => RefBody::Complete {
            body: Vec::new(),
            used: 0,
        },
        BodyFraming::Length(n) if n > limits.max_body => RefBody::Rejected,
        BodyFraming::Length(n) => match usize::try_from(n) {
            Ok(n) if n <= input.len() => RefBody::Complete {
                body: input[..n].to_vec(),
                used: n,
            },
            _ => RefBody::Incomplete {
                body: input.to_vec(),
            },
        },
        BodyFraming::Close if input.len() as u64 > limits.max_body => RefBody::Rejected,
        BodyFraming::Close => RefBody::Complete {
            body: input.to_vec(),
            used: input.len(),
        },
        BodyFraming::Chunked => reference_chunked(input, limits),
    }
}

/// Why the reference chunked parser stopped early.
enum Stop {
    /// Out of input at a point where more would be valid.
    More,
    /// Invalid framing or over a limit.
    Bad,
}

/// A recursive-descent parser of RFC 9112 §7.1 chunked bodies:
///
/// ```text
/// chunked-body = *chunk last-chunk trailer-section CRLF
/// chunk        = 1*HEXDIG [ chunk-ext ] CRLF chunk-data CRLF
/// chunk-ext    = *( BWS ";" BWS token [ BWS "=" BWS ( token / quoted-string ) ] )
/// trailer-section = *( token ":" *field-value-byte CRLF )
/// ```
///
/// with one leniency the decoder shares on purpose: whitespace may end a size line after an
/// extension (`5;a \r\n`), never after a bare size (`5 \r\n`). Extensions are dropped by the
/// decoder, never relayed. Limits: each size line (CRLF excluded) at most `max_chunk_line`
/// bytes, the chunk sizes summed at most `max_body`, the trailer field lines (CRLFs included,
/// final CRLF excluded) at most `max_trailer` bytes; a limit is broken as soon as the input
/// present breaks it, complete or not.
struct ChunkedRef<'a> {
    s: &'a [u8],
    i: usize,
    body: Vec<u8>,
}

fn reference_chunked(input: &[u8], limits: BodyLimits) -> RefBody {
    let mut p = ChunkedRef {
        s: input,
        i: 0,
        body: Vec::new(),
    };
    match p.chunked_body(limits) {
        Ok(()) => RefBody::Complete {
            used: p.i,
            body: p.body,
        },
        Err(Stop::More) => RefBody::Incomplete { body: p.body },
        Err(Stop::Bad) => RefBody::Rejected,
    }
}

impl ChunkedRef<'_> {
    fn peek(&self) -> Result<u8, Stop> {
        self.s.get(self.i).copied().ok_or(Stop::More)
    }

    fn expect(&mut self, b: u8) -> Result<(), Stop> {
        if self.peek()? != b {
            return Err(Stop::Bad);
        }
        self.i += 1;
        Ok(())
    }

    /// Skips SP / HTAB; says whether there was any.
    fn ws(&mut self) -> Result<bool, Stop> {
        let from = self.i;
        while matches!(self.peek()?, b' ' | b'\t') {
            self.i += 1;
        }
        Ok(self.i > from)
    }

    fn token(&mut self) -> Result<(), Stop> {
        if !is_tchar(self.peek()?) {
            return Err(Stop::Bad);
        }
        while is_tchar(self.peek()?) {
            self.i += 1;
        }
        Ok(())
    }

    fn quoted(&mut self) -> Result<(), Stop> {
        self.expect(b'"')?;
        loop {
            match self.peek()? {
                b'"' => {
                    self.i += 1;
                    return Ok(());
                }
                b'\\' => {
                    self.i += 1;
                    match self.peek()? {
                        b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff => self.i += 1,
                        _ => return Err(Stop::Bad),
                    }
                }
                b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff => self.i += 1,
                _ => return Err(Stop::Bad),
            }
        }
    }

    fn size_line(&mut self, max_line: usize) -> Result<u64, Stop> {
        let rest = &self.s[self.i..];
        let line_len = rest.iter().position(|&b| b == b'\r').unwrap_or(rest.len());
        if line_len > max_line {
            return Err(Stop::Bad);
        }
        let mut size: u64 = 0;
        let mut digits = 0;
        while let Some(v) = (self.peek()? as char).to_digit(16) {
            size = size
                .checked_mul(16)
                .and_then(|s| s.checked_add(u64::from(v)))
                .ok_or(Stop::Bad)?;
            digits += 1;
            self.i += 1;
        }
        if digits == 0 {
            return Err(Stop::Bad);
        }
        let mut exts = 0;
        loop {
            let ws = self.ws()?;
            match self.peek()? {
                b'\r' if ws && exts == 0 => return Err(Stop::Bad),
                b'\r' => {
                    self.i += 1;
                    self.expect(b'\n')?;
                    return Ok(size);
                }
                b';' => {
                    self.i += 1;
                    self.ws()?;
                    self.token()?;
                    exts += 1;
                    self.ws()?;
                    if self.peek()? == b'=' {
                        self.i += 1;
                        self.ws()?;
                        if self.peek()? == b'"' {
                            self.quoted()?;
                        } else {
                            self.token()?;
                        }
                    }
                }
                _ => return Err(Stop::Bad),
            }
        }
    }

    fn trailers(&mut self, max_trailer: usize) -> Result<(), Stop> {
        let mut n = 0usize;
        let mut count = |i: &mut usize| {
            *i += 1;
            n += 1;
            if n > max_trailer {
                Err(Stop::Bad)
            } else {
                Ok(())
            }
        };
        loop {
            match self.peek()? {
                b'\r' => {
                    self.i += 1;
                    return self.expect(b'\n');
                }
                b if is_tchar(b) => {
                    while is_tchar(self.peek()?) {
                        count(&mut self.i)?;
                    }
                    if self.peek()? != b':' {
                        return Err(Stop::Bad);
                    }
                    count(&mut self.i)?;
                    loop {
                        let b = self.peek()?;
                        if b == b'\r' {
                            count(&mut self.i)?;
                            break;
                        }
                        if !is_field_value_byte(b) {
                            return Err(Stop::Bad);
                        }
                        count(&mut self.i)?;
                    }
                    if self.peek()? != b'\n' {
                        return Err(Stop::Bad);
                    }
                    count(&mut self.i)?;
                }
                _ => return Err(Stop::Bad),
            }
        }
    }

    fn chunked_body(&mut self, limits: BodyLimits) -> Result<(), Stop> {
        let mut total: u64 = 0;
        loop {
            let size = self.size_line(limits.max_chunk_line)?;
            if size == 0 {
                return self.trailers(limits.max_trailer);
            }
            total = total
                .checked_add(size)
                .filter(|&t| t <= limits.max_body)
                .ok_or(Stop::Bad)?;
            let avail = self.s.len() - self.i;
            match usize::try_from(size) {
                Ok(n) if n <= avail => {
                    self.body.extend_from_slice(&self.s[self.i..self.i + n]);
                    self.i += n;
                }
                _ => {
                    self.body.extend_from_slice(&self.s[self.i..]);
                    self.i = self.s.len();
                    return Err(Stop::More);
                }
            }
            self.expect(b'\r')?;
            self.expect(b'\n')?;
        }
    }
}

/// What feeding a body to a [`BodyDecoder`] produced.
#[derive(Debug)]
pub struct Fed {
    /// `Err`: the decoder (or its constructor) refused the body.
    pub result: Result<(), HttpError>,
    /// The decoded bytes.
    pub out: Vec<u8>,
    /// Input bytes the decoder used.
    pub used: usize,
    /// The body ended within the input.
    pub done: bool,
    /// What [`BodyDecoder::finish_at_eof`] said after the input, when nothing was refused.
    pub eof: Result<(), HttpError>,
}

fn check_decode_error(e: &HttpError, limits: BodyLimits) {
    match e {
        HttpError::BodyTooLarge { limit } => assert_eq!(*limit, limits.max_body),
        HttpError::ChunkLineTooLarge { limit } => assert_eq!(*limit, limits.max_chunk_line),
        HttpError::TrailerTooLarge { limit } => assert_eq!(*limit, limits.max_trailer),
        HttpError::Invalid { code, .. } => assert_eq!(*code, "invalid_chunk"),
        other => panic!("a body decoder returned {other:?}"),
    }
}

fn check_want(d: &BodyDecoder) {
    for cap in [0, 1, 15, 16, 17, 4096, usize::MAX] {
        let w = d.want(cap);
        assert!(w <= cap, "want({cap}) = {w}");
        if cap > 0 && !d.is_done() {
            assert!(w >= 1, "want({cap}) = 0 before the end of the body");
        }
    }
}

/// Feeds `input` to a new decoder in reads cut by `next_read`, checking after every call that
/// no more than the limit was yielded or admitted and that all input was used until the end.
pub fn feed_body(
    framing: BodyFraming,
    limits: BodyLimits,
    input: &[u8],
    next_read: &mut dyn FnMut(usize) -> usize,
) -> Fed {
    let refused = |e: HttpError, out: Vec<u8>, used: usize| {
        check_decode_error(&e, limits);
        Fed {
            result: Err(e),
            out,
            used,
            done: false,
            eof: Err(HttpError::Incomplete),
        }
    };
    let mut d = match BodyDecoder::new(framing, limits) {
        Ok(d) => d,
        Err(e) => return refused(e, Vec::new(), 0),
    };
    let mut out = Vec::new();
    let mut used = 0;
    loop {
        assert!(d.admitted() <= limits.max_body, "admitted over the limit");
        assert!(
            out.len() as u64 <= d.admitted(),
            "yielded more than admitted"
        );
        check_want(&d);
        if used == input.len() || d.is_done() {
            break;
        }
        let left = input.len() - used;
        let n = next_read(left).clamp(1, left);
        match d.decode(&input[used..used + n], &mut out) {
            Ok(c) => {
                assert!(c <= n);
                if !d.is_done() {
                    assert_eq!(c, n, "input left unused before the end of the body");
                }
                used += c;
            }
            Err(e) => return refused(e, out, used),
        }
    }
    let done = d.is_done();
    if done {
        let mut more = Vec::new();
        assert_eq!(d.decode(&input[used..], &mut more), Ok(0));
        assert!(more.is_empty());
    }
    let eof = d.finish_at_eof();
    if eof.is_ok() {
        assert!(d.is_done());
    }
    Fed {
        result: Ok(()),
        out,
        used,
        done,
        eof,
    }
}

/// Feeds `input` in reads cut by `next_read` ([`feed_body`]) and checks the decoder against
/// [`reference_body`]. Returns what the decoder did.
pub fn check_body(
    framing: BodyFraming,
    limits: BodyLimits,
    input: &[u8],
    next_read: &mut dyn FnMut(usize) -> usize,
) -> Fed {
    let fed = feed_body(framing, limits, input, next_read);
    let want = reference_body(framing, limits, input);
    let ctx = || format!("{framing:?} {limits:?} {input:?}: decoder {fed:?}, reference {want:?}");
    match &want {
        RefBody::Rejected => assert!(fed.result.is_err(), "{}", ctx()),
        RefBody::Complete { body, used } => {
            assert!(fed.result.is_ok(), "{}", ctx());
            assert_eq!(&fed.out, body, "{}", ctx());
            assert_eq!(fed.used, *used, "{}", ctx());
            assert_eq!(fed.done, framing != BodyFraming::Close, "{}", ctx());
            assert_eq!(fed.eof, Ok(()), "{}", ctx());
        }
        RefBody::Incomplete { body } => {
            assert!(fed.result.is_ok(), "{}", ctx());
            assert_eq!(&fed.out, body, "{}", ctx());
            assert_eq!(fed.used, input.len(), "{}", ctx());
            assert!(!fed.done, "{}", ctx());
            assert_eq!(fed.eof, Err(HttpError::Incomplete), "{}", ctx());
        }
    }
    fed
}
