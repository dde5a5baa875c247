//! A Workload API message, checked, as TLS material: the gateway's SVID
//! (certificate chain and key) and the X.509 bundles per trust domain.
//!
//! An update is taken whole or not at all. The X.509-SVID spec's rules a
//! listener certificate depends on are checked here, so that a broken
//! update (no SVID, a key that is not the leaf's, a leaf that does not
//! carry its SPIFFE ID, a bundle that does not parse) is refused with a
//! reason and the last good material keeps serving, rather than failing
//! every handshake after it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use pingora::tls::pkey::PKey;
use pingora::tls::x509::X509;
use pingora::utils::tls::CertKey;
use prost::Message;
use ztgate_filter::SpiffeId;

use super::wire::{Method, X509BundlesResponse, X509Svid, X509SvidResponse};
use crate::tls::material::{not_after, CertAndKey, TrustBundle};

/// At most this many certificates in one chain or bundle: far above any
/// real bundle (a CA and its rotation successor or two), and a bound on
/// what a broken peer can make us parse.
const MAX_CERTS: usize = 1000;

/// The checked material of one update.
pub struct X509Context {
    /// The gateway's SVID: its SPIFFE ID and its chain with the key.
    /// `None` from `FetchX509Bundles`.
    pub svid: Option<(String, CertAndKey)>,
    /// Trust domain name → its CA certificates (the SVID's own trust
    /// domain and the federated ones).
    pub bundles: BTreeMap<String, TrustBundle>,
    /// The SVID as an upstream client certificate, made once per update
    /// (Pingora keys pooled upstream connections by its serials, so a new
    /// SVID gets new connections).
    pub upstream: Option<Arc<CertKey>>,
}

/// Why an update was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    #[error("not a valid {0} message")]
    Decode(&'static str),
    #[error("no X.509-SVID in the update")]
    NoSvid,
    #[error("no X.509-SVID for `{0}` (spiffe.svid) in the update")]
    SvidNotFound(String),
    #[error("SVID `{id}`: {reason}")]
    BadSvid { id: String, reason: String },
    #[error("bundle of `{td}`: {reason}")]
    BadBundle { td: String, reason: String },
    #[error("no bundle in the update")]
    NoBundle,
}

/// Decode and check one message of `method`'s stream. `select`: the SPIFFE
/// ID of the SVID to use (else the first, the agent's default).
pub fn decode(
    method: Method,
    msg: &[u8],
    select: Option<&str>,
) -> Result<X509Context, UpdateError> {
    match method {
        Method::X509Svid => {
            let resp = X509SvidResponse::decode(msg)
                .map_err(|_| UpdateError::Decode("X509SVIDResponse"))?;
            from_svids(&resp, select)
        }
        Method::X509Bundles => {
            let resp = X509BundlesResponse::decode(msg)
                .map_err(|_| UpdateError::Decode("X509BundlesResponse"))?;
            let bundles = bundles(resp.bundles.iter())?;
            if bundles.is_empty() {
                return Err(UpdateError::NoBundle);
            }
            Ok(X509Context {
                svid: None,
                bundles,
                upstream: None,
            })
        }
    }
}

fn from_svids(resp: &X509SvidResponse, select: Option<&str>) -> Result<X509Context, UpdateError> {
    let chosen = match select {
        None => resp.svids.first().ok_or(UpdateError::NoSvid)?,
        Some(id) => resp
            .svids
            .iter()
            .find(|s| s.spiffe_id == id)
            .ok_or_else(|| UpdateError::SvidNotFound(id.to_owned()))?,
    };
    let (id, identity) = svid(chosen)?;
    let own_td = id.trust_domain().to_owned();
    let own = certs(&chosen.bundle).map_err(|reason| UpdateError::BadBundle {
        td: own_td.clone(),
        reason,
    })?;
    let mut out = bundles(
        resp.federated_bundles
            .iter()
            .filter(|(k, _)| trust_domain_of(k).as_deref() != Some(own_td.as_str())),
    )?;
    out.insert(own_td.clone(), bundle(&own_td, own)?);
    // `svid` checked the chain is not empty (CertKey::new asserts it).
    let upstream = Arc::new(CertKey::new(identity.chain.clone(), identity.key.clone()));
    Ok(X509Context {
        svid: Some((id.into_string(), identity)),
        bundles: out,
        upstream: Some(upstream),
    })
}

