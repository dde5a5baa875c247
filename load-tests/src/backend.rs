//! Benchmark backends for `ztgate-benchd`.
//!
//! - `tonic`: `orders.v1.Orders` on tonic's server (the generated trait of
//!   `ztgate-testkit`), the realistic backend every target is measured
//!   against. It differs from the testkit's backend in two ways that matter
//!   for a benchmark: `TCP_NODELAY` is on (without it Nagle plus delayed
//!   ACKs add ~40 ms to every streamed reply), and replies do not copy the
//!   request metadata (a per-call map the tests need and a benchmark does
//!   not).
//! - `raw`: the same service written straight on `h2` with no tower stack,
//!   to measure the load generator's own ceiling (the backend must cost
//!   as little as possible there).

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use prost::Message as _;
use tokio::net::TcpListener;
use ztgate_testkit::proto::{Reply, Request as OrdersRequest};

use crate::grpc::{self, Deframer};

use std::pin::Pin;

use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};
use ztgate_testkit::proto::orders_server::{Orders, OrdersServer};

/// The tonic echo service.
#[derive(Clone)]
pub struct Echo {
    name: String,
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<Reply, Status>> + Send>>;

fn fail(req: &OrdersRequest) -> Option<Status> {
    (req.fail_code != 0).then(|| {
        Status::new(
            tonic::Code::from_i32(i32::try_from(req.fail_code).unwrap_or(2)),
            req.fail_message.clone(),
        )
    })
}

// tonic's trait fixes the error type to its (large) `Status`.
#[allow(clippy::result_large_err)]
#[tonic::async_trait]
impl Orders for Echo {
    async fn get(&self, request: Request<OrdersRequest>) -> Result<Response<Reply>, Status> {
        let req = request.into_inner();
        if let Some(s) = fail(&req) {
            return Err(s);
        }
        Ok(Response::new(Reply {
            backend: self.name.clone(),
            payload: req.payload,
            received_messages: 1,
            ..Reply::default()
        }))
    }

    type WatchStream = ReplyStream;

    async fn watch(
        &self,
        request: Request<OrdersRequest>,
    ) -> Result<Response<ReplyStream>, Status> {
        let req = request.into_inner();
        if let Some(s) = fail(&req) {
            return Err(s);
        }
        let name = self.name.clone();
        let payload = req.payload;
        let it = (0..req.count).map(move |seq| {
            Ok(Reply {
                backend: name.clone(),
                payload: payload.clone(),
                seq,
                ..Reply::default()
            })
        });
        Ok(Response::new(Box::pin(tokio_stream::iter(it))))
    }

    async fn upload(
        &self,
        _: Request<Streaming<OrdersRequest>>,
    ) -> Result<Response<Reply>, Status> {
        Err(Status::unimplemented("benchd serves Get and Watch"))
    }

    type ChatStream = ReplyStream;

    async fn chat(
        &self,
        _: Request<Streaming<OrdersRequest>>,
    ) -> Result<Response<ReplyStream>, Status> {
        Err(Status::unimplemented("benchd serves Get and Watch"))
    }
}

/// Serve the tonic echo backend on `listener` until the future is dropped.
pub async fn serve_tonic(
    listener: TcpListener,
    name: String,
) -> Result<(), tonic::transport::Error> {
    use tokio_stream::StreamExt as _;
    // `Server::tcp_nodelay` only applies to listeners tonic binds itself.
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|r| {
        r.inspect(|s| {
            let _ = s.set_nodelay(true);
        })
    });
    tonic::transport::Server::builder()
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(8 << 20)
        .max_concurrent_streams(1024)
        .add_service(OrdersServer::new(Echo { name }))
        .serve_with_incoming(incoming)
        .await
}

/// Serve the raw h2c backend on `listener` until the task is dropped.
pub async fn serve_raw(listener: TcpListener, name: String) -> std::io::Result<()> {
    serve_raw_counted(listener, name, None).await
}

/// [`serve_raw`], adding one to `requests` for every request it accepts
/// (tests of the counted runs check the exact number of calls with it).
pub async fn serve_raw_counted(
    listener: TcpListener,
    name: String,
    requests: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
) -> std::io::Result<()> {
    let name: std::sync::Arc<str> = name.into();
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let name = name.clone();
        let requests = requests.clone();
        tokio::spawn(async move {
            let mut b = h2::server::Builder::new();
            b.initial_window_size(1 << 20)
                .initial_connection_window_size(8 << 20)
                .max_concurrent_streams(1024);
            let Ok(mut conn) = b.handshake::<_, Bytes>(tcp).await else {
                return;
            };
            while let Some(Ok((req, respond))) = conn.accept().await {
                if let Some(n) = &requests {
                    n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                let name = name.clone();
                tokio::spawn(async move {
                    let _ = answer(req, respond, &name).await;
                });
            }
        });
    }
}

fn trailers(code: u32) -> HeaderMap {
    let mut t = HeaderMap::new();
    t.insert("grpc-status", HeaderValue::from(code));
    t
}

async fn answer(
    req: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    name: &str,
) -> Result<(), h2::Error> {
    let path = req.uri().path().to_owned();
    let mut body = req.into_body();
    let mut de = Deframer::default();
    let mut msg = None;
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        de.push(&chunk);
        if msg.is_none() {
            msg = de.next_message().ok().flatten();
        }
    }
    let request = msg.and_then(|m| OrdersRequest::decode(m).ok());
    let mut head = http::Response::new(());
    *head.status_mut() = StatusCode::OK;
    head.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    let Some(request) = request else {
        // INVALID_ARGUMENT as a trailers-only response.
        head.headers_mut()
            .insert("grpc-status", HeaderValue::from(3u32));
        respond.send_response(head, true)?;
        return Ok(());
    };
    let replies: u32 = match path.as_str() {
        "/orders.v1.Orders/Get" => 1,
        "/orders.v1.Orders/Watch" => request.count,
        _ => {
            head.headers_mut()
                .insert("grpc-status", HeaderValue::from(12u32));
            respond.send_response(head, true)?;
            return Ok(());
        }
    };
    let mut tx = respond.send_response(head, false)?;
    for seq in 0..replies {
        let reply = Reply {
            backend: name.to_owned(),
            payload: request.payload.clone(),
            seq,
            received_messages: 1,
            ..Reply::default()
        };
        tx.send_data(grpc::frame(&reply.encode_to_vec()), false)?;
    }
    tx.send_trailers(trailers(0))?;
    Ok(())
}

/// Bind `addr` and serve the raw backend on it (for in-process self-tests).
pub async fn spawn_raw(addr: SocketAddr, name: &str) -> std::io::Result<SocketAddr> {
    let l = TcpListener::bind(addr).await?;
    let bound = l.local_addr()?;
    let name = name.to_owned();
    tokio::spawn(async move {
        let _ = serve_raw(l, name).await;
    });
    Ok(bound)
}
