//! What filters learned about a request, for later filters, the upstream
//! headers and the audit log.
//!
//! # Who may write a fact
//!
//! Each section ([`PeerIdentity`], [`VerifiedToken`], [`DeviceFacts`],
//! [`SelectedRoute`]) is a claim one filter makes after checking it: a
//! token is verified only because `jwt` checked its signature, an identity
//! is proven only because `mtls` applied the SVID rules. Every other filter
//! reads them (`route` matches on scopes, `ratelimit` keys on the subject),
//! so a section that any filter could construct would be a section any
//! filter could forge.
//!
//! Rust's privacy cannot say "only the crate `ztgate-jwt`": these types live
//! here, in the crate every filter depends on, so that readers need nothing
//! else, and a constructor visible to `ztgate-jwt` is visible to all. What
//! this module does instead:
//! - every field is private and read through accessors, so a section is
//!   built only through its one constructor and never edited afterwards
//!   (there is no `&mut` access to a section in [`Facts`]; a setter
//!   replaces it whole);
//! - each constructor is named for its owner (`attested_by_mtls`,
//!   `attested_by_jwt`, `attested_by_device`, `attested_by_route`), so a
//!   forgery is a visible, greppable call, and it takes what proves the
//!   fact where this crate can see the proof ([`PeerIdentity`] is described
//!   from the verified [`PeerCertificate`] itself, not from loose strings);
//! - the test `sections_are_attested_only_by_their_owner` below reads the
//!   workspace's sources and fails when a constructor is called outside its
//!   owning crate in non-test code. That is the enforcement: a compile-time
//!   guarantee is not available across crates, a failing test is.
//!
//! Test code (files under `tests/` or `benches/`, `tests.rs` modules and
//! everything after a file's `#[cfg(test)]`) may attest anything: fixtures
//! need a token without an IdP.

use http::{HeaderName, HeaderValue};
use std::sync::Arc;
use std::time::SystemTime;

use crate::{PeerCertificate, SpiffeId};

/// The workload identity proven by the client certificate (from `mtls`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// `spiffe://trust-domain/path`, when the leaf is a valid X.509-SVID.
    spiffe_id: Option<String>,
    trust_domain: Option<String>,
    dns_sans: Vec<String>,
    subject: String,
    /// SHA-256 of the leaf DER.
    thumbprint: [u8; 32],
}

impl PeerIdentity {
    /// The `mtls` filter's constructor, and only its: the identity of the
    /// connection's verified leaf `cert`, with `svid` when the leaf passed
    /// the X.509-SVID rules (`None` when it did not or had no SPIFFE ID).
    ///
    /// Everything but the SPIFFE ID is read from the certificate, so the
    /// identity cannot name another subject or thumbprint than the
    /// certificate the TLS layer verified. See the module docs for why the
    /// name, and a test rather than privacy, keep other filters out.
    pub fn attested_by_mtls(cert: &PeerCertificate, svid: Option<SpiffeId>) -> Self {
        let (spiffe_id, trust_domain) = match svid {
            Some(id) => {
                let td = id.trust_domain().to_owned();
                (Some(id.into_string()), Some(td))
            }
            None => (None, None),
        };
        Self {
            spiffe_id,
            trust_domain,
            dns_sans: cert.dns_sans.clone(),
            subject: cert.subject.clone(),
            thumbprint: cert.sha256,
        }
    }

    /// `spiffe://trust-domain/path`, when the leaf is a valid X.509-SVID.
    pub fn spiffe_id(&self) -> Option<&str> {
        self.spiffe_id.as_deref()
    }

    /// The SPIFFE ID's trust domain, when there is one.
    pub fn trust_domain(&self) -> Option<&str> {
        self.trust_domain.as_deref()
    }

    /// The leaf's DNS SANs, in certificate order.
    pub fn dns_sans(&self) -> &[String] {
        &self.dns_sans
    }

    /// RFC 4514-style subject of the leaf.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// SHA-256 of the leaf DER.
    pub fn thumbprint(&self) -> &[u8; 32] {
        &self.thumbprint
    }
}

/// A bearer token that passed every check of its issuer (from `jwt`).
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken {
    issuer: Arc<str>,
    subject: Option<String>,
    /// Normalised: split on whitespace, deduplicated, sorted.
    scopes: Vec<String>,
    /// `exp` of the token.
    expires_at: SystemTime,
    /// Every claim, for policies that read other claims (device binding).
    claims: Arc<TokenClaims>,
}

/// A token's claims object as its issuer signed it: the JSON text, made a
/// map only when a filter first reads a claim by name (device binding,
/// policy input). Most calls never do, and building a JSON tree of every
/// claim cost a new token more than checking them (≈ 10k instructions).
#[derive(Debug)]
pub struct TokenClaims {
    json: Box<str>,
    map: std::sync::OnceLock<serde_json::Map<String, serde_json::Value>>,
}

