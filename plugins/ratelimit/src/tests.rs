//! The filter built from YAML, counting real requests against real windows.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, Method};
use ztgate_filter::{
    BuildContext, Decision, DeviceFacts, Facts, PeerCertificate, PeerIdentity, Reason, RequestView,
    SelectedRoute, SpiffeId, TlsFacts, VerifiedToken,
};

use crate::{build, check_route_names, config, RateLimitFilter};

fn ctx() -> BuildContext {
    BuildContext {
        base_dir: ".".into(),
        upstreams: vec![],
        pipeline: ["mtls", "jwt", "device", "route", "ratelimit"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    }
}

fn section(yaml: &str) -> config::RateLimit {
    serde_yaml::from_str(yaml).unwrap()
}

fn filter(yaml: &str) -> RateLimitFilter {
    build(&section(yaml), &ctx(), "ratelimit").unwrap()
}

#[derive(Default, Clone)]
struct Req {
    issuer: &'static str,
    subject: Option<&'static str>,
    spiffe: Option<&'static str>,
    fingerprint: Option<&'static str>,
    ip: Option<&'static str>,
    route: Option<&'static str>,
    /// The request's time (`RequestView::now`); the wall clock when unset.
    at: Option<SystemTime>,
}

fn user(sub: &'static str) -> Req {
    Req {
        issuer: "https://idp.test",
        subject: Some(sub),
        ..Req::default()
    }
}

fn decide(f: &RateLimitFilter, r: &Req) -> Decision {
    let mut facts = Facts::new("rid".into());
    if let Some(sub) = r.subject {
        facts.set_token(VerifiedToken::attested_by_jwt(
            Arc::from(r.issuer),
            Some(sub.into()),
            vec![],
            SystemTime::now() + Duration::from_secs(60),
            Arc::default(),
        ));
    }
    if let Some(id) = r.spiffe {
        let cert = PeerCertificate {
            sha256: [0; 32],
            uri_sans: vec![id.into()],
            dns_sans: vec![],
            subject: String::new(),
            is_ca: false,
            not_after: SystemTime::now() + Duration::from_secs(60),
        };
        let svid = SpiffeId::parse(id).unwrap();
        facts.set_identity(PeerIdentity::attested_by_mtls(&cert, Some(svid)));
    }
    if let Some(fp) = r.fingerprint {
        facts.set_device(DeviceFacts::attested_by_device(fp.into(), None, None, None));
    }
    if let Some(route) = r.route {
        facts.set_route(SelectedRoute::attested_by_route(
            Arc::from(route),
            Arc::from("pool"),
        ));
    }
    let (headers, tls) = (HeaderMap::new(), TlsFacts::default());
    let view = RequestView {
        method: &Method::POST,
        path: "/a.B/C",
        authority: None,
        headers: &headers,
        tls: &tls,
        client_ip: r.ip.map(|ip| ip.parse::<IpAddr>().unwrap()),
        socket_ip: None,
        now: r.at.unwrap_or_else(SystemTime::now),
    };
    // In memory mode nothing awaits: a current-thread runtime is enough.
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f.decide(&view, &mut facts))
}

/// How many of `n` calls pass, and the last denial.
fn pass_count(f: &RateLimitFilter, r: &Req, n: usize) -> (usize, Option<ztgate_filter::Denial>) {
    let mut passed = 0;
    let mut last = None;
    for _ in 0..n {
        match decide(f, r) {
            Decision::Continue => passed += 1,
            Decision::Deny(d) => last = Some(d),
            other => panic!("{other:?}"),
        }
    }
    (passed, last)
}

const PER_SUBJECT: &str = "
rules:
  - name: per-subject
    key: subject
    limit: 3
    interval: 1m
";

