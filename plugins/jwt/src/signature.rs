//! JWS signature verification (RFC 7515 §5.2, algorithms of RFC 7518 §3
//! and RFC 8037) against a key built once per JWKS key.
//!
//! RSA goes to OpenSSL (linked anyway, for TLS) with the key parsed once:
//! `jsonwebtoken`/ring rebuilds an RSA public key on every call (RS256:
//! 331k instructions per verify vs 399k, callgrind, side by side in
//! `examples/signature_speed.rs`). PKCS#1 v1.5 (RS*) skips OpenSSL's EVP
//! layer (see [`pkcs1_v15`]): 320k → 307k per RS256 verify, and a new
//! token each call went from 527.3k to 512.4k instructions through the
//! whole gateway. EC and Ed25519 stay with ring, which is cheaper there
//! (ES256: 746k vs OpenSSL's 879k) and whose per-call key setup is only a
//! point decode. The algorithm is never taken from the key or the token
//! alone: the caller has already checked that the token's `alg` is allowed
//! for its issuer and accepted by this key (RFC 8725 §3.1).

use jsonwebtoken::Algorithm;
use openssl::bn::BigNum;

use crate::keys::KeyMaterial;
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Public};
use openssl::rsa::{Padding, Rsa};
use openssl::sha::{Sha256, Sha384, Sha512};
use openssl::sign::{RsaPssSaltlen, Verifier};

/// Whether `sig` (`sig_b64` decoded) is a valid `alg` signature of `data`
/// under `key`. Any error (a malformed signature, a key of the wrong type)
/// is `false`.
pub fn verify(alg: Algorithm, key: &KeyMaterial, data: &[u8], sig: &[u8], sig_b64: &str) -> bool {
    match key {
        KeyMaterial::OpenSsl(pkey, rsa) => match alg {
            Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 => {
                pkcs1_v15(alg, rsa, data, sig)
            }
            _ => verify_openssl(alg, pkey, data, sig),
        },
        KeyMaterial::Ring(decoding) => {
            !matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
                && jsonwebtoken::crypto::verify(sig_b64, data, decoding, alg).unwrap_or(false)
        }
    }
}

/// [`verify`] with OpenSSL.
pub fn verify_openssl(alg: Algorithm, key: &PKey<Public>, data: &[u8], sig: &[u8]) -> bool {
    use Algorithm::*;
    let result = match alg {
        RS256 => rsa(key, MessageDigest::sha256(), false, data, sig),
        RS384 => rsa(key, MessageDigest::sha384(), false, data, sig),
        RS512 => rsa(key, MessageDigest::sha512(), false, data, sig),
        PS256 => rsa(key, MessageDigest::sha256(), true, data, sig),
        PS384 => rsa(key, MessageDigest::sha384(), true, data, sig),
        PS512 => rsa(key, MessageDigest::sha512(), true, data, sig),
        ES256 => ecdsa(key, MessageDigest::sha256(), 32, data, sig),
        ES384 => ecdsa(key, MessageDigest::sha384(), 48, data, sig),
        EdDSA => Verifier::new_without_digest(key).and_then(|mut v| v.verify_oneshot(sig, data)),
        // Symmetric algorithms never reach here (refused at config and
        // header checks); refuse them again rather than trust that.
        HS256 | HS384 | HS512 => return false,
    };
    result.unwrap_or(false)
}

/// The DER `DigestInfo` prefix of each PKCS#1 v1.5 algorithm: SEQUENCE {
/// AlgorithmIdentifier { OID, NULL }, OCTET STRING of the hash's length }
/// (RFC 8017 §9.2, note 1).
const DIGEST_INFO_SHA256: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];
const DIGEST_INFO_SHA384: [u8; 19] = [
    0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05,
    0x00, 0x04, 0x30,
];
const DIGEST_INFO_SHA512: [u8; 19] = [
    0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05,
    0x00, 0x04, 0x40,
];

