//! Unit tests of key reading, policy validation through relay's `Problems`, and `relay scrub`.

use std::path::Path;

use super::*;
use crate::problems::Problems;
use hashing::Hasher;

fn h(v: &str) -> String {
    format!("\"{}\"", Hasher::Sha256.hex(v.as_bytes()))
}

fn problems(p: &PiiPolicyConfig) -> Vec<String> {
    let mut pr = Problems::default();
    validate_policy(p, "pii.default", &mut pr);
    check_key_sources(p, "pii.default", &mut pr);
    pr.0.into_iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect()
}

#[test]
fn keys_are_validated_and_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "0123456789abcdef0123456789abcdef-SECRET";
    std::fs::write(dir.path().join("k1.key"), format!("{secret}\n")).unwrap();
    std::fs::write(dir.path().join("short.key"), "too-short\n").unwrap();
    let toml_text = r#"
fields = ["user_id"]
key_file = "k1.key"
key_id = "k1"
"#;
    let mut p: PiiPolicyConfig = toml::from_str(toml_text).unwrap();
    assert_eq!(p.hash, HashAlgorithm::HmacSha256);
    assert_eq!(p.max_depth, 64);
    p.resolve_paths(dir.path());
    assert!(problems(&p).is_empty(), "{:?}", problems(&p));
    let s = build(&p).unwrap();
    assert_eq!(s.key_id(), Some("k1"));
    let want = Hasher::hmac(secret.as_bytes()).hex(b"u1");
    assert_eq!(s.hash_value(b"u1"), want);
    let printed = toml::to_string_pretty(&p).unwrap();
    assert!(!printed.contains("SECRET") && !format!("{s:?}").contains("SECRET"));

    // Short key, missing file, missing key id, no key at all.
    let mut short = p.clone();
    short.key_file = Some(dir.path().join("short.key"));
    assert!(
        problems(&short)[0].contains("fewer than 32"),
        "{:?}",
        problems(&short)
    );
    assert!(!problems(&short)[0].contains("too-short"));
    let mut missing = p.clone();
    missing.key_file = Some(dir.path().join("nope.key"));
    assert!(problems(&missing)[0].starts_with("pii.default.key_file: cannot read"));
    let mut no_id = p.clone();
    no_id.key_id = None;
    assert!(problems(&no_id)[0].starts_with("pii.default.key_id"));
    let mut none = p.clone();
    none.key_file = None;
    assert!(problems(&none)[0].contains("needs a key"));
    assert!(build(&none).is_err());
    let mut sha_with_key = p.clone();
    sha_with_key.hash = HashAlgorithm::Sha256;
    assert!(problems(&sha_with_key)[0].contains("uses no key"));
}

#[test]
fn rotation_uses_the_active_key_and_checks_all() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("k1.key"), "a".repeat(32)).unwrap();
    std::env::set_var("RELAY_TEST_PII_K2", "b".repeat(40));
    let text = r#"
fields = ["uid"]
key_id = "k2"
[keys]
k1 = { file = "k1.key" }
k2 = { env = "RELAY_TEST_PII_K2" }
"#;
    let mut p: PiiPolicyConfig = toml::from_str(text).unwrap();
    p.resolve_paths(dir.path());
    assert!(problems(&p).is_empty(), "{:?}", problems(&p));
    let s = build(&p).unwrap();
    assert_eq!(s.key_id(), Some("k2"));
    assert_eq!(
        s.hash_value(b"x"),
        Hasher::hmac("b".repeat(40).as_bytes()).hex(b"x")
    );
    let printed = toml::to_string_pretty(&p).unwrap();
    assert!(
        printed.contains("RELAY_TEST_PII_K2") && !printed.contains("bbbb"),
        "{printed}"
    );
    let mut bad = p.clone();
    bad.key_id = Some("k3".into());
    assert!(
        problems(&bad)[0].contains("not one of the configured keys"),
        "{:?}",
        problems(&bad)
    );
    let mut broken = p.clone();
    broken.keys.insert(
        "k0".into(),
        KeySourceConfig {
            file: Some(dir.path().join("nope")),
            env: None,
        },
    );
    assert!(
        problems(&broken)[0].starts_with("pii.default.keys.k0"),
        "{:?}",
        problems(&broken)
    );
}

#[test]
fn policy_shape_is_validated() {
    let p = PiiPolicyConfig {
        hash: HashAlgorithm::Sha256,
        ..PiiPolicyConfig::default()
    };
    assert!(problems(&p)[0].contains("hashes nothing"));
    let p = PiiPolicyConfig {
        fields: vec!["".into()],
        paths: vec!["a..b".into(), "a[]x".into()],
        headers: vec!["Content-Length".into(), "bad header".into()],
        hash: HashAlgorithm::Sha256,
        max_depth: 0,
        ..PiiPolicyConfig::default()
    };
    let pr = problems(&p);
    assert_eq!(pr.len(), 6, "{pr:?}");
    assert!(toml::from_str::<PiiPolicyConfig>("fieldz = []").is_err());
}

