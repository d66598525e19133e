//! Property test of the in-place scrubber (both engines, alternating) with a seeded generator (100,000 cases by default;
//! `RELAY_PROP_CASES` and `RELAY_PROP_SEED` override). For random JSON documents with PII keys at
//! random depths, inside arrays, escaped, duplicated, with string/number/bool/object/array/null
//! values, and random whitespace, the scrubbed output
//! (a) is valid JSON (serde_json), or valid NDJSON line by line;
//! (b) is byte-for-byte the input with only the PII values replaced by their quoted pseudonyms,
//!     as computed by an independent oracle over the generated tree (full-path matching);
//! (c) contains none of the raw PII values, neither as written nor decoded.
//!
//! Also: `key_hash` equals the oracle's first non-null `user_id`, and for a random mutation of
//! each input the scrubber accepts exactly when serde_json does (fail closed, no false accept).

use relay_scrub::{ActiveKey, Engine, HashAlgorithm, PiiPolicyConfig, Scrubber};

const FIELDS: &[&str] = &["user_id", "device_id", "order_no"];
const PATHS: &[&[Seg]] = &[
    &[Seg::K("user"), Seg::K("id")],
    &[Seg::K("events"), Seg::E, Seg::K("device"), Seg::K("id")],
];
const OTHER_KEYS: &[&str] = &[
    "user",
    "id",
    "events",
    "device",
    "a",
    "name",
    "x y",
    "caf\u{e9}",
    "ts",
    "user_ids",
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Seg {
    K(&'static str),
    E,
}

/// xorshift64*: deterministic, fast, no dependencies.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}

/// A generated value: what it means (`decoded`) and how it is written (`raw`).
#[derive(Debug, Clone)]
enum J {
    Null,
    Bool(bool),
    /// Number text.
    Num(String),
    /// Decoded text, written form (with quotes).
    Str(String, String),
    Arr(Vec<J>, Ws),
    Obj(Vec<(Key, J)>, Ws),
}

#[derive(Debug, Clone)]
struct Key {
    /// The decoded name and, if it is one of the fixed names, that name.
    name: &'static str,
    raw: String,
}

/// Whitespace choices of one container (before/after each token).
#[derive(Debug, Clone)]
struct Ws(Vec<&'static str>);

const SPACES: &[&str] = &["", "", "", " ", "\n  ", "\t", " \r\n "];
const LINE_SPACES: &[&str] = &["", "", "", " ", "\t", " \t "];

struct Gen {
    rng: Rng,
    counter: u64,
    markers: Vec<String>,
    one_line: bool,
}

impl Gen {
    fn ws(&mut self, n: usize) -> Ws {
        // NDJSON: whitespace inside a line must not contain a line feed.
        let set = if self.one_line { LINE_SPACES } else { SPACES };
        Ws((0..n)
            .map(|_| set[self.rng.below(set.len() as u64) as usize])
            .collect())
    }

    /// Writes `s` as a JSON string, escaping randomly (but always what must be escaped).
    fn write_str(&mut self, s: &str) -> String {
        let mut out = String::from("\"");
        for c in s.chars() {
            let force = matches!(c, '"' | '\\') || (c as u32) < 0x20;
            if force || self.rng.chance(10) {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' if self.rng.chance(50) => out.push_str("\\n"),
                    '/' if self.rng.chance(50) => out.push_str("\\/"),
                    c => {
                        let mut buf = [0u16; 2];
                        for u in c.encode_utf16(&mut buf) {
                            if self.rng.chance(50) {
                                out.push_str(&format!("\\u{u:04x}"));
                            } else {
                                out.push_str(&format!("\\u{u:04X}"));
                            }
                        }
                    }
                }
            } else {
                out.push(c);
            }
        }
        out.push('"');
        out
    }

    fn key(&mut self) -> Key {
        let name = if self.rng.chance(45) {
            FIELDS[self.rng.below(FIELDS.len() as u64) as usize]
        } else {
            OTHER_KEYS[self.rng.below(OTHER_KEYS.len() as u64) as usize]
        };
        Key {
            name,
            raw: self.write_str(name),
        }
    }

    fn plain_text(&mut self) -> String {
        const PARTS: &[&str] = &[
            "v",
            "ok",
            " ",
            "\"",
            "\\",
            "/",
            "\n",
            "\u{e9}",
            "\u{1F600}",
            "\u{7}",
            "x",
            "9",
        ];
        let n = self.rng.below(6);
        (0..n)
            .map(|_| PARTS[self.rng.below(PARTS.len() as u64) as usize])
            .collect()
    }

    /// A value that may be hashed: unique markers for strings and numbers.
    fn scalar(&mut self) -> J {
        self.counter += 1;
        match self.rng.below(7) {
            0 => J::Null,
            1 => J::Bool(self.rng.chance(50)),
            2 | 3 => {
                // '-', '.', 'e', '+' never occur in hex, so a marker cannot hide in a pseudonym.
                let s = format!(
                    "-{}.{}e+{}",
                    self.rng.next() >> 8,
                    self.counter,
                    self.rng.below(20)
                );
                self.markers.push(s.clone());
                J::Num(s)
            }
            4 => J::Num(format!("{}", self.rng.below(1000))),
            _ => {
                let extra = self.plain_text();
                let s = format!("PII-{}-{:016x}{extra}", self.counter, self.rng.next());
                let raw = self.write_str(&s);
                self.markers.push(s.clone());
                self.markers.push(raw[1..raw.len() - 1].to_string());
                J::Str(s, raw)
            }
        }
    }

    fn value(&mut self, depth: usize) -> J {
        let container = depth < 7 && self.rng.chance(if depth < 2 { 60 } else { 30 });
        if !container {
            if self.rng.chance(25) {
                let t = self.plain_text();
                let raw = self.write_str(&t);
                return J::Str(t, raw);
            }
            return self.scalar();
        }
        let n = self.rng.below(7) as usize;
        if self.rng.chance(55) {
            let members: Vec<(Key, J)> = (0..n)
                .map(|_| (self.key(), self.value(depth + 1)))
                .collect();
            let ws = self.ws(4 * n + 1);
            J::Obj(members, ws)
        } else {
            let elems: Vec<J> = (0..n).map(|_| self.value(depth + 1)).collect();
            let ws = self.ws(2 * n + 1);
            J::Arr(elems, ws)
        }
    }

    fn doc(&mut self) -> J {
        // The root is an object (one event) or an array (a batch).
        loop {
            let v = self.value(0);
            if matches!(v, J::Obj(..) | J::Arr(..)) {
                return v;
            }
        }
    }
}

/// The oracle: renders the tree, replacing PII values (by full-path matching) with `hash`.
struct Oracle<'a> {
    hash: &'a dyn Fn(&[u8]) -> String,
    hashed: u64,
    first_user_id: Option<String>,
}

fn is_pii_path(path: &[Seg]) -> bool {
    match path.last() {
        Some(Seg::K(k)) if FIELDS.contains(k) => true,
        _ => PATHS.contains(&path),
    }
}

fn compact(v: &J) -> String {
    match v {
        J::Null => "null".into(),
        J::Bool(b) => b.to_string(),
        J::Num(s) => s.clone(),
        J::Str(_, raw) => raw.clone(),
        J::Arr(e, _) => format!("[{}]", e.iter().map(compact).collect::<Vec<_>>().join(",")),
        J::Obj(m, _) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{}:{}", k.raw, compact(v)))
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

impl Oracle<'_> {
    /// `scrub`: replace PII (else render the input).
    fn render(&mut self, v: &J, path: &mut Vec<Seg>, root: bool, scrub: bool, out: &mut String) {
        let input: Option<Vec<u8>> = match v {
            J::Null => None,
            J::Bool(b) => Some(b.to_string().into_bytes()),
            J::Num(s) => Some(s.clone().into_bytes()),
            J::Str(d, _) => Some(d.clone().into_bytes()),
            J::Arr(..) | J::Obj(..) => Some(compact(v).into_bytes()),
        };
        // The Kafka key: the first non-null `user_id` anywhere in the original, even inside
        // another PII value.
        if !scrub && path.last() == Some(&Seg::K("user_id")) && self.first_user_id.is_none() {
            self.first_user_id = input.as_ref().map(|i| (self.hash)(i));
        }
        if scrub && !path.is_empty() && is_pii_path(path) {
            if let Some(i) = input {
                out.push('"');
                out.push_str(&(self.hash)(&i));
                out.push('"');
                self.hashed += 1;
                return;
            }
        }
        match v {
            J::Null => out.push_str("null"),
            J::Bool(b) => out.push_str(&b.to_string()),
            J::Num(s) => out.push_str(s),
            J::Str(_, raw) => out.push_str(raw),
            J::Arr(elems, ws) => {
                out.push('[');
                out.push_str(ws.0[0]);
                for (i, e) in elems.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                        out.push_str(ws.0[2 * i]);
                    }
                    // A top-level array is a batch: its elements are event roots.
                    let mut p = if root { Vec::new() } else { path.clone() };
                    if !root {
                        p.push(Seg::E);
                    }
                    self.render(e, &mut p, false, scrub, out);
                    out.push_str(ws.0[2 * i + 1]);
                }
                out.push(']');
            }
            J::Obj(members, ws) => {
                out.push('{');
                out.push_str(ws.0[0]);
                for (i, (k, v)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                        out.push_str(ws.0[4 * i]);
                    }
                    out.push_str(&k.raw);
                    out.push_str(ws.0[4 * i + 1]);
                    out.push(':');
                    out.push_str(ws.0[4 * i + 2]);
                    path.push(Seg::K(k.name));
                    self.render(v, path, false, scrub, out);
                    path.pop();
                    out.push_str(ws.0[4 * i + 3]);
                }
                out.push('}');
            }
        }
    }
}

