//! Upstream response heads (RFC 9112 §4, §6.3): parsed once when complete, with the framing
//! rules a proxy needs to stay in sync with the upstream connection. Interim 1xx responses are
//! the caller's to skip, at most [`MAX_INTERIM_RESPONSES`] in a row.

use crate::body::BodyFraming;
use crate::encode::ResponseHeadEncoder;
use crate::error::HttpError;
use crate::fields::{check_field_value, connection_tokens, is_hop_by_hop, parse_content_length};

/// Most interim (1xx) responses accepted before the final response.
pub const MAX_INTERIM_RESPONSES: usize = 5;

/// Most header fields in an upstream response.
const MAX_RESPONSE_HEADERS: usize = 128;

/// A parsed response head.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    /// Status code (100–999).
    pub status: u16,
    /// How the body is framed, given the request method and the status.
    pub framing: BodyFraming,
    /// Whether the connection may be reused after the body.
    pub keep_alive: bool,
    /// The Content-Length the upstream announced (kept for a HEAD response).
    pub content_length: Option<u64>,
    /// The status line and end-to-end fields as relay relays them: `HTTP/1.1 <status>
    /// <reason>\r\n` then `Name: value\r\n` each; hop-by-hop fields, Content-Length and
    /// Transfer-Encoding removed; no blank line.
    pub relayed: Vec<u8>,
}

impl ResponseHead {
    /// Whether this is an interim (1xx) response: the caller skips it and reads the next head.
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status)
    }

    /// Parses a complete response head (status line through the blank line), as found by
    /// [`crate::HeadScanner::scan`]. `request_was_head`: the response to a HEAD has no body.
    pub fn parse_complete(head: &[u8], request_was_head: bool) -> Result<ResponseHead, HttpError> {
        let mut hdrs = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
        let mut resp = httparse::Response::new(&mut hdrs);
        match resp.parse(head) {
            Ok(httparse::Status::Complete(n)) if n == head.len() => {}
            Ok(_) => {
                return Err(HttpError::invalid(
                    "invalid_response",
                    "invalid response head",
                ))
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(HttpError::TooManyHeaders {
                    limit: MAX_RESPONSE_HEADERS,
                })
            }
            Err(e) => {
                return Err(HttpError::invalid(
                    "invalid_response",
                    format!("invalid response head: {e}"),
                ))
            }
        }
        let status = resp.code.unwrap_or(0);
        // httparse takes any three digits. A status under 100 would be neither interim nor
        // final-with-body (`< 200` is bodiless): its body would stay on a kept-alive upstream
        // connection and be read as the next response (found by fuzzing).
        if status < 100 {
            return Err(HttpError::invalid(
                "invalid_response",
                format!("the status {status:03} is not in 100-999 (RFC 9110 §15)"),
            ));
        }
        if status == 101 {
            return Err(HttpError::invalid(
                "invalid_response",
                "101 Switching Protocols is not supported",
            ));
        }
        let minor = resp.version.unwrap_or(1);
        let tokens = connection_tokens(resp.headers.iter().map(|h| (h.name, h.value)));
        let mut keep_alive = if minor == 0 {
            tokens.iter().any(|t| t == "keep-alive")
        } else {
            !tokens.iter().any(|t| t == "close")
        };
        let mut cl: Option<u64> = None;
        let mut te = false;
        let mut chunked_last = false;
        let mut enc = ResponseHeadEncoder::new(status, resp.reason.unwrap_or(""));
        for h in resp.headers.iter() {
            check_field_value(h.name, h.value)?;
            if h.name.eq_ignore_ascii_case("content-length") {
                let v = parse_content_length(h.value).map_err(|_| {
                    HttpError::invalid(
                        "invalid_response",
                        format!(
                            "invalid Content-Length {:?} in response",
                            String::from_utf8_lossy(h.value)
                        ),
                    )
                })?;
                if cl.is_some_and(|c| c != v) {
                    return Err(HttpError::invalid(
                        "invalid_response",
                        "conflicting Content-Length values in response",
                    ));
                }
                cl = Some(v);
                continue;
            }
            if h.name.eq_ignore_ascii_case("transfer-encoding") {
                te = true;
                // The last coding of the combined list decides; empty list elements are
                // ignored (RFC 9110 §5.6.1), so `chunked,` is chunked, not close-delimited.
                if let Some(last) = h
                    .value
                    .rsplit(|&b| b == b',')
                    .map(<[u8]>::trim_ascii)
                    .find(|c| !c.is_empty())
                {
                    chunked_last = last.eq_ignore_ascii_case(b"chunked");
                }
                continue;
            }
            if is_hop_by_hop(h.name, &tokens) {
                continue;
            }
            enc.header(h.name, h.value);
        }
        if te && cl.is_some() {
            return Err(HttpError::invalid(
                "invalid_response",
                "the response has both Content-Length and Transfer-Encoding",
            ));
        }
        let bodiless = request_was_head || status == 204 || status == 304 || status < 200;
        let framing = if bodiless {
            BodyFraming::None
        } else if te {
            if chunked_last {
                BodyFraming::Chunked
            } else {
                keep_alive = false;
                BodyFraming::Close
            }
        } else if let Some(n) = cl {
            BodyFraming::Length(n)
        } else {
            keep_alive = false;
            BodyFraming::Close
        };
        Ok(ResponseHead {
            status,
            framing,
            keep_alive,
            content_length: cl,
            relayed: enc.into_partial(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<ResponseHead, HttpError> {
        ResponseHead::parse_complete(s.as_bytes(), false)
    }

    #[test]
    fn framing_rules() {
        let h = parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\nConnection: x-hop\r\nX-Hop: 1\r\n\r\n").unwrap();
        assert_eq!(h.framing, BodyFraming::Length(5));
        assert!(h.keep_alive);
        assert_eq!(h.relayed, b"HTTP/1.1 200 OK\r\nX-A: b\r\n");
        let h = parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").unwrap();
        assert_eq!(h.framing, BodyFraming::Chunked);
        // Empty list elements are ignored: still chunked (was close-delimited).
        for te in [
            "chunked,",
            "chunked , ",
            "gzip, chunked\r\nTransfer-Encoding: ",
        ] {
            let h = parse(&format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: {te}\r\n\r\n"
            ))
            .unwrap();
            assert_eq!(
                (h.framing, h.keep_alive),
                (BodyFraming::Chunked, true),
                "{te:?}"
            );
        }
        let h = parse(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
        )
        .unwrap();
        assert_eq!(h.framing, BodyFraming::Close);
        let h = parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n").unwrap();
        assert_eq!((h.framing, h.keep_alive), (BodyFraming::Close, false));
        let h = parse("HTTP/1.0 200 OK\r\n\r\n").unwrap();
        assert_eq!((h.framing, h.keep_alive), (BodyFraming::Close, false));
        let h = parse("HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n").unwrap();
        assert_eq!(h.framing, BodyFraming::None);
        let h = ResponseHead::parse_complete(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n", true)
            .unwrap();
        assert_eq!((h.framing, h.content_length), (BodyFraming::None, Some(7)));
        assert!(parse("HTTP/1.1 100 Continue\r\n\r\n").unwrap().is_interim());
    }

    #[test]
    fn bad_responses() {
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX: a\x00\r\n\r\n",
            // Regression (fuzzing): a status under 100 was admitted as bodiless and kept-alive.
            "HTTP/1.1 000 Zero\r\nContent-Length: 5\r\n\r\n",
            "HTTP/1.1 099 Low\r\nContent-Length: 5\r\n\r\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
