//! OCSP for client certificates (`listener.tls.ocsp`) and the fetch that
//! stapling shares (`super::stapling`).
//!
//! **How a handshake waits.** Pingora's TLS accept has one asynchronous
//! hook after the client's certificate is known,
//! `handshake_complete_callback`; OpenSSL's verify callback, where the CRLs
//! and the trust-domain binding are checked, is synchronous and runs on a
//! worker thread, which must never block on the network. So:
//! 1. In the verify callback, only the cache is read ([`ClientOcsp::cached_refusal`]):
//!    a cached `revoked` (or, in `hard` mode, `unknown`) fails the
//!    handshake there with `client_auth: require`, as a CRL would.
//! 2. Once the handshake is done, [`ClientOcsp::check`] answers from the
//!    cache or asks the responder. That `.await`s the HTTP exchange on the
//!    connection's own task, bounded by `timeout`: the worker thread serves
//!    other connections meanwhile, and this connection reads no request
//!    until the answer is in. A certificate refused then is treated as no
//!    certificate with `client_auth: optional`; with `require` the
//!    connection is closed before its first request (`RefusedConnection`,
//!    checked by the listener), the client seeing its connection closed
//!    rather than a handshake alert.
//!
//! Resumed sessions skip the verify callback but not step 2: a session
//! resumed after its certificate was revoked is refused the same way (its
//! issuer comes from the chains verified earlier, remembered by name).
//!
//! **The cache** belongs to the process, not to a config generation
//! ([`ztgate_filter::Memory`]): answers are kept by (issuer name, serial)
//! until the response's nextUpdate, capped at `max_cache_age` (a response
//! without nextUpdate: [`NO_NEXT_UPDATE_TTL`]), so steady traffic costs no
//! OCSP round trip; a hit in the last quarter of an answer's life also
//! asks again in the background, so an expiring answer is replaced before
//! a handshake has to wait for it. Concurrent handshakes of one uncached certificate
//! share one request (a burst of new connections after a restart asks
//! once). Failures are not cached: in `hard` mode each new connection of
//! an uncached certificate tries the responder again.

mod ffi;
pub mod http;
pub mod response;

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lru::LruCache;
use parking_lot::Mutex;
use pingora::tls::x509::{X509Ref, X509};
use sha2::{Digest, Sha256};
use ztgate_filter::Memory;

use crate::config::raw::{ClientAuth, Ocsp, OcspMode};
pub use response::{Answer, CertStatus, OcspError, Prepared};

/// How long an answer without nextUpdate is cached.
pub const NO_NEXT_UPDATE_TTL: Duration = Duration::from_secs(300);

/// The `reason` label of `ztgate_client_cert_refusals_total` when `hard`
/// mode had no good answer.
pub const UNAVAILABLE: &str = "ocsp_unavailable";

/// Every `result` of `ztgate_ocsp_checks_total`.
pub const RESULTS: [&str; 5] = ["good", "revoked", "unknown", "error", "no_responder"];

/// Ask `cert`'s responder, bounded by `timeout`; the verified answer and
/// the response's DER (for stapling).
pub async fn fetch(
    client: &reqwest::Client,
    cert: &X509,
    issuer: &X509,
    nonce: bool,
    timeout: Duration,
    skew: Duration,
) -> Result<(Answer, Vec<u8>), OcspError> {
    let url = response::responder_url(cert).ok_or(OcspError::NoResponder)?;
    let prepared = Prepared::new(cert, issuer, nonce)?;
    let body = prepared.der()?;
    let der = tokio::time::timeout(timeout, http::post(client, &url, body))
        .await
        .map_err(|_| OcspError::Timeout(timeout))??;
    let answer = prepared.verify(&der, issuer, SystemTime::now(), skew)?;
    Ok((answer, der))
}

/// What a check decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Accept,
    Refuse {
        /// The `reason` label of `ztgate_client_cert_refusals_total`.
        label: &'static str,
        reason: String,
    },
}

/// A cache key: SHA-256 of the issuer's name (DER), and the serial.
type Key = ([u8; 32], Vec<u8>);

fn key(cert: &X509Ref) -> Option<Key> {
    let issuer = cert.issuer_name().to_der().ok()?;
    let serial = cert.serial_number().to_bn().ok()?.to_vec();
    Some((Sha256::digest(issuer).into(), serial))
}

