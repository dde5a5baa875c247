//! The load engine: opens the connections, runs `connections × streams`
//! workers through warm-up and the measured window, and merges what they
//! recorded.
//!
//! Each worker owns its histogram and error counts (nothing shared on the
//! hot path but the h2 connection itself), and only calls whose latency
//! origin falls inside the measured window are counted.

use std::collections::BTreeMap;
use std::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use prost::Message as _;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use ztgate_testkit::proto::Request as OrdersRequest;

use crate::conn::{ConnError, Endpoint};
use crate::grpc::{self, Deframer, Method};
use crate::hist::{Latency, Recorder};
use crate::procstat::{self, ProxyStats};
use crate::redisstat::{self, RedisStats};
use crate::schedule::{latency_origin, Pacing, Slots};
use crate::token::TokenSource;

/// What to send, how much, for how long.
#[derive(Clone, Debug)]
pub struct Workload {
    pub method: Method,
    /// Request payload bytes (echoed back by the backend).
    pub payload: usize,
    /// `Watch`: replies per call.
    pub stream_count: u32,
    /// Ask the backend to fail every call with this gRPC code (0: succeed);
    /// exercises the error accounting.
    pub fail_code: u32,
    pub connections: usize,
    /// Concurrent streams per connection.
    pub streams: usize,
    pub pacing: Pacing,
    pub warmup: Duration,
    pub duration: Duration,
    /// Per-call deadline on the client side.
    pub call_timeout: Duration,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// Processes whose CPU and RSS are sampled over the measured window, and
/// the Redis whose command counts are read at the same edges.
#[derive(Clone, Debug, Default)]
pub struct Watch {
    pub pids: Vec<u32>,
    pub clk_tck: u64,
    /// Redis the gateway keeps its state in (`INFO` before the warm-up and
    /// at the window's edges; see [`crate::redisstat`]).
    pub redis: Option<std::net::SocketAddr>,
}

/// Everything a run measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Outcome {
    pub calls_ok: u64,
    /// Failed calls in the window by gRPC code name (or `HTTP_<n>`,
    /// `TRANSPORT`, `TIMEOUT`, `BAD_RESPONSE`).
    pub errors: BTreeMap<String, u64>,
    pub measured_s: f64,
    pub rps: f64,
    /// Reply messages received (Watch: calls × stream_count).
    pub messages: u64,
    pub latency: Latency,
    /// Open loop: calls sent after their slot because the worker was still
    /// busy (the server was slower than the offered rate).
    pub late_sends: u64,
    /// Connections re-opened after a transport failure.
    pub reconnects: u64,
    pub proxy: Option<ProxyStats>,
    /// Successful calls that started before the measured window.
    #[serde(default)]
    pub warmup_calls: u64,
    /// What the gateway asked of its Redis (with `--redis-stats`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisStats>,
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("connection {index}: {source}")]
    Connect { index: usize, source: ConnError },
    #[error("building the request: {0}")]
    Request(String),
    #[error("sampling the proxy: {0}")]
    Proc(#[from] procstat::ProcError),
    #[error("sampling Redis: {0}")]
    Redis(#[from] redisstat::RedisStatError),
}

/// How one call failed.
#[derive(Debug)]
pub(crate) enum CallError {
    Grpc(u32),
    Http(u16),
    Transport,
    Timeout,
    BadResponse,
    /// The generator could not sign a DPoP proof.
    Proof,
}

impl CallError {
    pub(crate) fn key(&self) -> String {
        match self {
            CallError::Grpc(c) => grpc::code_name(*c).to_owned(),
            CallError::Http(s) => format!("HTTP_{s}"),
            CallError::Transport => "TRANSPORT".into(),
            CallError::Timeout => "TIMEOUT".into(),
            CallError::BadResponse => "BAD_RESPONSE".into(),
            CallError::Proof => "DPOP_PROOF".into(),
        }
    }
}

impl From<h2::Error> for CallError {
    fn from(_: h2::Error) -> Self {
        CallError::Transport
    }
}

/// The parts of a request that are the same on every call.
pub(crate) struct Template {
    uri: Uri,
    /// `https://authority/path` as a JSON string literal: a DPoP proof's `htu`.
    htu_json: String,
    headers: HeaderMap,
    body: Bytes,
    expect_messages: u64,
}

impl Template {
    pub(crate) fn new(ep: &Endpoint, w: &Workload) -> Result<Self, EngineError> {
        let uri: Uri = format!("{}://{}{}", ep.scheme(), ep.authority, w.method.path())
            .parse()
            .map_err(|e: http::uri::InvalidUri| EngineError::Request(e.to_string()))?;
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
        headers.insert(
            http::header::USER_AGENT,
            HeaderValue::from_static("ztgate-loadgen/0.1"),
        );
        for (k, v) in &w.headers {
            headers.append(k.clone(), v.clone());
        }
        let msg = OrdersRequest {
            payload: vec![b'x'; w.payload],
            count: if w.method == Method::Watch {
                w.stream_count
            } else {
                0
            },
            fail_code: w.fail_code,
            ..OrdersRequest::default()
        };
        let htu = format!("https://{}{}", ep.authority, w.method.path());
        Ok(Self {
            uri,
            htu_json: serde_json::Value::String(htu).to_string(),
            headers,
            body: grpc::frame(&msg.encode_to_vec()),
            expect_messages: match w.method {
                Method::Get => 1,
                Method::Watch => u64::from(w.stream_count),
            },
        })
    }
}

static DPOP: HeaderName = HeaderName::from_static("dpop");

pub(crate) async fn call(
    send: &mut SendRequest<Bytes>,
    t: &Template,
    tokens: &TokenSource,
) -> Result<u64, CallError> {
    poll_fn(|cx| send.poll_ready(cx)).await?;
    let mut req = http::Request::new(());
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = t.uri.clone();
    *req.headers_mut() = t.headers.clone();
    if let Some(tok) = tokens.header() {
        req.headers_mut()
            .insert(http::header::AUTHORIZATION, tok.clone());
    }
    // Signed when the stream is ready, so that `iat` is the send time.
    if let Some(proof) = tokens.proof(&t.htu_json).map_err(|_| CallError::Proof)? {
        req.headers_mut().insert(DPOP.clone(), proof);
    }
    let (resp, mut tx) = send.send_request(req, false)?;
    tx.send_data(t.body.clone(), true)?;
    let (parts, mut body) = resp.await?.into_parts();
    if parts.status != http::StatusCode::OK {
        return Err(CallError::Http(parts.status.as_u16()));
    }
    // Trailers-only response: the status is in the headers.
    if let Some(code) = grpc::status_of(&parts.headers) {
        return if code == 0 {
            Err(CallError::BadResponse)
        } else {
            Err(CallError::Grpc(code))
        };
    }
    let mut de = Deframer::default();
    let mut messages = 0u64;
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        de.push(&chunk);
        while de
            .next_message()
            .map_err(|_| CallError::BadResponse)?
            .is_some()
        {
            messages += 1;
        }
    }
    let trailers = body.trailers().await?.unwrap_or_default();
    match grpc::status_of(&trailers) {
        Some(0) if messages == t.expect_messages => Ok(messages),
        Some(0) | None => Err(CallError::BadResponse),
        Some(code) => Err(CallError::Grpc(code)),
    }
}

