//! The keys of one issuer: fetched at start (OIDC discovery or a `jwks_uri`),
//! refreshed in the background within Cache-Control bounds, refetched on an
//! unknown `kid` at most once per interval (single flight), and kept when a
//! later fetch fails.
//!
//! An issuer that never produced keys is *unavailable*, not a reason to
//! blame the caller: the filter answers `jwks_unavailable` (UNAVAILABLE).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use reqwest::Url;
use serde::Deserialize;
use tokio::time::Instant;

use crate::keys::{JwksError, KeySet};
use crate::metrics;

/// Discovery documents and JWKS larger than this are refused: no IdP needs
/// more, and an unbounded body is a memory DoS.
const MAX_BODY: usize = 1024 * 1024;
/// First retry delay after a failed background refresh; doubles up to the
/// refresh minimum.
const RETRY_START: Duration = Duration::from_secs(1);

/// An IdP URL must be `https`, or `http` on a loopback host when the issuer
/// explicitly allows it (tests, a sidecar IdP).
pub(crate) fn check_url(s: &str, allow_insecure_http: bool) -> Result<String, String> {
    let url = Url::parse(s).map_err(|e| format!("not a URL: {e}"))?;
    match url.scheme() {
        "https" => Ok(url.into()),
        "http" if allow_insecure_http && is_loopback(&url) => Ok(url.into()),
        "http" if allow_insecure_http => {
            Err("plain http is only allowed for loopback hosts".into())
        }
        "http" => Err("must be https (allow_insecure_http permits http on loopback only)".into()),
        _ => Err("must be an https URL".into()),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Where an issuer's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `{issuer}/.well-known/openid-configuration`, then its `jwks_uri`.
    Discovery {
        url: String,
    },
    JwksUri(String),
    /// A file read at build time; never fetched.
    Static,
}

/// How the store talks to the IdP.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub client: reqwest::Client,
    pub refresh_min: Duration,
    pub refresh_max: Duration,
    pub unknown_kid_interval: Duration,
    pub allow_insecure_http: bool,
}

/// Why one fetch failed. Messages carry URLs from config, never key material.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("request to the IdP failed: {0}")]
    Http(String),
    #[error("IdP answered HTTP {0}")]
    Status(u16),
    #[error("IdP response is larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error("discovery document is not valid JSON with `issuer` and `jwks_uri`")]
    Discovery,
    #[error("discovery `issuer` does not equal the configured issuer")]
    IssuerMismatch,
    #[error("discovery `jwks_uri` refused: {0}")]
    JwksUri(String),
    #[error(transparent)]
    Jwks(#[from] JwksError),
}

#[derive(Deserialize)]
struct DiscoveryDoc {
    issuer: String,
    jwks_uri: String,
}

/// What a key store has learned from its IdP. It belongs to the issuer
/// and its key source, not to a config generation: the gateway claims it
/// from [`ztgate_filter::Memory`] under [`LearnedKeys::memory_key`], so a
/// reload keeps the last good keys (and the refresh schedule) even when
/// the IdP is down at that moment.
#[derive(Debug, Default)]
pub struct LearnedKeys {
    keys: ArcSwapOption<KeySet>,
    /// When the last unknown-`kid` (or no-keys) refetch started. The async
    /// mutex is the single flight: waiters see the fresh keys when it is
    /// released and do not fetch again.
    refetch: tokio::sync::Mutex<Option<Instant>>,
    /// When the last successful fetch happened and the Cache-Control
    /// max-age it came with.
    last_fetch: parking_lot::Mutex<Option<(Instant, Option<Duration>)>>,
}

impl LearnedKeys {
    /// Keys known from the start (`keys_file`): nothing to learn.
    pub fn with_keys(set: KeySet) -> Self {
        Self {
            keys: ArcSwapOption::new(Some(Arc::new(set))),
            ..Self::default()
        }
    }

    /// The identity of what is learned: the issuer and where its keys come
    /// from. A changed `jwks_uri` starts afresh; anything else about the
    /// issuer (audiences, algorithms, timeouts, its CA file) does not.
    pub fn memory_key(issuer: &str, source: &KeySource) -> String {
        format!("jwt.keys\n{issuer}\n{source:?}")
    }
}

/// The key store of one issuer in one config generation: its settings and
/// the long-lived [`LearnedKeys`]. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct KeyStore {
    issuer: Arc<str>,
    source: KeySource,
    settings: StoreSettings,
    learned: Arc<LearnedKeys>,
}

impl KeyStore {
    pub fn new(
        issuer: Arc<str>,
        source: KeySource,
        learned: Arc<LearnedKeys>,
        settings: StoreSettings,
    ) -> Self {
        Self {
            issuer,
            source,
            settings,
            learned,
        }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The current keys, if any fetch ever succeeded.
    pub fn keys(&self) -> Option<Arc<KeySet>> {
        self.learned.keys.load_full()
    }

    /// Whether the issuer has keys (what `/readyz` waits for).
    pub fn ready(&self) -> bool {
        self.learned.keys.load().is_some()
    }

    /// Fetch now and swap the keys in on success; on failure keep the old
    /// ones. Returns the Cache-Control max-age the IdP asked for, if any.
    pub async fn refresh(&self) -> Result<Option<Duration>, FetchError> {
        if self.source == KeySource::Static {
            return Ok(None);
        }
        let result = self.fetch().await;
        metrics::jwks_refresh(&self.issuer, result.is_ok());
        match result {
            Ok((set, max_age)) => {
                tracing::debug!(issuer = %self.issuer, keys = set.len(), ignored = set.ignored, "JWKS refreshed");
                self.learned.keys.store(Some(Arc::new(set)));
                *self.learned.last_fetch.lock() = Some((Instant::now(), max_age));
                Ok(max_age)
            }
            Err(e) => {
                tracing::warn!(issuer = %self.issuer, error = %e, kept_keys = self.ready(), "JWKS fetch failed");
                Err(e)
            }
        }
    }

    /// Refetch because a token names a `kid` we do not have (or we have no
    /// keys at all). At most one fetch per `unknown_kid_interval` however
    /// many requests ask; concurrent askers wait for the one in flight and
    /// then read its result. Returns the keys after the attempt.
    pub async fn refetch_for(&self, kid: Option<&str>) -> Option<Arc<KeySet>> {
        let mut last = self.learned.refetch.lock().await;
        // Someone else's fetch may already have brought the key in.
        if let Some(keys) = self.keys() {
            if kid.is_none_or(|k| keys.contains_kid(k)) {
                return Some(keys);
            }
        }
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < self.settings.unknown_kid_interval) {
            return self.keys();
        }
        *last = Some(now);
        let _ = self.refresh().await;
        self.keys()
    }

