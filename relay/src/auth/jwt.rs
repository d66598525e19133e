//! JWT verification (jsonwebtoken): one verifier per consumer, pinned to one algorithm, with
//! its key(s) from a secret file, a PEM public key or a JWKS file; `exp` required, `nbf`,
//! `iss` and `aud` checked with the configured leeway.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::config::{JwtAlgorithm, JwtConfig};

/// Why a token was refused (the message the 401 carries; never the token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not three base64url parts, or a header that does not parse.
    #[error("the bearer token is not a JWT")]
    Malformed,
    /// Verified by no consumer's key (wrong key, wrong algorithm, bad signature).
    #[error("the bearer token's signature does not verify with any consumer's key")]
    BadSignature,
    /// The signature verified but a claim was refused.
    #[error("the bearer token was refused: {0}")]
    Claims(&'static str),
}

/// One consumer's compiled JWT policy.
pub struct JwtVerifier {
    alg: Algorithm,
    keys: Vec<(Option<String>, DecodingKey)>,
    validation: Validation,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("alg", &self.alg)
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl JwtVerifier {
    /// Reads the key material and builds the verifier; the error says what to fix.
    pub fn build(c: &JwtConfig) -> Result<JwtVerifier, String> {
        let alg = match c.algorithm {
            JwtAlgorithm::HS256 => Algorithm::HS256,
            JwtAlgorithm::RS256 => Algorithm::RS256,
            JwtAlgorithm::ES256 => Algorithm::ES256,
        };
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| {
                format!(
                    "cannot read {} ({e}); check the path and permissions",
                    p.display()
                )
            })
        };
        let keys = match (&c.key_file, &c.jwks_file, c.algorithm) {
            (Some(_), Some(_), _) | (None, None, _) => {
                return Err("set exactly one of key_file and jwks_file".into())
            }
            (None, Some(_), JwtAlgorithm::HS256) => {
                return Err("HS256 takes a key_file holding the shared secret, not a JWKS".into())
            }
            (Some(p), None, JwtAlgorithm::HS256) => {
                let raw = read(p)?;
                let secret = raw.trim_ascii();
                if secret.len() < 32 {
                    return Err(format!(
                        "{}: an HS256 secret needs at least 32 bytes (it has {})",
                        p.display(),
                        secret.len()
                    ));
                }
                vec![(None, DecodingKey::from_secret(secret))]
            }
            (Some(p), None, a) => {
                let pem = read(p)?;
                let k = match a {
                    JwtAlgorithm::RS256 => DecodingKey::from_rsa_pem(&pem),
                    _ => DecodingKey::from_ec_pem(&pem),
                }
                .map_err(|e| {
                    format!(
                        "{}: not a PEM public key for {a:?} ({e}); use `openssl pkey -pubout`",
                        p.display()
                    )
                })?;
                vec![(None, k)]
            }
            (None, Some(p), a) => {
                let set: JwkSet = serde_json::from_slice(&read(p)?)
                    .map_err(|e| format!("{}: not a JWKS file ({e})", p.display()))?;
                let mut keys = Vec::new();
                for (i, jwk) in set.keys.iter().enumerate() {
                    let k = DecodingKey::from_jwk(jwk)
                        .map_err(|e| format!("{}: keys[{i}] is not usable ({e})", p.display()))?;
                    keys.push((jwk.common.key_id.clone(), k));
                }
                if keys.is_empty() {
                    return Err(format!("{}: the JWKS has no keys", p.display()));
                }
                let _ = a;
                keys
            }
        };
        let mut v = Validation::new(alg);
        v.leeway = c.leeway_s;
        v.validate_exp = true;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp"]);
        match &c.issuer {
            Some(i) => v.set_issuer(&[i]),
            None => v.iss = None,
        }
        match &c.audience {
            Some(a) => v.set_audience(&[a]),
            None => v.validate_aud = false,
        }
        Ok(JwtVerifier {
            alg,
            keys,
            validation: v,
        })
    }

    /// Checks `token` against this consumer. `Ok(false)`: not this consumer's token (another
    /// algorithm, kid or key); `Err`: this consumer's signature but a refused claim.
    pub fn verify(&self, token: &str, header: &jsonwebtoken::Header) -> Result<bool, JwtError> {
        if header.alg != self.alg {
            return Ok(false);
        }
        for (kid, key) in &self.keys {
            if let (Some(want), Some(got)) = (kid, &header.kid) {
                if want != got {
                    continue;
                }
            }
            use jsonwebtoken::errors::ErrorKind as K;
            match jsonwebtoken::decode::<serde_json::Value>(token, key, &self.validation) {
                Ok(_) => return Ok(true),
                Err(e) => match e.kind() {
                    K::InvalidSignature | K::InvalidAlgorithm | K::InvalidKeyFormat => continue,
                    K::ExpiredSignature => return Err(JwtError::Claims("it has expired (exp)")),
                    K::ImmatureSignature => {
                        return Err(JwtError::Claims("it is not valid yet (nbf)"))
                    }
                    K::InvalidIssuer => return Err(JwtError::Claims("wrong issuer (iss)")),
                    K::InvalidAudience => return Err(JwtError::Claims("wrong audience (aud)")),
                    K::MissingRequiredClaim(_) => {
                        return Err(JwtError::Claims("a required claim (exp) is missing"))
                    }
                    _ => return Err(JwtError::Malformed),
                },
            }
        }
        Ok(false)
    }
}

/// Decodes a token's header (no verification), for [`JwtVerifier::verify`].
pub fn header(token: &str) -> Result<jsonwebtoken::Header, JwtError> {
    jsonwebtoken::decode_header(token).map_err(|_| JwtError::Malformed)
}