#[derive(Clone, Copy)]
struct Cached {
    status: CertStatus,
    fetched: SystemTime,
    until: SystemTime,
}

impl Cached {
    /// In the last quarter of its life: time to ask again, in the
    /// background, while this answer still serves.
    fn refresh_due(&self, now: SystemTime) -> bool {
        let life = self.until.duration_since(self.fetched).unwrap_or_default();
        now >= self.fetched + life / 4 * 3
    }
}

/// What outlives a generation: answers, the issuers seen in verified
/// chains, the HTTP client.
pub struct OcspMemory {
    cache: Mutex<LruCache<Key, Cached>>,
    /// Issuer name (DER) → certificate, for resumed sessions, which carry
    /// only the leaf.
    issuers: Mutex<LruCache<Vec<u8>, X509>>,
    /// The fetch in progress per certificate, which concurrent checks of
    /// it await instead of asking again.
    inflight: Mutex<HashMap<Key, Arc<InFlight>>>,
    client: reqwest::Client,
    /// When `soft` mode last logged a failed check (unix seconds): a
    /// responder outage is logged every [`WARN_EVERY`], not per
    /// connection (the metric counts each).
    last_warned: std::sync::atomic::AtomicU64,
}

/// How often `soft` mode logs that checks fail.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// One fetch's result, shared by every check waiting on it. If the check
/// running it is dropped (its client went away), the next waiter runs it.
type InFlight = tokio::sync::OnceCell<Result<Answer, OcspError>>;

impl OcspMemory {
    fn new(capacity: NonZeroUsize) -> Self {
        Self {
            cache: Mutex::new(LruCache::new(capacity)),
            issuers: Mutex::new(LruCache::new(
                NonZeroUsize::new(256).unwrap_or(NonZeroUsize::MIN),
            )),
            inflight: Mutex::new(HashMap::new()),
            client: http::client(),
            last_warned: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn may_warn(&self) -> bool {
        use std::sync::atomic::Ordering;
        let now = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.last_warned.load(Ordering::Relaxed);
        now >= last + WARN_EVERY.as_secs()
            && self
                .last_warned
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    fn lookup(&self, key: &Key, now: SystemTime) -> Option<Cached> {
        let mut cache = self.cache.lock();
        match cache.get(key) {
            Some(c) if c.until > now => Some(*c),
            Some(_) => {
                cache.pop(key);
                None
            }
            None => None,
        }
    }
}

/// Asking the responder and caching what it says: shared by a check that
/// waits for it and a refresh that runs in the background.
#[derive(Clone)]
struct Fetcher {
    memory: Arc<OcspMemory>,
    timeout: Duration,
    max_cache_age: Duration,
    skew: Duration,
    nonce: bool,
}

impl Fetcher {
    /// Ask `leaf`'s responder (joining a fetch already in flight for it)
    /// and cache a verified answer until its nextUpdate, at most
    /// `max_cache_age`.
    async fn fetch_and_cache(
        &self,
        k: &Key,
        leaf: &X509,
        issuer: &X509,
    ) -> Result<Answer, OcspError> {
        let flight = self
            .memory
            .inflight
            .lock()
            .entry(k.clone())
            .or_default()
            .clone();
        let result = flight
            .get_or_init(|| async {
                fetch(
                    &self.memory.client,
                    leaf,
                    issuer,
                    self.nonce,
                    self.timeout,
                    self.skew,
                )
                .await
                .map(|(answer, _)| answer)
            })
            .await
            .clone();
        {
            let mut inflight = self.memory.inflight.lock();
            if inflight.get(k).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
                inflight.remove(k);
            }
        }
        if let Ok(answer) = &result {
            let fetched = SystemTime::now();
            let until = answer
                .next_update
                .unwrap_or(fetched + NO_NEXT_UPDATE_TTL)
                .min(fetched + self.max_cache_age);
            self.memory.cache.lock().put(
                k.clone(),
                Cached {
                    status: answer.status,
                    fetched,
                    until,
                },
            );
        }
        result
    }

    /// Refresh a cached answer in the background (unless a fetch for it is
    /// already running): steady traffic never waits for the responder,
    /// even when an answer expires. A failure leaves the cached answer to
    /// serve until it expires.
    fn refresh_in_background(&self, k: Key, leaf: X509, issuer: X509) {
        if self.memory.inflight.lock().contains_key(&k) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            match me.fetch_and_cache(&k, &leaf, &issuer).await {
                Ok(answer) => count(answer.status.label(), false),
                Err(e) => {
                    count("error", false);
                    tracing::debug!(error = %e, "OCSP refresh ahead of expiry failed");
                }
            }
        });
    }
}

