//! The decoder on its own: every coding round trip, each limit at / just under / just over
//! its boundary, bombs, corrupt / truncated / trailing input, header parsing.

use std::io::Write as _;

use super::*;

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn zlib(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn raw_deflate(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// zstd at level 19 with the content checksum on (as the `zstd` CLI writes frames).
fn zstd(b: &[u8]) -> Vec<u8> {
    let mut c = zstd::bulk::Compressor::new(19).unwrap();
    c.set_parameter(zstd::stream::raw::CParameter::ChecksumFlag(true))
        .unwrap();
    c.compress(b).unwrap()
}

fn enc(c: Coding, b: &[u8]) -> Vec<u8> {
    match c {
        Coding::Gzip => gzip(b),
        Coding::Deflate => zlib(b),
        Coding::Zstd => zstd(b),
    }
}

fn limits(max: u64, ratio: u32) -> Limits {
    Limits {
        max_decoded_bytes: max,
        max_expansion_ratio: ratio,
    }
}

const BIG: Limits = Limits {
    max_decoded_bytes: 1 << 30,
    max_expansion_ratio: 100_000,
};

fn body(n: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(n);
    let mut x: u32 = 0x9e37_79b9;
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        v.push(b'a' + (x % 4) as u8);
    }
    v
}

#[test]
fn every_coding_round_trips_including_raw_deflate_and_empty() {
    let b = br#"{"user_id":"alice","events":[1,2,3]}"#;
    for c in Coding::ALL {
        assert_eq!(decode(c, &enc(c, b), BIG).unwrap(), b, "{c}");
        assert_eq!(
            decode(c, &enc(c, b""), BIG).unwrap(),
            b"",
            "{c} empty stream"
        );
        assert_eq!(
            decode(c, &encode(c, b).unwrap(), BIG).unwrap(),
            b,
            "{c}: encode() is decode()'s inverse"
        );
    }
    assert_eq!(
        decode(Coding::Deflate, &raw_deflate(b), BIG).unwrap(),
        b,
        "raw deflate (no zlib header) is accepted"
    );
    assert!(is_zlib(&zlib(b)) && !is_zlib(&raw_deflate(b)));
}

#[test]
fn concatenated_gzip_members_and_zstd_frames_are_one_body() {
    let mut g = gzip(b"{\"a\":");
    g.extend(gzip(b"1}"));
    assert_eq!(decode(Coding::Gzip, &g, BIG).unwrap(), b"{\"a\":1}");
    let mut z = zstd(b"{\"a\":");
    z.extend(zstd(b"1}"));
    assert_eq!(decode(Coding::Zstd, &z, BIG).unwrap(), b"{\"a\":1}");
}

#[test]
fn trailing_garbage_is_refused() {
    for c in Coding::ALL {
        for tail in [&b"x"[..], b"\0\0\0\0", b"garbage after the end"] {
            let mut e = enc(c, b"{}");
            e.extend_from_slice(tail);
            let err = decode(c, &e, BIG).unwrap_err();
            assert_eq!(err.code(), "invalid_encoding", "{c} + {tail:?}: {err}");
        }
    }
    let mut g = gzip(b"{}");
    g.extend_from_slice(b"xyz");
    let err = decode(Coding::Gzip, &g, BIG).unwrap_err();
    assert!(err.to_string().contains("3 bytes after the end"), "{err}");
}

#[test]
fn every_truncation_is_refused_as_truncated_or_corrupt() {
    let b = body(3000);
    for c in Coding::ALL {
        let e = enc(c, &b);
        for cut in 1..e.len() {
            match decode(c, &e[..cut], BIG) {
                Err(DecodeError::Truncated { coding }) => assert_eq!(coding, c),
                Err(DecodeError::Corrupt { .. }) => {}
                other => panic!("{c} cut at {cut}/{}: {other:?}", e.len()),
            }
        }
        // A cut at the very end of the compressed data (before the trailer) says truncated.
        let err = decode(c, &e[..e.len() - 1], BIG).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::Truncated { .. } | DecodeError::Corrupt { .. }
            ),
            "{err:?}"
        );
        assert!(decode(c, &e[..e.len() / 2], BIG)
            .unwrap_err()
            .to_string()
            .contains(c.as_str()));
    }
    let err = decode(Coding::Gzip, &gzip(&b)[..100], BIG).unwrap_err();
    assert_eq!(
        err,
        DecodeError::Truncated {
            coding: Coding::Gzip
        }
    );
    let err = decode(Coding::Zstd, &zstd(&b)[..100], BIG).unwrap_err();
    assert_eq!(
        err,
        DecodeError::Truncated {
            coding: Coding::Zstd
        }
    );
}

