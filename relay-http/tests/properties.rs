//! Property tests for the body decoder and the head scanner: random valid encodings (whose
//! generator knows the answer), random splits into reads and random limits.
//!
//! Every decode also goes through `relay_http::fuzzing::check_body`, which checks the limits
//! after each read and compares with the crate's non-incremental reference decoder; on top of
//! that each test compares with what the generator built (the body, its encoded length, and
//! which limit it breaks first), so the reference itself is checked too.

use proptest::prelude::*;
use relay_http::fuzzing::{check_body, reference_scan, scan_in_reads};
use relay_http::{BodyFraming, BodyLimits, HeadScanner, HttpError};

/// Read sizes cycling through `splits` (each at least 1).
fn reads(splits: &[usize]) -> impl FnMut(usize) -> usize + '_ {
    let mut i = 0;
    move |left| {
        if splits.is_empty() {
            return left;
        }
        i += 1;
        splits[(i - 1) % splits.len()].max(1)
    }
}

fn token() -> impl Strategy<Value = String> {
    "[!#$%&'*+.^_`|~0-9A-Za-z-]{1,8}"
}

fn ws() -> impl Strategy<Value = String> {
    "[ \t]{0,2}"
}

/// A chunk extension: `BWS ; BWS name [BWS = BWS (token | quoted-string)]`.
fn extension() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        Just(String::new()),
        (ws(), ws(), token()).prop_map(|(a, b, t)| format!("{a}={b}{t}")),
        (ws(), ws(), "([ !#-\\[\\]-~]|\\\\[ -~]){0,6}")
            .prop_map(|(a, b, q)| format!("{a}={b}\"{q}\"")),
    ];
    (ws(), ws(), token(), value).prop_map(|(a, b, n, v)| format!("{a};{b}{n}{v}"))
}

/// One chunk's size: small with its data, or huge (no data can follow).
#[derive(Debug, Clone)]
enum Size {
    Data(Vec<u8>),
    Huge(u64),
}

fn size() -> impl Strategy<Value = Size> {
    prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 1..40).prop_map(Size::Data),
        1 => prop_oneof![
            Just(u64::MAX),
            (0u64..4).prop_map(|k| u64::MAX - k),
            (0u64..4).prop_map(|k| (1u64 << 63) + k),
            any::<u64>().prop_map(|n| n.max(1)),
        ]
        .prop_map(Size::Huge),
    ]
}

#[derive(Debug, Clone)]
struct Chunk {
    size: Size,
    zeros: usize,
    upper: bool,
    exts: Vec<String>,
}

fn chunk() -> impl Strategy<Value = Chunk> {
    (
        size(),
        0usize..3,
        any::<bool>(),
        prop::collection::vec(extension(), 0..3),
    )
        .prop_map(|(size, zeros, upper, exts)| Chunk {
            size,
            zeros,
            upper,
            exts,
        })
}

fn size_line(n: u64, zeros: usize, upper: bool, exts: &[String]) -> String {
    let hex = if upper {
        format!("{n:X}")
    } else {
        format!("{n:x}")
    };
    format!("{}{hex}{}", "0".repeat(zeros), exts.concat())
}

fn trailer() -> impl Strategy<Value = String> {
    (token(), "[ \t]?[!-~\u{80}]{0,10}[ \t]?").prop_map(|(n, v)| format!("{n}:{v}"))
}

fn limits() -> impl Strategy<Value = BodyLimits> {
    (
        prop_oneof![Just(u64::MAX), 0u64..200, any::<u64>()],
        prop_oneof![Just(4096usize), 0usize..40],
        prop_oneof![Just(16384usize), 0usize..60],
    )
        .prop_map(|(max_body, max_chunk_line, max_trailer)| BodyLimits {
            max_body,
            max_chunk_line,
            max_trailer,
        })
}

fn splits() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        Just(vec![]),
        Just(vec![1]),
        prop::collection::vec(1usize..20, 1..8)
    ]
}

/// What the generator says the decoder must do with its encoding.
#[derive(Debug, PartialEq)]
enum Expect {
    /// The whole body: its bytes and encoded length.
    Done(Vec<u8>, usize),
    /// A huge chunk was admitted and its data is still coming: the bytes so far.
    Waiting(Vec<u8>),
    /// Refused with this error.
    Refused(HttpError),
}

