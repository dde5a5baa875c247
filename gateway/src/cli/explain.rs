//! `ztgate explain`: run the configured filter chain offline on a described
//! request and print what each filter saw and decided.
//!
//! It builds the same `Runtime` as `run` (same config code) and calls the
//! same `Chain::run` over a `RequestView` from the proxy's own builder,
//! `RequestView::build`; only the sources differ (files and flags instead
//! of a socket), and a test below checks both halves agree.
//! JWT issuers configured by discovery/`jwks_uri` are fetched once over the
//! network, like the gateway does at start; static `keys_file` issuers need
//! no network.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde_json::json;
use ztgate_filter::{
    grpc_path, identity_headers, ChainOutcome, Decision, Denial, Facts, Memory, Outcome,
    PeerCertificate, Reason, Received, RequestView, TlsFacts,
};

use crate::config::{self, Runtime};
use crate::request_meta;

/// What the user described.
pub struct Request {
    pub config: PathBuf,
    pub path: String,
    pub authority: String,
    pub cert: Option<PathBuf>,
    pub token: Option<PathBuf>,
    pub headers: Vec<String>,
    pub client_ip: Option<IpAddr>,
    pub ja4: Option<String>,
    pub json: bool,
}

pub fn explain(req: Request) -> ExitCode {
    let mut loaded = match config::load(&req.config) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    // An offline evaluation must not write to the store replicas share (it
    // would record a DPoP jti, bind a device, spend a rate limit): it runs
    // on a private in-memory store and says which store a live call uses.
    let state = state_note(loaded.raw.state.take());
    let rt = match config::build(&loaded, &Memory::new()) {
        Ok((_, rt)) => rt,
        Err(problems) => {
            eprintln!(
                "{}",
                config::ConfigErrors::locate(&req.config, &loaded.lines, problems)
            );
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&req, &rt, &state)) {
        Ok(allowed) => {
            if allowed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            }
        }
        Err(e) => {
            eprintln!("explain: {e}");
            ExitCode::FAILURE
        }
    }
}

fn peer_from_pem(path: &Path) -> Result<PeerCertificate, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let x509 = openssl::x509::X509::from_pem(&pem)
        .map_err(|_| format!("{}: not a PEM certificate", path.display()))?;
    let der = x509.to_der().map_err(|e| e.to_string())?;
    PeerCertificate::from_der(&der).map_err(|e| format!("{}: {e}", path.display()))
}

fn headers(req: &Request) -> Result<HeaderMap, String> {
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static("application/grpc"));
    h.insert("te", HeaderValue::from_static("trailers"));
    for kv in &req.headers {
        let (k, v) = kv
            .split_once(':')
            .ok_or_else(|| format!("--header {kv}: expected NAME:VALUE"))?;
        let name = HeaderName::from_bytes(k.trim().to_ascii_lowercase().as_bytes())
            .map_err(|_| format!("--header {kv}: bad header name"))?;
        let value =
            HeaderValue::from_str(v.trim()).map_err(|_| format!("--header {kv}: bad value"))?;
        h.append(name, value);
    }
    if let Some(p) = &req.token {
        let t = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
        let t = t.trim();
        // A file may hold the bare token or a whole `Bearer …`/`DPoP …` value.
        let value = if t.starts_with("Bearer ") || t.starts_with("DPoP ") {
            t.to_owned()
        } else {
            format!("Bearer {t}")
        };
        h.insert(
            "authorization",
            HeaderValue::from_str(&value)
                .map_err(|_| "token file: not a valid header value".to_owned())?,
        );
    }
    Ok(h)
}

