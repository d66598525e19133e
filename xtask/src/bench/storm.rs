//! The connection-storm section of the report (`conn-storm lab`, root only).

use std::process::Command;

use super::sh;

/// The connection-storm scenario (issue 6): a storm of new connections from one namespace host
/// while steady keep-alive clients on another run at a fixed rate; established clients' success
/// and p99 with admission off, user-space shedding, and XDP. Needs root (network namespaces,
/// XDP); otherwise the section says why it is missing.
pub(super) fn connection_storm(bin: &std::path::Path, out: &std::path::Path) -> String {
    let mut md =
        String::from("\n## Connection storm: established clients with admission off vs on\n\n");
    if sh("id -u").trim() != "0" {
        md.push_str("Not run: needs root (network namespaces and XDP).\n");
        return md;
    }
    let cmd = format!(
        "{} lab --relay {} --duration-s 10 --storm-threads 400",
        bin.join("conn-storm").display(),
        bin.join("relay").display()
    );
    eprintln!("xtask bench: $ {cmd}");
    match Command::new(bin.join("conn-storm"))
        .args(["lab", "--relay"])
        .arg(bin.join("relay"))
        .args(["--duration-s", "10", "--storm-threads", "400"])
        .output()
    {
        Ok(o) if o.status.success() => {
            let table = String::from_utf8_lossy(&o.stdout).to_string();
            let _ = std::fs::write(out.join("storm.md"), &table);
            md.push_str(&format!("Command: `{cmd}`\n\n{table}\n"));
        }
        Ok(o) => md.push_str(&format!(
            "conn-storm failed ({}): {}\n",
            o.status,
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("")
        )),
        Err(e) => md.push_str(&format!("cannot run conn-storm: {e}\n")),
    }
    md
}