/// The SVID's ID, chain and key, checked against each other.
fn svid(s: &X509Svid) -> Result<(SpiffeId, CertAndKey), UpdateError> {
    let shown: String = s.spiffe_id.chars().take(128).collect();
    let bad = |reason: String| UpdateError::BadSvid {
        id: shown.clone(),
        reason,
    };
    let id = SpiffeId::parse(&s.spiffe_id).map_err(|e| bad(format!("not a SPIFFE ID ({e})")))?;
    let chain = certs(&s.x509_svid).map_err(&bad)?;
    let Some(leaf) = chain.first() else {
        return Err(bad("no certificate".into()));
    };
    // X.509-SVID §2: exactly one URI SAN, the SVID's SPIFFE ID.
    let uris: Vec<String> = leaf
        .subject_alt_names()
        .iter()
        .flat_map(|names| names.iter().filter_map(|n| n.uri().map(str::to_owned)))
        .collect();
    if uris != [s.spiffe_id.as_str()] {
        return Err(bad(
            "the leaf certificate's URI SAN is not exactly this SPIFFE ID".into(),
        ));
    }
    if not_after(leaf).is_none_or(|t| t < SystemTime::now()) {
        return Err(bad("the leaf certificate has expired".into()));
    }
    // Never echo the key bytes or OpenSSL's parse detail.
    let key = PKey::private_key_from_pkcs8(&s.x509_svid_key)
        .map_err(|_| bad("the private key is not PKCS#8 DER".into()))?;
    let matches = leaf.public_key().is_ok_and(|pk| pk.public_eq(&key));
    if !matches {
        return Err(bad(
            "the private key does not match the leaf certificate".into()
        ));
    }
    Ok((id, CertAndKey { chain, key }))
}

/// `spiffe://td` (the standard's key) or a bare `td` → `td`, if valid.
fn trust_domain_of(key: &str) -> Option<String> {
    let id = if key.starts_with("spiffe://") {
        key.to_owned()
    } else {
        format!("spiffe://{key}")
    };
    SpiffeId::parse(&id)
        .ok()
        .filter(|id| id.as_str().len() == "spiffe://".len() + id.trust_domain().len())
        .map(|id| id.trust_domain().to_owned())
}

/// Bundles keyed by trust domain SPIFFE ID → by trust domain name.
fn bundles<'a>(
    entries: impl Iterator<Item = (&'a String, &'a Vec<u8>)>,
) -> Result<BTreeMap<String, TrustBundle>, UpdateError> {
    let mut out = BTreeMap::new();
    for (key, der) in entries {
        let shown: String = key.chars().take(128).collect();
        let td = trust_domain_of(key).ok_or_else(|| UpdateError::BadBundle {
            td: shown.clone(),
            reason: "not a trust domain".into(),
        })?;
        let c = certs(der).map_err(|reason| UpdateError::BadBundle { td: shown, reason })?;
        out.insert(td.clone(), bundle(&td, c)?);
    }
    Ok(out)
}

fn bundle(td: &str, certs: Vec<X509>) -> Result<TrustBundle, UpdateError> {
    if certs.is_empty() {
        return Err(UpdateError::BadBundle {
            td: td.to_owned(),
            reason: "no certificate".into(),
        });
    }
    TrustBundle::from_certs(Path::new("the SPIFFE Workload API"), certs).map_err(|e| {
        UpdateError::BadBundle {
            td: td.to_owned(),
            reason: e.to_string(),
        }
    })
}

/// DER certificates concatenated, as the Workload API carries chains and
/// bundles.
fn certs(mut der: &[u8]) -> Result<Vec<X509>, String> {
    let mut out = Vec::new();
    while !der.is_empty() {
        if out.len() == MAX_CERTS {
            return Err(format!("more than {MAX_CERTS} certificates"));
        }
        let len = der_length(der).ok_or("not DER certificates")?;
        let (one, rest) = der.split_at_checked(len).ok_or("a truncated certificate")?;
        out.push(X509::from_der(one).map_err(|_| "not a DER certificate".to_owned())?);
        der = rest;
    }
    Ok(out)
}