impl TokenClaims {
    /// `json` is the claims object the `jwt` filter has already parsed
    /// and checked; text that is not an object reads as no claims.
    pub fn new(json: impl Into<Box<str>>) -> Self {
        Self {
            json: json.into(),
            map: std::sync::OnceLock::new(),
        }
    }

    /// Every claim, parsed on first use. A repeated name holds its last
    /// value, as the `jwt` filter read it (RFC 7519 §4).
    pub fn map(&self) -> &serde_json::Map<String, serde_json::Value> {
        self.map
            .get_or_init(|| serde_json::from_str(&self.json).unwrap_or_default())
    }

    /// The JSON text of the claims object.
    pub fn json(&self) -> &str {
        &self.json
    }
}

/// No claims: `{}`.
impl Default for TokenClaims {
    fn default() -> Self {
        Self::new("{}")
    }
}

impl PartialEq for TokenClaims {
    fn eq(&self, other: &Self) -> bool {
        self.json == other.json
    }
}

impl VerifiedToken {
    /// The `jwt` filter's constructor, and only its: call it once the
    /// token's signature and every claim rule of `issuer` have passed.
    ///
    /// `scopes` are sorted and deduplicated here (the `jwt` filter already
    /// hands them so) because [`VerifiedToken::has_scope`] searches them
    /// in order. See the module docs for why the name, and a test rather
    /// than privacy, keep other filters out.
    pub fn attested_by_jwt(
        issuer: Arc<str>,
        subject: Option<String>,
        mut scopes: Vec<String>,
        expires_at: SystemTime,
        claims: Arc<TokenClaims>,
    ) -> Self {
        scopes.sort_unstable();
        scopes.dedup();
        Self {
            issuer,
            subject,
            scopes,
            expires_at,
            claims,
        }
    }

    /// The issuer (`iss`) the token was verified against.
    pub fn issuer(&self) -> &Arc<str> {
        &self.issuer
    }

    /// `sub`, when the token has one.
    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }

    /// The granted scopes, deduplicated and sorted.
    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }

    /// `exp` of the token.
    pub fn expires_at(&self) -> SystemTime {
        self.expires_at
    }

    /// Every claim, for policies that read other claims (device binding);
    /// parsed on the first read of any token's claims, then kept with it.
    pub fn claims(&self) -> &serde_json::Map<String, serde_json::Value> {
        self.claims.map()
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes
            .binary_search_by(|s| s.as_str().cmp(scope))
            .is_ok()
    }
}

/// The device the request came from (from `device`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceFacts {
    /// base64url(HMAC-SHA256(secret, canonical signals)).
    fingerprint: String,
    ja4: Option<String>,
    /// ISO country code, `None` when unknown.
    country: Option<String>,
    asn: Option<u32>,
    /// Anonymous-network categories of the client address (config names:
    /// `anonymous`, `vpn`, `tor`, `hosting`, `public_proxy`,
    /// `residential_proxy`); empty when none or no database.
    anonymous: Vec<&'static str>,
}

impl DeviceFacts {
    /// The `device` filter's constructor, and only its: `fingerprint` is
    /// the HMAC under the current secret of the signals it canonicalised,
    /// the rest are the signals as it read them. See the module docs for
    /// why the name, and a test rather than privacy, keep other filters
    /// out.
    pub fn attested_by_device(
        fingerprint: String,
        ja4: Option<String>,
        country: Option<String>,
        asn: Option<u32>,
    ) -> Self {
        Self {
            fingerprint,
            ja4,
            country,
            asn,
            anonymous: Vec::new(),
        }
    }

    /// The same facts with the address's anonymous-network categories (the
    /// `device` filter's, from the Anonymous-IP database).
    pub fn with_anonymous(mut self, categories: Vec<&'static str>) -> Self {
        self.anonymous = categories;
        self
    }

    /// base64url(HMAC-SHA256(secret, canonical signals)).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// JA4 of the connection's ClientHello, when captured.
    pub fn ja4(&self) -> Option<&str> {
        self.ja4.as_deref()
    }

    /// ISO country code, `None` when unknown.
    pub fn country(&self) -> Option<&str> {
        self.country.as_deref()
    }

    /// Autonomous system number, `None` when unknown.
    pub fn asn(&self) -> Option<u32> {
        self.asn
    }

    /// Anonymous-network categories of the client address; empty when
    /// none (or no Anonymous-IP database is configured).
    pub fn anonymous(&self) -> &[&'static str] {
        &self.anonymous
    }
}

/// The route and upstream pool picked for the request (from `route`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectedRoute {
    route: Arc<str>,
    upstream: Arc<str>,
}

