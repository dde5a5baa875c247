//! The filter end to end over in-memory requests: config → compiled
//! policy → input → decision.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue, Method};
use ztgate_filter::{
    BuildContext, Decision, DeviceFacts, Facts, PeerCertificate, PeerIdentity, RequestView,
    SelectedRoute, SpiffeId, TlsFacts, TokenClaims, VerifiedToken,
};

use crate::config::Policy;

mod opa_conformance;

const FRONTEND: &str = "spiffe://acme.test/ns/shop/sa/frontend";

/// A 20-rule policy of the kind the issue describes: who may refund, with
/// which scope, never for blocked subjects, not from anonymous networks.
pub const REFUNDS: &str = include_str!("../testdata/refunds.rego");

pub const REFUNDS_DATA: &str = include_str!("../testdata/refunds.json");

pub struct Dir(pub PathBuf);

impl Dir {
    pub fn new(name: &str) -> Self {
        let d = std::env::temp_dir().join(format!(
            "ztgate-policy-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    pub fn write(&self, name: &str, text: &str) -> &Self {
        std::fs::write(self.0.join(name), text).unwrap();
        self
    }
    pub fn ctx(&self) -> BuildContext {
        BuildContext {
            base_dir: self.0.clone(),
            pipeline: ["mtls", "jwt", "device", "route", "policy"]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        }
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn section(yaml: &str) -> Policy {
    serde_yaml::from_str(yaml).unwrap()
}

pub fn refunds(dir: &Dir) -> crate::PolicyFilter {
    refunds_with(dir, "")
}

/// [`refunds`] with extra settings (YAML lines).
pub fn refunds_with(dir: &Dir, extra: &str) -> crate::PolicyFilter {
    dir.write("refunds.rego", REFUNDS)
        .write("data.json", REFUNDS_DATA);
    // A budget far over what the policy needs: the tests run in parallel
    // on a debug build, where the interpreter can take several ms, and
    // are not about the budget (see `errors_and_budget_overruns_…`).
    let s = section(
        &format!("rego: [refunds.rego]\ndata: [data.json]\ninput_claims: [tenant]\ninput_headers: [x-tenant]\nbudget: 1s\n{extra}"),
    );
    crate::build(&s, &[], &dir.ctx(), "policy").unwrap()
}

/// Everything the earlier filters would have proved for a good refund.
pub struct Caller {
    pub spiffe: &'static str,
    pub scopes: Vec<&'static str>,
    pub subject: &'static str,
    pub country: &'static str,
    pub asn: u32,
    pub anonymous: Vec<&'static str>,
    pub tenant: &'static str,
}

impl Default for Caller {
    fn default() -> Self {
        Self {
            spiffe: FRONTEND,
            scopes: vec!["payments:read", "payments:write"],
            subject: "alice",
            country: "DE",
            asn: 3320,
            anonymous: vec!["anonymous", "vpn"],
            tenant: "t1",
        }
    }
}

impl Caller {
    pub fn facts(&self) -> Facts {
        let cert = PeerCertificate {
            sha256: [7; 32],
            uri_sans: vec![self.spiffe.into()],
            dns_sans: vec![],
            subject: "CN=frontend".into(),
            is_ca: false,
            not_after: SystemTime::now() + Duration::from_secs(3600),
        };
        let mut facts = Facts::new("req-1".into());
        facts.set_identity(PeerIdentity::attested_by_mtls(
            &cert,
            Some(SpiffeId::parse(self.spiffe).unwrap()),
        ));
        let claims = serde_json::json!({"tenant": self.tenant, "secret_claim": "never"});
        facts.set_token(VerifiedToken::attested_by_jwt(
            Arc::from("https://idp.acme.test"),
            Some(self.subject.into()),
            self.scopes.iter().map(|s| s.to_string()).collect(),
            SystemTime::now() + Duration::from_secs(60),
            Arc::new(TokenClaims::new(claims.to_string())),
        ));
        facts.set_device(
            DeviceFacts::attested_by_device(
                "fp-1".into(),
                None,
                Some(self.country.into()),
                Some(self.asn),
            )
            .with_anonymous(self.anonymous.clone()),
        );
        facts.set_route(SelectedRoute::attested_by_route(
            "payments".into(),
            "payments".into(),
        ));
        facts
    }
}

pub fn headers(tenant: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("x-tenant", HeaderValue::from_str(tenant).unwrap());
    h.insert("authorization", HeaderValue::from_static("Bearer secret"));
    h
}

pub fn view<'a>(path: &'a str, h: &'a HeaderMap, tls: &'a TlsFacts) -> RequestView<'a> {
    RequestView {
        method: &Method::POST,
        path,
        authority: None,
        headers: h,
        tls,
        client_ip: Some("10.1.2.3".parse().unwrap()),
        socket_ip: None,
        now: SystemTime::now(),
    }
}

const REFUND: &str = "/payments.v1.Payments/Refund";

fn decide_only(
    f: &crate::PolicyFilter,
    caller: &Caller,
    path: &str,
    tenant: &str,
) -> Option<String> {
    let (h, tls) = (headers(tenant), TlsFacts::default());
    match f.decide(&view(path, &h, &tls), &caller.facts()) {
        Decision::Continue => None,
        Decision::Deny(d) | Decision::ShadowDeny(d) => Some(d.reason.as_str().to_owned()),
    }
}

/// The filter's decision, after checking that the interpreter answers
/// the same as the VM for this input (the two regorus evaluators must
/// agree; a real OPA engine was not available to compare with).
fn decide(f: &crate::PolicyFilter, caller: &Caller, path: &str, tenant: &str) -> Option<String> {
    let (h, tls) = (headers(tenant), TlsFacts::default());
    let facts = caller.facts();
    let input = regorus::Value::from(f.explain(&view(path, &h, &tls), &facts).input);
    assert_eq!(
        f.compiled().eval(input.clone()),
        f.compiled().eval_interpreted(input),
        "VM and interpreter disagree for {path}"
    );
    match f.decide(&view(path, &h, &tls), &facts) {
        Decision::Continue => None,
        Decision::Deny(d) | Decision::ShadowDeny(d) => Some(d.reason.as_str().to_owned()),
    }
}

#[test]
fn the_refund_policy_allows_and_each_condition_denies() {
    let dir = Dir::new("refunds");
    let f = refunds(&dir);
    assert_eq!(decide(&f, &Caller::default(), REFUND, "t1"), None);
    let blocked = Some("refund_blocked".to_owned());
    let web = Caller {
        spiffe: "spiffe://acme.test/ns/shop/sa/web",
        ..Caller::default()
    };
    assert_eq!(decide(&f, &web, REFUND, "t1"), blocked, "workload");
    let read_only = Caller {
        scopes: vec!["payments:read"],
        ..Caller::default()
    };
    assert_eq!(decide(&f, &read_only, REFUND, "t1"), blocked, "scope");
    let mallory = Caller {
        subject: "mallory",
        ..Caller::default()
    };
    assert_eq!(decide(&f, &mallory, REFUND, "t1"), blocked, "data");
    let anon = Caller {
        asn: 64512,
        ..Caller::default()
    };
    assert_eq!(decide(&f, &anon, REFUND, "t1"), blocked, "asn");
    let abroad = Caller {
        country: "US",
        ..Caller::default()
    };
    assert_eq!(decide(&f, &abroad, REFUND, "t1"), blocked, "country");
    assert_eq!(
        decide(&f, &Caller::default(), REFUND, "t2"),
        blocked,
        "header vs claim"
    );
    // Not a refund: any workload of the trust domain.
    assert_eq!(decide(&f, &web, "/payments.v1.Payments/Get", "t1"), None);
    let foreign = Caller {
        spiffe: "spiffe://partner.test/x",
        ..Caller::default()
    };
    assert_eq!(
        decide(&f, &foreign, "/payments.v1.Payments/Get", "t1").as_deref(),
        Some("no_rule_matched")
    );
}

/// One engine serves many requests: nothing of one request's input or
/// rule values reaches the next.
#[test]
fn pooled_engines_do_not_leak_between_requests() {
    let dir = Dir::new("pool");
    // Every request evaluated: remembered decisions would hide a leak.
    let f = refunds_with(&dir, "decision_cache: 0\n");
    let mallory = Caller {
        subject: "mallory",
        ..Caller::default()
    };
    for _ in 0..20 {
        assert_eq!(decide(&f, &Caller::default(), REFUND, "t1"), None);
        assert!(decide(&f, &mallory, REFUND, "t1").is_some());
    }
}

#[test]
fn the_input_holds_the_documented_fields_and_no_credentials() {
    let dir = Dir::new("input");
    let f = refunds(&dir);
    let (h, tls) = (headers("t1"), TlsFacts::default());
    let e = f.explain(&view(REFUND, &h, &tls), &Caller::default().facts());
    let input = e.input.as_object().unwrap();
    let mut keys: Vec<&str> = input.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "anonymous",
            "asn",
            "cert_subject",
            "claims",
            "client_ip",
            "country",
            "fingerprint",
            "headers",
            "issuer",
            "method",
            "route",
            "scopes",
            "service",
            "spiffe_id",
            "subject",
            "thumbprint",
            "trust_domain",
            "upstream"
        ]
    );
    assert_eq!(e.input["claims"], serde_json::json!({"tenant": "t1"}));
    assert_eq!(e.input["headers"], serde_json::json!({"x-tenant": "t1"}));
    assert_eq!(
        e.input["scopes"],
        serde_json::json!(["payments:read", "payments:write"])
    );
    assert_eq!(e.input["thumbprint"], serde_json::json!("07".repeat(32)));
    assert_eq!(e.input["asn"], serde_json::json!(3320));
    assert_eq!(
        e.input["anonymous"],
        serde_json::json!(["anonymous", "vpn"])
    );
    let text = e.input.to_string();
    assert!(!text.contains("secret"), "{text}");
    assert_eq!(e.answer, Ok(serde_json::json!({"allow": true})));
    assert_eq!(e.decision, Decision::Continue);
}

