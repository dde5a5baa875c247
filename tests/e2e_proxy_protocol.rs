#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! `listener.proxy_protocol`: a trusted balancer's PROXY v1/v2 header sets
//! the client address (GeoIP, audit) before TLS; an untrusted peer's header
//! is never read; a trusted peer without one, or with a bad or slow one, is
//! closed — and the gateway keeps serving everyone else.
//!
//! The balancer is a relay in the test: it accepts a connection, connects to
//! the gateway, writes the header, then copies bytes both ways — what HAProxy
//! `send-proxy` or an NLB does — so the real tonic client does its real TLS
//! handshake with a client certificate through it.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{eventually, signal, testdata, Env, Setup};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use ztgate_testkit::client::{self, Target};
use ztgate_testkit::proto::{Reply, Request};

const SECRET: &str = "device-secret-0123456789abcdef0123456789";
/// The gateway's bound on reading a header (`proxy_protocol::HEADER_TIMEOUT`).
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Device filter with the GeoIP test database (so the upstream sees
/// `x-ztgate-geo-country` of the client address), and an audit file.
fn policy() -> String {
    format!(
        "pipeline: [sanitize, mtls, device, route]\nmtls:\n  trust_domains: [acme.test]\ndevice:\n  secret: {SECRET}\n  signals: [ja4]\n  geoip:\n    country_db: {}\naudit:\n  output: audit.log\n",
        testdata().join("geoip/GeoLite2-City-Test.mmdb").display()
    )
}

async fn start(name: &str, listener_extra: &str) -> Env {
    let mut setup = Setup::new(name);
    let policy = policy();
    setup.policy = &policy;
    setup.listener_extra = listener_extra;
    setup.start().await
}

// === headers ===

fn v1(src: &str, dst: &str) -> Vec<u8> {
    let proto = if src.contains(':') { "TCP6" } else { "TCP4" };
    format!("PROXY {proto} {src} {dst} 51234 8443\r\n").into_bytes()
}

const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// A v2 `PROXY` TCP over IPv4 header, with two TLVs (a NOOP and an AWS-style
/// VPC endpoint id) that the gateway must skip.
fn v2(src: [u8; 4]) -> Vec<u8> {
    let mut block = src.to_vec();
    block.extend_from_slice(&[10, 0, 0, 1]);
    block.extend_from_slice(&40000u16.to_be_bytes());
    block.extend_from_slice(&8443u16.to_be_bytes());
    block.extend_from_slice(&[0x04, 0x00, 0x02, 0, 0]);
    block.extend_from_slice(&[0xea, 0x00, 0x05, 0x01, b'v', b'p', b'c', b'e']);
    v2_raw(0x21, 0x11, &block)
}

fn v2_raw(ver_cmd: u8, family: u8, block: &[u8]) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.push(ver_cmd);
    h.push(family);
    h.extend_from_slice(&u16::try_from(block.len()).unwrap().to_be_bytes());
    h.extend_from_slice(block);
    h
}

// === a balancer that sends PROXY ===

/// Forwards each connection to the gateway, `header` first.
struct Relay {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(gateway: SocketAddr, header: Vec<u8>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                let header = header.clone();
                tokio::spawn(async move {
                    let Ok(mut up) = TcpStream::connect(gateway).await else {
                        return;
                    };
                    if up.write_all(&header).await.is_ok() {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
            }
        });
        Self { addr, task }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One `orders.v1.Orders/Get` as the web workload on a new connection to
/// `port` (a relay or the gateway itself), with `xff` as x-forwarded-for.
async fn call(env: &Env, port: u16, xff: Option<&str>) -> Result<Reply, String> {
    let target = Target::tls(format!("https://localhost:{port}"), env.ca.cert_pem())
        .with_identity(&env.web.cert_pem, &env.web.key_pem);
    let ch = client::connect(&target)
        .await
        .map_err(|e| format!("{e:?}"))?;
    let mut req = tonic::Request::new(Request::default());
    if let Some(xff) = xff {
        req.metadata_mut()
            .insert("x-forwarded-for", xff.parse().unwrap());
    }
    client::orders(ch)
        .get(req)
        .await
        .map(|r| r.into_inner())
        .map_err(|s| format!("{s:?}"))
}

/// The country the upstream was told, through a relay sending `header`.
async fn country_via(env: &Env, header: Vec<u8>, xff: Option<&str>) -> Option<String> {
    let relay = Relay::start(env.gw.listen, header).await;
    let reply = call(env, relay.addr.port(), xff).await.unwrap();
    reply.metadata.get("x-ztgate-geo-country").cloned()
}

/// Read until the gateway closes `s`; how long that took, or `None` if it
/// was still open after `limit`.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 512];
    tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()?;
    Some(start.elapsed())
}

/// Open a raw connection to the gateway and send `bytes`.
async fn raw(env: &Env, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(env.gw.listen).await.unwrap();
    s.write_all(bytes).await.unwrap();
    s
}

// === scenarios ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxys_header_sets_the_client_address() {
    let env = start(
        "pp-trusted",
        "  trusted_proxies: [127.0.0.1/32, 10.0.0.0/8]\n  proxy_protocol: true\n",
    )
    .await;

