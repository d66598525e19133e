//! Replays the fuzz corpora (`fuzz/corpus/<target>/*`) on stable with the fuzz targets' own
//! checks (`relay_http::fuzzing`), and keeps the hand-written seeds in one list.
//!
//! The seeds are written to `fuzz/corpus/` by
//! `cargo test -p relay-http --test fuzz_corpus -- --ignored write_seeds`; the replay also runs
//! them from this list, so a seed deleted from disk is still checked.

use std::path::{Path, PathBuf};

use relay_http::fuzzing::{
    check_body_decoder, check_request_head, check_response, BodyCase, HeadLimitsCase, Reads,
    RequestCase, ResponseCase,
};
use relay_http::{BodyFraming, BodyLimits};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("relay-http lives in the repository")
        .join("fuzz/corpus")
}

/// The check each fuzz target runs, by target name.
fn check_for(target: &str) -> fn(&[u8]) {
    match target {
        "request_head" => check_request_head,
        "body_decoder" => check_body_decoder,
        "response" => check_response,
        other => panic!("no fuzz target {other:?}"),
    }
}

const ONE_BY_ONE: Reads = Reads {
    seed: 1,
    max_read: 1,
};
const SMALL: Reads = Reads {
    seed: 7,
    max_read: 5,
};
const MIB: u64 = 1 << 20;

fn limits(max_body: u64, max_chunk_line: usize, max_trailer: usize) -> BodyLimits {
    BodyLimits {
        max_body,
        max_chunk_line,
        max_trailer,
    }
}

fn body(framing: BodyFraming, l: BodyLimits, reads: Reads, payload: &[u8]) -> Vec<u8> {
    BodyCase {
        framing,
        limits: l,
        reads,
        payload: payload.to_vec(),
    }
    .to_bytes()
}

fn request(max_header_bytes: u32, max_headers: u32, reads: Reads, payload: &str) -> Vec<u8> {
    RequestCase {
        head: HeadLimitsCase {
            max_header_bytes,
            max_headers,
        },
        limits: BodyLimits::new(MIB),
        reads,
        payload: payload.as_bytes().to_vec(),
    }
    .to_bytes()
}

fn response(request_was_head: bool, l: BodyLimits, reads: Reads, payload: &[u8]) -> Vec<u8> {
    ResponseCase {
        request_was_head,
        max_head: 16 * 1024,
        limits: l,
        reads,
        payload: payload.to_vec(),
    }
    .to_bytes()
}

