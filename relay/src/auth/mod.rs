//! Consumers and their credentials: API keys (by SHA-256) and JWTs. [`Authenticator`] is built
//! once per config snapshot and answers "which consumer sent this request" from its headers.

#![forbid(unsafe_code)]

pub mod api_key;
pub mod config;
pub mod jwt;

use std::sync::Arc;

use relay_http::RequestHead;

pub use config::{AuthConfig, AuthMode, ConsumerConfig, JwtAlgorithm, JwtConfig};
use jwt::{JwtError, JwtVerifier};

/// Which credential identified the consumer (the header the upstream does not get).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// The API-key header.
    ApiKey,
    /// `Authorization: Bearer`.
    Bearer,
}

/// Why the credentials were refused (401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Nothing presented on a route whose `auth` is `required`.
    #[error("this route needs credentials: send the API key in {header} or a JWT in Authorization: Bearer")]
    Missing {
        /// The API-key header name.
        header: String,
    },
    /// An API key that belongs to no consumer.
    #[error("the API key in {header} is not known; check the key")]
    UnknownKey {
        /// The API-key header name.
        header: String,
    },
    /// An `Authorization` that is not `Bearer <token>`.
    #[error("Authorization must be \"Bearer <JWT>\"")]
    NotBearer,
    /// The JWT was refused.
    #[error(transparent)]
    Jwt(#[from] JwtError),
}

/// The compiled consumers of one snapshot.
#[derive(Debug, Default)]
pub struct Authenticator {
    names: Vec<Arc<str>>,
    api_keys: api_key::ApiKeys,
    jwts: Vec<(usize, JwtVerifier)>,
    api_key_header: String,
    /// The realm for `WWW-Authenticate`.
    pub realm: String,
}

impl Authenticator {
    /// Builds from validated config (reads key files; an error names the consumer).
    pub fn build(auth: &AuthConfig, consumers: &[ConsumerConfig]) -> Result<Authenticator, String> {
        let mut a = Authenticator {
            api_key_header: auth.api_key_header.to_ascii_lowercase(),
            realm: auth.realm.clone(),
            ..Authenticator::default()
        };
        for (i, c) in consumers.iter().enumerate() {
            a.names.push(Arc::from(c.name.as_str()));
            for h in &c.api_key_sha256 {
                a.api_keys.insert(api_key::parse_sha256_hex(h)?, i);
            }
            if let Some(j) = &c.jwt {
                a.jwts.push((
                    i,
                    JwtVerifier::build(j).map_err(|e| format!("consumers[{i}].jwt: {e}"))?,
                ));
            }
        }
        Ok(a)
    }

    /// Consumer names, by index (the bounded `consumer` label set).
    pub fn names(&self) -> &[Arc<str>] {
        &self.names
    }

    /// The index of consumer `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| &**n == name)
    }

    /// The API-key header, lower case.
    pub fn api_key_header(&self) -> &str {
        &self.api_key_header
    }

    /// The consumer that sent `head`: `Ok(None)` when no credential is present, `Err` when one
    /// is present but refused. An API key is looked at before a bearer token.
    pub fn authenticate(
        &self,
        head: &RequestHead,
    ) -> Result<Option<(usize, Credential)>, AuthError> {
        if let Some(key) = head.header(&self.api_key_header) {
            return match self.api_keys.find(key.trim_ascii()) {
                Some(i) => Ok(Some((i, Credential::ApiKey))),
                None => Err(AuthError::UnknownKey {
                    header: self.api_key_header.clone(),
                }),
            };
        }
        let Some(authz) = head.header("authorization") else {
            return Ok(None);
        };
        let authz = std::str::from_utf8(authz).map_err(|_| AuthError::NotBearer)?;
        let token = match authz.trim().split_once(' ') {
            Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim(),
            _ => return Err(AuthError::NotBearer),
        };
        let header = jwt::header(token)?;
        for (i, v) in &self.jwts {
            if v.verify(token, &header)? {
                return Ok(Some((*i, Credential::Bearer)));
            }
        }
        Err(JwtError::BadSignature.into())
    }

    /// The header `cred` travelled in (lower case), for stripping before forwarding.
    pub fn credential_header(&self, cred: Credential) -> &str {
        match cred {
            Credential::ApiKey => &self.api_key_header,
            Credential::Bearer => "authorization",
        }
    }
}

/// Reads every consumer's JWT key material as [`Authenticator::build`] will, recording what
/// cannot be used under `consumers[i].jwt`.
pub fn check_sources(consumers: &[ConsumerConfig], p: &mut crate::problems::Problems) {
    for (i, c) in consumers.iter().enumerate() {
        if let Some(j) = &c.jwt {
            if j.key_file.is_some() != j.jwks_file.is_some() {
                if let Err(m) = JwtVerifier::build(j) {
                    p.push(format!("consumers[{i}].jwt"), m);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
