//! The phases of one framed request, in order, over one [`RequestCtx`]:
//!
//! 1. [`route`]: find the route (404 / 405);
//! 2. [`admit`]: the consumer's credentials and the consumer's and route's limits (401 /
//!    403 / 429); nothing is published or forwarded for a refused request;
//! 3. [`scrub`]: pseudonymise a copy of the body, the query and the PII headers, fail closed
//!    (4xx), capturing in the same walk the root members the route routes on;
//! 4. [`crate::dispatch::plan`]: each event's upstream and topic from the route's payload
//!    rules and split (422 `mixed_destinations`); one part, or one per destination of a split
//!    NDJSON batch;
//! 5. [`publish_original`]: hand each part's original bytes to the Kafka path, before
//!    anything is forwarded (503 `kafka_backpressure` when the path is full); it runs after
//!    the scrub pass because the topic may depend on the payload;
//! 6. [`build_upstream_request`]: encode the upstream request head and body;
//! 7. [`exchange`]: send it upstream and read the response (502 / 503 / 504); a split batch
//!    answers with the worst part ([`crate::dispatch::worst`]);
//! 6. [`write_response`]: relay the upstream's response (the server writes it);
//! 7. [`log`]: route metrics and the sampled access log.
//!
//! Each phase is a short function; a phase that refuses returns a [`RequestError`] and the
//! later phases do not run.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use relay_http::encode::finish_response_head;
use relay_http::fields::{connection_tokens, is_hop_by_hop};
use relay_http::{RequestHead, RequestHeadEncoder};

use crate::admit::Admitted;
use crate::delivery::{publish_original as publish, Pending};
use crate::dispatch::Part;
use crate::error::RequestError;
use crate::kafka::OriginalRecord;
use crate::route::{KeySource, NoRoute, Route};
use crate::scrub::{Captures, Finding, Scrubber};
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
    let Scrubbed {
        body: scrubbed,
        query,
        captures,
    } = scrub(ctx, route, head, &body)?;
    let parts = crate::dispatch::plan(
        route.dispatch.as_ref(),
        &crate::dispatch::Inputs {
            route_name: &route.name,
            upstream: route.upstream,
            topic: route.topic.clone(),
            head,
            body: &body,
            ndjson: route.dispatch.is_some()
                && matches!(
                    crate::scrub::media::body_kind(head.header_str("content-type")),
                    Ok(crate::scrub::BodyKind::Ndjson)
                ),
            captures: &captures,
            consumer: ctx.admitted.consumer.as_deref(),
            request_id: &ctx.request_id,
            worker: worker.index,
        },
        &mut || worker.random_u64(),
    )?;
    if let [part] = parts.as_slice() {
        // One destination (every request of a route without rules or split).
        let pending = publish_original(ctx, worker, route, head, &body, part).await?;
        let request = build_upstream_request(ctx, view, part, head, &scrubbed, query.as_deref())?;
        drop(scrubbed);
        drop(body);
        // For `ack` delivery the exchange runs while Kafka's round trip is in flight; the
        // answer then waits for Kafka's.
        let response = exchange(view, part.dest.upstream, head, request).await;
        return pending.settle(response).await;
    }
    // A split NDJSON batch: every original handed over first, then the exchanges.
    let mut pending = Vec::with_capacity(parts.len());
    for part in &parts {
        pending.push(publish_original(ctx, worker, route, head, &part.body(&body), part).await?);
    }
    let mut requests = Vec::with_capacity(parts.len());
    // Every part carries the same headers: count their hashed values and findings once.
    let mut once = None;
    for part in &parts {
        let forwarded = part.body(&scrubbed);
        requests.push(build_upstream_request(
            ctx,
            view,
            part,
            head,
            &forwarded,
            query.as_deref(),
        )?);
        once.get_or_insert((ctx.fields_hashed, ctx.findings.len()));
    }
    if let Some((hashed, findings)) = once {
        ctx.fields_hashed = hashed;
        ctx.findings.truncate(findings);
    }
    drop(scrubbed);
    drop(body);
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