/// Which store a live call consults for DPoP replay, first-seen bindings
/// and rate limits, in one line.
fn state_note(section: Option<ztgate_state::StateSection>) -> String {
    let Some(section) = section else {
        return "memory (this process)".to_owned();
    };
    match ztgate_state::check(&section, "state") {
        Ok(Some(redis)) => {
            let u = section.on_unavailable.resolve();
            format!(
                "redis {} (key_prefix {:?}, timeout {}) for dpop, first_seen, ratelimit; \
                 on_unavailable dpop={} first_seen={} ratelimit={}; \
                 explain itself uses a private in-memory store",
                redis.endpoints.join(","),
                redis.key_prefix,
                humantime::format_duration(redis.timeout),
                u.dpop.as_str(),
                u.first_seen.as_str(),
                u.ratelimit.as_str()
            )
        }
        Ok(None) | Err(_) => "memory (this process)".to_owned(),
    }
}

/// The described request as the proxy would have received it: an HTTP/2
/// POST to `--path` whose `:authority` is `--authority` (an empty one means
/// none, and then `host` stands in, as in the proxy) from `--client-ip`.
/// [`RequestView::build`] derives the rest, for both.
fn received<'a>(req: &'a Request, headers: &'a HeaderMap, tls: &'a TlsFacts) -> Received<'a> {
    Received {
        method: &Method::POST,
        path: &req.path,
        authority: Some(req.authority.as_str()).filter(|a| !a.is_empty()),
        headers,
        tls,
        socket_ip: req.client_ip,
    }
}

async fn run(req: &Request, rt: &Runtime, state: &str) -> Result<bool, String> {
    for problem in rt.chain.prepare().await {
        eprintln!("note: {problem}");
    }
    let tls = TlsFacts {
        memo: Default::default(),
        peer: match &req.cert {
            Some(p) => Some(Arc::new(peer_from_pem(p)?)),
            None => None,
        },
        ja4: req.ja4.as_deref().map(Arc::from),
        sni: None,
        alpn: Some("h2".into()),
    };
    let mut headers = headers(req)?;
    // As the gateway does before its chain: a client's copy of an identity
    // header ztgate asserts is dropped, whatever the pipeline.
    let forged = identity_headers::strip(&mut headers);
    if forged > 0 {
        eprintln!("note: {forged} reserved identity header(s) removed, as the gateway does");
    }
    let view = RequestView::build(
        received(req, &headers, &tls),
        |ip| rt.is_trusted_proxy(ip),
        SystemTime::now(),
    );
    let mut facts = Facts::new(request_meta::new_request_id());
    // As the gateway does: a path that is not canonical never reaches the
    // chain (so no filter is shown as run).
    let out = match grpc_path::check(req.path.as_bytes()) {
        Ok(()) => rt.chain.run(&view, &mut facts).await,
        Err(e) => ChainOutcome {
            verdicts: Vec::new(),
            denial: Some(Denial::new(Reason::PathNotCanonical, e.to_string())),
        },
    };
    let allowed = out.denial.is_none() && facts.route().is_some();
    let policy = policy_explained(rt, &view, &facts, &out);
    if req.json {
        let mut doc = to_json(&view, rt, &facts, &out, state);
        if let (Some(p), Some(obj)) = (&policy, doc.as_object_mut()) {
            obj.insert(
                "policy".into(),
                json!({
                    "input": p.input,
                    "answer": p.answer.as_ref().ok(),
                    "error": p.answer.as_ref().err(),
                    "evaluator": p.evaluator,
                    "rule": p.rule,
                }),
            );
        }
        println!("{doc}");
    } else {
        print_text(&view, rt, &facts, &out);
        if let Some(p) = &policy {
            print_policy(p);
        }
        println!("state      {state}");
    }
    Ok(allowed)
}

/// The `policy` filter's input document and answer, when it ran: the
/// same evaluation again over the facts the chain ended with (those it
/// saw, when `policy` is last in the pipeline, as it usually is).
fn policy_explained(
    rt: &Runtime,
    view: &RequestView<'_>,
    facts: &Facts,
    out: &ChainOutcome,
) -> Option<ztgate_policy::Explained> {
    let ran = out.verdicts.iter().any(|v| v.filter == "policy");
    rt.policy
        .as_ref()
        .filter(|_| ran)
        .map(|p| p.explain(view, facts))
}

