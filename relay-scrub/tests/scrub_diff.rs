//! Differential test of the two engines: for seeded random documents (random depth, escaped and
//! duplicate keys, unicode, every number spelling, structural characters inside strings, NDJSON
//! batches with a bad line, and random mutations of all of these), the simd engine and the strict
//! walker give identical output (bytes and count) and identical captures of the routing members
//! (`relay_scrub::fuzzing::capture_spec`) or identical refusals (code, status, message).
//! 200,000 documents by default (`RELAY_DIFF_CASES`, `RELAY_DIFF_SEED` override).
//!
//! Also a few hand-written cases in the style of JSONTestSuite's `y_` (must accept), `n_` (must
//! refuse) and `i_` (implementation-defined: the engines must agree), each alone and as the
//! value of a PII member, for what the suite lacks (relay's depth limit, PII members around each
//! shape, a few more traps). The suite itself (318 files, byte-exact) runs in
//! `tests/json_test_suite.rs`; [`hand_written_cases_are_not_in_the_suite`] keeps the two apart.

use relay_scrub::{Engine, Scrubber};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
}

const KEYS: &[&str] = &[
    "user_id",
    "device_id",
    "order_no",
    "User_ID",
    "DEVICE_ID",
    "key",
    "value",
    "Key",
    "attributes",
    "user",
    "id",
    "events",
    "device",
    "tags",
    "name",
    "a",
    "b",
    "",
    "é",
    "😀",
    "\\u0075ser_id",
    "user\\u005fid",
    "k\\\"q",
    "tab\\tkey",
    "{[,:]}",
];

const STR_PIECES: &[&str] = &[
    "u-1",
    "plain text",
    "é",
    "😀",
    "\\\"",
    "\\\\",
    "\\/",
    "\\b\\f\\n\\r\\t",
    "\\u00e9",
    "\\ud83d\\ude00",
    "\\u0000",
    "{}[],:",
    "user_id",
    "abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789",
    " ",
    "\u{2028}",
];

const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "1",
    "-1",
    "12.50e3",
    "1E+2",
    "0.5",
    "-0.0e-0",
    "123456789012345678901234567890",
    "1e400",
    "-1e-400",
    "3.141592653589793238462643383279",
    "18446744073709551616",
    "-9223372036854775809",
    "1.7976931348623157e308",
];

const INSERTS: &[&str] = &[
    "\\ud800", "\\udc00x", "01", "1.", "-", ".5", "tru", ",]", ",}", "//c", "/*c*/", "\t", "NaN",
    "Infinity", "\\x41", "\\u12", "\u{1}", "\u{7f}", "\"", "\\", "[", "{", "]", "}", ":", ",",
    "\u{feff}", "1e", "-01", "+1", "0x1", "'a'",
];

struct Gen {
    rng: Rng,
    one_line: bool,
}

impl Gen {
    fn ws(&mut self, out: &mut String) {
        if self.rng.chance(70) {
            return;
        }
        let w = if self.one_line {
            self.rng.pick(&[" ", "\t", "  ", " \t "])
        } else {
            self.rng.pick(&[" ", "\n", "\t", " \r\n  ", "\n\n"])
        };
        out.push_str(w);
    }

    fn string(&mut self, out: &mut String) {
        out.push('"');
        for _ in 0..self.rng.below(4) {
            let p = self.rng.pick(STR_PIECES);
            out.push_str(p);
        }
        out.push('"');
    }

    fn scalar(&mut self, out: &mut String) {
        match self.rng.below(6) {
            0 | 1 => self.string(out),
            2 => out.push_str(self.rng.pick(NUMBERS)),
            3 => out.push_str(&(self.rng.next() as i64 >> self.rng.below(60)).to_string()),
            4 => out.push_str(self.rng.pick(&["true", "false"])),
            _ => out.push_str("null"),
        }
    }

    fn value(&mut self, out: &mut String, depth: usize, max: usize) {
        if depth >= max || self.rng.chance(35) {
            return self.scalar(out);
        }
        if self.rng.chance(50) {
            self.object(out, depth, max);
        } else {
            self.array(out, depth, max);
        }
    }

