//! Unit tests of the scrubber's semantics, errors and configuration.

use super::*;
use crate::guard::GuardConfig;

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

fn policy_with(f: impl FnOnce(&mut PiiPolicyConfig)) -> Scrubber {
    let mut p = PiiPolicyConfig {
        fields: vec!["user_id".into()],
        paths: vec!["user.id".into()],
        query_params: vec!["uid".into()],
        headers: vec!["x-device-id".into()],
        hash: HashAlgorithm::Sha256,
        ..PiiPolicyConfig::default()
    };
    f(&mut p);
    Scrubber::new(&p, None).unwrap()
}

/// Both engines, same answer (the differential property, on these fixtures too).
fn scrub_both(s: &Scrubber, body: &str) -> String {
    let a = scrub(&s.clone().with_engine(Engine::Walker), body);
    let b = scrub(&s.clone().with_engine(Engine::Simd), body);
    assert_eq!(a, b, "engines differ on {body}");
    a
}

#[test]
fn key_case_insensitive_only_when_configured() {
    let body = r#"{"User_ID":"u1","USER":{"Id":"u2"},"user_id":"u3"}"#;
    let exact = policy_with(|_| {});
    assert_eq!(
        scrub_both(&exact, body),
        format!(
            r#"{{"User_ID":"u1","USER":{{"Id":"u2"}},"user_id":{}}}"#,
            h("u3")
        )
    );
    let ci = policy_with(|p| p.key_case = KeyCase::Insensitive);
    assert_eq!(
        scrub_both(&ci, body),
        format!(
            r#"{{"User_ID":{},"USER":{{"Id":{}}},"user_id":{}}}"#,
            h("u1"),
            h("u2"),
            h("u3")
        )
    );
    let t: PiiPolicyConfig =
        toml::from_str("fields = [\"a\"]\nkey_case = \"insensitive\"").unwrap();
    assert_eq!(t.key_case, KeyCase::Insensitive);
    assert!(toml::from_str::<PiiPolicyConfig>("fields = [\"a\"]\nkey_case = \"fuzzy\"").is_err());
}

#[test]
fn header_names_fold_underscores_only_when_configured() {
    let off = policy_with(|_| {});
    assert!(off.is_pii_header("X-Device-Id"));
    assert!(!off.is_pii_header("X_Device_Id"));
    let on = policy_with(|p| p.header_fold_underscore = true);
    assert!(on.is_pii_header("X_Device_Id"));
    assert!(on.is_pii_header("x-device-id"));
    assert!(!on.is_pii_header("x-device-idx"));
    // A rule written with underscores matches both spellings too.
    let on2 = policy_with(|p| {
        p.headers = vec!["X_Device_Id".into()];
        p.header_fold_underscore = true;
    });
    assert!(on2.is_pii_header("x-device-id"));
}

#[test]
fn query_semicolons_and_brackets_only_when_configured() {
    let q = "a=1;uid=x&uid[]=y";
    let off = policy_with(|_| {});
    assert_eq!(off.scrub_query(q), None);
    let on = policy_with(|p| {
        p.query_separators = QuerySeparators::AmpSemicolon;
        p.query_array_brackets = true;
    });
    assert_eq!(
        on.scrub_query(q),
        Some(format!(
            "a=1;uid={}&uid[]={}",
            Hasher::Sha256.hex(b"x"),
            Hasher::Sha256.hex(b"y")
        ))
    );
    let t: PiiPolicyConfig =
        toml::from_str("query_params = [\"uid\"]\nquery_separators = \"&;\"").unwrap();
    assert_eq!(t.query_separators, QuerySeparators::AmpSemicolon);
}

