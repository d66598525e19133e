//! Unit tests of the authenticator: API keys, and JWTs generated here (secrets, openssl keys)
//! against every claim and the algorithm-confusion attack.

use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, EncodingKey, Header};
use relay_http::HeadLimits;
use relay_http::RequestHead;
use sha2::{Digest, Sha256};

use super::*;

const SECRET: &str = "0123456789abcdef0123456789abcdef-hs256";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn head(headers: &[(&str, &str)]) -> RequestHead {
    let mut raw = String::from("POST /v1/logs HTTP/1.1\r\nHost: a\r\n");
    for (n, v) in headers {
        raw.push_str(&format!("{n}: {v}\r\n"));
    }
    raw.push_str("\r\n");
    RequestHead::parse(
        raw.as_bytes(),
        HeadLimits {
            max_header_bytes: 65536,
            max_headers: 100,
        },
    )
    .unwrap()
    .unwrap()
    .0
}

fn openssl(dir: &Path, args: &[&str]) {
    let st = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .status()
        .expect("openssl on PATH");
    assert!(st.success(), "openssl {args:?}");
}

struct Keys {
    _dir: tempfile::TempDir,
    rsa_private: Vec<u8>,
    rsa_public_path: std::path::PathBuf,
    ec_private: Vec<u8>,
    cfgs: Vec<ConsumerConfig>,
}

fn jwt_cfg(alg: JwtAlgorithm, key: &Path) -> JwtConfig {
    JwtConfig {
        algorithm: alg,
        key_file: Some(key.to_path_buf()),
        jwks_file: None,
        issuer: Some("https://id.example".into()),
        audience: Some("relay".into()),
        leeway_s: 5,
    }
}

fn keys() -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl(
        d,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "rsa.pem",
        ],
    );
    openssl(
        d,
        &["pkey", "-in", "rsa.pem", "-pubout", "-out", "rsa.pub.pem"],
    );
    openssl(
        d,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "ec.pem",
        ],
    );
    openssl(
        d,
        &["pkey", "-in", "ec.pem", "-pubout", "-out", "ec.pub.pem"],
    );
    // jsonwebtoken signs ES256 with a PKCS#8 key.
    openssl(
        d,
        &[
            "pkcs8",
            "-topk8",
            "-nocrypt",
            "-in",
            "ec.pem",
            "-out",
            "ec.p8.pem",
        ],
    );
    std::fs::write(d.join("hs.key"), format!("{SECRET}\n")).unwrap();
    let api_hash = format!("{:x}", Sha256::digest(b"ios-key"));
    let cfgs = vec![
        ConsumerConfig {
            name: "ios-app".into(),
            api_key_sha256: vec![api_hash],
            jwt: Some(jwt_cfg(JwtAlgorithm::HS256, &d.join("hs.key"))),
            limits: None,
        },
        ConsumerConfig {
            name: "web".into(),
            api_key_sha256: vec![],
            jwt: Some(jwt_cfg(JwtAlgorithm::RS256, &d.join("rsa.pub.pem"))),
            limits: None,
        },
        ConsumerConfig {
            name: "tv".into(),
            api_key_sha256: vec![],
            jwt: Some(jwt_cfg(JwtAlgorithm::ES256, &d.join("ec.pub.pem"))),
            limits: None,
        },
    ];
    Keys {
        rsa_private: std::fs::read(d.join("rsa.pem")).unwrap(),
        rsa_public_path: d.join("rsa.pub.pem"),
        ec_private: std::fs::read(d.join("ec.p8.pem")).unwrap(),
        _dir: dir,
        cfgs,
    }
}

fn claims(iss: &str, aud: &str, exp_in: i64, nbf_in: i64) -> serde_json::Value {
    let n = now() as i64;
    serde_json::json!({"iss": iss, "aud": aud, "exp": n + exp_in, "nbf": n + nbf_in, "sub": "x"})
}

fn bearer(a: &Authenticator, token: &str) -> Result<Option<(usize, Credential)>, AuthError> {
    a.authenticate(&head(&[("Authorization", &format!("Bearer {token}"))]))
}

