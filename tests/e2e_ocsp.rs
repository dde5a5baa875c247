#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! OCSP, end to end (issue 15): client certificates checked against a real
//! responder (OpenSSL's `openssl ocsp`, `ztgate_testkit::ocsp`) in `soft`
//! and `hard` mode, with `client_auth: require` and `optional`, after a
//! SIGHUP and on a second replica; and the server certificate's response
//! stapled, as `openssl s_client -status` sees it.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::{refused, sighup_reloaded, Setup};
use ztgate_testkit::backend::Backend;
use ztgate_testkit::client::{self, Target};
use ztgate_testkit::harness::{free_port, Until};
use ztgate_testkit::ocsp::{serial_hex, Responder, Signer};
use ztgate_testkit::pki::{Ca, Issued, LeafSpec};
use ztgate_testkit::proto::Request;

/// A client SVID of `ca` whose AIA names `responder`.
fn svid(ca: &Ca, name: &str, responder: &Responder) -> Issued {
    ca.issue(&LeafSpec {
        common_name: name.into(),
        uris: vec![format!("spiffe://acme.test/ns/shop/sa/{name}")],
        ocsp_url: Some(responder.url()),
        ..LeafSpec::default()
    })
    .unwrap()
}

/// The gateway of `setup`, and an OCSP responder for its CA signing with
/// `signer`.
async fn with_responder(setup: Setup<'_>, signer: Signer<'_>) -> (support::Env, Responder) {
    let env = setup.start().await;
    let responder = Responder::start(&env.dir.join("responder"), &env.ca, signer)
        .await
        .unwrap();
    (env, responder)
}

fn at(url: &str, ca: &Ca, who: &Issued) -> Target {
    Target::tls(url.to_owned(), ca.cert_pem()).with_identity(&who.cert_pem, &who.key_pem)
}

/// good accepted, revoked refused in both modes; unknown and responder
/// down refused only in `hard`; steady traffic answered from the cache
/// (no responder round trip), which outlives a SIGHUP; a second replica
/// reading the same config holds the same line.
// Multi-threaded: the responder serves from this runtime while the test
// blocks on processes (`s_client`, a replica's start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_and_hard_mode_with_client_auth_require() {
    for mode in ["soft", "hard"] {
        let auth = format!("require\n    ocsp: {{ mode: {mode}, timeout: 1s }}");
        let mut setup = Setup::new("ocsp-require");
        setup.client_auth = &auth;
        let (env, responder) = with_responder(setup, Signer::Delegated).await;
        let (good, revoked, unknown) = (
            svid(&env.ca, "good", &responder),
            svid(&env.ca, "revoked", &responder),
            svid(&env.ca, "unknown", &responder),
        );
        responder.good(&good).unwrap();
        responder.revoke(&revoked).unwrap();
        let url = env.gw.url();
        let as_ = |who: &Issued| at(&url, &env.ca, who);

        assert!(!refused(&as_(&good)).await, "{mode}: good");
        assert!(refused(&as_(&revoked)).await, "{mode}: revoked");
        assert_eq!(
            refused(&as_(&unknown)).await,
            mode == "hard",
            "{mode}: unknown"
        );
        // A certificate without an OCSP responder (the web SVID).
        assert_eq!(
            refused(&as_(&env.web)).await,
            mode == "hard",
            "{mode}: no responder"
        );
        // Steady traffic: answered from the cache, in the handshake (a
        // cached revocation fails it) and after it.
        let asked = responder.requests();
        for _ in 0..3 {
            assert!(!refused(&as_(&good)).await, "{mode}: good again");
            assert!(refused(&as_(&revoked)).await, "{mode}: revoked again");
        }
        assert_eq!(
            responder.requests(),
            asked,
            "{mode}: the cache was not used"
        );
        assert!(
            env.metric(
                "ztgate_ocsp_checks_total",
                &[("result", "good"), ("cached", "true")]
            ) >= 3.0
        );
        assert!(
            env.metric(
                "ztgate_client_cert_refusals_total",
                &[("reason", "revoked")]
            ) >= 4.0
        );

        // A second replica with the same config asks the responder itself.
        let replica = env.replica("b");
        let replica_url = replica.url();
        assert!(!refused(&at(&replica_url, &env.ca, &good)).await, "{mode}");
        assert!(
            refused(&at(&replica_url, &env.ca, &revoked)).await,
            "{mode}"
        );
        drop(replica);

        // The responder goes down: what is cached still holds (across a
        // SIGHUP too: the cache is the process's), a certificate not seen
        // before is let in by `soft` only.
        responder.stop();
        let fresh = svid(&env.ca, "fresh", &responder);
        responder.good(&fresh).unwrap();
        sighup_reloaded(&env.gw).await;
        assert!(
            !refused(&as_(&good)).await,
            "{mode}: cached good, responder down"
        );
        assert!(refused(&as_(&revoked)).await, "{mode}: cached revoked");
        assert_eq!(
            refused(&as_(&fresh)).await,
            mode == "hard",
            "{mode}: fresh, responder down"
        );
        assert!(
            env.metric(
                "ztgate_ocsp_checks_total",
                &[("result", "error"), ("cached", "false")]
            ) >= 1.0
        );
        // Back up: the fresh certificate gets its answer.
        responder.resume().await.unwrap();
        assert!(
            !refused(&as_(&fresh)).await,
            "{mode}: fresh, responder back"
        );
        if mode == "hard" {
            assert!(
                env.metric(
                    "ztgate_client_cert_refusals_total",
                    &[("reason", "ocsp_unavailable")]
                ) >= 3.0
            );
        }
    }
}

