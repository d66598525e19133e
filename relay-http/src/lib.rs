//! relay-http: pure HTTP/1.1 (RFC 9112) for both sides of the relay, with no I/O.
//!
//! - [`request`]: request heads, found incrementally ([`HeadScanner`]) and parsed once;
//! - [`response`]: upstream response heads and their framing rules;
//! - [`body`]: one push [`BodyDecoder`] for Content-Length, chunked and close-delimited bodies,
//!   used for requests and responses alike, with every size checked against its limit in one
//!   place;
//! - [`encode`]: the upstream request head and the client response head;
//! - [`fields`]: field syntax shared by both sides (values, Content-Length, hop-by-hop, hosts);
//! - `fuzzing` (feature `fuzzing`, for the fuzz targets and tests only): the invariant checks
//!   and reference decoders the fuzz targets and the corpus replay share.
//!
//! The crate knows no socket and no runtime: callers feed it bytes. It is strict where
//! RFC 9112 leaves room, because relay sits in front of other parsers: bare LF, bare CR,
//! invalid field bytes, duplicate Content-Length, Content-Length with Transfer-Encoding and
//! malformed chunk extensions are all refused at once.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod body;
pub mod encode;
pub mod error;
pub mod fields;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod request;
pub mod response;
pub mod scan;

pub use body::{BodyDecoder, BodyFraming, BodyLimits};
pub use encode::{RequestHeadEncoder, ResponseHeadEncoder};
pub use error::HttpError;
pub use request::{HeadLimits, RequestHead};
pub use response::{ResponseHead, MAX_INTERIM_RESPONSES};
pub use scan::HeadScanner;
