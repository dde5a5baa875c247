//! What filters learned about a request, for later filters, the upstream
//! headers and the audit log.

use http::{HeaderName, HeaderValue};
use std::sync::Arc;
use std::time::SystemTime;

/// The workload identity proven by the client certificate (from `mtls`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// `spiffe://trust-domain/path`, when the leaf is a valid X.509-SVID.
    pub spiffe_id: Option<String>,
    pub trust_domain: Option<String>,
    pub dns_sans: Vec<String>,
    pub subject: String,
    /// SHA-256 of the leaf DER.
    pub thumbprint: [u8; 32],
}

/// A bearer token that passed every check of its issuer (from `jwt`).
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken {
    pub issuer: Arc<str>,
    pub subject: Option<String>,
    /// Normalised: split on whitespace, deduplicated, sorted.
    pub scopes: Vec<String>,
    /// `exp` of the token.
    pub expires_at: SystemTime,
    /// Every claim, for policies that read other claims (device binding).
    pub claims: Arc<serde_json::Map<String, serde_json::Value>>,
}

impl VerifiedToken {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes
            .binary_search_by(|s| s.as_str().cmp(scope))
            .is_ok()
    }
}

/// The device the request came from (from `device`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceFacts {
    /// base64url(HMAC-SHA256(secret, canonical signals)).
    pub fingerprint: String,
    pub ja4: Option<String>,
    /// ISO country code, `None` when unknown.
    pub country: Option<String>,
    pub asn: Option<u32>,
}

/// The route and upstream pool picked for the request (from `route`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectedRoute {
    pub route: Arc<str>,
    pub upstream: Arc<str>,
}

/// Everything the chain learned about one request.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// `x-request-id` as sent upstream (kept if sane, else generated).
    pub request_id: String,
    pub identity: Option<PeerIdentity>,
    pub token: Option<VerifiedToken>,
    pub device: Option<DeviceFacts>,
    pub route: Option<SelectedRoute>,
    /// Headers to add (replacing any value) on the upstream request.
    pub upstream_headers: Vec<(HeaderName, HeaderValue)>,
    /// Headers to remove from the upstream request.
    pub strip_headers: Vec<HeaderName>,
    /// Shared-state checks deferred to the chain ([`crate::deferred`]).
    pub pending: crate::deferred::Pending,
}

impl Facts {
    pub fn new(request_id: String) -> Self {
        Self {
            request_id,
            ..Self::default()
        }
    }

    /// Set an upstream header, replacing an earlier value set by a filter.
    pub fn set_upstream_header(&mut self, name: HeaderName, value: HeaderValue) {
        self.upstream_headers.retain(|(n, _)| n != name);
        self.upstream_headers.push((name, value));
    }

    pub fn spiffe_id(&self) -> Option<&str> {
        self.identity.as_ref().and_then(|i| i.spiffe_id.as_deref())
    }

    pub fn subject(&self) -> Option<&str> {
        self.token.as_ref().and_then(|t| t.subject.as_deref())
    }

    pub fn fingerprint(&self) -> Option<&str> {
        self.device.as_ref().map(|d| d.fingerprint.as_str())
    }

    pub fn scopes(&self) -> &[String] {
        self.token
            .as_ref()
            .map(|t| t.scopes.as_slice())
            .unwrap_or(&[])
    }
}
