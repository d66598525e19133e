//! Readers of `/proc` shared by the sections (probes), and the pure parser of
//! `/proc/<pid>/status`.

use std::path::Path;

/// Reads `/proc/sys/<key with dots as slashes>`.
pub fn read_proc_sys(key: &str) -> Option<String> {
    std::fs::read_to_string(Path::new("/proc/sys").join(key.replace('.', "/"))).ok()
}

pub(super) fn proc_status_field(field: &str) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    status_field(&text, field)
}

/// The value of `Field:` in a `/proc/<pid>/status` text.
pub fn status_field(status: &str, field: &str) -> Option<String> {
    status.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == field).then(|| v.trim().to_string())
    })
}
