//! Process-wide Prometheus metrics of the `jwt` filter (names from PRODUCT.md).
//!
//! Label values come from config (`issuer`) or code (`result`), never from a
//! request, so the series count stays bounded.

use std::sync::LazyLock;

use prometheus::{IntCounter, IntCounterVec, Opts};

/// `ztgate_jwks_refresh_total{issuer,result}`: JWKS fetches by outcome.
pub static JWKS_REFRESH: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "ztgate_jwks_refresh_total",
        "JWKS fetches per issuer, by result (success, failure)",
        &["issuer", "result"],
    )
});

/// `ztgate_jwt_cache_total{result}`: verified-token cache lookups (hit, miss).
pub static CACHE: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "ztgate_jwt_cache_total",
        "Verified-token cache lookups, by result (hit, miss)",
        &["result"],
    )
});

// The names and labels are constants, so `new` can only fail on a typo
// caught by the first test; registration fails only if another copy of this
// crate registered first, in which case the unregistered counter still counts.
#[allow(clippy::expect_used)]
fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    let _ = prometheus::register(Box::new(c.clone()));
    c
}

pub(crate) fn jwks_refresh(issuer: &str, ok: bool) {
    JWKS_REFRESH
        .with_label_values(&[issuer, if ok { "success" } else { "failure" }])
        .inc();
}

/// The two series of [`CACHE`], resolved once: counted on every request,
/// where `with_label_values` would hash the label and take the vec's lock
/// each time.
static CACHE_HIT_MISS: LazyLock<[IntCounter; 2]> = LazyLock::new(|| {
    [
        CACHE.with_label_values(&["hit"]),
        CACHE.with_label_values(&["miss"]),
    ]
});

pub(crate) fn cache(hit: bool) {
    let [h, m] = &*CACHE_HIT_MISS;
    if hit { h } else { m }.inc();
}