    // 81.2.69.142 is GB and 89.160.20.112 SE in the test database
    // (testdata/geoip/README.md): v1 and v2 each carry their own.
    assert_eq!(
        country_via(&env, v1("81.2.69.142", "10.0.0.1"), None)
            .await
            .as_deref(),
        Some("GB")
    );
    assert_eq!(
        country_via(&env, v2([89, 160, 20, 112]), None)
            .await
            .as_deref(),
        Some("SE")
    );
    // An IPv4 client reported over TCP6 as ::ffff:a.b.c.d is an IPv4 client
    // (2.125.160.216 is GB too; the audit check below shows its form).
    assert_eq!(
        country_via(&env, v1("::ffff:2.125.160.216", "::1"), None)
            .await
            .as_deref(),
        Some("GB")
    );
    // v2 LOCAL (a balancer's health check) and v1 UNKNOWN: the socket
    // address (loopback, in no database) stands, and the call is served.
    assert_eq!(country_via(&env, v2_raw(0x20, 0x00, &[]), None).await, None);
    assert_eq!(
        country_via(&env, b"PROXY UNKNOWN\r\n".to_vec(), None).await,
        None
    );

    // x-forwarded-for is relative to the PROXY address: ignored when that
    // is not a trusted proxy (67.43.156.1 is BT)…
    assert_eq!(
        country_via(&env, v1("81.2.69.142", "10.0.0.1"), Some("67.43.156.1"))
            .await
            .as_deref(),
        Some("GB")
    );
    // …and believed when it is one (10.0.0.0/8 is trusted here).
    assert_eq!(
        country_via(&env, v1("10.9.9.9", "10.0.0.1"), Some("67.43.156.1"))
            .await
            .as_deref(),
        Some("BT")
    );

    // The audit trail records the PROXY address as the client IP.
    let audit = env.dir.join("audit.log");
    assert!(
        eventually(Duration::from_secs(10), async || {
            let text = std::fs::read_to_string(&audit).unwrap_or_default();
            text.contains("\"client_ip\":\"81.2.69.142\"")
                && text.contains("\"client_ip\":\"89.160.20.112\"")
                && text.contains("\"client_ip\":\"2.125.160.216\"")
        })
        .await,
        "audit: {}",
        std::fs::read_to_string(&audit).unwrap_or_default()
    );

