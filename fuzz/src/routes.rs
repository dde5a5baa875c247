//! `routes`: the route table (`ztgate_route::build` and
//! `RouteTable::lookup`), the `match.grpc` pattern compiler, SPIFFE ID
//! patterns, `*` wildcards, and the gRPC path canonicaliser
//! (`ztgate_filter::grpc_path::check`).
//!
//! The input (through `arbitrary`) is a list of routes (pattern, optional
//! authority, mode), a list of requests (path, optional authority) and a
//! few SPIFFE patterns and IDs, each drawn mostly from the characters the
//! grammars use so that most of them compile.
//!
//! Checked beyond "no panic", each against a plain reference written here
//! from the documented semantics:
//! - the indexed lookup (hash map, tries, glob anchors) returns the first
//!   route in config order that matches, as a linear scan does;
//! - a compiled pattern matches a `service/method` exactly when the glob of
//!   its text does (`*` within a part; no method part = any method);
//! - `wildcard::matches` agrees with a backtracking matcher;
//! - `SpiffePattern::matches` agrees with a recursive segment matcher;
//! - `grpc_path::check` accepts exactly `/Ident(.Ident)*/Ident`.

use std::sync::Arc;

use arbitrary::{Arbitrary, Unstructured};
use ztgate_filter::{grpc_path, wildcard, BuildContext, Memory, Mode, SpiffePattern};
use ztgate_route::config;
use ztgate_route::MethodPattern;

const PATTERN_CHARS: &[u8] = b"ab.*/_-Z9?";
const PATH_CHARS: &[u8] = b"/ab._Z9-%?#.";
const AUTHORITY_CHARS: &[u8] = b"aB.:19[]";
const SPIFFE_CHARS: &[u8] = b"ab/*.-_";

fn text(u: &mut Unstructured<'_>, alphabet: &[u8], max: usize) -> arbitrary::Result<String> {
    let n = u.int_in_range(0..=max)?;
    let mut s = String::with_capacity(n);
    for _ in 0..n {
        let b = u8::arbitrary(u)?;
        // Mostly the grammar's own characters, now and then any byte.
        if b >= 250 {
            s.push(char::from(b.wrapping_mul(31)));
        } else {
            s.push(char::from(alphabet[usize::from(b) % alphabet.len()]));
        }
    }
    Ok(s)
}

struct Input {
    routes: Vec<(String, Option<String>, bool)>,
    requests: Vec<(String, Option<String>)>,
    spiffe: Vec<(String, String)>,
}

fn input(u: &mut Unstructured<'_>) -> arbitrary::Result<Input> {
    let mut routes = Vec::new();
    for _ in 0..u.int_in_range(0..=12)? {
        let pattern = text(u, PATTERN_CHARS, 14)?;
        let authority = if bool::arbitrary(u)? {
            Some(text(u, AUTHORITY_CHARS, 8)?)
        } else {
            None
        };
        routes.push((pattern, authority, bool::arbitrary(u)?));
    }
    let mut requests = Vec::new();
    for _ in 0..u.int_in_range(1..=12)? {
        let mut path = text(u, PATH_CHARS, 16)?;
        if bool::arbitrary(u)? {
            path.insert(0, '/');
        }
        let authority = if bool::arbitrary(u)? {
            Some(text(u, AUTHORITY_CHARS, 10)?)
        } else {
            None
        };
        requests.push((path, authority));
    }
    let mut spiffe = Vec::new();
    for _ in 0..u.int_in_range(0..=4)? {
        let p = format!("spiffe://a{}", text(u, SPIFFE_CHARS, 12)?);
        let id = format!("spiffe://a{}", text(u, SPIFFE_CHARS, 14)?);
        spiffe.push((p, id));
    }
    Ok(Input {
        routes,
        requests,
        spiffe,
    })
}

pub fn run(data: &[u8]) {
    // The raw bytes as a `:path`, whatever else they encode.
    check_grpc_path(data);
    let Ok(input) = input(&mut Unstructured::new(data)) else {
        return;
    };
    for (p, id) in &input.spiffe {
        check_spiffe(p, id);
    }
    for (path, _) in &input.requests {
        check_grpc_path(path.as_bytes());
    }
    check_table(&input);
}

