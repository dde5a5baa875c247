//! Small, pure pieces of per-request metadata: the request id and gRPC
//! deadlines. (The client IP behind trusted proxies is derived where the
//! request view is built, `ztgate_filter::view`.)

use std::time::Duration;

/// Longest accepted incoming `x-request-id`.
const MAX_REQUEST_ID: usize = 128;

/// Keep a sane incoming request id (1–128 of `[A-Za-z0-9._:-]`), else make one.
pub fn request_id(incoming: Option<&str>) -> String {
    match incoming {
        Some(id)
            if !id.is_empty()
                && id.len() <= MAX_REQUEST_ID
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b)) =>
        {
            id.to_owned()
        }
        _ => new_request_id(),
    }
}

/// 128 random bits as 32 lowercase hex characters.
pub fn new_request_id() -> String {
    hex128(rand::random())
}

/// `format!("{v:032x}")` without the formatting machinery: made on every
/// call that brings no id of its own.
fn hex128(v: u128) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().rev().enumerate() {
        *b = HEX
            .get(((v >> (4 * i)) & 0xf) as usize)
            .copied()
            .unwrap_or(b'0');
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parse a `grpc-timeout` value: 1–8 digits and a unit (H M S m u n).
pub fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    if !v.is_ascii() {
        return None;
    }
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Format a deadline for `grpc-timeout` in the finest unit that fits 8 digits.
pub fn format_grpc_timeout(d: Duration) -> String {
    let ns = d.as_nanos();
    for (div, unit) in [
        (1u128, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
    ] {
        let v = ns.div_ceil(div);
        if v < 100_000_000 {
            return format!("{v}{unit}");
        }
    }
    format!("{}M", d.as_secs().div_ceil(60).min(99_999_999))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_request_id_is_128_bits_in_lowercase_hex() {
        for v in [0, 1, 0xabcdef, u128::MAX, u128::MAX / 3, 1 << 127] {
            assert_eq!(hex128(v), format!("{v:032x}"));
        }
        assert_ne!(new_request_id(), new_request_id());
    }

    #[test]
    fn request_ids() {
        assert_eq!(request_id(Some("abc-123")), "abc-123");
        assert_eq!(request_id(Some("bad id")).len(), 32);
        assert_eq!(request_id(Some(&"a".repeat(200))).len(), 32);
        assert_eq!(request_id(None).len(), 32);
    }

    #[test]
    fn grpc_timeouts() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("123456789S"), None);
        assert_eq!(parse_grpc_timeout("5x"), None);
        assert_eq!(parse_grpc_timeout(""), None);
        assert_eq!(parse_grpc_timeout("1é"), None);
        assert_eq!(format_grpc_timeout(Duration::from_millis(100)), "100000u");
        assert_eq!(format_grpc_timeout(Duration::from_secs(30)), "30000000u");
        let d = parse_grpc_timeout(&format_grpc_timeout(Duration::from_secs(3600))).unwrap();
        assert_eq!(d, Duration::from_secs(3600));
    }
}
