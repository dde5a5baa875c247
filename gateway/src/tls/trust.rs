//! Which anchors may vouch for which client certificates.
//!
//! With one `listener.tls.client_ca` bundle, OpenSSL's chain verification
//! is the whole check. With trust bundles per trust domain
//! (`mtls.trust_bundles`), a verified chain is not enough: a partner's CA,
//! trusted for `spiffe://partner.test/…`, could otherwise mint
//! `spiffe://acme.test/…` and be taken for one of ours. The X.509-SVID spec
//! binds a trust domain to its bundle, so after OpenSSL has built and
//! verified the chain against the union of every anchor, [`ClientTrust::admits`]
//! checks that the chain's anchor belongs to the bundle of the trust domain
//! named in the leaf's SPIFFE ID (and that a leaf without one chains to
//! `client_ca`).
//!
//! Checking the anchor of the chain OpenSSL built (rather than verifying
//! again against the one bundle) costs one hash lookup per handshake. The
//! one case it gets wrong is on the safe side: a leaf that chains to both
//! its own bundle and another (a cross-signed CA) and for which OpenSSL
//! happened to build the other chain is refused, not admitted.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use pingora::tls::x509::store::{X509Store, X509StoreBuilder};
use pingora::tls::x509::{X509Ref, X509};
use sha2::{Digest, Sha256};
use ztgate_filter::SpiffeId;

use super::material::{load_certs, read, MaterialError, TrustBundle, TrustDigest};

/// The client trust in force: `client_ca`, the bundles per trust domain,
/// and the union OpenSSL verifies chains against.
pub struct ClientTrust {
    /// `listener.tls.client_ca`: anchors for every certificate when there
    /// are no trust bundles, and for certificates without a SPIFFE ID when
    /// there are.
    pub client_ca: Option<TrustBundle>,
    /// `mtls.trust_bundles`: a trust domain's anchors.
    pub domains: BTreeMap<String, TrustBundle>,
    /// Every anchor above, for OpenSSL's chain building.
    pub store: X509Store,
    /// SHA-256 of an anchor's DER → what it may vouch for.
    owners: HashMap<[u8; 32], Owners>,
    /// What this trust admits, as a digest: the session id context of the
    /// connections verified under it (see `super::ServerMaterial::trust_id`).
    pub digest: TrustDigest,
}

/// What one anchor vouches for (an anchor may sit in several bundles).
#[derive(Debug, Default)]
struct Owners {
    client_ca: bool,
    domains: BTreeSet<String>,
}

/// Where a trust file was named, so a problem is reported at that key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustSource {
    ClientCa,
    Bundle(String),
}

/// The `reason` label of a certificate a CRL revokes.
pub const REVOKED: &str = "revoked";

/// Why a verified chain is still refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustRefusal {
    #[error("certificate has no SPIFFE ID and does not chain to listener.tls.client_ca")]
    NoSpiffeId,
    #[error("URI SAN `{0}` is not a valid SPIFFE ID")]
    BadSpiffeId(String),
    #[error("certificate names several trust domains")]
    SeveralTrustDomains,
    #[error("no trust bundle for trust domain `{0}`")]
    UnknownTrustDomain(String),
    #[error("certificate for trust domain `{0}` does not chain to that domain's bundle")]
    WrongBundle(String),
}

impl TrustRefusal {
    /// Every `reason` label of `ztgate_client_cert_refusals_total`: the
    /// trust-domain binding's, then `revoked` (a CRL or OCSP) and
    /// `ocsp_unavailable` (OCSP `hard` mode without a good answer).
    pub const LABELS: [&'static str; 7] = [
        "no_spiffe_id",
        "bad_spiffe_id",
        "several_trust_domains",
        "unknown_trust_domain",
        "wrong_trust_bundle",
        REVOKED,
        super::ocsp::UNAVAILABLE,
    ];

    /// The `reason` label of `ztgate_client_cert_refusals_total`.
    pub fn label(&self) -> &'static str {
        match self {
            TrustRefusal::NoSpiffeId => "no_spiffe_id",
            TrustRefusal::BadSpiffeId(_) => "bad_spiffe_id",
            TrustRefusal::SeveralTrustDomains => "several_trust_domains",
            TrustRefusal::UnknownTrustDomain(_) => "unknown_trust_domain",
            TrustRefusal::WrongBundle(_) => "wrong_trust_bundle",
        }
    }
}

