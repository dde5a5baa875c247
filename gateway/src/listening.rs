//! Whether this process itself listens on an address.
//!
//! Why: Pingora binds the gRPC listener in its own service task and, when
//! the port is taken, logs "is in use, will try again" and keeps retrying.
//! A test connection cannot tell our listener from another process's on the
//! same port (a pod with `hostNetwork`, an instance that has not exited), so
//! `/readyz` would turn green on a gateway that serves nothing. The kernel's
//! socket table can: the LISTEN entry for the address names a socket inode,
//! and one of our descriptors is that socket.

use std::net::SocketAddr;

use procfs::net::TcpState;
use procfs::process::{FDTarget, Process};

/// Whether this process holds a socket listening on exactly `addr`.
pub fn held(addr: SocketAddr) -> Result<bool, procfs::ProcError> {
    let table = match addr {
        SocketAddr::V4(_) => procfs::net::tcp()?,
        SocketAddr::V6(_) => procfs::net::tcp6()?,
    };
    let inodes: Vec<u64> = table
        .into_iter()
        .filter(|e| e.state == TcpState::Listen && e.local_address == addr)
        .map(|e| e.inode)
        .collect();
    if inodes.is_empty() {
        return Ok(false);
    }
    Ok(Process::myself()?
        .fd()?
        .flatten()
        .any(|fd| matches!(fd.target, FDTarget::Socket(inode) if inodes.contains(&inode))))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Another process on the port (it accepts connections, but it is not
    // us) is the end-to-end test `a_gateway_whose_port_is_taken_is_not_ready`.
    #[test]
    fn a_listener_is_ours_only_while_we_hold_it() {
        let ours = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = ours.local_addr().unwrap();
        assert!(held(addr).unwrap());
        let connected = std::net::TcpStream::connect(addr).unwrap();
        assert!(
            !held(connected.local_addr().unwrap()).unwrap(),
            "not a listener"
        );
        drop(ours);
        assert!(!held(addr).unwrap());
        // IPv6 is read from its own table.
        if let Ok(v6) = std::net::TcpListener::bind("[::1]:0") {
            assert!(held(v6.local_addr().unwrap()).unwrap());
        }
    }
}