/// A request with nothing proved has none of the identity fields.
#[test]
fn absent_facts_are_absent_fields() {
    let dir = Dir::new("absent");
    let f = refunds(&dir);
    let (h, tls) = (HeaderMap::new(), TlsFacts::default());
    let e = f.explain(&view("/a.B/C", &h, &tls), &Facts::default());
    assert_eq!(
        e.input,
        serde_json::json!({"client_ip": "10.1.2.3", "service": "a.B", "method": "C", "headers": {}})
    );
    assert!(matches!(e.decision, Decision::Deny(_)));
}

#[test]
fn a_policy_that_does_not_compile_names_its_file_and_line() {
    let dir = Dir::new("broken");
    dir.write("ok.rego", "package ztgate\ndecision := true\n")
        .write("bad.rego", "package ztgate.extra\n\nx := {\n");
    let s = section("rego: [ok.rego, bad.rego]\n");
    let problems = crate::build(&s, &[], &dir.ctx(), "policy").unwrap_err();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].path, "policy.rego[1]");
    let bad = dir.0.join("bad.rego").display().to_string();
    assert!(
        problems[0].message.starts_with(&format!("{bad}:")),
        "{}",
        problems[0].message
    );
    assert!(
        problems[0]
            .message
            .starts_with(&format!("{bad}:4:1: error: ")),
        "{}",
        problems[0].message
    );
}