#[test]
fn the_n_plus_first_call_is_refused_for_that_identity_only() {
    let f = filter(PER_SUBJECT);
    let (passed, denial) = pass_count(&f, &user("alice"), 3);
    assert_eq!((passed, denial), (3, None));
    let Decision::Deny(d) = decide(&f, &user("alice")) else {
        panic!("4th call must be refused");
    };
    assert_eq!(d.reason, Reason::RateLimited);
    assert_eq!(d.reason.grpc_code().as_str(), "8");
    assert!(d.message.contains("per-subject"), "{}", d.message);
    let wait = d.retry_after.unwrap();
    assert!(
        wait >= Duration::from_secs(1) && wait <= Duration::from_secs(60),
        "{wait:?}"
    );
    // another subject has its own budget
    assert_eq!(pass_count(&f, &user("bob"), 3).0, 3);
    // the same `sub` from another issuer is another principal
    let other_idp = Req {
        issuer: "https://other-idp.test",
        ..user("alice")
    };
    assert_eq!(pass_count(&f, &other_idp, 3).0, 3);
    // alice stays limited
    assert!(matches!(decide(&f, &user("alice")), Decision::Deny(_)));
}

#[test]
fn the_window_rolls_over() {
    let f = filter(
        "
rules:
  - {name: r, key: client_ip, limit: 2, interval: 1s}
",
    );
    // The limiter reads the request's time, so the test steps it.
    let t0 = SystemTime::now();
    let ip = Req {
        ip: Some("192.0.2.7"),
        at: Some(t0),
        ..Req::default()
    };
    let (passed, denial) = pass_count(&f, &ip, 3);
    assert_eq!(passed, 2);
    let wait = denial.unwrap().retry_after.unwrap();
    assert_eq!(wait, Duration::from_secs(1));
    // A moment before the window ends it still refuses.
    let almost = Req {
        at: Some(t0 + wait - Duration::from_millis(1)),
        ..ip.clone()
    };
    assert_eq!(pass_count(&f, &almost, 1).0, 0);
    // Waiting what the denial says is enough: the next window is fresh.
    let after = Req {
        at: Some(t0 + wait),
        ..ip
    };
    assert_eq!(pass_count(&f, &after, 3).0, 2);
}

#[test]
fn retry_after_is_the_rest_of_the_window_rounded_up() {
    let f = filter(
        "
rules:
  - {name: r, key: client_ip, limit: 1, interval: 10s}
",
    );
    let t0 = SystemTime::now();
    let at = |ms: u64| Req {
        ip: Some("192.0.2.8"),
        at: Some(t0 + Duration::from_millis(ms)),
        ..Req::default()
    };
    // The window opens with its first request and lasts the interval.
    assert_eq!(pass_count(&f, &at(0), 1).0, 1);
    let (_, denial) = pass_count(&f, &at(2_500), 1);
    assert_eq!(
        denial.unwrap().retry_after,
        Some(Duration::from_secs(8)),
        "7.5 s left, rounded up"
    );
    let (_, denial) = pass_count(&f, &at(9_999), 1);
    assert_eq!(denial.unwrap().retry_after, Some(Duration::from_secs(1)));
    // A request stamped before the window opened (it waited in an earlier
    // filter) counts in the current window.
    let early = Req {
        at: Some(t0 - Duration::from_millis(5)),
        ..at(0)
    };
    let (_, denial) = pass_count(&f, &early, 1);
    assert_eq!(denial.unwrap().retry_after, Some(Duration::from_secs(10)));
    assert_eq!(pass_count(&f, &at(10_000), 1).0, 1);
}

#[test]
fn requests_without_the_identity_are_not_limited_by_that_rule() {
    let f = filter(
        "
rules:
  - {name: s, key: subject, limit: 1, interval: 1m}
  - {name: w, key: spiffe_id, limit: 1, interval: 1m}
  - {name: d, key: fingerprint, limit: 1, interval: 1m}
",
    );
    assert_eq!(pass_count(&f, &Req::default(), 10).0, 10);
    let token_without_sub = Req {
        issuer: "https://idp.test",
        ..Req::default()
    };
    assert_eq!(pass_count(&f, &token_without_sub, 10).0, 10);
    let wl = Req {
        spiffe: Some("spiffe://acme.test/a"),
        ..Req::default()
    };
    assert_eq!(pass_count(&f, &wl, 2).0, 1);
    let dev = Req {
        fingerprint: Some("fp-1"),
        ..Req::default()
    };
    assert_eq!(pass_count(&f, &dev, 2).0, 1);
}