/// An answer is cached until its nextUpdate or `max_cache_age`: a
/// revocation after a good answer was cached is honoured once it expires.
// Multi-threaded: the responder serves from this runtime while the test
// blocks on processes (`s_client`, a replica's start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_after_a_cached_answer_applies_when_it_expires() {
    let auth = "require\n    ocsp: { mode: soft, max_cache_age: 1s }";
    let mut setup = Setup::new("ocsp-expiry");
    setup.client_auth = auth;
    let (env, responder) = with_responder(setup, Signer::Ca).await;
    let later = svid(&env.ca, "later", &responder);
    responder.good(&later).unwrap();
    let t = env.target().with_identity(&later.cert_pem, &later.key_pem);
    assert!(!refused(&t).await);
    let asked = responder.requests();
    assert!(asked >= 1);
    responder.revoke(&later).unwrap();
    let applied = support::eventually(Duration::from_secs(15), async || refused(&t).await).await;
    assert!(
        applied,
        "the revocation was not seen after the cache expired"
    );
    assert!(responder.requests() > asked);
}

/// `client_auth: optional`: a revoked certificate, or in `hard` mode one
/// with no answer, counts as no certificate; the mtls filter then says
/// `client_cert_missing`.
// Multi-threaded: the responder serves from this runtime while the test
// blocks on processes (`s_client`, a replica's start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_client_auth_treats_a_refused_certificate_as_none() {
    let auth = "optional\n    ocsp: { mode: hard, timeout: 1s }";
    let mut setup = Setup::new("ocsp-optional");
    setup.client_auth = auth;
    // `mtls` last: the refusal is the handshake's, whatever the order.
    setup.policy = "pipeline: [route, sanitize, mtls]\nmtls:\n  trust_domains: [acme.test]\n  allowed_ids: [\"spiffe://acme.test/ns/shop/**\"]\n";
    let (env, responder) = with_responder(setup, Signer::Delegated).await;
    let (good, revoked) = (
        svid(&env.ca, "good", &responder),
        svid(&env.ca, "revoked", &responder),
    );
    responder.good(&good).unwrap();
    responder.revoke(&revoked).unwrap();
    let call = |who: Issued| {
        let t = env.target().with_identity(&who.cert_pem, &who.key_pem);
        async move {
            let ch = client::connect(&t).await.unwrap();
            client::orders(ch).get(Request::default()).await
        }
    };
    call(good.clone()).await.unwrap();
    for round in ["cold", "cached"] {
        let err = call(revoked.clone()).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{round}: {err:?}");
        assert!(
            err.message().starts_with("client_cert_missing"),
            "{round}: {err:?}"
        );
    }
    responder.stop();
    let fresh = svid(&env.ca, "fresh", &responder);
    let err = call(fresh).await.unwrap_err();
    assert!(err.message().starts_with("client_cert_missing"), "{err:?}");
    call(good).await.unwrap();
}