#[test]
fn config_problems_are_reported_by_key() {
    let dir = Dir::new("problems");
    dir.write("p.rego", "package ztgate\ndecision := true\n")
        .write("bad.json", "[1]")
        .write("broken.json", "{");
    let cases: [(&str, &str, &str); 9] = [
        ("rego: []\n", "policy.rego", "at least one"),
        ("rego: [missing.rego]\n", "policy.rego[0]", "cannot read"),
        (
            "rego: [p.rego]\ndata: [bad.json]\n",
            "policy.data[0]",
            "JSON object",
        ),
        (
            "rego: [p.rego]\ndata: [broken.json]\n",
            "policy.data[0]",
            "broken.json",
        ),
        (
            "rego: [p.rego]\ndecision: data.ztgate.nope\n",
            "policy.decision",
            "rule path",
        ),
        (
            "rego: [p.rego]\ndecision: ztgate.decision\n",
            "policy.decision",
            "data.",
        ),
        (
            "rego: [p.rego]\ninput_headers: [authorization]\n",
            "policy.input_headers[0]",
            "credentials",
        ),
        (
            "rego: [p.rego]\ninput_headers: [X-Tenant]\n",
            "policy.input_headers[0]",
            "lowercase",
        ),
        (
            "rego: [p.rego]\nbudget: 0s\n",
            "policy.budget",
            "more than 0s",
        ),
    ];
    for (yaml, key, words) in cases {
        let problems = crate::build(&section(yaml), &[], &dir.ctx(), "policy").unwrap_err();
        assert_eq!(problems[0].path, key, "{yaml}");
        assert!(
            problems[0].message.contains(words),
            "{yaml}: {}",
            problems[0].message
        );
    }
    // Order: the facts a policy reads must exist when it runs.
    let mut ctx = dir.ctx();
    ctx.pipeline = ["policy", "route"].map(String::from).to_vec();
    let problems = crate::build(&section("rego: [p.rego]\n"), &[], &ctx, "policy").unwrap_err();
    assert!(
        problems[0].message.contains("`route` before `policy`"),
        "{problems:?}"
    );
}

