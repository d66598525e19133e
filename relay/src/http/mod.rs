//! HTTP/1.1 framing: request heads, chunked bodies, and the responses relay writes itself.

pub mod chunked;
pub mod request;
pub mod response;

/// Hop-by-hop header fields (RFC 9110 §7.6.1), never forwarded in either direction.
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Whether `name` is hop-by-hop, either always or because the `Connection` header named it.
pub fn is_hop_by_hop(name: &str, connection_tokens: &[String]) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
        || connection_tokens
            .iter()
            .any(|t| name.eq_ignore_ascii_case(t))
}

/// The tokens of every `Connection` header value, lower case.
pub fn connection_tokens<'a>(headers: impl Iterator<Item = (&'a str, &'a [u8])>) -> Vec<String> {
    let mut out = Vec::new();
    for (n, v) in headers {
        if n.eq_ignore_ascii_case("connection") {
            for t in String::from_utf8_lossy(v).split(',') {
                let t = t.trim();
                if !t.is_empty() {
                    out.push(t.to_ascii_lowercase());
                }
            }
        }
    }
    out
}
