//! The Pingora `ProxyHttp` implementation: wiring only, no policy.
//!
//! ```text
//! request_filter ── drop reserved identity headers ── start the gateway span (`tracing:`) ──
//!                   └─ header list ≤ limit? ──(no)── deny headers_too_large
//!                   └─ canonical path? ──(no)── deny path_not_canonical
//!                   └─ RequestView::build ── Chain::run ──┬─ deny → write denial (trailers-only / JSON)
//!                                                         └─ allow → remember route + pool
//! upstream_peer ─── pool.select() → HttpPeer (h2c / h2+TLS, deadline as read timeout)
//! upstream_request_filter ── strip `sanitize` extras, add verified identity headers,
//!                            `traceparent` (parent: the gateway span) when traced
//! response_filter / trailer filters ── note grpc-status for metrics
//! fail_to_proxy ── connect failure / timeout / reset → UNAVAILABLE / DEADLINE_EXCEEDED:
//!                  trailers-only before response headers, `grpc-status` trailers after
//! logging ── metrics (+ audit, + the span's attributes and end); `decision` from the reason's fault (Outcome::of)
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use http::HeaderValue;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::v2::client::PING_TIMEDOUT;
use pingora::protocols::tls::SslDigest;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, Result, RetryType};
use ztgate_filter::{
    grpc_path, identity_headers, ChainOutcome, Decision, Denial, Facts, GrpcCode, Outcome, Reason,
    Received, RequestView, TlsFacts,
};

use crate::denial_response;
use crate::request_meta;
use crate::state::Shared;
use crate::upstream::{Lease, Pool};
use crate::{audit, metrics, trace};

/// The proxy service.
pub struct Gateway {
    pub shared: Arc<Shared>,
}

/// Per-request state, boxed: Pingora keeps the context in its per-request
/// futures and moves them several times a request; 8 bytes move instead of
/// ~750 (callgrind: memcpy grew ≈ 4 instructions per byte added to the
/// context), for one allocation a request.
pub struct RequestCtx(Box<RequestState>);

impl std::ops::Deref for RequestCtx {
    type Target = RequestState;
    fn deref(&self) -> &RequestState {
        &self.0
    }
}

impl std::ops::DerefMut for RequestCtx {
    fn deref_mut(&mut self) -> &mut RequestState {
        &mut self.0
    }
}

