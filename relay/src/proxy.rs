//! The phases of one framed request, in order, over one [`RequestCtx`]:
//!
//! 1. [`route`]: find the route (404 / 405);
//! 2. [`admit`]: the consumer's credentials and the consumer's and route's limits (401 /
//!    403 / 429); nothing is published or forwarded for a refused request;
//! 3. [`decode`]: decode a compressed (`Content-Encoding`) body within the route's limits
//!    (415 / 413 / 400); nothing is published or forwarded for a refused body;
//! 4. [`scrub`]: pseudonymise the (decoded) body, the query and the path, then the egress
//!    guard, fail closed (4xx), capturing in the same walk the root members the route's
//!    payload rules and split read;
//!    [`crate::dispatch::plan`]: each event's upstream and topic (422 `mixed_destinations`):
//!    one part, or one per destination of a split NDJSON batch (phases 5 to 9 then run per
//!    part and the answer is the worst part's, [`crate::dispatch::worst`]);
//! 5. [`encode_forward`]: the body the upstream gets (re-encoded with
//!    `forward_encoding = "same"`);
//! 6. [`build_upstream_request`]: encode the upstream request head (PII headers hashed,
//!    guard over the others, `X-Relay-Policy`) and body;
//! 7. [`publish_original`]: hand the original body (the bytes as sent, compressed or not) to
//!    the Kafka path with its sanitization receipt (503 `kafka_backpressure` when the path is
//!    full); a request refused by 4 to 6 still has its original published (without a
//!    receipt), and nothing forwarded;
//! 8. [`quarantine`]: for egress guard `report` findings, queue the forwarded body to the
//!    policy's `quarantine_topic` (never refuses, never waits);
//! 9. [`exchange`]: send it upstream and read the response (502 / 503 / 504); for `ack`
//!    delivery this runs while Kafka's round trip is in flight;
//! 10. [`write_response`]: relay the upstream's response (the server writes it);
//! 11. [`log`]: route and guard metrics and the sampled access log.
//!
//! Each phase is a short function; a phase that refuses returns a [`RequestError`] and the
//! later phases do not run. The original is published after scrubbing because its receipt
//! (`relay-scrubbed-sha256`) is the digest of the scrubbed body; no byte of an unscrubbed
//! body is forwarded, whatever the order.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use relay_http::encode::finish_response_head;
use relay_http::fields::{connection_tokens, is_hop_by_hop};
use relay_http::{RequestHead, RequestHeadEncoder};

use crate::admit::Admitted;
use crate::coding::{self, Applied, ForwardEncoding};
use crate::delivery::{publish_original as publish, Pending};
use crate::dispatch::Part;
use crate::error::RequestError;
use crate::kafka::{Done, OriginalRecord};
use crate::route::{KeySource, NoRoute, Route};
use crate::scrub::receipt::policy_label;
use crate::scrub::{Captures, Finding, GuardAction, Receipt, Scrubber};
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
    /// What the egress guard found in what is forwarded (detectors whose action is `report`
    /// or `hash`).
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
    let body = decode(ctx, worker, view, route, head, body)?;
    let mut out = match scrub(ctx, route, head, body.decoded()) {
        Ok(out) => out,
        Err(e) => return refuse_after_publishing(ctx, worker, route, head, body, e).await,
    };
    let parts = match plan(ctx, worker, route, head, &body, &out.captures) {
        Ok(p) => p,
        Err(e) => return refuse_after_publishing(ctx, worker, route, head, body, e).await,
    };
    out.captures = Captures::default();
    let [part] = parts.as_slice() else {
        return forward_parts(ctx, worker, view, route, head, body, out, &parts).await;
    };
    let forwarded = match encode_forward(ctx, view, route, &body, out.body.as_deref()) {
        Ok(f) => f,
        Err(e) => return refuse_after_publishing(ctx, worker, route, head, body, e).await,
    };
    let request = match build_upstream_request(ctx, view, route, part, head, &forwarded, &out) {
        Ok(r) => r,
        Err(e) => {
            drop(forwarded);
            return refuse_after_publishing(ctx, worker, route, head, body, e).await;
        }
    };
    let receipt = receipt(ctx, worker, route, part, &forwarded);
    let quarantined = quarantine_record(ctx, worker, route, head, &forwarded, &receipt);
    drop(forwarded);
    drop(out);
    let pending = publish_original(ctx, worker, route, head, body, part, receipt.as_ref()).await?;
    if let Some(q) = quarantined {
        quarantine(worker, view, route, q);
    }
    // For `ack` delivery the exchange runs while Kafka's round trip is in flight; the answer
    // then waits for Kafka's.
    let response = exchange(view, part.dest.upstream, head, request).await;
    pending.settle(response).await
}