    fn object(&mut self, out: &mut String, depth: usize, max: usize) {
        out.push('{');
        self.ws(out);
        // Sometimes a key/value pair shape (OTLP attribute).
        if self.rng.chance(10) {
            let k = self
                .rng
                .pick(&["user_id", "other", "DEVICE_ID", "user\\u005fid"]);
            let order = self.rng.chance(50);
            let v = match self.rng.below(4) {
                0 => "{\"stringValue\": \"u-1\"}".to_string(),
                1 => "{\"intValue\":\"42\",\"x\":[1,{\"y\":2}]}".to_string(),
                2 => "7".to_string(),
                _ => "\"v\"".to_string(),
            };
            let (a, b) = (format!("\"key\":\"{k}\""), format!("\"value\" : {v}"));
            if order {
                out.push_str(&format!("{a},{b}"));
            } else {
                out.push_str(&format!("{b}, {a}"));
            }
            out.push('}');
            return;
        }
        let n = self.rng.below(5);
        for i in 0..n {
            if i > 0 {
                out.push(',');
                self.ws(out);
            }
            out.push('"');
            out.push_str(self.rng.pick(KEYS));
            out.push('"');
            self.ws(out);
            out.push(':');
            self.ws(out);
            self.value(out, depth + 1, max);
            self.ws(out);
        }
        out.push('}');
    }

    fn array(&mut self, out: &mut String, depth: usize, max: usize) {
        out.push('[');
        self.ws(out);
        let n = self.rng.below(5);
        for i in 0..n {
            if i > 0 {
                out.push(',');
                self.ws(out);
            }
            self.value(out, depth + 1, max);
            self.ws(out);
        }
        out.push(']');
    }

    fn doc(&mut self) -> String {
        let mut out = String::new();
        self.ws(&mut out);
        if self.rng.chance(2) {
            // Deep: beyond every policy's max_depth.
            let d = 60 + self.rng.below(12) as usize;
            for _ in 0..d {
                out.push_str(self.rng.pick(&["[", "{\"user\":"]));
            }
            out.push('1');
            // Close in reverse (re-derive from the text).
            let opens: Vec<char> = out.chars().filter(|c| *c == '[' || *c == '{').collect();
            for c in opens.iter().rev() {
                out.push(if *c == '[' { ']' } else { '}' });
            }
        } else {
            let max = 1 + self.rng.below(8) as usize;
            if self.rng.chance(80) {
                self.object(&mut out, 0, max);
            } else {
                self.value(&mut out, 0, max);
            }
        }
        self.ws(&mut out);
        out
    }

    fn mutate(&mut self, s: &str) -> Vec<u8> {
        let mut m = s.as_bytes().to_vec();
        if m.is_empty() {
            return m;
        }
        for _ in 0..1 + self.rng.below(2) {
            let at = self.rng.below(m.len() as u64 + 1) as usize;
            match self.rng.below(4) {
                0 => m.truncate(at),
                1 if at < m.len() => {
                    const B: &[u8] = b"{}[],:\"\\x0 \x01\x7f-.eE+/\t";
                    m[at] = B[self.rng.below(B.len() as u64) as usize];
                }
                2 if at < m.len() => {
                    m.remove(at);
                }
                _ => {
                    let ins = self.rng.pick(INSERTS);
                    m.splice(at..at, ins.bytes());
                }
            }
            if m.is_empty() {
                break;
            }
        }
        m
    }
}

/// The fuzz target's policies (fields and paths; insensitive keys with key/value pairs; a
/// shallow one), without its match-nothing policy.
fn policies() -> Vec<Scrubber> {
    relay_scrub::fuzzing::policies()[..3].to_vec()
}

/// Compares both engines on one body; returns (accepted, simd fell back).
fn compare(s: &Scrubber, ct: &str, body: &[u8], ctx: &dyn Fn() -> String) -> (bool, bool) {
    let walker = s.clone().with_engine(Engine::Walker);
    let simd = s.clone().with_engine(Engine::Simd);
    let spec = relay_scrub::fuzzing::capture_spec();
    let a = walker.scrub_body_capturing(Some(ct), None, body, spec);
    let b = simd.scrub_body_capturing(Some(ct), None, body, spec);
    match (&a, &b) {
        (Ok(x), Ok(y)) => {
            assert_eq!(x.body, y.body, "output differs\n{}", ctx());
            assert_eq!(x.fields_hashed, y.fields_hashed, "count differs\n{}", ctx());
            assert_eq!(x.captures, y.captures, "captures differ\n{}", ctx());
            let slots = relay_scrub::fuzzing::capture_spec();
            let user = slots.slot("user_id").expect("captured");
            if x.captures.events().any(|e| e.get(user).is_some()) {
                CAPTURED.with(|c| c.set(c.get() + 1));
            }
        }
        (Err(x), Err(y)) => assert_eq!(x, y, "refusals differ\n{}", ctx()),
        _ => panic!(
            "one engine accepted, the other refused: walker {:?}, simd {:?}\n{}",
            a.as_ref().err(),
            b.as_ref().err(),
            ctx()
        ),
    }
    let fell_back = s.scrub_body_simd_only(Some(ct), body).is_none();
    (a.is_ok(), fell_back)
}