#[test]
fn corrupt_streams_are_refused() {
    let b = body(3000);
    for c in Coding::ALL {
        let err = decode(c, b"this is not compressed at all", BIG).unwrap_err();
        assert_eq!(err.code(), "invalid_encoding", "{c}: {err}");
        // Flip bytes in the middle: corrupt data, or a CRC / checksum mismatch.
        let mut e = enc(c, &b);
        let mid = e.len() / 2;
        for x in &mut e[mid..mid + 8] {
            *x ^= 0x55;
        }
        let err = decode(c, &e, BIG).map(|v| v.len()).unwrap_err();
        assert_eq!(err.code(), "invalid_encoding", "{c}: {err}");
    }
    // gzip's CRC-32 and ISIZE are checked.
    let mut g = gzip(&b);
    let n = g.len();
    g[n - 8] ^= 1;
    assert!(matches!(
        decode(Coding::Gzip, &g, BIG),
        Err(DecodeError::Corrupt { .. })
    ));
}

#[test]
fn max_decoded_bytes_at_just_under_and_just_over() {
    let b = body(10_000);
    for c in Coding::ALL {
        let e = enc(c, &b);
        let n = b.len() as u64;
        assert_eq!(decode(c, &e, limits(n, 100_000)).unwrap(), b, "{c} at");
        assert_eq!(
            decode(c, &e, limits(n + 1, 100_000)).unwrap(),
            b,
            "{c} under"
        );
        let err = decode(c, &e, limits(n - 1, 100_000)).unwrap_err();
        assert_eq!(
            err,
            DecodeError::TooLarge {
                coding: c,
                limit: n - 1
            },
            "{c} over"
        );
        assert_eq!(err.code(), "decoded_body_too_large");
        assert!(err
            .to_string()
            .contains(&format!("max_decoded_bytes ({} bytes)", n - 1)));
    }
}

#[test]
fn max_expansion_ratio_at_just_under_and_just_over() {
    // A body of `ratio * encoded` bytes exactly: find one by padding the JSON.
    for c in Coding::ALL {
        let b = vec![b'a'; 50_000];
        let e = enc(c, &b);
        let n = b.len() as u64;
        let enc_len = e.len() as u64;
        // Ratio r allows r * enc_len bytes: at the first r with r * enc_len >= n it passes.
        let r = n.div_ceil(enc_len) as u32;
        assert_eq!(
            decode(c, &e, limits(1 << 30, r)).unwrap(),
            b,
            "{c} ratio {r}"
        );
        assert_eq!(
            decode(c, &e, limits(1 << 30, r + 1)).unwrap(),
            b,
            "{c} under"
        );
        let err = decode(c, &e, limits(1 << 30, r - 1)).unwrap_err();
        assert_eq!(
            err,
            DecodeError::RatioExceeded {
                coding: c,
                ratio: r - 1,
                encoded: enc_len,
                limit: u64::from(r - 1) * enc_len,
            },
            "{c} over"
        );
        assert_eq!(err.code(), "expansion_ratio_exceeded");
    }
}

#[test]
fn the_ratio_cap_meets_max_decoded_bytes_exactly() {
    // ratio * encoded == max_decoded_bytes: both allow the same bytes; the named limit is
    // max_decoded_bytes.
    let b = vec![b'a'; 10_000];
    let e = gzip(&b);
    let enc_len = e.len() as u64;
    let ratio = 20u32;
    let cap = enc_len * u64::from(ratio);
    assert!(cap < b.len() as u64);
    let err = decode(Coding::Gzip, &e, limits(cap, ratio)).unwrap_err();
    assert_eq!(
        err,
        DecodeError::TooLarge {
            coding: Coding::Gzip,
            limit: cap
        }
    );
    let err = decode(Coding::Gzip, &e, limits(cap + 1, ratio)).unwrap_err();
    assert!(matches!(err, DecodeError::RatioExceeded { limit, .. } if limit == cap));
}