#[test]
fn kv_pairs_hash_values_named_by_their_key_only_when_configured() {
    let body = r#"{"attributes":[{"key":"user_id","value":{"stringValue":"u-1"}},{"key":"other","value":{"stringValue":"x"}},{"value": 7 ,"key":"user_id"},{"key":"user\u005fid","value":"s"},{"key":"user_id","value":{"intValue":"42","arrayValue":{"values":[1]}}}],"key":"user_id","value":"top-level object: not a pair"}"#;
    let off = policy_with(|_| {});
    assert_eq!(scrub_both(&off, body), body);
    let on = policy_with(|p| {
        p.kv_pairs = vec![KvPairConfig {
            key: "key".into(),
            value: "value".into(),
        }]
    });
    let want = format!(
        r#"{{"attributes":[{{"key":"user_id","value":{{"stringValue":{}}}}},{{"key":"other","value":{{"stringValue":"x"}}}},{{"value": {} ,"key":"user_id"}},{{"key":"user\u005fid","value":{}}},{{"key":"user_id","value":{{"intValue":{},"arrayValue":{}}}}}],"key":"user_id","value":"top-level object: not a pair"}}"#,
        h("u-1"),
        h("7"),
        h("s"),
        h("42"),
        h("{\"values\":[1]}")
    );
    assert_eq!(scrub_both(&on, body), want);
    let r = on.scrub_body(None, None, body.as_bytes()).unwrap();
    assert_eq!(r.fields_hashed, 5);
    let t: PiiPolicyConfig =
        toml::from_str("fields = [\"user_id\"]\nkv_pairs = [{ key = \"key\", value = \"value\" }]")
            .unwrap();
    assert_eq!(t.kv_pairs.len(), 1);
}

#[test]
fn headers_relay_handles_itself_are_refused_with_the_reason() {
    for name in [
        "x-forwarded-for",
        "X-Request-Id",
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "x-relay-key-id",
        "X_Forwarded_For",
    ] {
        let p = PiiPolicyConfig {
            headers: vec![name.into()],
            hash: HashAlgorithm::Sha256,
            ..PiiPolicyConfig::default()
        };
        let mut pr = Problems::default();
        p.validate("pii.default", &mut pr);
        assert_eq!(pr.0.len(), 1, "{name}: {pr:?}");
        let (field, msg) = &pr.0[0];
        assert_eq!(field, "pii.default.headers[0]");
        assert!(
            msg.contains(&format!("{name:?}")) && msg.contains("relay handles itself"),
            "{msg}"
        );
    }
}

fn guarded(g: GuardConfig) -> Scrubber {
    policy_with(|p| p.guard = g)
}

#[test]
fn guard_reject_hash_report_and_off() {
    let body = r#"{"user_id":"u1","note":"mail me at jane@example.com","pay":{"card":"4111 1111 1111 1111"},"list":["ok","call +49 30 1234567"]}"#;
    // Off: forwarded as scrubbed.
    let off = policy_with(|_| {});
    let plain = scrub(&off, body);
    assert!(plain.contains("jane@example.com"));
    // Reject: 422, names the detector and the path, never the value.
    let s = guarded(GuardConfig {
        email: Some(GuardAction::Reject),
        ..GuardConfig::default()
    });
    let e = s.scrub_body(None, None, body.as_bytes()).unwrap_err();
    assert_eq!((e.status, e.code), (422, "pii_detected"));
    assert!(
        e.message.contains("email") && e.message.contains("$.note"),
        "{}",
        e.message
    );
    assert!(!e.message.contains("jane"));
    // Hash: spans replaced, the rest of the string kept.
    let s = guarded(GuardConfig {
        email: Some(GuardAction::Hash),
        card: Some(GuardAction::Hash),
        ..GuardConfig::default()
    });
    let r = s.scrub_body(None, None, body.as_bytes()).unwrap();
    let out = String::from_utf8(r.body).unwrap();
    assert!(out.contains(&format!(
        "\"mail me at {}\"",
        Hasher::Sha256.hex(b"jane@example.com")
    )));
    assert!(out.contains(&format!(
        "\"card\":\"{}\"",
        Hasher::Sha256.hex(b"4111 1111 1111 1111")
    )));
    assert_eq!(r.fields_hashed, 3);
    serde_json::from_str::<serde_json::Value>(&out).unwrap();
    // Each hashing detector is named once per value it matched in (per-detector metrics).
    let mut hashed: Vec<(&str, GuardAction)> = r
        .findings
        .iter()
        .map(|f| (f.detector.as_str(), f.action))
        .collect();
    hashed.sort_by_key(|(d, _)| *d);
    assert_eq!(
        hashed,
        [("card", GuardAction::Hash), ("email", GuardAction::Hash)]
    );
    // Report: forwarded unchanged, findings returned.
    let s = guarded(GuardConfig {
        phone: Some(GuardAction::Report),
        ..GuardConfig::default()
    });
    let r = s.scrub_body(None, None, body.as_bytes()).unwrap();
    assert_eq!(String::from_utf8(r.body).unwrap(), plain);
    assert_eq!(
        r.findings,
        vec![Finding {
            detector: "phone".into(),
            place: "$.list[1]".into(),
            action: GuardAction::Report,
        }]
    );
    // NDJSON paths carry the line; query and headers are guarded too.
    let s = guarded(GuardConfig {
        ip: Some(GuardAction::Reject),
        email: Some(GuardAction::Hash),
        ..GuardConfig::default()
    });
    let e = s
        .scrub_body(
            Some("application/x-ndjson"),
            None,
            b"{}\n{\"a\":[\"10.1.2.3\"]}\n",
        )
        .unwrap_err();
    assert!(e.message.contains("line 2: $.a[0]"), "{}", e.message);
    assert_eq!(e.detector.as_deref(), Some("ip"));
    assert_eq!(
        s.guard_detectors(),
        [
            ("email".to_string(), GuardAction::Hash),
            ("ip".to_string(), GuardAction::Reject)
        ]
    );
    let mut f = Vec::new();
    assert_eq!(
        s.guard_query("x=1&to=a%40b.io", &mut f).unwrap(),
        Some(format!("x=1&to={}", Hasher::Sha256.hex(b"a@b.io")))
    );
    assert!(s
        .guard_header("X-Client", b"ip 10.0.0.1", &mut f)
        .unwrap_err()
        .message
        .contains("header.x-client"));
    assert_eq!(
        s.guard_header("User-Agent", b"Mozilla/5.0", &mut f),
        Ok(None)
    );
}

