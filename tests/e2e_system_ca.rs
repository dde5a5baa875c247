#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! "System roots" for upstream TLS come from `SSL_CERT_FILE`: the mechanism
//! the container image relies on (`ENV SSL_CERT_FILE=/etc/ssl/certs/
//! ca-certificates.crt` in the Dockerfile).
//!
//! An upstream with `tls:` but no `ca:` is verified by Pingora's connector
//! against OpenSSL's default verify paths. ztgate's OpenSSL is vendored with
//! OPENSSLDIR=/usr/local/ssl, so those paths are only right because Pingora
//! runs `openssl-probe` (which keeps an `SSL_CERT_FILE` that exists, and
//! otherwise looks in well-known places such as /etc/ssl) before calling
//! `SSL_CTX_set_default_verify_paths`, which reads `SSL_CERT_FILE`. These
//! tests run the real binary twice against a backend whose certificate comes
//! from a private CA: without the variable the handshake is refused, with it
//! pointing at that CA the call goes through. (The jwt filter's JWKS client
//! is reqwest + rustls with built-in roots and does not read the variable.)
//!
//! The gateway is spawned here rather than through `support::Setup` because
//! the test must control the child's environment.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::{eventually, eventually_blocking, WEB_ID};
use ztgate_testkit::backend::Backend;
use ztgate_testkit::client::{self, Target};
use ztgate_testkit::harness::{free_port, http_get};
use ztgate_testkit::pki::{Ca, Issued};
use ztgate_testkit::proto::Request;

/// A `ztgate run` child with a chosen environment, killed on drop.
struct Gateway {
    child: Child,
    listen: SocketAddr,
    log: PathBuf,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Everything one run needs: the downstream PKI, the private-CA backend and
/// the gateway in front of it.
struct Run {
    ca: Ca,
    web: Issued,
    gw: Gateway,
    _backend: Backend,
}

impl Run {
    /// Start a TLS backend whose certificate chains to a fresh private CA
    /// (written to `upstream-ca.pem`), and a gateway whose upstream has
    /// `tls: { sni: localhost }` and no `ca`. `ssl_cert_file`: the value of
    /// `SSL_CERT_FILE` for the gateway (`None`: unset), given the folder.
    async fn start(name: &str, ssl_cert_file: impl Fn(&Path) -> Option<PathBuf>) -> Self {
        let dir = support::workdir(name);

        let up_ca = Ca::new("private-upstream").unwrap();
        up_ca.write(&dir, "upstream-ca").unwrap();
        let up_server = up_ca.server().unwrap();
        let backend = Backend::start_tls(
            "private-ca-backend",
            &up_server.cert_pem,
            &up_server.key_pem,
            None,
        )
        .await
        .unwrap();

        let ca = Ca::new("acme.test").unwrap();
        ca.write(&dir, "ca").unwrap();
        ca.server().unwrap().write(&dir, "server").unwrap();
        let web = ca.svid(WEB_ID).unwrap();

        let (listen, admin) = (free_port().unwrap(), free_port().unwrap());
        let yaml = format!(
            "listener:\n  address: 127.0.0.1:{listen}\n  tls:\n    cert: server.pem\n    key: server-key.pem\n    client_ca: ca.pem\n    client_auth: require\n\
             admin:\n  address: 127.0.0.1:{admin}\n\
             server:\n  threads: 2\n  grace_period: 1s\n  shutdown_timeout: 1s\n  pid_file: ztgate.pid\n  upgrade_sock: upgrade.sock\n\
             pipeline: [sanitize, mtls, route]\n\
             mtls:\n  trust_domains: [acme.test]\n  allowed_ids: [\"spiffe://acme.test/ns/shop/**\"]\n\
             routes:\n  - name: orders\n    match: {{ grpc: \"orders.v1.Orders\" }}\n    select: [{{ upstream: orders }}]\n\
             upstreams:\n  orders:\n    backends: [\"127.0.0.1:{}\"]\n    connect_timeout: 2s\n    tls:\n      sni: localhost\n",
            backend.addr.port()
        );
        let config = dir.join("ztgate.yaml");
        std::fs::write(&config, yaml).unwrap();
        let log = dir.join("ztgate.log");
        let logf = std::fs::File::create(&log).unwrap();

        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ztgate"));
        cmd.arg("run")
            .arg("-c")
            .arg(&config)
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .stdin(Stdio::null())
            // Whatever the test runner's environment says, start from "unset".
            .env_remove("SSL_CERT_FILE")
            .env_remove("SSL_CERT_DIR");
        if let Some(file) = ssl_cert_file(&dir) {
            cmd.env("SSL_CERT_FILE", file);
        }
        let gw = Gateway {
            child: cmd.spawn().unwrap(),
            listen: ([127, 0, 0, 1], listen).into(),
            log,
        };
        wait_listening(&gw, ([127, 0, 0, 1], admin).into());
        Run {
            ca,
            web,
            gw,
            _backend: backend,
        }
    }