fn policy(hmac: bool) -> PiiPolicyConfig {
    PiiPolicyConfig {
        fields: FIELDS.iter().map(|s| s.to_string()).collect(),
        paths: vec!["user.id".into(), "events[].device.id".into()],
        hash: if hmac {
            HashAlgorithm::HmacSha256
        } else {
            HashAlgorithm::Sha256
        },
        key_id: hmac.then(|| "k1".into()),
        ..PiiPolicyConfig::default()
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[test]
fn scrubbed_output_is_the_input_with_only_pii_values_replaced() {
    let cases = env_u64("RELAY_PROP_CASES", 100_000);
    let seed = env_u64("RELAY_PROP_SEED", 0x5EED_2026_0003);
    let key = b"prop-test-key-0123456789abcdef-0123456789";
    let scrubbers = [
        Scrubber::new(&policy(false), None).unwrap(),
        Scrubber::new(
            &policy(true),
            Some(ActiveKey {
                id: Some("k1"),
                bytes: key,
            }),
        )
        .unwrap(),
    ];
    let mut total_hashed = 0u64;
    let mut ndjson_cases = 0u64;
    let mut mutants_rejected = 0u64;
    for case in 0..cases {
        let mut g = Gen {
            rng: Rng(seed ^ (case.wrapping_add(1)).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
            counter: 0,
            markers: Vec::new(),
            one_line: false,
        };
        // Half the cases through each engine (Auto would pick the walker for these sizes).
        let engine = if case % 2 == 0 {
            Engine::Simd
        } else {
            Engine::Walker
        };
        let s = &scrubbers[(case % 8 == 0) as usize]
            .clone()
            .with_engine(engine);
        let hash = |v: &[u8]| s.hash_value(v);
        let mut oracle = Oracle {
            hash: &hash,
            hashed: 0,
            first_user_id: None,
        };
        let mut orig = Oracle {
            hash: &hash,
            hashed: 0,
            first_user_id: None,
        };
        let lines = if g.rng.chance(15) {
            1 + g.rng.below(3) as usize
        } else {
            0
        };
        g.one_line = lines > 0;
        let (input, expected, ct) = if lines == 0 {
            let d = g.doc();
            let lead = SPACES[g.rng.below(SPACES.len() as u64) as usize];
            let (mut i, mut e) = (lead.to_string(), lead.to_string());
            orig.render(&d, &mut Vec::new(), true, false, &mut i);
            oracle.render(&d, &mut Vec::new(), true, true, &mut e);
            (i, e, "application/json; charset=utf-8")
        } else {
            ndjson_cases += 1;
            let (mut i, mut e) = (String::new(), String::new());
            for _ in 0..lines {
                let d = g.doc();
                orig.render(&d, &mut Vec::new(), true, false, &mut i);
                oracle.render(&d, &mut Vec::new(), true, true, &mut e);
                let end = if g.rng.chance(20) { "\r\n" } else { "\n" };
                i.push_str(end);
                e.push_str(end);
            }
            (i, e, "application/x-ndjson")
        };
        if std::env::var("RELAY_PROP_DUMP").is_ok() {
            std::fs::write("/tmp/scrub_prop_input", &input).unwrap();
        }
        let ctx = || format!("case {case} (RELAY_PROP_SEED={seed}):\n{input}");
        let out = s
            .scrub_body(Some(ct), None, input.as_bytes())
            .unwrap_or_else(|e| panic!("rejected valid input: {e}\n{}", ctx()));
        let out_s = std::str::from_utf8(&out.body)
            .unwrap_or_else(|_| panic!("output not UTF-8\n{}", ctx()));
        // (b) exactly the input with only PII values replaced.
        assert_eq!(out_s, expected, "{}", ctx());
        assert_eq!(out.fields_hashed, oracle.hashed, "{}", ctx());
        total_hashed += oracle.hashed;
        // (a) valid JSON.
        if lines == 0 {
            serde_json::from_str::<serde_json::Value>(out_s)
                .unwrap_or_else(|e| panic!("invalid output {e}\n{}", ctx()));
        } else {
            assert_eq!(out_s.matches('\n').count(), lines, "{}", ctx());
            for l in out_s.lines() {
                serde_json::from_str::<serde_json::Value>(l)
                    .unwrap_or_else(|e| panic!("invalid line {e}\n{}", ctx()));
            }
        }
        // (c) no raw PII value survives, as written or decoded. The oracle knows which markers
        // sat under PII keys; markers elsewhere legitimately stay.
        // (c) Every marker under a PII key was removed: the markers left in the output are
        // exactly those the oracle kept (outside PII values).
        for m in &g.markers {
            assert_eq!(
                out_s.contains(m.as_str()),
                expected.contains(m.as_str()),
                "{m:?}\n{}",
                ctx()
            );
        }
        // The Kafka key: first non-null user_id of the original.
        assert_eq!(
            s.key_hash(Some(ct), input.as_bytes(), "user_id"),
            orig.first_user_id,
            "{}",
            ctx()
        );
        // Fail closed: a mutated input is accepted exactly when it is valid JSON.
        let mut m = input.clone().into_bytes();
        let at = g.rng.below(m.len() as u64) as usize;
        match g.rng.below(3) {
            0 => m.truncate(at),
            1 => m[at] = b"{}[],:\"\\x0 \xff"[g.rng.below(12) as usize],
            _ => {
                m.remove(at);
            }
        }
        let ours = s.scrub_body(Some(ct), None, &m);
        let theirs = if lines == 0 {
            m.iter().all(|b| b.is_ascii_whitespace())
                || serde_json::from_slice::<serde_json::Value>(&m).is_ok()
        } else {
            let non_blank: Vec<&[u8]> = m
                .split(|&b| b == b'\n')
                .filter(|l| !l.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r')))
                .collect();
            !non_blank.is_empty()
                && non_blank
                    .iter()
                    .all(|l| serde_json::from_slice::<serde_json::Value>(l).is_ok())
        };
        let whitespace_only =
            !m.is_empty() && m.iter().all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
        if whitespace_only {
            assert_eq!(ours.unwrap_err().code, "empty_body");
        } else if m.is_empty() {
            assert!(ours.is_ok());
        } else {
            assert_eq!(
                ours.is_ok(),
                theirs,
                "mutant at {at}: {:?}\n{}",
                String::from_utf8_lossy(&m),
                ctx()
            );
            if ours.is_err() {
                mutants_rejected += 1;
            }
        }
    }
    eprintln!(
        "{cases} cases ({ndjson_cases} NDJSON), {total_hashed} values hashed, {mutants_rejected} invalid mutants refused"
    );
    assert!(total_hashed > cases, "the generator must produce PII");
}
