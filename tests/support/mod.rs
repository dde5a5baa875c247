//! Shared set-up for the end-to-end tests: a PKI made in the test, sample
//! backends, and a real `ztgate` process built by Cargo for this package.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use ztgate_testkit::backend::Backend;
use ztgate_testkit::client::{self, Target};
use ztgate_testkit::harness::{free_port, ClosedPort, GatewayProcess};
use ztgate_testkit::pki::{Ca, Issued, LeafSpec};

pub const WEB_ID: &str = "spiffe://acme.test/ns/shop/sa/web";

/// The public name of the gateway fleet (`:authority` of edge channels).
pub const EDGE: &str = "https://edge.acme.test";

// Re-exported for the test files; each e2e binary uses some of them.
#[allow(unused_imports)]
pub use ztgate_testkit::harness::Until;
#[allow(unused_imports)]
pub use ztgate_testkit::testdata;
#[allow(unused_imports)]
pub use ztgate_testkit::wait::{eventually, eventually_blocking};

/// A fresh folder per test.
pub fn workdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ztgate-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub struct Env {
    pub dir: PathBuf,
    pub ca: Ca,
    pub web: Issued,
    pub gw: GatewayProcess,
    pub backends: Vec<Backend>,
    /// `{DOWN}`, held closed for the test's life.
    pub down: ClosedPort,
}

/// The parts of a config a test varies.
pub struct Setup<'a> {
    pub name: &'a str,
    /// `pipeline:` and filter sections, YAML at top level.
    pub policy: &'a str,
    /// `routes:` and `upstreams:`; `{B0}`, `{B1}` … are backend ports and
    /// `{DOWN}` a closed port.
    pub routing: &'a str,
    pub backends: usize,
    pub client_auth: &'a str,
    /// Extra YAML under `listener:` (indented two spaces), e.g. trusted_proxies.
    pub listener_extra: &'a str,
    /// What to wait for (`Until::Listening`: a gateway that must not be ready).
    pub until: Until,
    /// The gRPC port, when the test chooses it (e.g. one it holds itself).
    pub listen_port: Option<u16>,
}

impl<'a> Setup<'a> {
    pub fn new(name: &'a str) -> Self {
        Self {
            name,
            policy: "pipeline: [sanitize, mtls, route]\nmtls:\n  trust_domains: [acme.test]\n  allowed_ids: [\"spiffe://acme.test/ns/shop/**\"]\n",
            routing: "routes:\n  - name: orders\n    match: { grpc: \"orders.v1.Orders\" }\n    select: [{ upstream: orders }]\n  - name: billing\n    match: { grpc: \"billing.v1.*\" }\n    select: [{ upstream: billing }]\nupstreams:\n  orders:\n    backends: [\"127.0.0.1:{B0}\"]\n  billing:\n    backends: [\"127.0.0.1:{DOWN}\"]\n    connect_timeout: 300ms\n",
            backends: 1,
            client_auth: "require",
            listener_extra: "",
            until: Until::Ready,
            listen_port: None,
        }
    }

    pub async fn start(self) -> Env {
        let dir = workdir(self.name);
        let ca = Ca::new("acme.test").unwrap();
        ca.write(&dir, "ca").unwrap();
        ca.server().unwrap().write(&dir, "server").unwrap();
        let web = ca.svid(WEB_ID).unwrap();
        let mut backends = Vec::new();
        let down = ClosedPort::new().unwrap();
        let mut routing = self.routing.replace("{DOWN}", &down.port.to_string());
        for i in 0..self.backends {
            let b = Backend::start(&format!("backend-{i}")).await.unwrap();
            routing = routing.replace(&format!("{{B{i}}}"), &b.addr.port().to_string());
            backends.push(b);
        }
        let listen = self.listen_port.unwrap_or_else(|| free_port().unwrap());
        let admin = free_port().unwrap();
        let yaml = format!(
            "listener:\n  address: 127.0.0.1:{listen}\n  tls:\n    cert: server.pem\n    key: server-key.pem\n    client_ca: ca.pem\n    client_auth: {}\n{}admin:\n  address: 127.0.0.1:{admin}\nserver:\n  threads: 2\n  grace_period: 1s\n  shutdown_timeout: 1s\n  pid_file: ztgate.pid\n  upgrade_sock: upgrade.sock\n{}{}",
            self.client_auth, self.listener_extra, self.policy, routing
        );
        let gw = start_gateway(&dir, &yaml, listen, admin, self.until);
        Env {
            dir,
            ca,
            web,
            gw,
            backends,
            down,
        }
    }
}