/// Per-worker tallies.
#[derive(Default)]
struct Tally {
    hist: Recorder,
    ok: u64,
    messages: u64,
    errors: BTreeMap<String, u64>,
    late: u64,
    reconnects: u64,
    /// Successful calls whose origin fell before the measured window.
    warm_ok: u64,
}

struct Clock {
    t0: Instant,
    measure_start: Instant,
    end: Instant,
}

#[allow(clippy::too_many_arguments)]
async fn worker(
    ep: Arc<Endpoint>,
    mut send: SendRequest<Bytes>,
    t: Arc<Template>,
    tokens: TokenSource,
    pacing: Pacing,
    index: usize,
    workers: usize,
    clock: Arc<Clock>,
    call_timeout: Duration,
) -> Tally {
    let mut tally = Tally::default();
    let mut slots = match pacing {
        Pacing::Closed => None,
        Pacing::Open { rate } => Some(Slots::new(clock.t0.into_std(), rate, index, workers)),
    };
    let mut prev_done = clock.t0.into_std();
    loop {
        let intended = slots.as_mut().map(Slots::next_slot);
        if let Some(slot) = intended {
            if slot >= clock.end.into_std() {
                break;
            }
            if std::time::Instant::now() < slot {
                tokio::time::sleep_until(Instant::from_std(slot)).await;
            }
        }
        let sent = std::time::Instant::now();
        if sent >= clock.end.into_std() {
            break;
        }
        let res = tokio::time::timeout(call_timeout, call(&mut send, &t, &tokens)).await;
        let done = std::time::Instant::now();
        let origin = latency_origin(intended, prev_done, sent);
        prev_done = done;
        let counted = origin >= clock.measure_start.into_std() && origin < clock.end.into_std();
        match res {
            Ok(Ok(n)) => {
                if origin < clock.measure_start.into_std() {
                    tally.warm_ok += 1;
                }
                if counted {
                    tally
                        .hist
                        .record_ns(u64::try_from((done - origin).as_nanos()).unwrap_or(u64::MAX));
                    tally.ok += 1;
                    tally.messages += n;
                    if intended.is_some_and(|slot| origin == slot && sent > slot) {
                        tally.late += 1;
                    }
                }
            }
            Ok(Err(e)) => {
                if counted {
                    *tally.errors.entry(e.key()).or_default() += 1;
                }
                if matches!(e, CallError::Transport) {
                    // The connection may be gone: back off, then re-open it.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    if let Ok((s, _)) = ep.connect().await {
                        send = s;
                        tally.reconnects += 1;
                    }
                }
            }
            Err(_) => {
                if counted {
                    *tally.errors.entry(CallError::Timeout.key()).or_default() += 1;
                }
            }
        }
    }
    tally
}

