//! The `jwt` filter: takes the token from `authorization`, verifies it (or
//! finds it in the cache), runs the per-request binding checks, and records
//! the verified token for later filters and the upstream.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName};
use ztgate_filter::{
    Background, BuildContext, Decision, Deferred, Facts, Filter, Pending, RequestView, SharedState,
    StateAnswer, StateOp, StateUse, Unavailable,
};

use crate::cache::{Cached, TokenCache};
use crate::config::DpopMode;
use crate::dpop::{self, ProofRequest, ReplayCache, VerifiedProof};
use crate::jwks::{FetchError, KeyStore};
use crate::verify::{self, IssuerPolicy, Verified};
use crate::{cnf, metrics, JwtError};

pub static X_ZTGATE_SUBJECT: HeaderName = ztgate_filter::identity_headers::SUBJECT;
pub static X_ZTGATE_ISSUER: HeaderName = ztgate_filter::identity_headers::ISSUER;
pub static X_ZTGATE_SCOPES: HeaderName = ztgate_filter::identity_headers::SCOPES;
pub static DPOP: HeaderName = HeaderName::from_static("dpop");

/// The filter-wide settings, resolved from `jwt:` by [`crate::build`].
#[derive(Debug, Clone)]
pub struct FilterSettings {
    pub max_token_size: usize,
    pub cache_capacity: usize,
    pub required: bool,
    /// `keys_file`s: a change reloads the config.
    pub key_files: Vec<std::path::PathBuf>,
}

/// How the token was presented (RFC 6750 §2.1, RFC 9449 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Bearer,
    Dpop,
}

/// The token from `authorization`: `None` when there is none we understand.
/// Two `authorization` headers are malformed (which one would we check?).
pub fn extract(headers: &HeaderMap) -> Result<Option<(Scheme, &str)>, JwtError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(JwtError::Malformed("more than one authorization header"));
    }
    let value = value
        .to_str()
        .map_err(|_| JwtError::Malformed("authorization is not visible ASCII"))?;
    let Some((scheme, rest)) = value.split_once(' ') else {
        return Ok(None);
    };
    let scheme = if scheme.eq_ignore_ascii_case("bearer") {
        Scheme::Bearer
    } else if scheme.eq_ignore_ascii_case("dpop") {
        Scheme::Dpop
    } else {
        return Ok(None);
    };
    let token = rest.trim_matches(' ');
    if token.is_empty() {
        return Ok(None);
    }
    Ok(Some((scheme, token)))
}

/// One issuer: its policy and its keys.
struct Issuer {
    policy: IssuerPolicy,
    store: Arc<KeyStore>,
}

/// The `jwt` filter of one config generation. Its memory — each issuer's
/// keys, the verified-token cache, the DPoP replay cache — is claimed from
/// the gateway's [`ztgate_filter::Memory`] and outlives the generation.
pub struct JwtFilter {
    settings: FilterSettings,
    issuers: Vec<Issuer>,
    cache: Arc<TokenCache>,
    replay: Arc<ReplayCache>,
    /// The replay cache shared by every replica, when configured.
    shared: Option<SharedState>,
}

impl JwtFilter {
    pub(crate) fn new(
        settings: FilterSettings,
        issuers: Vec<(IssuerPolicy, KeyStore)>,
        ctx: &BuildContext,
    ) -> Self {
        let capacity = settings.cache_capacity;
        let cache = ctx
            .memory
            .claim(&format!("jwt.token_cache;{capacity}"), || {
                TokenCache::new(capacity)
            });
        // One replay cache whatever the issuers: a replay key is the proof
        // key's thumbprint and the `jti`, which no config change makes
        // reusable.
        let replay = ctx.memory.claim("jwt.dpop_replay", ReplayCache::default);
        Self {
            shared: ctx.state.clone(),
            settings,
            issuers: issuers
                .into_iter()
                .map(|(policy, store)| Issuer {
                    policy,
                    store: Arc::new(store),
                })
                .collect(),
            cache,
            replay,
        }
    }

    /// The key stores, one per issuer (for status pages and tests).
    pub fn stores(&self) -> impl Iterator<Item = &Arc<KeyStore>> {
        self.issuers.iter().map(|i| &i.store)
    }

    /// Verified tokens currently cached.
    pub fn cached_tokens(&self) -> usize {
        self.cache.len()
    }

    /// Every issuer has keys: part of `/readyz`.
    pub fn ready(&self) -> bool {
        self.issuers.iter().all(|i| i.store.ready())
    }

