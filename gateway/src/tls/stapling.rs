//! OCSP stapling of the server certificate (`listener.tls.ocsp_stapling`).
//!
//! A [`Stapler`] belongs to one server certificate: it is claimed from
//! [`ztgate_filter::Memory`] by the certificate's digest, so a reload that
//! keeps the certificate keeps its staple, and a rotated certificate gets a
//! stapler (and a staple) of its own. Its background task ([`Stapler::run`],
//! one per generation) fetches the response from the AIA responder,
//! verifies it like a client-certificate answer (signer, thisUpdate and
//! nextUpdate), and refreshes it halfway through its validity. A failed
//! refresh keeps the last good response and retries with backoff; a
//! response past its nextUpdate is never stapled (logged, counted, and the
//! nextUpdate gauge drops to 0). OpenSSL's status callback
//! ([`staple`]) only copies the current response into the handshake.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use pingora::tls::x509::X509;
use sha2::{Digest, Sha256};
use ztgate_filter::Memory;

use super::ocsp::{self, CertStatus, OcspError};

/// The first retry after a failed fetch; doubled up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(5);
const MAX_RETRY: Duration = Duration::from_secs(300);
/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Clock skew allowed on the responder's times.
const SKEW: Duration = Duration::from_secs(300);

/// One fetched, verified response.
pub struct Staple {
    pub der: Vec<u8>,
    pub fetched: SystemTime,
    /// Past this, the response is not stapled.
    pub expires: SystemTime,
}

impl Staple {
    /// When to fetch the next one: halfway through the validity.
    fn refresh_at(&self) -> SystemTime {
        let life = self
            .expires
            .duration_since(self.fetched)
            .unwrap_or_default();
        self.fetched + life / 2
    }
}

/// Why stapling cannot be set up for a certificate (a config problem).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StaplingError {
    #[error("needs the issuer's certificate after the leaf in listener.tls.cert")]
    NoIssuer,
    #[error("the certificate names no OCSP responder (authority information access)")]
    NoResponder,
}

/// The staple of one server certificate.
pub struct Stapler {
    leaf: X509,
    issuer: X509,
    client: reqwest::Client,
    current: ArcSwapOption<Staple>,
}

impl Stapler {
    /// The stapler of the certificate `chain` starts with (leaf, then its
    /// issuer), shared with earlier generations that used the same chain.
    pub fn claim(chain: &[X509], memory: &Memory) -> Result<Arc<Self>, StaplingError> {
        let (leaf, issuer) = match chain {
            [leaf, issuer, ..] => (leaf.clone(), issuer.clone()),
            _ => return Err(StaplingError::NoIssuer),
        };
        if issuer.issued(&leaf) != pingora::tls::x509::X509VerifyResult::OK {
            return Err(StaplingError::NoIssuer);
        }
        if ocsp::response::responder_url(&leaf).is_none() {
            return Err(StaplingError::NoResponder);
        }
        let id: [u8; 32] = leaf
            .to_der()
            .map(|d| Sha256::digest(d).into())
            .unwrap_or_default();
        Ok(
            memory.claim(&format!("ocsp-staple:{}", hex::encode(id)), || Self {
                leaf,
                issuer,
                client: ocsp::http::client(),
                current: ArcSwapOption::empty(),
            }),
        )
    }

    /// The response to staple at `now`, if a current one is held.
    pub fn current(&self, now: SystemTime) -> Option<Arc<Staple>> {
        self.current.load_full().filter(|s| s.expires > now)
    }

    /// Fetch and verify a new response; on success it replaces the held one.
    pub async fn refresh(&self) -> Result<(), OcspError> {
        let (answer, der) = ocsp::fetch(
            &self.client,
            &self.leaf,
            &self.issuer,
            false,
            FETCH_TIMEOUT,
            SKEW,
        )
        .await?;
        if answer.status != CertStatus::Good {
            // A revoked or unknown server certificate: stapling that would
            // only make clients refuse us, and the last good response is
            // no longer true: staple nothing, and say so loudly.
            self.current.store(None);
            return Err(OcspError::NotGood(answer.status.label()));
        }
        let fetched = SystemTime::now();
        let expires = answer
            .next_update
            .unwrap_or(fetched + ocsp::NO_NEXT_UPDATE_TTL);
        self.current.store(Some(Arc::new(Staple {
            der,
            fetched,
            expires,
        })));
        set_gauge(Some(expires));
        Ok(())
    }

    /// Keep the staple fresh for as long as this generation serves.
    pub async fn run(self: Arc<Self>) {
        let mut retry = FIRST_RETRY;
        loop {
            let now = SystemTime::now();
            let due = match self.current(now) {
                Some(s) => {
                    set_gauge(Some(s.expires));
                    s.refresh_at()
                }
                None => now,
            };
            if let Ok(wait) = due.duration_since(now) {
                tokio::time::sleep(wait).await;
            }
            match self.refresh().await {
                Ok(()) => {
                    retry = FIRST_RETRY;
                    crate::metrics::STAPLE_REFRESH
                        .with_label_values(&["ok"])
                        .inc();
                    tracing::info!("OCSP staple refreshed");
                }
                Err(e) => {
                    crate::metrics::STAPLE_REFRESH
                        .with_label_values(&["error"])
                        .inc();
                    let held = self.current(SystemTime::now());
                    match &held {
                        Some(_) => {
                            tracing::warn!(error = %e, "OCSP staple refresh failed; stapling the last good response until its nextUpdate")
                        }
                        None => {
                            set_gauge(None);
                            tracing::error!(error = %e, "OCSP staple refresh failed; no current response, stapling nothing")
                        }
                    }
                    // Wait for the retry, or until the held one expires
                    // (then the gauge says so), whichever is first.
                    let sleep = held
                        .and_then(|s| s.expires.duration_since(SystemTime::now()).ok())
                        .map_or(retry, |left| left.min(retry));
                    tokio::time::sleep(sleep).await;
                    retry = (retry * 2).min(MAX_RETRY);
                    if self.current(SystemTime::now()).is_none() {
                        set_gauge(None);
                    }
                }
            }
        }
    }
}

