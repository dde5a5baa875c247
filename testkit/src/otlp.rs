#![allow(clippy::result_large_err)] // tonic::Status is large by design
//! An OTLP trace receiver, the part of an OpenTelemetry collector a traced
//! process talks to: `opentelemetry.proto.collector.trace.v1.TraceService/
//! Export` over gRPC (tonic, with the generated service of the
//! `opentelemetry-proto` crate), or OTLP/HTTP (`POST /v1/traces` with a
//! protobuf `ExportTraceServiceRequest`, answered with an
//! `ExportTraceServiceResponse`). It keeps every span it receives for the
//! test to look at, listens on a free loopback port, and can be stopped
//! (its port then refuses connections, as a dead collector's does).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// One span as received, with the `service.name` of its resource.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub service_name: Option<String>,
    pub span: opentelemetry_proto::tonic::trace::v1::Span,
}

/// An attribute value as a test compares it.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Str(String),
    Int(i64),
    Other(String),
}

fn attr(kvs: &[KeyValue], key: &str) -> Option<Attr> {
    let v = kvs
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()?;
    Some(match v {
        Value::StringValue(s) => Attr::Str(s.clone()),
        Value::IntValue(i) => Attr::Int(*i),
        other => Attr::Other(format!("{other:?}")),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl ReceivedSpan {
    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }
    pub fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }
    /// Empty for a root span.
    pub fn parent_span_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }
    pub fn attr(&self, key: &str) -> Option<Attr> {
        attr(&self.span.attributes, key)
    }
    /// A string attribute (`None` if absent or not a string).
    pub fn str_attr(&self, key: &str) -> Option<String> {
        match self.attr(key)? {
            Attr::Str(s) => Some(s),
            _ => None,
        }
    }
    /// An integer attribute (`None` if absent or not an integer).
    pub fn int_attr(&self, key: &str) -> Option<i64> {
        match self.attr(key)? {
            Attr::Int(i) => Some(i),
            _ => None,
        }
    }
    /// Each event's name and its string attributes, in order.
    pub fn events(&self) -> Vec<(String, HashMap<String, String>)> {
        self.span
            .events
            .iter()
            .map(|e| {
                let attrs = e
                    .attributes
                    .iter()
                    .filter_map(|kv| match attr(std::slice::from_ref(kv), &kv.key)? {
                        Attr::Str(s) => Some((kv.key.clone(), s)),
                        Attr::Int(i) => Some((kv.key.clone(), i.to_string())),
                        Attr::Other(_) => None,
                    })
                    .collect();
                (e.name.clone(), attrs)
            })
            .collect()
    }
}

#[derive(Default)]
struct Received {
    spans: Vec<ReceivedSpan>,
    /// The request headers (gRPC metadata) of each export, ASCII values.
    exports: Vec<HashMap<String, String>>,
}

impl Received {
    fn add(&mut self, req: ExportTraceServiceRequest, headers: HashMap<String, String>) {
        self.exports.push(headers);
        for rs in req.resource_spans {
            let service_name =
                rs.resource
                    .as_ref()
                    .and_then(|r| match attr(&r.attributes, "service.name")? {
                        Attr::Str(s) => Some(s),
                        _ => None,
                    });
            for ss in rs.scope_spans {
                for span in ss.spans {
                    self.spans.push(ReceivedSpan {
                        service_name: service_name.clone(),
                        span,
                    });
                }
            }
        }
    }
}

type Store = Arc<Mutex<Received>>;

struct Svc {
    store: Store,
}

#[tonic::async_trait]
impl TraceService for Svc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let headers = request
            .metadata()
            .clone()
            .into_headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        let req = request.into_inner();
        self.store
            .lock()
            .map_err(|_| tonic::Status::internal("store poisoned"))?
            .add(req, headers);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Which OTLP transport a receiver speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Grpc,
    Http,
}

/// A running receiver; dropping it stops it.
pub struct OtlpReceiver {
    pub addr: SocketAddr,
    pub transport: Transport,
    store: Store,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl OtlpReceiver {
    /// An OTLP/gRPC receiver on a free loopback port.
    pub async fn start_grpc() -> anyhow::Result<Self> {
        Self::start_grpc_on("127.0.0.1:0".parse()?).await
    }

    /// An OTLP/gRPC receiver over TLS with `cert_pem`/`key_pem`, on a free
    /// loopback port (its endpoint is then `https://localhost:PORT`).
    pub async fn start_grpc_tls(cert_pem: &str, key_pem: &str) -> anyhow::Result<Self> {
        let tls = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(cert_pem, key_pem));
        Self::serve_grpc("127.0.0.1:0".parse()?, Some(tls)).await
    }

