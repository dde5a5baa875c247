//! Running a real `ztgate` process for the demo and the end-to-end tests.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use http::uri::PathAndQuery;
use tonic::codec::ProstCodec;
use tonic::transport::Channel;

use crate::proto::{Reply, Request as OrdersRequest};

/// A free loopback port (bound then released; fine for tests and the demo).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A loopback port where nothing listens, held for as long as this lives:
/// a connection to it is refused at once. A port from [`free_port`] is
/// released, so another test running meanwhile can bind it, and the
/// kernel can even connect a socket to itself there (a TCP simultaneous
/// open when the port it picks as source is the destination). A socket
/// bound but not listening keeps both from happening.
pub struct ClosedPort {
    _socket: socket2::Socket,
    pub port: u16,
}

impl ClosedPort {
    pub fn new() -> anyhow::Result<Self> {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
        let port = socket
            .local_addr()?
            .as_socket()
            .context("bound to a non-IP address")?
            .port();
        Ok(Self {
            _socket: socket,
            port,
        })
    }
}

/// How `/readyz` says the gRPC listener is not this process's yet.
const LISTENER_NOT_BOUND: &str = "not bound by this process yet";

/// What [`GatewayProcess::start`] waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// `/readyz` answers 200.
    Ready,
    /// The admin listener answers and the gateway holds its gRPC listener
    /// (for gateways that are expected not to be ready).
    Listening,
    /// The admin listener answers; nothing about the gRPC listener (for a
    /// gateway whose port another process holds).
    Started,
}

/// A running gateway process, killed on drop.
pub struct GatewayProcess {
    child: Child,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub config: PathBuf,
    pub log: PathBuf,
}

impl GatewayProcess {
    /// Write `config_yaml` to `dir/ztgate.yaml`, start `bin run -c` on it
    /// and wait (up to 20 s) for `until`; fails with the gateway's log.
    pub fn start(
        bin: &Path,
        dir: &Path,
        config_yaml: &str,
        listen: SocketAddr,
        admin: SocketAddr,
        until: Until,
    ) -> anyhow::Result<Self> {
        let mut gw = Self::spawn(bin, dir, config_yaml, listen, admin)?;
        // The gRPC listener is bound by the gateway itself, not merely
        // reachable: a port taken from `free_port` can be taken again by
        // another process before the gateway binds it (Pingora then retries
        // the bind), and a test connecting meanwhile reaches the other
        // process or nothing. The gateway's `/readyz` knows (it checks the
        // socket table, `gateway/src/listening.rs`): 200, or 503 without
        // the listener among its reasons (the end-to-end test of that is
        // `e2e_ops::a_gateway_whose_port_is_taken_is_not_ready`).
        gw.wait_until(Duration::from_secs(20), |gw| {
            match (until, http_get(gw.admin, "/readyz")) {
                (Until::Started, r) => r.is_ok(),
                (_, Ok((200, _))) => true,
                (Until::Listening, Ok((_, why))) => !why.contains(LISTENER_NOT_BOUND),
                _ => false,
            }
        })?;
        Ok(gw)
    }

    fn spawn(
        bin: &Path,
        dir: &Path,
        config_yaml: &str,
        listen: SocketAddr,
        admin: SocketAddr,
    ) -> anyhow::Result<Self> {
        let config = dir.join("ztgate.yaml");
        // Written aside and renamed into place: a process already reading
        // this file (the kept demo's backends read the same config) sees
        // the old whole file or the new one, never a half-written one.
        let staged = dir.join(".ztgate.yaml.new");
        std::fs::write(&staged, config_yaml)?;
        std::fs::rename(&staged, &config)?;
        let log = dir.join("ztgate.log");
        let logf = std::fs::File::create(&log)?;
        let child = Command::new(bin)
            .arg("run")
            .arg("-c")
            .arg(&config)
            .stdout(logf.try_clone()?)
            .stderr(logf)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        Ok(Self {
            child,
            listen,
            admin,
            config,
            log,
        })
    }

    fn wait_until(&mut self, limit: Duration, ok: impl Fn(&Self) -> bool) -> anyhow::Result<()> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait()? {
                bail!("gateway exited with {status}:\n{}", self.log_text());
            }
            if ok(self) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("gateway not ready after {limit:?}:\n{}", self.log_text())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Process id (for signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// GET a path on the admin listener.
    pub fn admin_get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        http_get(self.admin, path)
    }

    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.listen.port())
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 GET (admin endpoints only), returning status and body.
pub fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("bad HTTP response")?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Call any `/pkg.Service/Method` with the `orders.v1` messages (the sample
/// backend answers every method of `orders.v1.Orders`; other paths are for
/// routing tests).
pub async fn unary_at(
    ch: Channel,
    path: &str,
    req: tonic::Request<OrdersRequest>,
) -> Result<tonic::Response<Reply>, tonic::Status> {
    let path = PathAndQuery::try_from(path)
        .map_err(|e| tonic::Status::invalid_argument(format!("path `{path}`: {e}")))?;
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    grpc.unary(req, path, ProstCodec::default()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_port_refuses_and_cannot_be_taken() {
        let closed = ClosedPort::new().unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], closed.port));
        for _ in 0..100 {
            let err = std::net::TcpStream::connect(addr).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
        }
        assert!(TcpListener::bind(addr).is_err());
    }
}