/// What [`RequestCtx`] holds.
pub struct RequestState {
    started: Instant,
    facts: Facts,
    grpc: bool,
    pool: Option<Arc<Pool>>,
    /// Deadline for the upstream call (client `grpc-timeout` capped by the pool).
    deadline: Option<Duration>,
    /// The denial we answered with, if any.
    denial: Option<Denial>,
    /// Shadow denials recorded on the way.
    shadow: Vec<(&'static str, Reason)>,
    /// `grpc-status` seen from the upstream (headers or trailers).
    grpc_status: Option<u16>,
    upstream_started: Option<Instant>,
    client_ip: Option<std::net::IpAddr>,
    path: String,
    tls: Option<Arc<SslDigest>>,
    /// The generation's assertion signer, when configured.
    assertion: Option<Arc<crate::assertion::Asserter>>,
    /// A failed attempt (a connect failure, a refused stream) was already
    /// retried on another backend.
    retried: bool,
    /// The backend in use; holding it counts the call as in flight.
    lease: Option<Lease>,
    /// Backends tried for this call, so a retry goes elsewhere.
    tried: Vec<std::net::SocketAddr>,
    /// The last connect attempt failed.
    connect_failed: bool,
    /// The gateway span, when `tracing:` is configured. Boxed: a span is
    /// 384 bytes, and Pingora moves the per-request context with its
    /// futures (callgrind: +1.6k instructions of memcpy a call unboxed,
    /// tracing on or off).
    trace: Option<Box<trace::Hop>>,
}

static NO_TLS: std::sync::LazyLock<TlsFacts> = std::sync::LazyLock::new(TlsFacts::default);

/// The largest request header list the gateway serves, counted as HTTP/2
/// counts it (RFC 9113 §6.5.2: each field's name and value plus 32 bytes,
/// pseudo-headers included). Why 80 KiB: a bearer token of 64 KiB (eight
/// times `jwt.max_token_size`'s 8 KiB default) plus 16 KiB for everything
/// else must still reach the `jwt` filter and be refused there as
/// `token_too_large`; a list over it is refused here with 8
/// RESOURCE_EXHAUSTED `headers_too_large` before any filter reads a header.
pub const MAX_HEADER_LIST_SIZE: usize = 80 * 1024;

/// What the HTTP/2 codec advertises (SETTINGS_MAX_HEADER_LIST_SIZE) and
/// enforces itself. The h2 crate answers a list over its limit with a bare
/// `:status 431` and a reset before Pingora or any hook of ours sees the
/// stream, so its limit is twice ours: everything between the two reaches
/// `request_filter` and gets a gRPC answer. Beyond this, the codec's own
/// answers stand (see README "Request hygiene"); no larger, because the
/// codec buffers a list up to this size for each stream it decodes.
pub const H2_MAX_HEADER_LIST_SIZE: u32 = 2 * MAX_HEADER_LIST_SIZE as u32;

/// The request's header list size as HTTP/2 counts it (RFC 9113 §6.5.2),
/// the same measure the codec applies to [`H2_MAX_HEADER_LIST_SIZE`].
fn header_list_size(req: &RequestHeader) -> usize {
    const PER_FIELD: usize = 32;
    let authority = req.uri.authority().map_or(0, |a| a.as_str().len());
    let scheme = req.uri.scheme_str().map_or(0, str::len);
    let pseudo = [
        ":method".len() + req.method.as_str().len(),
        ":path".len() + req.raw_path().len(),
        ":scheme".len() + scheme,
        ":authority".len() + authority,
    ];
    let pseudo: usize = pseudo.iter().map(|n| n + PER_FIELD).sum();
    req.headers.iter().fold(pseudo, |size, (name, value)| {
        size.saturating_add(name.as_str().len() + value.len() + PER_FIELD)
    })
}

/// Whether a failed attempt that the backend did not process gets its one
/// retry: only the first, and only while the pool has a usable backend not
/// tried yet. Spends the retry when it says yes.
fn retry_elsewhere(ctx: &mut RequestState) -> bool {
    let go = !ctx.retried && ctx.pool.as_ref().is_some_and(|p| p.has_other(&ctx.tried));
    ctx.retried |= go;
    go
}

/// Why a call failed once it reached the proxy phase, from Pingora's error:
/// the backend's stream or connection ending early (RST_STREAM, GOAWAY, a
/// closed or reset socket, a dead-connection ping) is `upstream_reset`, so
/// the caller is told UNAVAILABLE, which it may retry. The same error types
/// on the caller's side (Pingora's `ErrorSource::Downstream`: the client
/// went away) are not a reset by the backend and stay `upstream_error`, as
/// does anything else.
fn proxy_error_reason(e: &Error) -> Reason {
    match e.etype() {
        ErrorType::ConnectTimedout
        | ErrorType::ConnectRefused
        | ErrorType::ConnectNoRoute
        | ErrorType::ConnectError
        | ErrorType::TLSHandshakeFailure
        | ErrorType::TLSHandshakeTimedout => Reason::UpstreamConnectFailed,
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => Reason::UpstreamTimeout,
        // Pingora's h2 client: a remote RST_STREAM or GOAWAY while reading
        // headers, body or trailers is `H2Error` (as are the few malformed
        // responses it refuses, e.g. DATA after END_STREAM: the caller's
        // answer is the same); a closed or reset socket is
        // `ReadError`/`WriteError`/`ConnectionClosed`; a connection that
        // stopped answering pings is `PING_TIMEDOUT`.
        ErrorType::H2Error
        | ErrorType::ReadError
        | ErrorType::WriteError
        | ErrorType::ConnectionClosed
            if *e.esource() == ErrorSource::Upstream =>
        {
            Reason::UpstreamReset
        }
        t if *t == PING_TIMEDOUT => Reason::UpstreamReset,
        _ => Reason::UpstreamError,
    }
}

/// The request as Pingora received it, for [`RequestView::build`]: the
/// proxy's half of the one view builder (`ztgate explain` has the other
/// half, and a test there checks both give the same view).
pub(crate) fn received<'a>(
    req: &'a RequestHeader,
    tls: &'a TlsFacts,
    socket_ip: Option<std::net::IpAddr>,
) -> Received<'a> {
    Received {
        method: &req.method,
        path: req.uri.path(),
        authority: req.uri.authority().map(|a| a.as_str()),
        headers: &req.headers,
        tls,
        socket_ip,
    }
}

