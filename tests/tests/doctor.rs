//! `relay doctor` against real peers: a TLS upstream with a certificate from a throw-away CA
//! (verified, wrong name, untrusted), plain TCP nodes and Kafka brokers (listening or not), and
//! the host checks on this machine.
//!
//! Until the `relay doctor` subcommand lands in `main.rs`, this drives `relay::doctor` directly;
//! `the_binary_runs_doctor_when_it_has_the_subcommand` drives the built binary as soon as
//! `relay --help` lists `doctor`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use relay::config::Config;
use relay::doctor::{self, Check, Status};

struct TlsUpstream {
    addr: String,
    ca_pem: PathBuf,
    _dir: tempfile::TempDir,
}

/// A TLS server for `upstream.test` on 127.0.0.1:0 that completes handshakes until the test ends.
fn tls_upstream() -> TlsUpstream {
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
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .unwrap();
    let server = Arc::new(server);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(mut tcp) = tcp else { continue };
            let server = server.clone();
            std::thread::spawn(move || {
                let _ = tcp.set_read_timeout(Some(std::time::Duration::from_secs(5)));
                let mut conn = rustls::ServerConnection::new(server).unwrap();
                while conn.is_handshaking() {
                    if conn.complete_io(&mut tcp).is_err() {
                        return;
                    }
                }
                // Wait for the client's close_notify (or EOF).
                let _ = conn.complete_io(&mut tcp);
            });
        }
    });
    TlsUpstream {
        addr,
        ca_pem,
        _dir: dir,
    }
}

fn closed_port() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

fn config(text: &str) -> Config {
    Config::from_toml(text, Path::new("doctor-test.toml")).unwrap_or_else(|e| panic!("{e}"))
}

fn row<'a>(rows: &'a [Check], prefix: &str) -> &'a Check {
    rows.iter()
        .find(|r| r.name.starts_with(prefix))
        .unwrap_or_else(|| panic!("no row {prefix:?} in {rows:#?}"))
}

#[test]
fn tls_upstream_verified_wrong_name_and_untrusted() {
    let up = tls_upstream();
    let cfg = config(&format!(
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

[[upstreams]]
name = "untrusted"
nodes = ["{addr}"]
[upstreams.tls]
server_name = "upstream.test"
"#,
        addr = up.addr,
        ca = up.ca_pem.display()
    ));
    let rows = doctor::checks(Some(&cfg));

    let good = row(&rows, "upstream good ");
    assert_eq!(good.status, Status::Pass, "{good:?}");
    assert!(good.detail.contains("certificate verified"), "{good:?}");

    let wrong = row(&rows, "upstream wrongname ");
    assert_eq!(wrong.status, Status::Fail, "{wrong:?}");
    assert!(wrong.detail.contains("TLS handshake"), "{wrong:?}");
    assert!(wrong.detail.to_lowercase().contains("name"), "{wrong:?}");
    assert!(wrong.fix.contains("server_name"), "{wrong:?}");

    // System roots do not know the throw-away CA.
    let untrusted = row(&rows, "upstream untrusted ");
    assert_eq!(untrusted.status, Status::Fail, "{untrusted:?}");
    assert!(
        untrusted.detail.to_lowercase().contains("issuer")
            || untrusted.detail.to_lowercase().contains("certificate"),
        "{untrusted:?}"
    );
    assert_eq!(doctor::exit_code(&rows), 1);
}

#[test]
fn brokers_and_plain_nodes_reachable_or_not() {
    let closed = closed_port();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let up = listener.local_addr().unwrap().to_string();
    let cfg = config(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
backlog = 1024

[[upstreams]]
name = "plain"
nodes = ["{up}"]

[[routes]]
name = "r"
path = "/v1/logs"
upstream = "plain"
topic = "t"

[kafka]
brokers = "{up},{closed}"
"#
    ));
    let rows = doctor::checks(Some(&cfg));
    assert_eq!(
        row(&rows, &format!("kafka broker {up}")).status,
        Status::Pass
    );
    let down = row(&rows, &format!("kafka broker {closed}"));
    assert_eq!(down.status, Status::Fail, "{down:?}");
    assert!(down.fix.contains("brokers"), "{down:?}");
    let plain = row(&rows, "upstream plain ");
    assert_eq!(plain.status, Status::Pass, "{plain:?}");
    assert!(plain.detail.contains("plain HTTP"), "{plain:?}");
    assert!(
        rows.iter().all(|r| r.name != "config"),
        "a config was given"
    );
    assert_eq!(
        doctor::exit_code(&rows),
        1,
        "the closed broker fails the run"
    );
    drop(listener);
}

#[test]
fn host_checks_cover_the_profile_and_agree_with_the_exit_code() {
    let rows = doctor::checks(None);
    for prefix in [
        "cpu quota",
        "io_uring",
        "xdp admission",
        "open files",
        "config",
    ] {
        row(&rows, prefix);
    }
    for want in doctor::parse_sysctl_profile(doctor::SYSCTL_PROFILE) {
        row(&rows, &format!("sysctl {}", want.key));
    }
    for r in &rows {
        if r.status != Status::Pass {
            assert!(
                !r.fix.is_empty(),
                "every non-passing row says what to do: {r:?}"
            );
        }
    }
    let table = doctor::render(&rows);
    println!("{table}");
    let code = doctor::run(None);
    assert_eq!(code, doctor::exit_code(&rows));
    assert_eq!(code != 0, rows.iter().any(|r| r.status == Status::Fail));
}

/// The built `relay` binary next to this test's `deps/` directory, if `cargo build` made it.
fn relay_bin() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.parent()?.join("relay");
    bin.is_file().then_some(bin)
}

#[test]
fn the_binary_runs_doctor_when_it_has_the_subcommand() {
    let Some(bin) = relay_bin() else {
        eprintln!("target/debug/relay not built; `cargo xtask test` builds it first");
        return;
    };
    let help = Command::new(&bin).arg("--help").output().unwrap();
    if !String::from_utf8_lossy(&help.stdout).contains("doctor") {
        eprintln!("this relay binary has no `doctor` subcommand yet; tested doctor::run directly");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let closed = closed_port();
    let cfg = dir.path().join("relay.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[[upstreams]]\nname = \"down\"\nnodes = [\"{closed}\"]\nconnect_timeout_ms = 500\n"
        ),
    )
    .unwrap();
    let out = Command::new(&bin)
        .args(["doctor", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "an unreachable upstream fails:\n{stdout}"
    );
    assert!(stdout.starts_with("STATUS"), "{stdout}");
    assert!(
        stdout.contains(&format!("upstream down {closed}")),
        "{stdout}"
    );
    assert!(stdout.contains("fix:"), "{stdout}");
    assert!(
        stdout
            .trim_end()
            .lines()
            .last()
            .unwrap()
            .starts_with("doctor: "),
        "{stdout}"
    );
}
