//! The engine comparison shared by the cargo-fuzz target `scrub` (`fuzz/fuzz_targets/scrub.rs`)
//! and the corpus replay on stable (`relay-scrub/tests/fuzz_corpus.rs`), and used by the
//! JSONTestSuite test.
//!
//! Compiled only with the `fuzzing` cargo feature, which relay never enables: the fuzz crate
//! depends on relay-scrub with `features = ["fuzzing"]`, and relay-scrub's own tests get it
//! through a dev-dependency of the crate on itself, so a corpus file means the same thing to
//! libFuzzer and to `cargo test`.
//!
//! Input layout: the first byte `sel` picks the policy (`sel % 4`, see [`policies`]) and the
//! Content-Type (`sel >> 6`, see [`MEDIA_TYPES`]: bit 7 set is NDJSON, clear is JSON); the rest
//! is the body. [`check_engines`] panics when
//!
//! - the simd engine and the walker disagree: different output bytes or count, different
//!   captures of the [`capture_spec`] members (routing values), or different refusals (code, status and message), or one accepts what the other refuses;
//! - [`Engine::Auto`] answers differently from the walker;
//! - an accepted body's output is not itself accepted by the walker (pseudonyms are quoted hex,
//!   so scrubbing never breaks the JSON), or a body without any PII rule match changes;
//! - the output is longer than [`max_output_len`] allows for its input and count (each hashed
//!   value of at least one byte becomes one quoted 64-digit pseudonym; nothing else grows).

use std::sync::OnceLock;

use crate::hashing::HEX_LEN;
use crate::{
    CaptureSpec, Captures, Engine, HashAlgorithm, KeyCase, KvPairConfig, PiiPolicyConfig, Scrubber,
};

/// The root members every comparison also captures (routing values): a PII field (captured
/// raw), names the generators write escaped, cased or as containers, and one never present.
pub fn capture_spec() -> &'static CaptureSpec {
    static S: OnceLock<CaptureSpec> = OnceLock::new();
    S.get_or_init(|| {
        CaptureSpec::new(&[
            "user_id",
            "a",
            "name",
            "events",
            "k\"q",
            "é",
            "event",
            "key",
            "never-present",
        ])
        .expect("a valid capture spec")
    })
}

/// The Content-Types a fuzz input picks from by `sel >> 6`: JSON (named, and absent, which
/// relay treats as JSON), NDJSON (two spellings, one with a charset parameter).
pub const MEDIA_TYPES: [Option<&str>; 4] = [
    Some("application/json"),
    None,
    Some("application/x-ndjson"),
    Some("application/jsonl; charset=utf-8"),
];

/// The longest output (bytes) a scrub of `input_len` bytes that hashed `hashed` values may give:
/// each hashed value (at least one byte: `1`, `""` is two) is replaced by its pseudonym, a quoted
/// 64-digit hex string ([`HEX_LEN`] + 2 bytes), and every other byte is copied once.
pub fn max_output_len(input_len: usize, hashed: u64) -> usize {
    let per_value = HEX_LEN + 2 - 1;
    input_len
        .saturating_add(usize::try_from(hashed).map_or(usize::MAX, |n| n.saturating_mul(per_value)))
}

/// The policies the fuzz input picks from: fields and paths; the same with insensitive keys and
/// OTLP-style key/value pairs; a shallow one (`max_depth = 4`) on other names; one that matches
/// nothing (output must equal input).
pub fn policies() -> &'static [Scrubber; 4] {
    static P: OnceLock<[Scrubber; 4]> = OnceLock::new();
    P.get_or_init(|| {
        let base = PiiPolicyConfig {
            fields: vec!["user_id".into(), "device_id".into(), "order_no".into()],
            paths: vec![
                "user.id".into(),
                "events[].device.id".into(),
                "tags[]".into(),
            ],
            hash: HashAlgorithm::Sha256,
            ..PiiPolicyConfig::default()
        };
        let options = PiiPolicyConfig {
            key_case: KeyCase::Insensitive,
            kv_pairs: vec![KvPairConfig {
                key: "key".into(),
                value: "value".into(),
            }],
            ..base.clone()
        };
        let shallow = PiiPolicyConfig {
            fields: vec!["name".into(), "a".into()],
            paths: vec![],
            max_depth: 4,
            ..base.clone()
        };
        let none = PiiPolicyConfig {
            fields: vec!["\u{1}never-a-key".into()],
            paths: vec![],
            ..base.clone()
        };
        [base, options, shallow, none]
            .map(|p| Scrubber::new(&p, None).expect("the fuzz policies are valid"))
    })
}

