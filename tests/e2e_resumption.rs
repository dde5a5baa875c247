#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! Changes at run time, TLS resumption: "A TLS session resumed after a
//! reload is held to the trust material in force now: a client whose CA was
//! removed cannot resume its way back in."
//!
//! `openssl s_client -sess_out` keeps a session, `-sess_in` offers it again
//! (TLS 1.3 ticket, TLS 1.2 ticket, TLS 1.2 session id). A session resumes
//! while the client trust is unchanged, also across a server certificate
//! rotation; once the client's CA is removed from `listener.tls.client_ca`
//! it does not, and the handshake with the old client certificate fails.

mod support;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{eventually, eventually_blocking, Env, Setup};
use ztgate_testkit::pki::{Ca, LeafSpec};

/// How a client offers to resume.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// A TLS 1.3 PSK from a NewSessionTicket.
    Tls13Ticket,
    /// A TLS 1.2 session ticket (RFC 5077).
    Tls12Ticket,
    /// A TLS 1.2 session id from the server's cache.
    Tls12SessionId,
}

impl Kind {
    fn args(self) -> &'static [&'static str] {
        match self {
            Kind::Tls13Ticket => &["-tls1_3"],
            Kind::Tls12Ticket => &["-tls1_2"],
            Kind::Tls12SessionId => &["-tls1_2", "-no_ticket"],
        }
    }

    /// Whether the gateway issues a ticket for this kind of session.
    fn ticket(self) -> bool {
        !matches!(self, Kind::Tls12SessionId)
    }

    fn file(self, dir: &Path) -> PathBuf {
        dir.join(format!("{self:?}.sess"))
    }
}

/// What one `s_client` connection showed.
#[derive(Debug)]
struct Seen {
    /// The handshake resumed a session ("Reused, TLSv1.x").
    reused: bool,
    /// A request went through: the gateway answered it over this connection.
    served: bool,
    /// The subject of the server certificate, as printed.
    subject: String,
    text: String,
}

