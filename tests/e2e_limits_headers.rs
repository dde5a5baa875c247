#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! Header limits end to end (issue 11, item 5; PRODUCT.md "Request
//! hygiene"): an oversized token reaches the `jwt` filter and is refused as
//! 16 UNAUTHENTICATED, and a header list over the gateway's limit gets 8
//! RESOURCE_EXHAUSTED `headers_too_large` (HTTP 431 with the JSON body for
//! non-gRPC callers), never the HTTP/2 layer's bare 431, which gRPC clients
//! read as UNKNOWN.

mod support;

use support::{assert_denied, curl_refused, Env, Setup};
use ztgate_testkit::client;
use ztgate_testkit::idp::Idp;
use ztgate_testkit::proto::Request;

/// The gateway's header-list limit (`proxy::MAX_HEADER_LIST_SIZE`).
const LIMIT: usize = 80 * 1024;

fn with_header(name: &str, value: &str) -> tonic::Request<Request> {
    let mut r = tonic::Request::new(Request::default());
    r.metadata_mut().insert(
        name.parse::<tonic::metadata::AsciiMetadataKey>().unwrap(),
        value.parse().unwrap(),
    );
    r
}

/// curl arguments that send `name: value` read from a file (a 100 KiB
/// value is too long for one command-line argument).
fn header_file(env: &Env, name: &str, value: &str) -> String {
    let f = env.dir.join(format!("header-{name}.txt"));
    std::fs::write(&f, format!("{name}: {value}\n")).unwrap();
    format!("@{}", f.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_kib_token_reaches_the_jwt_filter() {
    let idp = Idp::start().await.unwrap();
    let mut setup = Setup::new("limits-token");
    let policy = format!(
        "pipeline: [sanitize, mtls, jwt, route]\nmtls:\n  trust_domains: [acme.test]\njwt:\n  issuers:\n    - issuer: {}\n      discovery: true\n      allow_insecure_http: true\n      audiences: [orders]\n      algorithms: [ES256]\n",
        idp.issuer
    );
    setup.policy = &policy;
    let env = setup.start().await;
    // Before the fix the h2 codec (64 KiB list limit) answered `:status
    // 431` and the client saw UNKNOWN.
    let token = "a".repeat(64 * 1024);
    let err = client::orders(env.web_channel().await)
        .get(with_header("authorization", &format!("Bearer {token}")))
        .await
        .unwrap_err();
    assert_denied(&err, tonic::Code::Unauthenticated, "token_too_large", None);
    assert!(err.message().contains("over the 8192-byte cap"), "{err:?}");

    // On the wire: a trailers-only answer, HTTP 200 with grpc-status 16.
    // (48 KiB: curl's nghttp2 refuses to send a header block over 64 KiB.)
    let token = "a".repeat(48 * 1024);
    let h = header_file(&env, "authorization", &format!("Bearer {token}"));
    let out = curl_refused(&env, &["-i", "-H", &h]).await;
    let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase()
        + &String::from_utf8_lossy(&out.stderr);
    assert!(text.starts_with("http/2 200"), "{text}");
    assert!(text.contains("grpc-status: 16"), "{text}");
    assert!(text.contains("www-authenticate: bearer"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_list_over_the_limit_is_resource_exhausted() {
    let env = Setup::new("limits-list").start().await;
    let mut c = client::orders(env.web_channel().await);
    // Over the gateway's limit, under the codec's (twice it), from just
    // over the one to just under the other: before the fix this was the
    // codec's bare 431 (UNKNOWN).
    for size in [LIMIT + 1024, 2 * LIMIT - 1024] {
        let big = "b".repeat(size);
        let err = c.get(with_header("x-big", &big)).await.unwrap_err();
        assert_denied(
            &err,
            tonic::Code::ResourceExhausted,
            "headers_too_large",
            None,
        );
        assert!(
            err.message()
                .contains(&format!("over the {LIMIT}-byte limit")),
            "{err:?}"
        );
        // Trailers-only, with the request id.
        assert!(err.metadata().get("x-request-id").is_some(), "{err:?}");
    }
    // The connection is fine and a normal call is served.
    c.get(Request::default()).await.unwrap();

    // A non-gRPC caller gets HTTP 431 with the JSON body. (Over HTTP/1.1:
    // curl's nghttp2 refuses to send an HTTP/2 header block over 64 KiB.)
    let h = header_file(&env, "x-big", &"b".repeat(LIMIT + 1024));
    let (cert, key) = env.web.write(&env.dir, "curl-json").unwrap();
    let dir = env.dir.clone();
    let url = format!("{}/orders.v1.Orders/Get", env.gw.url());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(["-sS", "-i", "--http1.1", "--cacert"])
            .arg(dir.join("ca.pem"))
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .args(["-H", &h, &url])
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase()
        + &String::from_utf8_lossy(&out.stderr);
    assert!(text.starts_with("http/1.1 431"), "{text}");
    assert!(text.contains("\"reason\":\"headers_too_large\""), "{text}");

    assert_eq!(
        env.metric_reaching(
            "ztgate_requests_total",
            &[
                ("reason", "headers_too_large"),
                ("decision", "deny"),
                ("grpc_status", "8"),
            ],
            3.0
        )
        .await,
        3.0
    );
}
