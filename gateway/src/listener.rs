//! What the client listener runs per connection, around Pingora's HTTP
//! layer: the first-request deadline (`first_request.rs`) and the drain's
//! connection count and close signal (`drain.rs`).
//!
//! Pingora's `Service` takes any `ServerApp`; the proxy is one through its
//! `HttpServerApp` impl. [`Serve`] sits between them, so the accept loop,
//! TLS and the HTTP/2 machinery stay Pingora's.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;

use crate::drain::Drain;
use crate::first_request::FirstRequest;

pub struct Serve<A> {
    app: Arc<A>,
    drain: Arc<Drain>,
    request_header_timeout: Duration,
}

impl<A> Serve<A> {
    pub fn new(app: Arc<A>, drain: Arc<Drain>, request_header_timeout: Duration) -> Self {
        Self {
            app,
            drain,
            request_header_timeout,
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Serve<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        // Connections watch the drain's close signal instead, so that
        // SIGTERM can keep them serving (Pingora's own shutdown reaches them
        // through `cleanup` below).
        _shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if crate::tls::refused_after_handshake(&stream) {
            // Its client certificate was refused once the handshake was
            // done (OCSP; see `tls::ocsp`): closed before any request.
            return None;
        }
        let _connection = self.drain.connection();
        let stream: Stream = Box::new(FirstRequest::new(stream, self.request_header_timeout));
        let close = self.drain.close_watch();
        // The HTTP layer serves the connection to its end (it hands back a
        // stream only for custom protocols, which this listener has none of).
        self.app.process_new(stream, &close).await
    }

    /// Pingora calls this once its shutdown (a graceful upgrade, SIGQUIT)
    /// has stopped the accept loop: the connections get GOAWAY then, as
    /// they would from Pingora.
    async fn cleanup(&self) {
        self.drain.close_connections();
        self.app.cleanup().await
    }
}