impl Gateway {
    /// The connection's TLS digest (shared by every stream of an h2
    /// connection; the handshake callback put our [`TlsFacts`] in it).
    fn tls_digest(session: &Session) -> Option<Arc<SslDigest>> {
        session.digest()?.ssl_digest.clone()
    }

    async fn deny(&self, session: &mut Session, ctx: &mut RequestState, d: Denial) -> Result<bool> {
        denial_response::write_denial(session, &d, &ctx.facts.request_id, ctx.grpc).await?;
        ctx.denial = Some(d);
        Ok(true)
    }

    fn record_outcome(ctx: &mut RequestState, out: &ChainOutcome) {
        for v in &out.verdicts {
            metrics::observe_filter(v.filter, v.elapsed.as_secs_f64());
            if let Decision::ShadowDeny(d) = &v.decision {
                ctx.shadow.push((v.filter, d.reason));
            }
        }
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    /// No downstream modules. Pingora's default adds a response-compression
    /// module (disabled) that still builds a context and runs its filters on
    /// every request (≈ 1.3k instructions a call); gRPC compresses its
    /// messages itself and the gateway never compresses a response.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    fn new_ctx(&self) -> Self::CTX {
        RequestCtx(Box::new(RequestState {
            started: Instant::now(),
            facts: Facts::default(),
            grpc: false,
            pool: None,
            deadline: None,
            denial: None,
            shadow: Vec::new(),
            grpc_status: None,
            upstream_started: None,
            client_ip: None,
            path: String::new(),
            tls: None,
            retried: false,
            lease: None,
            tried: Vec::new(),
            connect_failed: false,
            assertion: None,
            trace: None,
        }))
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        // The state itself, so that its fields borrow apart.
        let ctx: &mut RequestState = ctx;
        let rt = self.shared.runtime.load_full();
        ctx.tls = Self::tls_digest(session);
        // Measured as received, before anything is removed.
        let list_size = header_list_size(session.req_header());
        // Request hygiene, before the chain or anything else reads a header:
        // a client's copy of an identity header ztgate asserts never gets
        // through, whatever `pipeline:` says (PRODUCT.md "Request hygiene").
        // Removed from the request itself, so no filter sees it either.
        for name in identity_headers::reserved_in(&session.req_header().headers) {
            session.req_header_mut().remove_header(&name);
        }
        let socket_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let req = session.req_header();
        let tls = ctx
            .tls
            .as_deref()
            .and_then(|d| d.extension.get::<TlsFacts>())
            .unwrap_or(&NO_TLS);
        let view = RequestView::build(
            received(req, tls, socket_ip),
            |ip| rt.is_trusted_proxy(ip),
            SystemTime::now(),
        );
        ctx.grpc = view.is_grpc();
        ctx.facts.request_id = request_meta::request_id(view.header("x-request-id"));
        ctx.client_ip = view.client_ip;
        // The path only: a query is refused below and is never recorded
        // (it could carry a credential, `?access_token=…`).
        ctx.path = view.path.to_owned();
        // Started before anything can refuse the request: denials get spans too.
        ctx.trace = self
            .shared
            .tracing
            .start(&req.headers, trace::started_at(ctx.started.elapsed()))
            .map(Box::new);
        // An oversized header list is refused before any filter (or the
        // route table) reads it, as RESOURCE_EXHAUSTED: the h2 codec's own
        // limit is set above this one so that such a list gets here rather
        // than a bare 431 (see `H2_MAX_HEADER_LIST_SIZE`).
        if list_size > MAX_HEADER_LIST_SIZE {
            let d = Denial::new(
                Reason::HeadersTooLarge,
                format!(
                    "request header list is {list_size} bytes, over the \
                     {MAX_HEADER_LIST_SIZE}-byte limit"
                ),
            );
            return self.deny(session, ctx, d).await;
        }
        // What the route table matches must be what the upstream receives:
        // a path some backend could read differently is refused before
        // routing. Every request, not only gRPC ones: the routes name gRPC
        // methods, so nothing else could be routed anyway.
        if let Err(e) = grpc_path::check(req.raw_path()) {
            let d = Denial::new(Reason::PathNotCanonical, e.to_string());
            return self.deny(session, ctx, d).await;
        }
        let client_deadline = view
            .header("grpc-timeout")
            .and_then(request_meta::parse_grpc_timeout);
        let out = rt.chain.run(&view, &mut ctx.facts).await;
        Self::record_outcome(ctx, &out);
        if let Some(hop) = ctx.trace.as_mut() {
            hop.verdicts(&out.verdicts);
        }
        if let Some(d) = out.denial {
            return self.deny(session, ctx, d).await;
        }
        let Some(route) = ctx.facts.route() else {
            let d = Denial::new(Reason::NoRoute, "no route for this path");
            return self.deny(session, ctx, d).await;
        };
        let Some(pool) = rt.pools.get(route.upstream()).cloned() else {
            let d = Denial::new(Reason::Internal, "route names an unknown upstream");
            return self.deny(session, ctx, d).await;
        };
        ctx.deadline = match (client_deadline, pool.request_timeout) {
            (Some(c), Some(p)) => Some(c.min(p)),
            (c, p) => c.or(p),
        };
        ctx.pool = Some(pool);
        ctx.assertion = rt.assertion.clone();
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        let Some(pool) = ctx.pool.as_ref() else {
            return Err(Error::explain(ErrorType::InternalError, "no pool selected"));
        };
        let Some(lease) = pool.select(&ctx.facts, &ctx.tried) else {
            ctx.denial = Some(Denial::new(Reason::NoHealthyBackend, "no healthy backend"));
            return Err(Error::explain(
                ErrorType::ConnectNoRoute,
                "no healthy backend",
            ));
        };
        let addr = lease.addr;
        let peer = pool.peer(addr, ctx.deadline);
        ctx.tried.push(addr);
        // Replacing a previous attempt's lease releases it.
        ctx.lease = Some(lease);
        ctx.connect_failed = false;
        ctx.upstream_started = Some(Instant::now());
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        for name in &ctx.facts.strip_headers {
            upstream.remove_header(name);
        }
        for (name, value) in &ctx.facts.upstream_headers {
            upstream.insert_header(name.clone(), value.clone())?;
        }
        upstream.insert_header("x-request-id", never_indexed(&ctx.facts.request_id)?)?;
        // Traced: the upstream's parent is the gateway span (without
        // `tracing:`, the client's headers pass through as sent).
        if let Some(hop) = &ctx.trace {
            upstream.insert_header("traceparent", never_indexed(&hop.traceparent())?)?;
            match hop.tracestate() {
                Some(state) => upstream.insert_header("tracestate", state)?,
                None => {
                    upstream.remove_header("tracestate");
                }
            }
        }
        if let Some(a) = &ctx.assertion {
            if let Some(tok) = a.assertion(&ctx.facts, SystemTime::now()) {
                upstream.insert_header(identity_headers::ASSERTION, tok.as_ref())?;
            }
        }
        if let Some(d) = ctx.deadline {
            // The backend gets a little more time than the gateway enforces,
            // so an expiry is reported by the gateway as DEADLINE_EXCEEDED
            // rather than as the backend's own CANCELLED racing it.
            let grace = (d / 10).clamp(Duration::from_millis(5), Duration::from_millis(500));
            upstream.insert_header("grpc-timeout", request_meta::format_grpc_timeout(d + grace))?;
        }
        // Required by gRPC. Pingora keeps the client's h2 → h2; set it only
        // where it is missing or different (a header insert re-parses its
        // name: ≈ 1k instructions a call for nothing otherwise).
        if ctx.grpc
            && upstream
                .headers
                .get(http::header::TE)
                .is_none_or(|v| v != "trailers")
        {
            upstream.insert_header(http::header::TE, "trailers")?;
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        // Trailers-only responses carry grpc-status in the headers.
        if let Some(s) = grpc_status(resp.headers.get("grpc-status")) {
            ctx.grpc_status = Some(s);
        }
        Ok(())
    }

    fn upstream_response_trailer_filter(
        &self,
        _session: &mut Session,
        trailers: &mut http::HeaderMap,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if let Some(s) = grpc_status(trailers.get("grpc-status")) {
            ctx.grpc_status = Some(s);
        }
        Ok(())
    }

    /// Pingora's own error log lines carry this summary: method, path (never
    /// the query, which could carry a credential) and host, plus our request
    /// id so they can be joined with the audit log.
    fn request_summary(&self, session: &Session, ctx: &Self::CTX) -> String {
        let req = session.req_header();
        format!(
            "{} {}, Host: {} request_id={}",
            req.method,
            req.uri.path(),
            req.uri.host().unwrap_or_default(),
            ctx.facts.request_id
        )
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Self::CTX,
        mut e: Box<Error>,
    ) -> Box<Error> {
        ctx.connect_failed = true;
        if let (Some(pool), Some(lease)) = (ctx.pool.as_ref(), ctx.lease.as_ref()) {
            pool.connect_failed(lease);
        }
        // Nothing was sent: one retry on another backend is safe.
        if retry_elsewhere(ctx) {
            e.set_retry(true);
        }
        e
    }

    /// An error once the call was on a backend's connection. Pingora's
    /// default never retries a non-idempotent method, so no gRPC call (a
    /// POST) was retried, not even one the backend provably did not
    /// process: a stream refused with RST_STREAM(REFUSED_STREAM), or one
    /// past a GOAWAY(NO_ERROR)'s last stream, as a backend that is
    /// restarting or shedding load sends (RFC 9113 §8.7). Those, which
    /// Pingora's h2 client marks retryable itself, get one retry on another
    /// backend with the request body Pingora kept; anything else (a reset
    /// or a closed connection mid-call, which may have been processed)
    /// ends the call.
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Self::CTX,
        _client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        let unprocessed = *e.etype() == ErrorType::H2Error
            && matches!(e.retry, RetryType::Decided(true))
            && !session.as_ref().retry_buffer_truncated();
        e.set_retry(unprocessed && retry_elsewhere(ctx));
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
        let reason = ctx
            .denial
            .as_ref()
            .map(|d| d.reason)
            .unwrap_or_else(|| proxy_error_reason(e));
        let message = match reason {
            Reason::NoHealthyBackend => "no healthy backend",
            Reason::UpstreamConnectFailed => "upstream connect failed",
            Reason::UpstreamTimeout => "upstream deadline exceeded",
            Reason::UpstreamReset => "upstream ended the call early",
            _ => "upstream error",
        };
        let d = Denial::new(reason, message);
        let mut code = 0;
        if session.response_written().is_none() {
            code = if ctx.grpc { 200 } else { reason.http_status() };
            if let Err(err) =
                denial_response::write_denial(session, &d, &ctx.facts.request_id, ctx.grpc).await
            {
                tracing::debug!(error = %err, "could not write error response");
                code = 0;
            }
        } else if ctx.grpc && ctx.grpc_status.is_none() && session.as_ref().is_http2() {
            // The backend's response headers (and maybe messages) are
            // already relayed, and the call has no status yet. Left alone,
            // Pingora drops the stream and h2 resets it (RST_STREAM
            // CANCEL), which gRPC clients read as CANCELLED and never
            // retry; end it with the status as trailers instead.
            if let Err(err) =
                denial_response::write_denial_trailers(session, &d, &ctx.facts.request_id).await
            {
                tracing::debug!(error = %err, "could not write error trailers");
            }
        }
        ctx.denial = Some(d);
        FailToProxy {
            error_code: code,
            can_reuse_downstream: true,
        }
    }