/// A runtime error (a conflict between two complete rules) and a policy
/// over its budget are refused as `policy_error`, never allowed.
#[test]
fn errors_and_budget_overruns_deny_with_policy_error() {
    let dir = Dir::new("errors");
    dir.write(
        "conflict.rego",
        "package ztgate\nimport rego.v1\ndecision := true if input.method == \"C\"\ndecision := false if input.service == \"a.B\"\n",
    );
    let f = crate::build(
        &section("rego: [conflict.rego]\nbudget: 1s\ndecision_cache: 0\n"),
        &[],
        &dir.ctx(),
        "policy",
    )
    .unwrap();
    // Two definitions of `decision`: the interpreter runs it, because the
    // VM would not notice the conflict.
    assert!(
        f.compiled().evaluator().contains("interpreter"),
        "{}",
        f.compiled().evaluator()
    );
    assert!(refunds(&dir).compiled().evaluator() == "regorus VM");
    let (h, tls) = (HeaderMap::new(), TlsFacts::default());
    let d = f.decide(&view("/a.B/C", &h, &tls), &Facts::default());
    assert!(
        matches!(&d, Decision::Deny(d) if d.reason.as_str() == "policy_error"),
        "{d:?}"
    );
    // The engine that failed goes back to the pool and answers the next
    // request from a clean state.
    for _ in 0..3 {
        let d = f.decide(&view("/z.Z/C", &h, &tls), &Facts::default());
        assert_eq!(d, Decision::Continue);
        let d = f.decide(&view("/a.B/C", &h, &tls), &Facts::default());
        assert!(
            matches!(&d, Decision::Deny(d) if d.reason.as_str() == "policy_error"),
            "{d:?}"
        );
    }

    // About 10^8 steps: far over a 1 ms budget.
    dir.write(
        "slow.rego",
        "package ztgate\nimport rego.v1\ndecision if {\n  n := numbers.range(1, 10000)\n  count([x | some x in n; some y in n; x < y]) > 0\n  input.never\n}\n",
    );
    let f = crate::build(
        &section("rego: [slow.rego]\nbudget: 1ms\n"),
        &[],
        &dir.ctx(),
        "policy",
    )
    .unwrap();
    let started = std::time::Instant::now();
    let d = f.decide(&view("/a.B/C", &h, &tls), &Facts::default());
    assert!(
        matches!(&d, Decision::Deny(d) if d.reason.as_str() == "policy_error"),
        "{d:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let e = f.explain(&view("/a.B/C", &h, &tls), &Facts::default());
    assert!(e.answer.unwrap_err().contains("budget"));
}

/// The VM's instruction limit is deterministic: a policy over it is
/// refused whatever the clock says.
#[test]
fn over_the_instruction_limit_is_policy_error() {
    let dir = Dir::new("instructions");
    dir.write("refunds.rego", REFUNDS)
        .write("data.json", REFUNDS_DATA);
    let s = section(
        "rego: [refunds.rego]\ndata: [data.json]\ninput_claims: [tenant]\ninput_headers: [x-tenant]\nmax_instructions: 20\nbudget: 1s\n",
    );
    let f = crate::build(&s, &[], &dir.ctx(), "policy").unwrap();
    assert_eq!(
        decide_only(&f, &Caller::default(), REFUND, "t1").as_deref(),
        Some("policy_error")
    );
}

#[test]
fn watched_files_are_the_rego_and_data_files() {
    use ztgate_filter::Filter;
    let dir = Dir::new("watched");
    let f = refunds(&dir);
    let w = f.watched_files();
    assert_eq!(w, [dir.0.join("refunds.rego"), dir.0.join("data.json")]);
    assert!(w.iter().all(|p| Path::new(p).is_file()));
}

/// `routes[].policy.decision`: the route's own rule decides its calls,
/// other routes keep the section's; a rule that does not exist is a
/// problem at the route's key.
#[test]
fn a_route_names_its_own_decision_rule() {
    let dir = Dir::new("per-route");
    dir.write(
        "p.rego",
        "package ztgate\nimport rego.v1\n\ndecision := true\n\nadmin_only := true if \"payments:admin\" in input.scopes\nelse := {\"allow\": false, \"reason\": \"admin_only\"}\n",
    );
    let s = section("rego: [p.rego]\nbudget: 1s\n");
    let rule = |route: &str, decision: &str| crate::RouteRule {
        route: route.into(),
        decision: decision.into(),
        key: "routes[0].policy.decision".into(),
    };
    // The caller's route is `payments`.
    let strict = crate::build(
        &s,
        &[rule("payments", "data.ztgate.admin_only")],
        &dir.ctx(),
        "policy",
    )
    .unwrap();
    assert_eq!(
        decide_only(&strict, &Caller::default(), REFUND, "t1").as_deref(),
        Some("admin_only")
    );
    let admin = Caller {
        scopes: vec!["payments:admin"],
        ..Caller::default()
    };
    assert_eq!(decide_only(&strict, &admin, REFUND, "t1"), None);
    let (h, tls) = (headers("t1"), TlsFacts::default());
    let explained = strict.explain(&view(REFUND, &h, &tls), &Caller::default().facts());
    assert_eq!(explained.rule, "data.ztgate.admin_only");

    // Another route's rule does not touch this route's calls.
    let other = crate::build(
        &s,
        &[rule("orders", "data.ztgate.admin_only")],
        &dir.ctx(),
        "policy",
    )
    .unwrap();
    assert_eq!(decide_only(&other, &Caller::default(), REFUND, "t1"), None);
    let explained = other.explain(&view(REFUND, &h, &tls), &Caller::default().facts());
    assert_eq!(explained.rule, "data.ztgate.decision");

    for (decision, words) in [
        ("data.ztgate.nope", "data.ztgate.nope"),
        ("ztgate.admin_only", "not a rule path"),
    ] {
        let problems =
            crate::build(&s, &[rule("payments", decision)], &dir.ctx(), "policy").unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].path, "routes[0].policy.decision");
        assert!(problems[0].message.contains(words), "{problems:?}");
    }
}

