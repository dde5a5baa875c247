//! The input document a policy sees (`input`), built once per request.
//!
//! Field names are PRODUCT.md's, and a field with nothing to say is absent
//! (so `not input.spiffe_id` reads "no workload identity"):
//!
//! | field | from | value |
//! |---|---|---|
//! | `spiffe_id`, `trust_domain` | `mtls` | the client SVID's SPIFFE ID and its trust domain |
//! | `thumbprint` | `mtls` | SHA-256 of the client certificate, lowercase hex |
//! | `cert_subject` | `mtls` | the client certificate's subject (RFC 4514) |
//! | `subject`, `issuer` | `jwt` | the verified token's `sub` and `iss` |
//! | `scopes` | `jwt` | the granted scopes, sorted, deduplicated (array) |
//! | `claims` | `jwt` | the claims named in `policy.input_claims` (object) |
//! | `fingerprint`, `country`, `asn` | `device` | device fingerprint, ISO country, AS number |
//! | `anonymous` | `device` | anonymous-network categories of the client address (`anonymous`, `vpn`, `tor`, `hosting`, `public_proxy`, `residential_proxy`), from the Anonymous-IP database |
//! | `client_ip` | the request | after `trusted_proxies` |
//! | `route`, `upstream` | `route` | the route matched and the pool picked |
//! | `service`, `method` | the request | `pkg.Service` and `Method` of `:path` |
//! | `headers` | the request | the headers named in `policy.input_headers` (object; repeated values joined with `, `) |
//!
//! The values are built straight as regorus [`Value`]s: no JSON text is
//! written or parsed per request. The raw token never enters the input;
//! only verified claims do.

use std::collections::BTreeMap;

use http::HeaderName;
use regorus::Value;
use ztgate_filter::{Facts, RequestView};

/// Nesting depth of a claim copied into the input; deeper parts are cut
/// (a token is signed by a trusted issuer, but a bound keeps a claim from
/// making this recursion deep).
const MAX_CLAIM_DEPTH: usize = 32;

/// What of the request the configuration asks for.
#[derive(Debug, Clone, Default)]
pub struct InputSpec {
    /// Token claims copied into `input.claims`, by name.
    pub claims: Vec<String>,
    /// Request headers copied into `input.headers`.
    pub headers: Vec<HeaderName>,
}

fn s(text: &str) -> Value {
    Value::from(text)
}

fn put(map: &mut BTreeMap<Value, Value>, key: &str, value: Value) {
    map.insert(s(key), value);
}

/// A JSON claim as a regorus value, without a text round trip.
pub fn claim_value(v: &serde_json::Value) -> Value {
    claim_at(v, 0)
}

fn claim_at(v: &serde_json::Value, depth: usize) -> Value {
    use serde_json::Value as J;
    if depth > MAX_CLAIM_DEPTH {
        return Value::Null;
    }
    match v {
        J::Null => Value::Null,
        J::Bool(b) => Value::from(*b),
        J::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or(0.0))
            }
        }
        J::String(t) => s(t),
        J::Array(items) => Value::from(
            items
                .iter()
                .map(|i| claim_at(i, depth + 1))
                .collect::<Vec<_>>(),
        ),
        J::Object(map) => Value::from(
            map.iter()
                .map(|(k, v)| (s(k), claim_at(v, depth + 1)))
                .collect::<BTreeMap<_, _>>(),
        ),
    }
}

/// `/pkg.Service/Method` → (`pkg.Service`, `Method`). The proxy refuses a
/// path that is not canonical before any filter runs.
fn service_method(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix('/')?;
    let (service, method) = rest.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/'))
        .then_some((service, method))
}