fn der_digest(cert: &X509Ref) -> Option<[u8; 32]> {
    cert.to_der().ok().map(|der| Sha256::digest(der).into())
}

impl ClientTrust {
    /// Load `client_ca` and each trust domain's bundle; every problem is
    /// reported, each with the key that named its file.
    pub fn load(
        client_ca: Option<&Path>,
        bundles: &[(String, PathBuf)],
    ) -> Result<Self, Vec<(TrustSource, MaterialError)>> {
        let mut problems = Vec::new();
        let client_ca = client_ca.and_then(|p| match TrustBundle::load(p) {
            Ok(b) => Some(b),
            Err(e) => {
                problems.push((TrustSource::ClientCa, e));
                None
            }
        });
        let mut domains = BTreeMap::new();
        for (td, path) in bundles {
            let source = TrustSource::Bundle(td.clone());
            let valid_name = SpiffeId::parse(&format!("spiffe://{td}"))
                .is_ok_and(|id| id.trust_domain() == td.as_str());
            if !valid_name {
                problems.push((
                    source,
                    MaterialError::BadCertificate {
                        path: path.display().to_string(),
                        reason: format!(
                            "`{td}` is not a trust domain name (lower-case letters, digits, `.`, `-`, `_`)"
                        ),
                    },
                ));
                continue;
            }
            match load_bundle_certs(path).and_then(|certs| TrustBundle::from_certs(path, certs)) {
                Ok(b) => {
                    domains.insert(td.clone(), b);
                }
                Err(e) => problems.push((source, e)),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Self::assemble(client_ca, domains).map_err(|e| vec![(TrustSource::ClientCa, e)])
    }

    /// The trust made of `client_ca` and the bundles per trust domain,
    /// already loaded (from files, or from the SPIFFE Workload API).
    pub fn assemble(
        client_ca: Option<TrustBundle>,
        domains: BTreeMap<String, TrustBundle>,
    ) -> Result<Self, MaterialError> {
        let bad = |reason: String| MaterialError::BadCertificate {
            path: "client trust".into(),
            reason,
        };
        let mut owners: HashMap<[u8; 32], Owners> = HashMap::new();
        // Each anchor once, in the order first seen.
        let mut anchors: Vec<&X509> = Vec::new();
        let tagged = client_ca
            .iter()
            .flat_map(|b| b.certs.iter().map(|c| (None, c)))
            .chain(
                domains
                    .iter()
                    .flat_map(|(td, b)| b.certs.iter().map(move |c| (Some(td), c))),
            );
        for (td, c) in tagged {
            let d = der_digest(c).ok_or_else(|| bad("DER encoding".into()))?;
            let o = owners.entry(d).or_default();
            if !o.client_ca && o.domains.is_empty() {
                anchors.push(c);
            }
            match td {
                None => o.client_ca = true,
                Some(td) => {
                    o.domains.insert(td.clone());
                }
            }
        }
        let mut store = X509StoreBuilder::new().map_err(|e| bad(e.to_string()))?;
        for c in anchors {
            store.add_cert(c.clone()).map_err(|e| bad(e.to_string()))?;
        }
        let mut h = Sha256::new();
        h.update(b"ztgate client trust v2\0");
        match &client_ca {
            Some(b) => {
                h.update([1]);
                h.update(b.digest);
            }
            None => h.update([0]),
        }
        for (td, b) in &domains {
            h.update((td.len() as u64).to_be_bytes());
            h.update(td.as_bytes());
            h.update(b.digest);
        }
        Ok(Self {
            client_ca,
            domains,
            store: store.build(),
            owners,
            digest: h.finalize().into(),
        })
    }

    /// Every anchor with a name for the expiry gauge:
    /// `client_ca:CN` or `trust_bundle:TRUST_DOMAIN:CN`.
    pub fn anchors(&self) -> impl Iterator<Item = (String, &X509)> {
        let ca = self
            .client_ca
            .iter()
            .flat_map(|b| &b.certs)
            .map(|c| (format!("client_ca:{}", super::material::display_name(c)), c));
        let bundles = self.domains.iter().flat_map(|(td, b)| {
            b.certs.iter().map(move |c| {
                (
                    format!("trust_bundle:{td}:{}", super::material::display_name(c)),
                    c,
                )
            })
        });
        ca.chain(bundles)
    }

    /// Whether the chain OpenSSL verified, from `leaf` to `anchor`, may
    /// stand for the leaf's identity (see the module docs).
    pub fn admits(&self, leaf: &X509Ref, anchor: &X509Ref) -> Result<(), TrustRefusal> {
        if self.domains.is_empty() {
            // client_ca alone: the chain verified against it.
            return Ok(());
        }
        let owners = der_digest(anchor).and_then(|d| self.owners.get(&d));
        let mut domain: Option<String> = None;
        for uri in leaf
            .subject_alt_names()
            .iter()
            .flat_map(|names| names.iter().filter_map(|n| n.uri().map(str::to_owned)))
        {
            let scheme = uri.split(':').next().unwrap_or("");
            if !scheme.eq_ignore_ascii_case("spiffe") {
                continue;
            }
            let td = SpiffeId::parse(&uri)
                .map_err(|_| TrustRefusal::BadSpiffeId(uri.chars().take(128).collect()))?
                .trust_domain()
                .to_owned();
            match &domain {
                Some(d) if *d != td => return Err(TrustRefusal::SeveralTrustDomains),
                _ => domain = Some(td),
            }
        }
        match domain {
            None if owners.is_some_and(|o| o.client_ca) => Ok(()),
            None => Err(TrustRefusal::NoSpiffeId),
            Some(td) if owners.is_some_and(|o| o.domains.contains(&td)) => Ok(()),
            Some(td) if !self.domains.contains_key(&td) => {
                Err(TrustRefusal::UnknownTrustDomain(td))
            }
            Some(td) => Err(TrustRefusal::WrongBundle(td)),
        }
    }
}

/// A trust domain's bundle file: PEM certificates, or the SPIFFE bundle
/// format (a JWKS whose `x509-svid` keys carry the CA in `x5c`; other keys,
/// such as `jwt-svid` ones, are not for TLS and are skipped).
pub fn load_bundle_certs(path: &Path) -> Result<Vec<X509>, MaterialError> {
    let bytes = read(path)?;
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return load_certs(path);
    }
    let bad = |reason: String| MaterialError::BadCertificate {
        path: path.display().to_string(),
        reason,
    };
    #[derive(serde::Deserialize)]
    struct Jwks {
        keys: Vec<Jwk>,
    }
    #[derive(serde::Deserialize)]
    struct Jwk {
        #[serde(rename = "use")]
        use_: Option<String>,
        #[serde(default)]
        x5c: Vec<String>,
    }
    let jwks: Jwks = serde_json::from_slice(&bytes)
        .map_err(|e| bad(format!("not a SPIFFE bundle (JWKS): {e}")))?;
    let mut certs = Vec::new();
    for (i, k) in jwks.keys.iter().enumerate() {
        if k.use_.as_deref() != Some("x509-svid") {
            continue;
        }
        // SPIFFE Trust Domain and Bundle §4.2.1: exactly one certificate.
        let [b64] = k.x5c.as_slice() else {
            return Err(bad(format!(
                "keys[{i}]: an x509-svid key needs exactly one x5c certificate"
            )));
        };
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| bad(format!("keys[{i}].x5c[0]: not base64 ({e})")))?;
        let cert = X509::from_der(&der)
            .map_err(|_| bad(format!("keys[{i}].x5c[0]: not a DER certificate")))?;
        certs.push(cert);
    }
    if certs.is_empty() {
        return Err(MaterialError::NoCertificate {
            path: path.display().to_string(),
        });
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ztgate_testkit::pki::{Ca, LeafSpec};

    struct Pki {
        dir: PathBuf,
        acme: Ca,
        partner: Ca,
    }

    fn pki(name: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("ztgate-trust-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (acme, partner) = (
            Ca::new("acme.test").unwrap(),
            Ca::new("partner.test").unwrap(),
        );
        acme.write(&dir, "acme").unwrap();
        partner.write(&dir, "partner").unwrap();
        Pki { dir, acme, partner }
    }

    impl Pki {
        fn bundles(&self) -> Vec<(String, PathBuf)> {
            vec![
                ("acme.test".into(), self.dir.join("acme.pem")),
                ("partner.test".into(), self.dir.join("partner.pem")),
            ]
        }
    }

    fn leaf(ca: &Ca, uris: &[&str]) -> X509 {
        let issued = ca
            .issue(&LeafSpec {
                common_name: "w".into(),
                uris: uris.iter().map(|u| u.to_string()).collect(),
                ..LeafSpec::default()
            })
            .unwrap();
        X509::from_der(&issued.der).unwrap()
    }

    fn anchor(ca: &Ca) -> X509 {
        X509::from_pem(ca.cert_pem().as_bytes()).unwrap()
    }

    /// Issue 15: a partner's CA cannot mint identities in our trust domain,
    /// and every certificate is held to the bundle of its own domain.
    #[test]
    fn a_trust_domain_is_bound_to_its_bundle() {
        let p = pki("bound");
        let t = ClientTrust::load(None, &p.bundles()).unwrap();
        let ours = "spiffe://acme.test/ns/shop/sa/web";
        let theirs = "spiffe://partner.test/ns/pay/sa/api";
        assert_eq!(t.admits(&leaf(&p.acme, &[ours]), &anchor(&p.acme)), Ok(()));
        assert_eq!(
            t.admits(&leaf(&p.partner, &[theirs]), &anchor(&p.partner)),
            Ok(())
        );
        assert_eq!(
            t.admits(&leaf(&p.partner, &[ours]), &anchor(&p.partner)),
            Err(TrustRefusal::WrongBundle("acme.test".into()))
        );
        assert_eq!(
            t.admits(&leaf(&p.acme, &[theirs]), &anchor(&p.acme)),
            Err(TrustRefusal::WrongBundle("partner.test".into()))
        );
        assert_eq!(
            t.admits(&leaf(&p.acme, &["spiffe://other.test/x"]), &anchor(&p.acme)),
            Err(TrustRefusal::UnknownTrustDomain("other.test".into()))
        );
        // No SPIFFE ID (a non-SPIFFE URI does not count): only client_ca
        // vouches for it, and there is none here.
        assert_eq!(
            t.admits(&leaf(&p.acme, &["https://acme.test/x"]), &anchor(&p.acme)),
            Err(TrustRefusal::NoSpiffeId)
        );
        // A scheme in other case is not a way around the binding.
        assert!(matches!(
            t.admits(
                &leaf(&p.partner, &["SPIFFE://acme.test/x"]),
                &anchor(&p.partner)
            ),
            Err(TrustRefusal::BadSpiffeId(_))
        ));
        assert_eq!(
            t.admits(
                &leaf(&p.acme, &[ours, "spiffe://partner.test/x"]),
                &anchor(&p.acme)
            ),
            Err(TrustRefusal::SeveralTrustDomains)
        );
        // An anchor in no bundle at all (OpenSSL would not have built the
        // chain; still refused here).
        let stranger = Ca::new("stranger.test").unwrap();
        assert_eq!(
            t.admits(&leaf(&stranger, &[ours]), &anchor(&stranger)),
            Err(TrustRefusal::WrongBundle("acme.test".into()))
        );
        let _ = std::fs::remove_dir_all(&p.dir);
    }

    #[test]
    fn client_ca_vouches_for_certificates_without_a_spiffe_id_only() {
        let p = pki("client-ca");
        let acme_only = vec![("acme.test".to_owned(), p.dir.join("acme.pem"))];
        let t = ClientTrust::load(Some(&p.dir.join("partner.pem")), &acme_only).unwrap();
        assert_eq!(
            t.admits(&leaf(&p.partner, &[]), &anchor(&p.partner)),
            Ok(())
        );
        assert_eq!(
            t.admits(
                &leaf(&p.partner, &["spiffe://acme.test/x"]),
                &anchor(&p.partner)
            ),
            Err(TrustRefusal::WrongBundle("acme.test".into()))
        );
        assert_eq!(
            t.admits(&leaf(&p.acme, &[]), &anchor(&p.acme)),
            Err(TrustRefusal::NoSpiffeId)
        );
        // Without bundles, client_ca alone decides (OpenSSL's verification).
        let only_ca = ClientTrust::load(Some(&p.dir.join("partner.pem")), &[]).unwrap();
        assert_eq!(
            only_ca.admits(
                &leaf(&p.partner, &["spiffe://acme.test/x"]),
                &anchor(&p.partner)
            ),
            Ok(())
        );
        let _ = std::fs::remove_dir_all(&p.dir);
    }

    #[test]
    fn spiffe_bundle_json_is_read_like_pem() {
        let p = pki("json");
        let der = anchor(&p.acme).to_der().unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
        let json = format!(
            r#"{{"spiffe_sequence": 3, "keys": [
                {{"use": "jwt-svid", "kty": "EC", "kid": "k1", "crv": "P-256", "x": "a", "y": "b"}},
                {{"use": "x509-svid", "kty": "EC", "x5c": ["{b64}"]}}
            ]}}"#
        );
        let path = p.dir.join("acme.json");
        std::fs::write(&path, json).unwrap();
        let certs = load_bundle_certs(&path).unwrap();
        assert_eq!(certs.len(), 1);
        assert_eq!(certs[0].to_der().unwrap(), der);
        let from_json = ClientTrust::load(None, &[("acme.test".into(), path.clone())]).unwrap();
        let from_pem =
            ClientTrust::load(None, &[("acme.test".into(), p.dir.join("acme.pem"))]).unwrap();
        assert_eq!(from_json.digest, from_pem.digest);

        for (text, want) in [
            (r#"{"keys": []}"#, "no PEM certificate"),
            (r#"{"keys": [{"use": "x509-svid", "x5c": []}]}"#, "keys[0]"),
            (
                r#"{"keys": [{"use": "x509-svid", "x5c": ["%%"]}]}"#,
                "not base64",
            ),
            (
                r#"{"keys": [{"use": "x509-svid", "x5c": ["AAAA"]}]}"#,
                "not a DER",
            ),
            (r#"{"keys": "#, "not a SPIFFE bundle"),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = load_bundle_certs(&path).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
        let _ = std::fs::remove_dir_all(&p.dir);
    }

    #[test]
    fn problems_name_their_trust_domain() {
        let p = pki("problems");
        let errs = ClientTrust::load(
            Some(&p.dir.join("missing.pem")),
            &[
                ("Acme.Test".into(), p.dir.join("acme.pem")),
                ("partner.test".into(), p.dir.join("nope.pem")),
                ("acme.test".into(), p.dir.join("acme.pem")),
            ],
        )
        .err()
        .unwrap();
        let sources: Vec<_> = errs.iter().map(|(s, _)| s.clone()).collect();
        assert_eq!(
            sources,
            vec![
                TrustSource::ClientCa,
                TrustSource::Bundle("Acme.Test".into()),
                TrustSource::Bundle("partner.test".into()),
            ]
        );
        assert!(errs[1].1.to_string().contains("not a trust domain name"));
        let _ = std::fs::remove_dir_all(&p.dir);
    }

    /// The session id context changes with any bundle, and with the trust
    /// domain a bundle is for.
    #[test]
    fn digest_covers_every_bundle_and_its_domain() {
        let p = pki("digest");
        let both = ClientTrust::load(None, &p.bundles()).unwrap().digest;
        let again = ClientTrust::load(None, &p.bundles()).unwrap().digest;
        assert_eq!(both, again);
        let swapped = ClientTrust::load(
            None,
            &[
                ("acme.test".into(), p.dir.join("partner.pem")),
                ("partner.test".into(), p.dir.join("acme.pem")),
            ],
        )
        .unwrap()
        .digest;
        assert_ne!(both, swapped);
        let one = ClientTrust::load(None, &p.bundles()[..1]).unwrap().digest;
        assert_ne!(both, one);
        let with_ca = ClientTrust::load(Some(&p.dir.join("acme.pem")), &p.bundles())
            .unwrap()
            .digest;
        assert_ne!(both, with_ca);
        let _ = std::fs::remove_dir_all(&p.dir);
    }
}