/// `ztgate_policy_decisions_total{decision,result}` counts each rule's
/// answers, errors apart from denials.
#[test]
fn each_rule_counts_its_answers() {
    let dir = Dir::new("counted");
    dir.write(
        "p.rego",
        "package counted\nimport rego.v1\n\ndecision := true if input.subject == \"alice\"\n\nbroken := 42\n",
    );
    let s = section("rego: [p.rego]\ndecision: data.counted.decision\nbudget: 1s\n");
    let f = crate::build(
        &s,
        &[crate::RouteRule {
            route: "orders".into(),
            decision: "data.counted.broken".into(),
            key: "routes[0].policy.decision".into(),
        }],
        &dir.ctx(),
        "policy",
    )
    .unwrap();
    let count = |decision: &str, result: &str| {
        prometheus::gather()
            .iter()
            .find(|m| m.name() == "ztgate_policy_decisions_total")
            .and_then(|m| {
                m.get_metric().iter().find(|s| {
                    let l = s.get_label();
                    l.iter()
                        .any(|l| l.name() == "decision" && l.value() == decision)
                        && l.iter()
                            .any(|l| l.name() == "result" && l.value() == result)
                })
            })
            .map_or(0, |s| s.get_counter().get_value() as u64)
    };
    let bob = Caller {
        subject: "bob",
        ..Caller::default()
    };
    decide_only(&f, &Caller::default(), REFUND, "t1");
    decide_only(&f, &bob, REFUND, "t1");
    decide_only(&f, &bob, REFUND, "t1");
    assert_eq!(count("data.counted.decision", "allow"), 1);
    assert_eq!(count("data.counted.decision", "deny"), 2);
    let mut orders = Caller::default().facts();
    orders.set_route(SelectedRoute::attested_by_route(
        "orders".into(),
        "orders".into(),
    ));
    let (h, tls) = (headers("t1"), TlsFacts::default());
    let d = f.decide(&view(REFUND, &h, &tls), &orders);
    assert!(
        matches!(d, Decision::Deny(ref x) if x.reason.as_str() == "policy_error"),
        "{d:?}"
    );
    assert_eq!(count("data.counted.broken", "error"), 1);
}