/// RSASSA-PKCS1-v1_5 (RS256/384/512) by RFC 8017 §8.2.2's encode-and-
/// compare: the signature must be exactly the modulus' length, OpenSSL's
/// raw public operation checks the `00 01 FF…FF 00` padding, and what it
/// leaves must equal, byte for byte, the `DigestInfo` of this algorithm's
/// hash of `data` — nothing is parsed out of the signature, so no lenient
/// ASN.1 can be exploited (Bleichenbacher 2006). Why not `Verifier` (the
/// EVP path, as PSS uses): on every call it fetches the algorithm from the
/// provider, builds and frees a context and copies it — 25k instructions of
/// the 320k an RS256 verify cost, measured with `load-tests/run.sh
/// --callgrind` (a new token each call).
fn pkcs1_v15(alg: Algorithm, rsa: &Rsa<Public>, data: &[u8], sig: &[u8]) -> bool {
    let mut expected = [0u8; 19 + 64];
    let len = match alg {
        Algorithm::RS256 => fill(&mut expected, &DIGEST_INFO_SHA256, &sha256(data)),
        Algorithm::RS384 => fill(&mut expected, &DIGEST_INFO_SHA384, &sha384(data)),
        Algorithm::RS512 => fill(&mut expected, &DIGEST_INFO_SHA512, &sha512(data)),
        _ => return false,
    };
    let k = usize::try_from(rsa.size()).unwrap_or(0);
    if sig.len() != k {
        return false;
    }
    // The recovered block, on the stack for keys up to 8192 bits.
    let mut stack = [0u8; 1024];
    let mut heap = Vec::new();
    let em = match stack.get_mut(..k) {
        Some(em) => em,
        None => {
            heap.resize(k, 0);
            &mut heap[..]
        }
    };
    match rsa.public_decrypt(sig, em, Padding::PKCS1) {
        Ok(n) => em.get(..n) == expected.get(..len),
        Err(_) => false,
    }
}

// SHA-2 through OpenSSL's direct functions. Not the one-shot
// `openssl::sha::sha256`: on OpenSSL 3 that is `EVP_Q_digest`, which
// fetches the algorithm from the provider on every call (2.4k of the 11.9k
// instructions an RS256 token's hash cost, `load-tests/run.sh --callgrind`).
fn sha256(data: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(data);
    h.finish()
}

fn sha384(data: &[u8]) -> [u8; 48] {
    let mut h = Sha384::new();
    h.update(data);
    h.finish()
}

fn sha512(data: &[u8]) -> [u8; 64] {
    let mut h = Sha512::new();
    h.update(data);
    h.finish()
}

/// `prefix ‖ hash` into `out`; returns its length.
fn fill(out: &mut [u8], prefix: &[u8], hash: &[u8]) -> usize {
    let len = prefix.len() + hash.len();
    if let Some(dst) = out.get_mut(..len) {
        let (p, h) = dst.split_at_mut(prefix.len());
        p.copy_from_slice(prefix);
        h.copy_from_slice(hash);
    }
    len
}

/// RSASSA-PKCS1-v1_5, or RSASSA-PSS with MGF1 of the same hash and a salt
/// as long as the hash (RFC 7518 §3.5).
fn rsa(
    key: &PKey<Public>,
    md: MessageDigest,
    pss: bool,
    data: &[u8],
    sig: &[u8],
) -> Result<bool, openssl::error::ErrorStack> {
    if key.rsa().is_err() {
        return Ok(false);
    }
    let mut v = Verifier::new(md, key)?;
    if pss {
        v.set_rsa_padding(Padding::PKCS1_PSS)?;
        v.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)?;
        v.set_rsa_mgf1_md(md)?;
    }
    v.verify_oneshot(sig, data)
}

/// ECDSA: a JWS carries `r ‖ s`, each exactly the curve's size (RFC 7518
/// §3.4); OpenSSL wants DER. Any other length is refused, so a DER
/// signature can never be slipped in.
fn ecdsa(
    key: &PKey<Public>,
    md: MessageDigest,
    half: usize,
    data: &[u8],
    sig: &[u8],
) -> Result<bool, openssl::error::ErrorStack> {
    if sig.len() != 2 * half || key.ec_key().is_err() {
        return Ok(false);
    }
    let (r, s) = sig.split_at(half);
    let der = EcdsaSig::from_private_components(BigNum::from_slice(r)?, BigNum::from_slice(s)?)?
        .to_der()?;
    let mut v = Verifier::new(md, key)?;
    v.verify_oneshot(&der, data)
}

