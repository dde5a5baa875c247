//! `ztgate probe URL`: an HTTP GET health probe for images without a shell
//! (Docker `HEALTHCHECK`, Kubernetes exec probes). Exit 0 on a 2xx answer.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

/// Parse `http://host:port/path` (plain HTTP only: the admin listener).
fn split(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("http://")?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    (!hostport.is_empty()).then_some((hostport, path))
}

pub fn probe(url: &str, timeout: Duration) -> ExitCode {
    match get(url, timeout) {
        Ok(status) if (200..300).contains(&status) => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("{url}: HTTP {status}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{url}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn get(url: &str, timeout: Duration) -> Result<u16, String> {
    let (hostport, path) = split(url).ok_or("expected http://HOST:PORT/PATH")?;
    let addr = hostport
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("address did not resolve")?;
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut head = [0u8; 64];
    let n = s.read(&mut head).map_err(|e| e.to_string())?;
    let line = String::from_utf8_lossy(head.get(..n).unwrap_or_default()).into_owned();
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| "not an HTTP response".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            split("http://127.0.0.1:9901/readyz"),
            Some(("127.0.0.1:9901", "/readyz"))
        );
        assert_eq!(
            split("http://localhost:9901"),
            Some(("localhost:9901", "/"))
        );
        assert_eq!(split("https://x/"), None);
        assert_eq!(split("http:///x"), None);
    }
}
