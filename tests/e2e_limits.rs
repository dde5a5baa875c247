#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! Connection hygiene on a real process: `listener.request_header_timeout`
//! closes a connection that completes TLS but sends no request, and
//! `listener.max_connections_per_ip` / `listener.max_connections` close a
//! connection over the cap right after accept, before TLS.

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslStream};
use support::{eventually, metric_reaching, Env, Setup};
use ztgate_testkit::client;
use ztgate_testkit::proto::Request;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A TLS connection to the gateway as the web workload, from `source`,
/// offering h2: the handshake done, nothing sent.
async fn tls_connect(
    addr: SocketAddr,
    source: IpAddr,
    dir: &Path,
) -> Result<SslStream<TcpStream>, String> {
    tls_connect_via(addr, source, None, dir).await
}

/// [`tls_connect`], first sending a PROXY v1 header naming `client`, as a
/// trusted balancer does.
async fn tls_connect_via(
    addr: SocketAddr,
    source: IpAddr,
    client: Option<IpAddr>,
    dir: &Path,
) -> Result<SslStream<TcpStream>, String> {
    let mut sock = tcp_from(addr, source).await?;
    if let Some(c) = client {
        let line = format!("PROXY TCP4 {c} {} 40000 {}\r\n", addr.ip(), addr.port());
        sock.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
    }
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || handshake(sock, &dir))
        .await
        .unwrap()
}

fn handshake(sock: TcpStream, dir: &Path) -> Result<SslStream<TcpStream>, String> {
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.set_ca_file(dir.join("ca.pem")).unwrap();
    b.set_certificate_chain_file(dir.join("limits-client.pem"))
        .unwrap();
    b.set_private_key_file(dir.join("limits-client-key.pem"), SslFiletype::PEM)
        .unwrap();
    b.set_alpn_protos(b"\x02h2").unwrap();
    let c = b.build();
    c.connect("localhost", sock).map_err(|e| e.to_string())
}

/// A plain (blocking) TCP connection to `addr` from `source`: any 127/8
/// address works on loopback, so one machine has several client IPs.
async fn tcp_from(addr: SocketAddr, source: IpAddr) -> Result<TcpStream, String> {
    let s = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
    s.bind(SocketAddr::new(source, 0))
        .map_err(|e| e.to_string())?;
    let t = s.connect(addr).await.map_err(|e| e.to_string())?;
    let t = t.into_std().map_err(|e| e.to_string())?;
    t.set_nonblocking(false).map_err(|e| e.to_string())?;
    Ok(t)
}

/// Read until the gateway closes the connection; how long after `since`
/// that was.
fn time_to_close(tls: &mut SslStream<TcpStream>, since: Instant) -> Duration {
    let mut buf = [0u8; 4096];
    loop {
        match tls.read(&mut buf) {
            Ok(0) | Err(_) => return since.elapsed(),
            // The server's SETTINGS and session tickets.
            Ok(_) => {}
        }
    }
}

fn open_gauge(env: &Env) -> f64 {
    let (_, text) = env.gw.admin_get("/metrics").unwrap();
    text.lines()
        .find_map(|l| {
            l.strip_prefix("ztgate_connections_open ")?
                .trim()
                .parse()
                .ok()
        })
        .expect("ztgate_connections_open is in /metrics")
}

/// 1 s in the test (10 s by default): a connection that finishes TLS and
/// sends nothing, or only the HTTP/2 preface and SETTINGS, is closed after
/// it; a connection that sent its request in time is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_after_request_header_timeout() {
    let env = Setup {
        listener_extra: "  request_header_timeout: 1s\n",
        ..Setup::new("limits-header-timeout")
    }
    .start()
    .await;
    env.web.write(&env.dir, "limits-client").unwrap();
    // A served connection, opened before the silent ones.
    let ch = env.web_channel().await;
    client::orders(ch.clone())
        .get(Request::default())
        .await
        .unwrap();

    let localhost: IpAddr = [127, 0, 0, 1].into();
    let mut a = tls_connect(env.gw.listen, localhost, &env.dir)
        .await
        .expect("TLS handshake");
    let a_since = Instant::now();
    let mut b = tls_connect(env.gw.listen, localhost, &env.dir)
        .await
        .expect("TLS handshake");
    let b_since = Instant::now();
    let (silent, preface_only) = tokio::task::spawn_blocking(move || {
        b.write_all(H2_PREFACE).unwrap();
        // An empty SETTINGS frame.
        b.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).unwrap();
        let b = std::thread::spawn(move || time_to_close(&mut b, b_since));
        (time_to_close(&mut a, a_since), b.join().unwrap())
    })
    .await
    .unwrap();
    println!("closed after: no bytes {silent:?}; preface + SETTINGS {preface_only:?}");
    for t in [silent, preface_only] {
        assert!(t >= Duration::from_millis(950), "{t:?}");
        assert!(t < Duration::from_millis(2500), "{t:?}");
    }
    assert_eq!(
        unlabelled(&env, "ztgate_request_header_timeouts_total"),
        2.0,
        "only the two silent connections timed out"
    );
    // The connection that sent its request in time is older than the
    // timeout and still serves.
    client::orders(ch).get(Request::default()).await.unwrap();
}

