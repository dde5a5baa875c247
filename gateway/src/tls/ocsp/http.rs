//! OCSP over HTTP (RFC 6960 Appendix A): the DER request POSTed as
//! `application/ocsp-request`, the DER response read back, bounded in
//! time (the caller's timeout) and in size.

use super::response::OcspError;

/// More than any single-certificate response (a few KiB with the
/// responder's certificate); a longer body is refused, not buffered.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// The client every OCSP fetch uses: no redirects (a responder URL is
/// taken as written in the certificate), no connection pool to speak of
/// (responders are few; keep-alive still saves a handshake between
/// refreshes).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(2)
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// POST `request` to `url`; the response body, if the responder answered
/// 200 with one of at most [`MAX_RESPONSE_BYTES`].
pub async fn post(
    client: &reqwest::Client,
    url: &str,
    request: Vec<u8>,
) -> Result<Vec<u8>, OcspError> {
    let transport = |reason: String| OcspError::Transport {
        url: url.to_owned(),
        reason,
    };
    let mut resp = client
        .post(url)
        .header("content-type", "application/ocsp-request")
        .header("accept", "application/ocsp-response")
        .body(request)
        .send()
        .await
        .map_err(|e| transport(without_url(&e)))?;
    if !resp.status().is_success() {
        return Err(transport(format!("HTTP {}", resp.status().as_u16())));
    }
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
    {
        return Err(transport("response too large".into()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| transport(without_url(&e)))? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(transport("response too large".into()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// What went wrong, without the URL reqwest repeats (the caller names it
/// once): the kind, then each underlying cause.
fn without_url(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut reason = String::from(if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "bad response body"
    } else {
        "request failed"
    });
    let mut source = e.source();
    while let Some(s) = source {
        reason = format!("{reason}: {s}");
        source = s.source();
    }
    reason
}