    /// Fetch the keys of every issuer that has none yet, concurrently
    /// (what `explain` does before evaluating offline). A failure is
    /// returned per issuer and leaves that issuer not ready (its requests
    /// get `jwks_unavailable` until a fetch succeeds).
    pub async fn start(&self) -> Vec<(Arc<str>, Result<(), FetchError>)> {
        let mut set = tokio::task::JoinSet::new();
        for (i, iss) in self.issuers.iter().enumerate() {
            if iss.store.ready() {
                continue;
            }
            let store = iss.store.clone();
            set.spawn(async move { (i, store.refresh().await.map(|_| ())) });
        }
        let mut out: Vec<(usize, Result<(), FetchError>)> = Vec::with_capacity(self.issuers.len());
        while let Some(done) = set.join_next().await {
            if let Ok(r) = done {
                out.push(r);
            }
        }
        out.sort_by_key(|(i, _)| *i);
        out.into_iter()
            .filter_map(|(i, r)| {
                self.issuers
                    .get(i)
                    .map(|iss| (iss.policy.issuer.clone(), r))
            })
            .collect()
    }

    /// Verify a token on a cache miss: parse, pick the issuer, header rules,
    /// keys (refetching once on an unknown `kid`), signature and claims.
    async fn verify_uncached(&self, token: &str, now: SystemTime) -> Result<Verified, JwtError> {
        let decoded = verify::decode(token, self.settings.max_token_size)?;
        let u = decoded.read()?;
        let idx = verify::select_issuer(&u.claims, self.issuers.iter().map(|i| &i.policy))?;
        let iss = self.issuers.get(idx).ok_or(JwtError::IssuerUnknown)?;
        let alg = verify::check_header(&u.header, &iss.policy)?;
        let keys = match iss.store.keys() {
            Some(k) => k,
            None => iss
                .store
                .refetch_for(None)
                .await
                .ok_or(JwtError::JwksUnavailable)?,
        };
        let signed_by = match verify::check(&u, alg, &iss.policy, &keys, now) {
            Err(JwtError::KeyUnknown) => {
                let keys = iss
                    .store
                    .refetch_for(u.header.kid.as_deref())
                    .await
                    .ok_or(JwtError::JwksUnavailable)?;
                verify::check(&u, alg, &iss.policy, &keys, now)?
            }
            r => r?,
        };
        verify::finish(&u.claims, &iss.policy, idx, signed_by)
    }

    /// The whole decision for one request; `Ok(None)` means no token and
    /// none required. A DPoP replay check against the shared store is
    /// deferred into `pending` (one round trip with the other filters'
    /// checks, see [`ztgate_filter::deferred`]).
    pub async fn decide(
        &self,
        req: &RequestView<'_>,
        pending: &mut Pending,
    ) -> Result<Option<(Arc<Verified>, &IssuerPolicy)>, JwtError> {
        let Some((scheme, token)) = extract(req.headers)? else {
            return if self.settings.required {
                Err(JwtError::Missing)
            } else {
                Ok(None)
            };
        };
        if token.len() > self.settings.max_token_size {
            return Err(JwtError::TooLarge {
                size: token.len(),
                max: self.settings.max_token_size,
            });
        }
        // An entry verified under a policy the issuer no longer has (a
        // reload changed it) is verified again, and one whose signing key
        // the issuer no longer publishes (a rotation, a withdrawn key) too:
        // it then fails as a token of an unknown key would.
        let tag_of = |i: usize| self.issuers.get(i).map(|iss| iss.policy.tag);
        let still_published = |v: &Verified| {
            self.issuers
                .get(v.issuer_index)
                .and_then(|iss| iss.store.keys())
                .is_some_and(|keys| keys.publishes(&v.signed_by))
        };
        let verified = match self.cache.get(token, req.now) {
            Some(c)
                if tag_of(c.verified.issuer_index) == Some(c.policy_tag)
                    && still_published(&c.verified) =>
            {
                metrics::cache(true);
                c.verified
            }
            _ => {
                metrics::cache(false);
                let v = Arc::new(self.verify_uncached(token, req.now).await?);
                if let Some(policy_tag) = tag_of(v.issuer_index) {
                    self.cache.insert(
                        token,
                        Cached {
                            verified: v.clone(),
                            policy_tag,
                        },
                    );
                }
                v
            }
        };
        let policy = &self
            .issuers
            .get(verified.issuer_index)
            .ok_or(JwtError::IssuerUnknown)?
            .policy;
        cnf::check(policy.cert_binding, verified.cnf_x5t.as_deref(), req.peer())?;
        self.check_dpop(req, scheme, token, &verified, policy, pending)?;
        Ok(Some((verified, policy)))
    }

