//! The on-disk record: one original, framed and checksummed.
//!
//! ```text
//! u32 LE  body length (bytes after the checksum)
//! u32 LE  CRC32C (Castagnoli) of the body
//! body:
//!   u8      format version (1)
//!   i64 LE  timestamp (CreateTime, ms since the Unix epoch)
//!   u16 LE  request id length, request id (UTF-8)
//!   u16 LE  route length, route (UTF-8)
//!   u16 LE  topic length, topic (UTF-8)
//!   u32 LE  key length (u32::MAX: no key), key
//!   u16 LE  header count; per header: u16 LE name length, name, u32 LE value length, value
//!   u32 LE  payload length, payload (the body exactly as the client sent it)
//! ```
//!
//! Every length is checked against what is left of the record while decoding, so a corrupt or
//! hostile file can make decoding fail but never read out of bounds or allocate more than the
//! record's own size.

use std::sync::Arc;

use crate::kafka::OriginalRecord;

/// Bytes before the body: length + CRC.
pub const FRAME_HEADER: usize = 8;
/// Format version written into every record.
pub const VERSION: u8 = 1;
/// Largest body accepted when reading (a length above it is corruption, not a record).
pub const MAX_BODY: usize = 64 << 20;

/// Bytes a record adds on disk on top of its payload and variable fields: frame header,
/// version, timestamp, and every length field (without headers).
pub const FIXED_OVERHEAD: usize = FRAME_HEADER + 1 + 8 + 2 + 2 + 2 + 4 + 2 + 4;
/// Bytes one header adds besides its name and value.
const HEADER_OVERHEAD: usize = 2 + 4;
/// The most a record adds on top of its payload when its id, route, topic, key and header
/// values are at most `other` bytes together: for `relay check`'s size budget.
pub const fn max_overhead(other: usize) -> usize {
    FIXED_OVERHEAD + 2 * HEADER_OVERHEAD + "content-type".len() + "relay-key-id".len() + other
}

/// Why bytes are not a valid record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the frame says (a torn tail when at the end of a segment).
    #[error("truncated record: need {need} bytes, {have} left")]
    Truncated {
        /// Bytes the frame needs.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// The checksum does not match the body.
    #[error("CRC32C mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadCrc {
        /// From the frame.
        stored: u32,
        /// Over the body read.
        computed: u32,
    },
    /// The body's fields do not parse (a bug or corruption that kept the CRC valid).
    #[error("malformed record body: {0}")]
    Malformed(&'static str),
}

/// Encodes `rec` as one framed record, appended to `out`. Returns the bytes written.
pub fn encode(rec: &OriginalRecord, out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER]);
    out.push(VERSION);
    out.extend_from_slice(&rec.timestamp_ms.to_le_bytes());
    put_short(out, rec.request_id.as_bytes());
    put_short(out, rec.route.as_bytes());
    put_short(out, rec.topic.as_bytes());
    match &rec.key {
        Some(k) => put_long(out, k),
        None => out.extend_from_slice(&u32::MAX.to_le_bytes()),
    }
    let n = rec.headers().count() as u16;
    out.extend_from_slice(&n.to_le_bytes());
    for (name, v) in rec.headers() {
        put_short(out, name.as_bytes());
        put_long(out, v.as_bytes());
    }
    put_long(out, &rec.payload);
    let body_len = out.len() - start - FRAME_HEADER;
    let crc = crc32c::crc32c(&out[start + FRAME_HEADER..]);
    out[start..start + 4].copy_from_slice(&(body_len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    out.len() - start
}

/// The encoded size of `rec`, without encoding it.
pub fn encoded_len(rec: &OriginalRecord) -> usize {
    FIXED_OVERHEAD
        + rec.request_id.len()
        + rec.route.len()
        + rec.topic.len()
        + rec.key.as_ref().map_or(0, Vec::len)
        + rec
            .headers()
            .map(|(name, v)| HEADER_OVERHEAD + name.len() + v.len())
            .sum::<usize>()
        + rec.payload.len()
}

/// Decodes the record at the start of `buf`; returns it and its framed length.
pub fn decode(buf: &[u8]) -> Result<(OriginalRecord, usize), DecodeError> {
    let body_len = frame_len(buf)?;
    let body = &buf[FRAME_HEADER..FRAME_HEADER + body_len];
    let stored = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Err(DecodeError::BadCrc { stored, computed });
    }
    let rec = parse_body(body)?;
    Ok((rec, FRAME_HEADER + body_len))
}

/// The body length the frame at the start of `buf` announces, checked against `buf`.
pub fn frame_len(buf: &[u8]) -> Result<usize, DecodeError> {
    if buf.len() < FRAME_HEADER {
        return Err(DecodeError::Truncated {
            need: FRAME_HEADER,
            have: buf.len(),
        });
    }
    let body_len = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
    if body_len == 0 || body_len > MAX_BODY {
        return Err(DecodeError::Malformed(
            "record length is 0 or above the limit",
        ));
    }
    let need = FRAME_HEADER
        .checked_add(body_len)
        .ok_or(DecodeError::Malformed("record length overflows"))?;
    if buf.len() < need {
        return Err(DecodeError::Truncated {
            need,
            have: buf.len(),
        });
    }
    Ok(body_len)
}

