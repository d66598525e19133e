//! Unit tests of the scrubber's semantics, errors and configuration.

use super::*;

fn sha_policy(fields: &[&str], paths: &[&str]) -> Scrubber {
    Scrubber::new(
        &PiiPolicyConfig {
            fields: fields.iter().map(|s| s.to_string()).collect(),
            paths: paths.iter().map(|s| s.to_string()).collect(),
            query_params: vec!["uid".into()],
            headers: vec!["X-Device-Id".into()],
            hash: HashAlgorithm::Sha256,
            ..PiiPolicyConfig::default()
        },
        None,
    )
    .unwrap()
}

fn h(v: &str) -> String {
    format!("\"{}\"", Hasher::Sha256.hex(v.as_bytes()))
}

fn scrub(s: &Scrubber, body: &str) -> String {
    String::from_utf8(
        s.scrub_body(Some("application/json"), None, body.as_bytes())
            .unwrap()
            .body,
    )
    .unwrap()
}

fn code(s: &Scrubber, ct: Option<&str>, body: &[u8]) -> (&'static str, u16) {
    let e = s.scrub_body(ct, None, body).unwrap_err();
    (e.code, e.status)
}

#[test]
fn each_value_type_is_hashed_as_specified_and_formatting_is_kept() {
    let s = sha_policy(&["user_id"], &[]);
    let body = "{ \"a\" :1,\n  \"user_id\" : \"u-1\" , \"x\":[ {\"user_id\": 12.50e3}, {\"user_id\":true},\
                {\"user_id\":null}, {\"user_id\": { \"k\" : [1, \"a b\"] }} ] }";
    let want = format!(
        "{{ \"a\" :1,\n  \"user_id\" : {} , \"x\":[ {{\"user_id\": {}}}, {{\"user_id\":{}}},{{\"user_id\":null}}, \
         {{\"user_id\": {}}} ] }}",
        h("u-1"),
        h("12.50e3"),
        h("true"),
        h("{\"k\":[1,\"a b\"]}")
    );
    assert_eq!(scrub(&s, body), want);
    let r = s.scrub_body(None, None, body.as_bytes()).unwrap();
    assert_eq!(r.fields_hashed, 4, "null is not counted");
}

#[test]
fn keys_match_after_unescaping_values_hash_decoded_and_duplicates_all_hashed() {
    let s = sha_policy(&["user_id"], &[]);
    let body = r#"{"\u0075ser_id":"a\"b\u00e9","user_id":"x","user\u005fid":"\ud83d\ude00"}"#;
    let want = format!(
        r#"{{"\u0075ser_id":{},"user_id":{},"user\u005fid":{}}}"#,
        h("a\"b\u{e9}"),
        h("x"),
        h("\u{1F600}")
    );
    assert_eq!(scrub(&s, body), want);
}

#[test]
fn paths_follow_the_event_root_and_batches() {
    let s = sha_policy(&[], &["user.id", "events[].device.id", "tags[]"]);
    let body = r#"{"id":"keep","user":{"id":"u1","name":"n"},"events":[{"device":{"id":"d1","os":"x"}},{"device":{"id":7}}],"tags":["t1",{"a":1}],"other":{"user":{"id":"keep2"}}}"#;
    let want = format!(
        r#"{{"id":"keep","user":{{"id":{},"name":"n"}},"events":[{{"device":{{"id":{},"os":"x"}}}},{{"device":{{"id":{}}}}}],"tags":[{},{}],"other":{{"user":{{"id":"keep2"}}}}}}"#,
        h("u1"),
        h("d1"),
        h("7"),
        h("t1"),
        h("{\"a\":1}")
    );
    assert_eq!(scrub(&s, body), want);
    // A top-level array is a batch of events.
    let batch = r#"[{"user":{"id":"u1"}},{"user":{"id":"u2"}}]"#;
    let want = format!(
        r#"[{{"user":{{"id":{}}}}},{{"user":{{"id":{}}}}}]"#,
        h("u1"),
        h("u2")
    );
    assert_eq!(scrub(&s, batch), want);
}

