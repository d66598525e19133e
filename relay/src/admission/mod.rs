//! Early connection admission: the XDP loader and shed controller, or user-space shedding at
//! accept time without privileges (issue 6 fills this in).

use serde::{Deserialize, Serialize};

use crate::config::Problems;

/// `[admission]`: XDP admission settings.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdmissionConfig {
    /// Ingress interface the XDP program attaches to. Absent: user-space shedding only.
    #[serde(default)]
    pub interface: Option<String>,
}

impl AdmissionConfig {
    /// Records problems under `field`.
    pub fn validate(&self, _field: &str, _p: &mut Problems) {}
}

/// Admission control handle.
#[derive(Debug, Default)]
pub struct Admission;

impl Admission {
    /// Whether to close a just-accepted connection (user-space shedding).
    pub fn shed_new_connection(&self) -> bool {
        false
    }
}