fn parse_body(body: &[u8]) -> Result<OriginalRecord, DecodeError> {
    let mut r = Reader { b: body };
    if r.u8()? != VERSION {
        return Err(DecodeError::Malformed("unknown record version"));
    }
    let timestamp_ms = i64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes"));
    let request_id = r.short_str()?.to_string();
    let route: Arc<str> = r.short_str()?.into();
    let topic: Arc<str> = r.short_str()?.into();
    let key_len = r.u32()?;
    let key = if key_len == u32::MAX {
        None
    } else {
        Some(r.take(key_len as usize)?.to_vec())
    };
    let mut rec = OriginalRecord {
        topic,
        key,
        payload: Vec::new(),
        timestamp_ms,
        route,
        request_id,
        content_type: None,
        key_id: None,
        consumer: None,
        policy: None,
        scrubbed_sha256: None,
        pii_count: None,
        guard_findings: Vec::new(),
        content_encoding: None,
        split: None,
    };
    let n = r.u16()?;
    for _ in 0..n {
        let name = r.short_str()?;
        let len = r.u32()? as usize;
        let value = std::str::from_utf8(r.take(len)?)
            .map_err(|_| DecodeError::Malformed("header value is not UTF-8"))?
            .to_string();
        if !rec.set_header(name, value) {
            return Err(DecodeError::Malformed("unknown header"));
        }
    }
    let len = r.u32()? as usize;
    rec.payload = r.take(len)?.to_vec();
    if !r.b.is_empty() {
        return Err(DecodeError::Malformed("trailing bytes in record body"));
    }
    Ok(rec)
}

fn put_short(out: &mut Vec<u8>, b: &[u8]) {
    // Request ids, routes, topics and header names are short by construction (checked by
    // config validation and the request path); cut rather than write a wrong length.
    let n = b.len().min(u16::MAX as usize);
    out.extend_from_slice(&(n as u16).to_le_bytes());
    out.extend_from_slice(&b[..n]);
}

fn put_long(out: &mut Vec<u8>, b: &[u8]) {
    let n = b.len().min(u32::MAX as usize - 1);
    out.extend_from_slice(&(n as u32).to_le_bytes());
    out.extend_from_slice(&b[..n]);
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.b.len() < n {
            return Err(DecodeError::Malformed("a field runs past the record"));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2")))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn short_str(&mut self) -> Result<&'a str, DecodeError> {
        let n = self.u16()? as usize;
        std::str::from_utf8(self.take(n)?).map_err(|_| DecodeError::Malformed("text is not UTF-8"))
    }
}

#[cfg(test)]
pub(crate) fn sample(i: usize) -> OriginalRecord {
    OriginalRecord {
        topic: "t".into(),
        key: i.is_multiple_of(2).then(|| format!("k{i}").into_bytes()),
        payload: format!("{{\"n\":{i}}}\0\u{e9}").into_bytes(),
        timestamp_ms: 1_700_000_000_000 + i as i64,
        route: "r".into(),
        request_id: format!("id-{i}"),
        content_type: i.is_multiple_of(3).then(|| "application/json".into()),
        key_id: (!i.is_multiple_of(5)).then(|| "k1".into()),
        consumer: i.is_multiple_of(2).then(|| "ios-app".into()),
        policy: i.is_multiple_of(4).then(|| "default:0123456789ab".into()),
        scrubbed_sha256: i.is_multiple_of(4).then(|| format!("{:064x}", i)),
        pii_count: i.is_multiple_of(4).then(|| i.to_string()),
        guard_findings: if i.is_multiple_of(7) {
            vec![
                ("email".into(), "$.note".into()),
                ("ip".into(), "header.x-a".into()),
            ]
        } else {
            Vec::new()
        },
        content_encoding: (i % 4 == 1).then_some(crate::coding::Coding::Gzip),
        split: i.is_multiple_of(4).then(|| "tracking-v2".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_size() {
        for i in 0..20 {
            let r = sample(i);
            let mut buf = Vec::new();
            let n = encode(&r, &mut buf);
            assert_eq!(n, buf.len());
            assert_eq!(n, encoded_len(&r));
            let (back, used) = decode(&buf).unwrap();
            assert_eq!(used, n);
            assert_eq!(back, r);
            assert_eq!(
                back.content_encoding.map(|c| c.as_str()),
                (i % 4 == 1).then_some("gzip"),
                "the content-encoding header round-trips"
            );
        }
    }

    #[test]
    fn receipt_headers_round_trip_through_the_spool() {
        let mut r = sample(1);
        r.policy = Some("default:0123456789ab".into());
        r.scrubbed_sha256 = Some("ab".repeat(32));
        r.pii_count = Some("3".into());
        let mut buf = Vec::new();
        let n = encode(&r, &mut buf);
        assert_eq!(n, encoded_len(&r));
        let (back, _) = decode(&buf).unwrap();
        assert_eq!(back.policy.as_deref(), Some("default:0123456789ab"));
        assert_eq!(back.scrubbed_sha256, r.scrubbed_sha256);
        assert_eq!(back.pii_count.as_deref(), Some("3"));
        assert_eq!(back, r);
        let names: Vec<&str> = back.headers().map(|(n, _)| n).collect();
        for h in ["relay-policy", "relay-scrubbed-sha256", "relay-pii-count"] {
            assert!(names.contains(&h), "{names:?}");
        }
    }

    #[test]
    fn every_truncation_and_bit_flip_is_detected() {
        let mut buf = Vec::new();
        encode(&sample(4), &mut buf);
        for cut in 0..buf.len() {
            assert!(decode(&buf[..cut]).is_err(), "cut at {cut}");
        }
        for i in 0..buf.len() {
            let mut b = buf.clone();
            b[i] ^= 0x10;
            assert!(decode(&b).map(|(r, _)| r) != Ok(sample(4)), "flip at {i}");
        }
    }
}