/// Start this package's `ztgate` on `config_yaml` in `dir`, listening on
/// 127.0.0.1 at `listen` (gRPC) and `admin`, once `until` holds.
pub fn start_gateway(
    dir: &std::path::Path,
    config_yaml: &str,
    listen: u16,
    admin: u16,
    until: Until,
) -> GatewayProcess {
    GatewayProcess::start(
        &PathBuf::from(env!("CARGO_BIN_EXE_ztgate")),
        dir,
        config_yaml,
        ([127, 0, 0, 1], listen).into(),
        ([127, 0, 0, 1], admin).into(),
        until,
    )
    .unwrap()
}

impl Env {
    pub fn target(&self) -> Target {
        Target::tls(self.gw.url(), self.ca.cert_pem())
    }

    /// `who`'s mTLS target at `url` (this gateway, a replica, a relay),
    /// trusting this set-up's CA.
    pub fn target_at(&self, url: impl Into<String>, who: &Issued) -> Target {
        Target::tls(url, self.ca.cert_pem()).with_identity(&who.cert_pem, &who.key_pem)
    }

    /// A channel to `gw` (this gateway or a replica) with `who`'s certificate.
    pub async fn channel_to(&self, gw: &GatewayProcess, who: &Issued) -> tonic::transport::Channel {
        client::connect(&self.target_at(gw.url(), who))
            .await
            .unwrap()
    }

    /// A channel with the given client certificate.
    pub async fn channel_as(&self, who: &Issued) -> tonic::transport::Channel {
        self.channel_to(&self.gw, who).await
    }

    /// Run `check` against this gateway, then SIGHUP it and run `check`
    /// again against it and against `replica`; `check` is told which round
    /// it is in, for its messages. A guarantee tested this way holds after a
    /// reload and on every replica.
    pub async fn first_then_reloaded_and_replica(
        &self,
        replica: &GatewayProcess,
        check: impl AsyncFn(&GatewayProcess, &'static str),
    ) {
        check(&self.gw, "first").await;
        sighup_reloaded(&self.gw).await;
        for gw in [&self.gw, replica] {
            check(gw, "after SIGHUP and on a replica").await;
        }
    }

    pub async fn web_channel(&self) -> tonic::transport::Channel {
        self.channel_as(&self.web).await
    }

    /// A second gateway process with this one's config (and files), on
    /// ports of its own: a replica behind the same load balancer. Its folder
    /// is `dir/<name>`, with copies of every file of `dir`.
    pub fn replica(&self, name: &str) -> GatewayProcess {
        let sub = self.dir.join(name);
        std::fs::create_dir_all(&sub).unwrap();
        for entry in std::fs::read_dir(&self.dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_file() && p.extension().is_some_and(|e| e == "pem" || e == "json") {
                std::fs::copy(&p, sub.join(p.file_name().unwrap())).unwrap();
            }
        }
        let (listen, admin) = (free_port().unwrap(), free_port().unwrap());
        let text = std::fs::read_to_string(&self.gw.config).unwrap();
        let yaml = text
            .replace(
                &format!("address: 127.0.0.1:{}", self.gw.listen.port()),
                &format!("address: 127.0.0.1:{listen}"),
            )
            .replace(
                &format!("address: 127.0.0.1:{}", self.gw.admin.port()),
                &format!("address: 127.0.0.1:{admin}"),
            );
        start_gateway(&sub, &yaml, listen, admin, Until::Ready)
    }

    /// A channel to `gw` (this gateway or a replica) as the web workload,
    /// sending `:authority` [`EDGE`] whichever replica it reaches, as a
    /// client behind a load balancer does (DPoP binds a proof to it).
    pub async fn edge_channel_to(&self, gw: &GatewayProcess) -> tonic::transport::Channel {
        use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.ca.cert_pem()))
            .domain_name("localhost")
            .identity(Identity::from_pem(&self.web.cert_pem, &self.web.key_pem));
        Endpoint::from_shared(gw.url())
            .unwrap()
            .origin(EDGE.parse().unwrap())
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(30))
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    pub fn svid(&self, id: &str) -> Issued {
        self.ca.svid(id).unwrap()
    }

    pub fn leaf(&self, spec: LeafSpec) -> Issued {
        self.ca.issue(&spec).unwrap()
    }

    /// The value of one metric series from `/metrics` now (0 when absent).
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_of(&self.gw, name, labels)
    }

    /// The value of one metric series once it is at least `at_least` (see
    /// [`metric_reaching`]).
    pub async fn metric_reaching(&self, name: &str, labels: &[(&str, &str)], at_least: f64) -> f64 {
        metric_reaching(&self.gw, name, labels, at_least).await
    }
}

