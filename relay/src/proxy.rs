//! The phases of one framed request, in order, over one [`RequestCtx`]:
//!
//! 1. [`route`]: find the route (404 / 405);
//! 2. [`admit`]: the consumer's credentials and the consumer's and route's limits (401 /
//!    403 / 429); nothing is published or forwarded for a refused request;
//! 2. [`decode`]: decode a compressed (`Content-Encoding`) body within the route's limits
//!    (415 / 413 / 400); nothing is published or forwarded for a refused body;
//! 2. [`publish_original`]: hand the original body to the Kafka path, before anything is
//!    scrubbed (503 `kafka_backpressure` when the path is full);
//! 3. [`scrub`]: pseudonymise the body, the query and the PII headers, fail closed (4xx);
//! 4. [`build_upstream_request`]: encode the upstream request head and body;
//! 5. [`exchange`]: send it upstream and read the response (502 / 503 / 504);
//! 6. [`write_response`]: relay the upstream's response (the server writes it);
//! 7. [`log`]: route metrics and the sampled access log.
//!
//! Each phase is a short function; a phase that refuses returns a [`RequestError`] and the
//! later phases do not run.

use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use relay_http::encode::finish_response_head;
use relay_http::fields::{connection_tokens, is_hop_by_hop};
use relay_http::{RequestHead, RequestHeadEncoder};

use crate::admit::Admitted;
use crate::coding::{self, Applied, ForwardEncoding};
use crate::delivery::{publish_original as publish, Pending};
use crate::error::RequestError;
use crate::kafka::OriginalRecord;
use crate::route::{KeySource, NoRoute, Route};
use crate::scrub::{Finding, Scrubber};
use crate::snapshot::WorkerView;
use crate::upstream::UpstreamResponse;
use crate::worker::Worker;

/// What the phases know about one request.
pub struct RequestCtx<'v> {
    /// The request id: the client's `X-Request-Id` when sane, else a new one.
    pub request_id: String,
    /// The route, once [`route`] found it.
    pub route: Option<&'v Route>,
    /// The route's PII scrubber, when it has a policy.
    pub scrubber: Option<&'v Scrubber>,
    /// The client's address.
    pub peer: SocketAddr,
    /// When the head was complete (Kafka CreateTime).
    pub received_at: SystemTime,
    /// PII values hashed so far (body, query and headers).
    pub fields_hashed: u64,
    /// What the egress guard reported (detectors whose action is `report`) in what is forwarded.
    pub findings: Vec<Finding>,
    /// What [`admit`] found: the consumer and the credential header not to forward.
    pub admitted: Admitted,
    /// The body's content coding and the forwarded one ([`decode`], [`encode_forward`]).
    pub coding: Applied,
}

/// The outcome of a request (for the response and the log phase).
pub struct Handled<'v> {
    /// The context the phases filled in.
    pub ctx: RequestCtx<'v>,
    /// The upstream response or why there is none.
    pub result: Result<UpstreamResponse, RequestError>,
}

impl Handled<'_> {
    /// A request that failed before any phase ran (e.g. a caught panic).
    pub fn failed(request_id: String, peer: SocketAddr, err: RequestError) -> Handled<'static> {
        Handled {
            ctx: RequestCtx {
                request_id,
                route: None,
                scrubber: None,
                peer,
                received_at: SystemTime::now(),
                fields_hashed: 0,
                findings: Vec::new(),
                admitted: Admitted::default(),
                coding: Applied::default(),
            },
            result: Err(err),
        }
    }

    /// The request id.
    pub fn request_id(&self) -> &str {
        &self.ctx.request_id
    }
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
    #[cfg(feature = "fault-injection")]
    if head.header("x-relay-fault") == Some(b"panic") {
        panic!("fault injection: x-relay-fault: panic");
    }
    let request_id = match head.header_str("x-request-id") {
        Some(id) if !id.is_empty() && id.len() <= 200 => id.to_string(),
        _ => worker.next_request_id(),
    };
    let mut ctx = RequestCtx {
        request_id,
        route: None,
        scrubber: None,
        peer,
        received_at,
        fields_hashed: 0,
        findings: Vec::new(),
        admitted: Admitted::default(),
        coding: Applied::default(),
    };
    let result = run_phases(&mut ctx, worker, view, head, body).await;
    Handled { ctx, result }
}