/// Encodes `chunks` (cut at the first huge one), the trailers and `next`, and works out the
/// answer the decoder owes under `l`.
fn encode(
    chunks: &[Chunk],
    last: &Chunk,
    trailers: &[String],
    next: &[u8],
    l: BodyLimits,
) -> (Vec<u8>, Expect) {
    let mut enc = Vec::new();
    let mut body = Vec::new();
    let mut expect = None;
    let mut total: u64 = 0;
    let set = |e: Expect, expect: &mut Option<Expect>| {
        if expect.is_none() {
            *expect = Some(e);
        }
    };
    for c in chunks {
        let n = match &c.size {
            Size::Data(d) => d.len() as u64,
            Size::Huge(n) => *n,
        };
        let line = size_line(n, c.zeros, c.upper, &c.exts);
        if line.len() > l.max_chunk_line {
            set(
                Expect::Refused(HttpError::ChunkLineTooLarge {
                    limit: l.max_chunk_line,
                }),
                &mut expect,
            );
        }
        match total.checked_add(n) {
            Some(t) if t <= l.max_body => total = t,
            _ => set(
                Expect::Refused(HttpError::BodyTooLarge { limit: l.max_body }),
                &mut expect,
            ),
        }
        enc.extend_from_slice(line.as_bytes());
        enc.extend_from_slice(b"\r\n");
        match &c.size {
            Size::Data(d) => {
                if expect.is_none() {
                    body.extend_from_slice(d);
                }
                enc.extend_from_slice(d);
                enc.extend_from_slice(b"\r\n");
            }
            Size::Huge(_) => {
                // Its data never ends within the input: a few bytes of it, then nothing.
                enc.extend_from_slice(b"abc");
                if expect.is_none() {
                    body.extend_from_slice(b"abc");
                }
                set(Expect::Waiting(body.clone()), &mut expect);
                return (enc, expect.unwrap());
            }
        }
    }
    let line = size_line(0, last.zeros, last.upper, &last.exts);
    if line.len() > l.max_chunk_line {
        set(
            Expect::Refused(HttpError::ChunkLineTooLarge {
                limit: l.max_chunk_line,
            }),
            &mut expect,
        );
    }
    enc.extend_from_slice(line.as_bytes());
    enc.extend_from_slice(b"\r\n");
    let mut trailer_len = 0;
    for t in trailers {
        trailer_len += t.len() + 2;
        if trailer_len > l.max_trailer {
            set(
                Expect::Refused(HttpError::TrailerTooLarge {
                    limit: l.max_trailer,
                }),
                &mut expect,
            );
        }
        enc.extend_from_slice(t.as_bytes());
        enc.extend_from_slice(b"\r\n");
    }
    enc.extend_from_slice(b"\r\n");
    let used = enc.len();
    enc.extend_from_slice(next);
    (enc, expect.unwrap_or(Expect::Done(body, used)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Valid chunked bodies, huge and wrapping sizes included: the decoder's output, bytes used
    /// and refusals are the generator's, in any split, under any limits.
    #[test]
    fn chunked_bodies(
        chunks in prop::collection::vec(chunk(), 0..6),
        last in chunk(),
        trailers in prop::collection::vec(trailer(), 0..3),
        next in prop::collection::vec(any::<u8>(), 0..8),
        l in limits(),
        cuts in splits(),
    ) {
        let (input, expect) = encode(&chunks, &last, &trailers, &next, l);
        let fed = check_body(BodyFraming::Chunked, l, &input, &mut reads(&cuts));
        prop_assert!(fed.out.len() as u64 <= l.max_body);
        let got = match fed.result {
            Err(e) => Expect::Refused(e),
            Ok(()) if fed.done => Expect::Done(fed.out, fed.used),
            Ok(()) => Expect::Waiting(fed.out),
        };
        prop_assert_eq!(got, expect);
    }

    /// Any bytes (mostly chunked-looking) in any split under any limits: no panic, never more
    /// than the limit, and the reference decoder's verdict (all checked in `check_body`).
    #[test]
    fn chunked_noise(
        input in prop::collection::vec(
            prop_oneof![
                Just(b'\r'), Just(b'\n'), Just(b';'), Just(b'='), Just(b'"'), Just(b' '),
                Just(b'0'), Just(b'f'), Just(b'1'), Just(b':'), Just(b'a'), any::<u8>(),
            ],
            0..80,
        ),
        l in limits(),
        cuts in splits(),
    ) {
        check_body(BodyFraming::Chunked, l, &input, &mut reads(&cuts));
    }

    /// Content-Length and close-delimited bodies.
    #[test]
    fn length_and_close_bodies(
        n in prop_oneof![0u64..64, Just(u64::MAX), any::<u64>()],
        payload in prop::collection::vec(any::<u8>(), 0..64),
        l in limits(),
        cuts in splits(),
    ) {
        let fed = check_body(BodyFraming::Length(n), l, &payload, &mut reads(&cuts));
        if n > l.max_body {
            prop_assert_eq!(fed.result, Err(HttpError::BodyTooLarge { limit: l.max_body }));
        } else {
            let take = n.min(payload.len() as u64) as usize;
            prop_assert_eq!(&fed.out[..], &payload[..take]);
            prop_assert_eq!(fed.used, take);
            prop_assert_eq!(fed.done, take as u64 == n);
        }
        let fed = check_body(BodyFraming::Close, l, &payload, &mut reads(&cuts));
        if payload.len() as u64 > l.max_body {
            prop_assert_eq!(fed.result, Err(HttpError::BodyTooLarge { limit: l.max_body }));
        } else {
            prop_assert_eq!(fed.result, Ok(()));
            prop_assert_eq!(fed.eof, Ok(()));
            prop_assert_eq!(&fed.out, &payload);
        }
    }
}

/// A valid head: optional empty lines, a request line, fields; and what follows it.
fn head() -> impl Strategy<Value = (usize, String)> {
    let field = (token(), "[ \t]?[!-~]{0,12}").prop_map(|(n, v)| format!("{n}:{v}\r\n"));
    (
        0usize..3,
        "(GET|POST|PUT) /[a-z0-9/?=&]{0,12} HTTP/1\\.[01]",
        prop::collection::vec(field, 0..6),
    )
        .prop_map(|(empty, line, fields)| {
            (
                2 * empty,
                format!("{}{line}\r\n{}\r\n", "\r\n".repeat(empty), fields.concat()),
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// A valid head in random splits: the same span as fed whole, and the generator's.
    #[test]
    fn scanner_finds_the_same_span_in_any_split(
        (start, h) in head(),
        next in prop::collection::vec(any::<u8>(), 0..16),
        cuts in splits(),
    ) {
        let mut buf = h.clone().into_bytes();
        buf.extend_from_slice(&next);
        let whole = HeadScanner::new().scan(&buf, 1 << 20).unwrap().unwrap();
        prop_assert_eq!((whole.start, whole.end), (start, h.len()));
        let split = scan_in_reads(&buf, 1 << 20, &mut reads(&cuts)).unwrap().unwrap();
        prop_assert_eq!(split, whole);
    }

    /// A bare LF or a bare CR put into a valid head is refused on the byte that makes it bare,
    /// fed byte by byte, and never before.
    #[test]
    fn scanner_refuses_bare_lf_and_cr_at_the_first_offending_byte(
        (start, h) in head(),
        at in any::<prop::sample::Index>(),
        lf in any::<bool>(),
    ) {
        let mut buf = h.into_bytes();
        // Insert where the byte before is not a CR (so the LF is bare) and the byte there is
        // not a LF (so the CR is bare), after any skipped empty lines. The start line's first
        // byte always qualifies.
        let valid: Vec<usize> = (start..buf.len())
            .filter(|&i| (i == 0 || buf[i - 1] != b'\r') && buf[i] != b'\n')
            .collect();
        let i = valid[at.index(valid.len())];
        buf.insert(i, if lf { b'\n' } else { b'\r' });
        // A bare LF is offending itself; a bare CR is found on the byte after it.
        let offending = if lf { i } else { i + 1 };
        let mut s = HeadScanner::new();
        for k in 1..=buf.len() {
            match s.scan(&buf[..k], 1 << 20) {
                Ok(None) => prop_assert!(k <= offending, "not refused at {offending}"),
                Ok(Some(span)) => prop_assert!(false, "head found: {span:?}"),
                Err(e) => {
                    prop_assert_eq!(k, offending + 1);
                    prop_assert_eq!(e.code(), if lf { "bare_lf" } else { "bare_cr" });
                    break;
                }
            }
        }
    }

    /// Any bytes, any split, any limit: no panic, and at every read the decision of the
    /// non-incremental oracle on the same prefix (checked inside `scan_in_reads`).
    #[test]
    fn scanner_on_any_bytes(
        buf in prop::collection::vec(
            prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'a'), Just(b' '), any::<u8>()],
            0..64,
        ),
        max_head in prop_oneof![0usize..70, Just(usize::MAX)],
        cuts in splits(),
    ) {
        let got = scan_in_reads(&buf, max_head, &mut reads(&cuts));
        let want = reference_scan(&buf, max_head);
        prop_assert_eq!(got.map_err(|e| e.code()), want.map_err(|e| e.code()));
    }
}
