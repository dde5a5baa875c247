//! A real, throw-away `redis-server` for the shared-state tests.
//!
//! One server per test, on a free loopback port, without persistence
//! (`--save "" --appendonly no`), so tests never share keys or leave files.
//! [`RedisServer::pause`] / [`RedisServer::resume`] (SIGSTOP / SIGCONT)
//! simulate a hung server whose connections stay open but never answer;
//! [`RedisServer::stop`] / [`RedisServer::restart`] an outage and a
//! recovery on the same port.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::harness::free_port;

/// How long [`RedisServer::start`] waits for `PING` to be answered.
const START_LIMIT: Duration = Duration::from_secs(10);

/// A running `redis-server`, killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    args: Vec<String>,
    paused: bool,
}

impl RedisServer {
    /// Start `redis-server` on a free loopback port and wait until it
    /// answers `PING`.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(&[])
    }

    /// [`RedisServer::start`] with extra server arguments (e.g.
    /// `["--requirepass", "pw"]`). `PING` is still how readiness is seen
    /// (a server with a password answers it with `-NOAUTH`, which is an
    /// answer).
    pub fn start_with(args: &[&str]) -> anyhow::Result<Self> {
        let mut server = Self {
            child: None,
            port: free_port()?,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            paused: false,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let child = Command::new("redis-server")
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "redis-server not found: run scripts/setup.sh (it installs the `redis-server` package)"
            ),
            Err(e) => return Err(e).context("spawn redis-server"),
        };
        self.child = Some(child);
        self.paused = false;
        let start = Instant::now();
        while start.elapsed() < START_LIMIT {
            if let Some(c) = self.child.as_mut() {
                if let Some(status) = c.try_wait()? {
                    self.child = None;
                    bail!("redis-server on port {} exited with {status}", self.port);
                }
            }
            if ping(self.addr()) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        bail!(
            "redis-server on port {} did not answer PING within {START_LIMIT:?}",
            self.port
        )
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kill the server (SIGKILL: an outage, not a clean shutdown) and wait
    /// for it to exit. The port is free again afterwards.
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Start the server again on the same port (empty: nothing persisted).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()
    }

    /// Freeze the server (SIGSTOP): connections stay open, nothing is
    /// answered, new connections are accepted by the kernel but not served.
    pub fn pause(&mut self) -> anyhow::Result<()> {
        self.signal("STOP")?;
        self.paused = true;
        Ok(())
    }

    /// Thaw a paused server (SIGCONT).
    pub fn resume(&mut self) -> anyhow::Result<()> {
        self.signal("CONT")?;
        self.paused = false;
        Ok(())
    }

    fn signal(&self, sig: &str) -> anyhow::Result<()> {
        let Some(pid) = self.pid() else {
            bail!("redis-server on port {} is not running", self.port);
        };
        // `sh`'s `kill` builtin: no extra crate, no unsafe, and `sh` is
        // everywhere `redis-server` is.
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -{sig} {pid}"))
            .status()
            .context("run kill")?;
        if !status.success() {
            bail!("kill -{sig} {pid} failed with {status}");
        }
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGKILL also ends a stopped process.
            let _ = c.kill();
            let _ = c.wait();
        }
        self.paused = false;
    }

    /// Whether [`RedisServer::pause`] is in effect.
    pub fn is_paused(&self) -> bool {
        self.paused
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether something on `addr` answers a raw `PING` (any RESP reply).
fn ping(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    if s.set_read_timeout(Some(Duration::from_millis(500)))
        .is_err()
        || s.write_all(b"PING\r\n").is_err()
    {
        return false;
    }
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(n) if n > 0 => matches!(buf[0], b'+' | b'-'),
        _ => false,
    }
}
