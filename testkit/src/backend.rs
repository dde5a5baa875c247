#![allow(clippy::result_large_err)] // tonic::Status is large by design
//! The sample `orders.v1.Orders` backend over h2c, plus the standard gRPC
//! health service.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_stream::{Stream, StreamExt};
use tonic::metadata::{KeyAndValueRef, MetadataMap, MetadataValue};
use tonic::{Request, Response, Status, Streaming};
use tonic_health::server::HealthReporter;

use crate::proto::orders_server::{Orders, OrdersServer};
use crate::proto::{Reply, Request as OrdersRequest};

/// Bytes carried in `grpc-status-details-bin` by failing calls.
pub const FAIL_DETAILS: &[u8] = b"\x08\x05details";
/// Binary trailer metadata added to failing calls.
pub const FAIL_TRAILER_KEY: &str = "x-failure-bin";
pub const FAIL_TRAILER_VALUE: &[u8] = &[0, 1, 2, 254, 255];

#[derive(Clone)]
struct Svc {
    name: String,
    /// Calls that reached this backend (see [`Backend::received`]).
    received: Arc<AtomicUsize>,
}

impl Svc {
    fn arrived(&self) {
        self.received.fetch_add(1, Ordering::SeqCst);
    }
}

fn metadata(m: &MetadataMap) -> std::collections::HashMap<String, String> {
    let mut out = std::collections::HashMap::new();
    for kv in m.iter() {
        if let KeyAndValueRef::Ascii(k, v) = kv {
            if let Ok(v) = v.to_str() {
                out.insert(k.as_str().to_owned(), v.to_owned());
            }
        }
    }
    out
}

fn failure(req: &OrdersRequest) -> Option<Status> {
    if req.fail_code == 0 {
        return None;
    }
    let mut status = Status::with_details(
        tonic::Code::from_i32(req.fail_code as i32),
        req.fail_message.clone(),
        FAIL_DETAILS.to_vec().into(),
    );
    status.metadata_mut().insert_bin(
        FAIL_TRAILER_KEY,
        MetadataValue::from_bytes(FAIL_TRAILER_VALUE),
    );
    Some(status)
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<Reply, Status>> + Send>>;

#[tonic::async_trait]
impl Orders for Svc {
    async fn get(&self, request: Request<OrdersRequest>) -> Result<Response<Reply>, Status> {
        self.arrived();
        let md = metadata(request.metadata());
        let req = request.into_inner();
        if req.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(u64::from(req.delay_ms))).await;
        }
        if let Some(s) = failure(&req) {
            return Err(s);
        }
        Ok(Response::new(Reply {
            backend: self.name.clone(),
            payload: req.payload,
            metadata: md,
            seq: 0,
            received_bytes: 0,
            received_messages: 1,
        }))
    }

    type WatchStream = ReplyStream;

    async fn watch(
        &self,
        request: Request<OrdersRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.arrived();
        let req = request.into_inner();
        if let Some(s) = failure(&req) {
            return Err(s);
        }
        let name = self.name.clone();
        let stream = tokio_stream::iter(0..req.count).map(move |seq| {
            Ok(Reply {
                backend: name.clone(),
                payload: req.payload.clone(),
                seq,
                ..Reply::default()
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn upload(
        &self,
        request: Request<Streaming<OrdersRequest>>,
    ) -> Result<Response<Reply>, Status> {
        self.arrived();
        let mut stream = request.into_inner();
        let (mut bytes, mut n) = (0u64, 0u32);
        while let Some(m) = stream.next().await {
            let m = m?;
            bytes += m.payload.len() as u64;
            n += 1;
        }
        Ok(Response::new(Reply {
            backend: self.name.clone(),
            received_bytes: bytes,
            received_messages: n,
            ..Reply::default()
        }))
    }

    type ChatStream = ReplyStream;

    async fn chat(
        &self,
        request: Request<Streaming<OrdersRequest>>,
    ) -> Result<Response<Self::ChatStream>, Status> {
        self.arrived();
        let name = self.name.clone();
        let mut seq = 0u32;
        let stream = request.into_inner().map(move |m| {
            let m = m?;
            seq += 1;
            Ok(Reply {
                backend: name.clone(),
                payload: m.payload,
                seq,
                ..Reply::default()
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// A running backend; dropping it stops the server.
pub struct Backend {
    pub addr: SocketAddr,
    pub name: String,
    pub health: HealthReporter,
    received: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Backend {
    /// Start a backend named `name` on 127.0.0.1 (port 0 picks one).
    pub async fn start(name: &str) -> anyhow::Result<Self> {
        Self::start_on(name, "127.0.0.1:0".parse()?).await
    }

    pub async fn start_on(name: &str, addr: SocketAddr) -> anyhow::Result<Self> {
        Self::start_with(name, addr, None).await
    }

    /// Start a backend speaking h2 over TLS with `cert_pem`/`key_pem`; with
    /// `client_ca_pem`, it requires and verifies a client certificate.
    pub async fn start_tls(
        name: &str,
        cert_pem: &str,
        key_pem: &str,
        client_ca_pem: Option<&str>,
    ) -> anyhow::Result<Self> {
        let mut tls = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(cert_pem, key_pem));
        if let Some(ca) = client_ca_pem {
            tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(ca));
        }
        Self::start_with(name, "127.0.0.1:0".parse()?, Some(tls)).await
    }

    async fn start_with(
        name: &str,
        addr: SocketAddr,
        tls: Option<tonic::transport::ServerTlsConfig>,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (mut health, health_svc) = tonic_health::server::health_reporter();
        health.set_serving::<OrdersServer<Svc>>().await;
        let received = Arc::new(AtomicUsize::new(0));
        let svc = OrdersServer::new(Svc {
            name: name.to_owned(),
            received: received.clone(),
        })
        .max_decoding_message_size(16 * 1024 * 1024)
        .max_encoding_message_size(16 * 1024 * 1024);
        let (tx, rx) = oneshot::channel::<()>();
        // TCP_NODELAY: without it small gRPC frames wait on delayed ACKs (~40 ms).
        let incoming = tonic::transport::server::TcpIncoming::from_listener(listener, true, None)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            builder = builder.tls_config(tls)?;
        }
        let task = tokio::spawn(async move {
            let res = builder
                .add_service(health_svc)
                .add_service(svc)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = res {
                tracing::warn!(error = %e, "sample backend stopped");
            }
        });
        Ok(Self {
            addr,
            name: name.to_owned(),
            health,
            received,
            stop: Some(tx),
            task: Some(task),
        })
    }

    /// How many `orders.v1.Orders` calls have reached this backend (counted
    /// as each one arrives, before any `delay_ms`): what a test waits on to
    /// know that a call is in flight, instead of sleeping for it.
    pub fn received(&self) -> usize {
        self.received.load(Ordering::SeqCst)
    }

    /// Stop accepting and close the listener; waits for the server task.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    /// Report NOT_SERVING / SERVING on the standard health service.
    pub async fn set_serving(&mut self, serving: bool) {
        if serving {
            self.health.set_serving::<OrdersServer<Svc>>().await;
            self.health
                .set_service_status("", tonic_health::ServingStatus::Serving)
                .await;
        } else {
            self.health.set_not_serving::<OrdersServer<Svc>>().await;
            self.health
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}