/// regorus 0.14's VM skips the `else` after a body that iterates and
/// fails (found by the comparison with OPA): such a rule runs on the
/// interpreter, which answers as OPA does; iteration in a helper rule
/// keeps the VM.
#[test]
fn an_else_after_an_iterating_body_runs_on_the_interpreter() {
    let limits = crate::engine::Limits {
        budget: Duration::from_secs(1),
        max_instructions: 1_000_000,
    };
    let input = regorus::Value::from(serde_json::json!({"country": "DE"}));
    for (body, want, evaluator) in [
        ("decision := 2 if { some c in [\"FR\"]; c == input.country } else := 3\n", 3, "interpreter"),
        ("decision := 2 if { [\"FR\"][_] == input.country } else := 3\n", 3, "interpreter"),
        ("decision := 2 if { some i; [\"FR\"][i] == input.country } else := 3\n", 3, "interpreter"),
        ("decision := 2 if { input.nope } else := 3 if { some c in [\"FR\"]; c == input.country } else := 4\n", 4, "interpreter"),
        ("fr if { some c in [\"FR\"]; c == input.country }\ndecision := 2 if { fr } else := 3\n", 3, "VM"),
        ("decision := 2 if { input.country in [\"FR\"] } else := 3 if { input.headers[\"x\"] } else := 4\n", 4, "VM"),
    ] {
        let dir = Dir::new("else-iter");
        dir.write("p.rego", &format!("package s\nimport rego.v1\ndefault decision := 0\n{body}"));
        let c = crate::engine::Compiled::from_files(&[dir.0.join("p.rego")], &[], "data.s.decision", limits).unwrap();
        assert!(c.evaluator().contains(evaluator), "{body}: {}", c.evaluator());
        assert_eq!(c.eval(input.clone()), Ok(regorus::Value::from(want)), "{body}");
        assert_eq!(c.eval_interpreted(input.clone()), Ok(regorus::Value::from(want)), "{body}");
    }
}

