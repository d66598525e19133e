//! JSONTestSuite's 318 `test_parsing` files (byte-exact, `tests/data/JSONTestSuite/`) through
//! both engines, under each fuzz policy (`relay_scrub::fuzzing::policies`), in three framings:
//!
//! - the file as an `application/json` body;
//! - the file as line 2 of an NDJSON body between two valid events with PII
//!   (`{"user_id":"u-1"}` LF file LF `{"device_id":"d-1"}` LF);
//! - the file as the value of a PII member: `{"user_id":` file `}`.
//!
//! Every run goes through `relay_scrub::fuzzing::check_engines` (the fuzz target's check: simd
//! engine = walker = auto, output within its growth limit, output re-accepted), so the simd
//! engine and the walker give identical output or identical refusals on every file. On top:
//! every `y_` is accepted and every `n_` refused, with the exceptions listed in [`expect`] (each
//! with its reason); the `i_` files get the outcome relay documents for them (strict RFC 8259 on
//! UTF-8: lone surrogate escapes, invalid UTF-8 and a BOM refused; any number RFC 8259's grammar
//! allows accepted, whatever its size), and every `i_` result is printed
//! (`cargo test -p relay-scrub --test json_test_suite -- --nocapture`).

use std::path::{Path, PathBuf};

use relay_scrub::fuzzing::{check_engines, compare_engines, policies, MEDIA_TYPES};
use relay_scrub::{Engine, ScrubError};

fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/JSONTestSuite/test_parsing")
}

/// Every file of the suite, by name, sorted.
fn suite() -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(suite_dir())
        .expect("tests/data/JSONTestSuite/test_parsing is vendored")
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            (name, std::fs::read(e.path()).unwrap())
        })
        .collect();
    files.sort();
    files
}

/// What a framing of a file must give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Accept,
    /// Refused with this `code`.
    Refuse(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Json,
    NdjsonLine,
    PiiMember,
}

const NDJSON_HEAD: &[u8] = b"{\"user_id\":\"u-1\"}\n";
const NDJSON_TAIL: &[u8] = b"\n{\"device_id\":\"d-1\"}\n";