/// `listener.tls.ocsp` in force (mode soft or hard).
pub struct ClientOcsp {
    pub mode: OcspMode,
    client_auth: ClientAuth,
    fetcher: Fetcher,
    memory: Arc<OcspMemory>,
}

impl ClientOcsp {
    /// The checker for `settings`, or `None` when the mode is `off`. Its
    /// cache is claimed from `memory` by capacity, so a reload keeps it.
    pub fn new(settings: &Ocsp, client_auth: ClientAuth, memory: &Memory) -> Option<Self> {
        if settings.mode == OcspMode::Off {
            return None;
        }
        let capacity = settings.cache_size;
        let state = memory.claim(&format!("client-ocsp:{capacity}"), || {
            OcspMemory::new(capacity)
        });
        Some(Self {
            mode: settings.mode,
            client_auth,
            fetcher: Fetcher {
                memory: state.clone(),
                timeout: settings.timeout,
                max_cache_age: settings.max_cache_age,
                skew: settings.clock_skew,
                nonce: settings.nonce,
            },
            memory: state,
        })
    }

    /// Keep `issuer` (from a verified chain) for later resumed sessions.
    pub fn remember_issuer(&self, issuer: &X509Ref) {
        if let Ok(name) = issuer.subject_name().to_der() {
            let mut issuers = self.memory.issuers.lock();
            if issuers.get(&name).is_none() {
                issuers.put(name, issuer.to_owned());
            }
        }
    }

    /// From the cache alone (the verify callback): the refusal a cached
    /// answer calls for, if any. Counted as a cached check only when it
    /// refuses (otherwise [`Self::check`] counts it after the handshake).
    pub fn cached_refusal(&self, leaf: &X509Ref) -> Option<Outcome> {
        let status = self.memory.lookup(&key(leaf)?, SystemTime::now())?.status;
        match self.decide(leaf, Ok(status)) {
            Outcome::Accept => None,
            refuse => {
                count(status.label(), true);
                Some(refuse)
            }
        }
    }

    /// The whole check, after the handshake: the cached answer, else the
    /// responder's within `timeout` (see the module docs).
    pub async fn check(&self, leaf: &X509, issuer: Option<X509>) -> Outcome {
        self.check_at(leaf, issuer, SystemTime::now()).await
    }

    /// [`Self::check`] as if it were `now` (for the cache's clock).
    async fn check_at(&self, leaf: &X509, issuer: Option<X509>, now: SystemTime) -> Outcome {
        let Some(k) = key(leaf) else {
            return self.fail(
                leaf,
                OcspError::Request("unreadable issuer or serial".into()),
            );
        };
        let issuer = match issuer {
            Some(i) => {
                self.remember_issuer(&i);
                Some(i)
            }
            None => leaf
                .issuer_name()
                .to_der()
                .ok()
                .and_then(|n| self.memory.issuers.lock().get(&n).cloned()),
        };
        if let Some(cached) = self.memory.lookup(&k, now) {
            count(cached.status.label(), true);
            if let Some(issuer) = issuer.filter(|_| cached.refresh_due(now)) {
                self.fetcher.refresh_in_background(k, leaf.clone(), issuer);
            }
            return self.decide(leaf, Ok(cached.status));
        }
        let Some(issuer) = issuer else {
            return self.fail(
                leaf,
                OcspError::Request("the issuer's certificate is not known".into()),
            );
        };
        match self.fetcher.fetch_and_cache(&k, leaf, &issuer).await {
            Ok(answer) => {
                count(answer.status.label(), false);
                self.decide(leaf, Ok(answer.status))
            }
            Err(e) => self.fail(leaf, e),
        }
    }

    fn fail(&self, leaf: &X509Ref, e: OcspError) -> Outcome {
        let label = if e == OcspError::NoResponder {
            "no_responder"
        } else {
            "error"
        };
        count(label, false);
        if self.mode == OcspMode::Soft && self.memory.may_warn() {
            tracing::warn!(
                certificate = %super::material::display_name(leaf),
                error = %e,
                "OCSP check failed; accepted (listener.tls.ocsp.mode: soft; further failures within 10s are only counted)"
            );
        }
        self.decide(leaf, Err(e))
    }

