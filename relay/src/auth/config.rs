//! `[[consumers]]` and `[auth]`: who may send, with which credentials. Owns its validation.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::limit::config::LimitConfig;
use crate::problems::Problems;

/// `[auth]`: where relay looks for credentials (applies to every consumer).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Request header carrying an API key (case-insensitive). Default `X-API-Key`.
    #[serde(default = "defaults::api_key_header")]
    pub api_key_header: String,
    /// The realm named in `WWW-Authenticate` on a 401. Default `relay`.
    #[serde(default = "defaults::realm")]
    pub realm: String,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            api_key_header: defaults::api_key_header(),
            realm: defaults::realm(),
        }
    }
}

/// `[[consumers]]`: one client application and its credentials.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerConfig {
    /// Name: Kafka header `relay-consumer`, metrics label `consumer`, referenced by routes'
    /// `consumers`. 1 to 64 characters of `[A-Za-z0-9._-]`.
    pub name: String,
    /// SHA-256 (64 hex digits) of each API key this consumer may send in the API-key header
    /// (`printf %s "$KEY" | sha256sum`); the key itself is never stored. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_key_sha256: Vec<String>,
    /// A JWT (`Authorization: Bearer <token>`) this consumer may send. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtConfig>,
    /// Limits over all of this consumer's requests (every route). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitConfig>,
}

/// The JWT algorithms relay verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum JwtAlgorithm {
    /// HMAC-SHA-256 with a shared secret (`key_file` holds the secret bytes).
    HS256,
    /// RSA PKCS#1 v1.5 SHA-256 (`key_file`: a PEM public key, or `jwks_file`).
    RS256,
    /// ECDSA P-256 SHA-256 (`key_file`: a PEM public key, or `jwks_file`).
    ES256,
}

/// `[consumers.jwt]`: how this consumer's tokens are verified. A token is this consumer's when
/// its signature verifies with this key (and its `kid` matches when the JWKS has several keys).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// The only algorithm accepted (a token whose header says another is refused). Required.
    pub algorithm: JwtAlgorithm,
    /// HS256: the secret (surrounding whitespace trimmed, at least 32 bytes); RS256/ES256: a
    /// PEM public key. One of `key_file` and `jwks_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// RS256/ES256: a JWKS (`{"keys":[...]}`) file. One of `key_file` and `jwks_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<PathBuf>,
    /// Required `iss` claim. Default: not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Required `aud` claim (one of the token's audiences). Default: not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds. Default 30. `exp` is required.
    #[serde(default = "defaults::leeway_s")]
    pub leeway_s: u64,
}

/// A route's `auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// No credentials looked at (default).
    #[default]
    None,
    /// Credentials are checked when present (bad ones get 401); anonymous requests pass.
    Optional,
    /// A valid credential of an allowed consumer is required (401 / 403).
    Required,
}

/// Default values (serde needs functions).
pub mod defaults {
    /// `X-API-Key`.
    pub fn api_key_header() -> String {
        "X-API-Key".into()
    }
    /// `relay`.
    pub fn realm() -> String {
        "relay".into()
    }
    /// 30 s.
    pub fn leeway_s() -> u64 {
        30
    }
}

impl ConsumerConfig {
    /// Anchors relative key paths at `base` (the config file's directory).
    pub fn resolve_paths(&mut self, base: &Path) {
        if let Some(j) = &mut self.jwt {
            for p in [&mut j.key_file, &mut j.jwks_file].into_iter().flatten() {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
        }
    }
}

/// Validates `[auth]` and every `[[consumers]]` (names, hashes, readable keys).
pub fn validate(auth: &AuthConfig, consumers: &[ConsumerConfig], p: &mut Problems) {
    if relay_http_token(&auth.api_key_header).is_err() {
        p.push(
            "auth.api_key_header",
            format!("{:?} is not a header name", auth.api_key_header),
        );
    }
    if auth.realm.is_empty() || auth.realm.contains(['"', '\\']) || !auth.realm.is_ascii() {
        p.push(
            "auth.realm",
            "must be non-empty printable ASCII without quotes or backslashes",
        );
    }
    let mut names = std::collections::HashSet::new();
    let mut hashes = std::collections::HashMap::new();
    for (i, c) in consumers.iter().enumerate() {
        let f = format!("consumers[{i}]");
        if c.name.is_empty()
            || c.name.len() > 64
            || !c
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            p.push(
                format!("{f}.name"),
                format!(
                    "{:?} must be 1 to 64 characters of letters, digits, '.', '_' or '-'",
                    c.name
                ),
            );
        }
        if !names.insert(c.name.as_str()) {
            p.push(
                format!("{f}.name"),
                format!(
                    "consumer {:?} is defined twice; give each a unique name",
                    c.name
                ),
            );
        }
        if c.api_key_sha256.is_empty() && c.jwt.is_none() {
            p.push(
                f.clone(),
                "has no credential: set api_key_sha256 = [\"<sha256 hex of the key>\"] and/or [consumers.jwt]",
            );
        }
        for (j, h) in c.api_key_sha256.iter().enumerate() {
            match parse_sha256_hex(h) {
                Err(m) => p.push(format!("{f}.api_key_sha256[{j}]"), m),
                Ok(d) => {
                    if let Some(other) = hashes.insert(d, c.name.clone()) {
                        p.push(
                            format!("{f}.api_key_sha256[{j}]"),
                            format!("the same key hash is already a credential of consumer {other:?}; each key belongs to one consumer"),
                        );
                    }
                }
            }
        }
        if let Some(j) = &c.jwt {
            let files = usize::from(j.key_file.is_some()) + usize::from(j.jwks_file.is_some());
            if files != 1 {
                p.push(
                    format!("{f}.jwt"),
                    "set exactly one of key_file (HS256 secret or PEM public key) and jwks_file",
                );
            }
            if j.algorithm == JwtAlgorithm::HS256 && j.jwks_file.is_some() {
                p.push(
                    format!("{f}.jwt.jwks_file"),
                    "HS256 takes a key_file holding the shared secret, not a JWKS",
                );
            }
        }
        if let Some(l) = &c.limits {
            l.validate(&format!("{f}.limits"), p);
        }
    }
}

/// Parses 64 hex digits (either case) into a SHA-256 digest.
pub fn parse_sha256_hex(s: &str) -> Result<[u8; 32], String> {
    let b = s.as_bytes();
    if b.len() != 64 || !b.iter().all(u8::is_ascii_hexdigit) {
        return Err(format!(
            "{s:?} is not a SHA-256 in hex (64 hex digits): use the output of `printf %s \"$KEY\" | sha256sum`"
        ));
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
        *o = (hex(b[2 * i]) << 4) | hex(b[2 * i + 1]);
    }
    Ok(out)
}

fn relay_http_token(s: &str) -> Result<(), ()> {
    let ok = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(())
    }
}
