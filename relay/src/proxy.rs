//! The phases of one accepted request, in order: route; hand the original to the Kafka path;
//! scrub the body, query and PII headers (fail closed); build the upstream request; exchange it;
//! relay the upstream's response. Each phase returns a [`RequestError`] to stop the request.

use std::net::SocketAddr;
use std::time::SystemTime;

use crate::error::RequestError;
use crate::http::request::RequestHead;
use crate::http::{connection_tokens, is_hop_by_hop};
use crate::kafka::publish::{publish_original, Pending};
use crate::kafka::OriginalRecord;
use crate::route::{KeySource, NoRoute, Route};
use crate::state::WorkerView;
use crate::upstream::UpstreamResponse;
use crate::worker::Worker;

/// The outcome of a request that reached a route (for metrics).
pub struct Handled<'v> {
    /// The route, when one matched.
    pub route: Option<&'v Route>,
    /// The upstream response or why there is none.
    pub result: Result<UpstreamResponse, RequestError>,
    /// The request id used upstream.
    pub request_id: String,
    /// PII values hashed.
    pub fields_hashed: u64,
}

/// Finds the route for a request.
pub fn route<'v>(view: &'v WorkerView, head: &RequestHead) -> Result<&'v Route, RequestError> {
    view.snap
        .routes
        .find(head.method(), head.path(), head.host())
        .map_err(|e| match e {
            NoRoute::NotFound => RequestError::NoRoute {
                method: head.method().to_string(),
                path: head.path().to_string(),
            },
            NoRoute::MethodNotAllowed => RequestError::MethodNotAllowed {
                method: head.method().to_string(),
                path: head.path().to_string(),
            },
        })
}

/// Runs every phase after framing for one request.
pub async fn handle<'v>(
    worker: &Worker,
    view: &'v WorkerView,
    head: &RequestHead,
    body: Vec<u8>,
    peer: SocketAddr,
    received_at: SystemTime,
) -> Handled<'v> {
    let request_id = match head.header_str("x-request-id") {
        Some(id) if !id.is_empty() && id.len() <= 200 => id.to_string(),
        _ => worker.next_request_id(),
    };
    let route = match route(view, head) {
        Ok(r) => r,
        Err(e) => {
            return Handled {
                route: None,
                result: Err(e),
                request_id,
                fields_hashed: 0,
            }
        }
    };
    let mut fields_hashed = 0;
    let result = forward(
        worker,
        view,
        route,
        head,
        body,
        peer,
        received_at,
        &request_id,
        &mut fields_hashed,
    )
    .await;
    Handled {
        route: Some(route),
        result,
        request_id,
        fields_hashed,
    }
}