fn check_table(input: &Input) {
    let raws: Vec<config::Route> = input
        .routes
        .iter()
        .enumerate()
        .map(|(i, (grpc, authority, shadow))| config::Route {
            name: format!("r{i}"),
            matcher: config::Match {
                grpc: grpc.clone(),
                authority: authority.clone(),
            },
            mode: if *shadow { Mode::Shadow } else { Mode::Enforce },
            spiffe: None,
            select: vec![config::Select {
                scopes: None,
                spiffe: None,
                upstream: "u".into(),
            }],
            policy: None,
        })
        .collect();
    // Bad patterns and authorities are reported, not compiled: keep the
    // routes that build on their own, so the table still gets exercised.
    let ctx = BuildContext {
        upstreams: vec!["u".into()],
        pipeline: vec!["mtls".into(), "jwt".into(), "route".into()],
        memory: Memory::new(),
        ..BuildContext::default()
    };
    let good: Vec<config::Route> = raws
        .into_iter()
        .filter(|r| ztgate_route::build(std::slice::from_ref(r), &ctx, "routes").is_ok())
        .enumerate()
        .map(|(i, mut r)| {
            r.name = format!("r{i}");
            r
        })
        .collect();
    let filter = match ztgate_route::build(&good, &ctx, "routes") {
        Ok(f) => f,
        Err(p) => panic!("routes that build alone fail together: {p:?}"),
    };
    let table = filter.table();
    assert_eq!(table.len(), good.len());
    for (i, route) in table.routes().iter().enumerate() {
        assert_eq!(route.index(), i);
        assert_eq!(
            route.pattern(),
            &MethodPattern::parse(route.pattern_text()).unwrap()
        );
    }
    for (path, authority) in &input.requests {
        let got = table.lookup(path, authority.as_deref()).map(|r| r.index());
        let want = linear_lookup(table.routes(), path, authority.as_deref());
        assert_eq!(got, want, "lookup({path:?}, {authority:?})");
        if let Some((service, method)) = path.strip_prefix('/').and_then(|k| k.split_once('/')) {
            for route in table.routes() {
                assert_eq!(
                    route.pattern().matches(service, method),
                    pattern_matches(route.pattern_text(), service, method),
                    "pattern {:?} on {service:?}/{method:?}",
                    route.pattern_text()
                );
            }
        }
    }
}

/// The first route (config order) whose pattern and authority match.
fn linear_lookup(
    routes: &[ztgate_route::CompiledRoute],
    path: &str,
    authority: Option<&str>,
) -> Option<usize> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    if service.is_empty() || method.is_empty() || method.contains('/') {
        return None;
    }
    let host = authority.map(host_of);
    routes
        .iter()
        .find(|r| {
            pattern_matches(r.pattern_text(), service, method)
                && r.authority()
                    .is_none_or(|want| host.is_some_and(|h| h.eq_ignore_ascii_case(want)))
        })
        .map(|r| r.index())
}

/// `:authority` without port and trailing dot (route crate docs).
fn host_of(authority: &str) -> &str {
    let host = if authority.starts_with('[') {
        authority
            .find(']')
            .map_or(authority, |end| &authority[..=end])
    } else {
        match authority.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => authority,
        }
    };
    host.strip_suffix('.').unwrap_or(host)
}

/// `SERVICE[/METHOD]` (leading `/` optional) as globs on each part; no
/// method part means any method.
fn pattern_matches(pattern: &str, service: &str, method: &str) -> bool {
    let p = pattern.strip_prefix('/').unwrap_or(pattern);
    let (ps, pm) = p.split_once('/').unwrap_or((p, "*"));
    glob(ps.as_bytes(), service.as_bytes()) && glob(pm.as_bytes(), method.as_bytes())
}