/// Every hand-written seed: (target, file name, input).
fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    let d = BodyLimits::new(MIB);
    let chunked: &[(&str, &[u8])] = &[
        ("attack_wrap", b"1\r\na\r\nffffffffffffffff\r\n"),
        (
            "attack_wrap_data",
            b"1\r\na\r\nffffffffffffffff\r\nxxxxxxxx",
        ),
        ("size_u64_max", b"ffffffffffffffff\r\n"),
        ("size_overflow", b"10000000000000000\r\n"),
        (
            "two_halves_wrap",
            b"8000000000000000\r\nx\r\n8000000000000000\r\n",
        ),
        ("simple", b"5\r\nhello\r\n0\r\n\r\n"),
        (
            "two_chunks_next",
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nGET / HTTP/1.1\r\n",
        ),
        (
            "extensions_trailers",
            b"5;ext=1;q=\"a\\\"b\"\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\nNEXT",
        ),
        ("ext_bws", b"5 ;a ; b = \"c\\\"\" \r\nhello\r\n0\r\n\r\n"),
        ("ext_trailing_ws", b"5;a \r\nhello\r\n0\r\n\r\n"),
        (
            "leading_zeros",
            b"000000000000000000001\r\na\r\n0000\r\n\r\n",
        ),
        ("upper_hex", b"A\r\n0123456789\r\n0\r\n\r\n"),
        ("bad_size_ws", b"5 \r\nhello\r\n0\r\n\r\n"),
        ("bad_empty_ext", b"5;\r\nhello\r\n0\r\n\r\n"),
        ("bad_ext_no_name", b"5;=x\r\nhello\r\n0\r\n\r\n"),
        ("bad_ext_ctl_quoted", b"5;a=\"\x01\"\r\nhello\r\n0\r\n\r\n"),
        ("bad_ext_space_value", b"5;a=b c\r\nhello\r\n0\r\n\r\n"),
        ("bad_bare_lf_size", b"5\nhello\r\n0\r\n\r\n"),
        ("bad_bare_cr_size", b"5\rhello\r\n0\r\n\r\n"),
        ("bad_data_too_long", b"5\r\nhelloXX\r\n0\r\n\r\n"),
        ("bad_data_bare_cr", b"5\r\nhello\r\r"),
        ("bad_negative", b"-1\r\n"),
        ("bad_0x", b"0x5\r\nhello\r\n0\r\n\r\n"),
        ("bad_trailer_bare_lf", b"0\r\nX\n"),
        ("bad_trailer_no_name", b"0\r\n: a\r\n\r\n"),
        ("bad_trailer_obs_fold", b"0\r\nA: 1\r\n folded\r\n\r\n"),
        ("bad_trailer_nul", b"0\r\nX: a\x00\r\n\r\n"),
        ("bad_last_bare_cr", b"0\r\n\rX"),
        (
            "big_chunk",
            &[b"20\r\n".as_slice(), &[b'x'; 32], b"\r\n0\r\n\r\n"].concat(),
        ),
    ];
    for (name, payload) in chunked {
        out.push((
            "body_decoder",
            format!("chunked_{name}"),
            body(BodyFraming::Chunked, d, Reads::WHOLE, payload),
        ));
        out.push((
            "body_decoder",
            format!("chunked_{name}_1"),
            body(BodyFraming::Chunked, d, ONE_BY_ONE, payload),
        ));
    }
    for (name, l, payload) in [
        (
            "attack_unlimited",
            limits(u64::MAX, 4096, 16384),
            &b"1\r\na\r\nffffffffffffffff\r\n"[..],
        ),
        (
            "body_at_limit",
            limits(4, 4096, 16384),
            b"4\r\nabcd\r\n0\r\n\r\n",
        ),
        (
            "body_over_limit",
            limits(4, 4096, 16384),
            b"2\r\nab\r\n3\r\nabc\r\n0\r\n\r\n",
        ),
        (
            "line_at_limit",
            limits(100, 8, 9),
            b"1;a=bcde\r\nx\r\n0\r\n\r\n",
        ),
        (
            "line_over_limit",
            limits(100, 8, 9),
            b"1;a=bcdef\r\nx\r\n0\r\n\r\n",
        ),
        (
            "trailer_at_limit",
            limits(100, 8, 9),
            b"0\r\nA: 1234\r\n\r\n",
        ),
        (
            "trailer_over_limit",
            limits(100, 8, 9),
            b"0\r\nA: 12345\r\n\r\n",
        ),
        ("zero_limits", limits(0, 0, 0), b"0\r\n\r\n"),
    ] {
        out.push((
            "body_decoder",
            format!("chunked_{name}"),
            body(BodyFraming::Chunked, l, SMALL, payload),
        ));
    }
    for (name, framing, l, payload) in [
        (
            "length_next",
            BodyFraming::Length(5),
            d,
            &b"helloGET / HTTP/1.1\r\n"[..],
        ),
        ("length_short", BodyFraming::Length(5), d, b"hel"),
        ("length_zero", BodyFraming::Length(0), d, b"NEXT"),
        (
            "length_u64_max",
            BodyFraming::Length(u64::MAX),
            limits(4, 4096, 16384),
            b"abcd",
        ),
        (
            "length_over_limit",
            BodyFraming::Length(5),
            limits(4, 4096, 16384),
            b"abcde",
        ),
        ("close_within", BodyFraming::Close, d, b"all until close"),
        (
            "close_over_limit",
            BodyFraming::Close,
            limits(2, 4096, 16384),
            b"abc",
        ),
        ("none", BodyFraming::None, d, b"NEXT"),
    ] {
        out.push((
            "body_decoder",
            name.to_string(),
            body(framing, l, SMALL, payload),
        ));
    }

    let requests: &[(&str, &str)] = &[
        ("get", "GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("post_cl", "POST /v1/logs?uid=7 HTTP/1.1\r\nHost: relay.example\r\nContent-Length: 5\r\n\r\nhello"),
        ("post_chunked", "POST /v1/logs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"),
        ("post_chunked_attack", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\nffffffffffffffff\r\n"),
        ("pipelined", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhiGET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("cl_te", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("te_cl", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"),
        ("dup_cl_same", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"),
        ("dup_cl_diff", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
        ("cl_list", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nhello"),
        ("cl_plus", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello"),
        ("cl_hex", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x5\r\n\r\nhello"),
        ("cl_huge", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n"),
        ("cl_u64_max", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551615\r\n\r\n"),
        ("te_gzip_chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
        ("te_twice", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
        ("te_xchunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n"),
        ("te_space_before_colon", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n"),
        ("te_tab", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\tchunked\t\r\n\r\n0\r\n\r\n"),
        ("te_http10", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("te_identity", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n"),
        ("bare_lf_request_line", "POST / HTTP/1.1\nHost: x\r\n\r\n"),
        ("bare_lf_end", "GET / HTTP/1.1\r\nHost: x\n\n"),
        ("bare_cr", "GET / HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n"),
        ("obs_fold", "GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n folded\r\n\r\n"),
        ("obs_fold_te", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n"),
        ("nul_value", "GET / HTTP/1.1\r\nHost: x\r\nX: a\0b\r\n\r\n"),
        ("del_value", "GET / HTTP/1.1\r\nHost: x\r\nX: a\x7fb\r\n\r\n"),
        ("missing_host", "GET / HTTP/1.1\r\n\r\n"),
        ("two_hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
        ("host_userinfo", "GET http://a@b/ HTTP/1.1\r\nHost: b\r\n\r\n"),
        ("absolute_form", "POST http://Relay.example:8080/v1/logs?x=1 HTTP/1.1\r\nHost: other\r\nContent-Length: 1\r\n\r\nx"),
        ("absolute_no_path", "GET http://relay.example?q HTTP/1.1\r\nHost: relay.example\r\n\r\n"),
        ("http10_absolute", "GET http://relay.example/ HTTP/1.0\r\n\r\n"),
        ("options_star", "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("connect_authority", "CONNECT relay.example:443 HTTP/1.1\r\nHost: relay.example:443\r\n\r\n"),
        ("relative_target", "GET v1/logs HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("expect_continue", "POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi"),
        ("expect_other", "POST / HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\n\r\n"),
        ("leading_empty_lines", "\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("http10_keep_alive", "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"),
        ("http2_version", "GET / HTTP/2.0\r\nHost: x\r\n\r\n"),
        ("two_spaces", "GET  / HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("utf8_target", "GET /\u{e9} HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("empty_host", "GET / HTTP/1.1\r\nHost:\r\n\r\n"),
    ];
    for (name, payload) in requests {
        out.push((
            "request_head",
            name.to_string(),
            request(65536, 100, Reads::WHOLE, payload),
        ));
        out.push((
            "request_head",
            format!("{name}_1"),
            request(65536, 100, ONE_BY_ONE, payload),
        ));
    }
    let get = "GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\n";
    out.push((
        "request_head",
        "max_headers_0".into(),
        request(65536, 0, SMALL, get),
    ));
    out.push((
        "request_head",
        "max_headers_1".into(),
        request(65536, 1, SMALL, get),
    ));
    out.push((
        "request_head",
        "max_headers_2".into(),
        request(65536, 2, SMALL, get),
    ));
    out.push((
        "request_head",
        "max_headers_200".into(),
        request(65536, 200, SMALL, get),
    ));
    out.push((
        "request_head",
        "max_headers_huge".into(),
        request(65536, u32::MAX, SMALL, get),
    ));
    out.push((
        "request_head",
        "head_at_limit".into(),
        request(get.len() as u32, 100, SMALL, get),
    ));
    out.push((
        "request_head",
        "head_over_limit".into(),
        request(get.len() as u32 - 1, 100, SMALL, get),
    ));
    out.push((
        "request_head",
        "head_limit_0".into(),
        request(0, 100, SMALL, get),
    ));

    let responses: &[(&str, bool, &[u8])] = &[
        ("ok_length", false, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello"),
        ("ok_chunked", false, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        ("ok_chunked_attack", false, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\nffffffffffffffff\r\n"),
        ("ok_gzip_chunked", false, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n"),
        ("ok_gzip_close", false, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nuntil close"),
        ("ok_chunked_trailing_comma", false, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked,\r\n\r\n0\r\n\r\n"),
        ("ok_close", false, b"HTTP/1.1 200 OK\r\n\r\nuntil close"),
        ("http10", false, b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nhi"),
        ("no_content_with_cl", false, b"HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n"),
        ("not_modified", false, b"HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n"),
        ("head_with_cl", true, b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n"),
        ("continue_then_ok", false, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"),
        ("six_interim", false, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
        ("switching", false, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"),
        ("cl_te", false, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("dup_cl_diff", false, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
        ("dup_cl_same", false, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"),
        ("status_000", false, b"HTTP/1.1 000 Zero\r\nContent-Length: 5\r\n\r\nhello"),
        ("status_099", false, b"HTTP/1.1 099 Low\r\nContent-Length: 5\r\n\r\nhello"),
        ("status_999", false, b"HTTP/1.1 999 High\r\nContent-Length: 5\r\n\r\nhello"),
        ("hop_by_hop", false, b"HTTP/1.1 200 OK\r\nConnection: x-hop, close\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nContent-Length: 0\r\n\r\n"),
        ("reason_obs_text", false, b"HTTP/1.1 200 \xe9t\xe9\r\nContent-Length: 0\r\n\r\n"),
        ("no_reason", false, b"HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n"),
        ("bare_lf", false, b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n"),
        ("obs_fold", false, b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n"),
        ("nul_value", false, b"HTTP/1.1 200 OK\r\nX: a\x00\r\n\r\n"),
        ("cl_negative", false, b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n"),
    ];
    for (name, head, payload) in responses {
        out.push((
            "response",
            name.to_string(),
            response(*head, d, Reads::WHOLE, payload),
        ));
        out.push((
            "response",
            format!("{name}_1"),
            response(*head, d, ONE_BY_ONE, payload),
        ));
    }
    out.push((
        "response",
        "body_over_limit".into(),
        response(
            false,
            limits(4, 4096, 16384),
            SMALL,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
    ));
    out
}

/// Writes the seeds to `fuzz/corpus/<target>/seed_<name>` (run with `--ignored`).
#[test]
#[ignore = "writes files: run it to regenerate the seeds"]
fn write_seeds() {
    for (target, name, bytes) in seeds() {
        let dir = corpus_dir().join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed_{name}")), bytes).unwrap();
    }
}

#[test]
fn seeds_pass_the_fuzz_checks() {
    for (target, name, bytes) in seeds() {
        eprintln!("{target}/{name}");
        check_for(target)(&bytes);
    }
}

#[test]
fn corpora_pass_the_fuzz_checks() {
    let mut files = 0;
    for target in ["request_head", "body_decoder", "response"] {
        let dir = corpus_dir().join(target);
        // The corpus is committed: a missing or empty folder is a broken checkout, not a pass.
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: cannot read the corpus ({e})", dir.display()));
        let mut paths: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
        assert!(
            !paths.is_empty(),
            "{}: the corpus is empty; restore it from git",
            dir.display()
        );
        paths.sort();
        for p in paths {
            let bytes = std::fs::read(&p).unwrap();
            eprintln!("{}", p.display());
            check_for(target)(&bytes);
            files += 1;
        }
    }
    eprintln!("{files} corpus files replayed");
}
