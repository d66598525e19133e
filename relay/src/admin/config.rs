//! `[admin]`: the operations listener's address, token, connection limit and deadline; their
//! defaults and their validation.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::problems::Problems;

/// `[admin]`: the operations listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin listener (`/metrics`, `/healthz`, `/readyz`, `POST /reload`).
    pub listen: SocketAddr,
    /// File holding the bearer token every admin endpoint but `/healthz` requires
    /// (`Authorization: Bearer <token>`); surrounding whitespace is ignored. Default: none.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Allow a non-loopback `listen` without `token_file`. Default false: `relay check` refuses it.
    #[serde(default)]
    pub allow_unauthenticated: bool,
    /// Most admin connections served at once; more are closed at accept. Default 16.
    #[serde(default = "defaults::admin_max_connections")]
    pub max_connections: usize,
    /// Deadline for a whole admin request (head read through response written), in ms.
    /// Default 5000.
    #[serde(default = "defaults::admin_request_timeout_ms")]
    pub request_timeout_ms: u64,
}

impl AdminConfig {
    /// Resolves a relative `token_file` against the config file's directory.
    pub fn resolve_paths(&mut self, base: &Path) {
        if let Some(t) = self.token_file.as_mut() {
            if t.is_relative() {
                *t = base.join(&*t);
            }
        }
    }

    /// Records every problem of `[admin]` under `field` (`admin`).
    pub fn validate(&self, field: &str, p: &mut Problems) {
        if self.token_file.is_none()
            && !self.listen.ip().is_loopback()
            && !self.allow_unauthenticated
        {
            p.push(
                format!("{field}.listen"),
                format!(
                    "{} is reachable from other hosts but the admin port has no token; set admin.token_file (a file holding a bearer token), listen on 127.0.0.1, or set admin.allow_unauthenticated = true",
                    self.listen
                ),
            );
        }
        if self.max_connections == 0 {
            p.push(format!("{field}.max_connections"), "must be at least 1");
        }
        if self.request_timeout_ms == 0 {
            p.push(
                format!("{field}.request_timeout_ms"),
                "must be more than 0 ms",
            );
        }
    }
}

/// Default values, one function per field (serde needs functions).
pub mod defaults {
    /// 16 admin connections.
    pub fn admin_max_connections() -> usize {
        16
    }
    /// 5 s.
    pub fn admin_request_timeout_ms() -> u64 {
        5_000
    }
}
