//! The `mtls` filter: turns the verified client certificate into a workload
//! identity and applies the global SPIFFE policy.
//!
//! The chain was already verified against the trust bundle in the TLS
//! handshake; this filter applies the X.509-SVID rules (SPIFFE X509-SVID.md
//! §2 and §4.1: exactly one URI SAN that is a SPIFFE ID, leaf not a CA) and
//! the allow-lists of trust domains and SPIFFE ID patterns. Per-route SPIFFE
//! rules belong to the `route` filter.
//!
//! Upstream headers: `x-ztgate-spiffe-id` and `x-forwarded-client-cert` in
//! Envoy's XFCC format (`Hash=<sha256 hex>;Subject="…";URI=spiffe://…;DNS=…`).

// Input paths must not panic: no indexing that can be out of bounds.
#![cfg_attr(not(test), warn(clippy::indexing_slicing))]

mod build;
pub mod config;
mod xfcc;

use http::HeaderValue;
use ztgate_filter::{
    Decision, Facts, Filter, PeerCertificate, PeerIdentity, Reason, RequestView, SpiffeId,
    SpiffePattern,
};

pub use build::build;
pub use xfcc::xfcc_value;

// Named where the gateway's reserved list is kept, so what this filter
// asserts is what the gateway strips from clients.
use ztgate_filter::identity_headers::{
    FORWARDED_CLIENT_CERT as XFCC_HEADER, SPIFFE_ID as SPIFFE_ID_HEADER,
};

/// The built `mtls` filter.
#[derive(Debug, Clone)]
pub struct MtlsFilter {
    require_cert: bool,
    require_svid: bool,
    trust_domains: Vec<String>,
    allowed_ids: Vec<SpiffePattern>,
}

/// Why a certificate is not an X.509-SVID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SvidError {
    NoUriSan,
    ManyUriSans(usize),
    NotSpiffe(String),
    LeafIsCa,
}

impl std::fmt::Display for SvidError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SvidError::NoUriSan => f.write_str("client certificate has no URI SAN"),
            SvidError::ManyUriSans(n) => {
                write!(
                    f,
                    "client certificate has {n} URI SANs, an SVID has exactly one"
                )
            }
            SvidError::NotSpiffe(e) => write!(f, "URI SAN is not a SPIFFE ID: {e}"),
            SvidError::LeafIsCa => f.write_str("client certificate is a CA certificate"),
        }
    }
}

/// Apply the X.509-SVID rules to a leaf and return its SPIFFE ID.
pub fn svid_id(cert: &PeerCertificate) -> Result<SpiffeId, SvidError> {
    if cert.is_ca {
        return Err(SvidError::LeafIsCa);
    }
    match cert.uri_sans.as_slice() {
        [] => Err(SvidError::NoUriSan),
        [one] => SpiffeId::parse(one).map_err(|e| SvidError::NotSpiffe(e.to_string())),
        many => Err(SvidError::ManyUriSans(many.len())),
    }
}

/// [`svid_id`] remembered for the connection (with its `x-ztgate-spiffe-id`
/// value): the certificate never changes under a connection, and parsing
/// the ID was 1k instructions a call. Only an X.509-SVID's one URI SAN is
/// remembered; whatever fails is derived (and refused) anew each time.
fn remembered_svid(
    memo: &ztgate_filter::Remembered<Box<str>, (SpiffeId, HeaderValue)>,
    cert: &PeerCertificate,
) -> Result<(SpiffeId, Option<HeaderValue>), SvidError> {
    let [uri] = cert.uri_sans.as_slice() else {
        return svid_id(cert).map(|id| (id, None));
    };
    if !cert.is_ca {
        if let Some((id, header)) = memo.get(uri.as_str()) {
            return Ok((id, Some(header)));
        }
    }
    let id = svid_id(cert)?;
    let header = HeaderValue::from_str(id.as_str()).ok();
    if let Some(h) = &header {
        memo.remember(uri.as_str().into(), (id.clone(), h.clone()));
    }
    Ok((id, header))
}