/// One `openssl s_client` connection as `who` (TLS 1.3), offering the
/// session in `sess_in`, keeping its session in `sess_out`, then one
/// HTTP/1.1 request (any answer means the connection was served). Returns
/// (resumed, served, output). Blocking.
fn s_client_session(
    port: u16,
    dir: &Path,
    who: &Issued,
    sess_in: Option<&Path>,
    sess_out: Option<&Path>,
) -> (bool, bool, String) {
    use std::io::{Read, Write};
    let (cert, key) = who.write(dir, "session-client").unwrap();
    let mut cmd = std::process::Command::new("openssl");
    cmd.args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-servername", "localhost", "-ign_eof", "-tls1_3", "-CAfile"])
        .arg(dir.join("ca.pem"))
        .arg("-cert")
        .arg(cert)
        .arg("-key")
        .arg(key);
    if let Some(f) = sess_in {
        cmd.arg("-sess_in").arg(f);
    }
    if let Some(f) = sess_out {
        cmd.arg("-sess_out").arg(f);
    }
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // The gateway may have closed the connection already.
    let _ = stdin.write_all(
        b"GET /orders.v1.Orders/Get HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    drop(stdin);
    let mut out = String::new();
    // s_client exits when the gateway closes (after its answer, or at once).
    let _ = child.stdout.take().unwrap().read_to_string(&mut out);
    let _ = child.wait();
    let resumed = out.lines().any(|l| l.starts_with("Reused, "));
    let served = out.lines().any(|l| l.starts_with("HTTP/1.1 "));
    (resumed, served, out)
}

/// A TLS session resumed after its certificate was revoked is refused: a
/// resumption skips certificate verification, not the OCSP check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_session_of_a_revoked_certificate_is_refused() {
    let auth = "require\n    ocsp: { mode: hard, max_cache_age: 1s }";
    let mut setup = Setup::new("ocsp-resumption");
    setup.client_auth = auth;
    let (env, responder) = with_responder(setup, Signer::Delegated).await;
    let who = svid(&env.ca, "resumer", &responder);
    responder.good(&who).unwrap();
    let (port, dir, client) = (env.gw.listen.port(), env.dir.clone(), who.clone());
    let sess = dir.join("resumer.sess");
    let run = move |sess_in: Option<PathBuf>, sess_out: Option<PathBuf>| {
        let (dir, who) = (dir.clone(), client.clone());
        tokio::task::spawn_blocking(move || {
            s_client_session(port, &dir, &who, sess_in.as_deref(), sess_out.as_deref())
        })
    };
    // A full handshake that keeps its session (the TLS 1.3 ticket comes
    // after the handshake: retried until s_client wrote it).
    let kept = support::eventually(Duration::from_secs(10), async || {
        let _ = std::fs::remove_file(&sess);
        let (resumed, served, out) = run(None, Some(sess.clone())).await.unwrap();
        assert!(served && !resumed, "{out}");
        sess.exists()
    })
    .await;
    assert!(kept, "s_client kept no session");
    let (resumed, served, out) = run(Some(sess.clone()), None).await.unwrap();
    assert!(resumed && served, "a good certificate resumes: {out}");

    responder.revoke(&who).unwrap();
    let refused_on_resumption = support::eventually(Duration::from_secs(15), async || {
        let (resumed, served, _) = run(Some(sess.clone()), None).await.unwrap();
        resumed && !served
    })
    .await;
    assert!(
        refused_on_resumption,
        "a revoked certificate's session still serves: {}",
        run(Some(sess.clone()), None).await.unwrap().2
    );
}

