//! Responses relay writes itself (JSON errors, `100 Continue`) and the reason phrases they use.
//! The head goes through relay-http's encoder like every other response head.

use relay_http::encode::finish_response_head;
use relay_http::ResponseHeadEncoder;

use crate::error::RequestError;

/// The interim response sent before reading a body announced with `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Appends relay's own JSON error response for `err` to `out`:
/// `{"error":"<code>","message":"<what was wrong and what to do>"}`.
pub fn write_error(
    out: &mut Vec<u8>,
    err: &RequestError,
    keep_alive: bool,
    request_id: Option<&str>,
) {
    let (status, code) = err.status_and_code();
    let body = error_body(code, &err.to_string());
    let mut head = ResponseHeadEncoder::new(status, reason(status));
    head.header("Content-Type", b"application/json");
    if let Some(s) = err.retry_after() {
        head.header("Retry-After", s.to_string().as_bytes());
    }
    for (name, value) in err.extra_headers() {
        head.header(name, value.as_bytes());
    }
    if let Some(id) = request_id {
        head.header("X-Request-Id", id.as_bytes());
    }
    finish_response_head(
        out,
        &head.into_partial(),
        Some(body.len() as u64),
        keep_alive,
    );
    out.extend_from_slice(body.as_bytes());
}

/// The JSON body of an error: `{"error":code,"message":message}`.
pub fn error_body(code: &str, message: &str) -> String {
    serde_json::json!({ "error": code, "message": message }).to_string()
}

/// The reason phrase for a status code (empty for unknown codes, which HTTP allows).
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        422 => "Unprocessable Content",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_responses_are_json_with_reason() {
        let mut out = Vec::new();
        write_error(
            &mut out,
            &RequestError::KafkaBackpressure { retry_after_s: 2 },
            true,
            Some("abc"),
        );
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{s}");
        assert!(s.contains("Retry-After: 2\r\n"));
        let body = s.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"], "kafka_backpressure");
        assert!(v["message"].as_str().unwrap().contains("retry"));
    }
}