#[test]
fn bombs_stop_at_the_cap_without_allocating_the_decoded_size() {
    // 16 MiB of zeros compresses to ~16 KiB of gzip and well under 1 KiB of zstd.
    let zeros = vec![0u8; 16 << 20];
    for c in Coding::ALL {
        let bomb = enc(c, &zeros);
        assert!(bomb.len() < 32 * 1024, "{c}: {}", bomb.len());
        let l = limits(1 << 20, 100_000);
        let mut sink = Sink::new(c, bomb.len(), l);
        let r = match c {
            Coding::Gzip => gunzip(&bomb, &mut sink),
            Coding::Deflate => inflate(&mut Decompress::new(true), &bomb, &mut sink).map(|_| ()),
            Coding::Zstd => unzstd(&bomb, &mut sink),
        };
        assert_eq!(
            r.unwrap_err(),
            DecodeError::TooLarge {
                coding: c,
                limit: 1 << 20
            }
        );
        assert!(
            sink.out.capacity() <= (1 << 20) + 1,
            "{c}: the output grew to {} bytes",
            sink.out.capacity()
        );
    }
}

/// A streamed zstd frame (no content size, so the window is in the header) with window log
/// `log` holding 1000 bytes.
fn zstd_windowed(log: u32) -> Vec<u8> {
    let mut w = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    w.set_parameter(zstd::stream::raw::CParameter::WindowLog(log))
        .unwrap();
    w.include_contentsize(false).unwrap();
    w.write_all(&body(1000)).unwrap();
    w.finish().unwrap()
}

#[test]
fn a_zstd_frame_asking_for_a_window_over_8_mib_is_refused() {
    // 2^22 (under) and 2^23 = 8 MiB (at) decode; 2^24 (just over) and 2^27 are refused
    // before the window is allocated, with the limit named.
    for log in [22, ZSTD_WINDOW_LOG_MAX] {
        assert_eq!(
            decode(Coding::Zstd, &zstd_windowed(log), BIG).unwrap(),
            body(1000),
            "window log {log}"
        );
    }
    for log in [ZSTD_WINDOW_LOG_MAX + 1, 27] {
        let err = decode(Coding::Zstd, &zstd_windowed(log), BIG).unwrap_err();
        assert_eq!(err.code(), "invalid_encoding", "{log}: {err}");
        assert!(err.to_string().contains("8 MiB"), "{log}: {err}");
    }
}

/// A hand-made zstd frame: frame header descriptor `fhd`, then (without Single_Segment) a
/// 1 KiB window descriptor, an 8-byte Frame_Content_Size of `declared`, and one raw last block
/// holding `data`.
fn forged_zstd(fhd: u8, declared: u64, data: &[u8]) -> Vec<u8> {
    let mut f = vec![0x28, 0xb5, 0x2f, 0xfd, fhd];
    if fhd & 0x20 == 0 {
        f.push(0x00);
    }
    f.extend_from_slice(&declared.to_le_bytes());
    let block = 1u32 | ((data.len() as u32) << 3);
    f.extend_from_slice(&block.to_le_bytes()[..3]);
    f.extend_from_slice(data);
    f
}

#[test]
fn a_zstd_content_size_is_not_trusted() {
    // Declared exactly: decodes.
    assert_eq!(
        decode(Coding::Zstd, &forged_zstd(0xc0, 2, b"{}"), BIG).unwrap(),
        b"{}"
    );
    // Declared 2^40 bytes (1 TiB) with 2 bytes inside: nothing of the declared size is
    // allocated; the frame fails its own size check.
    let err = decode(Coding::Zstd, &forged_zstd(0xc0, 1 << 40, b"{}"), BIG).unwrap_err();
    assert_eq!(err.code(), "invalid_encoding", "{err}");
    // Single segment: the declared size is the window, over 8 MiB: refused up front.
    let err = decode(Coding::Zstd, &forged_zstd(0xe0, 1 << 40, b"{}"), BIG).unwrap_err();
    assert_eq!(err.code(), "invalid_encoding", "{err}");
    // Declared small, content larger than relay's cap: capped by relay, not by the frame.
    let err = decode(
        Coding::Zstd,
        &forged_zstd(0xc0, 4, &[b'a'; 100]),
        limits(50, 100),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            DecodeError::TooLarge { limit: 50, .. } | DecodeError::Corrupt { .. }
        ),
        "{err:?}"
    );
}