async fn run_phases<'v>(
    ctx: &mut RequestCtx<'v>,
    worker: &Worker,
    view: &'v WorkerView,
    head: &RequestHead,
    body: Vec<u8>,
) -> Result<UpstreamResponse, RequestError> {
    let route = route(ctx, view, head)?;
    admit(ctx, worker, view, route, head)?;
    let mut body = decode(ctx, worker, view, route, head, body)?;
    let pending = publish_original(ctx, worker, route, head, &body).await?;
    let (scrubbed, query) = scrub(ctx, head, body.take_decoded())?;
    let forwarded = encode_forward(ctx, view, route, body, scrubbed)?;
    let request = build_upstream_request(ctx, view, route, head, &forwarded, query.as_deref())?;
    drop(forwarded);
    // For `ack` delivery the exchange runs while Kafka's round trip is in flight; the answer
    // then waits for Kafka's.
    let response = exchange(view, route, head, request).await;
    pending.settle(response).await
}

/// Phase 1, first after framing: finds the route by method, path and host. Refuses 404
/// `no_route` or 405 `method_not_allowed`.
pub fn route<'v>(
    ctx: &mut RequestCtx<'v>,
    view: &'v WorkerView,
    head: &RequestHead,
) -> Result<&'v Route, RequestError> {
    let route = view
        .snap
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
        })?;
    ctx.route = Some(route);
    ctx.scrubber = route.pii.as_ref().and_then(|p| view.scrubbers.get(p));
    Ok(route)
}

/// Phase 2, after the route and before anything is published: identifies the consumer by its
/// API key or JWT when the route has `auth`, checks it may use the route, and counts the
/// request against the consumer's and the route's limits. Refuses 401 `unauthorized` (with
/// `WWW-Authenticate`), 403 `forbidden`, 429 `rate_limited` / `quota_exceeded` (with
/// `Retry-After` and `RateLimit-*`).
pub fn admit(
    ctx: &mut RequestCtx<'_>,
    worker: &Worker,
    view: &WorkerView,
    route: &Route,
    head: &RequestHead,
) -> Result<(), RequestError> {
    ctx.admitted = view.snap.edge.admit(
        route.index,
        &route.name,
        head,
        worker.index,
        crate::limit::now(),
    )?;
    Ok(())
}

/// Phase 2b, after admission and before anything is published: decodes a body sent with a
/// `Content-Encoding` (gzip / x-gzip, deflate, zstd; identity is no coding) within the route's
/// `max_decoded_bytes` and `max_expansion_ratio` ([`coding::Limits::resolve`]). An empty
/// body is empty under every coding. Refuses 415 `unsupported_content_encoding` (an unknown
/// or stacked coding, with `Accept-Encoding`), 413 `decoded_body_too_large` /
/// `expansion_ratio_exceeded`, 400 `invalid_encoding` (corrupt or truncated stream).
pub fn decode(
    ctx: &mut RequestCtx<'_>,
    worker: &Worker,
    view: &WorkerView,
    route: &Route,
    head: &RequestHead,
    body: Vec<u8>,
) -> Result<coding::Body, RequestError> {
    let m = &view.snap.route_metrics[route.index].decode;
    let values = head
        .headers()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-encoding"))
        .map(|(_, v)| v);
    let c = match coding::parse(values) {
        Ok(Some(c)) if !body.is_empty() => c,
        Ok(_) => return Ok(coding::Body::identity(body)),
        Err(e) => {
            m.refused(worker.index, &e);
            return Err(e.into());
        }
    };
    let rc = &view.snap.config.routes[route.index];
    let limits = coding::Limits::resolve(
        rc.max_decoded_bytes,
        rc.max_expansion_ratio,
        view.snap.config.server.max_body_bytes,
    );
    match coding::decode(c, &body, limits) {
        Ok(decoded) => {
            m.decoded(worker.index, c, decoded.len());
            ctx.coding.request = Some(c);
            Ok(coding::Body::decoded_from(body, decoded))
        }
        Err(e) => {
            m.refused(worker.index, &e);
            Err(e.into())
        }
    }
}

/// Phase 3, before anything is scrubbed: hands the original body, byte for byte, to the Kafka
/// path when the route has a topic, by the route's delivery mode (`memory`: queued; `spool`:
/// durable on disk before this returns; `ack`: returns a [`Pending`] acknowledgement that the
/// answer waits for). Refuses 503 `kafka_backpressure`, `spool_full`, `spool_unavailable` or
/// `kafka_unavailable`; an original too large for the producer is refused, never lost.
pub async fn publish_original(
    ctx: &RequestCtx<'_>,
    worker: &Worker,
    route: &Route,
    head: &RequestHead,
    body: &coding::Body,
) -> Result<Pending, RequestError> {
    let (Some(topic), Some(kafka)) = (&route.topic, &worker.kafka) else {
        return Ok(Pending::Nothing);
    };
    let decoded = body.decoded();
    let content_type = head.header_str("content-type");
    let key = match (&route.key, ctx.scrubber) {
        (KeySource::Field(f), Some(s)) => {
            s.key_hash(content_type, decoded, f).map(String::into_bytes)
        }
        (KeySource::Header(h), s) => head.header(h).map(|v| match s {
            Some(s) => s.hash_value(v).into_bytes(),
            None => v.to_vec(),
        }),
        _ => None,
    };
    let timestamp_ms = ctx
        .received_at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let rec = OriginalRecord {
        topic: topic.clone(),
        key,
        payload: body.wire.to_vec(),
        timestamp_ms,
        route: route.name.clone(),
        request_id: ctx.request_id.clone(),
        content_type: content_type.map(str::to_string),
        key_id: ctx.scrubber.and_then(|s| s.key_id()).map(str::to_string),
        consumer: ctx.admitted.consumer.clone(),
        content_encoding: ctx.coding.request,
    };
    publish(worker, route, kafka, rec).await
}