fn unlabelled(env: &Env, name: &str) -> f64 {
    let (_, text) = env.gw.admin_get("/metrics").unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} is not in /metrics"))
}

/// Cap 2 per IP and 3 in all: a third connection from one IP is closed
/// before TLS (`per_ip`), a second IP gets the last global slot, the next
/// connection is over the global cap (`global`), and closing one lets a
/// new one in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_caps_refuse_at_accept() {
    let env = Setup {
        listener_extra:
            "  max_connections_per_ip: 2\n  max_connections: 3\n  request_header_timeout: 60s\n",
        ..Setup::new("limits-caps")
    }
    .start()
    .await;
    env.web.write(&env.dir, "limits-client").unwrap();
    let one: IpAddr = [127, 0, 0, 1].into();
    let two: IpAddr = [127, 0, 0, 2].into();
    let connect = |from: IpAddr| tls_connect(env.gw.listen, from, &env.dir);

    let a1 = connect(one).await.expect("first from 127.0.0.1");
    let _a2 = connect(one).await.expect("second from 127.0.0.1");
    let a3 = connect(one).await;
    assert!(a3.is_err(), "third from 127.0.0.1 is refused");
    println!("third connection from one IP: {:?}", a3.err());
    assert_eq!(
        metric_reaching(
            &env.gw,
            "ztgate_connections_refused_total",
            &[("reason", "per_ip")],
            1.0
        )
        .await,
        1.0
    );
    let _b1 = connect(two).await.expect("first from 127.0.0.2");
    let b2 = connect(two).await;
    assert!(b2.is_err(), "over the global cap");
    assert_eq!(
        metric_reaching(
            &env.gw,
            "ztgate_connections_refused_total",
            &[("reason", "global")],
            1.0
        )
        .await,
        1.0
    );
    assert!(
        eventually(Duration::from_secs(5), async || open_gauge(&env) == 3.0).await,
        "{}",
        open_gauge(&env)
    );

    // Closing one lets a new one in.
    drop(a1);
    assert!(
        eventually(Duration::from_secs(5), async || open_gauge(&env) == 2.0).await,
        "{}",
        open_gauge(&env)
    );
    let _a4 = connect(one)
        .await
        .expect("a slot from 127.0.0.1 was given back");
    assert_eq!(
        metric_reaching(
            &env.gw,
            "ztgate_connections_refused_total",
            &[("reason", "per_ip")],
            1.0
        )
        .await,
        1.0
    );
}

/// Behind a trusted balancer the per-IP cap counts each client the PROXY
/// header names, not the balancer's own address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_ip_cap_applies_to_the_proxy_protocol_client() {
    let env = Setup {
        listener_extra: "  trusted_proxies: [127.0.0.1/32]\n  proxy_protocol: true\n  max_connections_per_ip: 1\n",
        ..Setup::new("limits-proxy-protocol")
    }
    .start()
    .await;
    env.web.write(&env.dir, "limits-client").unwrap();
    let balancer: IpAddr = [127, 0, 0, 1].into();
    let via =
        |client: [u8; 4]| tls_connect_via(env.gw.listen, balancer, Some(client.into()), &env.dir);
    let _first = via([203, 0, 113, 7]).await.expect("one client");
    let _other = via([198, 51, 100, 9])
        .await
        .expect("another client, same balancer");
    let again = via([203, 0, 113, 7]).await;
    assert!(again.is_err(), "the first client's second connection");
    assert_eq!(
        metric_reaching(
            &env.gw,
            "ztgate_connections_refused_total",
            &[("reason", "per_ip")],
            1.0
        )
        .await,
        1.0
    );
}