#[cfg(test)]
mod tests {
    //! Interop: signatures made by `jsonwebtoken` (ring) from keys made by
    //! OpenSSL, verified here through the JWK path the gateway uses.
    use super::*;
    use crate::keys::parse_jwk;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use jsonwebtoken::EncodingKey;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::nid::Nid;
    use openssl::pkey::Private;
    use openssl::rsa::Rsa;
    use serde_json::{json, Map, Value};

    fn b64(b: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(b)
    }

    fn ec(nid: Nid, crv: &str, len: usize) -> (PKey<Private>, Value) {
        let group = EcGroup::from_curve_name(nid).unwrap();
        let key = EcKey::generate(&group).unwrap();
        let mut ctx = openssl::bn::BigNumContext::new().unwrap();
        let (mut x, mut y) = (BigNum::new().unwrap(), BigNum::new().unwrap());
        key.public_key()
            .affine_coordinates(&group, &mut x, &mut y, &mut ctx)
            .unwrap();
        let pad = |n: &BigNum| n.to_vec_padded(len as i32).unwrap();
        let jwk = json!({"kty": "EC", "crv": crv, "x": b64(&pad(&x)), "y": b64(&pad(&y))});
        (PKey::from_ec_key(key).unwrap(), jwk)
    }

    fn keys() -> Vec<(Algorithm, PKey<Private>, Value)> {
        let rsa = Rsa::generate(2048).unwrap();
        let rsa_jwk =
            json!({"kty": "RSA", "n": b64(&rsa.n().to_vec()), "e": b64(&rsa.e().to_vec())});
        let rsa = PKey::from_rsa(rsa).unwrap();
        let ed = PKey::generate_ed25519().unwrap();
        let ed_jwk =
            json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&ed.raw_public_key().unwrap())});
        let (p256, p256_jwk) = ec(Nid::X9_62_PRIME256V1, "P-256", 32);
        let (p384, p384_jwk) = ec(Nid::SECP384R1, "P-384", 48);
        use Algorithm::*;
        let mut out = Vec::new();
        for alg in [RS256, RS384, RS512, PS256, PS384, PS512] {
            out.push((alg, rsa.clone(), rsa_jwk.clone()));
        }
        out.push((ES256, p256, p256_jwk));
        out.push((ES384, p384, p384_jwk));
        out.push((EdDSA, ed, ed_jwk));
        out
    }

    fn encoding_key(alg: Algorithm, key: &PKey<Private>) -> EncodingKey {
        let pem = key.private_key_to_pem_pkcs8().unwrap();
        match alg {
            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem).unwrap(),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem).unwrap(),
            _ => EncodingKey::from_rsa_pem(&pem).unwrap(),
        }
    }

    #[test]
    fn every_algorithm_verifies_and_refuses_what_it_must() {
        let data = b"eyJhbGciOiJ4In0.eyJzdWIiOiJhIn0";
        for (alg, private, jwk) in keys() {
            let Value::Object(jwk) = jwk else {
                unreachable!()
            };
            let jwk: Map<String, Value> = jwk;
            let key = parse_jwk(&jwk).unwrap_or_else(|e| panic!("{alg:?}: {e}"));
            let sig_b64 =
                jsonwebtoken::crypto::sign(data, &encoding_key(alg, &private), alg).unwrap();
            let sig = URL_SAFE_NO_PAD.decode(&sig_b64).unwrap();
            let check = |data: &[u8], sig: &[u8]| verify(alg, &key.key, data, sig, &b64(sig));
            assert!(
                verify(alg, &key.key, data, &sig, &sig_b64),
                "{alg:?} verifies"
            );
            let mut bad = sig.clone();
            bad[3] ^= 1;
            assert!(!check(data, &bad), "{alg:?}: tampered");
            assert!(!check(b"other", &sig), "{alg:?}: other data");
            assert!(!check(data, &[]), "{alg:?}: empty");
            // The same key under another algorithm of its family is no match.
            let other = match alg {
                Algorithm::RS256 => Algorithm::PS256,
                Algorithm::PS256 => Algorithm::RS256,
                Algorithm::ES256 => Algorithm::ES384,
                _ => Algorithm::HS256,
            };
            assert!(
                !verify(other, &key.key, data, &sig, &sig_b64),
                "{alg:?} as {other:?}"
            );
        }
    }

    /// PKCS#1 v1.5 by encode-and-compare answers as OpenSSL's EVP verify
    /// does for real signatures, and refuses every near-miss encoding a
    /// lenient parser has been fooled by.
    #[test]
    fn pkcs1_v15_is_exact() {
        let private = Rsa::generate(2048).unwrap();
        let public = Rsa::from_public_components(
            private.n().to_owned().unwrap(),
            private.e().to_owned().unwrap(),
        )
        .unwrap();
        let pkey = PKey::from_rsa(public.clone()).unwrap();
        let signer = PKey::from_rsa(private.clone()).unwrap();
        let k = public.size() as usize;
        // Sign `payload` as the padding of a type-1 block, whatever it is.
        let raw = |payload: &[u8]| {
            let mut out = vec![0u8; k];
            let n = private
                .private_encrypt(payload, &mut out, Padding::PKCS1)
                .unwrap();
            out.truncate(n);
            out
        };
        for (alg, md, prefix) in [
            (
                Algorithm::RS256,
                MessageDigest::sha256(),
                &DIGEST_INFO_SHA256,
            ),
            (
                Algorithm::RS384,
                MessageDigest::sha384(),
                &DIGEST_INFO_SHA384,
            ),
            (
                Algorithm::RS512,
                MessageDigest::sha512(),
                &DIGEST_INFO_SHA512,
            ),
        ] {
            for i in 0..20u8 {
                let data = vec![i; 40 + usize::from(i) * 7];
                let mut s = openssl::sign::Signer::new(md, &signer).unwrap();
                let sig = s.sign_oneshot_to_vec(&data).unwrap();
                assert!(pkcs1_v15(alg, &public, &data, &sig), "{alg:?} #{i}");
                assert!(rsa(&pkey, md, false, &data, &sig).unwrap());
                assert!(!pkcs1_v15(alg, &public, b"other", &sig));
            }
            let data = b"header.claims";
            let hash = openssl::hash::hash(md, data).unwrap();
            let good = [prefix.as_slice(), &hash].concat();
            assert!(
                pkcs1_v15(alg, &public, data, &raw(&good)),
                "{alg:?}: the encoding itself"
            );
            // DigestInfo without the NULL parameters.
            let mut no_null = prefix.to_vec();
            no_null.drain(15..17);
            no_null[1] -= 2;
            no_null[3] -= 2;
            let forged = [no_null.as_slice(), &hash].concat();
            // Trailing bytes after the hash; the hash alone; another
            // algorithm's DigestInfo around the right hash.
            let trailing = [good.as_slice(), &[0]].concat();
            let other_prefix = if alg == Algorithm::RS256 {
                &DIGEST_INFO_SHA384
            } else {
                &DIGEST_INFO_SHA256
            };
            let wrong_alg = [other_prefix.as_slice(), &hash].concat();
            for (what, payload) in [
                ("no NULL parameters", forged),
                ("trailing byte", trailing),
                ("bare hash", hash.to_vec()),
                ("another algorithm's DigestInfo", wrong_alg),
            ] {
                assert!(
                    !pkcs1_v15(alg, &public, data, &raw(&payload)),
                    "{alg:?}: {what}"
                );
            }
            // A signature one byte short (its leading zero dropped, as a
            // lenient big-integer decode would accept), one too long, and
            // one that is not below the modulus.
            let sig = raw(&good);
            let mut short = sig.clone();
            short.remove(0);
            let long = [&[0u8][..], &sig].concat();
            let too_big = vec![0xff; k];
            for (what, s) in [("short", short), ("long", long), ("≥ n", too_big)] {
                assert!(!pkcs1_v15(alg, &public, data, &s), "{alg:?}: {what}");
            }
        }
        assert!(!pkcs1_v15(Algorithm::PS256, &public, b"x", &[0; 256]));
    }

    #[test]
    fn weak_or_invalid_keys_are_refused_at_parse() {
        let small = Rsa::generate(1024).unwrap();
        let jwk =
            json!({"kty": "RSA", "n": b64(&small.n().to_vec()), "e": b64(&small.e().to_vec())});
        assert!(parse_jwk(jwk.as_object().unwrap()).is_err(), "1024-bit RSA");
        // A point that is not on the curve (invalid-curve attack).
        let jwk = json!({"kty": "EC", "crv": "P-256", "x": b64(&[1; 32]), "y": b64(&[2; 32])});
        assert!(
            parse_jwk(jwk.as_object().unwrap()).is_err(),
            "off-curve point"
        );
    }
}