/// Phase 4b, after the scrub pass: the request's parts by the route's payload rules and split
/// ([`crate::dispatch::plan`]). Refuses 422 `mixed_destinations`.
fn plan(
    ctx: &RequestCtx<'_>,
    worker: &Worker,
    route: &Route,
    head: &RequestHead,
    body: &coding::Body,
    captures: &Captures,
) -> Result<Vec<Part>, RequestError> {
    let ndjson = route.dispatch.is_some()
        && matches!(
            crate::scrub::media::body_kind(head.header_str("content-type")),
            Ok(crate::scrub::BodyKind::Ndjson)
        );
    let x = crate::dispatch::Inputs {
        route_name: &route.name,
        upstream: route.upstream,
        topic: route.topic.clone(),
        head,
        body: body.decoded(),
        ndjson,
        captures,
        consumer: ctx.admitted.consumer.as_deref(),
        request_id: &ctx.request_id,
        worker: worker.index,
    };
    Ok(crate::dispatch::plan(
        route.dispatch.as_ref(),
        &x,
        &mut || worker.random_u64(),
    )?)
}

/// Phases 5 to 9 for a split NDJSON batch (one part per destination): each part's lines
/// scrubbed (and re-encoded with `forward_encoding = "same"`), its request built (PII headers
/// and their findings counted once), every part's original handed to Kafka with its own
/// receipt before any exchange (a part's original is its lines as decoded: compressed bytes
/// cannot be cut; no `content-encoding` header), the quarantine record once for the whole
/// request, then the exchanges in order; the answer is the worst part's. A part refused while
/// its request is built refuses the whole request (its original published as for any refusal).
#[allow(clippy::too_many_arguments)]
async fn forward_parts(
    ctx: &mut RequestCtx<'_>,
    worker: &Worker,
    view: &WorkerView,
    route: &Route,
    head: &RequestHead,
    body: coding::Body,
    out: Outgoing,
    parts: &[Part],
) -> Result<UpstreamResponse, RequestError> {
    let (requests, receipts, quarantined) =
        match build_parts(ctx, worker, view, route, head, &body, &out, parts) {
            Ok(built) => built,
            Err(e) => return refuse_after_publishing(ctx, worker, route, head, body, e).await,
        };
    drop(out);
    let mut pending = Vec::with_capacity(parts.len());
    for (part, receipt) in parts.iter().zip(&receipts) {
        let original = coding::Body::identity(part.body(body.decoded()).into_owned());
        pending.push(
            publish_original(ctx, worker, route, head, original, part, receipt.as_ref()).await?,
        );
    }
    drop(body);
    if let Some(q) = quarantined {
        quarantine(worker, view, route, q);
    }
    let mut responses = Vec::with_capacity(parts.len());
    for (part, request) in parts.iter().zip(requests) {
        responses.push(exchange(view, part.dest.upstream, head, request).await);
    }
    let mut results = Vec::with_capacity(parts.len());
    for (pending, response) in pending.into_iter().zip(responses) {
        results.push(pending.settle(response).await);
    }
    crate::dispatch::worst(results)
}

/// What [`forward_parts`] sends: each part's upstream request and receipt, and the
/// request's quarantine record.
type BuiltParts = (Vec<Vec<u8>>, Vec<Option<Receipt>>, Option<OriginalRecord>);