    async fn logging(&self, _session: &mut Session, _e: Option<&Error>, ctx: &mut Self::CTX) {
        // The state itself, so that its fields borrow apart.
        let ctx: &mut RequestState = ctx;
        // The call is over: end its passive-ejection streak (the connection
        // was made) and its in-flight count.
        if let Some(lease) = ctx.lease.take() {
            if !ctx.connect_failed {
                lease.health().connect_succeeded();
            }
        }
        let route = ctx.facts.route().map_or("", |r| r.route().as_ref());
        let upstream = ctx.facts.route().map_or("", |r| r.upstream().as_ref());
        // Deny or error is whose fault the reason is (a backend outage is
        // an error whether or not a connection was tried), worked out in one
        // place for metrics, audit and `explain`.
        let refused = ctx.denial.as_ref().map(|d| d.reason);
        let outcome = Outcome::of(refused, !ctx.shadow.is_empty());
        let decision = outcome.as_str();
        let (reason, status) = match refused {
            Some(r) => (r.as_str(), r.grpc_code().as_str()),
            None => (
                ctx.shadow.first().map(|s| s.1.as_str()).unwrap_or(""),
                grpc_status_label(ctx.grpc_status),
            ),
        };
        metrics::REQUESTS
            .with_label_values(&[route, upstream, decision, reason, status])
            .inc();
        tracing::debug!(
            request_id = %ctx.facts.request_id,
            path = %ctx.path,
            route,
            upstream,
            decision,
            reason,
            grpc_status = status,
            "request done"
        );
        let elapsed = ctx.started.elapsed();
        metrics::REQUEST_DURATION
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
        if let Some(t) = ctx.upstream_started {
            metrics::UPSTREAM_DURATION
                .with_label_values(&[upstream])
                .observe(t.elapsed().as_secs_f64());
        }
        if let Some(hop) = ctx.trace.take() {
            let grpc_status = match refused {
                Some(r) => Some(r.grpc_code().as_u8()),
                None => ctx.grpc_status.and_then(|s| u8::try_from(s).ok()),
            };
            hop.finish(
                trace::End {
                    path: &ctx.path,
                    route,
                    upstream,
                    backend: ctx.tried.last().copied(),
                    decision,
                    reason,
                    grpc_status,
                    failed: outcome == Outcome::Error,
                    request_id: &ctx.facts.request_id,
                    client_ip: ctx.client_ip,
                },
                SystemTime::now(),
            );
        }
        if let Some(a) = self.shared.audit.as_ref() {
            a.record(audit::Line {
                request_id: &ctx.facts.request_id,
                client_ip: ctx.client_ip,
                facts: &ctx.facts,
                path: &ctx.path,
                route,
                upstream,
                decision: outcome,
                reason,
                grpc_status: status,
                shadow: &ctx.shadow,
                duration: elapsed,
            });
        }
    }
}