impl MtlsFilter {
    /// The pure decision: identity (if any) and the verdict.
    pub fn decide(&self, cert: Option<&PeerCertificate>) -> (Option<PeerIdentity>, Decision) {
        self.decide_parsed(cert, cert.map(svid_id))
    }

    /// [`MtlsFilter::decide`] with the certificate's SVID already parsed.
    fn decide_parsed(
        &self,
        cert: Option<&PeerCertificate>,
        svid: Option<Result<SpiffeId, SvidError>>,
    ) -> (Option<PeerIdentity>, Decision) {
        let Some(cert) = cert else {
            let d = if self.require_cert {
                Decision::deny(Reason::ClientCertMissing, "client certificate required")
            } else {
                Decision::Continue
            };
            return (None, d);
        };
        let id = match svid.unwrap_or_else(|| svid_id(cert)) {
            Ok(id) => id,
            Err(e) if self.require_svid => {
                return (
                    Some(PeerIdentity::attested_by_mtls(cert, None)),
                    Decision::deny(Reason::InvalidSvid, e.to_string()),
                )
            }
            Err(_) => {
                let identity = PeerIdentity::attested_by_mtls(cert, None);
                return (Some(identity), self.check_unbound());
            }
        };
        let decision = self.check(&id);
        (
            Some(PeerIdentity::attested_by_mtls(cert, Some(id))),
            decision,
        )
    }

    /// A certificate without a SPIFFE ID passes only when no SPIFFE policy is set.
    fn check_unbound(&self) -> Decision {
        if self.trust_domains.is_empty() && self.allowed_ids.is_empty() {
            Decision::Continue
        } else {
            Decision::deny(
                Reason::SpiffeIdNotAllowed,
                "client certificate has no SPIFFE ID",
            )
        }
    }

    fn check(&self, id: &SpiffeId) -> Decision {
        if !self.trust_domains.is_empty()
            && !self.trust_domains.iter().any(|td| td == id.trust_domain())
        {
            return Decision::deny(Reason::TrustDomainNotAllowed, "trust domain not allowed");
        }
        if !self.allowed_ids.is_empty() && !self.allowed_ids.iter().any(|p| p.matches(id.as_str()))
        {
            return Decision::deny(Reason::SpiffeIdNotAllowed, "SPIFFE ID not allowed");
        }
        Decision::Continue
    }
}