/// Runs one fuzz input (layout in the module docs) through both engines; panics on any
/// disagreement.
pub fn check_engines(data: &[u8]) {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let ct = MEDIA_TYPES[usize::from(sel >> 6)];
    let idx = usize::from(sel % 4);
    let s = &policies()[idx];
    let walker = compare_engines(s, ct, body);
    let auto = s.clone().with_engine(Engine::Auto);
    let a = auto.scrub_body_capturing(ct, None, body, capture_spec());
    let walker_captures = s
        .clone()
        .with_engine(Engine::Walker)
        .scrub_body_capturing(ct, None, body, capture_spec())
        .map(|x| x.captures);
    match (&walker, &a) {
        (Ok((wb, wn)), Ok(x)) => {
            assert_eq!(*wb, x.body, "auto output differs from the walker");
            assert_eq!(*wn, x.fields_hashed, "auto count differs from the walker");
            assert_eq!(
                walker_captures.as_ref().ok(),
                Some(&x.captures),
                "auto captures differ from the walker"
            );
        }
        (Err(w), Err(x)) => assert_eq!(w, x, "auto refusal differs from the walker"),
        _ => panic!("auto and the walker disagree: walker {walker:?}, auto {a:?}"),
    }
    if let Ok((out, n)) = &walker {
        assert!(
            out.len() <= max_output_len(body.len(), *n),
            "the output grew past its limit: {} bytes from {} with {n} values hashed",
            out.len(),
            body.len()
        );
        let again = s
            .clone()
            .with_engine(Engine::Walker)
            .scrub_body(ct, None, out);
        assert!(
            again.is_ok() || out.is_empty(),
            "the scrubbed output is refused: {again:?}"
        );
        if idx == 3 {
            assert_eq!(*n, 0, "a policy matching nothing hashed something");
            assert_eq!(
                out.as_slice(),
                body,
                "a policy matching nothing changed the body"
            );
        }
    }
}

/// Scrubs `body` (Content-Type `ct`, `None` for absent) with the walker and with the simd engine (forced, so its
/// fallback decision is exercised too) and panics unless both give the same output and count or
/// the same refusal; returns the walker's result as `(output, count)`.
pub fn compare_engines(
    s: &Scrubber,
    ct: Option<&str>,
    body: &[u8],
) -> Result<(Vec<u8>, u64), crate::ScrubError> {
    let walker = s.clone().with_engine(Engine::Walker);
    let simd = s.clone().with_engine(Engine::Simd);
    let a = walker.scrub_body_capturing(ct, None, body, capture_spec());
    let b = simd.scrub_body_capturing(ct, None, body, capture_spec());
    match (&a, &b) {
        (Ok(x), Ok(y)) => {
            assert_eq!(
                x.body,
                y.body,
                "output differs for {:?}",
                String::from_utf8_lossy(body)
            );
            assert_captures_eq(&x.captures, &y.captures, body);
            assert_eq!(
                x.fields_hashed,
                y.fields_hashed,
                "count differs for {:?}",
                String::from_utf8_lossy(body)
            );
        }
        (Err(x), Err(y)) => assert_eq!(
            x,
            y,
            "refusals differ for {:?}",
            String::from_utf8_lossy(body)
        ),
        _ => panic!(
            "one engine accepted, the other refused: walker {:?}, simd {:?}, body {:?}",
            a.as_ref().err(),
            b.as_ref().err(),
            String::from_utf8_lossy(body)
        ),
    }
    a.map(|x| (x.body, x.fields_hashed))
}

/// Panics unless both engines captured the same events and values.
pub fn assert_captures_eq(walker: &Captures, simd: &Captures, body: &[u8]) {
    assert_eq!(
        walker,
        simd,
        "captures differ for {:?}",
        String::from_utf8_lossy(body)
    );
}