    /// RFC 9449 per-issuer mode; runs on every request, cached or not.
    fn check_dpop(
        &self,
        req: &RequestView<'_>,
        scheme: Scheme,
        token: &str,
        verified: &Verified,
        policy: &IssuerPolicy,
        pending: &mut Pending,
    ) -> Result<(), JwtError> {
        let jkt = verified.cnf_jkt.as_deref();
        match (policy.dpop, scheme, jkt) {
            // A DPoP-bound token used as a plain bearer token is a downgrade.
            (_, Scheme::Bearer, Some(_)) => return Err(JwtError::DpopMissing),
            (DpopMode::Require, Scheme::Bearer, None) => return Err(JwtError::DpopMissing),
            (DpopMode::Off | DpopMode::Allow, Scheme::Bearer, None) => return Ok(()),
            (DpopMode::Off, Scheme::Dpop, _) => {
                return Err(JwtError::DpopInvalid("DPoP is not enabled for this issuer"))
            }
            (_, Scheme::Dpop, None) => return Err(JwtError::DpopBindingMismatch),
            (_, Scheme::Dpop, Some(_)) => {}
        }
        let mut proofs = req.headers.get_all(&DPOP).iter();
        let proof = proofs.next().ok_or(JwtError::DpopMissing)?;
        if proofs.next().is_some() {
            return Err(JwtError::DpopInvalid("more than one DPoP header"));
        }
        let proof = proof
            .to_str()
            .map_err(|_| JwtError::DpopInvalid("not visible ASCII"))?;
        let verified_proof = dpop::verify_proof(
            proof,
            &ProofRequest {
                method: req.method.as_str(),
                authority: req.authority,
                path: req.path,
                token,
            },
            &policy.algorithms,
            policy.dpop_window,
            req.now,
        )?;
        dpop::check_binding(&verified_proof, jkt.unwrap_or_default())?;
        self.check_replay(verified_proof, req.now, pending)
    }

    /// RFC 9449 §11.1: a proof is accepted once. With a shared store every
    /// replica sees every `jti`: the check is deferred to the chain, and if
    /// the store has no answer, `deny` refuses (`state_unavailable`) and
    /// `allow` falls back to this replica's cache.
    fn check_replay(
        &self,
        proof: VerifiedProof,
        now: SystemTime,
        pending: &mut Pending,
    ) -> Result<(), JwtError> {
        let Some(shared) = &self.shared else {
            return self.replay.check_and_insert(&proof, now);
        };
        // Remember the jti for as long as the proof could be accepted.
        let ttl = proof
            .expires
            .duration_since(now)
            .unwrap_or_default()
            .max(Duration::from_secs(1));
        let key = format!("dpop:{}", hex::encode(proof.replay_key));
        let on_unavailable = shared.on_unavailable(StateUse::Dpop);
        let local = self.replay.clone();
        pending.push(Deferred {
            used_by: StateUse::Dpop,
            op: StateOp::InsertOnce { key, ttl },
            settle: Box::new(move |answer| {
                let verdict = match answer {
                    Ok(StateAnswer::Inserted(true)) => Ok(()),
                    Ok(StateAnswer::Inserted(false)) => Err(JwtError::DpopReplay),
                    Ok(StateAnswer::Hit(_)) => Err(JwtError::StateUnavailable),
                    Err(e) => {
                        tracing::debug!(error = %e, "DPoP replay check: shared store has no answer");
                        match on_unavailable {
                            Unavailable::Deny => Err(JwtError::StateUnavailable),
                            Unavailable::Allow => local.check_and_insert(&proof, now),
                        }
                    }
                };
                match verdict {
                    Ok(()) => Decision::Continue,
                    Err(e) => Decision::Deny(e.denial()),
                }
            }),
        });
        Ok(())
    }
}

#[async_trait::async_trait]
impl Filter for JwtFilter {
    fn name(&self) -> &'static str {
        ztgate_filter::FilterKind::Jwt.as_str()
    }

    fn background(&self) -> Vec<Background> {
        self.stores()
            .map(|s| Box::pin(s.clone().run_refresh()) as Background)
            .collect()
    }

    async fn prepare(&self) -> Vec<String> {
        self.start()
            .await
            .into_iter()
            .filter_map(|(issuer, r)| r.err().map(|e| format!("issuer {issuer}: {e}")))
            .collect()
    }

    fn not_ready(&self) -> Option<String> {
        let missing: Vec<&str> = self
            .stores()
            .filter(|s| !s.ready())
            .map(|s| s.issuer())
            .collect();
        (!missing.is_empty()).then(|| format!("no signing keys yet for {}", missing.join(", ")))
    }

    fn watched_files(&self) -> Vec<PathBuf> {
        self.settings.key_files.clone()
    }

    async fn evaluate(&self, req: &RequestView<'_>, facts: &mut Facts) -> Decision {
        match self.decide(req, &mut facts.pending).await {
            Ok(None) => Decision::Continue,
            Ok(Some((v, policy))) => {
                if let Some(sub) = &v.subject_header {
                    facts.set_upstream_header(X_ZTGATE_SUBJECT.clone(), sub.clone());
                }
                facts.set_upstream_header(X_ZTGATE_ISSUER.clone(), policy.issuer_header.clone());
                facts.set_upstream_header(X_ZTGATE_SCOPES.clone(), v.scopes_header.clone());
                if !policy.forward_token {
                    facts.strip_headers.push(AUTHORIZATION);
                    facts.strip_headers.push(DPOP.clone());
                }
                facts.set_token(v.token.clone());
                Decision::Continue
            }
            Err(e) => Decision::Deny(e.denial()),
        }
    }
}