#[allow(clippy::too_many_arguments)]
fn build_parts(
    ctx: &mut RequestCtx<'_>,
    worker: &Worker,
    view: &WorkerView,
    route: &Route,
    head: &RequestHead,
    body: &coding::Body,
    out: &Outgoing,
    parts: &[Part],
) -> Result<BuiltParts, RequestError> {
    let plain = out.body.as_deref().unwrap_or(body.decoded());
    let same = ctx
        .coding
        .request
        .filter(|_| view.snap.config.routes[route.index].forward_encoding == ForwardEncoding::Same);
    ctx.coding.forwarded = same;
    let mut requests = Vec::with_capacity(parts.len());
    let mut receipts = Vec::with_capacity(parts.len());
    let mut once = None;
    for part in parts {
        let lines = part.body(plain);
        let forwarded = match same {
            Some(c) => Cow::Owned(coding::encode(c, &lines).map_err(|e| {
                tracing::warn!(coding = %c, error = %e, "re-encoding a scrubbed part failed");
                RequestError::Internal
            })?),
            None => lines,
        };
        requests.push(build_upstream_request(
            ctx, view, route, part, head, &forwarded, out,
        )?);
        // Every part carries the same headers: their hashed values and findings count once.
        match once {
            Some((hashed, findings)) => {
                ctx.fields_hashed = hashed;
                ctx.findings.truncate(findings);
            }
            None => once = Some((ctx.fields_hashed, ctx.findings.len())),
        }
        receipts.push(receipt(ctx, worker, route, part, &forwarded));
    }
    let quarantined = quarantine_record(ctx, worker, route, head, plain, &None);
    Ok((requests, receipts, quarantined))
}

