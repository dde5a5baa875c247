//! Behaviour of the whole filter, built from YAML as users write it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, Method};
use ztgate_filter::{
    BuildContext, Chain, Decision, Facts, Mode, PeerCertificate, PeerIdentity, Reason, RequestView,
    SpiffeId, Stage, TlsFacts, VerifiedToken,
};

use crate::{build, config, RouteFilter};

fn ctx() -> BuildContext {
    BuildContext {
        base_dir: ".".into(),
        upstreams: vec![
            "a".into(),
            "b".into(),
            "c".into(),
            "orders-write".into(),
            "orders-read".into(),
        ],
        pipeline: vec![
            "sanitize".into(),
            "mtls".into(),
            "jwt".into(),
            "route".into(),
        ],
        ..Default::default()
    }
}

fn parse(yaml: &str) -> Vec<config::Route> {
    serde_yaml::from_str(yaml).unwrap()
}

fn filter(yaml: &str) -> RouteFilter {
    build(&parse(yaml), &ctx(), "routes").unwrap()
}

/// The caller: optional SPIFFE ID (implies a client cert), optional scopes
/// (implies a verified token).
struct Who {
    spiffe: Option<&'static str>,
    cert: bool,
    scopes: Option<Vec<&'static str>>,
}

const NOBODY: Who = Who {
    spiffe: None,
    cert: false,
    scopes: None,
};

