//! The upstream TLS handshake probe: the data path's rustls setup, certificate verified.

use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

/// A verified TLS handshake over `stream`, the data path's rustls setup; returns the protocol
/// and cipher suite.
pub fn tls_handshake(
    mut stream: TcpStream,
    ca_file: Option<&Path>,
    server_name: &str,
    timeout: Duration,
) -> Result<String, String> {
    let cfg = crate::upstream::tls::client_config(ca_file).map_err(|e| e.to_string())?;
    let name = crate::upstream::tls::server_name(server_name).map_err(|e| e.to_string())?;
    let mut conn = rustls::ClientConnection::new(cfg, name).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    while conn.is_handshaking() {
        conn.complete_io(&mut stream).map_err(|e| e.to_string())?;
    }
    let version = conn
        .protocol_version()
        .map(|v| format!("{v:?}"))
        .unwrap_or_default();
    let suite = conn
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()))
        .unwrap_or_default();
    conn.send_close_notify();
    let _ = conn.complete_io(&mut stream);
    Ok(format!("{version} {suite}, certificate verified"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::*;
    use std::net::TcpListener;

    struct TlsUpstream {
        addr: String,
        ca_pem: std::path::PathBuf,
        _dir: tempfile::TempDir,
    }

    /// A TLS server for `upstream.test` (certificate from a throw-away CA) on 127.0.0.1:0,
    /// completing handshakes until the test process ends.
    fn tls_upstream() -> TlsUpstream {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        use std::sync::Arc;
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
        TlsUpstream {
            addr,
            ca_pem,
            _dir: dir,
        }
    }

    #[test]
    fn tls_upstream_verified_wrong_name_and_untrusted() {
        let up = tls_upstream();
        let cfg = Config::from_toml(
            &format!(
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
            ),
            Path::new("x.toml"),
        )
        .unwrap();
        let u = |name: &str| cfg.upstreams.iter().find(|u| u.name == name).unwrap();

        let good = upstream_check(u("good"), &up.addr);
        assert_eq!(good.status, Status::Pass, "{good:?}");
        assert!(good.detail.contains("certificate verified"), "{good:?}");

        let wrong = upstream_check(u("wrongname"), &up.addr);
        assert_eq!(wrong.status, Status::Fail, "{wrong:?}");
        assert!(wrong.detail.contains("TLS handshake"), "{wrong:?}");
        assert!(wrong.detail.contains("not valid for name"), "{wrong:?}");
        assert!(wrong.fix.contains("server_name"), "{wrong:?}");

        // The system roots do not know the throw-away CA.
        let untrusted = upstream_check(u("untrusted"), &up.addr);
        assert_eq!(untrusted.status, Status::Fail, "{untrusted:?}");
        assert!(
            untrusted.detail.to_lowercase().contains("issuer"),
            "{untrusted:?}"
        );
    }
}