#[test]
fn api_keys_and_jwts_identify_their_consumer_and_everything_else_is_refused() {
    let k = keys();
    let a = Authenticator::build(&AuthConfig::default(), &k.cfgs).unwrap();
    // API key.
    assert_eq!(
        a.authenticate(&head(&[("X-API-Key", "ios-key")])).unwrap(),
        Some((0, Credential::ApiKey))
    );
    assert!(matches!(
        a.authenticate(&head(&[("x-api-key", "wrong")])),
        Err(AuthError::UnknownKey { .. })
    ));
    assert_eq!(a.authenticate(&head(&[])).unwrap(), None);

    let ok = claims("https://id.example", "relay", 600, -10);
    let hs = EncodingKey::from_secret(SECRET.as_bytes());
    let rs = EncodingKey::from_rsa_pem(&k.rsa_private).unwrap();
    let es = EncodingKey::from_ec_pem(&k.ec_private).unwrap();
    let h = |alg| Header::new(alg);
    use jsonwebtoken::Algorithm::*;
    assert_eq!(
        bearer(&a, &encode(&h(HS256), &ok, &hs).unwrap()).unwrap(),
        Some((0, Credential::Bearer))
    );
    assert_eq!(
        bearer(&a, &encode(&h(RS256), &ok, &rs).unwrap()).unwrap(),
        Some((1, Credential::Bearer))
    );
    assert_eq!(
        bearer(&a, &encode(&h(ES256), &ok, &es).unwrap()).unwrap(),
        Some((2, Credential::Bearer))
    );

    let refused =
        |c: &serde_json::Value| bearer(&a, &encode(&h(RS256), c, &rs).unwrap()).unwrap_err();
    assert_eq!(
        refused(&claims("https://id.example", "relay", -60, -120)),
        AuthError::Jwt(JwtError::Claims("it has expired (exp)"))
    );
    assert_eq!(
        refused(&claims("https://id.example", "relay", 600, 120)),
        AuthError::Jwt(JwtError::Claims("it is not valid yet (nbf)"))
    );
    assert_eq!(
        refused(&claims("https://id.example", "other", 600, -10)),
        AuthError::Jwt(JwtError::Claims("wrong audience (aud)"))
    );
    assert_eq!(
        refused(&claims("https://evil.example", "relay", 600, -10)),
        AuthError::Jwt(JwtError::Claims("wrong issuer (iss)"))
    );
    assert_eq!(
        refused(&serde_json::json!({"iss": "https://id.example", "aud": "relay"})),
        AuthError::Jwt(JwtError::Claims("a required claim (exp) is missing"))
    );
    // Within the leeway (5 s): an exp 2 s ago still passes.
    bearer(
        &a,
        &encode(
            &h(RS256),
            &claims("https://id.example", "relay", -2, -10),
            &rs,
        )
        .unwrap(),
    )
    .unwrap()
    .unwrap();

    // Algorithm confusion: an HS256 token whose "secret" is the RSA public key must not pass
    // as the RS256 consumer (nor as the HS256 one, whose secret differs).
    let public_pem = std::fs::read(&k.rsa_public_path).unwrap();
    let forged = encode(&h(HS256), &ok, &EncodingKey::from_secret(&public_pem)).unwrap();
    assert_eq!(
        bearer(&a, &forged).unwrap_err(),
        AuthError::Jwt(JwtError::BadSignature)
    );
    // A token signed by a key nobody has.
    let stranger = encode(
        &h(HS256),
        &ok,
        &EncodingKey::from_secret(b"another-secret-of-32-bytes-or-more!!"),
    )
    .unwrap();
    assert_eq!(
        bearer(&a, &stranger).unwrap_err(),
        AuthError::Jwt(JwtError::BadSignature)
    );
    // alg "none" and garbage.
    assert_eq!(
        bearer(&a, "eyJhbGciOiJub25lIn0.e30.").unwrap_err(),
        AuthError::Jwt(JwtError::Malformed)
    );
    assert_eq!(
        bearer(&a, "not-a-jwt").unwrap_err(),
        AuthError::Jwt(JwtError::Malformed)
    );
    assert_eq!(
        a.authenticate(&head(&[("Authorization", "Basic dXNlcjpwYXNz")]))
            .unwrap_err(),
        AuthError::NotBearer
    );
}

#[test]
fn jwks_files_verify_by_kid_and_bad_key_files_are_refused_with_the_reason() {
    let k = keys();
    let d = k._dir.path();
    // A JWKS with the RSA public key (n, e from openssl), kid "k1".
    let out = Command::new("openssl")
        .args(["rsa", "-pubin", "-in", "rsa.pub.pem", "-noout", "-modulus"])
        .current_dir(d)
        .output()
        .unwrap();
    let hex = String::from_utf8(out.stdout).unwrap();
    let hex = hex.trim().trim_start_matches("Modulus=");
    let n: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let jwks = serde_json::json!({"keys": [{"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig", "n": b64.encode(&n), "e": "AQAB"}]});
    std::fs::write(d.join("jwks.json"), jwks.to_string()).unwrap();
    let mut c = k.cfgs[1].clone();
    c.jwt.as_mut().unwrap().key_file = None;
    c.jwt.as_mut().unwrap().jwks_file = Some(d.join("jwks.json"));
    let a = Authenticator::build(&AuthConfig::default(), &[c]).unwrap();
    let rs = EncodingKey::from_rsa_pem(&k.rsa_private).unwrap();
    let mut h = Header::new(jsonwebtoken::Algorithm::RS256);
    h.kid = Some("k1".into());
    let ok = claims("https://id.example", "relay", 600, -10);
    assert_eq!(
        bearer(&a, &encode(&h, &ok, &rs).unwrap()).unwrap(),
        Some((0, Credential::Bearer))
    );
    h.kid = Some("k2".into());
    assert!(bearer(&a, &encode(&h, &ok, &rs).unwrap()).is_err());

    // Problems name the consumer and say what to fix.
    std::fs::write(d.join("short.key"), "short").unwrap();
    let mut bad = k.cfgs.clone();
    bad[0].jwt.as_mut().unwrap().key_file = Some(d.join("short.key"));
    bad[1].jwt.as_mut().unwrap().key_file = Some(d.join("missing.pem"));
    bad[2].jwt.as_mut().unwrap().key_file = Some(d.join("rsa.pub.pem"));
    let mut p = crate::problems::Problems::default();
    check_sources(&bad, &mut p);
    let text: Vec<String> =
        p.0.iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect();
    assert_eq!(p.0.len(), 3, "{text:#?}");
    assert!(
        text[0].starts_with("consumers[0].jwt: ") && text[0].contains("at least 32 bytes"),
        "{text:#?}"
    );
    assert!(
        text[1].starts_with("consumers[1].jwt: ") && text[1].contains("cannot read"),
        "{text:#?}"
    );
    assert!(
        text[2].starts_with("consumers[2].jwt: ")
            && text[2].contains("not a PEM public key for ES256"),
        "{text:#?}"
    );
}
