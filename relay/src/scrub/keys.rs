//! Reading PII keys: the key sources of a `[pii.NAME]` policy (`key_file`, `key_env`, `[keys]`)
//! are read here, in relay, and only the active key's bytes are handed to
//! [`relay_scrub::Scrubber::new`]; `relay-scrub` itself does no I/O.

use relay_scrub::config::{check_key_id, MIN_KEY_BYTES};
use relay_scrub::{KeySourceConfig, PiiPolicyConfig};

/// Key bytes, wiped on drop; never `Debug`-printed.
pub(crate) struct KeyBytes(pub(crate) Vec<u8>);

impl Drop for KeyBytes {
    fn drop(&mut self) {
        self.0.fill(0);
        std::hint::black_box(&self.0);
    }
}

/// The active key id and the active key's bytes, after checking every configured key.
/// Errors carry the sub-field (`key_file`, `keys.k1`, or empty for the policy) and a message that
/// never contains key bytes.
pub(crate) fn load_keys(
    p: &PiiPolicyConfig,
) -> Result<(Option<String>, KeyBytes), (String, String)> {
    let single = p.key_file.is_some() || p.key_env.is_some();
    if single && !p.keys.is_empty() {
        return Err((
            "keys".into(),
            "use either key_file/key_env (one key) or [keys] (rotation), not both".into(),
        ));
    }
    if single {
        let src = KeySourceConfig {
            file: p.key_file.clone(),
            env: p.key_env.clone(),
        };
        let key = read_key(&src).map_err(|m| {
            let sub = if p.key_file.is_some() {
                "key_file"
            } else {
                "key_env"
            };
            (sub.to_string(), m)
        })?;
        let Some(id) = &p.key_id else {
            return Err((
                "key_id".into(),
                "is required with key_file/key_env: name the key, e.g. key_id = \"k1\" (sent as X-Relay-Key-Id so \
                 downstream knows which key made the pseudonyms)"
                    .into(),
            ));
        };
        return Ok((Some(id.clone()), key));
    }
    if p.keys.is_empty() {
        return Err((
            String::new(),
            "hmac-sha256 needs a key: set key_file = \"pii.key\" (create it with `openssl rand -hex 32 > pii.key`), \
             key_env = \"RELAY_PII_KEY\", or [keys]; or use hash = \"sha256\""
                .into(),
        ));
    }
    let mut active = None;
    for (id, src) in &p.keys {
        check_key_id(id).map_err(|m| (format!("keys.{id}"), m))?;
        let key = read_key(src).map_err(|m| (format!("keys.{id}"), m))?;
        let is_active = match &p.key_id {
            Some(a) => a == id,
            None => p.keys.len() == 1,
        };
        if is_active {
            active = Some((Some(id.clone()), key));
        }
    }
    match (active, &p.key_id) {
        (Some(a), _) => Ok(a),
        (None, Some(id)) => Err((
            "key_id".into(),
            format!(
                "{id:?} is not one of the configured keys ({}); add it under [keys] or pick one of those",
                p.keys.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        )),
        (None, None) => Err((
            "key_id".into(),
            "several keys are configured: set key_id to the active one".into(),
        )),
    }
}

fn read_key(src: &KeySourceConfig) -> Result<KeyBytes, String> {
    let mut bytes = match (&src.file, &src.env) {
        (Some(_), Some(_)) => return Err("set either a file or an env variable for a key, not both".into()),
        (None, None) => return Err("a key needs file = \"...\" or env = \"...\"".into()),
        (Some(f), None) => KeyBytes(std::fs::read(f).map_err(|e| {
            format!(
                "cannot read the key file {} ({e}); create it with `openssl rand -hex 32 > {}` readable by relay only",
                f.display(),
                f.display()
            )
        })?),
        (None, Some(v)) => match std::env::var_os(v) {
            Some(s) => KeyBytes(s.into_encoded_bytes()),
            None => {
                return Err(format!(
                    "the environment variable {v} is not set; export it with at least {MIN_KEY_BYTES} bytes of key, \
                     e.g. `export {v}=$(openssl rand -hex 32)`"
                ))
            }
        },
    };
    if bytes.0.ends_with(b"\r\n") {
        bytes.0.truncate(bytes.0.len() - 2);
    } else if bytes.0.ends_with(b"\n") {
        bytes.0.truncate(bytes.0.len() - 1);
    }
    if bytes.0.len() < MIN_KEY_BYTES {
        let place = match (&src.file, &src.env) {
            (Some(f), _) => format!("the key file {}", f.display()),
            (_, Some(v)) => format!("the environment variable {v}"),
            _ => unreachable!(),
        };
        return Err(format!(
            "{place} holds {} bytes, fewer than {MIN_KEY_BYTES}; use a longer key, e.g. from `openssl rand -hex 32`",
            bytes.0.len()
        ));
    }
    Ok(bytes)
}