#[test]
fn ndjson_keeps_lines_blank_lines_and_crlf() {
    let s = sha_policy(&["uid"], &[]);
    let body = "{\"uid\":\"a\"}\n\n{\"uid\":\"b\", \"n\":1}\r\n{\"x\":2}";
    let out = s
        .scrub_body(Some("application/x-ndjson"), None, body.as_bytes())
        .unwrap();
    let want = format!(
        "{{\"uid\":{}}}\n\n{{\"uid\":{}, \"n\":1}}\r\n{{\"x\":2}}",
        h("a"),
        h("b")
    );
    assert_eq!(String::from_utf8(out.body).unwrap(), want);
    assert_eq!(out.fields_hashed, 2);
    let e = s
        .scrub_body(
            Some("application/x-ndjson"),
            None,
            b"{\"uid\":1}\n{\"uid\":2}{}\n",
        )
        .unwrap_err();
    assert_eq!(e.code, "invalid_json");
    assert!(e.message.contains("line 2"), "{}", e.message);
}

#[test]
fn fail_closed_codes() {
    let s = sha_policy(&["uid"], &[]);
    let ct = Some("application/json");
    for bad in [
        &b"{"[..],
        b"{\"uid\":\"secret\"",
        b"{\"uid\":\"secret\",}",
        b"[1,]",
        b"{\"a\":01}",
        b"{\"a\":1.}",
        b"{\"a\":-}",
        b"{\"a\":tru}",
        b"{\"a\":\"\\x\"}",
        b"{\"a\":\"\\ud800\"}",
        b"{\"a\":\"\\udc00\"}",
        b"{\"a\":\"tab\there\"}",
        b"{} {}",
        b"{'a':1}",
        b"{\"a\" 1}",
        b"NaN",
    ] {
        assert_eq!(
            code(&s, ct, bad),
            ("invalid_json", 400),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    assert_eq!(code(&s, ct, b"{\"a\":\"\xff\"}"), ("invalid_utf8", 400));
    assert_eq!(code(&s, ct, b"  \n"), ("empty_body", 400));
    assert_eq!(
        code(&s, Some("text/plain"), b"{}"),
        ("unsupported_media_type", 415)
    );
    let e = s.scrub_body(ct, Some("gzip"), b"{}").unwrap_err();
    assert_eq!((e.code, e.status), ("unsupported_content_encoding", 415));
    let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
    assert_eq!(code(&s, ct, deep.as_bytes()), ("too_deep", 400));
    let ok = format!("{}{}", "[".repeat(64), "]".repeat(64));
    assert!(s.scrub_body(ct, None, ok.as_bytes()).is_ok());
    // Deep inside a PII value is still too deep.
    let deep_pii = format!("{{\"uid\":{}{}}}", "[".repeat(64), "]".repeat(64));
    assert_eq!(code(&s, ct, deep_pii.as_bytes()), ("too_deep", 400));
    // The error never echoes the body.
    let e = s
        .scrub_body(ct, None, b"{\"uid\":\"SECRET-VALUE\" oops}")
        .unwrap_err();
    assert!(!e.message.contains("SECRET"), "{}", e.message);
    // Zero bytes: nothing to scrub.
    assert_eq!(s.scrub_body(ct, None, b"").unwrap().body, b"");
}

#[test]
fn key_hash_is_the_first_value_in_the_original() {
    let s = sha_policy(&["uid"], &[]);
    let body = br#"{"a":{"uid":null},"b":[{"uid":"first"}],"uid":"second"}"#;
    assert_eq!(
        s.key_hash(None, body, "uid"),
        Some(Hasher::Sha256.hex(b"first")),
        "null is skipped"
    );
    let body = br#"{"b":[{"uid":"first"}],"uid":"second"}"#;
    assert_eq!(
        s.key_hash(None, body, "uid"),
        Some(Hasher::Sha256.hex(b"first"))
    );
    assert_eq!(s.key_hash(None, body, "nope"), None);
    assert_eq!(s.key_hash(None, b"{\"uid\":", "uid"), None);
    let nd = b"{\"x\":1}\n{\"uid\":42}\n";
    assert_eq!(
        s.key_hash(Some("application/x-ndjson"), nd, "uid"),
        Some(Hasher::Sha256.hex(b"42"))
    );
}

#[test]
fn query_and_headers() {
    let s = sha_policy(&["uid"], &[]);
    assert_eq!(
        s.scrub_query("a=1&uid=x"),
        Some(format!("a=1&uid={}", Hasher::Sha256.hex(b"x")))
    );
    assert_eq!(s.scrub_query("a=1"), None);
    assert!(s.is_pii_header("x-device-id"));
    assert!(!s.is_pii_header("x-other"));
}