fn print_policy(p: &ztgate_policy::Explained) {
    println!("policy       {} evaluated by the {}", p.rule, p.evaluator);
    println!("policy input {}", p.input);
    match &p.answer {
        Ok(answer) => println!("policy said  {answer}"),
        Err(e) => println!("policy said  (nothing: {e})"),
    }
}

fn verdict(d: &Decision) -> (String, Option<(&'static str, String)>) {
    match d {
        Decision::Continue => ("continue".into(), None),
        Decision::Deny(d) => (
            "deny".into(),
            Some((d.reason.as_str(), d.message.to_string())),
        ),
        Decision::ShadowDeny(d) => (
            "shadow_deny".into(),
            Some((d.reason.as_str(), d.message.to_string())),
        ),
    }
}

/// The request's end as the gateway would record it, from the same
/// [`Outcome::of`] the proxy uses: the decision, and the reason it was
/// refused for, if it was (a chain that allows but picks no route is
/// refused `no_route` by the proxy).
fn final_status(facts: &Facts, out: &ChainOutcome) -> (Outcome, Option<Reason>) {
    let refused = out
        .denial
        .as_ref()
        .map(|d| d.reason)
        .or_else(|| facts.route().is_none().then_some(Reason::NoRoute));
    let shadow = out.shadow_denials().next().is_some();
    (Outcome::of(refused, shadow), refused)
}

/// (decision, reason, gRPC status, HTTP status) as printed: a forwarded
/// call has no status of the gateway's own.
fn status_row(facts: &Facts, out: &ChainOutcome) -> (&'static str, &'static str, String, u16) {
    match final_status(facts, out) {
        (o, Some(r)) => (
            o.as_str(),
            r.as_str(),
            r.grpc_code().as_str().to_owned(),
            r.http_status(),
        ),
        (o, None) => (o.as_str(), "", "forwarded".into(), 200),
    }
}

fn backends(rt: &Runtime, facts: &Facts) -> Vec<String> {
    facts
        .route()
        .and_then(|r| rt.pools.get(r.upstream()))
        .map(|p| p.members().backends.iter().map(|b| b.to_string()).collect())
        .unwrap_or_default()
}

fn to_json(
    view: &RequestView<'_>,
    rt: &Runtime,
    facts: &Facts,
    out: &ChainOutcome,
    state: &str,
) -> serde_json::Value {
    let (decision, reason, grpc, http) = status_row(facts, out);
    let filters: Vec<_> = out
        .verdicts
        .iter()
        .map(|v| {
            let (d, why) = verdict(&v.decision);
            json!({
                "filter": v.filter, "mode": v.mode.as_str(), "decision": d,
                "reason": why.as_ref().map(|w| w.0), "message": why.map(|w| w.1),
                "micros": v.elapsed.as_secs_f64() * 1e6,
            })
        })
        .collect();
    json!({
        "request": {
            "path": view.path, "authority": view.authority,
            "client_ip": view.client_ip.map(|i| i.to_string()),
        },
        "state": state,
        "identity": facts.identity().map(|i| json!({
            "spiffe_id": i.spiffe_id(), "trust_domain": i.trust_domain(), "dns_sans": i.dns_sans(),
            "subject": i.subject(), "thumbprint_sha256": hex::encode(i.thumbprint()),
        })),
        "token": facts.token().map(|t| json!({
            "issuer": t.issuer().as_ref(), "subject": t.subject(), "scopes": t.scopes(),
        })),
        "device": facts.device().map(|d| json!({
            "fingerprint": d.fingerprint(), "ja4": d.ja4(), "country": d.country(), "asn": d.asn(),
        })),
        "filters": filters,
        "route": facts.route().map(|r| json!({
            "route": r.route().as_ref(), "upstream": r.upstream().as_ref(), "backends": backends(rt, facts),
        })),
        "upstream_headers": facts.upstream_headers.iter()
            .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect::<std::collections::BTreeMap<_, _>>(),
        "decision": decision, "reason": reason, "grpc_status": grpc, "http_status": http,
    })
}

fn print_text(view: &RequestView<'_>, rt: &Runtime, facts: &Facts, out: &ChainOutcome) {
    println!(
        "request    {} {}  authority={}",
        view.method,
        view.path,
        view.authority.unwrap_or("")
    );
    println!(
        "client ip  {}",
        view.client_ip
            .map(|i| i.to_string())
            .unwrap_or_else(|| "(none given)".into())
    );
    match facts.identity() {
        Some(i) => println!(
            "identity   {} (subject {}, sha256 {})",
            i.spiffe_id().unwrap_or("(no SPIFFE ID)"),
            i.subject(),
            hex::encode(i.thumbprint())
        ),
        None => println!("identity   (no client certificate)"),
    }
    if let Some(t) = facts.token() {
        println!(
            "token      iss={} sub={} scopes=[{}]",
            t.issuer(),
            t.subject().unwrap_or("-"),
            t.scopes().join(" ")
        );
    }
    if let Some(d) = facts.device() {
        println!(
            "device     fingerprint={} ja4={} country={} asn={}",
            d.fingerprint(),
            d.ja4().unwrap_or("-"),
            d.country().unwrap_or("-"),
            d.asn().map(|a| a.to_string()).unwrap_or_else(|| "-".into())
        );
    }
    println!("filters");
    for v in &out.verdicts {
        let (d, why) = verdict(&v.decision);
        let why = why.map(|(r, m)| format!("{r}: {m}")).unwrap_or_default();
        println!("  {:<10} {:<8} {:<12} {why}", v.filter, v.mode.as_str(), d);
    }
    let ran: Vec<_> = out.verdicts.iter().map(|v| v.filter).collect();
    // Nothing ran at all: the gateway refused the request before its chain.
    let why = if ran.is_empty() && out.denial.is_some() {
        "refused before the chain"
    } else {
        "an earlier filter denied"
    };
    for name in rt.chain.names().filter(|n| !ran.contains(n)) {
        println!("  {name:<10} (not run: {why})");
    }
    if let Some(r) = facts.route() {
        println!(
            "route      {} → upstream {} [{}]",
            r.route(),
            r.upstream(),
            backends(rt, facts).join(", ")
        );
    }
    if !facts.upstream_headers.is_empty() {
        println!("upstream headers");
        for (k, v) in &facts.upstream_headers {
            println!("  {k}: {}", String::from_utf8_lossy(v.as_bytes()));
        }
    }
    let (decision, reason, grpc, http) = status_row(facts, out);
    if reason.is_empty() {
        println!(
            "result     ALLOW → forwarded to {}",
            facts.route().map_or("-", |r| r.upstream().as_ref())
        );
    } else {
        // `DENY` for the caller's fault, `ERROR` for an outage or our bug.
        let word = decision.to_ascii_uppercase();
        println!("result     {word} {reason}: grpc-status {grpc}, HTTP {http}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use ztgate_filter::{FilterVerdict, Mode, SelectedRoute};

    fn routed() -> Facts {
        let mut facts = Facts::default();
        facts.set_route(SelectedRoute::attested_by_route(
            "orders".into(),
            "orders".into(),
        ));
        facts
    }

    fn denied(reason: Reason) -> ChainOutcome {
        ChainOutcome {
            verdicts: Vec::new(),
            denial: Some(Denial::new(reason, "x")),
        }
    }

    /// The status row comes from the same `Outcome::of` as the proxy's
    /// metrics and audit: an outage is an `error`, not a denial, and the
    /// codes come from the reason.
    #[test]
    fn status_row_follows_the_reason() {
        let row = status_row(&Facts::default(), &denied(Reason::JwksUnavailable));
        assert_eq!(row, ("error", "jwks_unavailable", "14".into(), 503));
        let row = status_row(&Facts::default(), &denied(Reason::TokenExpired));
        assert_eq!(row, ("deny", "token_expired", "16".into(), 401));
        let row = status_row(&Facts::default(), &denied(Reason::PathNotCanonical));
        assert_eq!(row, ("deny", "path_not_canonical", "12".into(), 404));
        // Allowed by every filter but no route chosen: the proxy's no_route.
        let row = status_row(&Facts::default(), &ChainOutcome::default());
        assert_eq!(row, ("deny", "no_route", "12".into(), 404));
        let row = status_row(&routed(), &ChainOutcome::default());
        assert_eq!(row, ("allow", "", "forwarded".into(), 200));
        let shadow = ChainOutcome {
            verdicts: vec![FilterVerdict {
                filter: "mtls",
                mode: Mode::Shadow,
                decision: Decision::ShadowDeny(Denial::new(Reason::TrustDomainNotAllowed, "x")),
                elapsed: Duration::ZERO,
            }],
            denial: None,
        };
        let row = status_row(&routed(), &shadow);
        assert_eq!(row, ("shadow_deny", "", "forwarded".into(), 200));
    }

    /// The request `explain` describes, and the same request as the proxy
    /// receives it over HTTP/2 (`:authority` in the URI, unless empty).
    fn both_views(authority: &str, extra: &[&str]) {
        let req = Request {
            config: PathBuf::new(),
            path: "/orders.v1.Orders/Get".into(),
            authority: authority.into(),
            cert: None,
            token: None,
            headers: extra.iter().map(|h| h.to_string()).collect(),
            client_ip: Some("10.0.0.1".parse().unwrap()),
            ja4: Some("t13d1516h2_8daaf6152771_e5627efa2ab1".into()),
            json: false,
        };
        let tls = TlsFacts {
            ja4: req.ja4.as_deref().map(Arc::from),
            alpn: Some("h2".into()),
            ..TlsFacts::default()
        };
        let headers = headers(&req).unwrap();
        let mut uri = http::Uri::builder();
        if !authority.is_empty() {
            uri = uri.scheme("https").authority(authority);
        }
        let uri = uri.path_and_query(req.path.as_str()).build().unwrap();
        let mut wire =
            pingora::http::RequestHeader::build("POST", req.path.as_bytes(), None).unwrap();
        wire.set_uri(uri);
        for (name, value) in &headers {
            wire.append_header(name.clone(), value.clone()).unwrap();
        }
        let trusted = |ip: IpAddr| ip.to_string().starts_with("10.");
        let now = SystemTime::UNIX_EPOCH;
        let explained = RequestView::build(received(&req, &headers, &tls), trusted, now);
        let proxied = RequestView::build(
            crate::proxy::received(&wire, &tls, req.client_ip),
            trusted,
            now,
        );
        assert_eq!(explained, proxied);
        assert_eq!(explained.client_ip, Some("7.7.7.7".parse().unwrap()));
    }

    /// `explain` shows the filters the view the proxy would build for the
    /// same request, `host` fallback and client IP behind a trusted proxy
    /// included: both go through `RequestView::build`, and this fails if
    /// either side's half (`received`) reads the request differently.
    #[test]
    fn explain_sees_the_view_the_proxy_builds() {
        let xff = "x-forwarded-for: 7.7.7.7";
        both_views("orders.example.com", &["host: other.example.com", xff]);
        both_views("", &["host: orders.example.com", xff]);
        let req = Request {
            config: PathBuf::new(),
            path: "/a.B/C".into(),
            authority: String::new(),
            cert: None,
            token: None,
            headers: vec!["host: orders.example.com".into()],
            client_ip: None,
            ja4: None,
            json: false,
        };
        let (tls, headers) = (TlsFacts::default(), headers(&req).unwrap());
        let view = RequestView::build(received(&req, &headers, &tls), |_| false, SystemTime::now());
        assert_eq!(view.authority, Some("orders.example.com"));
    }
}