    async fn call(&self) -> Result<tonic::Response<ztgate_testkit::proto::Reply>, tonic::Status> {
        let target = Target::tls(
            format!("https://localhost:{}", self.gw.listen.port()),
            self.ca.cert_pem(),
        )
        .with_identity(&self.web.cert_pem, &self.web.key_pem);
        let ch = client::connect(&target).await.unwrap();
        client::orders(ch)
            .get(Request {
                payload: b"system-ca".to_vec(),
                ..Default::default()
            })
            .await
    }
}

/// Wait until the admin and proxy listeners accept (not `/readyz`: readiness
/// is not what is under test, and must not depend on the upstream).
fn wait_listening(gw: &Gateway, admin: SocketAddr) {
    let listening = eventually_blocking(Duration::from_secs(20), || {
        std::net::TcpStream::connect(gw.listen).is_ok()
            && matches!(http_get(admin, "/healthz"), Ok((200, _)))
    });
    assert!(
        listening,
        "gateway not listening after 20s:\n{}",
        gw.log_text()
    );
}

/// The call fails with UNAVAILABLE, and for the right reason: the gateway's
/// OpenSSL refused the backend's certificate (not a refused connection or a
/// timeout, which would make the contrast with the passing case meaningless).
async fn assert_refused_by_verification(run: &Run) {
    let err = run.call().await.unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::Unavailable,
        "{}\n--- gateway log ---\n{}",
        err.message(),
        run.gw.log_text()
    );
    // The log line is written as the call fails: wait for it.
    assert!(
        eventually(Duration::from_secs(5), async || run
            .gw
            .log_text()
            .contains("certificate verify failed"))
        .await,
        "no certificate verification failure in the gateway log:\n{}",
        run.gw.log_text()
    );
}

#[tokio::test]
async fn upstream_without_ca_refuses_a_private_ca_when_ssl_cert_file_is_unset() {
    let run = Run::start("system-ca-unset", |_| None).await;
    assert_refused_by_verification(&run).await;
}

#[tokio::test]
async fn upstream_without_ca_trusts_the_bundle_named_by_ssl_cert_file() {
    let run = Run::start("system-ca-set", |dir| Some(dir.join("upstream-ca.pem"))).await;
    let r = match run.call().await {
        Ok(r) => r,
        Err(e) => panic!("{e:?}\n--- gateway log ---\n{}", run.gw.log_text()),
    };
    assert_eq!(r.get_ref().backend, "private-ca-backend");
    assert_eq!(r.get_ref().payload, b"system-ca");
}

#[tokio::test]
async fn ssl_cert_file_naming_another_bundle_still_refuses_the_private_ca() {
    // The variable selects the trust store; it does not switch verification
    // off. A bundle with an unrelated CA must not make the backend trusted.
    let run = Run::start("system-ca-other", |dir| {
        let other = Ca::new("unrelated").unwrap();
        Some(other.write(dir, "unrelated-ca").unwrap())
    })
    .await;
    assert_refused_by_verification(&run).await;
}