    /// An OTLP/gRPC receiver on `addr` (to come back on the port a stopped
    /// one had).
    pub async fn start_grpc_on(addr: SocketAddr) -> anyhow::Result<Self> {
        Self::serve_grpc(addr, None).await
    }

    async fn serve_grpc(
        addr: SocketAddr,
        tls: Option<tonic::transport::ServerTlsConfig>,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let store = Store::default();
        let svc = TraceServiceServer::new(Svc {
            store: store.clone(),
        });
        let incoming = tonic::transport::server::TcpIncoming::from_listener(listener, true, None)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let (tx, rx) = oneshot::channel::<()>();
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            builder = builder.tls_config(tls)?;
        }
        let task = tokio::spawn(async move {
            let res = builder
                .add_service(svc)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = res {
                tracing::warn!(error = %e, "OTLP receiver stopped");
            }
        });
        Ok(Self {
            addr,
            transport: Transport::Grpc,
            store,
            stop: Some(tx),
            task: Some(task),
        })
    }

    /// An OTLP/HTTP receiver (HTTP/1.1, protobuf bodies) on a free
    /// loopback port: `POST /v1/traces`; anything else gets 404.
    pub async fn start_http() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let store = Store::default();
        let (tx, mut rx) = oneshot::channel::<()>();
        let conns = store.clone();
        let task = tokio::spawn(async move {
            let mut open = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    _ = &mut rx => break,
                    accepted = listener.accept() => {
                        let Ok((sock, _)) = accepted else { continue };
                        open.spawn(http_connection(sock, conns.clone()));
                    }
                }
            }
            // Stopping closes the open connections too.
            open.abort_all();
        });
        Ok(Self {
            addr,
            transport: Transport::Http,
            store,
            stop: Some(tx),
            task: Some(task),
        })
    }

    /// The endpoint to put in `tracing.otlp.endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.store
            .lock()
            .map(|r| r.spans.clone())
            .unwrap_or_default()
    }

    /// The headers of each export request received so far.
    pub fn exports(&self) -> Vec<HashMap<String, String>> {
        self.store
            .lock()
            .map(|r| r.exports.clone())
            .unwrap_or_default()
    }

    /// Wait (up to `limit`) until a received span satisfies `f`.
    pub async fn span_where(
        &self,
        limit: Duration,
        f: impl Fn(&ReceivedSpan) -> bool,
    ) -> Option<ReceivedSpan> {
        let mut found = None;
        crate::wait::eventually(limit, async || {
            found = self.spans().into_iter().find(|s| f(s));
            found.is_some()
        })
        .await;
        found
    }

    /// Stop serving and close the port; waits for the server task.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// Largest OTLP/HTTP body accepted (the collector's default limit is
/// larger; a test never sends more).
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Serve OTLP/HTTP requests on one keep-alive HTTP/1.1 connection.
async fn http_connection(sock: tokio::net::TcpStream, store: Store) {
    let (read, mut write) = sock.into_split();
    let mut read = BufReader::new(read);
    loop {
        let mut line = String::new();
        match read.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            match read.read_line(&mut h).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if len > MAX_BODY {
            let _ = write
                .write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
            return;
        }
        let mut body = vec![0u8; len];
        if read.read_exact(&mut body).await.is_err() {
            return;
        }
        let (status, reply) = if method != "POST" || path != "/v1/traces" {
            ("404 Not Found", Vec::new())
        } else if headers.get("content-type").map(String::as_str) != Some("application/x-protobuf")
        {
            ("415 Unsupported Media Type", Vec::new())
        } else {
            match ExportTraceServiceRequest::decode(body.as_slice()) {
                Ok(req) => {
                    if let Ok(mut s) = store.lock() {
                        s.add(req, headers);
                    }
                    let resp = ExportTraceServiceResponse {
                        partial_success: None,
                    };
                    ("200 OK", resp.encode_to_vec())
                }
                Err(_) => ("400 Bad Request", Vec::new()),
            }
        };
        let head = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/x-protobuf\r\ncontent-length: {}\r\n\r\n",
            reply.len()
        );
        if write.write_all(head.as_bytes()).await.is_err() || write.write_all(&reply).await.is_err()
        {
            return;
        }
    }
}

/// A collector that accepts connections and never answers: what a hung
/// or overloaded collector looks like to an exporter. Dropping it closes
/// the port and every connection.
pub struct SilentCollector {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl SilentCollector {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = listener.accept().await {
                held.push(sock);
            }
        });
        Ok(Self { addr, task })
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for SilentCollector {
    fn drop(&mut self) {
        self.task.abort();
    }
}
