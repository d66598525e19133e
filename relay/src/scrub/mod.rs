//! PII pseudonymisation: the pure engine lives in the `relay-scrub` crate and is re-exported
//! here (so `crate::scrub::Scrubber` etc. keep working); this module adds what needs I/O or
//! relay's own types: reading the key sources ([`build`], [`validate_policy`]), mapping policy
//! problems into relay's [`crate::problems::Problems`], and `relay scrub` ([`scrub_offline`]).

#![forbid(unsafe_code)]

mod keys;

pub use relay_scrub::*;

/// Builds the scrubber of a validated policy: reads its keys (the active one is absorbed into an
/// HMAC state and its bytes wiped), then compiles the policy.
pub fn build(policy: &PiiPolicyConfig) -> Result<Scrubber, String> {
    match policy.hash {
        HashAlgorithm::Sha256 => Scrubber::new(policy, None),
        HashAlgorithm::HmacSha256 => {
            let (id, key) = keys::load_keys(policy).map_err(|(sub, m)| {
                if sub.is_empty() {
                    m
                } else {
                    format!("{sub}: {m}")
                }
            })?;
            Scrubber::new(
                policy,
                Some(ActiveKey {
                    id: id.as_deref(),
                    bytes: &key.0,
                }),
            )
        }
    }
}

/// Records every problem of `policy` under `field` (e.g. `pii.default`) in relay's
/// [`crate::problems::Problems`]: the pure checks of `relay-scrub`. Reads no file.
pub fn validate_policy(policy: &PiiPolicyConfig, field: &str, p: &mut crate::problems::Problems) {
    let mut pr = relay_scrub::Problems::default();
    policy.validate(field, &mut pr);
    for (f, m) in pr.0 {
        p.push(f, m);
    }
}

/// Reads `policy`'s key sources as [`build`] will, recording a problem under `field` when
/// they are unusable (messages never contain key bytes).
pub fn check_key_sources(policy: &PiiPolicyConfig, field: &str, p: &mut crate::problems::Problems) {
    if policy.hash == HashAlgorithm::HmacSha256 {
        if let Err((sub, msg)) = keys::load_keys(policy) {
            let f = if sub.is_empty() {
                field.to_string()
            } else {
                format!("{field}.{sub}")
            };
            p.push(f, msg);
        }
    }
}

/// What `relay scrub --config FILE --route NAME [FILE|-]` prints (given the file's `routes`
/// and `pii` policies): exactly the body the proxy
/// would forward for `body` on route `route` (same [`Scrubber`] path), and its receipt (`None`
/// for a route without a PII policy, which forwards the body unchanged). `Err` says why the
/// request would be refused.
pub fn scrub_offline(
    routes: &[crate::route::config::RouteConfig],
    policies: &std::collections::BTreeMap<String, PiiPolicyConfig>,
    route: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<(Vec<u8>, Option<Receipt>), String> {
    let Some(r) = routes.iter().find(|r| r.name == route) else {
        let names: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
        return Err(format!(
            "no route named {route:?}; the configuration has: {}",
            if names.is_empty() {
                "(no routes)".to_string()
            } else {
                names.join(", ")
            }
        ));
    };
    let Some(policy_name) = &r.pii else {
        return Ok((body.to_vec(), None));
    };
    let policy = policies.get(policy_name).ok_or_else(|| {
        format!("route {route:?} names PII policy {policy_name:?}, which is not defined")
    })?;
    let s = build(policy).map_err(|e| format!("pii.{policy_name}: {e}"))?;
    let scrubbed = s
        .scrub_body(content_type, None, body)
        .map_err(|e| format!("{} {}: {}", e.status, e.code, e.message))?;
    let receipt = s.receipt(policy_name, &scrubbed.body, scrubbed.fields_hashed);
    Ok((scrubbed.body, Some(receipt)))
}

#[cfg(test)]
mod tests;