#[async_trait::async_trait]
impl Filter for MtlsFilter {
    fn name(&self) -> &'static str {
        ztgate_filter::FilterKind::Mtls.as_str()
    }

    async fn evaluate(&self, req: &RequestView<'_>, facts: &mut Facts) -> Decision {
        let cert = req.peer();
        let svid = cert.map(|c| remembered_svid(&req.tls.memo.svid, c));
        let spiffe_header = match &svid {
            Some(Ok((_, header))) => header.clone(),
            _ => None,
        };
        let (identity, decision) = self.decide_parsed(cert, svid.map(|r| r.map(|(id, _)| id)));
        if let (Some(id), Some(cert)) = (&identity, cert) {
            if id.spiffe_id().is_some() {
                if let Some(v) = spiffe_header {
                    facts.set_upstream_header(SPIFFE_ID_HEADER.clone(), v);
                }
            }
            // The same for every request of the connection (its
            // certificate never changes): built once, then remembered
            // (3,300 instructions a call in the full chain's profile).
            let memo = &req.tls.memo.xfcc;
            let key = id.spiffe_id().unwrap_or_default();
            let xfcc = memo.get(key).or_else(|| {
                let v = HeaderValue::from_str(&xfcc_value(cert, id.spiffe_id())).ok()?;
                memo.remember(key.into(), v.clone());
                Some(v)
            });
            if let Some(v) = xfcc {
                facts.set_upstream_header(XFCC_HEADER.clone(), v);
            }
        }
        if let Some(identity) = identity {
            facts.set_identity(identity);
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ztgate_filter::BuildContext;

    fn cert(uris: &[&str], ca: bool) -> PeerCertificate {
        let mut p = rcgen::CertificateParams::new(vec!["w.local".into()]).unwrap();
        for u in uris {
            p.subject_alt_names
                .push(rcgen::SanType::URI((*u).try_into().unwrap()));
        }
        if ca {
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        PeerCertificate::from_der(p.self_signed(&key).unwrap().der()).unwrap()
    }

    fn filter(tds: &[&str], ids: &[&str]) -> MtlsFilter {
        let raw = config::Mtls {
            trust_domains: tds.iter().map(|s| s.to_string()).collect(),
            allowed_ids: ids.iter().map(|s| s.to_string()).collect(),
            ..config::Mtls::default()
        };
        let ctx = BuildContext {
            base_dir: ".".into(),
            upstreams: vec![],
            pipeline: vec![],
            ..Default::default()
        };
        build(&raw, &ctx, "mtls").unwrap()
    }

    fn reason(d: &Decision) -> Option<Reason> {
        match d {
            Decision::Deny(d) => Some(d.reason),
            _ => None,
        }
    }

    #[test]
    fn svid_rules() {
        let f = filter(&[], &[]);
        let ok = cert(&["spiffe://acme.test/ns/a/sa/b"], false);
        let (id, d) = f.decide(Some(&ok));
        assert_eq!(d, Decision::Continue);
        let id = id.unwrap();
        assert_eq!(id.spiffe_id(), Some("spiffe://acme.test/ns/a/sa/b"));
        assert_eq!(id.trust_domain(), Some("acme.test"));
        let two = cert(&["spiffe://acme.test/a", "spiffe://acme.test/b"], false);
        assert_eq!(reason(&f.decide(Some(&two)).1), Some(Reason::InvalidSvid));
        let none = cert(&[], false);
        assert_eq!(reason(&f.decide(Some(&none)).1), Some(Reason::InvalidSvid));
        let ca = cert(&["spiffe://acme.test/a"], true);
        assert_eq!(reason(&f.decide(Some(&ca)).1), Some(Reason::InvalidSvid));
        let http = cert(&["https://acme.test/a"], false);
        assert_eq!(reason(&f.decide(Some(&http)).1), Some(Reason::InvalidSvid));
        assert_eq!(reason(&f.decide(None).1), Some(Reason::ClientCertMissing));
    }

    #[test]
    fn policy() {
        let f = filter(&["acme.test"], &["spiffe://acme.test/ns/shop/*/*"]);
        let ok = cert(&["spiffe://acme.test/ns/shop/sa/orders"], false);
        assert_eq!(f.decide(Some(&ok)).1, Decision::Continue);
        let other_ns = cert(&["spiffe://acme.test/ns/dev/sa/orders"], false);
        assert_eq!(
            reason(&f.decide(Some(&other_ns)).1),
            Some(Reason::SpiffeIdNotAllowed)
        );
        let foreign = cert(&["spiffe://evil.test/ns/shop/sa/orders"], false);
        assert_eq!(
            reason(&f.decide(Some(&foreign)).1),
            Some(Reason::TrustDomainNotAllowed)
        );
    }

    #[test]
    fn build_reports_every_problem() {
        let raw = config::Mtls {
            trust_domains: vec!["Bad Domain".into()],
            allowed_ids: vec!["http://x".into(), "spiffe://*.test/x".into()],
            ..config::Mtls::default()
        };
        let ctx = BuildContext {
            base_dir: ".".into(),
            upstreams: vec![],
            pipeline: vec![],
            ..Default::default()
        };
        let errs = build(&raw, &ctx, "mtls").unwrap_err();
        let paths: Vec<_> = errs.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "mtls.trust_domains[0]",
                "mtls.allowed_ids[0]",
                "mtls.allowed_ids[1]"
            ]
        );
    }

    /// A connection presenting `c`.
    fn conn(c: PeerCertificate) -> ztgate_filter::TlsFacts {
        ztgate_filter::TlsFacts {
            peer: Some(std::sync::Arc::new(c)),
            ..ztgate_filter::TlsFacts::default()
        }
    }

    /// The filter over one request of the connection `tls`: its decision
    /// and the value of the upstream header `name`, if set.
    async fn run(
        f: &MtlsFilter,
        tls: &ztgate_filter::TlsFacts,
        name: &http::HeaderName,
    ) -> (Decision, Option<String>) {
        let headers = http::HeaderMap::new();
        let view = ztgate_filter::RequestView {
            method: &http::Method::POST,
            path: "/a.B/C",
            authority: None,
            headers: &headers,
            tls,
            client_ip: None,
            socket_ip: None,
            now: std::time::SystemTime::now(),
        };
        let mut facts = ztgate_filter::Facts::default();
        let d = f.evaluate(&view, &mut facts).await;
        let h = facts
            .upstream_headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.to_str().unwrap().to_owned());
        (d, h)
    }

    /// The XFCC value of a connection is built once and remembered: the
    /// next request of the same connection gets the same header, and a
    /// connection with another certificate (its own memo) its own.
    #[tokio::test]
    async fn the_connection_remembers_its_xfcc_value() {
        let f = filter(&["acme.test"], &[]);
        let a = conn(cert(&["spiffe://acme.test/ns/a/sa/x"], false));
        let b = conn(cert(&["spiffe://acme.test/ns/b/sa/y"], false));
        async fn xfcc(f: &MtlsFilter, tls: &ztgate_filter::TlsFacts) -> String {
            let (d, h) = run(f, tls, &XFCC_HEADER).await;
            assert_eq!(d, Decision::Continue);
            h.unwrap()
        }
        let first = xfcc(&f, &a).await;
        let expected = xfcc_value(
            a.peer.as_deref().unwrap(),
            Some("spiffe://acme.test/ns/a/sa/x"),
        );
        assert_eq!(first, expected);
        assert_eq!(xfcc(&f, &a).await, first, "remembered");
        assert!(a.memo.xfcc.get("spiffe://acme.test/ns/a/sa/x").is_some());
        let other = xfcc(&f, &b).await;
        assert_ne!(other, first);
        assert!(
            other.contains("URI=spiffe://acme.test/ns/b/sa/y"),
            "{other}"
        );
    }

    /// The SPIFFE ID is parsed once per connection and remembered with its
    /// `x-ztgate-spiffe-id` value; the trust-domain and allow-list rules still
    /// decide on every request (a reload that narrows them applies to an
    /// open connection), and a certificate that is no SVID is never
    /// remembered.
    #[tokio::test]
    async fn the_connection_remembers_its_svid_but_rules_apply_each_time() {
        let id = "spiffe://acme.test/ns/a/sa/x";
        let tls = conn(cert(&[id], false));
        let with_id = async |f: &MtlsFilter, tls| run(f, tls, &SPIFFE_ID_HEADER).await;
        let allow = filter(&["acme.test"], &[]);
        assert_eq!(
            with_id(&allow, &tls).await,
            (Decision::Continue, Some(id.into()))
        );
        assert!(tls.memo.svid.get(id).is_some(), "remembered");
        assert_eq!(
            with_id(&allow, &tls).await,
            (Decision::Continue, Some(id.into()))
        );
        // A narrower generation, same connection: refused from the memo too.
        let narrow = filter(&["other.test"], &[]);
        let (d, _) = with_id(&narrow, &tls).await;
        assert!(
            matches!(d, Decision::Deny(ref x) if x.reason == Reason::TrustDomainNotAllowed),
            "{d:?}"
        );
        // Two URI SANs: no SVID, nothing remembered.
        let two = conn(cert(&[id, "spiffe://acme.test/b"], false));
        let strict = MtlsFilter {
            require_svid: true,
            ..filter(&["acme.test"], &[])
        };
        let (d, h) = with_id(&strict, &two).await;
        assert!(
            matches!(d, Decision::Deny(ref x) if x.reason == Reason::InvalidSvid),
            "{d:?}"
        );
        assert_eq!(h, None);
        assert!(two.memo.svid.get(id).is_none());
    }
}