/// Phase 3, after the original is handed over: scrubs the body and the query with the route's
/// policy, then runs the egress guard over them (headers are hashed and guarded while the
/// upstream head is built). Fail closed: refuses 400/415 for a body the policy cannot read,
/// 422 `pii_detected` when a `reject` detector fires, and 400 `empty_body` for a zero-length
/// JSON body sent with POST, PUT or PATCH. Returns the body and the scrubbed query (None: unchanged).
pub fn scrub(
    ctx: &mut RequestCtx<'_>,
    head: &RequestHead,
    body: Vec<u8>,
) -> Result<(Vec<u8>, Option<String>), RequestError> {
    let Some(s) = ctx.scrubber else {
        return Ok((body, None));
    };
    let content_type = head.header_str("content-type");
    if body.is_empty()
        && matches!(head.method(), "POST" | "PUT" | "PATCH")
        && content_type.is_some_and(|c| c.to_ascii_lowercase().contains("json"))
    {
        return Err(RequestError::EmptyBody);
    }
    // The body is decoded by now ([`decode`]): identity for the scrubber.
    let scrubbed = s.scrub_body(content_type, None, &body)?;
    ctx.fields_hashed += scrubbed.fields_hashed;
    ctx.findings.extend(scrubbed.findings);
    let query = match head.query() {
        Some(q) => s.scrub_query_guarded(q, &mut ctx.findings)?,
        None => None,
    };
    Ok((scrubbed.body, query))
}

/// Phase 3b, after scrubbing: the body the upstream gets. For a compressed request on a route
/// with `forward_encoding = "same"`, the scrubbed body encoded again with the request's
/// coding (on a route without a PII policy, the bytes exactly as sent); otherwise the
/// scrubbed body as it is. Refuses 500 `internal_error` only if the encoder fails (it writes
/// to memory, so it should not).
pub fn encode_forward(
    ctx: &mut RequestCtx<'_>,
    view: &WorkerView,
    route: &Route,
    body: coding::Body,
    scrubbed: Vec<u8>,
) -> Result<Vec<u8>, RequestError> {
    let Some(c) = ctx.coding.request else {
        return Ok(scrubbed);
    };
    if view.snap.config.routes[route.index].forward_encoding != ForwardEncoding::Same {
        return Ok(scrubbed);
    }
    ctx.coding.forwarded = Some(c);
    if ctx.scrubber.is_none() {
        return Ok(body.wire);
    }
    coding::encode(c, &scrubbed).map_err(|e| {
        tracing::warn!(coding = %c, error = %e, "re-encoding the scrubbed body failed");
        RequestError::Internal
    })
}

