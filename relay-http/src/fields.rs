//! Field syntax shared by requests and responses (RFC 9110 §5, RFC 9112 §5–6): value bytes,
//! Content-Length, hop-by-hop fields, and `host[:port]` authorities.

use crate::error::HttpError;

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

/// `tchar` (RFC 9110 §5.6.2): the characters of a token.
pub fn is_tchar(b: u8) -> bool {
    matches!(b,
        b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_'
        | b'`' | b'|' | b'~' | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z')
}

/// Whether `b` may appear in a field value (RFC 9110 §5.5: VCHAR, obs-text, SP, HTAB).
pub fn is_field_value_byte(b: u8) -> bool {
    b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80
}

/// Refuses a field value holding a byte outside VCHAR / obs-text / SP / HTAB (a NUL, a bare
/// CR, DEL, any other control byte).
pub fn check_field_value(name: &str, value: &[u8]) -> Result<(), HttpError> {
    match value.iter().position(|&b| !is_field_value_byte(b)) {
        None => Ok(()),
        Some(i) => Err(HttpError::invalid(
            "invalid_header_value",
            format!(
                "the value of header {name:?} holds the control byte 0x{:02x} at offset {i}; send only visible characters, spaces and tabs (RFC 9110 §5.5)",
                value[i]
            ),
        )),
    }
}

/// Parses one Content-Length value: 1*DIGIT, no sign, no list, no spaces inside, and a number
/// that fits 64 bits.
pub fn parse_content_length(value: &[u8]) -> Result<u64, HttpError> {
    let bad = || {
        HttpError::invalid(
            "invalid_content_length",
            "Content-Length must be one decimal number of bytes (RFC 9110 §8.6)",
        )
    };
    if value.is_empty() {
        return Err(bad());
    }
    let mut n: u64 = 0;
    for &b in value {
        if !b.is_ascii_digit() {
            return Err(bad());
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(b - b'0')))
            .ok_or_else(bad)?;
    }
    Ok(n)
}

/// Checks `host[:port]` (RFC 9110 §4.2.3 / RFC 3986 §3.2.2): a reg-name of unreserved,
/// percent-encoded and sub-delim characters, or a bracketed IP literal; an optional decimal
/// port. No userinfo. `allow_empty`: an empty value is fine (a `Host` for a target without an
/// authority).
pub fn check_authority(value: &[u8], allow_empty: bool) -> Result<(), HttpError> {
    let bad = |why: &str| {
        HttpError::invalid(
            "invalid_host",
            format!("the host {:?} is not a valid host[:port] ({why}); send a host name or address with an optional port",
                String::from_utf8_lossy(value)),
        )
    };
    if value.is_empty() {
        return if allow_empty {
            Ok(())
        } else {
            Err(bad("it is empty"))
        };
    }
    let (host, port) = if value[0] == b'[' {
        let close = value
            .iter()
            .position(|&b| b == b']')
            .ok_or_else(|| bad("an IP literal without ']'"))?;
        let lit = &value[1..close];
        if lit.is_empty()
            || !lit
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(bad("an invalid IP literal"));
        }
        match &value[close + 1..] {
            [] => (&value[..=close], None),
            [b':', port @ ..] => (&value[..=close], Some(port)),
            _ => return Err(bad("bytes after the IP literal")),
        }
    } else {
        match value.iter().rposition(|&b| b == b':') {
            Some(i) => (&value[..i], Some(&value[i + 1..])),
            None => (value, None),
        }
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    if host[0] != b'[' {
        for &b in host {
            let ok = b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.'
                        | b'_'
                        | b'~'
                        | b'%'
                        | b'!'
                        | b'$'
                        | b'&'
                        | b'\''
                        | b'('
                        | b')'
                        | b'*'
                        | b'+'
                        | b','
                        | b';'
                        | b'='
                );
            if !ok {
                return Err(bad("a character not allowed in a host name"));
            }
        }
    }
    if let Some(p) = port {
        if p.len() > 5 || !p.iter().all(u8::is_ascii_digit) {
            return Err(bad("the port is not a number"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_is_digits_that_fit() {
        assert_eq!(parse_content_length(b"0").unwrap(), 0);
        assert_eq!(
            parse_content_length(b"18446744073709551615").unwrap(),
            u64::MAX
        );
        for bad in [
            &b""[..],
            b"+5",
            b"-1",
            b"0x10",
            b"5 5",
            b"5,5",
            b"18446744073709551616",
            b"1e3",
        ] {
            assert_eq!(
                parse_content_length(bad).unwrap_err().code(),
                "invalid_content_length",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn authorities() {
        for ok in [
            &b"example.com"[..],
            b"example.com:8080",
            b"10.0.0.1:80",
            b"[::1]:443",
            b"[::1]",
            b"a_b.c",
        ] {
            check_authority(ok, false).unwrap();
        }
        for bad in [
            &b""[..],
            b"user@host",
            b"a/b",
            b"host:port",
            b"[::1",
            b"[zz]",
            b":80",
            b"a b",
            b"host:123456",
        ] {
            assert!(check_authority(bad, false).is_err(), "{bad:?}");
        }
        check_authority(b"", true).unwrap();
    }

    #[test]
    fn field_values() {
        check_field_value("x", b"a b\tc\x80").unwrap();
        for bad in [&b"a\rb"[..], b"a\0", b"\x7f", b"\x01"] {
            assert_eq!(
                check_field_value("x", bad).unwrap_err().code(),
                "invalid_header_value"
            );
        }
    }
}