/// A request that [`scrub`], [`encode_forward`] or [`build_upstream_request`] refused: its original still goes to
/// Kafka like every accepted request's (without a receipt: nothing was forwarded), then the
/// refusal is answered. A refusal by the Kafka path wins (nothing was published).
async fn refuse_after_publishing(
    ctx: &RequestCtx<'_>,
    worker: &Worker,
    route: &Route,
    head: &RequestHead,
    body: coding::Body,
    refusal: RequestError,
) -> Result<UpstreamResponse, RequestError> {
    // An `ack` original of a refused request is not waited for (the answer is the refusal).
    let part = Part::whole(route.upstream, route.topic.clone());
    let _pending = publish_original(ctx, worker, route, head, body, &part, None).await?;
    Err(refusal)
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

/// Phase 3, after admission and before anything is scrubbed or published: decodes a body sent with a
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

/// Phase 7, after the upstream request is built and before it is sent: hands the original
/// body, byte for byte, to the Kafka path when the part has a topic (the route's, or its
/// payload rule's), with the part's request id and split side, by the route's delivery
/// mode (`memory`: queued; `spool`: durable on disk before this returns; `ack`: returns a
/// [`Pending`] acknowledgement that the answer waits for), with the sanitization `receipt` of
/// what will be forwarded (`None`: no PII policy, or the request was refused). Refuses 503
/// `kafka_backpressure`, `spool_full`, `spool_unavailable` or `kafka_unavailable`; an original
/// too large for the producer is refused, never lost.
pub async fn publish_original(
    ctx: &RequestCtx<'_>,
    worker: &Worker,
    route: &Route,
    head: &RequestHead,
    body: coding::Body,
    part: &Part,
    receipt: Option<&Receipt>,
) -> Result<Pending, RequestError> {
    let (Some(topic), Some(kafka)) = (&part.dest.topic, &worker.kafka) else {
        return Ok(Pending::Nothing);
    };
    let content_type = head.header_str("content-type");
    let key = match (&route.key, ctx.scrubber) {
        (KeySource::Field(f), Some(s)) => s
            .key_hash(content_type, body.decoded(), f)
            .map(String::into_bytes),
        (KeySource::Header(h), s) => head.header(h).map(|v| match s {
            Some(s) => s.hash_value(v).into_bytes(),
            None => v.to_vec(),
        }),
        _ => None,
    };
    let mut rec = base_record(ctx, route, head, topic.clone(), body.wire);
    rec.key = key;
    rec.request_id = part.request_id(&ctx.request_id).to_string();
    rec.split = part.dest.side.clone();
    // A split part's original is its decoded lines (compressed bytes cannot be cut).
    rec.content_encoding = ctx.coding.request.filter(|_| part.lines.is_none());
    if let Some(r) = receipt {
        rec.policy = Some(r.policy.clone());
        rec.scrubbed_sha256 = Some(r.scrubbed_sha256.clone());
        rec.pii_count = Some(r.pii_count.to_string());
    }
    publish(worker, route, kafka, rec).await
}

/// A record of this request for `topic` carrying `payload`, with the headers every record has
/// (route, request id, content type, key id, consumer) and no key.
fn base_record(
    ctx: &RequestCtx<'_>,
    route: &Route,
    head: &RequestHead,
    topic: std::sync::Arc<str>,
    payload: Vec<u8>,
) -> OriginalRecord {
    let timestamp_ms = ctx
        .received_at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    OriginalRecord {
        topic,
        key: None,
        payload,
        timestamp_ms,
        route: route.name.clone(),
        request_id: ctx.request_id.clone(),
        content_type: head.header_str("content-type").map(str::to_string),
        key_id: ctx.scrubber.and_then(|s| s.key_id()).map(str::to_string),
        consumer: ctx.admitted.consumer.clone(),
        policy: None,
        scrubbed_sha256: None,
        pii_count: None,
        guard_findings: Vec::new(),
        content_encoding: None,
        split: None,
    }
}

/// The sanitization receipt of `forwarded` (the body exactly as it will be sent), when the
/// route has a PII policy and a record will carry it (a Kafka topic, or a quarantine record
/// to publish): the one implementation `relay scrub --receipt` uses too. `pii_count` is every
/// value hashed for the request: body, query, path and headers.
fn receipt(
    ctx: &RequestCtx<'_>,
    worker: &Worker,
    route: &Route,
    part: &Part,
    forwarded: &[u8],
) -> Option<Receipt> {
    let (s, name) = (ctx.scrubber?, route.pii.as_deref()?);
    worker.kafka.as_ref()?;
    if part.dest.topic.is_none() && quarantine_topic(ctx).is_none() {
        return None;
    }
    Some(s.receipt(name, forwarded, ctx.fields_hashed))
}

/// Phase 3, after admission: scrubs the body, the query and the path with the route's policy,
/// then runs the egress guard over the body and the query (headers are hashed and guarded while
/// the upstream head is built). Fail closed: refuses 400/415 for a body the policy cannot read,
/// 400 `ambiguous_path` for a path that matches a `path_params` pattern only once normalised,
/// 422 `pii_detected` when a `reject` detector fires, and 400 `empty_body` for a zero-length
/// JSON body sent with POST, PUT or PATCH. Returns what changed (the original is kept for
/// Kafka) and, read in the same walk, the root members the route's rules and split use.
pub fn scrub(
    ctx: &mut RequestCtx<'_>,
    route: &Route,
    head: &RequestHead,
    body: &[u8],
) -> Result<Outgoing, RequestError> {
    let Some(s) = ctx.scrubber else {
        return Ok(Outgoing::default());
    };
    let content_type = head.header_str("content-type");
    if body.is_empty()
        && matches!(head.method(), "POST" | "PUT" | "PATCH")
        && content_type.is_some_and(|c| c.to_ascii_lowercase().contains("json"))
    {
        return Err(RequestError::EmptyBody);
    }
    let path = match s.scrub_path(head.path())? {
        Some((p, n)) => {
            ctx.fields_hashed += n;
            Some(p)
        }
        None => None,
    };
    // The body is decoded by now ([`decode`]): identity for the scrubber.
    let capture = match &route.dispatch {
        Some(d) => &d.capture,
        None => &NO_CAPTURE,
    };
    let scrubbed = s.scrub_body_capturing(content_type, None, body, capture)?;
    ctx.fields_hashed += scrubbed.fields_hashed;
    ctx.findings.extend(scrubbed.findings);
    let query = match head.query() {
        Some(q) => {
            let (q, n) = s.scrub_query_guarded(q, &mut ctx.findings)?;
            ctx.fields_hashed += n;
            q
        }
        None => None,
    };
    Ok(Outgoing {
        body: Some(scrubbed.body),
        path,
        query,
        captures: scrubbed.captures,
    })
}

static NO_CAPTURE: crate::scrub::CaptureSpec = crate::scrub::CaptureSpec::none();

/// What [`scrub`] changed in the forwarded request; each `None` is forwarded as sent.
#[derive(Debug, Default)]
pub struct Outgoing {
    /// The scrubbed body.
    pub body: Option<Vec<u8>>,
    /// The path with its `path_params` segments hashed.
    pub path: Option<String>,
    /// The scrubbed (and guarded) query.
    pub query: Option<String>,
    /// The root members captured for the route's payload rules and split.
    pub captures: Captures,
}

/// Phase 5, after scrubbing: the body the upstream gets: `scrubbed` (None: no PII policy,
/// the decoded body). For a compressed request on a route with `forward_encoding = "same"`,
/// that body encoded again with the request's coding (on a route without a PII policy, the
/// bytes exactly as sent). Refuses 500 `internal_error` only if the encoder fails (it writes
/// to memory, so it should not).
pub fn encode_forward<'a>(
    ctx: &mut RequestCtx<'_>,
    view: &WorkerView,
    route: &Route,
    body: &'a coding::Body,
    scrubbed: Option<&'a [u8]>,
) -> Result<Cow<'a, [u8]>, RequestError> {
    let plain = scrubbed.unwrap_or(body.decoded());
    let Some(c) = ctx.coding.request else {
        return Ok(Cow::Borrowed(plain));
    };
    if view.snap.config.routes[route.index].forward_encoding != ForwardEncoding::Same {
        return Ok(Cow::Borrowed(plain));
    }
    ctx.coding.forwarded = Some(c);
    if scrubbed.is_none() {
        return Ok(Cow::Borrowed(&body.wire));
    }
    coding::encode(c, plain).map(Cow::Owned).map_err(|e| {
        tracing::warn!(coding = %c, error = %e, "re-encoding the scrubbed body failed");
        RequestError::Internal
    })
}