/// One connection as the web workload: a handshake (offering `sess_in`,
/// keeping the session in `sess_out`), then one HTTP/1.1 request. The
/// request is sent with `Connection: close` and `-ign_eof`, so s_client
/// reads until the gateway closes: every record the gateway sent, the TLS
/// 1.3 NewSessionTicket (which precedes the response) included, has been
/// read when it exits. Blocking: call it from `spawn_blocking`.
fn connect(
    port: u16,
    dir: &Path,
    kind: Kind,
    sess_in: Option<&Path>,
    sess_out: Option<&Path>,
) -> Seen {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-servername", "localhost", "-ign_eof", "-CAfile"])
        .arg(dir.join("server-ca.pem"))
        .arg("-cert")
        .arg(dir.join("web.pem"))
        .arg("-key")
        .arg(dir.join("web-key.pem"))
        .args(kind.args());
    if let Some(f) = sess_in {
        cmd.arg("-sess_in").arg(f);
    }
    if let Some(f) = sess_out {
        cmd.arg("-sess_out").arg(f);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl is installed");
    let mut stdin = child.stdin.take().unwrap();
    // The gateway may have refused the handshake and closed already.
    let _ = stdin.write_all(
        b"GET /orders.v1.Orders/Get HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    drop(stdin);
    // Read both pipes off this thread so a full pipe never blocks s_client.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    // A safety net, not a timing assumption: the gateway closes after its
    // answer or its alert well within this.
    if !eventually_blocking(Duration::from_secs(20), || {
        child.try_wait().unwrap().is_some()
    }) {
        let _ = child.kill();
        let _ = child.wait();
        panic!("s_client did not finish: {}", out.join().unwrap());
    }
    let text = format!("{}\n{}", out.join().unwrap(), err.join().unwrap());
    Seen {
        reused: text.lines().any(|l| l.starts_with("Reused, ")),
        served: text.lines().any(|l| l.starts_with("HTTP/1.1 ")),
        subject: text
            .lines()
            .find(|l| l.trim_start().starts_with("subject="))
            .unwrap_or("")
            .to_owned(),
        text,
    }
}

async fn connect_async(
    env: &Env,
    kind: Kind,
    sess_in: Option<PathBuf>,
    sess_out: Option<PathBuf>,
) -> Seen {
    let (port, dir) = (env.gw.listen.port(), env.dir.clone());
    tokio::task::spawn_blocking(move || {
        connect(port, &dir, kind, sess_in.as_deref(), sess_out.as_deref())
    })
    .await
    .unwrap()
}

/// Keep a session of `kind` in its file: a full handshake that served a
/// request. (A TLS 1.3 ticket is post-handshake: retried until s_client
/// reports it arrived, which the request/response ordering all but ensures.)
async fn keep_session(env: &Env, kind: Kind) -> PathBuf {
    let file = kind.file(&env.dir);
    let kept = eventually(Duration::from_secs(10), async || {
        let _ = std::fs::remove_file(&file);
        let s = connect_async(env, kind, None, Some(file.clone())).await;
        assert!(s.served, "{kind:?}: a full handshake serves: {}", s.text);
        assert!(!s.reused, "{kind:?}: nothing to resume yet: {}", s.text);
        // The mechanism under test: a ticket, or a bare session id.
        let ticket = s.text.contains("TLS session ticket lifetime hint");
        assert_eq!(ticket, kind.ticket(), "{kind:?}: {}", s.text);
        file.exists()
    })
    .await;
    assert!(kept, "{kind:?}: s_client kept a session");
    file
}

async fn resume(env: &Env, kind: Kind, file: &Path) -> Seen {
    connect_async(env, kind, Some(file.to_path_buf()), None).await
}

/// Replace a watched file in one step (as Kubernetes or an editor does), so
/// the reloader never reads it half written.
fn replace(dir: &Path, name: &str, content: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

async fn resumption_follows_the_client_trust(name: &str, kinds: &[Kind]) {
    let env = Setup::new(name).start().await;
    env.web.write(&env.dir, "web").unwrap();
    // The client checks the server against this copy, so that replacing the
    // gateway's client CA bundle below changes nothing on the client side.
    env.ca.write(&env.dir, "server-ca").unwrap();

    // a) Nothing changed: the session resumes.
    let mut sessions = Vec::new();
    for &kind in kinds {
        let file = keep_session(&env, kind).await;
        let s = resume(&env, kind, &file).await;
        assert!(s.reused && s.served, "{kind:?}: resumes: {}", s.text);
        sessions.push((kind, file));
    }

    // b) Only the server certificate rotated: trust is unchanged, so the
    // sessions from before still resume.
    let fresh = env.leaf(LeafSpec {
        common_name: "rotated.localhost".into(),
        dns: vec!["localhost".into()],
        ..LeafSpec::default()
    });
    let (cert, key) = (fresh.cert_pem.clone(), fresh.key_pem.clone());
    // The key first: until the certificate follows, the pair mismatches and
    // a reload in between is refused, keeping the old pair.
    replace(&env.dir, "server-key.pem", &key);
    replace(&env.dir, "server.pem", &cert);
    let rotated = eventually(Duration::from_secs(15), async || {
        connect_async(&env, Kind::Tls13Ticket, None, None)
            .await
            .subject
            .contains("rotated.localhost")
    })
    .await;
    assert!(rotated, "new handshakes get the rotated certificate");
    for (kind, file) in &sessions {
        let s = resume(&env, *kind, file).await;
        assert!(
            s.reused && s.served,
            "{kind:?}: resumes after a server cert rotation: {}",
            s.text
        );
    }

    // c) The client's CA removed: ca.pem now holds only another CA.
    let reloads = env.metric("ztgate_config_reloads_total", &[("result", "ok")]);
    let other = Ca::new("other.test").unwrap();
    replace(&env.dir, "ca.pem", &other.cert_pem());
    let reloaded = eventually(Duration::from_secs(15), async || {
        env.metric("ztgate_config_reloads_total", &[("result", "ok")]) > reloads
    })
    .await;
    assert!(reloaded, "the new CA bundle was loaded");
    // A full handshake with the web certificate is refused now…
    let s = connect_async(&env, Kind::Tls13Ticket, None, None).await;
    assert!(!s.served, "the removed CA no longer verifies: {}", s.text);
    // …and a session from before does not get around it.
    for (kind, file) in &sessions {
        let s = resume(&env, *kind, file).await;
        assert!(
            !s.reused,
            "{kind:?}: no resumption across a trust change: {}",
            s.text
        );
        assert!(!s.served, "{kind:?}: no request passes: {}", s.text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls13_ticket_is_held_to_the_client_ca_in_force() {
    resumption_follows_the_client_trust("resume-13", &[Kind::Tls13Ticket]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_ticket_and_session_id_are_held_to_the_client_ca_in_force() {
    resumption_follows_the_client_trust("resume-12", &[Kind::Tls12Ticket, Kind::Tls12SessionId])
        .await;
}
