//! Capturing the ClientHello for JA4, inside the TLS handshake.
//!
//! Pingora 0.9 does not expose the ClientHello (pingora#119). OpenSSL's
//! client-hello callback only lists the extensions OpenSSL itself knows
//! (openssl#27580), so a Chrome ClientHello (ALPS, delegated credentials)
//! would give a wrong JA4. Instead we install OpenSSL's *message callback*
//! on the listener's context: it sees every handshake message as received,
//! and we copy the first ClientHello's bytes into the connection's ex_data.
//! `handshake_complete_callback` then computes the JA4 once per connection
//! with `ztgate_device::ja4` (a bounded parser that never panics).
//!
//! `SSL_CTX_set_msg_callback` is not bound by the openssl crates, so it is
//! declared here, in one of the two modules with `unsafe` (the other is
//! `tls::session_context`).
#![allow(unsafe_code)]

use std::os::raw::{c_int, c_void};
use std::sync::{Arc, LazyLock};

use foreign_types::ForeignTypeRef;
use openssl::ssl::{Ssl, SslRef};
use openssl_sys::{SSL, SSL_CTX};
use pingora::listeners::tls::TlsSettings;

/// `SSL3_RT_HANDSHAKE`.
const CONTENT_HANDSHAKE: c_int = 22;
/// Handshake type `client_hello`.
const CLIENT_HELLO: u8 = 1;

/// The raw ClientHello handshake message of a connection.
struct RawClientHello(Vec<u8>);

static HELLO: LazyLock<Option<openssl::ex_data::Index<Ssl, RawClientHello>>> =
    LazyLock::new(|| Ssl::new_ex_index().ok());

type MsgCallback = unsafe extern "C" fn(
    write_p: c_int,
    version: c_int,
    content_type: c_int,
    buf: *const c_void,
    len: usize,
    ssl: *mut SSL,
    arg: *mut c_void,
);

extern "C" {
    fn SSL_CTX_set_msg_callback(ctx: *mut SSL_CTX, cb: Option<MsgCallback>);
}

/// Called by OpenSSL for every protocol message; keeps the first received
/// ClientHello. Must not panic (it is called across FFI): no indexing, no
/// allocation beyond one bounded copy.
unsafe extern "C" fn on_message(
    write_p: c_int,
    _version: c_int,
    content_type: c_int,
    buf: *const c_void,
    len: usize,
    ssl: *mut SSL,
    _arg: *mut c_void,
) {
    if write_p != 0 || content_type != CONTENT_HANDSHAKE || buf.is_null() || ssl.is_null() {
        return;
    }
    // A larger ClientHello is not kept (JA4 gives "unknown"): the parser's
    // own cap, so nothing is copied that it would refuse.
    if len == 0 || len > ztgate_device::ja4::MAX_CLIENT_HELLO_LEN {
        return;
    }
    // SAFETY: OpenSSL passes `len` readable bytes at `buf` for this call.
    let bytes = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) };
    if bytes.first() != Some(&CLIENT_HELLO) {
        return;
    }
    let Some(idx) = *HELLO else { return };
    // SAFETY: `ssl` is the live connection this callback is running for.
    let ssl = unsafe { SslRef::from_ptr_mut(ssl) };
    // A second ClientHello (after HelloRetryRequest) does not replace the first.
    if ssl.ex_data(idx).is_none() {
        ssl.set_ex_data(idx, RawClientHello(bytes.to_vec()));
    }
}

/// Install the message callback on the listener's TLS context.
pub fn install(tls: &mut TlsSettings) -> Result<(), openssl::error::ErrorStack> {
    if HELLO.is_none() {
        return Err(openssl::error::ErrorStack::get());
    }
    let ctx = tls.as_ptr();
    // SAFETY: `ctx` is the listener's SSL_CTX, alive for this call; the
    // callback is a plain function with the signature OpenSSL expects.
    unsafe { SSL_CTX_set_msg_callback(ctx, Some(on_message)) };
    Ok(())
}

/// The JA4 computed from the connection's captured ClientHello, if one was
/// captured and parses. The bytes stay in the connection's ex_data (freed
/// with the connection); this only reads them.
pub fn client_hello_ja4(ssl: &SslRef) -> Option<Arc<str>> {
    let hello = ssl.ex_data((*HELLO)?)?;
    ztgate_device::ClientHello::parse(&hello.0)
        .ok()
        .map(|ch| Arc::from(ch.ja4()))
}