/// The whole length (header included) of the DER SEQUENCE at the front of
/// `der`.
fn der_length(der: &[u8]) -> Option<usize> {
    match der {
        [0x30, len, ..] if *len < 0x80 => Some(2 + usize::from(*len)),
        [0x30, len, rest @ ..] => {
            let n = usize::from(len & 0x7f);
            if n == 0 || n > 4 {
                return None;
            }
            let body = rest
                .get(..n)?
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            body.checked_add(2 + n)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ztgate_testkit::pki::{Ca, LeafSpec};
    use ztgate_testkit::workload_api as kit;

    const GW: &str = "spiffe://acme.test/ns/edge/sa/ztgate";

    fn encode(resp: &kit::X509svidResponse) -> Vec<u8> {
        resp.encode_to_vec()
    }

    fn gateway_svid(ca: &Ca, id: &str) -> kit::X509svid {
        let issued = ca.svid(id).unwrap();
        kit::svid(id, &issued, &[ca])
    }

    #[test]
    fn a_good_update_gives_the_svid_and_every_bundle() {
        let (acme, partner) = (
            Ca::new("acme.test").unwrap(),
            Ca::new("partner.test").unwrap(),
        );
        let other = "spiffe://acme.test/other";
        let resp = kit::update(
            vec![gateway_svid(&acme, GW), gateway_svid(&acme, other)],
            &[("partner.test", &[&partner])],
        );
        let ctx = decode(Method::X509Svid, &encode(&resp), None).unwrap();
        let (id, ck) = ctx.svid.as_ref().unwrap();
        assert_eq!(id, GW);
        assert_eq!(ck.chain.len(), 1);
        assert_eq!(
            ctx.bundles.keys().collect::<Vec<_>>(),
            ["acme.test", "partner.test"]
        );
        assert_eq!(
            ctx.bundles["partner.test"].certs[0].to_der().unwrap(),
            partner.cert.der().to_vec()
        );
        // Chosen by ID.
        let ctx = decode(Method::X509Svid, &encode(&resp), Some(other)).unwrap();
        assert_eq!(ctx.svid.unwrap().0, other);
        // The bundles stream.
        let b = kit::bundles_of(&resp).encode_to_vec();
        let ctx = decode(Method::X509Bundles, &b, None).unwrap();
        assert!(ctx.svid.is_none());
        assert_eq!(ctx.bundles.len(), 2);
    }

    /// Each broken update is refused with its reason (never a panic).
    #[test]
    fn malformed_updates_are_refused_with_a_reason() {
        let acme = Ca::new("acme.test").unwrap();
        let good = gateway_svid(&acme, GW);
        let other_key = acme.svid(GW).unwrap();
        let expired = acme
            .issue(&LeafSpec {
                common_name: "gw".into(),
                uris: vec![GW.into()],
                expired: true,
                ..LeafSpec::default()
            })
            .unwrap();
        let cases: Vec<(&str, kit::X509svidResponse, &str)> = vec![
            ("no svid", kit::update(vec![], &[]), "no X.509-SVID"),
            (
                "key of another certificate",
                kit::update(
                    vec![kit::X509svid {
                        x509_svid_key: kit::svid(GW, &other_key, &[&acme]).x509_svid_key,
                        ..good.clone()
                    }],
                    &[],
                ),
                "does not match",
            ),
            (
                "key not PKCS#8",
                kit::update(
                    vec![kit::X509svid {
                        x509_svid_key: vec![1, 2, 3],
                        ..good.clone()
                    }],
                    &[],
                ),
                "not PKCS#8",
            ),
            (
                "ID other than the certificate's",
                kit::update(
                    vec![kit::X509svid {
                        spiffe_id: "spiffe://acme.test/someone-else".into(),
                        ..good.clone()
                    }],
                    &[],
                ),
                "URI SAN",
            ),
            (
                "truncated chain",
                kit::update(
                    vec![kit::X509svid {
                        x509_svid: good.x509_svid[..good.x509_svid.len() - 1].to_vec(),
                        ..good.clone()
                    }],
                    &[],
                ),
                "truncated",
            ),
            (
                "expired",
                kit::update(vec![kit::svid(GW, &expired, &[&acme])], &[]),
                "expired",
            ),
            (
                "empty own bundle",
                kit::update(
                    vec![kit::X509svid {
                        bundle: vec![],
                        ..good.clone()
                    }],
                    &[],
                ),
                "bundle of `acme.test`: no certificate",
            ),
            (
                "junk federated bundle",
                kit::X509svidResponse {
                    federated_bundles: [("spiffe://partner.test".into(), vec![0x30, 0x03, 1])]
                        .into(),
                    ..kit::update(vec![good.clone()], &[])
                },
                "bundle of `spiffe://partner.test`",
            ),
            (
                "federated key not a trust domain",
                kit::update(vec![good.clone()], &[("Partner.Test", &[&acme])]),
                "not a trust domain",
            ),
        ];
        for (name, resp, want) in cases {
            let e = decode(Method::X509Svid, &encode(&resp), None)
                .err()
                .unwrap_or_else(|| panic!("{name}: accepted"))
                .to_string();
            assert!(e.contains(want), "{name}: {e}");
        }
        let e = decode(
            Method::X509Svid,
            &encode(&kit::update(vec![good], &[])),
            Some("spiffe://acme.test/absent"),
        )
        .err()
        .unwrap();
        assert_eq!(
            e,
            UpdateError::SvidNotFound("spiffe://acme.test/absent".into())
        );
        assert!(decode(Method::X509Svid, &[0xff, 0xff], None).is_err());
    }

    #[test]
    fn der_lengths_are_bounded() {
        assert_eq!(der_length(&[0x30, 0x03]), Some(5));
        assert_eq!(der_length(&[0x30, 0x82, 0x01, 0x00]), Some(260));
        assert_eq!(der_length(&[0x30, 0x80]), None);
        assert_eq!(der_length(&[0x30, 0x85, 1, 1, 1, 1, 1]), None);
        assert_eq!(der_length(&[0x30, 0x82, 0x01]), None);
        assert_eq!(der_length(&[0x04, 0x01]), None);
        assert!(certs(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