#[test]
fn headers_parse_to_one_coding() {
    let p = |vs: &[&str]| parse(vs.iter().map(|v| v.as_bytes()));
    assert_eq!(p(&[]), Ok(None));
    assert_eq!(p(&["identity"]), Ok(None));
    assert_eq!(p(&[""]), Ok(None));
    assert_eq!(p(&["gzip"]), Ok(Some(Coding::Gzip)));
    assert_eq!(p(&["X-GZIP"]), Ok(Some(Coding::Gzip)));
    assert_eq!(p(&[" Deflate "]), Ok(Some(Coding::Deflate)));
    assert_eq!(p(&["zstd"]), Ok(Some(Coding::Zstd)));
    assert_eq!(p(&["identity, gzip"]), Ok(Some(Coding::Gzip)));
    assert_eq!(p(&["gzip", "identity"]), Ok(Some(Coding::Gzip)));
    for bad in ["br", "compress", "gzip;q=1", "*", "gzip zstd"] {
        let e = p(&[bad]).unwrap_err();
        assert_eq!(e.code(), "unsupported_content_encoding", "{bad}");
        assert!(e.to_string().contains("gzip, deflate, zstd"), "{e}");
    }
    let e = p(&["gzip, zstd"]).unwrap_err();
    assert!(matches!(e, DecodeError::Stacked { count: 2, .. }), "{e:?}");
    let e = p(&["gzip", "gzip"]).unwrap_err();
    assert!(matches!(e, DecodeError::Stacked { count: 2, .. }), "{e:?}");
    let long = "x".repeat(500);
    let e = p(&[&long]).unwrap_err();
    assert!(e.to_string().len() < 300, "the echo is bounded: {e}");
}

#[test]
fn limits_default_to_the_server_body_limit_and_ratio_100() {
    assert_eq!(
        Limits::resolve(None, None, 1 << 20),
        limits(1 << 20, config::DEFAULT_MAX_EXPANSION_RATIO)
    );
    assert_eq!(Limits::resolve(Some(5), Some(7), 1 << 20), limits(5, 7));
    let mut p = crate::problems::Problems::default();
    config::validate(Some(0), Some(0), "routes[0]", &mut p);
    config::validate(
        Some(config::MAX_DECODED_BYTES_LIMIT + 1),
        Some(config::MAX_EXPANSION_RATIO_LIMIT + 1),
        "routes[1]",
        &mut p,
    );
    config::validate(
        Some(config::MAX_DECODED_BYTES_LIMIT),
        Some(1),
        "routes[2]",
        &mut p,
    );
    let fields: Vec<String> = p.0.into_iter().map(|e| e.field).collect();
    assert_eq!(
        fields,
        [
            "routes[0].max_decoded_bytes",
            "routes[0].max_expansion_ratio",
            "routes[1].max_decoded_bytes",
            "routes[1].max_expansion_ratio",
        ]
    );
}