#[allow(clippy::too_many_arguments)]
async fn forward(
    worker: &Worker,
    view: &WorkerView,
    route: &Route,
    head: &RequestHead,
    body: Vec<u8>,
    peer: SocketAddr,
    received_at: SystemTime,
    request_id: &str,
    fields_hashed: &mut u64,
) -> Result<UpstreamResponse, RequestError> {
    let scrubber = route.pii.as_ref().and_then(|p| view.scrubbers.get(p));
    let content_type = head.header_str("content-type");
    let content_encoding = head.header_str("content-encoding");

    // 1. The original goes to the Kafka path before anything is scrubbed.
    let mut pending = Pending::Nothing;
    if let (Some(topic), Some(kafka)) = (&route.topic, &worker.kafka) {
        let key = match (&route.key, scrubber) {
            (KeySource::Field(f), Some(s)) => {
                s.key_hash(content_type, &body, f).map(String::into_bytes)
            }
            (KeySource::Header(h), s) => head.header(h).map(|v| match s {
                Some(s) => s.hash_value(v).into_bytes(),
                None => v.to_vec(),
            }),
            _ => None,
        };
        let ts = received_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let rec = OriginalRecord {
            topic: topic.clone(),
            key,
            payload: body.clone(),
            timestamp_ms: ts,
            route: route.name.clone(),
            request_id: request_id.to_string(),
            content_type: content_type.map(str::to_string),
            key_id: scrubber.and_then(|s| s.key_id()).map(str::to_string),
        };
        pending = publish_original(worker, route, kafka, rec).await?;
    }

    // 2. Scrub (fail closed: an error here means nothing is forwarded).
    let (body, query) = match scrubber {
        Some(s) => {
            let scrubbed = s.scrub_body(content_type, content_encoding, &body)?;
            *fields_hashed += scrubbed.fields_hashed;
            let q = head.query().and_then(|q| s.scrub_query(q));
            (scrubbed.body, q)
        }
        None => (body, None),
    };

    // 3. The upstream request.
    let upstream = &view.upstreams[route.upstream];
    let mut req = Vec::with_capacity(head.head_len() + body.len() + 256);
    req.extend_from_slice(head.method().as_bytes());
    req.push(b' ');
    req.extend_from_slice(head.path().as_bytes());
    if let Some(q) = query.as_deref().or(head.query()) {
        req.push(b'?');
        req.extend_from_slice(q.as_bytes());
    }
    req.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    req.extend_from_slice(upstream.shared.host_header.as_bytes());
    req.extend_from_slice(b"\r\n");
    let tokens = connection_tokens(head.headers());
    let mut xff: Option<&[u8]> = None;
    for (name, value) in head.headers() {
        if is_hop_by_hop(name, &tokens)
            || name.eq_ignore_ascii_case("host")
            || name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("expect")
            || name.eq_ignore_ascii_case("x-relay-key-id")
            || name.eq_ignore_ascii_case("x-request-id")
        {
            continue;
        }
        if name.eq_ignore_ascii_case("x-forwarded-for") {
            xff = Some(value);
            continue;
        }
        req.extend_from_slice(name.as_bytes());
        req.extend_from_slice(b": ");
        match scrubber {
            Some(s) if s.is_pii_header(&name.to_ascii_lowercase()) => {
                *fields_hashed += 1;
                req.extend_from_slice(s.hash_value(value).as_bytes())
            }
            _ => req.extend_from_slice(value),
        }
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"X-Forwarded-For: ");
    if let Some(prev) = xff {
        req.extend_from_slice(prev);
        req.extend_from_slice(b", ");
    }
    req.extend_from_slice(peer.ip().to_string().as_bytes());
    req.extend_from_slice(b"\r\nX-Request-Id: ");
    req.extend_from_slice(request_id.as_bytes());
    req.extend_from_slice(b"\r\n");
    if let Some(k) = scrubber.and_then(|s| s.key_id()) {
        req.extend_from_slice(b"X-Relay-Key-Id: ");
        req.extend_from_slice(k.as_bytes());
        req.extend_from_slice(b"\r\n");
    }
    let bodyless_method = matches!(
        head.method(),
        "GET" | "HEAD" | "DELETE" | "OPTIONS" | "TRACE"
    );
    if !(body.is_empty() && bodyless_method && head.header("content-length").is_none()) {
        req.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(&body);
    drop(body);

    // 4. Exchange (for `ack` delivery, while Kafka's round trip is in flight), then settle
    // with Kafka's answer.
    let resp = upstream.exchange(req, head.method() == "HEAD").await;
    pending.settle(resp).await
}

/// Appends the relayed response (upstream status, headers and body unchanged; framing and
/// connection handling relay's own) to `out`.
pub fn write_response(out: &mut Vec<u8>, resp: &UpstreamResponse, keep_alive: bool) {
    out.extend_from_slice(&resp.head);
    if resp.bodiless {
        if let Some(cl) = resp.head_content_length {
            out.extend_from_slice(format!("Content-Length: {cl}\r\n").as_bytes());
        }
    } else {
        out.extend_from_slice(format!("Content-Length: {}\r\n", resp.body.len()).as_bytes());
    }
    out.extend_from_slice(if keep_alive {
        b"Connection: keep-alive\r\n\r\n"
    } else {
        b"Connection: close\r\n\r\n"
    });
    out.extend_from_slice(&resp.body);
}
