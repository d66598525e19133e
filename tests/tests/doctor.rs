//! `relay doctor` through the built binary: the table's shape, a row for every key of the
//! shipped sysctl profile, the exit code (1 exactly when a row fails), and the Kafka, upstream
//! and verified-TLS rows against real local peers.
//!
//! The checks themselves are unit-tested in `relay/src/doctor.rs`.

use std::net::TcpListener;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use relay_e2e::{relay_bin, workspace_root};

fn doctor(config: Option<&str>) -> (Output, String) {
    let mut cmd = Command::new(relay_bin());
    cmd.arg("doctor");
    let dir = tempfile::tempdir().unwrap();
    if let Some(text) = config {
        let path = dir.path().join("relay.toml");
        std::fs::write(&path, text).unwrap();
        cmd.arg("--config").arg(path);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out, stdout)
}

/// The rows of the table: (status, check name, detail).
fn rows(table: &str) -> Vec<(String, String)> {
    table
        .lines()
        .skip(1)
        .filter(|l| l.starts_with("pass ") || l.starts_with("warn ") || l.starts_with("fail "))
        .map(|l| (l[..4].to_string(), l[4..].trim().to_string()))
        .collect()
}

fn closed_port() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

#[test]
fn host_only_table_has_every_profile_key_and_a_consistent_exit_code() {
    let (out, table) = doctor(None);
    println!("{table}");
    assert!(table.starts_with("STATUS"), "{table}");
    let rows = rows(&table);
    for name in ["cpu quota", "io_uring", "xdp admission", "open files"] {
        assert!(
            rows.iter().any(|(_, r)| r.starts_with(name)),
            "{name} missing:\n{table}"
        );
    }
    let profile =
        std::fs::read_to_string(workspace_root().join("tuning/sysctl.d/90-relay.conf")).unwrap();
    for key in profile
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .map(|l| l.split('=').next().unwrap().trim())
    {
        let name = format!("sysctl {key} ");
        assert!(
            rows.iter().any(|(_, r)| r.starts_with(&name)),
            "{key} missing:\n{table}"
        );
    }
    let failed = rows.iter().any(|(s, _)| s == "fail");
    assert_eq!(out.status.code(), Some(i32::from(failed)), "{table}");
    let last = table.trim_end().lines().last().unwrap();
    assert!(
        last.starts_with("doctor: ") && last.ends_with(" fail"),
        "{last}"
    );
}

#[test]
fn unreachable_upstream_and_broker_fail_the_run() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let up = listener.local_addr().unwrap().to_string();
    let closed = closed_port();
    let (out, table) = doctor(Some(&format!(
        r#"
[server]
listen = "127.0.0.1:0"

[[upstreams]]
name = "up"
nodes = ["{up}"]

[[upstreams]]
name = "down"
nodes = ["{closed}"]
connect_timeout_ms = 500

[[routes]]
name = "r"
path = "/v1/logs"
upstream = "up"
topic = "t"

[kafka]
brokers = "{up},{closed}"
[kafka.properties]
"message.max.bytes" = "1049600"
"#
    )));
    let rows = rows(&table);
    let status = |prefix: &str| {
        rows.iter()
            .find(|(_, r)| r.starts_with(prefix))
            .unwrap_or_else(|| panic!("no row {prefix}:\n{table}"))
            .0
            .clone()
    };
    assert_eq!(status(&format!("upstream up {up}")), "pass", "{table}");
    assert_eq!(
        status(&format!("upstream down {closed}")),
        "fail",
        "{table}"
    );
    assert_eq!(status(&format!("kafka broker {up}")), "pass", "{table}");
    assert_eq!(status(&format!("kafka broker {closed}")), "fail", "{table}");
    assert!(table.contains("fix: "), "{table}");
    assert_eq!(out.status.code(), Some(1), "{table}");
    drop(listener);
}

#[test]
fn tls_upstream_is_verified_with_the_configured_ca_and_name() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["upstream.test".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_pem = dir.path().join("ca.pem");
    std::fs::write(&ca_pem, ca.pem()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let server = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], key)
            .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(mut tcp) = tcp else { continue };
            let server = server.clone();
            std::thread::spawn(move || {
                let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
                let mut conn = rustls::ServerConnection::new(server).unwrap();
                while conn.is_handshaking() {
                    if conn.complete_io(&mut tcp).is_err() {
                        return;
                    }
                }
                let _ = conn.complete_io(&mut tcp);
            });
        }
    });
    let (out, table) = doctor(Some(&format!(
        r#"
[server]
listen = "127.0.0.1:0"

[[upstreams]]
name = "good"
nodes = ["{addr}"]
[upstreams.tls]
ca_file = "{ca}"
server_name = "upstream.test"

[[upstreams]]
name = "wrongname"
nodes = ["{addr}"]
[upstreams.tls]
ca_file = "{ca}"
server_name = "other.test"
"#,
        ca = ca_pem.display()
    )));
    let line = |prefix: &str| {
        table
            .lines()
            .find(|l| {
                l.get(4..)
                    .is_some_and(|r| r.trim_start().starts_with(prefix))
            })
            .unwrap_or_else(|| panic!("no row {prefix}:\n{table}"))
            .to_string()
    };
    let good = line("upstream good ");
    assert!(
        good.starts_with("pass") && good.contains("certificate verified"),
        "{table}"
    );
    let wrong = line("upstream wrongname ");
    assert!(
        wrong.starts_with("fail") && wrong.contains("not valid for name"),
        "{table}"
    );
    assert_eq!(out.status.code(), Some(1), "{table}");
}
