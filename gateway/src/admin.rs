//! The admin listener: `/healthz`, `/readyz`, `/metrics` on their own port.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::metrics;
use crate::state::Shared;

pub struct Admin {
    pub shared: Arc<Shared>,
}

fn response(code: u16, ctype: &str, body: Vec<u8>) -> http::Response<Vec<u8>> {
    let mut r = http::Response::new(body);
    *r.status_mut() =
        http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = http::HeaderValue::from_str(ctype) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    let len = r.body().len();
    r.headers_mut()
        .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    r
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> http::Response<Vec<u8>> {
        match session.req_header().uri.path() {
            "/healthz" => response(200, "text/plain", b"ok\n".to_vec()),
            "/readyz" => {
                let why = self.shared.not_ready();
                if why.is_empty() {
                    response(200, "text/plain", b"ready\n".to_vec())
                } else {
                    response(503, "text/plain", (why.join("\n") + "\n").into_bytes())
                }
            }
            "/metrics" => {
                // Read here rather than kept per request: the count is the
                // drain's, and a scrape is rare next to requests.
                let in_flight = self.shared.drain.in_flight();
                metrics::REQUESTS_IN_FLIGHT.set(i64::try_from(in_flight).unwrap_or(i64::MAX));
                response(200, "text/plain; version=0.0.4", metrics::render())
            }
            "/.well-known/jwks.json" => match &self.shared.runtime.load().assertion {
                Some(a) => response(200, "application/json", a.jwks().to_string().into_bytes()),
                None => response(404, "text/plain", b"no assertion key configured\n".to_vec()),
            },
            _ => response(404, "text/plain", b"not found\n".to_vec()),
        }
    }
}
