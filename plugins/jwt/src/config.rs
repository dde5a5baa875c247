//! The runtime form of the `jwt:` section and the build step that turns the
//! raw YAML into it, collecting every problem with its key path.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use jsonwebtoken::Algorithm;
use reqwest::Url;
use ztgate_filter::{BuildContext, ConfigProblem};

use crate::filter::JwtFilter;
use crate::jwks::{KeySource, KeyStore, LearnedKeys, StoreSettings};
use crate::keys::KeySet;
use crate::raw::{self, CertBinding, DpopMode};
use crate::token::parse_asymmetric_alg;

/// Default token size cap: real access tokens are 1–2 KiB; 8 KiB leaves room
/// for rich claims while keeping a parsing DoS cheap.
pub const DEFAULT_MAX_TOKEN_SIZE: usize = 8 * 1024;
/// Default verified-token cache size: a few MiB for a busy edge.
pub const DEFAULT_CACHE_CAPACITY: usize = 10_000;
/// Largest `cache_capacity`: the LRU reserves its table up front, so an
/// absurd value would abort the process at build time (found by fuzzing
/// the config); ten million tokens is gigabytes already.
pub const MAX_CACHE_CAPACITY: usize = 10_000_000;
/// Clock skew tolerated on `exp`/`nbf`/`iat` (a common IdP default).
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// JWKS refresh bounds around Cache-Control max-age: 5 minutes keeps a
/// rotation visible quickly, 1 hour bounds how long a removed key lives.
pub const DEFAULT_REFRESH_MIN: Duration = Duration::from_secs(5 * 60);
pub const DEFAULT_REFRESH_MAX: Duration = Duration::from_secs(60 * 60);
/// At most one unknown-`kid` refetch per issuer per interval, so a storm of
/// forged `kid`s cannot turn the gateway into a DoS on the IdP.
pub const DEFAULT_UNKNOWN_KID_INTERVAL: Duration = Duration::from_secs(30);
/// IdP calls must not hang startup or a request waiting on a refetch.
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// RFC 9449 §11.1 suggests a short window; 60 s tolerates modest skew.
pub const DEFAULT_DPOP_WINDOW: Duration = Duration::from_secs(60);
/// Algorithms accepted when the config names none.
pub const DEFAULT_ALGORITHMS: [Algorithm; 2] = [Algorithm::RS256, Algorithm::ES256];
/// Where scopes are looked for, in order (RFC 9068 `scope`, Azure/Okta `scp`).
pub const DEFAULT_SCOPE_CLAIMS: [&str; 3] = ["scope", "scp", "scopes"];

/// Everything the policy of one issuer needs; no I/O handles.
#[derive(Debug, Clone)]
pub struct IssuerPolicy {
    pub issuer: Arc<str>,
    pub audiences: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    /// Accepted `typ` values; `None` accepts any (including none).
    pub typ: Option<Vec<String>>,
    pub leeway: Duration,
    pub max_lifetime: Option<Duration>,
    pub required_claims: Vec<String>,
    pub scope_claims: Vec<String>,
    pub forward_token: bool,
    pub cert_binding: CertBinding,
    pub dpop: DpopMode,
    pub dpop_window: Duration,
    /// `x-ztgate-issuer`, built once.
    pub issuer_header: HeaderValue,
    /// A digest of everything above. The verified-token cache outlives a
    /// reload; an entry verified under another policy (audiences,
    /// algorithms, `typ`…) is not served, it is verified again.
    pub tag: u64,
}

impl IssuerPolicy {
    fn digest(&self) -> u64 {
        use sha2::{Digest, Sha256};
        let d = Sha256::digest(format!("{self:?}").as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(d.get(..8).unwrap_or(&[0; 8]));
        u64::from_le_bytes(first)
    }
}

/// The filter-wide settings.
#[derive(Debug, Clone)]
pub struct FilterSettings {
    pub max_token_size: usize,
    pub cache_capacity: usize,
    pub required: bool,
    /// `keys_file`s: a change reloads the config.
    pub key_files: Vec<std::path::PathBuf>,
}

/// Build the `jwt` filter from its section. `path` is the key path prefix
/// (`jwt`). Static key files are read here; network keys are fetched by
/// [`JwtFilter::start`].
pub fn build(
    raw: &raw::JwtSection,
    ctx: &BuildContext,
    path: &str,
) -> Result<JwtFilter, Vec<ConfigProblem>> {
    let raw::JwtSection {
        mode: _,
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
    raw: &raw::Issuer,
    ctx: &BuildContext,
    p: &str,
    problems: &mut Vec<ConfigProblem>,
) -> Option<(IssuerPolicy, KeyStore)> {
    let raw::Issuer {
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

/// An IdP URL must be `https`, or `http` on a loopback host when the issuer
/// explicitly allows it (tests, a sidecar IdP).
pub(crate) fn check_url(s: &str, allow_insecure_http: bool) -> Result<String, String> {
    let url = Url::parse(s).map_err(|e| format!("not a URL: {e}"))?;
    match url.scheme() {
        "https" => Ok(url.into()),
        "http" if allow_insecure_http && is_loopback(&url) => Ok(url.into()),
        "http" if allow_insecure_http => {
            Err("plain http is only allowed for loopback hosts".into())
        }
        "http" => Err("must be https (allow_insecure_http permits http on loopback only)".into()),
        _ => Err("must be an https URL".into()),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}