/// Phase 4: encodes the upstream request: the method and path, the scrubbed query, the
/// upstream's `Host`, the end-to-end headers (PII headers hashed; hop-by-hop, framing and
/// relay's own headers dropped), `X-Forwarded-For`, `X-Request-Id`, `X-Relay-Key-Id`, then the
/// body with its Content-Length. Refuses 422 `pii_detected` when a `reject` detector of the
/// egress guard fires on a forwarded header.
pub fn build_upstream_request(
    ctx: &mut RequestCtx<'_>,
    view: &WorkerView,
    route: &Route,
    head: &RequestHead,
    body: &[u8],
    query: Option<&str>,
) -> Result<Vec<u8>, RequestError> {
    let upstream = &view.upstreams[route.upstream];
    let mut req = Vec::with_capacity(head.head_len() + body.len() + 256);
    let mut enc =
        RequestHeadEncoder::new(&mut req, head.method(), head.path(), query.or(head.query()));
    enc.header("Host", upstream.shared.host_header.as_bytes());
    let tokens = connection_tokens(head.headers());
    let mut xff: Option<&[u8]> = None;
    for (name, value) in head.headers() {
        if is_hop_by_hop(name, &tokens)
            || name.eq_ignore_ascii_case("host")
            || name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("expect")
            || name.eq_ignore_ascii_case("x-relay-key-id")
            || name.eq_ignore_ascii_case("x-request-id")
            || (ctx.coding.request.is_some() && name.eq_ignore_ascii_case("content-encoding"))
            || ctx
                .admitted
                .strip
                .as_deref()
                .is_some_and(|h| name.eq_ignore_ascii_case(h))
        {
            continue;
        }
        if name.eq_ignore_ascii_case("x-forwarded-for") {
            xff = Some(value);
            continue;
        }
        match ctx.scrubber {
            Some(s) if s.is_pii_header(&name.to_ascii_lowercase()) => {
                ctx.fields_hashed += 1;
                enc.header(name, s.hash_value(value).as_bytes())
            }
            Some(s) => match s.guard_header(name, value, &mut ctx.findings)? {
                Some(v) => enc.header(name, &v),
                None => enc.header(name, value),
            },
            None => enc.header(name, value),
        };
    }
    let peer_ip = ctx.peer.ip().to_string();
    match xff {
        Some(prev) => enc.header_parts("X-Forwarded-For", &[prev, b", ", peer_ip.as_bytes()]),
        None => enc.header("X-Forwarded-For", peer_ip.as_bytes()),
    };
    enc.header("X-Request-Id", ctx.request_id.as_bytes());
    if let Some(c) = ctx.coding.forwarded {
        enc.header("Content-Encoding", c.as_str().as_bytes());
    }
    if let Some(k) = ctx.scrubber.and_then(|s| s.key_id()) {
        enc.header("X-Relay-Key-Id", k.as_bytes());
    }
    let bodyless_method = matches!(
        head.method(),
        "GET" | "HEAD" | "DELETE" | "OPTIONS" | "TRACE"
    );
    let omit_length = body.is_empty() && bodyless_method && head.header("content-length").is_none();
    enc.finish((!omit_length).then_some(body.len() as u64));
    req.extend_from_slice(body);
    Ok(req)
}

/// Phase 5: sends the request to the route's upstream and reads its whole response. Refuses
/// 502 (unreachable, reset, bad response, TLS), 503 `upstream_busy`, 504 (timeouts).
pub async fn exchange(
    view: &WorkerView,
    route: &Route,
    head: &RequestHead,
    request: Vec<u8>,
) -> Result<UpstreamResponse, RequestError> {
    view.upstreams[route.upstream]
        .exchange(request, head.method() == "HEAD")
        .await
        .map_err(RequestError::from)
}

/// Phase 6: appends the relayed response to `out`: the upstream's status and end-to-end
/// headers and its body unchanged; framing (`Content-Length`) and `Connection` relay's own.
/// A 204 or 304 carries neither a body nor a Content-Length; a response to HEAD keeps the
/// upstream's Content-Length.
pub fn write_response(out: &mut Vec<u8>, resp: &UpstreamResponse, keep_alive: bool) {
    let length = if resp.status == 204 || resp.status == 304 {
        None
    } else if resp.bodiless {
        resp.head_content_length
    } else {
        Some(resp.body.len() as u64)
    };
    finish_response_head(out, &resp.head, length, keep_alive);
    out.extend_from_slice(&resp.body);
}

/// What the server measured about one exchange with its client, for [`log`].
pub struct Exchanged {
    /// The client's address.
    pub peer: SocketAddr,
    /// The status the client got.
    pub status: u16,
    /// Request body bytes.
    pub bytes_in: u64,
    /// Response bytes written.
    pub bytes_out: u64,
    /// When the request's handling started.
    pub started: Instant,
}

/// Phase 7, after the response was written: the route's metrics and, when sampled, one access
/// log line. Refuses nothing.
pub fn log(
    worker: &Worker,
    view: &WorkerView,
    head: &RequestHead,
    handled: &Handled<'_>,
    x: &Exchanged,
) {
    let w = worker.index;
    let elapsed = x.started.elapsed();
    let log_cfg = &view.snap.config.log;
    if log_cfg.access_log && worker.sample(log_cfg.access_log_sample_rate) {
        tracing::info!(
            target: "relay::access",
            peer = %x.peer,
            method = head.method(),
            path = head.path(),
            route = handled.ctx.route.map(|r| &*r.name).unwrap_or("-"),
            status = x.status,
            bytes_in = x.bytes_in,
            bytes_out = x.bytes_out,
            duration_us = elapsed.as_micros() as u64,
            request_id = %handled.ctx.request_id,
            "access"
        );
    }
    if let Some(route) = handled.ctx.route {
        let m = &view.snap.route_metrics[route.index];
        m.status(w, x.status);
        m.duration.observe(w, elapsed);
        m.bytes_in.add(w, x.bytes_in);
        m.bytes_out.add(w, x.bytes_out);
        m.pii_hashed.add(w, handled.ctx.fields_hashed);
    }
}