/// A header value that differs on every call (the request id, the
/// traceparent), sent as an HPACK literal that is never indexed (RFC 7541
/// §6.2.3). Indexed, each would be inserted into the upstream connection's
/// dynamic table, never be used again, and evict the values that do repeat
/// (the XFCC, the identity headers), which then go out as literals again;
/// h2's encoder also walks every stored value of the same name on each
/// lookup. Measured in `load-tests/run.sh --callgrind`.
fn never_indexed(value: &str) -> Result<HeaderValue> {
    let mut v = HeaderValue::from_str(value).map_err(|_| {
        Error::explain(
            ErrorType::InvalidHTTPHeader,
            "header value not visible ASCII",
        )
    })?;
    v.set_sensitive(true);
    Ok(v)
}

fn grpc_status(v: Option<&HeaderValue>) -> Option<u16> {
    v.and_then(|v| v.to_str().ok()).and_then(|s| s.parse().ok())
}

/// Bounded label for a gRPC status: 0–16 as numbers, anything else `other`.
fn grpc_status_label(s: Option<u16>) -> &'static str {
    match s {
        None => "",
        Some(n) => GrpcCode::from_u16(n).map_or("other", GrpcCode::as_str),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_per_call_value_is_never_indexed() {
        let v = never_indexed("0af7651916cd43dd8448eb211c80319c").unwrap();
        assert!(v.is_sensitive());
        assert_eq!(v, "0af7651916cd43dd8448eb211c80319c");
        // Whatever reached this point was validated, but a control byte is
        // still an error, not a panic.
        assert!(never_indexed("a\nb").is_err());
    }
}