#[test]
fn per_route_rules_count_only_their_route() {
    let f = filter(
        "
rules:
  - {name: r, key: subject, route: orders-read, limit: 2, interval: 1m}
",
    );
    let on = Req {
        route: Some("orders-read"),
        ..user("alice")
    };
    let off = Req {
        route: Some("orders-write"),
        ..user("alice")
    };
    assert_eq!(pass_count(&f, &off, 5).0, 5);
    assert_eq!(pass_count(&f, &user("alice"), 5).0, 5);
    assert_eq!(pass_count(&f, &on, 3).0, 2);
}

#[test]
fn counters_carry_over_a_rebuild_unless_the_rule_changes() {
    let ctx = ctx();
    let first = build(&section(PER_SUBJECT), &ctx, "ratelimit").unwrap();
    assert_eq!(pass_count(&first, &user("alice"), 3).0, 3);
    // A reload builds the same rule again while the old generation lives:
    // alice's window is the same window.
    let second = build(&section(PER_SUBJECT), &ctx, "ratelimit").unwrap();
    drop(first);
    let Decision::Deny(d) = decide(&second, &user("alice")) else {
        panic!("a reload must not reset the window");
    };
    assert_eq!(d.reason, Reason::RateLimited);
    // A changed limit is another rule: it counts afresh.
    let changed = build(
        &section(&PER_SUBJECT.replace("limit: 3", "limit: 4")),
        &ctx,
        "ratelimit",
    )
    .unwrap();
    assert_eq!(pass_count(&changed, &user("alice"), 5).0, 4);
}

#[test]
fn build_reports_every_problem_with_its_key_path() {
    let raw = section(
        "
mode: shadow
rules:
  - {name: a, key: subject, limit: 0, interval: 500ms}
  - {name: a, key: client_ip, limit: 1, interval: 2d}
  - {name: 'b c', key: client_ip, route: '', limit: 1, interval: 1s}
",
    );
    let problems = build(&raw, &ctx(), "ratelimit").unwrap_err();
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "ratelimit.rules[0].limit",
            "ratelimit.rules[0].interval",
            "ratelimit.rules[1].name",
            "ratelimit.rules[1].interval",
            "ratelimit.rules[2].name",
            "ratelimit.rules[2].route",
        ],
        "{problems:#?}"
    );
    assert!(problems[2].message.contains("duplicate"));
}

#[test]
fn build_checks_the_pipeline_order() {
    let raw = section(
        "
rules:
  - {name: s, key: subject, limit: 1, interval: 1s}
  - {name: w, key: spiffe_id, limit: 1, interval: 1s}
  - {name: d, key: fingerprint, route: r, limit: 1, interval: 1s}
  - {name: i, key: client_ip, limit: 1, interval: 1s}
",
    );
    let mut c = ctx();
    c.pipeline = ["ratelimit", "mtls", "jwt", "device", "route"]
        .map(String::from)
        .to_vec();
    let problems = build(&raw, &c, "ratelimit").unwrap_err();
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "ratelimit.rules[0].key",
            "ratelimit.rules[1].key",
            "ratelimit.rules[2].key",
            "ratelimit.rules[2].route",
        ],
        "{problems:#?}"
    );
    assert!(problems[0].message.contains("`jwt` before `ratelimit`"));
}

#[test]
fn route_names_are_checked_against_routes() {
    let raw = section(
        "
rules:
  - {name: a, key: subject, route: orders-read, limit: 1, interval: 1s}
  - {name: b, key: subject, route: gone, limit: 1, interval: 1s}
  - {name: c, key: subject, limit: 1, interval: 1s}
",
    );
    let problems = check_route_names(&raw, "ratelimit", &["orders-read"]);
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].path, "ratelimit.rules[1].route");
}

#[test]
fn unknown_keys_and_kinds_are_refused() {
    assert!(serde_yaml::from_str::<config::RateLimit>(
        "rules: [{name: a, key: subject, limit: 1, interval: 1s, burst: 2}]"
    )
    .is_err());
    assert!(serde_yaml::from_str::<config::RateLimit>(
        "rules: [{name: a, key: tenant, limit: 1, interval: 1s}]"
    )
    .is_err());
    assert!(serde_yaml::from_str::<config::RateLimit>(
        "rules: [{name: a, key: subject, limit: 1, interval: soon}]"
    )
    .is_err());
}
