//! The OpenSSL OCSP functions the openssl crate does not bind: the request
//! nonce (RFC 8954) and reading a response's GeneralizedTime as a time. The
//! one `unsafe` of the OCSP code lives here.
#![allow(unsafe_code)]

use std::os::raw::{c_int, c_uchar};
use std::time::SystemTime;

use foreign_types::ForeignTypeRef;
use openssl::asn1::{Asn1GeneralizedTimeRef, Asn1TimeRef};
use openssl::error::ErrorStack;
use openssl::ocsp::{OcspBasicResponseRef, OcspRequestRef};
use openssl_sys::{OCSP_BASICRESP, OCSP_REQUEST};

extern "C" {
    fn OCSP_request_add1_nonce(req: *mut OCSP_REQUEST, val: *mut c_uchar, len: c_int) -> c_int;
    fn OCSP_check_nonce(req: *mut OCSP_REQUEST, bs: *mut OCSP_BASICRESP) -> c_int;
}

/// Add a random 16-byte nonce extension to `req`.
pub fn add_nonce(req: &mut OcspRequestRef) -> Result<(), ErrorStack> {
    // SAFETY: `req` is a live request we hold exclusively; a null value
    // with a non-positive length makes OpenSSL generate a random nonce of
    // its default length (16 bytes) and copy it into the request.
    let rc = unsafe { OCSP_request_add1_nonce(req.as_ptr(), std::ptr::null_mut(), -1) };
    if rc == 1 {
        Ok(())
    } else {
        Err(ErrorStack::get())
    }
}

/// How the response's nonce compares with the request's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    /// Both carry the same nonce.
    Equal,
    /// Both carry one, and they differ: a replayed or misdirected answer.
    Mismatch,
    /// The request had one, the response has none (a responder that
    /// pre-signs its answers).
    Absent,
    /// The request had none.
    NotSent,
}

/// `OCSP_check_nonce`, which only reads both objects.
pub fn check_nonce(req: &OcspRequestRef, resp: &OcspBasicResponseRef) -> NonceCheck {
    // SAFETY: both pointers are live objects borrowed for the call;
    // OCSP_check_nonce reads their extensions and keeps no pointer.
    match unsafe { OCSP_check_nonce(req.as_ptr(), resp.as_ptr()) } {
        1 => NonceCheck::Equal,
        -1 => NonceCheck::Absent,
        2 | 3 => NonceCheck::NotSent,
        _ => NonceCheck::Mismatch,
    }
}

/// A GeneralizedTime (thisUpdate, nextUpdate) as a `SystemTime`.
pub fn generalized_time(t: &Asn1GeneralizedTimeRef) -> Option<SystemTime> {
    // SAFETY: OpenSSL's ASN1_GENERALIZEDTIME and ASN1_TIME are the same C
    // type (both `ASN1_STRING`), and the ASN1_TIME functions accept a
    // GeneralizedTime; the reference lives as long as `t`.
    let t: &Asn1TimeRef = unsafe { Asn1TimeRef::from_ptr(t.as_ptr().cast()) };
    super::super::material::system_time(t)
}
