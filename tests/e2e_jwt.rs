#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! Tokens end to end: a real OIDC provider on loopback, the gateway
//! discovering it, scope-aware routing, certificate-bound tokens, an IdP
//! outage, and per-identity rate limits.

mod support;

use base64::Engine;
use sha2::Digest;
use support::{assert_denied, bearer, eventually, Env, Setup, Until};
use ztgate_testkit::client;
use ztgate_testkit::idp::Idp;
use ztgate_testkit::proto::Request;

fn jwt_policy(issuer: &str, extra: &str) -> String {
    format!(
        "pipeline: [sanitize, mtls, jwt, route, ratelimit]\nmtls:\n  trust_domains: [acme.test]\njwt:\n  issuers:\n    - issuer: {issuer}\n      discovery: true\n      allow_insecure_http: true\n      audiences: [orders]\n      algorithms: [ES256]\n      typ: [at+jwt]\n{extra}"
    )
}

const ROUTING: &str = "routes:\n  - name: orders\n    match: { grpc: \"orders.v1.Orders\" }\n    select:\n      - { scopes: { all: [orders:write, orders:admin] }, upstream: admin }\n      - { scopes: { any: [orders:write] }, upstream: writers }\n      - { scopes: { any: [orders:read] }, upstream: readers }\nupstreams:\n  admin:\n    backends: [\"127.0.0.1:{B0}\"]\n  writers:\n    backends: [\"127.0.0.1:{B1}\"]\n  readers:\n    backends: [\"127.0.0.1:{B2}\"]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_pick_the_pool_and_bad_tokens_are_refused() {
    let idp = Idp::start().await.unwrap();
    let mut setup = Setup::new("jwt-scopes");
    let policy = jwt_policy(&idp.issuer, "");
    setup.policy = &policy;
    setup.routing = ROUTING;
    setup.backends = 3;
    let env = setup.start().await;
    let mut c = client::orders(env.web_channel().await);
    let tok = |scope: &str| {
        idp.token("alice", scope, "orders", 300, serde_json::json!({}))
            .unwrap()
    };

    // all: both scopes → admin; any → writers / readers; first match wins.
    let r = c
        .get(bearer(&tok("orders:write orders:admin")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.backend, "backend-0");
    let r = c
        .get(bearer(&tok("orders:admin orders:write orders:read")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.backend, "backend-0");
    let r = c
        .get(bearer(&tok("orders:write")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.backend, "backend-1");
    let reader = tok("orders:read");
    c.get(bearer(&reader)).await.unwrap();
    // The second call with the same token is served from the verified-token cache.
    let r = c.get(bearer(&reader)).await.unwrap().into_inner();
    assert_eq!(r.backend, "backend-2");
    // What the upstream sees: verified identity, no token.
    assert_eq!(
        r.metadata.get("x-ztgate-subject").map(String::as_str),
        Some("alice")
    );
    assert_eq!(
        r.metadata.get("x-ztgate-issuer").map(String::as_str),
        Some(idp.issuer.as_str())
    );
    assert_eq!(
        r.metadata.get("x-ztgate-scopes").map(String::as_str),
        Some("orders:read")
    );
    assert!(!r.metadata.contains_key("authorization"));

    // Neither scope → PERMISSION_DENIED scope_missing.
    let err = c.get(bearer(&tok("profile"))).await.unwrap_err();
    assert_denied(&err, tonic::Code::PermissionDenied, "scope_missing", None);

    // Missing, expired, wrong audience, garbage.
    let err = c.get(Request::default()).await.unwrap_err();
    assert_denied(&err, tonic::Code::Unauthenticated, "token_missing", None);
    let expired = idp
        .token(
            "alice",
            "orders:read",
            "orders",
            -120,
            serde_json::json!({}),
        )
        .unwrap();
    let err = c.get(bearer(&expired)).await.unwrap_err();
    assert_denied(
        &err,
        tonic::Code::Unauthenticated,
        "token_expired",
        Some("Bearer error=\"invalid_token\""),
    );
    let other_aud = idp
        .token(
            "alice",
            "orders:read",
            "billing",
            300,
            serde_json::json!({}),
        )
        .unwrap();
    let err = c.get(bearer(&other_aud)).await.unwrap_err();
    assert_denied(
        &err,
        tonic::Code::Unauthenticated,
        "token_audience_mismatch",
        None,
    );
    let err = c.get(bearer("not.a.jwt")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    // A denial never echoes the token.
    assert!(!err.message().contains(&expired));

    assert!(
        env.metric_reaching("ztgate_jwt_cache_total", &[("result", "hit")], 1.0)
            .await
            >= 1.0
    );
    assert!(
        env.metric_reaching("ztgate_jwks_refresh_total", &[("result", "success")], 1.0)
            .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_bound_tokens() {
    let idp = Idp::start().await.unwrap();
    let mut setup = Setup::new("jwt-cnf");
    let policy = jwt_policy(&idp.issuer, "      cert_binding: require\n");
    setup.policy = &policy;
    setup.routing = ROUTING;
    setup.backends = 3;
    let env = setup.start().await;
    let thumb = |der: &[u8]| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(der))
    };
    let bound = idp
        .token(
            "alice",
            "orders:read",
            "orders",
            300,
            serde_json::json!({"cnf": {"x5t#S256": thumb(&env.web.der)}}),
        )
        .unwrap();
    let mut c = client::orders(env.web_channel().await);
    assert_eq!(
        c.get(bearer(&bound)).await.unwrap().into_inner().backend,
        "backend-2"
    );

    // The same token from another workload's connection is refused.
    let other = env.svid("spiffe://acme.test/ns/shop/sa/other");
    let err = client::orders(env.channel_as(&other).await)
        .get(bearer(&bound))
        .await
        .unwrap_err();
    assert_denied(
        &err,
        tonic::Code::Unauthenticated,
        "token_cert_binding_mismatch",
        None,
    );

    // `require`: an unbound token is refused.
    let unbound = idp
        .token("alice", "orders:read", "orders", 300, serde_json::json!({}))
        .unwrap();
    let err = c.get(bearer(&unbound)).await.unwrap_err();
    assert_denied(
        &err,
        tonic::Code::Unauthenticated,
        "token_cert_binding_missing",
        None,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idp_down_with_no_keys_is_unavailable_not_unauthenticated() {
    // An issuer on a port where nothing listens.
    let closed = ztgate_testkit::harness::ClosedPort::new().unwrap();
    let dead = format!("http://127.0.0.1:{}", closed.port);
    let mut setup = Setup::new("jwt-down");
    let policy = jwt_policy(&dead, "");
    setup.policy = &policy;
    setup.routing = ROUTING;
    setup.backends = 3;
    setup.until = Until::Listening;
    let env = setup.start().await;
    let (code, body) = env.gw.admin_get("/readyz").unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("jwt"), "{body}");
    // A token that names the configured issuer, signed by a key the gateway cannot get.
    let idp = Idp::start().await.unwrap();
    let mut token_claims = idp
        .token("alice", "orders:read", "orders", 300, serde_json::json!({}))
        .unwrap();
    token_claims = reissue(&token_claims, &idp.issuer, &dead);
    let err = client::orders(env.web_channel().await)
        .get(bearer(&token_claims))
        .await
        .unwrap_err();
    assert_denied(&err, tonic::Code::Unavailable, "jwks_unavailable", None);
}

/// Swap the `iss` claim of an unverified token (the signature no longer
/// matters: the gateway cannot get any key for that issuer anyway).
fn reissue(token: &str, from: &str, to: &str) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let claims = String::from_utf8(b64.decode(&parts[1]).unwrap())
        .unwrap()
        .replace(from, to);
    parts[1] = b64.encode(claims);
    parts.join(".")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_per_subject() {
    let idp = Idp::start().await.unwrap();
    let mut setup = Setup::new("jwt-ratelimit");
    let policy = jwt_policy(
        &idp.issuer,
        "ratelimit:\n  rules:\n    - name: per-subject\n      key: subject\n      limit: 3\n      interval: 60s\n",
    );
    setup.policy = &policy;
    setup.routing = ROUTING;
    setup.backends = 3;
    let env = setup.start().await;
    let mut c = client::orders(env.web_channel().await);
    let alice = idp
        .token("alice", "orders:read", "orders", 300, serde_json::json!({}))
        .unwrap();
    let bob = idp
        .token("bob", "orders:read", "orders", 300, serde_json::json!({}))
        .unwrap();
    for _ in 0..3 {
        c.get(bearer(&alice)).await.unwrap();
    }
    let err = c.get(bearer(&alice)).await.unwrap_err();
    assert_denied(&err, tonic::Code::ResourceExhausted, "rate_limited", None);
    let retry: u64 = err
        .metadata()
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Another identity is not affected.
    c.get(bearer(&bob)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_identity_assertion_verifies_against_the_admin_jwks() {
    let idp = Idp::start().await.unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let key_dir = support::workdir("assertion-key");
    let key_path = key_dir.join("assertion-key.pem");
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let mut setup = Setup::new("jwt-assertion");
    let policy = format!(
        "{}assertion:\n  key: {}\n  audience: orders-backend\n  ttl: 60s\n",
        jwt_policy(&idp.issuer, ""),
        key_path.display()
    );
    setup.policy = &policy;
    setup.routing = ROUTING;
    setup.backends = 3;
    let env = setup.start().await;
    let token = idp
        .token("alice", "orders:read", "orders", 300, serde_json::json!({}))
        .unwrap();
    let mut c = client::orders(env.web_channel().await);
    // A forged assertion from the client never reaches the backend.
    let mut req = bearer(&token);
    req.metadata_mut()
        .insert("x-ztgate-assertion", "forged".parse().unwrap());
    let r1 = c.get(req).await.unwrap().into_inner();
    let r2 = c.get(bearer(&token)).await.unwrap().into_inner();
    let a1 = r1.metadata.get("x-ztgate-assertion").cloned().unwrap();
    assert_ne!(a1, "forged");
    // Cached per identity: the same assertion for the same caller.
    assert_eq!(Some(&a1), r2.metadata.get("x-ztgate-assertion"));

    let (code, jwks) = env.gw.admin_get("/.well-known/jwks.json").unwrap();
    assert_eq!(code, 200);
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&jwks).unwrap();
    let header = jsonwebtoken::decode_header(&a1).unwrap();
    let jwk = jwks.find(header.kid.as_deref().unwrap()).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_audience(&["orders-backend"]);
    v.set_issuer(&["ztgate"]);
    let data = jsonwebtoken::decode::<serde_json::Value>(
        &a1,
        &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(),
        &v,
    )
    .unwrap();
    assert_eq!(data.claims["sub"], "alice");
    assert_eq!(data.claims["spiffe_id"], support::WEB_ID);
    assert_eq!(data.claims["scope"], "orders:read");
    assert_eq!(data.claims["token_iss"], idp.issuer.as_str());
}

type RsaKey = openssl::pkey::PKey<openssl::pkey::Private>;

fn rsa_key() -> RsaKey {
    openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap()
}

/// The public JWK of `key` under `kid`.
fn rsa_jwk(key: &RsaKey, kid: &str) -> serde_json::Value {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let rsa = key.rsa().unwrap();
    serde_json::json!({
        "kty": "RSA", "use": "sig", "kid": kid,
        "n": b64.encode(rsa.n().to_vec()), "e": b64.encode(rsa.e().to_vec()),
    })
}

/// An access token of `iss` for alice (`orders:read`, five minutes) signed
/// by `key` as `alg` (RS256/384/512) under `kid`.
fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn rsa_token(key: &RsaKey, kid: &str, alg: &str, iss: &str) -> String {
    let now = now_secs();
    let claims = serde_json::json!({
        "iss": iss, "sub": "alice", "aud": "orders", "scope": "orders:read",
        "iat": now - 1, "exp": now + 300,
    });
    rsa_token_raw(key, kid, alg, &claims.to_string())
}

/// A token whose claims segment is exactly `claims` (repeated names,
/// escapes: what a JSON library would not write).
fn rsa_token_raw(key: &RsaKey, kid: &str, alg: &str, claims: &str) -> String {
    use openssl::hash::MessageDigest;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let md = match alg {
        "RS384" => MessageDigest::sha384(),
        "RS512" => MessageDigest::sha512(),
        _ => MessageDigest::sha256(),
    };
    let header = serde_json::json!({"alg": alg, "kid": kid, "typ": "at+jwt"});
    let input = format!("{}.{}", b64.encode(header.to_string()), b64.encode(claims));
    let mut s = openssl::sign::Signer::new(md, key).unwrap();
    s.update(input.as_bytes()).unwrap();
    format!("{input}.{}", b64.encode(s.sign_to_vec().unwrap()))
}

/// A call with `token` is refused 16 UNAUTHENTICATED for `reason`
/// (`context` names the case in a failure).
async fn assert_token_refused(
    c: &mut client::OrdersClient<tonic::transport::Channel>,
    token: &str,
    reason: &str,
    context: &str,
) {
    let err = c.get(bearer(token)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{context}");
    assert!(err.message().starts_with(reason), "{context}: {err:?}");
}

/// An IdP publishing one RSA key (`rsa-1`), and a gateway with `pipeline`
/// whose one issuer, audience `orders`, takes it (`issuer_extra`: more of
/// the issuer's YAML), routing by scope to three backends.
async fn rsa_issuer_env(name: &str, pipeline: &str, issuer_extra: &str) -> (RsaKey, Idp, Env) {
    let key = rsa_key();
    let idp = Idp::start_with_jwks(&[rsa_jwk(&key, "rsa-1")])
        .await
        .unwrap();
    let mut setup = Setup::new(name);
    let policy = format!(
        "pipeline: {pipeline}\nmtls:\n  trust_domains: [acme.test]\njwt:\n  issuers:\n    - issuer: {}\n      discovery: true\n      allow_insecure_http: true\n      audiences: [orders]\n{issuer_extra}",
        idp.issuer
    );
    setup.policy = &policy;
    setup.routing = ROUTING;
    setup.backends = 3;
    let env = setup.start().await;
    (key, idp, env)
}

/// An RSA-signed token (`RS256`/`RS384`, PKCS#1 v1.5) is accepted only with
/// the issuer's key, its exact signature and an allowed algorithm — first,
/// after a SIGHUP, and on a second replica; `jwt` runs before `mtls` here,
/// against the usual order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_tokens_hold_after_a_reload_and_on_a_replica() {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (key, idp, env) = rsa_issuer_env(
        "jwt-rsa",
        "[sanitize, jwt, mtls, route]",
        "      algorithms: [RS256, RS384]\n      typ: [at+jwt]\n",
    )
    .await;
    let sign = |signer: &RsaKey, alg: &str| rsa_token(signer, "rsa-1", alg, &idp.issuer);

    let rs256 = sign(&key, "RS256");
    let rs384 = sign(&key, "RS384");
    let rs512 = sign(&key, "RS512");
    let mut tampered = rs256.clone().into_bytes();
    let last = tampered.len() - 3;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let stranger = rsa_key();
    let forged = sign(&stranger, "RS256");
    // The RS256 signature presented as RS384.
    let relabelled = {
        let parts: Vec<&str> = rs256.split('.').collect();
        let header = b64.encode(r#"{"alg":"RS384","kid":"rsa-1","typ":"at+jwt"}"#);
        format!("{header}.{}.{}", parts[1], parts[2])
    };

    let replica = env.replica("b");
    env.first_then_reloaded_and_replica(&replica, async |gw, round| {
        let mut c = client::orders(env.channel_to(gw, &env.web).await);
        for ok in [&rs256, &rs384] {
            // Twice: verified, then from the verified-token cache.
            for _ in 0..2 {
                let r = c.get(bearer(ok)).await.unwrap().into_inner();
                assert_eq!(r.backend, "backend-2", "{round}");
            }
        }
        for (what, bad, reason) in [
            ("tampered", &tampered, "token_signature_invalid"),
            ("another key", &forged, "token_signature_invalid"),
            ("relabelled", &relabelled, "token_signature_invalid"),
            ("RS512 not allowed", &rs512, "token_algorithm_not_allowed"),
        ] {
            assert_token_refused(&mut c, bad, reason, &format!("{round}: {what}")).await;
        }
    })
    .await;
}

/// The issuer's RSA keys from a watched `keys_file`: a rotation written to
/// the file applies with no signal — a token of the withdrawn key is
/// refused even though it was verified and cached before, one of the new
/// key is accepted — with `jwt` first in the pipeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_rsa_keys_file_applies_without_a_signal() {
    let iss = "https://idp.rsa.test";
    let keys =
        std::env::temp_dir().join(format!("ztgate-e2e-rsa-keys-{}.json", std::process::id()));
    let (old, new) = (rsa_key(), rsa_key());
    let write = |jwk: serde_json::Value| {
        let staged = keys.with_extension("new");
        std::fs::write(&staged, serde_json::json!({ "keys": [jwk] }).to_string()).unwrap();
        std::fs::rename(&staged, &keys).unwrap();
    };
    write(rsa_jwk(&old, "k1"));
    let mut setup = Setup::new("jwt-rsa-file");
    let policy = format!(
        "pipeline: [jwt, sanitize, mtls, route]\nmtls:\n  trust_domains: [acme.test]\njwt:\n  issuers:\n    - issuer: {iss}\n      keys_file: {}\n      audiences: [orders]\n      algorithms: [RS256]\n",
        keys.display()
    );
    setup.policy = &policy;
    setup.routing = ROUTING;
    setup.backends = 3;
    let env = setup.start().await;
    let mut c = client::orders(env.web_channel().await);
    let of_old_key = rsa_token(&old, "k1", "RS256", iss);
    c.get(bearer(&of_old_key)).await.unwrap();
    // Verified once, now served from the verified-token cache.
    c.get(bearer(&of_old_key)).await.unwrap();

    write(rsa_jwk(&new, "k2"));
    let rotated = eventually(std::time::Duration::from_secs(15), async || {
        c.clone()
            .get(bearer(&rsa_token(&new, "k2", "RS256", iss)))
            .await
            .is_ok()
    })
    .await;
    assert!(rotated, "the rotated keys file did not apply");
    // The key is withdrawn: its token is refused although it was cached,
    // and so is a new one of the same key.
    for t in [of_old_key.clone(), rsa_token(&old, "k1", "RS256", iss)] {
        let err = c.get(bearer(&t)).await.unwrap_err();
        assert_denied(
            &err,
            tonic::Code::Unauthenticated,
            "token_key_unknown",
            None,
        );
    }
    let _ = std::fs::remove_file(&keys);
}

/// The claim rules read each claim as the JSON of the signed token says,
/// first, after a SIGHUP, on a replica, and after the watched config file
/// narrowed the audience (a cached token then refused), with `jwt` first
/// in the pipeline: dates (whole, fractional, in the future, past), `aud` as a
/// string or an array, a repeated name read as its last value (RFC 7519
/// §4), an escaped name, scopes as a string or an array, a `sub` that is
/// not a string, a required claim that is `null`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_rules_hold_after_a_reload_and_on_a_replica() {
    let (key, idp, env) = rsa_issuer_env(
        "jwt-claims",
        "[jwt, sanitize, mtls, route]",
        "      algorithms: [RS256]\n      required_claims: [client_id]\n",
    )
    .await;
    let (iss, now) = (idp.issuer.clone(), now_secs());
    // Every claim a test does not name, valid; `extra` goes last, so a name
    // it repeats is the one read.
    let token = |extra: &str| {
        let claims = format!(
            r#"{{"iss":"{iss}","sub":"alice","aud":"orders","scope":"orders:read","client_id":"c1","iat":{},"exp":{}{extra}}}"#,
            now - 1,
            now + 300
        );
        rsa_token_raw(&key, "rsa-1", "RS256", &claims)
    };
    let accepted = [
        ("as issued", token(""), "backend-2"),
        (
            "fractional exp",
            token(&format!(r#","exp":{}.5"#, now + 300)),
            "backend-2",
        ),
        (
            "aud in an array",
            token(r#","aud":["billing","orders"]"#),
            "backend-2",
        ),
        (
            "escaped name",
            token(r#","\u0061ud":"orders""#),
            "backend-2",
        ),
        (
            "last aud wins",
            token(r#","aud":"billing","aud":"orders""#),
            "backend-2",
        ),
        (
            "scopes in an array",
            token(r#","scope":["orders:write","orders:read"]"#),
            "backend-1",
        ),
    ];
    let refused = [
        (
            "expired",
            token(&format!(r#","exp":{}"#, now - 120)),
            "token_expired",
        ),
        (
            "nbf ahead",
            token(&format!(r#","nbf":{}"#, now + 120)),
            "token_not_yet_valid",
        ),
        ("exp a string", token(r#","exp":"soon""#), "token_malformed"),
        (
            "aud elsewhere",
            token(r#","aud":["billing"]"#),
            "token_audience_mismatch",
        ),
        (
            "last aud loses",
            token(r#","aud":"orders","aud":"billing""#),
            "token_audience_mismatch",
        ),
        (
            "iss repeated",
            token(r#","iss":"https://other.test""#),
            "token_issuer_unknown",
        ),
        ("sub a number", token(r#","sub":7"#), "token_malformed"),
        (
            "client_id null",
            token(r#","client_id":null"#),
            "token_claim_missing",
        ),
        ("scope a number", token(r#","scope":7"#), "token_malformed"),
    ];
    let replica = env.replica("b");
    env.first_then_reloaded_and_replica(&replica, async |gw, round| {
        let mut c = client::orders(env.channel_to(gw, &env.web).await);
        for (what, t, backend) in &accepted {
            // Twice: verified, then from the verified-token cache.
            for _ in 0..2 {
                match c.get(bearer(t)).await {
                    Ok(r) => assert_eq!(r.into_inner().backend, *backend, "{round}: {what}"),
                    Err(e) => panic!("{round}: {what}: {e:?}"),
                }
            }
        }
        for (what, t, reason) in &refused {
            assert_token_refused(&mut c, t, reason, &format!("{round}: {what}")).await;
        }
    })
    .await;

    // The audience narrowed through the watched config file alone: a token
    // accepted and cached before is refused on the next call, the last
    // `aud` is still the one read.
    support::edit_config_reloaded(&env.gw, |y| {
        y.replace("audiences: [orders]", "audiences: [billing]")
    })
    .await;
    let mut c = client::orders(env.web_channel().await);
    let named = |list: &[(&str, String, &str)], name: &str| {
        list.iter()
            .find(|(what, ..)| *what == name)
            .unwrap()
            .1
            .clone()
    };
    let as_issued = named(&accepted, "as issued");
    let last_aud_billing = named(&refused, "last aud loses");
    assert_token_refused(&mut c, &as_issued, "token_audience_mismatch", "narrowed").await;
    let r = c.get(bearer(&last_aud_billing)).await.unwrap().into_inner();
    assert_eq!(r.backend, "backend-2", "narrowed: the last aud is billing");
}
