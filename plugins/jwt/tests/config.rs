//! The build step: every problem reported at once, each with its key path.

#![allow(clippy::unwrap_used)]

mod support;

use support::ctx;
use ztgate_jwt::config;

fn problems(yaml: &str) -> Vec<(String, String)> {
    let raw: config::JwtSection = serde_yaml::from_str(yaml).unwrap();
    match ztgate_jwt::build(&raw, &ctx(), "jwt") {
        Ok(_) => vec![],
        Err(p) => p.into_iter().map(|p| (p.path, p.message)).collect(),
    }
}

fn has(p: &[(String, String)], path: &str, needle: &str) -> bool {
    p.iter().any(|(k, m)| k == path && m.contains(needle))
}

#[test]
fn every_problem_is_collected_with_its_path() {
    let p = problems(
        r#"
max_token_size: 10
issuers:
  - issuer: https://a.example
    discovery: true
    audiences: [x]
    algorithms: [RS256, none, HS256, XX999]
    typ: []
  - issuer: http://b.example
    discovery: true
    allow_insecure_http: true
    audiences: []
    jwks_refresh: {min: 2h, max: 1h}
  - issuer: https://c.example
    jwks_uri: https://c.example/jwks
    keys_file: nope.json
    audiences: [x]
  - issuer: https://a.example
    jwks_uri: http://a.example/jwks
    audiences: [x]
    ca_file: /nonexistent/ca.pem
"#,
    );
    assert!(has(&p, "jwt.max_token_size", "at least"), "{p:#?}");
    assert!(has(&p, "jwt.issuers[0].algorithms[1]", "refused"), "{p:#?}");
    assert!(has(&p, "jwt.issuers[0].algorithms[2]", "refused"), "{p:#?}");
    assert!(has(&p, "jwt.issuers[0].algorithms[3]", "unknown"), "{p:#?}");
    assert!(has(&p, "jwt.issuers[0].typ", "empty"), "{p:#?}");
    assert!(has(&p, "jwt.issuers[1].issuer", "loopback"), "{p:#?}");
    assert!(has(&p, "jwt.issuers[1].audiences", "audience"), "{p:#?}");
    assert!(has(&p, "jwt.issuers[1].jwks_refresh", "min"), "{p:#?}");
    assert!(has(&p, "jwt.issuers[2]", "exactly one"), "{p:#?}");
    assert!(has(&p, "jwt.issuers[2].keys_file", "cannot read"), "{p:#?}");
    assert!(has(&p, "jwt.issuers[3].issuer", "duplicate"), "{p:#?}");
    assert!(has(&p, "jwt.issuers[3].jwks_uri", "https"), "{p:#?}");
    assert!(has(&p, "jwt.issuers[3].ca_file", "cannot read"), "{p:#?}");
}

/// Regression (fuzz/regressions/config-jwt-cache-capacity.bin): an absurd
/// capacity aborted the process when the LRU reserved its table.
#[test]
fn an_absurd_cache_capacity_is_a_problem_not_an_abort() {
    assert!(has(
        &problems("cache_capacity: 18446744073709551615\nissuers: []\n"),
        "jwt.cache_capacity",
        "at most"
    ));
}

#[test]
fn no_issuers_and_unknown_keys() {
    assert!(has(
        &problems("issuers: []\n"),
        "jwt.issuers",
        "at least one"
    ));
    let e = serde_yaml::from_str::<config::JwtSection>("issuers: []\nbogus: 1\n").unwrap_err();
    assert!(e.to_string().contains("bogus"));
    let e =
        serde_yaml::from_str::<config::JwtSection>("issuers:\n  - issuer: x\n    jwks_url: y\n")
            .unwrap_err();
    assert!(e.to_string().contains("jwks_url"));
}

#[test]
fn a_full_section_builds() {
    let dir = std::env::temp_dir().join(format!("ztgate-jwt-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ec = support::TestKey::es256("k");
    std::fs::write(
        dir.join("jwks.json"),
        serde_json::json!({"keys": [ec.jwk]}).to_string(),
    )
    .unwrap();
    let yaml = format!(
        r#"
mode: shadow
max_token_size: 8192
cache_capacity: 100
required: true
issuers:
  - issuer: https://idp.example
    keys_file: {}
    audiences: [orders, billing]
    algorithms: [ES256, EdDSA, PS256]
    typ: [at+jwt]
    leeway: 10s
    max_lifetime: 1h
    required_claims: [client_id]
    scope_claims: [scp]
    forward_token: false
    cert_binding: require
    dpop: allow
    dpop_window: 30s
    jwks_refresh: {{min: 1m, max: 2h}}
    unknown_kid_refetch_interval: 10s
    http_timeout: 3s
"#,
        dir.join("jwks.json").display()
    );
    assert_eq!(problems(&yaml), vec![]);
}