fn scoped(scopes: &[&'static str]) -> Who {
    Who {
        spiffe: None,
        cert: false,
        scopes: Some(scopes.to_vec()),
    }
}

fn workload(id: &'static str) -> Who {
    Who {
        spiffe: Some(id),
        cert: true,
        scopes: None,
    }
}

fn cert(id: Option<&str>) -> PeerCertificate {
    PeerCertificate {
        sha256: [7; 32],
        uri_sans: id.map(|i| vec![i.to_owned()]).unwrap_or_default(),
        dns_sans: vec![],
        subject: "CN=test".into(),
        is_ca: false,
        not_after: SystemTime::now() + Duration::from_secs(3600),
    }
}

fn facts_for(who: &Who) -> Facts {
    let mut facts = Facts::new("rid".into());
    if let Some(id) = who.spiffe {
        let svid = SpiffeId::parse(id).unwrap();
        facts.set_identity(PeerIdentity::attested_by_mtls(&cert(Some(id)), Some(svid)));
    }
    if let Some(scopes) = &who.scopes {
        let mut scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        scopes.sort();
        facts.set_token(VerifiedToken::attested_by_jwt(
            Arc::from("https://idp.test"),
            Some("alice".into()),
            scopes,
            SystemTime::now() + Duration::from_secs(60),
            Arc::default(),
        ));
    }
    facts
}

/// Run the filter; returns the decision and what it put in `facts.route`.
fn run(
    f: &RouteFilter,
    path: &str,
    authority: Option<&str>,
    who: &Who,
) -> (Decision, Option<(String, String)>) {
    let headers = HeaderMap::new();
    let tls = TlsFacts {
        peer: who.cert.then(|| Arc::new(cert(who.spiffe))),
        ..TlsFacts::default()
    };
    let view = RequestView {
        method: &Method::POST,
        path,
        authority,
        headers: &headers,
        tls: &tls,
        client_ip: None,
        socket_ip: None,
        now: SystemTime::now(),
    };
    let mut facts = facts_for(who);
    let d = f.decide(&view, &mut facts);
    (
        d,
        facts
            .route()
            .map(|r| (r.route().to_string(), r.upstream().to_string())),
    )
}

fn routed(f: &RouteFilter, path: &str, authority: Option<&str>, who: &Who) -> (String, String) {
    let (d, route) = run(f, path, authority, who);
    assert_eq!(d, Decision::Continue, "{path}");
    route.unwrap()
}

fn denied(f: &RouteFilter, path: &str, who: &Who) -> Reason {
    match run(f, path, None, who) {
        (Decision::Deny(d), None) => d.reason,
        other => panic!("{path}: expected a denial, got {other:?}"),
    }
}

fn route_name(f: &RouteFilter, path: &str) -> Option<String> {
    f.table().lookup(path, None).map(|r| r.name().to_string())
}

const ANY_A: &str = "select: [{upstream: a}]";

#[test]
fn config_order_decides_between_exact_prefix_and_glob() {
    // glob first, then prefix, then exact: the earlier route wins even
    // though the exact one is found by the hash map.
    let f = filter(&format!(
        "
- {{name: glob, match: {{grpc: 'orders.*/Get*'}}, {ANY_A}}}
- {{name: prefix, match: {{grpc: 'orders.v1.Orders/*'}}, {ANY_A}}}
- {{name: exact, match: {{grpc: 'orders.v1.Orders/List'}}, {ANY_A}}}
- {{name: exact-get, match: {{grpc: 'orders.v1.Orders/GetOrder'}}, {ANY_A}}}
"
    ));
    assert_eq!(
        route_name(&f, "/orders.v1.Orders/GetOrder").as_deref(),
        Some("glob")
    );
    assert_eq!(
        route_name(&f, "/orders.v1.Orders/List").as_deref(),
        Some("prefix")
    );
    // `*` in a glob never crosses `/`: `orders.*/Get*` needs method Get*
    assert_eq!(
        route_name(&f, "/orders.v1.Orders/Delete").as_deref(),
        Some("prefix")
    );
    assert_eq!(route_name(&f, "/billing.v1.B/Get"), None);

    // exact first, then a prefix covering it, then a glob.
    let f = filter(&format!(
        "
- {{name: exact, match: {{grpc: 'orders.v1.Orders/Get'}}, {ANY_A}}}
- {{name: service, match: {{grpc: 'orders.v1.Orders'}}, {ANY_A}}}
- {{name: package, match: {{grpc: 'orders.v1.*'}}, {ANY_A}}}
- {{name: glob, match: {{grpc: '*.Admin/*'}}, {ANY_A}}}
- {{name: all, match: {{grpc: '*'}}, {ANY_A}}}
"
    ));
    assert_eq!(
        route_name(&f, "/orders.v1.Orders/Get").as_deref(),
        Some("exact")
    );
    assert_eq!(
        route_name(&f, "/orders.v1.Orders/GetX").as_deref(),
        Some("service")
    );
    assert_eq!(
        route_name(&f, "/orders.v1.Stock/Get").as_deref(),
        Some("package")
    );
    assert_eq!(route_name(&f, "/x.v1.Admin/Reset").as_deref(), Some("glob"));
    assert_eq!(
        route_name(&f, "/orders.v1.Admin/Reset").as_deref(),
        Some("package")
    );
    assert_eq!(route_name(&f, "/x.v1.Other/Reset").as_deref(), Some("all"));
    // not a gRPC method path
    assert_eq!(route_name(&f, "/"), None);
    assert_eq!(route_name(&f, "/a/b/c"), None);
    assert_eq!(route_name(&f, "a.B/C"), None);
}

#[test]
fn authority_is_case_insensitive_and_ignores_the_port() {
    let f = filter(
        "
- {name: api, match: {grpc: 'orders.v1.Orders', authority: API.example.com}, select: [{upstream: a}]}
- {name: other, match: {grpc: 'orders.v1.Orders'}, select: [{upstream: b}]}
",
    );
    let who = &NOBODY;
    for host in [
        "api.example.com",
        "Api.Example.Com:8443",
        "api.example.com.",
    ] {
        assert_eq!(
            routed(&f, "/orders.v1.Orders/Get", Some(host), who).0,
            "api",
            "{host}"
        );
    }
    assert_eq!(
        routed(&f, "/orders.v1.Orders/Get", Some("www.example.com"), who).0,
        "other"
    );
    assert_eq!(routed(&f, "/orders.v1.Orders/Get", None, who).0, "other");
}

const ORDERS: &str = "
- name: orders
  match: {grpc: orders.v1.Orders}
  select:
    - scopes: {all: ['orders:write', 'orders:audit']}
      upstream: orders-write
    - scopes: {any: ['orders:read', 'orders:write']}
      upstream: orders-read
";

#[test]
fn all_versus_any_picks_the_first_satisfied_entry() {
    let f = filter(ORDERS);
    let p = "/orders.v1.Orders/Get";
    let up = |who: Who| routed(&f, p, None, &who).1;
    assert_eq!(
        up(scoped(&["orders:write", "orders:audit"])),
        "orders-write"
    );
    // `all` needs both: write alone falls to the `any` entry
    assert_eq!(up(scoped(&["orders:write"])), "orders-read");
    assert_eq!(up(scoped(&["orders:read"])), "orders-read");
    assert_eq!(up(scoped(&["orders:read", "other"])), "orders-read");
    assert_eq!(denied(&f, p, &scoped(&["other"])), Reason::ScopeMissing);
    assert_eq!(denied(&f, p, &NOBODY), Reason::ScopeMissing);
}

#[test]
fn spiffe_restricted_select_entries() {
    let f = filter(
        "
- name: orders
  match: {grpc: orders.v1.Orders}
  select:
    - spiffe: ['spiffe://acme.test/ns/shop/sa/writer']
      scopes: {any: ['orders:write']}
      upstream: orders-write
    - spiffe: ['spiffe://acme.test/ns/shop/*']
      upstream: orders-read
",
    );
    let p = "/orders.v1.Orders/Get";
    let writer = Who {
        spiffe: Some("spiffe://acme.test/ns/shop/sa/writer"),
        cert: true,
        scopes: Some(vec!["orders:write"]),
    };
    assert_eq!(routed(&f, p, None, &writer).1, "orders-write");
    // the writer workload without the scope gets the read pool? No: `shop/*`
    // is one segment, and `sa/writer` is two, so nothing fits.
    let writer_no_scope = workload("spiffe://acme.test/ns/shop/sa/writer");
    assert_eq!(denied(&f, p, &writer_no_scope), Reason::ScopeMissing);
    assert_eq!(
        routed(&f, p, None, &workload("spiffe://acme.test/ns/shop/cart")).1,
        "orders-read"
    );
    // only SPIFFE rules failed: identity, not scope
    assert_eq!(
        denied(&f, p, &workload("spiffe://acme.test/ns/other/cart")),
        Reason::ScopeMissing
    );
    let f2 = filter(
        "
- name: orders
  match: {grpc: orders.v1.Orders}
  select:
    - spiffe: ['spiffe://acme.test/ns/shop/**']
      upstream: orders-read
",
    );
    assert_eq!(
        denied(&f2, p, &workload("spiffe://acme.test/ns/other/cart")),
        Reason::IdentityNotAllowed
    );
    // a cert without a SPIFFE ID is not allowed; no cert at all is unauthenticated
    let cert_no_id = Who {
        spiffe: None,
        cert: true,
        scopes: None,
    };
    assert_eq!(denied(&f2, p, &cert_no_id), Reason::IdentityNotAllowed);
    assert_eq!(denied(&f2, p, &NOBODY), Reason::ClientCertMissing);
    assert_eq!(
        routed(&f2, p, None, &workload("spiffe://acme.test/ns/shop/sa/x")).1,
        "orders-read"
    );
}

#[test]
fn route_level_spiffe_allow_list() {
    let f = filter(
        "
- name: orders
  match: {grpc: orders.v1.Orders}
  spiffe: ['spiffe://acme.test/ns/shop/*']
  select:
    - scopes: {any: ['orders:read']}
      upstream: orders-read
",
    );
    let p = "/orders.v1.Orders/Get";
    let ok = Who {
        spiffe: Some("spiffe://acme.test/ns/shop/cart"),
        cert: true,
        scopes: Some(vec!["orders:read"]),
    };
    assert_eq!(routed(&f, p, None, &ok).1, "orders-read");
    // identity checked before scopes: a good token does not help
    let stranger = Who {
        spiffe: Some("spiffe://acme.test/ns/bank/cart"),
        cert: true,
        scopes: Some(vec!["orders:read"]),
    };
    assert_eq!(denied(&f, p, &stranger), Reason::IdentityNotAllowed);
    assert_eq!(
        denied(&f, p, &scoped(&["orders:read"])),
        Reason::ClientCertMissing
    );
    // identity fine, scope missing
    assert_eq!(
        denied(&f, p, &workload("spiffe://acme.test/ns/shop/cart")),
        Reason::ScopeMissing
    );
}

#[test]
fn shadow_route_records_and_forwards_to_the_first_entry() {
    let f = filter(
        "
- name: orders
  mode: shadow
  match: {grpc: orders.v1.Orders}
  select:
    - scopes: {all: ['orders:write']}
      upstream: orders-write
    - scopes: {any: ['orders:read']}
      upstream: orders-read
",
    );
    let p = "/orders.v1.Orders/Get";
    // satisfied entries win as usual
    assert_eq!(
        routed(&f, p, None, &scoped(&["orders:read"])).1,
        "orders-read"
    );
    let (d, route) = run(&f, p, None, &scoped(&["nothing"]));
    match d {
        Decision::ShadowDeny(denial) => assert_eq!(denial.reason, Reason::ScopeMissing),
        other => panic!("{other:?}"),
    }
    assert_eq!(route, Some(("orders".into(), "orders-write".into())));
    assert_eq!(f.table().routes()[0].mode(), Mode::Shadow);
}

#[test]
fn no_route_is_unimplemented() {
    let f = filter(ORDERS);
    assert_eq!(
        denied(&f, "/billing.v1.Billing/Pay", &scoped(&["orders:read"])),
        Reason::NoRoute
    );
    assert_eq!(denied(&f, "/healthz", &NOBODY), Reason::NoRoute);
    assert_eq!(Reason::NoRoute.grpc_code().as_str(), "12");
}

#[tokio::test]
async fn runs_in_a_chain_and_sets_the_route_fact() {
    let f = filter(ORDERS);
    let chain = Chain::new(vec![Stage::new(Box::new(f), Mode::Enforce)]);
    let (headers, tls) = (HeaderMap::new(), TlsFacts::default());
    let view = RequestView {
        method: &Method::POST,
        path: "/orders.v1.Orders/Get",
        authority: None,
        headers: &headers,
        tls: &tls,
        client_ip: None,
        socket_ip: None,
        now: SystemTime::now(),
    };
    let mut facts = facts_for(&scoped(&["orders:read"]));
    let out = chain.run(&view, &mut facts).await;
    assert!(out.denial.is_none());
    assert_eq!(out.verdicts[0].filter, "route");
    assert_eq!(facts.route().unwrap().upstream().as_ref(), "orders-read");
}

#[test]
fn build_reports_every_problem_with_its_key_path() {
    let routes = parse(
        "
- name: dup
  match: {grpc: 'a.B/C/D', authority: 'bad host'}
  spiffe: []
  select: []
- name: dup
  match: {grpc: 'a.B/Get?'}
  spiffe: ['spiffe://*.test/x']
  select:
    - upstream: a
    - scopes: {all: [], any: [x]}
      upstream: nowhere
    - scopes: {any: []}
      spiffe: ['spiffe://acme.test/a**']
      upstream: b
    - scopes: {all: ['has space']}
      upstream: c
- name: 'bad name!'
  match: {grpc: 'a.**'}
  select: [{upstream: a}]
",
    );
    let problems = build(&routes, &ctx(), "routes").unwrap_err();
    let mut paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    paths.sort();
    let mut want = vec![
        "routes[0].match.grpc",
        "routes[0].match.authority",
        "routes[0].spiffe",
        "routes[0].select",
        "routes[1].name",
        "routes[1].match.grpc",
        "routes[1].spiffe[0]",
        "routes[1].select[1]",
        "routes[1].select[1].scopes",
        "routes[1].select[1].upstream",
        "routes[1].select[2].scopes.any",
        "routes[1].select[2].spiffe[0]",
        "routes[1].select[3].scopes.all[0]",
        "routes[2].name",
        "routes[2].match.grpc",
    ];
    want.sort();
    assert_eq!(paths, want, "{problems:#?}");
    let msg = |path: &str| {
        problems
            .iter()
            .find(|p| p.path == path)
            .map(|p| p.message.clone())
            .unwrap()
    };
    assert!(msg("routes[1].name").contains("duplicate"));
    assert!(msg("routes[1].select[1].upstream").contains("nowhere"));
    assert!(msg("routes[1].select[1]").contains("unreachable"));
    assert!(msg("routes[0].match.grpc").contains("more than one `/`"));
}

#[test]
fn build_checks_the_pipeline_order() {
    let routes = parse(
        "
- name: r
  match: {grpc: a.B}
  spiffe: ['spiffe://acme.test/x']
  select:
    - scopes: {any: [x]}
      upstream: a
",
    );
    let mut c = ctx();
    c.pipeline = vec!["route".into(), "jwt".into()];
    let problems = build(&routes, &c, "routes").unwrap_err();
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        vec!["routes[0].spiffe", "routes[0].select[0].scopes"],
        "{problems:#?}"
    );
    assert!(problems[1].message.contains("`jwt` before `route`"));
    assert!(problems[0].message.contains("`mtls` before `route`"));
}