    // A trusted peer must send a header: straight TLS is refused.
    let err = call(&env, env.gw.listen.port(), None).await.unwrap_err();
    assert!(!err.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_peers_header_is_never_read() {
    // Loopback is not trusted: its connections go straight to TLS.
    let env = start(
        "pp-untrusted",
        "  trusted_proxies: [10.0.0.0/8]\n  proxy_protocol: true\n",
    )
    .await;
    let relay = Relay::start(env.gw.listen, v1("81.2.69.142", "10.0.0.1")).await;
    let err = call(&env, relay.addr.port(), None).await.unwrap_err();
    assert!(!err.is_empty());
    let relay = Relay::start(env.gw.listen, v2([81, 2, 69, 142])).await;
    assert!(call(&env, relay.addr.port(), None).await.is_err());

    // A plain TLS client is served, with its socket address.
    let reply = call(&env, env.gw.listen.port(), None).await.unwrap();
    assert!(!reply.metadata.contains_key("x-ztgate-geo-country"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_or_slow_headers_are_closed_and_others_still_served() {
    let env = start(
        "pp-bad",
        "  trusted_proxies: [127.0.0.1/32]\n  proxy_protocol: true\n",
    )
    .await;

    // A header that never completes: held at most HEADER_TIMEOUT.
    let mut slow = raw(&env, b"PROXY TCP4 81.2").await;
    let slow = tokio::spawn(async move { closed_within(&mut slow, Duration::from_secs(15)).await });

    // Meanwhile, bad headers are refused at once (well before the timeout).
    let quick = Duration::from_secs(3);
    let mut oversized_v1 = b"PROXY TCP4 ".to_vec();
    oversized_v1.resize(400, b'1');
    let mut oversized_v2 = V2_SIGNATURE.to_vec();
    oversized_v2.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
    let cases: [(&str, Vec<u8>); 6] = [
        (
            "HTTP request",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        ("garbage", vec![0u8; 64]),
        ("v1 over 107 bytes", oversized_v1),
        ("v2 length over the cap", oversized_v2),
        (
            "v1 with a bad address",
            b"PROXY TCP4 1.2.3 10.0.0.1 1 2\r\n".to_vec(),
        ),
        ("v2 UDP", v2_raw(0x21, 0x12, &[0; 12])),
    ];
    for (what, bytes) in cases {
        let mut s = raw(&env, &bytes).await;
        assert!(
            closed_within(&mut s, quick).await.is_some(),
            "{what}: not closed within {quick:?}"
        );
    }
    // A connection that closes before sending anything (a TCP health check).
    drop(TcpStream::connect(env.gw.listen).await.unwrap());

    // The gateway still serves a good client while the slow one is pending
    // (that it was pending is shown by when it closed, below).
    assert_eq!(
        country_via(&env, v1("81.2.69.142", "10.0.0.1"), None)
            .await
            .as_deref(),
        Some("GB")
    );

    let took = slow.await.unwrap().expect("slow header never closed");
    assert!(
        took >= HEADER_TIMEOUT - Duration::from_secs(1) && took < HEADER_TIMEOUT * 2,
        "slow header closed after {took:?}"
    );
    assert_eq!(
        country_via(&env, v2([89, 160, 20, 112]), None)
            .await
            .as_deref(),
        Some("SE")
    );
    let log = env.gw.log_text();
    assert!(log.contains("PROXY protocol"), "{log}");
    assert!(log.contains("127.0.0.1"), "the log names the peer: {log}");

    // Each outcome is counted for the operator.
    let count =
        |result: &str| env.metric("ztgate_proxy_protocol_headers_total", &[("result", result)]);
    // The asserts below say which count fell short.
    eventually(Duration::from_secs(5), async || {
        count("malformed") >= 6.0
            && count("timeout") >= 1.0
            && count("closed") >= 1.0
            && count("proxy") >= 2.0
    })
    .await;
    assert!(
        count("malformed") >= 6.0,
        "malformed: {}",
        count("malformed")
    );
    assert!(count("timeout") >= 1.0, "timeout: {}", count("timeout"));
    assert!(count("closed") >= 1.0, "closed: {}", count("closed"));
    assert!(count("proxy") >= 2.0, "proxy: {}", count("proxy"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_of_trusted_proxies_applies_to_the_next_connection() {
    let env = start(
        "pp-reload",
        "  trusted_proxies: [10.0.0.0/8]\n  proxy_protocol: true\n",
    )
    .await;
    assert!(call(&env, env.gw.listen.port(), None).await.is_ok());

    let text = std::fs::read_to_string(&env.gw.config).unwrap();
    std::fs::write(
        &env.gw.config,
        text.replace("[10.0.0.0/8]", "[127.0.0.1/32]"),
    )
    .unwrap();
    signal(env.gw.pid(), "-HUP");
    let relay = Relay::start(env.gw.listen, v1("81.2.69.142", "10.0.0.1")).await;
    assert!(
        eventually(Duration::from_secs(10), async || {
            call(&env, relay.addr.port(), None).await.is_ok_and(|r| {
                r.metadata.get("x-ztgate-geo-country").map(String::as_str) == Some("GB")
            })
        })
        .await
    );
    // Now loopback is trusted: it must send a header.
    assert!(call(&env, env.gw.listen.port(), None).await.is_err());
}

#[test]
fn check_refuses_proxy_protocol_without_trusted_proxies() {
    let dir = support::workdir("pp-check");
    let ca = ztgate_testkit::pki::Ca::new("acme.test").unwrap();
    ca.write(&dir, "ca").unwrap();
    ca.server().unwrap().write(&dir, "server").unwrap();
    let yaml = "listener:\n  address: 127.0.0.1:8443\n  tls:\n    cert: server.pem\n    key: server-key.pem\n    client_ca: ca.pem\n  proxy_protocol: true\npipeline: [sanitize, mtls, route]\nroutes:\n  - name: orders\n    match: { grpc: \"orders.v1.Orders\" }\n    select: [{ upstream: orders }]\nupstreams:\n  orders:\n    backends: [\"127.0.0.1:50051\"]\n";
    let file = dir.join("ztgate.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ztgate"))
        .arg("check")
        .arg("-c")
        .arg(&file)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("ztgate.yaml:7: listener.proxy_protocol: needs listener.trusted_proxies"),
        "{text}"
    );

    // With a trusted proxy it passes.
    std::fs::write(
        &file,
        yaml.replace(
            "  proxy_protocol: true\n",
            "  proxy_protocol: true\n  trusted_proxies: [10.0.0.0/8]\n",
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ztgate"))
        .arg("check")
        .arg("-c")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
