//! Replays the `scrub` fuzz target's corpus (`fuzz/corpus/scrub/*`: the committed seeds
//! `seed_*` and the inputs libFuzzer found that were kept, `min_*`, crash inputs included) on
//! stable with the target's own check (`relay_scrub::fuzzing::check_engines`), and keeps the
//! seeds in one list.
//!
//! Seeds: every JSONTestSuite `test_parsing` file up to 4 KiB (`tests/data/JSONTestSuite/`),
//! each under one policy and Content-Type chosen by its index, and generated documents (events
//! with every PII shape the fuzz policies match, escaped and cased keys, OTLP attributes, deep
//! nesting, NDJSON batches with a bad line). They are written to `fuzz/corpus/scrub/` by
//! `cargo test -p relay-scrub --test fuzz_corpus -- --ignored write_seeds`; the replay also
//! runs them from this list, so a seed deleted from disk is still checked.

use std::path::{Path, PathBuf};

use relay_scrub::fuzzing::check_engines;

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn corpus_dir() -> PathBuf {
    manifest()
        .parent()
        .expect("relay-scrub lives in the repository")
        .join("fuzz/corpus/scrub")
}

/// Suite files larger than this are not seeds (libFuzzer sizes its inputs after its largest
/// seed; the two big `n_structure_*` files run in `tests/json_test_suite.rs`).
const MAX_SEED_BYTES: usize = 4096;

/// A fuzz input: the selector byte (policy `sel % 4`, Content-Type `sel >> 6`), then the body.
fn input(sel: u8, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(body.len() + 1);
    v.push(sel);
    v.extend_from_slice(body);
    v
}

/// Generated documents: one per PII shape and trap the fuzz policies care about.
fn generated() -> Vec<(&'static str, Vec<u8>)> {
    let event = |uid: &str, extra: &str| {
        format!(
            "{{\"event\":\"purchase\",\"user_id\":{uid},\"device_id\":\"3F2504E0\",\"order_no\":987654321,\"user\":{{\"id\":\"u-2\",\"name\":\"n\"}},\"tags\":[\"a\",1,null,{{\"x\":[]}}],\"events\":[{{\"device\":{{\"id\":\"d-1\"}}}},{{\"device\":{{\"id\":7}}}}]{extra}}}"
        )
    };
    let mut out: Vec<(&'static str, Vec<u8>)> = vec![
        ("event", event("\"u-1\"", "").into_bytes()),
        ("event_null_pii", event("null", "").into_bytes()),
        ("event_object_pii", event("{\"a\":[1, 2 ,{}]}", "").into_bytes()),
        ("event_number_pii", event("-12.5e+3", "").into_bytes()),
        (
            "escaped_keys",
            b"{\"user\\u005fid\":\"\\u0075-1\",\"\\u0064evice_id\":\"a\\\"b\\\\c\\/\",\"k\\\"q\":1}"
                .to_vec(),
        ),
        (
            "cased_keys",
            b"{\"User_ID\":\"u\",\"DEVICE_ID\":[1],\"Order_No\":{\"x\":1},\"USER\":{\"Id\":2}}"
                .to_vec(),
        ),
        (
            "duplicate_keys",
            b"{\"user_id\":\"a\",\"user_id\":\"b\",\"user_id\":null}".to_vec(),
        ),
        (
            "otlp_attributes",
            b"{\"resourceLogs\":[{\"attributes\":[{\"key\":\"user_id\",\"value\":{\"stringValue\":\"u-1\"}},{\"value\":{\"intValue\":\"42\"},\"key\":\"DEVICE_ID\"},{\"key\":\"other\",\"value\":\"v\"},{\"key\":\"order_no\",\"value\":7}]}]}"
                .to_vec(),
        ),
        (
            "unicode",
            "{\"name\":\"é😀\\ud83d\\ude00\\u00e9\u{2028}\",\"a\":\"\\u0000\",\"é\":\"x\"}"
                .as_bytes()
                .to_vec(),
        ),
        (
            "numbers",
            b"[0,-0,1E+2,0.5,-0.0e-0,123456789012345678901234567890,1e400,18446744073709551616]"
                .to_vec(),
        ),
        (
            "whitespace",
            b" \r\n\t{ \"user_id\" :\r\n \"u\" , \"tags\" : [ \"t\" ] }\n\n".to_vec(),
        ),
        (
            "structural_in_strings",
            b"{\"user_id\":\"{[,:]}\",\"x\":\"\\\"}]\",\"tags\":[\"]\"]}".to_vec(),
        ),
        (
            "bad_escape_in_pii",
            b"{\"user_id\":\"\\ud800\",\"device_id\":\"\\x\"}".to_vec(),
        ),
        ("trailing_comma", b"{\"user_id\":\"u\",}".to_vec()),
        ("lone_value", b"\"user_id\"".to_vec()),
        ("empty", Vec::new()),
        ("blank", b" \n ".to_vec()),
    ];
    // Depth: at, just under and just over the shallow policy's 4 and the default 64.
    for (name, d) in [
        ("depth_4", 4usize),
        ("depth_5", 5),
        ("depth_63", 63),
        ("depth_64", 64),
        ("depth_65", 65),
    ] {
        let open: String = (0..d)
            .map(|i| if i % 2 == 0 { "{\"a\":" } else { "[" })
            .collect();
        let close: String = (0..d)
            .rev()
            .map(|i| if i % 2 == 0 { "}" } else { "]" })
            .collect();
        out.push((name, format!("{open}1{close}").into_bytes()));
    }
    // NDJSON batches: CRLF, blank lines, a bad line in the middle, no final newline.
    let e = event("\"u-1\"", ",\"n\":1");
    out.push(("batch", format!("{e}\n{e}\r\n\n  \n{e}").into_bytes()));
    out.push((
        "batch_bad_line",
        format!("{e}\n{{\"user_id\":\"u\",]\n{e}\n").into_bytes(),
    ));
    out.push((
        "batch_multiline_value",
        format!("{e}\n{{\"user_id\":\n\"u\"}}\n").into_bytes(),
    ));
    out
}