#[test]
fn scrub_offline_matches_the_scrubber() {
    let dir = tempfile::tempdir().unwrap();
    let cfg_text = r#"
[server]
listen = "127.0.0.1:0"
[[upstreams]]
name = "t"
nodes = ["127.0.0.1:9"]
[[routes]]
name = "logs"
path = "/v1/logs"
upstream = "t"
pii = "default"
[[routes]]
name = "raw"
path = "/raw"
upstream = "t"
[pii.default]
fields = ["uid"]
hash = "sha256"
"#;
    let path = dir.path().join("relay.toml");
    let cfg = crate::config::Config::from_toml(cfg_text, Path::new(&path)).unwrap();
    let (out, receipt) =
        scrub_offline(&cfg.routes, &cfg.pii, "logs", None, b"{\"uid\":\"a\"}").unwrap();
    let receipt = receipt.unwrap();
    assert_eq!(receipt.pii_count, 1);
    assert!(receipt.policy.starts_with("default:"));
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!("{{\"uid\":{}}}", h("a"))
    );
    assert_eq!(
        scrub_offline(&cfg.routes, &cfg.pii, "raw", None, b"not json")
            .unwrap()
            .0,
        b"not json"
    );
    assert!(scrub_offline(&cfg.routes, &cfg.pii, "nope", None, b"{}")
        .unwrap_err()
        .contains("logs, raw"));
    assert!(scrub_offline(&cfg.routes, &cfg.pii, "logs", None, b"{")
        .unwrap_err()
        .starts_with("400 invalid_json"));
}

#[test]
fn path_params_are_accepted_when_a_route_reaches_them_and_refused_otherwise() {
    let cfg = |routes: &str, pp: &str, extra: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[[upstreams]]\nname = \"t\"\nnodes = [\"127.0.0.1:9\"]\n\
             {routes}\n[pii.default]\nfields = [\"user_id\"]\nhash = \"sha256\"\npath_params = {pp}\n{extra}"
        )
    };
    let errors = |text: &str| -> Vec<String> {
        match crate::config::Config::from_toml(text, Path::new("/x/relay.toml")) {
            Ok(_) => Vec::new(),
            Err(e) => e
                .errors
                .into_iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect(),
        }
    };
    let prefix = "[[routes]]\nname = \"users\"\npath = \"/users/\"\nmatch = \"prefix\"\nupstream = \"t\"\npii = \"default\"";
    let exact =
        "[[routes]]\nname = \"logs\"\npath = \"/v1/logs\"\nupstream = \"t\"\npii = \"default\"";
    // Reachable from the prefix route: accepted (it applies; e2e: scrub_e2e path_params_*).
    assert_eq!(
        errors(&cfg(prefix, "[\"/users/{user_id}/events\"]", "")),
        Vec::<String>::new()
    );
    // Only an exact route that can never match the pattern: refused, naming pattern and route.
    let got = errors(&cfg(exact, "[\"/users/{user_id}/events\"]", ""));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with("pii.default.path_params[0]: the pattern \"/users/{user_id}/events\"")
            && got[0].contains("logs (exact \"/v1/logs\")"),
        "{got:?}"
    );
    // Both routes: the second pattern is reachable from neither.
    let got = errors(&cfg(
        &format!("{prefix}\n{exact}"),
        "[\"/users/{user_id}/events\", \"/orders/{order_no}\"]",
        "",
    ));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].starts_with("pii.default.path_params[1]:"), "{got:?}");
    // An invalid pattern is named with what to write.
    let got = errors(&cfg(prefix, "[\"/users/x{id}\"]", ""));
    assert!(
        got.iter().any(|m| m
            .starts_with("pii.default.path_params[0]: \"/users/x{id}\" has an invalid segment")),
        "{got:?}"
    );
    // A quarantine topic without [kafka].
    let got = errors(&cfg(
        prefix,
        "[\"/users/{user_id}/events\"]",
        "[pii.default.guard]\nemail = \"report\"\nquarantine_topic = \"q\"\n",
    ));
    assert!(
        got.iter().any(|m| m.starts_with(
            "pii.default.guard.quarantine_topic: a quarantine topic needs a [kafka] section"
        )),
        "{got:?}"
    );
}

#[test]
fn pii_rules_on_headers_relay_handles_itself_are_refused_by_name() {
    for h in [
        "x-forwarded-for",
        "X_Request_Id",
        "x-relay-key-id",
        "x-relay-policy",
        "host",
    ] {
        let p: PiiPolicyConfig = toml::from_str(&format!(
            "fields = [\"user_id\"]\nhash = \"sha256\"\nheaders = [\"{h}\"]"
        ))
        .unwrap();
        let got = problems(&p);
        assert!(
            got.iter()
                .any(|m| m.starts_with("pii.default.headers[0]: the rule")
                    && m.contains(&format!("{h:?}"))
                    && m.contains("relay handles itself")),
            "{h}: {got:?}"
        );
    }
}
