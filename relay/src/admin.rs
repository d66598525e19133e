//! The admin listener, apart from the data port: `GET /metrics` (Prometheus text),
//! `GET /healthz`, `GET /readyz`, `POST /reload`, `POST /admission/shed?level=N`. A small
//! blocking server on its own thread: it is off the request path and sees a few requests a minute.
//!
//! Guarded by [`AdminPolicy`]: a bearer token for every endpoint but `/healthz` (when
//! `token_file` is set), at most `max_connections` served at once (more are closed at accept),
//! and one deadline for a whole request.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub mod config;

pub use config::AdminConfig;

/// How the admin port guards itself.
#[derive(Clone)]
pub struct AdminPolicy {
    /// The bearer token, when `token_file` is set.
    token: Option<String>,
    /// Most connections served at once.
    max_connections: usize,
    /// Deadline for one whole request.
    request_timeout: Duration,
}

impl AdminPolicy {
    /// Reads the token file (when set). Errors name the file and what to do.
    pub fn build(cfg: &AdminConfig) -> Result<AdminPolicy, String> {
        let token = match &cfg.token_file {
            None => None,
            Some(p) => {
                let t = std::fs::read_to_string(p).map_err(|e| {
                    format!(
                        "admin.token_file {}: cannot read it ({e}); check the path and permissions",
                        p.display()
                    )
                })?;
                let t = t.trim().to_string();
                if t.len() < 16 {
                    return Err(format!(
                        "admin.token_file {}: the token has {} characters; use at least 16 random characters",
                        p.display(),
                        t.len()
                    ));
                }
                Some(t)
            }
        };
        Ok(AdminPolicy {
            token,
            max_connections: cfg.max_connections,
            request_timeout: Duration::from_millis(cfg.request_timeout_ms),
        })
    }

    /// Whether the head carries `Authorization: Bearer <token>` (always true without a token).
    /// The comparison takes the same time wherever the first difference is.
    fn authorized(&self, head: &str) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let sent = head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case("authorization")
                .then(|| v.trim())
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                })
                .map(str::trim)
        });
        let Some(sent) = sent else { return false };
        let (a, b) = (sent.as_bytes(), token.as_bytes());
        let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
        for i in 0..a.len().max(b.len()) {
            diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
        }
        diff == 0
    }
}

/// What the admin endpoints call into.
pub struct AdminHooks {
    /// The metrics text.
    pub metrics: Box<dyn Fn() -> String + Send + Sync>,
    /// `Ok(())` when ready, else the reason.
    pub ready: Box<dyn Fn() -> Result<(), String> + Send + Sync>,
    /// Reloads the config: `Ok(summary)` or the errors.
    pub reload: Box<dyn Fn() -> Result<String, String> + Send + Sync>,
    /// The upstreams' live state (nodes, health, ejections, circuits) as JSON.
    pub upstreams: Box<dyn Fn() -> String + Send + Sync>,
    /// Forces the admission shed level (None = automatic).
    pub shed: Box<dyn Fn(Option<u8>) -> Result<String, String> + Send + Sync>,
}

/// Starts serving on `listener` in a background thread.
pub fn spawn(listener: TcpListener, hooks: Arc<AdminHooks>, policy: AdminPolicy) {
    let policy = Arc::new(policy);
    let open = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("relay-admin".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                if open.fetch_add(1, Ordering::SeqCst) >= policy.max_connections {
                    open.fetch_sub(1, Ordering::SeqCst);
                    drop(conn);
                    continue;
                }
                let (hooks, policy, open) = (hooks.clone(), policy.clone(), open.clone());
                // Scrapes are rare; a thread per connection keeps a slow scraper from blocking others.
                let spawned = std::thread::Builder::new()
                    .name("relay-admin-conn".into())
                    .spawn(move || {
                        let _ = serve(conn, &hooks, &policy);
                        open.fetch_sub(1, Ordering::SeqCst);
                    });
                if spawned.is_err() {
                    tracing::warn!("cannot start an admin connection thread");
                }
            }
        })
        .expect("spawn the admin thread");
}

fn serve(mut conn: TcpStream, hooks: &AdminHooks, policy: &AdminPolicy) -> std::io::Result<()> {
    let deadline = Instant::now() + policy.request_timeout;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::TimedOut))
    };
    conn.set_write_timeout(Some(policy.request_timeout))?;
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 2048];
    let head_end = loop {
        conn.set_read_timeout(Some(left()?))?;
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
    if path != "/healthz" && !policy.authorized(&head) {
        return respond(
            &mut conn,
            401,
            "application/json",
            br#"{"error":"unauthorized","message":"send Authorization: Bearer <the token in admin.token_file>"}"#,
        );
    }
    match (method, path) {
        ("GET", "/metrics") => {
            let text = (hooks.metrics)();
            respond(&mut conn, 200, "text/plain; version=0.0.4; charset=utf-8", text.as_bytes())
        }
        ("GET", "/upstreams") => {
            let body = (hooks.upstreams)();
            respond(&mut conn, 200, "application/json", body.as_bytes())
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
    let auth = if status == 401 {
        "WWW-Authenticate: Bearer realm=\"relay-admin\"\r\n"
    } else {
        ""
    };
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {ctype}\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
        crate::reply::reason(status),
        body.len()
    );
    conn.write_all(head.as_bytes())?;
    conn.write_all(body)?;
    conn.flush()
}