#[test]
fn path_params_hash_matching_segments_and_only_when_configured() {
    let s = policy_with(|p| {
        p.path_params = vec![
            "/v1/users/{user_id}/events".into(),
            "/v1/devices/{device_id}".into(),
        ]
    });
    let u = Hasher::Sha256.hex(b"alice@example.com");
    assert_eq!(
        s.scrub_path("/v1/users/alice%40example.com/events"),
        Ok(Some((format!("/v1/users/{u}/events"), 1)))
    );
    assert_eq!(
        s.scrub_path("/v1/devices/d-9"),
        Ok(Some((
            format!("/v1/devices/{}", Hasher::Sha256.hex(b"d-9")),
            1
        )))
    );
    assert_eq!(s.scrub_path("/v1/users/alice/other"), Ok(None));
    let e = s.scrub_path("/v1/users/alice/events/").unwrap_err();
    assert_eq!((e.status, e.code), (400, "ambiguous_path"));
    assert!(
        e.message.contains("\"/v1/users/{user_id}/events\""),
        "{}",
        e.message
    );
    assert!(!e.message.contains("alice"), "{}", e.message);
    // Off: the same path passes unchanged.
    let off = policy_with(|_| {});
    assert_eq!(
        off.scrub_path("/v1/users/alice%40example.com/events"),
        Ok(None)
    );
    // The rules are part of the policy digest.
    assert_ne!(s.policy_digest(), off.policy_digest());
    // `relay check`: a pattern that cannot apply is named.
    let mut p = Problems::default();
    PiiPolicyConfig {
        fields: vec!["x".into()],
        path_params: vec!["/ok/{id}".into(), "no-slash/{id}".into(), "/none".into()],
        ..PiiPolicyConfig::default()
    }
    .validate("pii.p", &mut p);
    let fields: Vec<&str> = p.0.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        fields,
        ["pii.p.path_params[1]", "pii.p.path_params[2]"],
        "{p:?}"
    );
    // A policy with only path parameters hashes something.
    let mut p = Problems::default();
    PiiPolicyConfig {
        path_params: vec!["/u/{id}".into()],
        ..PiiPolicyConfig::default()
    }
    .validate("pii.p", &mut p);
    assert!(p.is_empty(), "{p:?}");
}

/// (line, element, value of slot 0, value of slot 1) of one captured event.
type CapturedEvent = (Option<usize>, usize, Option<Captured>, Option<Captured>);

