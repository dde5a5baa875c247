//! The request-filter seam of ztgate.
//!
//! Every policy decision in ztgate is a [`Filter`] over a [`RequestView`]: a
//! borrowed, network-free picture of one request (path, authority, headers,
//! the verified peer certificate, the TLS fingerprint, the client IP). Filters
//! run in the order of the config's `pipeline:` inside a [`Chain`], which
//! applies `enforce`/`shadow` modes in one place and times each filter.
//! What a filter learns (the peer identity, the verified token, the device
//! fingerprint, the selected route) goes into [`Facts`] for later filters,
//! for the upstream headers and for the audit log; each of those sections
//! is read by everyone but constructed only by the filter that owns it (see
//! [`facts`] for how that is kept).
//!
//! A filter never builds a response: it returns a [`Decision`], and the one
//! mapping from a [`Reason`] to a gRPC and an HTTP status lives in
//! [`reason`]. That is what lets `ztgate explain`, the proxy and unit tests
//! run the very same code.

// Input paths must not panic: no indexing that can be out of bounds.
#![cfg_attr(not(test), warn(clippy::indexing_slicing))]

pub mod chain;
pub mod config;
pub mod deferred;
pub mod facts;
pub mod grpc_path;
pub mod identity_headers;
pub mod memory;
pub mod peer;
pub mod reason;
pub mod spiffe;
pub mod state;
pub mod view;
pub mod wildcard;

pub use chain::{Chain, ChainOutcome, FilterVerdict, Stage};
pub use config::{BuildContext, ConfigProblem, FilterKind, Mode};
pub use deferred::{Deferred, Pending, Settle};
pub use facts::{DeviceFacts, Facts, PeerIdentity, SelectedRoute, TokenClaims, VerifiedToken};
pub use memory::Memory;
pub use peer::{PeerCertificate, PeerCertificateError};
pub use reason::{Fault, Outcome};
pub use reason::{GrpcCode, PolicyCode, PolicyCodeError, Reason};
pub use spiffe::{SpiffeAllowList, SpiffeId, SpiffePattern, SpiffePatternError};
pub use state::{
    Bind, Hit, OnUnavailable, SharedState, StateAnswer, StateError, StateOp, StateStore, StateUse,
    Unavailable,
};
pub use view::{ConnMemo, Received, Remembered, RequestView, TlsFacts};

use std::borrow::Cow;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

/// What a filter decided about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Let the request go on to the next filter.
    Continue,
    /// Refuse the request.
    Deny(Denial),
    /// The filter (or one of its rules, e.g. a route in `mode: shadow`) would
    /// have refused, but its policy is in shadow mode: record, do not deny.
    ShadowDeny(Denial),
}

impl Decision {
    /// A denial with a stable reason and a short human message.
    ///
    /// The message reaches the caller (as `grpc-message` or JSON `error`), so
    /// it must never contain a token, a key or a secret.
    pub fn deny(reason: Reason, message: impl Into<Cow<'static, str>>) -> Self {
        Decision::Deny(Denial::new(reason, message))
    }
}

/// A refusal: the stable reason code plus a message for humans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub reason: Reason,
    pub message: Cow<'static, str>,
    /// When the caller may usefully try again (`retry-after`), e.g. the end
    /// of a rate-limit window.
    pub retry_after: Option<Duration>,
}

impl Denial {
    pub fn new(reason: Reason, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            reason,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The same denial with a `retry-after` hint.
    pub fn retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }
}

/// Work a filter runs in the background while its generation is in
/// service (e.g. refreshing an issuer's keys).
pub type Background = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// One request filter.
///
/// Implementations keep their policy in a pure function over the view, their
/// config and inputs they gathered (cached keys, a GeoIP lookup), so that it
/// can be tested without sockets. `evaluate` is async only so that a filter
/// may wait for a dependency (e.g. a rate-limited JWKS refetch on an unknown
/// `kid`); most filters never await.
#[async_trait::async_trait]
pub trait Filter: Send + Sync {
    /// The filter's name as written in `pipeline:` and in the `filter` label
    /// of `ztgate_filter_duration_seconds`.
    fn name(&self) -> &'static str;

    /// Decide about one request. Facts learned are written into `facts`;
    /// headers for the upstream go into `facts.upstream_headers`.
    async fn evaluate(&self, req: &RequestView<'_>, facts: &mut Facts) -> Decision;

    /// Background work to run while this generation is in service, started
    /// by the gateway (at start-up and after every reload) before the
    /// generation takes traffic, never awaited by it. A task must not
    /// block the swap: e.g. the `jwt` filter fetches keys it does not have
    /// yet here, and meanwhile answers `jwks_unavailable`. Tasks that
    /// belong to long-lived state (an issuer's refresh loop) should run
    /// once per state, not once per generation. Default: none.
    fn background(&self) -> Vec<Background> {
        Vec::new()
    }

    /// Work to finish before an offline evaluation (`ztgate explain`),
    /// which has no background: e.g. fetch every issuer's keys once. Each
    /// problem is returned as a line for the user. Default: nothing.
    async fn prepare(&self) -> Vec<String> {
        Vec::new()
    }

    /// Why this filter cannot serve yet (`/readyz`), if it cannot.
    /// Default: always ready.
    fn not_ready(&self) -> Option<String> {
        None
    }

    /// Files this filter read at build time whose change should trigger a
    /// reload (databases, key files). Default: none.
    fn watched_files(&self) -> Vec<PathBuf> {
        Vec::new()
    }

    /// Whether the chain must settle deferred shared-state checks
    /// ([`deferred`]) before this filter runs: true for a filter that
    /// changes shared state inline and must not act on a request an
    /// earlier check will refuse (a first-seen binding). Default: false.
    fn settles_before(&self) -> bool {
        false
    }
}

/// A shared filter is a filter: the gateway keeps an `Arc` to filters that
/// have background work (JWKS refresh) and puts a clone in the chain.
#[async_trait::async_trait]
impl<T: Filter + ?Sized> Filter for std::sync::Arc<T> {
    fn name(&self) -> &'static str {
        (**self).name()
    }

    async fn evaluate(&self, req: &RequestView<'_>, facts: &mut Facts) -> Decision {
        (**self).evaluate(req, facts).await
    }

    fn background(&self) -> Vec<Background> {
        (**self).background()
    }

    async fn prepare(&self) -> Vec<String> {
        (**self).prepare().await
    }

    fn not_ready(&self) -> Option<String> {
        (**self).not_ready()
    }

    fn watched_files(&self) -> Vec<PathBuf> {
        (**self).watched_files()
    }

    fn settles_before(&self) -> bool {
        (**self).settles_before()
    }
}