/// Phase 5, after the scrub pass and before anything is forwarded: hands the part's original
/// bytes (the whole body, byte for byte, unless a split batch was cut) to the Kafka path when
/// the part has a topic, by the route's delivery mode (`memory`: queued; `spool`: durable on
/// disk before this returns; `ack`: returns a [`Pending`] acknowledgement that the answer
/// waits for). Refuses 503 `kafka_backpressure`, `spool_full`, `spool_unavailable` or
/// `kafka_unavailable`; an original too large for the producer is refused, never lost.
pub async fn publish_original(
    ctx: &RequestCtx<'_>,
    worker: &Worker,
    route: &Route,
    head: &RequestHead,
    body: &[u8],
    part: &Part,
) -> Result<Pending, RequestError> {
    let (Some(topic), Some(kafka)) = (&part.dest.topic, &worker.kafka) else {
        return Ok(Pending::Nothing);
    };
    let content_type = head.header_str("content-type");
    let key = match (&route.key, ctx.scrubber) {
        (KeySource::Field(f), Some(s)) => s.key_hash(content_type, body, f).map(String::into_bytes),
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
        payload: body.to_vec(),
        timestamp_ms,
        route: route.name.clone(),
        request_id: part.request_id(&ctx.request_id).to_string(),
        content_type: content_type.map(str::to_string),
        key_id: ctx.scrubber.and_then(|s| s.key_id()).map(str::to_string),
        consumer: ctx.admitted.consumer.clone(),
        split: part.dest.side.clone(),
    };
    publish(worker, route, kafka, rec).await
}

/// Phase 3, after admission: scrubs a copy of the body and the query with the route's policy,
/// then runs the egress guard over them (headers are hashed and guarded while the upstream
/// head is built), capturing in the same walk the root members the route's rules and split
/// read. Fail closed: refuses 400/415 for a body the policy cannot read, 422 `pii_detected`
/// when a `reject` detector fires, and 400 `empty_body` for a zero-length JSON body sent with
/// POST, PUT or PATCH. Returns the body to forward, the scrubbed query (None: unchanged) and
/// the captures.
pub fn scrub<'b>(
    ctx: &mut RequestCtx<'_>,
    route: &Route,
    head: &RequestHead,
    body: &'b [u8],
) -> Result<Scrubbed<'b>, RequestError> {
    let Some(s) = ctx.scrubber else {
        return Ok(Scrubbed {
            body: Cow::Borrowed(body),
            query: None,
            captures: Captures::default(),
        });
    };
    let content_type = head.header_str("content-type");
    if body.is_empty()
        && matches!(head.method(), "POST" | "PUT" | "PATCH")
        && content_type.is_some_and(|c| c.to_ascii_lowercase().contains("json"))
    {
        return Err(RequestError::EmptyBody);
    }
    let capture = match &route.dispatch {
        Some(d) => &d.capture,
        None => &NO_CAPTURE,
    };
    let scrubbed = s.scrub_body_capturing(
        content_type,
        head.header_str("content-encoding"),
        body,
        capture,
    )?;
    ctx.fields_hashed += scrubbed.fields_hashed;
    ctx.findings.extend(scrubbed.findings);
    let query = match head.query() {
        Some(q) => s.scrub_query_guarded(q, &mut ctx.findings)?,
        None => None,
    };
    Ok(Scrubbed {
        body: Cow::Owned(scrubbed.body),
        query,
        captures: scrubbed.captures,
    })
}

/// What [`scrub`] gives the later phases.
pub struct Scrubbed<'b> {
    /// The body to forward (the original when the route has no policy).
    pub body: Cow<'b, [u8]>,
    /// The scrubbed query (`None`: unchanged).
    pub query: Option<String>,
    /// The root members captured for the route's rules and split.
    pub captures: Captures,
}

static NO_CAPTURE: crate::scrub::CaptureSpec = crate::scrub::CaptureSpec::none();

/// Phase 4: encodes the upstream request: the method and path, the scrubbed query, the
/// upstream's `Host`, the end-to-end headers (PII headers hashed; hop-by-hop, framing and
/// relay's own headers dropped), `X-Forwarded-For`, `X-Request-Id`, `X-Relay-Key-Id`, then the
/// body with its Content-Length. Refuses 422 `pii_detected` when a `reject` detector of the
/// egress guard fires on a forwarded header.
pub fn build_upstream_request(
    ctx: &mut RequestCtx<'_>,
    view: &WorkerView,
    part: &Part,
    head: &RequestHead,
    body: &[u8],
    query: Option<&str>,
) -> Result<Vec<u8>, RequestError> {
    let upstream = &view.upstreams[part.dest.upstream];
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

/// Phase 7: sends the request to upstream `upstream` (index) and reads its whole response.
/// Refuses 502 (unreachable, reset, bad response, TLS), 503 `upstream_busy`, 504 (timeouts).
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