/// Captures of both engines for one body (asserting they agree), as (line, element, value of
/// slot 0, value of slot 1) per event.
fn captured(s: &Scrubber, ct: &str, body: &str, names: &[&str]) -> Vec<CapturedEvent> {
    let spec = CaptureSpec::new(names).unwrap();
    let mut out = None;
    for engine in [Engine::Walker, Engine::Simd] {
        let r = s
            .clone()
            .with_engine(engine)
            .scrub_body_capturing(Some(ct), None, body.as_bytes(), &spec)
            .unwrap();
        let v: Vec<_> = r
            .captures
            .events()
            .map(|e| (e.line, e.element, e.get(0).cloned(), e.get(1).cloned()))
            .collect();
        if let Some(prev) = &out {
            assert_eq!(prev, &v, "engines disagree on {body}");
        }
        out = Some(v);
    }
    out.unwrap()
}

#[test]
fn root_members_are_captured_raw_escaped_last_duplicate_winning_in_both_engines() {
    let s = sha_policy(&["user_id"], &[]);
    let str_ = |v: &str| Some(Captured::Str(v.into()));
    // Escaped value and key, a PII member captured before hashing, a nested member ignored.
    let body = r#"{"ev\u0065nt_type":"purch\u0061se","user_id":"u-1","x":{"event_type":"no"}}"#;
    let got = captured(&s, "application/json", body, &["event_type", "user_id"]);
    assert_eq!(got, vec![(None, 0, str_("purchase"), str_("u-1"))]);
    // The forwarded body still carries only the pseudonym.
    assert!(!scrub(&s, body).contains("u-1"));
    // Duplicates: the last wins; non-strings by kind.
    let body = r#"{"event_type":"a","event_type":"b","user_id":12.50e3}"#;
    let got = captured(&s, "application/json", body, &["event_type", "user_id"]);
    assert_eq!(got[0].2, str_("b"));
    assert_eq!(got[0].3, Some(Captured::Scalar("12.50e3".into())));
    let body =
        r#"[{"event_type":{"a":1}},{"event_type":[1]},{"event_type":null},7,{"event_type":true}]"#;
    let got = captured(&s, "application/json", body, &["event_type", "user_id"]);
    let kinds: Vec<_> = got.iter().map(|e| (e.1, e.2.clone())).collect();
    assert_eq!(
        kinds,
        vec![
            (0, Some(Captured::Object)),
            (1, Some(Captured::Array)),
            (2, Some(Captured::Null)),
            (3, None),
            (4, Some(Captured::Scalar("true".into()))),
        ]
    );
    // NDJSON: one event per line (an array line: one per element), blank lines skipped.
    let body = "{\"event_type\":\"a\"}\n\n[{\"event_type\":\"b\"},{}]\n\"scalar\"\n";
    let got = captured(&s, "application/x-ndjson", body, &["event_type", "user_id"]);
    let lines: Vec<_> = got.iter().map(|e| (e.0, e.1, e.2.clone())).collect();
    assert_eq!(
        lines,
        vec![
            (Some(1), 0, str_("a")),
            (Some(3), 0, str_("b")),
            (Some(3), 1, None),
            (Some(4), 0, None),
        ]
    );
    // Huge: a value over the limit is TooLong, at the limit it is kept; a big body with
    // padding takes the simd engine for real.
    let pad = "p".repeat(4096);
    let at = "x".repeat(capture::MAX_CAPTURED_BYTES);
    let over = format!("{at}y");
    let escaped_over = "\\u0061".repeat(capture::MAX_CAPTURED_BYTES + 1);
    let body = format!(
        "[{{\"pad\":\"{pad}\",\"event_type\":\"{at}\"}},{{\"event_type\":\"{over}\"}},{{\"event_type\":\"{escaped_over}\"}}]"
    );
    let got = captured(&s, "application/json", &body, &["event_type", "user_id"]);
    assert_eq!(got[0].2, str_(&at));
    assert_eq!(got[1].2, Some(Captured::TooLong));
    assert_eq!(got[2].2, Some(Captured::TooLong));
    // Nothing asked, nothing captured.
    let r = s.scrub_body(None, None, body.as_bytes()).unwrap();
    assert!(r.captures.is_empty());
}