impl SelectedRoute {
    /// The `route` filter's constructor, and only its: the route that
    /// matched and the upstream its `select` list picked. See the module
    /// docs for why the name, and a test rather than privacy, keep other
    /// filters out.
    pub fn attested_by_route(route: Arc<str>, upstream: Arc<str>) -> Self {
        Self { route, upstream }
    }

    /// The name of the route that matched.
    pub fn route(&self) -> &Arc<str> {
        &self.route
    }

    /// The name of the upstream pool picked.
    pub fn upstream(&self) -> &Arc<str> {
        &self.upstream
    }
}

/// Everything the chain learned about one request.
///
/// The sections are private: read them through [`Facts::identity`] and
/// friends, write them whole through the setters, with a value only its
/// owner constructs (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// `x-request-id` as sent upstream (kept if sane, else generated).
    pub request_id: String,
    identity: Option<PeerIdentity>,
    token: Option<VerifiedToken>,
    device: Option<DeviceFacts>,
    route: Option<SelectedRoute>,
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
        // Room for what the built-in filters set together (identity, token,
        // device headers) in one allocation, not one and two regrowths.
        if self.upstream_headers.capacity() == 0 {
            self.upstream_headers.reserve_exact(8);
        }
        self.upstream_headers.retain(|(n, _)| n != name);
        self.upstream_headers.push((name, value));
    }

    /// The peer identity `mtls` proved, if it ran and saw a certificate.
    pub fn identity(&self) -> Option<&PeerIdentity> {
        self.identity.as_ref()
    }

    /// The token `jwt` verified, if it ran and accepted one.
    pub fn token(&self) -> Option<&VerifiedToken> {
        self.token.as_ref()
    }

    /// The device `device` described, if it ran.
    pub fn device(&self) -> Option<&DeviceFacts> {
        self.device.as_ref()
    }

    /// The route and upstream `route` picked, if it picked one.
    pub fn route(&self) -> Option<&SelectedRoute> {
        self.route.as_ref()
    }

    /// Record the peer identity (replacing any earlier one).
    pub fn set_identity(&mut self, identity: PeerIdentity) {
        self.identity = Some(identity);
    }

    /// Record the verified token (replacing any earlier one).
    pub fn set_token(&mut self, token: VerifiedToken) {
        self.token = Some(token);
    }

    /// Record the device (replacing any earlier one).
    pub fn set_device(&mut self, device: DeviceFacts) {
        self.device = Some(device);
    }

    /// Record the selected route (replacing any earlier one).
    pub fn set_route(&mut self, route: SelectedRoute) {
        self.route = Some(route);
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

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    /// Each constructor and the directory of the one crate whose non-test
    /// code may call it.
    const OWNERS: [(&str, &str); 4] = [
        ("attested_by_mtls", "plugins/mtls/"),
        ("attested_by_jwt", "plugins/jwt/"),
        ("attested_by_device", "plugins/device/"),
        ("attested_by_route", "plugins/route/"),
    ];

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                // Build output, VCS data and the fuzz harness (test code).
                if !(name.starts_with('.') || name == "target" || name == "fuzz") {
                    rust_files(&path, out);
                }
            } else if name.ends_with(".rs") {
                out.push(path);
            }
        }
    }

    /// Test code may attest anything (fixtures); production code only its
    /// own sections.
    fn is_test_file(rel: &str) -> bool {
        rel.split('/').any(|c| c == "tests" || c == "benches") || rel.ends_with("/tests.rs")
    }

    #[test]
    fn sections_are_attested_only_by_their_owner() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut files = Vec::new();
        rust_files(&root, &mut files);
        assert!(
            files.iter().any(|f| f.ends_with("plugins/mtls/src/lib.rs")),
            "the workspace sources were not found from {}",
            root.display()
        );
        let mut forged = Vec::new();
        let mut attested = [false; OWNERS.len()];
        for file in &files {
            let rel = file
                .strip_prefix(&root)
                .unwrap_or(file)
                .to_string_lossy()
                .replace('\\', "/");
            if is_test_file(&rel) || rel == "plugins/filter/src/facts.rs" {
                continue;
            }
            let text = std::fs::read_to_string(file).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            for (n, line) in code.lines().enumerate() {
                if line.trim_start().starts_with("//") {
                    continue;
                }
                for (i, (ctor, owner)) in OWNERS.iter().enumerate() {
                    if line.contains(&format!("{ctor}(")) {
                        if rel.starts_with(owner) {
                            attested[i] = true;
                        } else {
                            forged.push(format!("{rel}:{}: {ctor}", n + 1));
                        }
                    }
                }
            }
        }
        assert!(
            forged.is_empty(),
            "facts attested outside their owner: {forged:#?}"
        );
        // The scan saw each owner make its claim, so it reads the right code.
        assert_eq!(attested, [true; OWNERS.len()], "{OWNERS:?}");
    }
}