/// Phase 6: encodes the upstream request: the method, the (scrubbed) path and query, the
/// upstream's `Host`, the end-to-end headers (PII headers hashed; hop-by-hop, framing and
/// relay's own headers dropped), `X-Forwarded-For`, `X-Request-Id`, `X-Relay-Key-Id`,
/// `X-Relay-Policy` (route with a PII policy), then `body` (as forwarded) with its
/// Content-Length. Refuses 422 `pii_detected` when a `reject` detector of the egress guard
/// fires on a forwarded header.
pub fn build_upstream_request(
    ctx: &mut RequestCtx<'_>,
    view: &WorkerView,
    route: &Route,
    part: &Part,
    head: &RequestHead,
    body: &[u8],
    out: &Outgoing,
) -> Result<Vec<u8>, RequestError> {
    let upstream = &view.upstreams[part.dest.upstream];
    let mut req = Vec::with_capacity(head.head_len() + body.len() + 256);
    let mut enc = RequestHeadEncoder::new(
        &mut req,
        head.method(),
        out.path.as_deref().unwrap_or(head.path()),
        out.query.as_deref().or(head.query()),
    );
    enc.header("Host", upstream.shared.host_header.as_bytes());
    let tokens = connection_tokens(head.headers());
    let mut xff: Option<&[u8]> = None;
    for (name, value) in head.headers() {
        if is_hop_by_hop(name, &tokens)
            || name.eq_ignore_ascii_case("host")
            || name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("expect")
            || name.eq_ignore_ascii_case("x-relay-key-id")
            || name.eq_ignore_ascii_case("x-relay-policy")
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
    enc.header("X-Request-Id", part.request_id(&ctx.request_id).as_bytes());
    if let Some(c) = ctx.coding.forwarded {
        enc.header("Content-Encoding", c.as_str().as_bytes());
    }
    if let Some(k) = ctx.scrubber.and_then(|s| s.key_id()) {
        enc.header("X-Relay-Key-Id", k.as_bytes());
    }
    if let (Some(s), Some(name)) = (ctx.scrubber, route.pii.as_deref()) {
        enc.header(
            "X-Relay-Policy",
            policy_label(name, s.policy_digest()).as_bytes(),
        );
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

/// Findings kept in a quarantine record's headers; more are counted but not listed.
pub const MAX_QUARANTINE_FINDINGS: usize = 64;

/// The policy's `quarantine_topic` when this request has `report` findings to publish.
fn quarantine_topic<'a>(ctx: &RequestCtx<'a>) -> Option<&'a str> {
    let s = ctx.scrubber?;
    let topic = s.quarantine_topic()?;
    ctx.findings
        .iter()
        .any(|f| f.action == GuardAction::Report)
        .then_some(topic)
}

/// The quarantine record of this request (built before the original is moved to Kafka): the
/// body as forwarded, the receipt, and each `report` finding's detector and place as headers
/// (the first [`MAX_QUARANTINE_FINDINGS`]). `None` without `report` findings, without a
/// `quarantine_topic` or without `[kafka]`.
fn quarantine_record(
    ctx: &RequestCtx<'_>,
    worker: &Worker,
    route: &Route,
    head: &RequestHead,
    forwarded: &[u8],
    receipt: &Option<Receipt>,
) -> Option<OriginalRecord> {
    let topic = quarantine_topic(ctx)?;
    worker.kafka.as_ref()?;
    let mut rec = base_record(ctx, route, head, topic.into(), forwarded.to_vec());
    rec.content_encoding = ctx.coding.forwarded;
    if let Some(r) = receipt {
        rec.policy = Some(r.policy.clone());
        rec.scrubbed_sha256 = Some(r.scrubbed_sha256.clone());
        rec.pii_count = Some(r.pii_count.to_string());
    }
    rec.guard_findings = ctx
        .findings
        .iter()
        .filter(|f| f.action == GuardAction::Report)
        .take(MAX_QUARANTINE_FINDINGS)
        .map(|f| (f.detector.clone(), f.place.clone()))
        .collect();
    Some(rec)
}

/// Phase 6, after the original was accepted by the Kafka path: queues the quarantine record
/// in `memory` mode. Never refuses and never waits: a full queue, a record too large for the
/// producer or a failed delivery (a missing topic, Kafka down) is counted in
/// `relay_guard_quarantine_failed_total{policy}` and the request goes on; the original is not
/// affected.
pub fn quarantine(worker: &Worker, view: &WorkerView, route: &Route, rec: OriginalRecord) {
    let Some(kafka) = &worker.kafka else {
        return;
    };
    let Some(failed) = route
        .pii
        .as_ref()
        .and_then(|p| view.snap.guard_metrics.get(p))
        .map(|m| m.quarantine_failed.clone())
    else {
        return;
    };
    let w = worker.index;
    if crate::delivery::check_record_fits(kafka, &rec).is_err() {
        failed.inc(w);
        return;
    }
    let on_failure = failed.clone();
    let done = Done::Quarantine(Box::new(move |r| {
        if r.is_err() {
            on_failure.inc(w);
        }
    }));
    if kafka.try_send_with(rec, done).is_err() {
        failed.inc(w);
    }
}

/// Phase 9: sends the request to upstream `upstream` (index: the part's) and reads its whole
/// response. Refuses 502 (unreachable, reset, bad response, TLS), 503 `upstream_busy`, 504
/// (timeouts).
pub async fn exchange(
    view: &WorkerView,
    upstream: usize,
    head: &RequestHead,
    request: Vec<u8>,
) -> Result<UpstreamResponse, RequestError> {
    view.upstreams[upstream]
        .exchange(request, head.method() == "HEAD")
        .await
        .map_err(RequestError::from)
}

/// Phase 8: appends the relayed response to `out`: the upstream's status and end-to-end
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

/// Phase 9, after the response was written: the route's and the egress guard's metrics and,
/// when sampled, one access log line. Refuses nothing.
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
        if let Some(g) = route
            .pii
            .as_ref()
            .and_then(|p| view.snap.guard_metrics.get(p))
        {
            for f in &handled.ctx.findings {
                if let Some(c) = g.detector(&f.detector) {
                    c.of(f.action).inc(w);
                }
            }
            if let Err(RequestError::Scrub(e)) = &handled.result {
                if let Some(c) = e.detector.as_deref().and_then(|d| g.detector(d)) {
                    c.of(GuardAction::Reject).inc(w);
                }
            }
        }
    }
}