/// Every seed as `(file name, fuzz input)`.
fn seeds() -> Vec<(String, Vec<u8>)> {
    let dir = manifest().join("tests/data/JSONTestSuite/test_parsing");
    let mut suite: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("the vendored JSONTestSuite")
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .filter(|(_, b)| b.len() <= MAX_SEED_BYTES)
        .collect();
    suite.sort();
    let mut out = Vec::new();
    for (i, (name, body)) in suite.iter().enumerate() {
        // Policy i % 4, Content-Type (i / 4) % 4: every pair appears.
        let sel = (i % 4) as u8 | (((i / 4) % 4) as u8) << 6;
        let stem = name.trim_end_matches(".json");
        out.push((format!("jts_{stem}"), input(sel, body)));
    }
    for (name, body) in generated() {
        let ndjson = name.starts_with("batch");
        for policy in 0..4u8 {
            let sel = policy | if ndjson { 0x80 } else { 0 };
            out.push((format!("gen_{name}_p{policy}"), input(sel, &body)));
        }
    }
    out
}

/// Writes the seeds to `fuzz/corpus/scrub/seed_<name>` (run with `--ignored`).
#[test]
#[ignore = "writes files: run it to regenerate the seeds"]
fn write_seeds() {
    let dir = corpus_dir();
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in seeds() {
        std::fs::write(dir.join(format!("seed_{name}")), bytes).unwrap();
    }
}

#[test]
fn seeds_pass_the_fuzz_check() {
    let seeds = seeds();
    assert!(seeds.len() > 400, "{} seeds", seeds.len());
    for (name, bytes) in seeds {
        eprintln!("{name}");
        check_engines(&bytes);
    }
}

#[test]
fn corpus_passes_the_fuzz_check() {
    let dir = corpus_dir();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}; the committed corpus is missing", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    let committed = paths
        .iter()
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("seed_") || n.starts_with("min_")
        })
        .count();
    assert!(
        committed >= seeds().len(),
        "{committed} committed corpus files in {}: write the seeds",
        dir.display()
    );
    for p in &paths {
        eprintln!("{}", p.display());
        check_engines(&std::fs::read(p).unwrap());
    }
    eprintln!("{} corpus files replayed", paths.len());
}