    /// The refresh loop of this issuer in one generation: runs until the
    /// gateway aborts it when the generation is replaced. The first fetch
    /// is due at once without keys, else when the last good fetch (perhaps
    /// made under an earlier generation) says.
    pub async fn run_refresh(self: Arc<Self>) {
        if self.source == KeySource::Static {
            return;
        }
        let mut next = self.first_refresh_in();
        let mut retry = RETRY_START;
        loop {
            tokio::time::sleep(next).await;
            next = match self.refresh().await {
                Ok(max_age) => {
                    retry = RETRY_START;
                    self.next_refresh(max_age)
                }
                Err(_) => {
                    let wait = retry.min(self.settings.refresh_min);
                    retry = retry.saturating_mul(2);
                    wait
                }
            };
        }
    }

    /// How long until the first refresh of a new loop is due.
    pub fn first_refresh_in(&self) -> Duration {
        if !self.ready() {
            return Duration::ZERO;
        }
        match *self.learned.last_fetch.lock() {
            None => self.next_refresh(None),
            Some((at, max_age)) => {
                (at + self.next_refresh(max_age)).saturating_duration_since(Instant::now())
            }
        }
    }

    /// Honour the IdP's max-age within the configured bounds.
    pub fn next_refresh(&self, max_age: Option<Duration>) -> Duration {
        max_age
            .unwrap_or(self.settings.refresh_max)
            .clamp(self.settings.refresh_min, self.settings.refresh_max)
    }

    async fn fetch(&self) -> Result<(KeySet, Option<Duration>), FetchError> {
        let jwks_uri = match &self.source {
            KeySource::Static => return Err(FetchError::Http("static keys".into())),
            KeySource::JwksUri(u) => u.clone(),
            KeySource::Discovery { url } => {
                let (body, _) = self.get(url).await?;
                let doc: DiscoveryDoc =
                    serde_json::from_slice(&body).map_err(|_| FetchError::Discovery)?;
                // OIDC Discovery §4.3: a mix-up defence; the document must
                // speak for exactly the issuer we trust.
                if doc.issuer != *self.issuer {
                    return Err(FetchError::IssuerMismatch);
                }
                check_url(&doc.jwks_uri, self.settings.allow_insecure_http)
                    .map_err(FetchError::JwksUri)?
            }
        };
        let (body, max_age) = self.get(&jwks_uri).await?;
        Ok((KeySet::from_jwks(&body)?, max_age))
    }

    async fn get(&self, url: &str) -> Result<(Vec<u8>, Option<Duration>), FetchError> {
        let mut resp = self
            .settings
            .client
            .get(url)
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| FetchError::Http(e.without_url().to_string()))?;
        if !resp.status().is_success() {
            return Err(FetchError::Status(resp.status().as_u16()));
        }
        let max_age = resp
            .headers()
            .get(http::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age);
        if resp.content_length().is_some_and(|l| l > MAX_BODY as u64) {
            return Err(FetchError::TooLarge);
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| FetchError::Http(e.without_url().to_string()))?
        {
            if body.len().saturating_add(chunk.len()) > MAX_BODY {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body, max_age))
    }
}

/// `max-age=N` from a Cache-Control value; `no-store`/`no-cache` mean 0
/// (the bounds then apply the minimum).
pub fn max_age(cache_control: &str) -> Option<Duration> {
    let mut out = None;
    for directive in cache_control.split(',').map(str::trim) {
        let (name, value) = directive.split_once('=').unwrap_or((directive, ""));
        if name.eq_ignore_ascii_case("max-age") {
            out = value
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        } else if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
            return Some(Duration::ZERO);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_max_age() {
        assert_eq!(
            max_age("public, max-age=600"),
            Some(Duration::from_secs(600))
        );
        assert_eq!(max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
        assert_eq!(max_age("max-age=abc"), None);
    }

    #[test]
    fn refresh_honours_max_age_within_bounds() {
        let s = KeyStore::new(
            "https://idp.example".into(),
            KeySource::Static,
            Arc::default(),
            StoreSettings {
                client: reqwest::Client::new(),
                refresh_min: Duration::from_secs(300),
                refresh_max: Duration::from_secs(3600),
                unknown_kid_interval: Duration::from_secs(30),
                allow_insecure_http: false,
            },
        );
        let m = |s: u64| Some(Duration::from_secs(s));
        assert_eq!(s.next_refresh(m(10)), Duration::from_secs(300));
        assert_eq!(s.next_refresh(m(600)), Duration::from_secs(600));
        assert_eq!(s.next_refresh(m(7200)), Duration::from_secs(3600));
        assert_eq!(s.next_refresh(None), Duration::from_secs(3600));
        assert!(!s.ready());
    }
}