/// `check` names the key of a bad OCSP setting.
#[tokio::test]
async fn check_reports_bad_ocsp_settings() {
    let dir = support::workdir("ocsp-check");
    let ca = Ca::new("acme.test").unwrap();
    ca.write(&dir, "ca").unwrap();
    // No AIA in the server certificate, and a zero timeout.
    ca.server().unwrap().write(&dir, "server").unwrap();
    let yaml = r#"listener:
  address: 127.0.0.1:8443
  tls:
    cert: server.pem
    key: server-key.pem
    client_ca: ca.pem
    ocsp: { mode: hard, timeout: 0s, max_cache_age: 1h }
    ocsp_stapling: true
pipeline: [sanitize, mtls, route]
routes:
  - name: orders
    match: { grpc: "orders.v1.Orders" }
    select: [{ upstream: orders }]
upstreams:
  orders:
    backends: ["127.0.0.1:50051"]
"#;
    let config = dir.join("ztgate.yaml");
    std::fs::write(&config, yaml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ztgate"))
        .arg("check")
        .arg("-c")
        .arg(&config)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("listener.tls.ocsp.timeout: must be more than 0s"),
        "{text}"
    );
    assert!(text.contains("listener.tls.ocsp_stapling"), "{text}");
    assert!(text.contains("needs the issuer"), "{text}");
    // With the issuer after it, the missing AIA is what is wrong; a
    // timeout longer than a handshake may wait.
    std::fs::write(&config, yaml.replace("timeout: 0s", "timeout: 31s")).unwrap();
    let server = ca.server().unwrap();
    std::fs::write(
        dir.join("server.pem"),
        format!("{}{}", server.cert_pem, ca.cert_pem()),
    )
    .unwrap();
    std::fs::write(dir.join("server-key.pem"), &server.key_pem).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ztgate"))
        .arg("check")
        .arg("-c")
        .arg(&config)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("names no OCSP responder"), "{text}");
    assert!(
        text.contains("listener.tls.ocsp.timeout: must be at most 30s"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A server certificate whose AIA names `responder`, written with its CA
/// after it (the issuer stapling needs) as `server.pem`.
fn server_cert(dir: &Path, ca: &Ca, responder: &Responder) -> Issued {
    let cert = ca
        .issue(&LeafSpec {
            common_name: "localhost".into(),
            dns: vec!["localhost".into()],
            ocsp_url: Some(responder.url()),
            ..LeafSpec::default()
        })
        .unwrap();
    // Key first: the reloader sees the pair change once the cert lands.
    std::fs::write(dir.join("server-key.pem"), &cert.key_pem).unwrap();
    std::fs::write(
        dir.join("server.pem"),
        format!("{}{}", cert.cert_pem, ca.cert_pem()),
    )
    .unwrap();
    cert
}

/// What `openssl s_client -status` says about the stapled response.
fn s_client_status(port: u16, dir: &Path, client: &Issued) -> String {
    let (cert, key) = client.write(dir, "s-client").unwrap();
    let out = std::process::Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-servername", "localhost", "-status"])
        .arg("-CAfile")
        .arg(dir.join("ca.pem"))
        .arg("-cert")
        .arg(cert)
        .arg("-key")
        .arg(key)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `listener.tls.ocsp_stapling: true`: the response is fetched in the
/// background and stapled (`openssl s_client -status` sees it, status
/// good, for this certificate's serial); the responder down, the last
/// good response is still stapled; a rotated certificate gets its own.
// Multi-threaded: the responder serves from this runtime while the test
// blocks on processes (`s_client`, a replica's start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_certificate_is_stapled() {
    let dir: PathBuf = support::workdir("ocsp-stapling");
    let ca = Ca::new("acme.test").unwrap();
    ca.write(&dir, "ca").unwrap();
    let responder = Responder::start(&dir.join("responder"), &ca, Signer::Delegated)
        .await
        .unwrap();
    let server = server_cert(&dir, &ca, &responder);
    responder.good(&server).unwrap();
    let backend = Backend::start("stapling").await.unwrap();
    let (listen, admin) = (free_port().unwrap(), free_port().unwrap());
    let yaml = format!(
        "listener:\n  address: 127.0.0.1:{listen}\n  tls:\n    cert: server.pem\n    key: server-key.pem\n    client_ca: ca.pem\n    ocsp_stapling: true\nadmin:\n  address: 127.0.0.1:{admin}\nserver:\n  threads: 2\n  grace_period: 1s\n  shutdown_timeout: 1s\n  pid_file: ztgate.pid\n  upgrade_sock: upgrade.sock\npipeline: [sanitize, mtls, route]\nmtls:\n  trust_domains: [acme.test]\nroutes:\n  - name: orders\n    match: {{ grpc: \"orders.v1.Orders\" }}\n    select: [{{ upstream: orders }}]\nupstreams:\n  orders:\n    backends: [\"127.0.0.1:{}\"]\n",
        backend.addr.port()
    );
    let gw = support::start_gateway(&dir, &yaml, listen, admin, Until::Ready);
    let client = ca.svid(support::WEB_ID).unwrap();
    let staple_for = |cert: &Issued| {
        let serial = serial_hex(&cert.serial);
        let (dir, client) = (dir.clone(), client.clone());
        move || {
            let out = s_client_status(listen, &dir, &client);
            out.contains("OCSP Response Status: successful")
                && out.contains("Cert Status: good")
                && out.contains(&format!("Serial Number: {serial}"))
        }
    };
    assert!(
        support::eventually_blocking(Duration::from_secs(15), staple_for(&server)),
        "no staple: {}\n{}",
        s_client_status(listen, &dir, &client),
        gw.log_text()
    );
    assert!(
        support::metric_of(&gw, "ztgate_ocsp_staple_refresh_total", &[("result", "ok")]) >= 1.0
    );
    let (_, metrics) = gw.admin_get("/metrics").unwrap();
    let next_update: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ztgate_ocsp_staple_next_update_timestamp_seconds "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    // The responder's -ndays 1.
    assert!(next_update > now + 3600.0, "{next_update} vs {now}");

    // The responder down: the last good response is still stapled, also
    // after a SIGHUP (the staple belongs to the certificate, not to the
    // config generation).
    responder.stop();
    assert!(staple_for(&server)(), "the last good staple was not served");
    sighup_reloaded(&gw).await;
    assert!(staple_for(&server)(), "the staple was lost on reload");

    // Rotation: the new certificate gets a staple of its own.
    responder.resume().await.unwrap();
    let rotated = server_cert(&dir, &ca, &responder);
    responder.good(&rotated).unwrap();
    assert!(
        support::eventually_blocking(Duration::from_secs(20), staple_for(&rotated)),
        "no staple for the rotated certificate: {}",
        s_client_status(listen, &dir, &client)
    );
    drop(gw);
    let _ = std::fs::remove_dir_all(&dir);
}
