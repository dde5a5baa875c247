#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! `rediss://` end to end: rustls, the system trust store (here pointed at
//! a throw-away CA with `SSL_CERT_FILE`), and the crypto provider the store
//! installs. Its own test binary, because it sets an environment variable
//! for the whole process.

use std::time::Duration;

use ztgate_filter::{StateError, StateStore, StateUse};
use ztgate_state::{RedisConfig, RedisStore};
use ztgate_testkit::harness::free_port;
use ztgate_testkit::pki::Ca;
use ztgate_testkit::redis::RedisServer;

#[tokio::test]
async fn rediss_verifies_the_server_against_the_system_roots() {
    let dir = std::env::temp_dir().join(format!("ztgate-state-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = Ca::new("redis").unwrap();
    let ca_file = ca.write(&dir, "ca").unwrap();
    let (cert, key) = ca.server().unwrap().write(&dir, "server").unwrap();
    let tls_port = free_port().unwrap();
    let tls_port_arg = tls_port.to_string();
    let server = RedisServer::start_with(&[
        "--tls-port",
        &tls_port_arg,
        "--tls-cert-file",
        cert.to_str().unwrap(),
        "--tls-key-file",
        key.to_str().unwrap(),
        "--tls-ca-cert-file",
        ca_file.to_str().unwrap(),
        "--tls-auth-clients",
        "no",
    ])
    .unwrap();

    // Not trusted yet: the system store has no such CA.
    let untrusted = {
        let mut c = RedisConfig::new(&format!("rediss://localhost:{tls_port}")).unwrap();
        c.timeout = Duration::from_secs(1);
        RedisStore::new(&c).unwrap()
    };
    assert!(matches!(
        untrusted
            .insert_once(StateUse::Dpop, "k0", Duration::from_secs(60))
            .await,
        Err(StateError::Backend(_) | StateError::Timeout)
    ));

    // rustls-native-certs reads SSL_CERT_FILE (as the Docker image sets it).
    std::env::set_var("SSL_CERT_FILE", &ca_file);
    let mut c = RedisConfig::new(&format!("rediss://localhost:{tls_port}")).unwrap();
    c.timeout = Duration::from_secs(1);
    let s = RedisStore::new(&c).unwrap();
    let mut last = None;
    for _ in 0..50 {
        match s
            .insert_once(StateUse::Dpop, "k", Duration::from_secs(60))
            .await
        {
            Ok(first) => {
                assert!(first);
                last = None;
                break;
            }
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(last.is_none(), "{last:?}");
    assert!(!s
        .insert_once(StateUse::Dpop, "k", Duration::from_secs(60))
        .await
        .unwrap());
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