thread_local! {
    /// Accepted bodies whose captures held a `user_id` value (the comparison is not vacuous).
    static CAPTURED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[test]
fn simd_engine_equals_the_walker_on_random_documents() {
    let cases = env_u64("RELAY_DIFF_CASES", 200_000);
    let seed = env_u64("RELAY_DIFF_SEED", 0xD1FF_2026_0014);
    let scrubbers = policies();
    let (mut valid, mut valid_fallbacks, mut refused, mut ndjson) = (0u64, 0u64, 0u64, 0u64);
    for case in 0..cases {
        let mut g = Gen {
            rng: Rng((seed ^ case.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1),
            one_line: false,
        };
        let s = &scrubbers[(case % 3) as usize];
        let (ct, body): (&str, Vec<u8>) = if g.rng.chance(15) {
            ndjson += 1;
            g.one_line = true;
            let lines = 1 + g.rng.below(5);
            let bad = g.rng.chance(30).then(|| g.rng.below(lines));
            let mut b = Vec::new();
            for l in 0..lines {
                let d = g.doc();
                if bad == Some(l) {
                    let m = g.mutate(&d);
                    b.extend(m.into_iter().filter(|&c| c != b'\n'));
                } else {
                    b.extend_from_slice(d.as_bytes());
                }
                b.extend_from_slice(if g.rng.chance(20) { b"\r\n" } else { b"\n" });
                if g.rng.chance(10) {
                    b.extend_from_slice(b"  \n");
                }
            }
            ("application/x-ndjson", b)
        } else {
            let d = g.doc();
            let b = if g.rng.chance(50) {
                g.mutate(&d)
            } else {
                d.into_bytes()
            };
            ("application/json", b)
        };
        let ctx = || {
            format!(
                "case {case} (RELAY_DIFF_SEED={seed}), policy {}, {ct}:\n{:?}",
                case % 3,
                String::from_utf8_lossy(&body)
            )
        };
        let (ok, fell_back) = compare(s, ct, &body, &ctx);
        if ok {
            valid += 1;
            if fell_back {
                valid_fallbacks += 1;
                assert!(
                    beyond_simd_json_numbers(&body),
                    "simd-json refused a valid body without huge numbers\n{}",
                    ctx()
                );
            }
        } else {
            refused += 1;
        }
    }
    eprintln!(
        "{cases} documents ({ndjson} NDJSON): {valid} accepted ({valid_fallbacks} handed to the walker), {refused} refused; identical results"
    );
    assert!(
        valid > cases / 3 && refused > cases / 10,
        "generator balance"
    );
    let captured = CAPTURED.with(|c| c.get());
    assert!(
        captured > cases / 20,
        "only {captured} bodies had a captured user_id: the capture comparison is vacuous"
    );
}

/// Whether `body` holds a number simd-json refuses though RFC 8259 allows it (an integer beyond
/// 64 bits, or an exponent beyond f64): the only valid bodies the simd engine hands to the
/// walker.
fn beyond_simd_json_numbers(body: &[u8]) -> bool {
    let mut run = 0;
    for &b in body {
        if b.is_ascii_digit() {
            run += 1;
            if run >= 19 {
                return true;
            }
        } else {
            run = 0;
        }
    }
    // An exponent of three digits or more (beyond f64 either way).
    (0..body.len()).any(|i| {
        matches!(body[i], b'e' | b'E')
            && body[i + 1..]
                .iter()
                .skip_while(|&&c| c == b'+' || c == b'-')
                .take_while(|c| c.is_ascii_digit())
                .count()
                >= 3
    })
}

// Hand-written cases JSONTestSuite lacks (the suite's own 318 files run in
// `tests/json_test_suite.rs`; cases here that duplicated one of them were dropped): PII members
// around each shape, relay's depth limit, number spellings and traps the suite does not cover.
const Y: &[&str] = &[
    "-0.0",
    "[-123.456e-78]",
    "{\"a\":[{\"b\":{\"c\":[null,true,false]}}]}",
    "[1,[2,[3,[4,[5]]]]]",
    "{\"user_id\":{\"x\":[1 , 2]}, \"device_id\" : \"d\"}",
    "[\"é😀\\u00e9\"]",
];

const N: &[&str] = &[
    "[\"\\u+1234\"]",
    "[\"a\u{1}b\"]",
    "/* c */ []",
    "[\"\\'\"]",
    "[1e1.5]",
    "[\u{a0}1]",
    "[1\u{c}]",
    "{\"user_id\":01}",
    "{\"user_id\":\"\\uDd1e\"}",
    "{\"user_id\":[1,]}",
    "{\"user_id\":tru}",
    "{\"user_id\":\"a\"}\u{0}",
    // Bad escapes inside a key/value shape (policy 1 looks ahead into these objects): the
    // look-ahead once decoded them unchecked and panicked (found by the `scrub` fuzz target).
    "[{\"\\AAAA\\\\\":1}]",
    "[{\"key\":\"\\AAAA\\\\\",\"value\":1}]",
    "[{\"key\":\"\\ud800x\\\\\",\"value\":1}]",
];

const I: &[&str] = &[
    "[1.000000000000000000000000000000000000000000001]",
    "{\"user_id\":1e400}",
    "{\"order_no\":123456789012345678901234567890}",
];

#[test]
fn hand_written_cases_agree() {
    let scrubbers = policies();
    let deep_ok = format!("{}1{}", "[".repeat(64), "]".repeat(64));
    let deep_bad = format!("{}1{}", "[".repeat(65), "]".repeat(65));
    let deep_simd = format!("{}1{}", "[".repeat(1100), "]".repeat(1100));
    for (set, must) in [(Y, Some(true)), (N, Some(false)), (I, None)] {
        for case in set.iter().copied().chain(
            (must == Some(true))
                .then_some(deep_ok.as_str())
                .into_iter()
                .chain((must == Some(false)).then_some(deep_bad.as_str()))
                .chain((must.is_none()).then_some(deep_simd.as_str())),
        ) {
            for s in &scrubbers[..2] {
                let wrapped = format!("{{\"user_id\":{case}, \"n\": [{case}]}}");
                for body in [case.to_string(), wrapped] {
                    let ctx = || format!("{body:?}");
                    let (ok, fell_back) = compare(s, "application/json", body.as_bytes(), &ctx);
                    if body == case {
                        if let Some(m) = must {
                            assert_eq!(ok, m, "{}", ctx());
                        }
                        if ok && must == Some(true) && !body.is_empty() {
                            assert!(!fell_back, "simd-json refused a y_ case: {}", ctx());
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn large_bodies_agree() {
    // A batch of ~1.5 MiB (beyond the kept scratch size) and an NDJSON body of long lines.
    let mut g = Gen {
        rng: Rng(0x1A4E_0014),
        one_line: true,
    };
    let mut json = String::from("[");
    let mut nd = String::new();
    while json.len() < 1_500_000 {
        let d = g.doc();
        if json.len() > 1 {
            json.push(',');
        }
        json.push_str(&d);
        if nd.len() < 600_000 {
            nd.push_str("{\"pad\":\"");
            nd.push_str(&"x".repeat(3000));
            nd.push_str("\",\"v\":");
            nd.push_str(&d);
            nd.push_str("}\n");
        }
    }
    json.push(']');
    for s in &policies() {
        let ctx = || "large body".to_string();
        compare(s, "application/json", json.as_bytes(), &ctx);
        compare(s, "application/x-ndjson", nd.as_bytes(), &ctx);
        // Auto takes the simd engine for these sizes and answers the same.
        let auto = s.clone().with_engine(Engine::Auto);
        let walker = s.clone().with_engine(Engine::Walker);
        assert_eq!(
            auto.scrub_body(None, None, json.as_bytes()).map(|r| r.body),
            walker
                .scrub_body(None, None, json.as_bytes())
                .map(|r| r.body)
        );
    }
}

#[test]
fn hand_written_cases_are_not_in_the_suite() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/JSONTestSuite/test_parsing");
    let trim = |b: &[u8]| -> Vec<u8> {
        let s = String::from_utf8_lossy(b);
        s.trim().to_string().into_bytes()
    };
    let suite: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                trim(&std::fs::read(e.path()).unwrap()),
            )
        })
        .collect();
    assert_eq!(suite.len(), 318);
    for case in Y.iter().chain(N).chain(I) {
        if let Some((name, _)) = suite.iter().find(|(_, b)| *b == trim(case.as_bytes())) {
            panic!("{case:?} is the suite's {name}: drop it here");
        }
    }
}