#[test]
fn unknown_keys_are_refused_by_the_raw_form() {
    let err = serde_yaml::from_str::<Vec<config::Route>>(
        "- {name: r, match: {grpc: a.B, method: x}, select: [{upstream: a}]}",
    )
    .unwrap_err();
    assert!(err.to_string().contains("unknown field"), "{err}");
}

/// The indexed lookup must agree with the obvious linear first-match scan,
/// over a deterministic pseudo-random mix of patterns and paths.
#[test]
fn indexed_lookup_equals_linear_scan() {
    let services = [
        "a.v1.Orders",
        "a.v1.Stock",
        "a.v2.Orders",
        "b.v1.Admin",
        "bb.v1.Admin",
    ];
    let methods = ["Get", "GetOrder", "List", "Delete", "Reset"];
    let patterns = [
        "a.v1.Orders/Get",
        "a.v1.Orders",
        "a.v1.*",
        "a.*",
        "a.v1.Orders/Get*",
        "*.Admin/*",
        "*.v1.*/Get*",
        "b*.v1.Admin/Reset",
        "*/List",
        "*Orders/*",
        "a.v?",
        "*",
        "b.v1.Admin/R*t",
        "*.v1.*",
        "bb.v1.Admin",
        "*/*",
        "*/Get*",
        "*/*Order",
        "*.v1.*/*",
        "*Stock/*t*",
    ];
    let mut seed: u64 = 0x5eed;
    let mut next = |n: usize| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as usize % n
    };
    for round in 0..200 {
        let count = 1 + next(8);
        let mut yaml = String::new();
        for i in 0..count {
            let p = patterns[next(patterns.len())];
            if p.contains('?') {
                continue;
            }
            let auth = if next(4) == 0 {
                ", authority: h.test"
            } else {
                ""
            };
            yaml.push_str(&format!(
                "- {{name: r{i}, match: {{grpc: '{p}'{auth}}}, select: [{{upstream: a}}]}}\n"
            ));
        }
        if yaml.is_empty() {
            continue;
        }
        let f = filter(&yaml);
        for s in services {
            for m in methods {
                for host in [None, Some("h.test:443"), Some("other.test")] {
                    let path = format!("/{s}/{m}");
                    let got = f.table().lookup(&path, host).map(|r| r.index());
                    let want = f.table().routes().iter().position(|r| {
                        r.pattern().matches(s, m)
                            && r.authority()
                                .is_none_or(|a| host.is_some_and(|h| crate::table::host_of(h) == a))
                    });
                    assert_eq!(got, want, "round {round} {path} {host:?}\n{yaml}");
                }
            }
        }
    }
}