fn frame(f: Framing, file: &[u8]) -> (Option<&'static str>, Vec<u8>) {
    match f {
        Framing::Json => (MEDIA_TYPES[0], file.to_vec()),
        Framing::NdjsonLine => (MEDIA_TYPES[2], [NDJSON_HEAD, file, NDJSON_TAIL].concat()),
        Framing::PiiMember => (MEDIA_TYPES[0], [b"{\"user_id\":", file, b"}"].concat()),
    }
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Whether the file's JSON text has a line feed inside it (before its last non-whitespace
/// byte): as an NDJSON line it then splits into two lines.
fn lf_inside(file: &[u8]) -> bool {
    let end = file.iter().rposition(|&b| !is_ws(b)).map_or(0, |p| p + 1);
    file[..end].contains(&b'\n')
}

/// The outcome relay documents for each `i_` file (the suite leaves them to the parser).
fn expect_i(name: &str, file: &[u8]) -> Want {
    if std::str::from_utf8(file).is_err() {
        // The UTF-16 files, invalid and overlong UTF-8 sequences, an encoded surrogate, a code
        // point beyond U+10FFFF, Latin-1: relay reads UTF-8 only.
        return Want::Refuse("invalid_utf8");
    }
    if name.starts_with("i_number_") {
        // RFC 8259's grammar allows any size; relay forwards numbers as spelled.
        return Want::Accept;
    }
    if name.contains("surrogate") {
        // A `\u` escape of a lone or misordered surrogate names no character.
        return Want::Refuse("invalid_json");
    }
    match name {
        // 500 levels: beyond every policy's max_depth (64 by default).
        "i_structure_500_nested_arrays.json" => Want::Refuse("too_deep"),
        // RFC 8259 §8.1: a BOM must not be added; relay refuses it rather than strip it.
        "i_structure_UTF-8_BOM_empty_object.json" => Want::Refuse("invalid_json"),
        _ => panic!("no expectation for {name}: add one"),
    }
}

/// The deepest nesting of brackets the file opens (outside strings), whether or not they close.
fn nesting(file: &[u8]) -> usize {
    let (mut depth, mut max, mut in_str, mut esc) = (0usize, 0usize, false, false);
    for &b in file {
        match (in_str, esc, b) {
            (true, true, _) => esc = false,
            (true, false, b'\\') => esc = true,
            (true, false, b'"') => in_str = false,
            (true, false, _) => {}
            (false, _, b'"') => in_str = true,
            (false, _, b'[' | b'{') => {
                depth += 1;
                max = max.max(depth);
            }
            (false, _, b']' | b'}') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// The policy's depth limit applied to an expectation: a valid text nested deeper than
/// `max_depth` (4 for fuzz policy 2, else 64) must be refused `too_deep`; an invalid one is
/// refused `too_deep` instead of `invalid_json` when the walk reaches that depth before the
/// syntax error (`got` says which came first).
fn depth_limited(want: Want, file: &[u8], framing: Framing, policy: usize, got: &Want) -> Want {
    let limit = if policy == 2 { 4 } else { 64 };
    let levels = nesting(file) + usize::from(framing == Framing::PiiMember);
    match want {
        Want::Accept if levels > limit => Want::Refuse("too_deep"),
        Want::Refuse("invalid_json") if levels > limit && *got == Want::Refuse("too_deep") => {
            Want::Refuse("too_deep")
        }
        _ => want,
    }
}

/// What `framing` of file `name` must give under a policy with `max_depth` levels.
fn expect(name: &str, file: &[u8], framing: Framing) -> Want {
    let utf8 = std::str::from_utf8(file).is_ok();
    let blank = file.iter().all(|&b| is_ws(b));
    let bare = match &name[..2] {
        "y_" => Want::Accept,
        // The one n_ file relay accepts as a body: the empty file. A zero-length body is no body
        // (a GET beacon carries its PII in the query) and is forwarded as is, nothing to parse.
        "n_" if file.is_empty() => Want::Accept,
        "n_" if !utf8 => Want::Refuse("invalid_utf8"),
        "n_" if blank => Want::Refuse("empty_body"),
        "n_" => Want::Refuse("invalid_json"),
        "i_" => expect_i(name, file),
        _ => panic!("not a test_parsing file: {name}"),
    };
    match framing {
        Framing::Json => bare,
        Framing::NdjsonLine => match bare {
            // A blank line between events is skipped (NDJSON), so the empty and the one-space
            // n_ files are accepted here: the batch holds the two framing events.
            _ if blank => Want::Accept,
            // The text's own line feed splits it: its first line is not a whole JSON value.
            Want::Accept if lf_inside(file) => Want::Refuse("invalid_json"),
            other => other,
        },
        Framing::PiiMember => match bare {
            // The empty and blank files leave `{"user_id":}`: no value.
            _ if blank => Want::Refuse("invalid_json"),
            // The member's object adds one level, still under the default limit.
            other => other,
        },
    }
}

fn outcome(r: &Result<(Vec<u8>, u64), ScrubError>) -> Want {
    match r {
        Ok(_) => Want::Accept,
        Err(e) => Want::Refuse(e.code),
    }
}

#[test]
fn the_suite_is_vendored_whole_and_byte_exact() {
    let files = suite();
    let count = |p: &str| files.iter().filter(|(n, _)| n.starts_with(p)).count();
    assert_eq!(
        (files.len(), count("y_"), count("n_"), count("i_")),
        (318, 95, 188, 35)
    );
    // The files the npm copy had mangled hold their raw bytes again (no U+FFFD anywhere).
    let fffd = "\u{fffd}".as_bytes();
    for (name, b) in &files {
        assert!(
            !b.windows(3).any(|w| w == fffd),
            "{name} holds U+FFFD: restore its bytes (tests/data/JSONTestSuite/README.md)"
        );
    }
    let not_utf8 = files
        .iter()
        .filter(|(_, b)| std::str::from_utf8(b).is_err())
        .count();
    assert_eq!(not_utf8, 25, "the 25 files restored by hand");
    let get = |n: &str| &files.iter().find(|(m, _)| m == n).unwrap().1;
    assert_eq!(get("n_structure_single_eacute.json"), b"\xe9");
    assert_eq!(
        get("i_string_UTF-16LE_with_BOM.json"),
        b"\xff\xfe[\x00\"\x00\xe9\x00\"\x00]\x00"
    );
    assert_eq!(
        get("n_string_invalid_utf8_after_escape.json"),
        b"[\"\\\xe5\"]"
    );
}

#[test]
fn every_file_agrees_between_engines_and_meets_its_expectation() {
    let files = suite();
    let scrubbers = policies();
    let mut i_report = Vec::new();
    let mut simd_fallbacks = Vec::new();
    let mut runs = 0u32;
    for (name, file) in &files {
        for framing in [Framing::Json, Framing::NdjsonLine, Framing::PiiMember] {
            let (ct, body) = frame(framing, file);
            let want = expect(name, file, framing);
            for (p, s) in scrubbers.iter().enumerate() {
                let got = compare_engines(s, ct, &body);
                // The fuzz target's whole check (auto engine, growth limit, re-scrub) as well.
                let sel = p as u8
                    | if framing == Framing::NdjsonLine {
                        0x80
                    } else {
                        0
                    };
                check_engines(&[&[sel][..], &body].concat());
                runs += 1;
                let want = depth_limited(want, file, framing, p, &outcome(&got));
                assert_eq!(
                    outcome(&got),
                    want,
                    "{name} ({framing:?}, policy {p}): {got:?}"
                );
                if let Ok((out, n)) = &got {
                    check_accepted(name, file, &body, framing, p, out, *n);
                }
                if let Err(e) = &got {
                    check_refusal(name, framing, e);
                }
                if name.starts_with("y_") && framing == Framing::Json && p == 0 {
                    let simd = s.clone().with_engine(Engine::Simd);
                    if simd.scrub_body_simd_only(ct, &body).is_none() && !body.is_empty() {
                        simd_fallbacks.push(name.clone());
                    }
                }
            }
            if name.starts_with("i_") && framing == Framing::Json {
                let r = compare_engines(&scrubbers[0], ct, &body);
                i_report.push(format!(
                    "{name}: {}",
                    match r {
                        Ok(_) => "accepted".to_string(),
                        Err(e) => format!("refused {} {}: {}", e.status, e.code, e.message),
                    }
                ));
            }
        }
    }
    eprintln!("JSONTestSuite i_ files (application/json, both engines identical):");
    for l in &i_report {
        eprintln!("  {l}");
    }
    eprintln!(
        "{runs} runs over {} files, 3 framings, {} policies: engines identical; y_ files the simd engine handed to the walker: {simd_fallbacks:?}",
        files.len(),
        scrubbers.len()
    );
    assert_eq!(i_report.len(), 35);
    // simd-json accepts every y_ file by itself: none is handed to the walker.
    assert!(simd_fallbacks.is_empty(), "{simd_fallbacks:?}");
}

/// An accepted framing: the output is what relay forwards.
fn check_accepted(
    name: &str,
    file: &[u8],
    body: &[u8],
    framing: Framing,
    policy: usize,
    out: &[u8],
    n: u64,
) {
    let ctx = format!("{name} ({framing:?}, policy {policy})");
    let trimmed = file
        .iter()
        .position(|&b| !is_ws(b))
        .map_or(&file[..0], |s| {
            &file[s..file.iter().rposition(|&b| !is_ws(b)).unwrap() + 1]
        });
    match (framing, policy) {
        // Policy 3 matches nothing: the body is forwarded as sent.
        (_, 3) => assert_eq!((out, n), (body, 0), "{ctx}"),
        (Framing::Json, 0 | 1) => {
            // No suite file has a member these policies hash: copied unchanged.
            assert_eq!((out, n), (file, 0), "{ctx}: changed");
        }
        (Framing::NdjsonLine, 0 | 1) => {
            // The two framing events are hashed, the file's line is copied as sent.
            assert_eq!(n, 2, "{ctx}");
            let line2 = &out[out.iter().position(|&b| b == b'\n').unwrap() + 1..];
            assert!(line2.starts_with(file), "{ctx}: line 2 changed");
        }
        (Framing::PiiMember, 0 | 1) => {
            // The whole value is one pseudonym (the whitespace around it copied); `null` is
            // left alone and not counted.
            if trimmed == b"null" {
                assert_eq!((out, n), (body, 0), "{ctx}");
            } else {
                assert_eq!(n, 1, "{ctx}");
                let ws = file.len() - trimmed.len();
                assert_eq!(out.len(), "{\"user_id\":\"\"}".len() + 64 + ws, "{ctx}");
                assert!(
                    out[11..].iter().filter(|&&b| b == b'"').count() == 2,
                    "{ctx}: {:?}",
                    String::from_utf8_lossy(out)
                );
            }
        }
        _ => {}
    }
}

/// A refusal says where: NDJSON refusals of the file's line name line 2.
fn check_refusal(name: &str, framing: Framing, e: &ScrubError) {
    assert!(!e.message.is_empty() && e.status == 400, "{name}: {e:?}");
    if framing == Framing::NdjsonLine && matches!(e.code, "invalid_json" | "too_deep") {
        assert!(
            e.message.contains("line 2 "),
            "{name} as NDJSON line 2: {}",
            e.message
        );
    }
}
