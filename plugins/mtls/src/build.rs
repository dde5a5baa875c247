//! `mtls:` → [`MtlsFilter`]: every bad trust domain and pattern reported
//! with its key path.

use ztgate_filter::{BuildContext, ConfigProblem, SpiffeId, SpiffePattern};

use crate::config;
use crate::MtlsFilter;

/// Build the filter, reporting every bad trust domain and pattern.
pub fn build(
    raw: &config::Mtls,
    _ctx: &BuildContext,
    path: &str,
) -> Result<MtlsFilter, Vec<ConfigProblem>> {
    let config::Mtls {
        mode: _, // applied by the gateway's Stage
        require_cert,
        require_svid,
        trust_domains,
        allowed_ids: patterns,
        trust_bundles: _, // loaded by the listener's TLS (gateway/src/tls/trust.rs)
    } = raw;
    let mut problems = Vec::new();
    for (i, td) in trust_domains.iter().enumerate() {
        if SpiffeId::parse(&format!("spiffe://{td}")).is_err() {
            problems.push(ConfigProblem::new(
                format!("{path}.trust_domains[{i}]"),
                format!("`{td}` is not a valid SPIFFE trust domain (lowercase [a-z0-9.-_])"),
            ));
        }
    }
    let mut allowed_ids = Vec::new();
    for (i, p) in patterns.iter().enumerate() {
        match SpiffePattern::parse(p) {
            Ok(p) => allowed_ids.push(p),
            Err(e) => problems.push(ConfigProblem::new(
                format!("{path}.allowed_ids[{i}]"),
                format!("`{p}`: {e}"),
            )),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(MtlsFilter {
        require_cert: *require_cert,
        require_svid: *require_svid,
        trust_domains: trust_domains.clone(),
        allowed_ids,
    })
}