    fn decide(&self, leaf: &X509Ref, status: Result<CertStatus, OcspError>) -> Outcome {
        let cn = || super::material::display_name(leaf);
        match (status, self.mode) {
            (Ok(CertStatus::Good), _) => Outcome::Accept,
            (Ok(CertStatus::Revoked), _) => Outcome::Refuse {
                label: super::trust::REVOKED,
                reason: format!("certificate `{}` is revoked (OCSP)", cn()),
            },
            (Ok(CertStatus::Unknown), OcspMode::Hard) => Outcome::Refuse {
                label: UNAVAILABLE,
                reason: format!(
                    "the OCSP responder does not know certificate `{}` (mode: hard)",
                    cn()
                ),
            },
            (Err(e), OcspMode::Hard) => Outcome::Refuse {
                label: UNAVAILABLE,
                reason: format!(
                    "no OCSP answer for certificate `{}` (mode: hard): {e}",
                    cn()
                ),
            },
            _ => Outcome::Accept,
        }
    }

    /// Whether a refusal fails the connection (`client_auth: require`)
    /// rather than counting the certificate as none (`optional`).
    pub fn refusal_closes(&self) -> bool {
        self.client_auth == ClientAuth::Require
    }
}

/// The series of `ztgate_ocsp_checks_total`, resolved once: a cached
/// answer is counted on every handshake, where `with_label_values` would
/// hash the labels and take the vec's lock.
static CHECKS: std::sync::LazyLock<Vec<(&'static str, [prometheus::IntCounter; 2])>> =
    std::sync::LazyLock::new(|| {
        RESULTS
            .iter()
            .map(|r| {
                let of = |cached: &str| crate::metrics::OCSP_CHECKS.with_label_values(&[r, cached]);
                (*r, [of("false"), of("true")])
            })
            .collect()
    });

fn count(result: &str, cached: bool) {
    if let Some((_, [fetched, from_cache])) = CHECKS.iter().find(|(r, _)| *r == result) {
        if cached { from_cache } else { fetched }.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ztgate_testkit::ocsp::{Responder, Signer};
    use ztgate_testkit::pki::{Ca, Issued, LeafSpec};

    fn settings(mode: OcspMode) -> Ocsp {
        Ocsp {
            mode,
            timeout: Duration::from_secs(2),
            cache_size: NonZeroUsize::new(100).unwrap(),
            max_cache_age: Duration::from_secs(3600),
            clock_skew: Duration::from_secs(300),
            nonce: true,
        }
    }

    fn leaf(ca: &Ca, name: &str, r: &Responder) -> (Issued, X509) {
        let i = ca
            .issue(&LeafSpec {
                common_name: name.into(),
                ocsp_url: Some(r.url()),
                ..LeafSpec::default()
            })
            .unwrap();
        let x = X509::from_der(&i.der).unwrap();
        (i, x)
    }

    /// A CA, its OCSP responder (`openssl ocsp`, delegated signer) in a
    /// fresh temp folder, and the CA certificate as the issuer to check with.
    async fn responder(name: &str) -> (std::path::PathBuf, Ca, Responder, X509) {
        let dir = std::env::temp_dir().join(format!("ztgate-ocsp-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ca = Ca::new("acme.test").unwrap();
        let r = Responder::start(&dir, &ca, Signer::Delegated)
            .await
            .unwrap();
        let issuer = X509::from_pem(ca.cert_pem().as_bytes()).unwrap();
        (dir, ca, r, issuer)
    }

    fn refused(o: &Outcome) -> Option<&'static str> {
        match o {
            Outcome::Accept => None,
            Outcome::Refuse { label, .. } => Some(label),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn checks_share_one_fetch_and_the_cache_outlives_a_generation() {
        let (dir, ca, r, issuer) = responder("client").await;
        let memory = Memory::new();
        let hard = Arc::new(
            ClientOcsp::new(&settings(OcspMode::Hard), ClientAuth::Require, &memory).unwrap(),
        );
        let (good_i, good) = leaf(&ca, "good", &r);
        let (revoked_i, revoked) = leaf(&ca, "revoked", &r);
        let (_, unknown) = leaf(&ca, "unknown", &r);
        r.good(&good_i).unwrap();
        r.revoke(&revoked_i).unwrap();

        // A burst of cold checks of one certificate: one request.
        let checks = (0..8).map(|_| {
            let (hard, good, issuer) = (hard.clone(), good.clone(), issuer.clone());
            tokio::spawn(async move { hard.check(&good, Some(issuer)).await })
        });
        for c in checks {
            assert_eq!(c.await.unwrap(), Outcome::Accept);
        }
        assert_eq!(r.requests(), 1);
        // A resumed session (no chain): the issuer seen before is used.
        assert_eq!(
            refused(&hard.check(&revoked, None).await),
            Some(super::super::trust::REVOKED)
        );
        assert_eq!(r.requests(), 2);
        assert_eq!(
            refused(&hard.cached_refusal(&revoked).unwrap()),
            Some(super::super::trust::REVOKED)
        );
        assert!(hard.cached_refusal(&good).is_none());
        assert_eq!(
            refused(&hard.check(&unknown, Some(issuer.clone())).await),
            Some(UNAVAILABLE)
        );
        let asked = r.requests();
        assert_eq!(asked, 3, "good, revoked and unknown once each");

        // The next generation, same settings: same cache, no new request.
        let next =
            ClientOcsp::new(&settings(OcspMode::Soft), ClientAuth::Require, &memory).unwrap();
        assert_eq!(
            next.check(&good, Some(issuer.clone())).await,
            Outcome::Accept
        );
        // soft: unknown is let in, revoked is not.
        assert_eq!(
            next.check(&unknown, Some(issuer.clone())).await,
            Outcome::Accept
        );
        assert!(refused(&next.check(&revoked, None).await).is_some());
        assert_eq!(r.requests(), asked);

        // The responder down: a new certificate is refused by hard only.
        r.stop();
        let (_, fresh) = leaf(&ca, "fresh", &r);
        assert_eq!(
            refused(&hard.check(&fresh, Some(issuer.clone())).await),
            Some(UNAVAILABLE)
        );
        assert_eq!(
            next.check(&fresh, Some(issuer.clone())).await,
            Outcome::Accept
        );
        // No responder in the certificate; an issuer never seen.
        let plain = X509::from_der(&ca.svid("spiffe://acme.test/x").unwrap().der).unwrap();
        assert_eq!(
            refused(&hard.check(&plain, Some(issuer.clone())).await),
            Some(UNAVAILABLE)
        );
        let stranger = Ca::new("stranger.test").unwrap();
        let (_, orphan) = leaf(&stranger, "orphan", &r);
        assert_eq!(refused(&hard.check(&orphan, None).await), Some(UNAVAILABLE));
        assert_eq!(next.check(&orphan, None).await, Outcome::Accept);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A hit late in an answer's life answers from the cache and asks the
    /// responder again in the background; the fresh answer replaces it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_expiring_answer_is_refreshed_in_the_background() {
        let (dir, ca, r, issuer) = responder("refresh").await;
        let mut s = settings(OcspMode::Hard);
        s.max_cache_age = Duration::from_secs(400);
        let ocsp = ClientOcsp::new(&s, ClientAuth::Require, &Memory::new()).unwrap();
        let (good_i, good) = leaf(&ca, "good", &r);
        r.good(&good_i).unwrap();
        let t0 = SystemTime::now();
        assert_eq!(
            ocsp.check_at(&good, Some(issuer.clone()), t0).await,
            Outcome::Accept
        );
        assert_eq!(r.requests(), 1);
        // Halfway: the cache answers, nothing else.
        let half = t0 + Duration::from_secs(200);
        assert_eq!(ocsp.check_at(&good, None, half).await, Outcome::Accept);
        assert_eq!(r.requests(), 1);
        // In the last quarter: answered from the cache at once, and the
        // responder is asked in the background. The certificate is revoked
        // meanwhile: the refreshed answer says so.
        r.revoke(&good_i).unwrap();
        let late = t0 + Duration::from_secs(350);
        assert_eq!(ocsp.check_at(&good, None, late).await, Outcome::Accept);
        let refreshed = ztgate_testkit::wait::eventually(Duration::from_secs(10), async || {
            r.requests() == 2
                && refused(&ocsp.check_at(&good, None, t0).await)
                    == Some(super::super::trust::REVOKED)
        })
        .await;
        assert!(
            refreshed,
            "no background refresh: {} requests",
            r.requests()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