#[test]
fn relay_check_names_bad_route_options() {
    let base = r#"
[server]
listen = "127.0.0.1:8080"

[[upstreams]]
name = "tracking"
nodes = ["127.0.0.1:9000"]

[[routes]]
name = "app-logs"
path = "/v1/logs"
upstream = "tracking"
"#;
    let path = std::path::Path::new("relay.toml");
    let c = crate::config::Config::from_toml(base, path).unwrap();
    assert_eq!(c.routes[0].forward_encoding, ForwardEncoding::Identity);
    assert_eq!(c.routes[0].max_decoded_bytes, None);
    let ok = format!(
        "{base}max_decoded_bytes = 2000\nmax_expansion_ratio = 10\nforward_encoding = \"same\"\n"
    );
    let c = crate::config::Config::from_toml(&ok, path).unwrap();
    let r = &c.routes[0];
    assert_eq!(
        (
            r.max_decoded_bytes,
            r.max_expansion_ratio,
            r.forward_encoding
        ),
        (Some(2000), Some(10), ForwardEncoding::Same)
    );
    assert!(c
        .to_effective_toml()
        .contains("forward_encoding = \"same\""));
    let bad = format!("{base}max_decoded_bytes = 0\nmax_expansion_ratio = 0\n");
    let e = crate::config::Config::from_toml(&bad, path).unwrap_err();
    let fields: Vec<&str> = e.errors.iter().map(|f| f.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "routes[0].max_decoded_bytes",
            "routes[0].max_expansion_ratio"
        ],
        "{e}"
    );
    assert!(e.to_string().contains("set 1 to 268435456 bytes"), "{e}");
    let bad = format!("{base}forward_encoding = \"gzip\"\n");
    let e = crate::config::Config::from_toml(&bad, path).unwrap_err();
    assert!(e.to_string().contains("forward_encoding"), "{e}");
}

mod properties {
    use proptest::prelude::*;

    use super::super::*;
    use super::{enc, limits};

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any bytes under any coding: an answer (never a panic), and never more than the cap.
        #[test]
        fn arbitrary_input_is_answered_within_the_cap(
            body in proptest::collection::vec(any::<u8>(), 0..2048),
            max in 1u64..4096,
            ratio in 1u32..64,
        ) {
            for c in Coding::ALL {
                if let Ok(out) = decode(c, &body, limits(max, ratio)) {
                    prop_assert!(out.len() as u64 <= max);
                    prop_assert!(out.len() as u64 <= body.len() as u64 * u64::from(ratio));
                }
            }
        }

        /// Whatever is encoded decodes back, exactly, when it fits the limits; else it is
        /// refused by a limit, never cut short.
        #[test]
        fn encoded_bodies_decode_back_or_hit_a_limit(
            data in proptest::collection::vec(any::<u8>(), 0..4096),
            max in 1u64..8192,
        ) {
            for c in Coding::ALL {
                let e = enc(c, &data);
                match decode(c, &e, limits(max, 1000)) {
                    Ok(out) => prop_assert_eq!(out, data.clone()),
                    Err(err) => {
                        prop_assert!(
                            matches!(err, DecodeError::TooLarge { .. } | DecodeError::RatioExceeded { .. }),
                            "{c}: {err:?}"
                        );
                        prop_assert!(data.len() as u64 > max.min(e.len() as u64 * 1000));
                    }
                }
            }
        }
    }
}

#[test]
fn the_reused_zstd_context_starts_clean_after_every_refusal() {
    // One thread, one context: a body refused mid-frame (truncated, over the cap, corrupt,
    // a too-large window) must leave nothing behind for the next body, and the window limit
    // must survive the reset.
    let good = body(5000);
    let frame = zstd(&good);
    let bomb = zstd(&vec![0u8; 4 << 20]);
    let mut corrupt = frame.clone();
    let mid = corrupt.len() / 2;
    corrupt[mid] ^= 0xff;
    let refusals: [(&[u8], Limits); 4] = [
        (&frame[..frame.len() - 7], BIG),
        (&bomb, limits(1 << 20, 100_000)),
        (&corrupt, BIG),
        (&zstd_windowed(ZSTD_WINDOW_LOG_MAX + 1), BIG),
    ];
    for (i, (bad, l)) in refusals.into_iter().enumerate() {
        assert!(decode(Coding::Zstd, bad, l).is_err(), "refusal {i}");
        assert_eq!(
            decode(Coding::Zstd, &frame, BIG).unwrap(),
            good,
            "after refusal {i}"
        );
        let err = decode(Coding::Zstd, &zstd_windowed(ZSTD_WINDOW_LOG_MAX + 1), BIG).unwrap_err();
        assert!(
            err.to_string().contains("8 MiB"),
            "after refusal {i}: {err}"
        );
    }
}
