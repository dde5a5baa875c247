//! The response a denial becomes on the wire: trailers-only gRPC responses
//! for gRPC callers, JSON for everyone else (PRODUCT.md "Denials").

use bytes::Bytes;
use http::HeaderValue;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use pingora::http::ResponseHeader;
use pingora::protocols::http::HttpTask;
use pingora::proxy::Session;
use pingora::{ErrorType, OrErr};
use ztgate_filter::{Denial, Reason};

/// gRPC's percent-encoding set for `grpc-message`: everything outside
/// printable ASCII, plus `%` itself (gRPC over HTTP/2 spec, "Responses").
const GRPC_MESSAGE: &AsciiSet = &CONTROLS.add(b'%');

/// The `grpc-message` value for a denial: "reason: message".
pub fn grpc_message(d: &Denial) -> String {
    let text = format!("{}: {}", d.reason.as_str(), d.message);
    utf8_percent_encode(&text, GRPC_MESSAGE).to_string()
}

/// The JSON body for non-gRPC callers.
pub fn json_body(d: &Denial, request_id: &str) -> Bytes {
    let body = serde_json::json!({
        "error": d.message,
        "reason": d.reason.as_str(),
        "request_id": request_id,
    });
    Bytes::from(body.to_string())
}

/// Build the response header of a denial.
pub fn denial_header(d: &Denial, request_id: &str, grpc: bool) -> pingora::Result<ResponseHeader> {
    let reason = d.reason;
    let mut resp = if grpc {
        let mut r = ResponseHeader::build(200, Some(6))?;
        r.insert_header("content-type", "application/grpc")?;
        r.insert_header("grpc-status", reason.grpc_code().as_str())?;
        r.insert_header("grpc-message", grpc_message(d))?;
        r
    } else {
        let mut r = ResponseHeader::build(reason.http_status(), Some(6))?;
        r.insert_header("content-type", "application/json")?;
        r
    };
    if !request_id.is_empty() {
        resp.insert_header("x-request-id", request_id)?;
    }
    if reason.is_unauthenticated() {
        resp.insert_header("www-authenticate", www_authenticate(reason))?;
    }
    if let Some(wait) = d.retry_after {
        resp.insert_header("retry-after", wait.as_secs().max(1).to_string())?;
    }
    Ok(resp)
}

/// The challenge for a 401: DPoP failures name the DPoP scheme (RFC 9449 §7.1).
fn www_authenticate(reason: Reason) -> &'static str {
    match reason {
        Reason::DpopProofMissing
        | Reason::DpopProofInvalid
        | Reason::DpopReplay
        | Reason::DpopBindingMismatch => "DPoP error=\"invalid_dpop_proof\"",
        _ => "Bearer error=\"invalid_token\"",
    }
}

/// Send a denial downstream. gRPC gets one HEADERS frame with END_STREAM
/// (a true trailers-only response: `write_response_header` would add an
/// empty DATA frame, notes §5).
pub async fn write_denial(
    session: &mut Session,
    d: &Denial,
    request_id: &str,
    grpc: bool,
) -> pingora::Result<()> {
    let mut resp = denial_header(d, request_id, grpc)?;
    if grpc {
        session
            .write_response_tasks(vec![HttpTask::Header(Box::new(resp), true)])
            .await?;
    } else {
        let body = json_body(d, request_id);
        resp.insert_header("content-length", body.len().to_string())?;
        session
            .write_response_tasks(vec![
                HttpTask::Header(Box::new(resp), false),
                HttpTask::Body(Some(body), true),
            ])
            .await?;
    }
    Ok(())
}

/// The trailers that end a gRPC call whose response headers were already
/// relayed from the backend: `grpc-status` and `grpc-message` of the denial,
/// and the request id (the backend's headers need not have carried it) so
/// the failure can be found in the audit log.
pub fn denial_trailers(d: &Denial, request_id: &str) -> pingora::Result<http::HeaderMap> {
    let mut t = http::HeaderMap::new();
    t.insert(
        "grpc-status",
        HeaderValue::from_static(d.reason.grpc_code().as_str()),
    );
    // Percent-encoded, so always a valid value; refused rather than
    // trusted all the same.
    let message = HeaderValue::from_str(&grpc_message(d)).or_err(
        ErrorType::InternalError,
        "grpc-message is not a header value",
    )?;
    t.insert("grpc-message", message);
    match HeaderValue::from_str(request_id) {
        Ok(id) if !request_id.is_empty() => {
            t.insert("x-request-id", id);
        }
        _ => {}
    }
    Ok(t)
}

/// End a gRPC call mid-response (headers, maybe messages, already sent) with
/// the denial's status as trailers: HEADERS with END_STREAM, which a gRPC
/// client reads as the call's status. Without it the stream would be reset,
/// and a reset reads as CANCELLED.
pub async fn write_denial_trailers(
    session: &mut Session,
    d: &Denial,
    request_id: &str,
) -> pingora::Result<()> {
    let t = denial_trailers(d, request_id)?;
    session
        .write_response_tasks(vec![HttpTask::Trailer(Some(Box::new(t)))])
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_message_is_percent_encoded() {
        let d = Denial::new(Reason::ScopeMissing, "needs 100% ünïcode\n");
        assert_eq!(
            grpc_message(&d),
            "scope_missing: needs 100%25 %C3%BCn%C3%AFcode%0A"
        );
    }

    #[test]
    fn headers_follow_the_table() {
        let d = Denial::new(Reason::TokenExpired, "expired");
        let h = denial_header(&d, "rid", true).unwrap();
        assert_eq!(h.status.as_u16(), 200);
        assert_eq!(h.headers["grpc-status"], "16");
        assert_eq!(
            h.headers["www-authenticate"],
            "Bearer error=\"invalid_token\""
        );
        assert_eq!(h.headers["x-request-id"], "rid");
        let h = denial_header(&Denial::new(Reason::NoRoute, "x"), "rid", false).unwrap();
        assert_eq!(h.status.as_u16(), 404);
        assert_eq!(h.headers["content-type"], "application/json");
        let body = json_body(&Denial::new(Reason::NoRoute, "no route"), "rid");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["reason"], "no_route");
        assert_eq!(v["request_id"], "rid");
    }

    #[test]
    fn trailers_carry_the_status_of_a_reset() {
        let d = Denial::new(Reason::UpstreamReset, "upstream ended the call early");
        let t = denial_trailers(&d, "rid").unwrap();
        assert_eq!(t["grpc-status"], "14");
        assert_eq!(t["x-request-id"], "rid");
        assert_eq!(
            t["grpc-message"],
            "upstream_reset: upstream ended the call early"
        );
    }
}