/// The value of one metric series of `gw` now (0 when absent).
pub fn metric_of(gw: &GatewayProcess, name: &str, labels: &[(&str, &str)]) -> f64 {
    let (_, text) = gw.admin_get("/metrics").unwrap();
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The value of one metric series of `gw` once it is at least `at_least`,
/// or whatever it is after 5 s (the caller's assertion then says what is
/// wrong). A request is counted in Pingora's logging phase, right after its
/// response went out, which is when the client returned: a test that has
/// its answers waits for their count instead of sleeping for it.
pub async fn metric_reaching(
    gw: &GatewayProcess,
    name: &str,
    labels: &[(&str, &str)],
    at_least: f64,
) -> f64 {
    eventually(std::time::Duration::from_secs(5), async || {
        metric_of(gw, name, labels) >= at_least
    })
    .await;
    metric_of(gw, name, labels)
}

/// SIGHUP `gw` and wait until the reload it triggers is in service (one
/// more `ztgate_config_reloads_total{result="ok"}`).
pub async fn sighup_reloaded(gw: &GatewayProcess) {
    reloaded_after(gw, "SIGHUP", || signal(gw.pid(), "-HUP")).await;
}

/// Rewrite `gw`'s config file with `edit` — staged and renamed into place,
/// as a config tool or a ConfigMap update does — and wait until the file
/// watcher alone, with no signal, has the new config in service.
pub async fn edit_config_reloaded(gw: &GatewayProcess, edit: impl FnOnce(String) -> String) {
    reloaded_after(gw, "the watched config file", || {
        let text = std::fs::read_to_string(&gw.config).unwrap();
        let staged = gw.config.with_extension("yaml.edit");
        std::fs::write(&staged, edit(text)).unwrap();
        std::fs::rename(&staged, &gw.config).unwrap();
    })
    .await;
}

/// Do `trigger` and wait for one more successful reload of `gw`.
async fn reloaded_after(gw: &GatewayProcess, what: &str, trigger: impl FnOnce()) {
    let ok = [("result", "ok")];
    let before = metric_of(gw, "ztgate_config_reloads_total", &ok);
    trigger();
    let reloaded = eventually(std::time::Duration::from_secs(15), async || {
        metric_of(gw, "ztgate_config_reloads_total", &ok) > before
    })
    .await;
    assert!(reloaded, "{what} did not reload:\n{}", gw.log_text());
}

/// Whether a call with this target fails before reaching the backend
/// because its client certificate was refused: in the TLS handshake, or
/// (a cold OCSP cache) by the connection being closed before its first
/// request. The refusal arrives as a transport error (broken pipe, closed
/// connection), never as a gRPC status from the gateway or the backend.
pub async fn refused(t: &Target) -> bool {
    match client::connect(t).await {
        Err(_) => true,
        Ok(ch) => match client::orders(ch)
            .get(ztgate_testkit::proto::Request::default())
            .await
        {
            Ok(_) => false,
            Err(s) => {
                matches!(
                    s.code(),
                    tonic::Code::Unknown | tonic::Code::Unavailable | tonic::Code::Cancelled
                ) && s.metadata().get("x-request-id").is_none()
                    && s.message().contains("transport error")
                        | s.message().contains("connection closed")
                        | s.message().contains("canceled")
            }
        },
    }
}

/// One unary `orders.v1.Orders/Get` through the gateway with curl (an
/// OpenSSL client that sends the request as one DATA frame with END_STREAM
/// and never enforces `grpc-timeout` itself). Returns curl's output with
/// `-i` (status line and headers, then the body).
pub async fn curl_get(
    env: &Env,
    req: &ztgate_testkit::proto::Request,
    extra: &[&str],
) -> std::process::Output {
    use prost::Message;
    let body = req.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    let file = env.dir.join(format!("req-{}.bin", rand_suffix()));
    std::fs::write(&file, frame).unwrap();
    curl_grpc(env, &format!("@{}", file.display()), extra).await
}

/// A gRPC call that the gateway refuses, with curl and no request message.
/// A refusal is answered without reading the request body, and the stream
/// then reset with NO_ERROR (RFC 9113 §8.1, as gRPC servers do); curl 7.88
/// discards such an answer when it arrives while curl still has a body to
/// send (≈ 1 call in 10 on loopback), where gRPC clients keep it.
pub async fn curl_refused(env: &Env, extra: &[&str]) -> std::process::Output {
    curl_grpc(env, "", extra).await
}

/// curl with the web workload's certificate, `--data-binary data` as a
/// gRPC POST to `orders.v1.Orders/Get`.
async fn curl_grpc(env: &Env, data: &str, extra: &[&str]) -> std::process::Output {
    let dir = &env.dir;
    let (cert, key) = env.web.write(dir, "curl-client").unwrap();
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "--http2", "--cacert"])
        .arg(dir.join("ca.pem"))
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .args([
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            "--data-binary",
            data,
        ])
        .args(extra)
        .arg(format!("{}/orders.v1.Orders/Get", env.gw.url()));
    // curl blocks: run it off the runtime, where the backends live.
    tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("curl is installed")
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// What `openssl s_client` prints for a handshake with the gateway as the
/// web workload (blocking: call it from `spawn_blocking`).
pub fn s_client(port: u16, dir: &std::path::Path) -> String {
    let out = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            "localhost",
            "-CAfile",
        ])
        .arg(dir.join("ca.pem"))
        .arg("-cert")
        .arg(dir.join("web.pem"))
        .arg("-key")
        .arg(dir.join("web-key.pem"))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl is installed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Send `sig` (e.g. `-HUP`, `-USR1`, `-TERM`) to `pid`.
pub fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success(), "kill {sig} {pid}");
}

/// Assert that `err` is the gateway's refusal: gRPC `code`, a message that
/// starts with the machine-readable `reason` (PRODUCT.md's error shape puts
/// it first), and, when `www_authenticate` is given, exactly that challenge
/// in `www-authenticate`. One helper so that every test checks a denial the
/// same way, and a change of that shape is made once.
#[track_caller]
/// A call with `authorization: Bearer <token>`.
pub fn bearer(token: &str) -> tonic::Request<ztgate_testkit::proto::Request> {
    let mut r = tonic::Request::new(ztgate_testkit::proto::Request::default());
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

pub fn assert_denied(
    err: &tonic::Status,
    code: tonic::Code,
    reason: &str,
    www_authenticate: Option<&str>,
) {
    assert_eq!(err.code(), code, "{}", err.message());
    assert!(err.message().starts_with(reason), "{err:?}");
    if let Some(want) = www_authenticate {
        assert_eq!(
            err.metadata()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok()),
            Some(want),
            "{err:?}"
        );
    }
}