/// The decision cache's key is injective: over a spread of requests, two
/// keys are equal exactly when the input documents are — so a remembered
/// decision is only ever served for the very input it was made for.
#[test]
fn the_cache_key_is_equal_exactly_when_the_input_is() {
    let dir = Dir::new("key");
    let f = refunds(&dir);
    let spec = crate::input::InputSpec {
        claims: vec!["tenant".into()],
        headers: vec![http::HeaderName::from_static("x-tenant")],
    };
    let callers = [
        Caller::default(),
        Caller {
            subject: "mallory",
            ..Caller::default()
        },
        Caller {
            scopes: vec!["payments:read"],
            ..Caller::default()
        },
        Caller {
            scopes: vec!["payments:read", "payments:write", "x"],
            ..Caller::default()
        },
        Caller {
            country: "US",
            ..Caller::default()
        },
        Caller {
            asn: 64512,
            ..Caller::default()
        },
        Caller {
            anonymous: vec![],
            ..Caller::default()
        },
        Caller {
            tenant: "t2",
            ..Caller::default()
        },
        Caller {
            spiffe: "spiffe://acme.test/ns/shop/sa/web",
            ..Caller::default()
        },
    ];
    let tls = TlsFacts::default();
    let mut seen: Vec<(Vec<u8>, serde_json::Value)> = Vec::new();
    for c in &callers {
        for path in [REFUND, "/payments.v1.Payments/Get"] {
            for tenant in ["t1", "t2", "t1, t2"] {
                let h = headers(tenant);
                let facts = c.facts();
                let req = view(path, &h, &tls);
                let mut key = Vec::new();
                crate::input::key(&spec, &req, &facts, &mut key);
                let doc = f.explain(&req, &facts).input;
                seen.push((key, doc));
            }
        }
    }
    // The same request again gives the same key.
    seen.push(seen[0].clone());
    for (i, (ka, da)) in seen.iter().enumerate() {
        for (kb, db) in &seen[i + 1..] {
            assert_eq!(ka == kb, da == db, "{da}\n{db}");
        }
    }
}

/// Decisions are remembered per input, and a remembered one is the one
/// evaluation gives; a policy that reads the clock is never cached.
#[test]
fn remembered_decisions_are_those_evaluation_gives() {
    let dir = Dir::new("cached");
    let cached = refunds(&dir);
    let fresh = refunds_with(&dir, "decision_cache: 0\n");
    let (h, tls) = (headers("t1"), TlsFacts::default());
    assert!(cached
        .explain(&view(REFUND, &h, &tls), &Caller::default().facts())
        .evaluator
        .contains("decisions cached by input"));
    let callers = [
        Caller::default(),
        Caller {
            subject: "mallory",
            ..Caller::default()
        },
        Caller {
            country: "US",
            ..Caller::default()
        },
    ];
    for round in 0..3 {
        for c in &callers {
            for tenant in ["t1", "t2"] {
                assert_eq!(
                    decide_only(&cached, c, REFUND, tenant),
                    decide_only(&fresh, c, REFUND, tenant),
                    "round {round}"
                );
            }
        }
    }
    dir.write(
        "clock.rego",
        "package ztgate\nimport rego.v1\ndecision if time.now_ns() > 0\n",
    );
    let clock = crate::build(
        &section("rego: [clock.rego]\nbudget: 1s\n"),
        &[],
        &dir.ctx(),
        "policy",
    )
    .unwrap();
    let e = clock.explain(&view(REFUND, &h, &tls), &Caller::default().facts());
    assert!(
        e.evaluator
            .contains("not cached (the policy calls `time.now_ns`)"),
        "{}",
        e.evaluator
    );
    assert!(crate::filter::cacheable(&Decision::Continue));
    assert!(!crate::filter::cacheable(&Decision::deny(
        ztgate_filter::Reason::PolicyError,
        "x"
    )));
    assert!(crate::filter::cacheable(&Decision::deny(
        ztgate_filter::Reason::PolicyDenied,
        "x"
    )));
}