fn set_gauge(expires: Option<SystemTime>) {
    let secs = expires
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    crate::metrics::STAPLE_NEXT_UPDATE.set(secs);
}

/// OpenSSL's status callback: staple the current response of the
/// certificate this connection uses (`false`: nothing to staple).
pub fn staple(
    ssl: &mut pingora::tls::ssl::SslRef,
    stapler: Option<&Stapler>,
) -> Result<bool, openssl::error::ErrorStack> {
    match stapler.and_then(|s| s.current(SystemTime::now())) {
        Some(s) => {
            ssl.set_ocsp_status(&s.der)?;
            Ok(true)
        }
        None => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ztgate_testkit::pki::{Ca, LeafSpec};

    fn x509(pem: &str) -> X509 {
        X509::from_pem(pem.as_bytes()).unwrap()
    }

    #[test]
    fn a_staple_is_served_until_its_next_update_and_belongs_to_its_certificate() {
        let ca = Ca::new("acme.test").unwrap();
        let with_aia = |name: &str| {
            ca.issue(&LeafSpec {
                common_name: name.into(),
                ocsp_url: Some("http://127.0.0.1:9/".into()),
                ..LeafSpec::default()
            })
            .unwrap()
        };
        let (a, b) = (with_aia("a"), with_aia("b"));
        let memory = Memory::new();
        let chain = |i: &ztgate_testkit::pki::Issued| vec![x509(&i.cert_pem), x509(&ca.cert_pem())];
        let s = Stapler::claim(&chain(&a), &memory).unwrap();
        // The same certificate in a later generation: the same stapler.
        assert!(Arc::ptr_eq(
            &s,
            &Stapler::claim(&chain(&a), &memory).unwrap()
        ));
        // A rotated certificate: another one, with no staple yet.
        let other = Stapler::claim(&chain(&b), &memory).unwrap();
        assert!(!Arc::ptr_eq(&s, &other));

        let now = SystemTime::now();
        s.current.store(Some(Arc::new(Staple {
            der: vec![1, 2, 3],
            fetched: now,
            expires: now + Duration::from_secs(600),
        })));
        assert!(s.current(now).is_some());
        assert!(other.current(now).is_none());
        assert!(s.current(now + Duration::from_secs(601)).is_none());
        let held = s.current(now).unwrap();
        assert_eq!(held.refresh_at(), now + Duration::from_secs(300));

        // What stapling needs: the issuer after the leaf, a responder.
        assert_eq!(
            Stapler::claim(&[x509(&a.cert_pem)], &memory).err(),
            Some(StaplingError::NoIssuer)
        );
        let stranger = Ca::new("other.test").unwrap();
        assert_eq!(
            Stapler::claim(&[x509(&a.cert_pem), x509(&stranger.cert_pem())], &memory).err(),
            Some(StaplingError::NoIssuer)
        );
        let plain = ca.server().unwrap();
        assert_eq!(
            Stapler::claim(&[x509(&plain.cert_pem), x509(&ca.cert_pem())], &memory).err(),
            Some(StaplingError::NoResponder)
        );
    }

    /// The responder down when a refresh is due: the refresh fails (and is
    /// counted), the last good response is still stapled.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_refresh_keeps_the_last_good_response() {
        let ca = Ca::new("acme.test").unwrap();
        let closed = ztgate_testkit::harness::free_port().unwrap();
        let leaf = ca
            .issue(&LeafSpec {
                common_name: "localhost".into(),
                ocsp_url: Some(format!("http://127.0.0.1:{closed}/")),
                ..LeafSpec::default()
            })
            .unwrap();
        let memory = Memory::new();
        let s = Stapler::claim(&[x509(&leaf.cert_pem), x509(&ca.cert_pem())], &memory).unwrap();
        let now = SystemTime::now();
        let expires = now + Duration::from_secs(600);
        // Halfway through its validity: due now.
        s.current.store(Some(Arc::new(Staple {
            der: vec![1, 2, 3],
            fetched: now - Duration::from_secs(600),
            expires,
        })));
        let errors = || {
            crate::metrics::STAPLE_REFRESH
                .with_label_values(&["error"])
                .get()
        };
        let before = errors();
        let task = tokio::spawn(s.clone().run());
        let failed =
            ztgate_testkit::wait::eventually(Duration::from_secs(10), async || errors() > before)
                .await;
        task.abort();
        assert!(failed, "no failed refresh was counted");
        let held = s
            .current(SystemTime::now())
            .expect("the last good response");
        assert_eq!(held.der, vec![1, 2, 3]);
        let secs = expires.duration_since(UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(crate::metrics::STAPLE_NEXT_UPDATE.get(), secs as i64);
    }
}