/// Open `n` connections, at most 64 handshakes at a time.
pub async fn connect_all(
    ep: &Arc<Endpoint>,
    n: usize,
) -> Result<Vec<SendRequest<Bytes>>, EngineError> {
    let mut out = Vec::with_capacity(n);
    let mut start = 0;
    while start < n {
        let batch = (start..n.min(start + 64))
            .map(|i| {
                let ep = ep.clone();
                tokio::spawn(async move { (i, ep.connect().await) })
            })
            .collect::<Vec<_>>();
        for h in batch {
            match h.await {
                Ok((_, Ok((s, _)))) => out.push(s),
                Ok((index, Err(source))) => return Err(EngineError::Connect { index, source }),
                Err(e) => {
                    return Err(EngineError::Request(format!("connect task failed: {e}")));
                }
            }
        }
        start += 64;
    }
    Ok(out)
}

/// Run the workload against `ep`; must be called inside a tokio runtime.
pub async fn run(
    ep: Endpoint,
    w: &Workload,
    tokens: TokenSource,
    watch: &Watch,
) -> Result<Outcome, EngineError> {
    let ep = Arc::new(ep);
    let template = Arc::new(Template::new(&ep, w)?);
    let conns = connect_all(&ep, w.connections.max(1)).await?;
    // Redis before the first call: the warm-up's commands include the
    // gateway's first connect and script loads.
    let redis_start = match watch.redis {
        Some(addr) => Some(redisstat::sample(addr).await?),
        None => None,
    };
    let t0 = Instant::now() + Duration::from_millis(20);
    let clock = Arc::new(Clock {
        t0,
        measure_start: t0 + w.warmup,
        end: t0 + w.warmup + w.duration,
    });
    let workers = conns.len() * w.streams.max(1);
    let mut handles = Vec::with_capacity(workers);
    for (ci, send) in conns.iter().enumerate() {
        for si in 0..w.streams.max(1) {
            handles.push(tokio::spawn(worker(
                ep.clone(),
                send.clone(),
                template.clone(),
                tokens.clone(),
                w.pacing,
                si * conns.len() + ci,
                workers,
                clock.clone(),
                w.call_timeout,
            )));
        }
    }
    drop(conns);

    // Sample the proxy (and its Redis) exactly at the window's edges.
    let pids = watch.pids.clone();
    let redis = watch.redis;
    let sampler = {
        let clock = clock.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(clock.measure_start).await;
            let before = if pids.is_empty() {
                None
            } else {
                Some(procstat::sample(&pids)?)
            };
            let b_at = Instant::now();
            let redis_before = match redis {
                Some(addr) => Some(redisstat::sample(addr).await?),
                None => None,
            };
            tokio::time::sleep_until(clock.end).await;
            let after = if pids.is_empty() {
                None
            } else {
                Some(procstat::sample(&pids)?)
            };
            let window = (Instant::now() - b_at).as_secs_f64();
            let redis_after = match redis {
                Some(addr) => Some(redisstat::sample(addr).await?),
                None => None,
            };
            Ok::<_, EngineError>((
                before.zip(after).map(|(b, a)| (b, a, window)),
                redis_before.zip(redis_after),
            ))
        })
    };

    let mut total = Tally::default();
    for h in handles {
        let t = h
            .await
            .map_err(|e| EngineError::Request(format!("worker failed: {e}")))?;
        total.hist.merge(&t.hist);
        total.ok += t.ok;
        total.messages += t.messages;
        total.late += t.late;
        total.reconnects += t.reconnects;
        total.warm_ok += t.warm_ok;
        for (k, v) in t.errors {
            *total.errors.entry(k).or_default() += v;
        }
    }
    let measured_s = w.duration.as_secs_f64();
    let (proc_samples, redis_samples) = sampler
        .await
        .map_err(|e| EngineError::Request(format!("sampler failed: {e}")))??;
    let redis = match (watch.redis, redis_start, redis_samples) {
        (Some(addr), Some(start), Some((before, after))) => Some(RedisStats {
            addr: addr.to_string(),
            // Our own reads: the previous sampling connection's close and
            // the INFO itself.
            warmup: redisstat::window(&start, &before, total.warm_ok, 2),
            window: redisstat::window(&before, &after, total.ok, 2),
        }),
        _ => None,
    };
    let proxy = match proc_samples {
        Some((before, after, window)) => Some(procstat::stats(
            &watch.pids,
            before,
            after,
            watch.clk_tck,
            total.ok,
            window,
        )),
        None => None,
    };
    Ok(Outcome {
        calls_ok: total.ok,
        errors: total.errors,
        measured_s,
        rps: if measured_s > 0.0 {
            total.ok as f64 / measured_s
        } else {
            0.0
        },
        messages: total.messages,
        latency: total.hist.summary(),
        late_sends: total.late,
        reconnects: total.reconnects,
        proxy,
        warmup_calls: total.warm_ok,
        redis,
    })
}

/// One unary `Get` with a 64-byte payload on `send` (used by the
/// connection-scale modes to make sure the proxy finished setting the
/// connection up, upstream included).
pub async fn probe(
    send: &mut SendRequest<Bytes>,
    ep: &Endpoint,
    tokens: &TokenSource,
) -> Result<(), String> {
    let w = Workload {
        method: Method::Get,
        payload: 64,
        stream_count: 0,
        fail_code: 0,
        connections: 1,
        streams: 1,
        pacing: Pacing::Closed,
        warmup: Duration::ZERO,
        duration: Duration::ZERO,
        call_timeout: Duration::from_secs(10),
        headers: Vec::new(),
    };
    let t = Template::new(ep, &w).map_err(|e| e.to_string())?;
    call(send, &t, tokens)
        .await
        .map(|_| ())
        .map_err(|e| e.key())
}