/// The input document for one request.
pub fn build(spec: &InputSpec, req: &RequestView<'_>, facts: &Facts) -> Value {
    let mut m = BTreeMap::new();
    if let Some(id) = facts.identity() {
        if let Some(spiffe) = id.spiffe_id() {
            put(&mut m, "spiffe_id", s(spiffe));
        }
        if let Some(td) = id.trust_domain() {
            put(&mut m, "trust_domain", s(td));
        }
        put(
            &mut m,
            "thumbprint",
            Value::from(hex::encode(id.thumbprint())),
        );
        put(&mut m, "cert_subject", s(id.subject()));
    }
    if let Some(t) = facts.token() {
        if let Some(sub) = t.subject() {
            put(&mut m, "subject", s(sub));
        }
        put(&mut m, "issuer", s(t.issuer()));
        let scopes: Vec<Value> = t.scopes().iter().map(|x| s(x)).collect();
        put(&mut m, "scopes", Value::from(scopes));
        if !spec.claims.is_empty() {
            let claims: BTreeMap<Value, Value> = spec
                .claims
                .iter()
                .filter_map(|name| Some((s(name), claim_value(t.claims().get(name)?))))
                .collect();
            put(&mut m, "claims", Value::from(claims));
        }
    }
    if let Some(d) = facts.device() {
        put(&mut m, "fingerprint", s(d.fingerprint()));
        if let Some(c) = d.country() {
            put(&mut m, "country", s(c));
        }
        if let Some(asn) = d.asn() {
            put(&mut m, "asn", Value::from(asn));
        }
        if !d.anonymous().is_empty() {
            let cats: Vec<Value> = d.anonymous().iter().map(|c| s(c)).collect();
            put(&mut m, "anonymous", Value::from(cats));
        }
    }
    if let Some(ip) = req.client_ip {
        put(&mut m, "client_ip", Value::from(ip.to_string()));
    }
    if let Some(r) = facts.route() {
        put(&mut m, "route", s(r.route()));
        put(&mut m, "upstream", s(r.upstream()));
    }
    if let Some((service, method)) = service_method(req.path) {
        put(&mut m, "service", s(service));
        put(&mut m, "method", s(method));
    }
    if !spec.headers.is_empty() {
        let mut headers = BTreeMap::new();
        for name in &spec.headers {
            let mut joined = String::new();
            // A value that is not visible ASCII is left out rather than
            // guessed at: a policy comparing strings must see what was sent.
            for v in req.headers.get_all(name) {
                let Ok(text) = v.to_str() else { continue };
                if !joined.is_empty() {
                    joined.push_str(", ");
                }
                joined.push_str(text);
            }
            if !joined.is_empty() || req.headers.contains_key(name) {
                headers.insert(s(name.as_str()), Value::from(joined));
            }
        }
        put(&mut m, "headers", Value::from(headers));
    }
    Value::from(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_and_method_come_from_the_canonical_path() {
        assert_eq!(
            service_method("/payments.v1.Payments/Refund"),
            Some(("payments.v1.Payments", "Refund"))
        );
        assert_eq!(service_method("/x"), None);
        assert_eq!(service_method("//M"), None);
        assert_eq!(service_method("/a.B/C/D"), None);
    }

    #[test]
    fn claims_convert_without_text() {
        let v = claim_value(&serde_json::json!({
            "n": 3, "big": u64::MAX, "f": 1.5, "s": "x", "b": true, "a": [1, "y", null]
        }));
        let o = v.as_object().unwrap();
        assert_eq!(o.get(&s("n")), Some(&Value::from(3i64)));
        assert_eq!(o.get(&s("big")), Some(&Value::from(u64::MAX)));
        assert_eq!(o.get(&s("f")), Some(&Value::from(1.5)));
        assert_eq!(o.get(&s("b")), Some(&Value::from(true)));
        assert_eq!(
            o.get(&s("a")),
            Some(&Value::from(vec![Value::from(1i64), s("y"), Value::Null]))
        );
        // Deep nesting is cut, not recursed into without end.
        let mut deep = serde_json::json!(1);
        for _ in 0..200 {
            deep = serde_json::json!([deep]);
        }
        let _ = claim_value(&deep);
    }
}