/// `*` matches any run of bytes; everything else itself (plain recursion
/// with memo: the reference, not the fast path).
fn glob(p: &[u8], t: &[u8]) -> bool {
    let mut memo = vec![None; (p.len() + 1) * (t.len() + 1)];
    fn go(p: &[u8], t: &[u8], i: usize, j: usize, memo: &mut [Option<bool>]) -> bool {
        let key = i * (t.len() + 1) + j;
        if let Some(v) = memo[key] {
            return v;
        }
        let v = match p.get(i) {
            None => j == t.len(),
            Some(b'*') => go(p, t, i + 1, j, memo) || (j < t.len() && go(p, t, i, j + 1, memo)),
            Some(c) => t.get(j) == Some(c) && go(p, t, i + 1, j + 1, memo),
        };
        memo[key] = Some(v);
        v
    }
    go(p, t, 0, 0, &mut memo)
}

fn check_spiffe(pattern: &str, id: &str) {
    // The wildcard matcher on its own, on the same strings.
    assert_eq!(
        wildcard::matches(pattern, id),
        glob(pattern.as_bytes(), id.as_bytes()),
        "wildcard::matches({pattern:?}, {id:?})"
    );
    let Ok(p) = SpiffePattern::parse(pattern) else {
        return;
    };
    assert_eq!(p.as_str(), pattern);
    assert_eq!(
        p.matches(id),
        spiffe_matches(pattern, id),
        "{pattern:?} on {id:?}"
    );
    let list = ztgate_filter::SpiffeAllowList::new(vec![p]);
    assert!(!list.allows(None));
    let _ = Arc::new(list);
}

/// SPIFFE ID pattern semantics (filter crate docs): same trust domain;
/// `*` within a segment, `**` any number of whole segments (one or more
/// when last).
fn spiffe_matches(pattern: &str, id: &str) -> bool {
    let rest = &pattern["spiffe://".len()..];
    let (td, path) = rest.split_once('/').unwrap_or((rest, ""));
    let pats: Vec<&str> = if rest.contains('/') {
        path.split('/').collect()
    } else {
        Vec::new()
    };
    let Some(id_rest) = id.strip_prefix("spiffe://") else {
        return false;
    };
    let (id_td, id_path) = match id_rest.split_once('/') {
        Some((t, p)) => (t, Some(p)),
        None => (id_rest, None),
    };
    if id_td != td {
        return false;
    }
    let segs: Vec<&str> = id_path.map(|p| p.split('/').collect()).unwrap_or_default();
    fn go(pats: &[&str], segs: &[&str], i: usize, j: usize) -> bool {
        match pats.get(i) {
            None => j == segs.len(),
            Some(&"**") => {
                let min = usize::from(i + 1 == pats.len());
                (j + min..=segs.len()).any(|k| go(pats, segs, i + 1, k))
            }
            Some(p) => {
                segs.get(j)
                    .is_some_and(|s| glob(p.as_bytes(), s.as_bytes()))
                    && go(pats, segs, i + 1, j + 1)
            }
        }
    }
    go(&pats, &segs, 0, 0)
}

/// `/` Ident (`.` Ident)* `/` Ident, Ident = `[A-Za-z_][A-Za-z0-9_]*`.
fn canonical(path: &[u8]) -> bool {
    fn ident(s: &[u8]) -> bool {
        s.first()
            .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_')
            && s.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
    }
    let Some(rest) = path.strip_prefix(b"/") else {
        return false;
    };
    let parts: Vec<&[u8]> = rest.split(|b| *b == b'/').collect();
    match parts.as_slice() {
        [service, method] => service.split(|b| *b == b'.').all(ident) && ident(method),
        _ => false,
    }
}

fn check_grpc_path(path: &[u8]) {
    let got = grpc_path::check(path);
    assert_eq!(
        got.is_ok(),
        canonical(path),
        "grpc_path::check({:?}) = {got:?}",
        String::from_utf8_lossy(path)
    );
    if got.is_ok() {
        // What the route table splits is what was checked.
        let s = std::str::from_utf8(path).unwrap();
        let (service, method) = s[1..].split_once('/').unwrap();
        assert!(!service.is_empty() && !method.is_empty() && !method.contains('/'));
    }
}
