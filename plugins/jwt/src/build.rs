//! `jwt:` → [`JwtFilter`]: the build step that turns the YAML section
//! ([`crate::config`]) into the runtime filter, its issuer policies
//! ([`IssuerPolicy`]) and key stores, collecting every problem with its key
//! path.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use ztgate_filter::{BuildContext, ConfigProblem};

use crate::config::{
    self, DEFAULT_ALGORITHMS, DEFAULT_CACHE_CAPACITY, DEFAULT_DPOP_WINDOW, DEFAULT_HTTP_TIMEOUT,
    DEFAULT_LEEWAY, DEFAULT_MAX_TOKEN_SIZE, DEFAULT_REFRESH_MAX, DEFAULT_REFRESH_MIN,
    DEFAULT_SCOPE_CLAIMS, DEFAULT_UNKNOWN_KID_INTERVAL, MAX_CACHE_CAPACITY,
};
use crate::filter::{FilterSettings, JwtFilter};
use crate::jwks::{check_url, KeySource, KeyStore, LearnedKeys, StoreSettings};
use crate::keys::KeySet;
use crate::token::parse_asymmetric_alg;
use crate::verify::IssuerPolicy;

/// Build the `jwt` filter from its section. `path` is the key path prefix
/// (`jwt`). Static key files are read here; network keys are fetched by
/// [`JwtFilter::start`].
pub fn build(
    raw: &config::JwtSection,
    ctx: &BuildContext,
    path: &str,
) -> Result<JwtFilter, Vec<ConfigProblem>> {
    let config::JwtSection {
        mode: _, // applied by the gateway's Stage
        max_token_size,
        cache_capacity,
        required,
        issuers,
    } = raw;
    let mut problems = Vec::new();
    let max_token_size = max_token_size.unwrap_or(DEFAULT_MAX_TOKEN_SIZE);
    if max_token_size < 64 {
        problems.push(ConfigProblem::new(
            format!("{path}.max_token_size"),
            "must be at least 64 bytes",
        ));
    }
    if cache_capacity.is_some_and(|c| c > MAX_CACHE_CAPACITY) {
        problems.push(ConfigProblem::new(
            format!("{path}.cache_capacity"),
            format!("must be at most {MAX_CACHE_CAPACITY}"),
        ));
    }
    if issuers.is_empty() {
        problems.push(ConfigProblem::new(
            format!("{path}.issuers"),
            "at least one issuer is required",
        ));
    }
    let mut built = Vec::with_capacity(issuers.len());
    let key_files = issuers
        .iter()
        .filter_map(|i| i.keys_file.as_ref().map(|f| ctx.resolve(f)))
        .collect();
    for (i, iss) in issuers.iter().enumerate() {
        let p = format!("{path}.issuers[{i}]");
        if issuers.iter().take(i).any(|o| o.issuer == iss.issuer) {
            problems.push(ConfigProblem::new(
                format!("{p}.issuer"),
                "duplicate issuer",
            ));
        }
        if let Some(pair) = build_issuer(iss, ctx, &p, &mut problems) {
            built.push(pair);
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(JwtFilter::new(
        FilterSettings {
            max_token_size,
            cache_capacity: cache_capacity.unwrap_or(DEFAULT_CACHE_CAPACITY),
            required: required.unwrap_or(true),
            key_files,
        },
        built,
        ctx,
    ))
}

fn build_issuer(
    raw: &config::Issuer,
    ctx: &BuildContext,
    p: &str,
    problems: &mut Vec<ConfigProblem>,
) -> Option<(IssuerPolicy, KeyStore)> {
    let config::Issuer {
        issuer,
        discovery,
        jwks_uri,
        keys_file,
        allow_insecure_http,
        audiences,
        algorithms,
        typ,
        leeway,
        max_lifetime,
        required_claims,
        scope_claims,
        forward_token,
        cert_binding,
        dpop,
        dpop_window,
        jwks_refresh,
        unknown_kid_refetch_interval,
        ca_file,
        http_timeout,
    } = raw;
    let before = problems.len();
    let mut problem = |key: &str, msg: String| {
        problems.push(ConfigProblem::new(format!("{p}{key}"), msg));
    };

    if issuer.is_empty() {
        problem(".issuer", "must not be empty".into());
    }
    let issuer_header = HeaderValue::from_str(issuer).ok();
    if issuer_header.is_none() {
        problem(".issuer", "must be visible ASCII".into());
    }

    let sources = usize::from(*discovery)
        + usize::from(jwks_uri.is_some())
        + usize::from(keys_file.is_some());
    if sources != 1 {
        problem(
            "",
            "set exactly one of `discovery: true`, `jwks_uri` or `keys_file`".into(),
        );
    }
    let mut source = None;
    if *discovery {
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        match check_url(&url, *allow_insecure_http) {
            Ok(u) => source = Some(KeySource::Discovery { url: u }),
            Err(m) => problem(".issuer", m),
        }
    }
    if let Some(u) = jwks_uri {
        match check_url(u, *allow_insecure_http) {
            Ok(u) => source = Some(KeySource::JwksUri(u)),
            Err(m) => problem(".jwks_uri", m),
        }
    }
    let mut static_keys = None;
    if let Some(f) = keys_file {
        let file = ctx.resolve(f);
        match std::fs::read(&file) {
            Err(e) => problem(".keys_file", format!("cannot read {}: {e}", file.display())),
            Ok(bytes) => match KeySet::from_jwks(&bytes) {
                Ok(set) => {
                    static_keys = Some(set);
                    source = Some(KeySource::Static);
                }
                Err(e) => problem(".keys_file", format!("{}: {e}", file.display())),
            },
        }
    }

    if audiences.is_empty() {
        problem(
            ".audiences",
            "at least one audience is required (RFC 8725 §3.9)".into(),
        );
    }
    let algorithms = match algorithms {
        None => DEFAULT_ALGORITHMS.to_vec(),
        Some(list) => {
            if list.is_empty() {
                problem(".algorithms", "must not be empty".into());
            }
            let mut out = Vec::new();
            for (j, a) in list.iter().enumerate() {
                match parse_asymmetric_alg(a) {
                    Some(alg) => out.push(alg),
                    None if a.eq_ignore_ascii_case("none") || a.to_ascii_uppercase().starts_with("HS") => problem(
                        &format!(".algorithms[{j}]"),
                        format!("`{a}` is refused: only asymmetric signature algorithms are allowed"),
                    ),
                    None => problem(
                        &format!(".algorithms[{j}]"),
                        format!("unknown algorithm `{a}` (RS256/384/512, PS256/384/512, ES256/384, EdDSA)"),
                    ),
                }
            }
            out
        }
    };
    if typ.as_ref().is_some_and(Vec::is_empty) {
        problem(
            ".typ",
            "must not be empty (leave it out to accept any typ)".into(),
        );
    }
    if max_lifetime.is_some_and(|d| d.is_zero()) {
        problem(".max_lifetime", "must be more than zero".into());
    }
    let scope_claims: Vec<String> = scope_claims.clone().unwrap_or_else(|| {
        DEFAULT_SCOPE_CLAIMS
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
    });
    if scope_claims.is_empty() {
        problem(".scope_claims", "must not be empty".into());
    }
    let dpop_window = dpop_window.unwrap_or(DEFAULT_DPOP_WINDOW);
    if dpop_window.is_zero() {
        problem(".dpop_window", "must be more than zero".into());
    }
    let refresh_min = jwks_refresh
        .as_ref()
        .and_then(|r| r.min)
        .unwrap_or(DEFAULT_REFRESH_MIN);
    let refresh_max = jwks_refresh
        .as_ref()
        .and_then(|r| r.max)
        .unwrap_or(DEFAULT_REFRESH_MAX);
    if refresh_min < Duration::from_secs(1) {
        problem(".jwks_refresh.min", "must be at least 1s".into());
    }
    if refresh_min > refresh_max {
        problem(".jwks_refresh", "min must not exceed max".into());
    }
    let unknown_kid_interval = unknown_kid_refetch_interval.unwrap_or(DEFAULT_UNKNOWN_KID_INTERVAL);
    if unknown_kid_interval.is_zero() {
        problem(
            ".unknown_kid_refetch_interval",
            "must be more than zero".into(),
        );
    }
    let timeout = http_timeout.unwrap_or(DEFAULT_HTTP_TIMEOUT);
    if timeout.is_zero() {
        problem(".http_timeout", "must be more than zero".into());
    }
    let mut client = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .https_only(!*allow_insecure_http);
    if let Some(ca) = ca_file {
        let file = ctx.resolve(ca);
        match std::fs::read(&file) {
            Err(e) => problem(".ca_file", format!("cannot read {}: {e}", file.display())),
            Ok(pem) => match reqwest::Certificate::from_pem_bundle(&pem) {
                Ok(certs) if !certs.is_empty() => {
                    for c in certs {
                        client = client.add_root_certificate(c);
                    }
                }
                _ => problem(
                    ".ca_file",
                    format!("{}: no PEM certificate", file.display()),
                ),
            },
        }
    }
    let client = match client.build() {
        Ok(c) => Some(c),
        Err(e) => {
            problem("", format!("cannot build the HTTP client: {e}"));
            None
        }
    };

    if problems.len() != before {
        return None;
    }
    let (Some(source), Some(client), Some(issuer_header)) = (source, client, issuer_header) else {
        return None;
    };
    let issuer: Arc<str> = Arc::from(issuer.as_str());
    // Keys from a file are config; keys from the network are memory.
    let learned = match static_keys {
        Some(set) => Arc::new(LearnedKeys::with_keys(set)),
        None => ctx.memory.claim(
            &LearnedKeys::memory_key(&issuer, &source),
            LearnedKeys::default,
        ),
    };
    let store = KeyStore::new(
        issuer.clone(),
        source,
        learned,
        StoreSettings {
            client,
            refresh_min,
            refresh_max,
            unknown_kid_interval,
            allow_insecure_http: *allow_insecure_http,
        },
    );
    let mut policy = IssuerPolicy {
        issuer,
        audiences: audiences.clone(),
        algorithms,
        typ: typ.clone(),
        leeway: leeway.unwrap_or(DEFAULT_LEEWAY),
        max_lifetime: *max_lifetime,
        required_claims: required_claims.clone(),
        scope_claims,
        forward_token: *forward_token,
        cert_binding: *cert_binding,
        dpop: *dpop,
        dpop_window,
        issuer_header,
        tag: 0,
    };
    policy.tag = policy.digest();
    Some((policy, store))
}
