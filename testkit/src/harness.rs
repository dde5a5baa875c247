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

/// Whether process `pid` has a socket listening on `addr` (IPv4): one of
/// its descriptors is the inode of a LISTEN entry for `addr` in
/// `/proc/net/tcp`. Where there is no `/proc` (not Linux), whether `addr`
/// accepts a connection at all.
pub fn holds_listener(pid: u32, addr: SocketAddr) -> bool {
    let (Ok(fds), Ok(table), std::net::IpAddr::V4(ip)) = (
        std::fs::read_dir(format!("/proc/{pid}/fd")),
        std::fs::read_to_string("/proc/net/tcp"),
        addr.ip(),
    ) else {
        return std::net::TcpStream::connect(addr).is_ok();
    };
    // `/proc/net/tcp` writes the address as the in-memory u32, hex.
    let local = format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(ip.octets()),
        addr.port()
    );
    let listening: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(1) == Some(&local.as_str()) && f.get(3) == Some(&"0A"))
                .then(|| f.get(9).map(|i| format!("socket:[{i}]")))
                .flatten()
        })
        .collect();
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|target| listening.iter().any(|l| target.as_os_str() == l.as_str()))
    })
}

/// What [`GatewayProcess::start`] waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// `/readyz` answers 200.
    Ready,
    /// The admin and gRPC listeners accept connections (for gateways that
    /// are expected not to be ready).
    Listening,
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
        // the bind while `/readyz` already answers), and a test connecting
        // meanwhile reaches the other process or nothing.
        gw.wait_until(Duration::from_secs(20), |gw| {
            let up = match until {
                Until::Ready => matches!(http_get(gw.admin, "/readyz"), Ok((200, _))),
                Until::Listening => http_get(gw.admin, "/healthz").is_ok(),
            };
            up && holds_listener(gw.pid(), gw.listen)
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
    fn a_listener_is_held_by_the_process_that_bound_it() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        assert!(holds_listener(std::process::id(), addr));
        // Not by another process, even while it is bound here.
        let mut other = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        assert!(!holds_listener(other.id(), addr));
        other.kill().unwrap();
        other.wait().unwrap();
        drop(l);
        assert!(!holds_listener(std::process::id(), addr));
    }
}
