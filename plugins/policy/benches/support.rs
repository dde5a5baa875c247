//! The request and filters the benchmark and `examples/decide_cost.rs`
//! measure: a caller every rule of the 20-rule refund policy is evaluated
//! for (it is allowed).
#![allow(dead_code)] // each user takes what it measures
#![allow(clippy::unwrap_used, clippy::expect_used)] // set-up: a panic is a broken fixture

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue, Method};
use ztgate_filter::{
    BuildContext, DeviceFacts, Facts, PeerCertificate, PeerIdentity, RequestView, SelectedRoute,
    SpiffeId, TlsFacts, TokenClaims, VerifiedToken,
};

const FRONTEND: &str = "spiffe://acme.test/ns/shop/sa/frontend";

pub fn facts() -> Facts {
    let cert = PeerCertificate {
        sha256: [7; 32],
        uri_sans: vec![FRONTEND.into()],
        dns_sans: vec![],
        subject: "CN=frontend".into(),
        is_ca: false,
        not_after: SystemTime::now() + Duration::from_secs(3600),
    };
    let mut facts = Facts::new("bench".into());
    facts.set_identity(PeerIdentity::attested_by_mtls(
        &cert,
        Some(SpiffeId::parse(FRONTEND).unwrap()),
    ));
    let claims = serde_json::json!({"tenant": "t1"});
    facts.set_token(VerifiedToken::attested_by_jwt(
        Arc::from("https://idp.acme.test"),
        Some("alice".into()),
        vec!["payments:read".into(), "payments:write".into()],
        SystemTime::now() + Duration::from_secs(60),
        Arc::new(TokenClaims::new(claims.to_string())),
    ));
    facts.set_device(DeviceFacts::attested_by_device(
        "fp-1".into(),
        None,
        Some("DE".into()),
        Some(3320),
    ));
    facts.set_route(SelectedRoute::attested_by_route(
        "payments".into(),
        "payments".into(),
    ));
    facts
}

pub fn filter(rego: &str, extra: &str) -> ztgate_policy::PolicyFilter {
    let dir = std::env::temp_dir().join(format!("ztgate-policy-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("p.rego"), rego).unwrap();
    std::fs::write(
        dir.join("data.json"),
        include_str!("../testdata/refunds.json"),
    )
    .unwrap();
    let section: ztgate_policy::config::Policy =
        // A budget of 1 s: the bench measures the cost of a call, and under
        // callgrind (about 50 times slower) the default 10 ms would refuse.
        serde_yaml::from_str(&format!(
            "rego: [p.rego]\ndata: [data.json]\nbudget: 1s\n{extra}"
        ))
        .unwrap();
    let ctx = BuildContext {
        base_dir: PathBuf::from(&dir),
        ..Default::default()
    };
    let f = ztgate_policy::build(&section, &[], &ctx, "policy").unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    f
}

pub const REFUNDS: &str = include_str!("../testdata/refunds.rego");

/// The refund policy's settings for the bench caller.
pub const REFUNDS_INPUT: &str = "input_claims: [tenant]\ninput_headers: [x-tenant]\n";

/// The request's headers (`x-tenant: t1`) and TLS facts.
pub fn request_parts() -> (HeaderMap, TlsFacts) {
    let mut headers = HeaderMap::new();
    headers.insert("x-tenant", HeaderValue::from_static("t1"));
    (headers, TlsFacts::default())
}

/// A `Refund` call from the frontend workload.
pub fn view<'a>(headers: &'a HeaderMap, tls: &'a TlsFacts) -> RequestView<'a> {
    RequestView {
        method: &Method::POST,
        path: "/payments.v1.Payments/Refund",
        authority: None,
        headers,
        tls,
        client_ip: Some("10.1.2.3".parse().unwrap()),
        socket_ip: None,
        now: SystemTime::now(),
    }
}
