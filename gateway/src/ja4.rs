//! Capturing the ClientHello for JA4, inside the TLS handshake.
//!
//! Pingora 0.9 does not expose the ClientHello (pingora#119), so we install
//! OpenSSL's client-hello callback on the listener's context (notes §3A). It
//! copies what JA4 needs (legacy version, cipher list, extension types, and
//! the bodies of SNI, ALPN, signature_algorithms and supported_versions) into
//! the connection's ex_data; `handshake_complete_callback` turns it into the
//! JA4 string once per connection via `ztgate_device::ja4`.
//!
//! This is the only module with `unsafe`: the extension accessors are FFI
//! (openssl-sys binds them, the safe crate does not wrap them).
#![allow(unsafe_code)]

use std::sync::{Arc, LazyLock};

use foreign_types::ForeignTypeRef;
use pingora::listeners::tls::TlsSettings;
use pingora::tls::ssl::{ClientHelloResponse, Ssl, SslRef};
use pingora::tls::ssl_sys;

/// What the callback copies out of the ClientHello.
#[derive(Debug, Default, Clone)]
pub struct ClientHelloParts {
    pub legacy_version: u16,
    pub ciphers: Vec<u8>,
    pub extensions: Vec<u16>,
    pub sni: bool,
    pub alpn: Option<Vec<u8>>,
    pub sig_algs: Option<Vec<u8>>,
    pub supported_versions: Option<Vec<u8>>,
}

static PARTS: LazyLock<Option<openssl::ex_data::Index<Ssl, ClientHelloParts>>> =
    LazyLock::new(|| Ssl::new_ex_index().ok());

/// Install the client-hello callback on the listener.
pub fn install(tls: &mut TlsSettings) -> Result<(), openssl::error::ErrorStack> {
    let Some(idx) = *PARTS else {
        return Err(openssl::error::ErrorStack::get());
    };
    tls.set_client_hello_callback(move |ssl, _alert| {
        // Runs twice on HelloRetryRequest: keep the first ClientHello.
        if ssl.ex_data(idx).is_none() {
            let parts = read_parts(ssl);
            ssl.set_ex_data(idx, parts);
        }
        Ok(ClientHelloResponse::SUCCESS)
    });
    Ok(())
}

fn read_parts(ssl: &mut SslRef) -> ClientHelloParts {
    ClientHelloParts {
        // SAFETY: `ssl` is a live SSL inside its client-hello callback.
        legacy_version: u16::try_from(unsafe {
            ssl_sys::SSL_client_hello_get0_legacy_version(ssl.as_ptr())
        })
        .unwrap_or(0),
        ciphers: ssl.client_hello_ciphers().map(<[u8]>::to_vec).unwrap_or_default(),
        extensions: extension_types(ssl),
        sni: ext_body(ssl, 0).is_some(),
        alpn: ext_body(ssl, 16),
        sig_algs: ext_body(ssl, 13),
        supported_versions: ext_body(ssl, 43),
    }
}

/// Types of every extension present (not in wire order; JA4 sorts anyway).
fn extension_types(ssl: &SslRef) -> Vec<u16> {
    let mut out: *mut std::os::raw::c_int = std::ptr::null_mut();
    let mut len: usize = 0;
    // SAFETY: valid SSL in its client-hello callback; on success OpenSSL
    // allocates `out` with `len` ints, which we copy and free.
    unsafe {
        if ssl_sys::SSL_client_hello_get1_extensions_present(ssl.as_ptr(), &mut out, &mut len) != 1
            || out.is_null()
        {
            return Vec::new();
        }
        let types = std::slice::from_raw_parts(out, len)
            .iter()
            .filter_map(|t| u16::try_from(*t).ok())
            .collect();
        ssl_sys::OPENSSL_free(out.cast());
        types
    }
}

/// The raw body of one extension, if present.
fn ext_body(ssl: &SslRef, ty: u32) -> Option<Vec<u8>> {
    let mut p: *const u8 = std::ptr::null();
    let mut n: usize = 0;
    // SAFETY: valid SSL in its client-hello callback; the returned pointer
    // borrows OpenSSL's ClientHello buffer, copied before returning.
    unsafe {
        if ssl_sys::SSL_client_hello_get0_ext(ssl.as_ptr(), ty, &mut p, &mut n) == 1 && !p.is_null()
        {
            Some(std::slice::from_raw_parts(p, n).to_vec())
        } else {
            None
        }
    }
}

/// The JA4 of the connection's ClientHello, if one was captured and parses.
pub fn take_ja4(ssl: &SslRef) -> Option<Arc<str>> {
    let parts = ssl.ex_data((*PARTS)?)?;
    compute(parts)
}

/// JA4 from captured parts.
pub fn compute(p: &ClientHelloParts) -> Option<Arc<str>> {
    let ch = ztgate_device::ja4::ClientHello::from_openssl_parts(
        p.legacy_version,
        &p.ciphers,
        &p.extensions,
        p.sni,
        p.alpn.as_deref(),
        p.sig_algs.as_deref(),
        p.supported_versions.as_deref(),
    )
    .ok()?;
    Some(Arc::from(ch.ja4()))
}
