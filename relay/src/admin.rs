//! The admin listener, apart from the data port: `GET /metrics` (Prometheus text),
//! `GET /healthz`, `GET /readyz`, `POST /reload`, `POST /admission/shed?level=N`. A small
//! blocking server on its own thread: it is off the request path and sees a few requests a minute.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// What the admin endpoints call into.
pub struct AdminHooks {
    /// The metrics text.
    pub metrics: Box<dyn Fn() -> String + Send + Sync>,
    /// `Ok(())` when ready, else the reason.
    pub ready: Box<dyn Fn() -> Result<(), String> + Send + Sync>,
    /// Reloads the config: `Ok(summary)` or the errors.
    pub reload: Box<dyn Fn() -> Result<String, String> + Send + Sync>,
    /// Forces the admission shed level (None = automatic).
    pub shed: Box<dyn Fn(Option<u8>) -> Result<String, String> + Send + Sync>,
}

/// Starts serving on `listener` in a background thread.
pub fn spawn(listener: TcpListener, hooks: Arc<AdminHooks>) {
    std::thread::Builder::new()
        .name("relay-admin".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let hooks = hooks.clone();
                // Scrapes are rare; a thread per connection keeps a slow scraper from blocking others.
                let _ = std::thread::Builder::new()
                    .name("relay-admin-conn".into())
                    .spawn(move || {
                        let _ = serve(conn, &hooks);
                    });
            }
        })
        .expect("spawn the admin thread");
}

fn serve(mut conn: TcpStream, hooks: &AdminHooks) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    conn.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 2048];
    let head_end = loop {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        if buf.len() > 16 * 1024 {
            return respond(&mut conn, 431, "application/json", br#"{"error":"request_header_too_large","message":"admin requests have small heads"}"#);
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut parts = head.split_whitespace();
    let method = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    match (method, path) {
        ("GET", "/metrics") => {
            let text = (hooks.metrics)();
            respond(&mut conn, 200, "text/plain; version=0.0.4; charset=utf-8", text.as_bytes())
        }
        ("GET", "/healthz") => respond(&mut conn, 200, "application/json", br#"{"status":"alive"}"#),
        ("GET", "/readyz") => match (hooks.ready)() {
            Ok(()) => respond(&mut conn, 200, "application/json", br#"{"status":"ready"}"#),
            Err(reason) => {
                let body = serde_json::json!({"status": "not_ready", "reason": reason}).to_string();
                respond(&mut conn, 503, "application/json", body.as_bytes())
            }
        },
        ("POST", "/reload") => match (hooks.reload)() {
            Ok(summary) => {
                let body = serde_json::json!({"result": "success", "message": summary}).to_string();
                respond(&mut conn, 200, "application/json", body.as_bytes())
            }
            Err(errors) => {
                let body = serde_json::json!({"error": "invalid_config", "message": errors}).to_string();
                respond(&mut conn, 400, "application/json", body.as_bytes())
            }
        },
        ("POST", "/admission/shed") => {
            let level = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("level="))
                .map(|v| if v == "auto" { Ok(None) } else { v.parse::<u8>().map(Some) });
            match level {
                Some(Ok(l)) if l.is_none_or(|x| x <= 100) => match (hooks.shed)(l) {
                    Ok(m) => respond(&mut conn, 200, "application/json", serde_json::json!({"result": m}).to_string().as_bytes()),
                    Err(e) => respond(
                        &mut conn,
                        409,
                        "application/json",
                        serde_json::json!({"error": "admission_unavailable", "message": e}).to_string().as_bytes(),
                    ),
                },
                _ => respond(
                    &mut conn,
                    400,
                    "application/json",
                    br#"{"error":"invalid_level","message":"use /admission/shed?level=N with N in 0..=100, or level=auto"}"#,
                ),
            }
        }
        _ => respond(
            &mut conn,
            404,
            "application/json",
            br#"{"error":"not_found","message":"admin endpoints: GET /metrics, /healthz, /readyz; POST /reload, /admission/shed?level=N"}"#,
        ),
    }
}

fn respond(conn: &mut TcpStream, status: u16, ctype: &str, body: &[u8]) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        crate::reply::reason(status),
        body.len()
    );
    conn.write_all(head.as_bytes())?;
    conn.write_all(body)?;
    conn.flush()
}
