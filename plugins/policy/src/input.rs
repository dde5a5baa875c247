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
use std::net::IpAddr;

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

/// What [`walk`] hands over, field by field: the one description of the
/// input document, so that the document ([`build`]) and the decision
/// cache's key ([`key`]) cannot disagree about what is in it.
trait Sink {
    fn text(&mut self, field: &'static str, v: &str);
    /// Bytes shown to the policy as lowercase hex.
    fn hex(&mut self, field: &'static str, v: &[u8]);
    fn number(&mut self, field: &'static str, v: u32);
    fn ip(&mut self, field: &'static str, v: IpAddr);
    fn texts<'a>(&mut self, field: &'static str, v: impl Iterator<Item = &'a str>);
    /// `input.claims`: the configured claims the token has.
    fn claims<'a>(
        &mut self,
        field: &'static str,
        v: impl Iterator<Item = (&'a str, &'a serde_json::Value)>,
    );
    /// `input.headers`: (name, joined values) of the configured headers
    /// the request has.
    fn headers<'a>(&mut self, field: &'static str, v: impl Iterator<Item = (&'a str, String)>);
}

/// Every field of the input document for one request, in a fixed order;
/// a field with nothing to say is not handed over at all.
fn walk(spec: &InputSpec, req: &RequestView<'_>, facts: &Facts, out: &mut impl Sink) {
    if let Some(id) = facts.identity() {
        if let Some(spiffe) = id.spiffe_id() {
            out.text("spiffe_id", spiffe);
        }
        if let Some(td) = id.trust_domain() {
            out.text("trust_domain", td);
        }
        out.hex("thumbprint", id.thumbprint());
        out.text("cert_subject", id.subject());
    }
    if let Some(t) = facts.token() {
        if let Some(sub) = t.subject() {
            out.text("subject", sub);
        }
        out.text("issuer", t.issuer());
        out.texts("scopes", t.scopes().iter().map(|x| x.as_ref()));
        if !spec.claims.is_empty() {
            let claims = t.claims();
            out.claims(
                "claims",
                spec.claims
                    .iter()
                    .filter_map(|name| Some((name.as_str(), claims.get(name)?))),
            );
        }
    }
    if let Some(d) = facts.device() {
        out.text("fingerprint", d.fingerprint());
        if let Some(c) = d.country() {
            out.text("country", c);
        }
        if let Some(asn) = d.asn() {
            out.number("asn", asn);
        }
        if !d.anonymous().is_empty() {
            out.texts("anonymous", d.anonymous().iter().map(|c| c.as_ref()));
        }
    }
    if let Some(ip) = req.client_ip {
        out.ip("client_ip", ip);
    }
    if let Some(r) = facts.route() {
        out.text("route", r.route());
        out.text("upstream", r.upstream());
    }
    if let Some((service, method)) = service_method(req.path) {
        out.text("service", service);
        out.text("method", method);
    }
    if !spec.headers.is_empty() {
        out.headers(
            "headers",
            spec.headers.iter().filter_map(|name| {
                let mut joined = String::new();
                // A value that is not visible ASCII is left out rather
                // than guessed at: a policy comparing strings must see
                // what was sent.
                for v in req.headers.get_all(name) {
                    let Ok(text) = v.to_str() else { continue };
                    if !joined.is_empty() {
                        joined.push_str(", ");
                    }
                    joined.push_str(text);
                }
                (!joined.is_empty() || req.headers.contains_key(name))
                    .then_some((name.as_str(), joined))
            }),
        );
    }
}

/// Builds the document as regorus values.
#[derive(Default)]
struct Document(BTreeMap<Value, Value>);

impl Sink for Document {
    fn text(&mut self, field: &'static str, v: &str) {
        put(&mut self.0, field, s(v));
    }
    fn hex(&mut self, field: &'static str, v: &[u8]) {
        put(&mut self.0, field, Value::from(hex::encode(v)));
    }
    fn number(&mut self, field: &'static str, v: u32) {
        put(&mut self.0, field, Value::from(v));
    }
    fn ip(&mut self, field: &'static str, v: IpAddr) {
        put(&mut self.0, field, Value::from(v.to_string()));
    }
    fn texts<'a>(&mut self, field: &'static str, v: impl Iterator<Item = &'a str>) {
        put(
            &mut self.0,
            field,
            Value::from(v.map(s).collect::<Vec<_>>()),
        );
    }
    fn claims<'a>(
        &mut self,
        field: &'static str,
        v: impl Iterator<Item = (&'a str, &'a serde_json::Value)>,
    ) {
        let claims: BTreeMap<Value, Value> = v.map(|(k, c)| (s(k), claim_value(c))).collect();
        put(&mut self.0, field, Value::from(claims));
    }
    fn headers<'a>(&mut self, field: &'static str, v: impl Iterator<Item = (&'a str, String)>) {
        let headers: BTreeMap<Value, Value> = v.map(|(k, h)| (s(k), Value::from(h))).collect();
        put(&mut self.0, field, Value::from(headers));
    }
}

/// The input document for one request.
pub fn build(spec: &InputSpec, req: &RequestView<'_>, facts: &Facts) -> Value {
    let mut doc = Document::default();
    walk(spec, req, facts, &mut doc);
    Value::from(doc.0)
}

/// Writes an injective byte encoding of the document: every field name
/// and value length-prefixed, in [`walk`]'s order, so two requests with
/// equal keys have equal input documents (the decision cache's
/// soundness). Unequal keys may still mean equal documents (a claim's JSON
/// spelt differently): that only costs a cache miss.
struct Key<'b>(&'b mut Vec<u8>);

impl Key<'_> {
    fn bytes(&mut self, b: &[u8]) {
        let len = u32::try_from(b.len()).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&len.to_le_bytes());
        self.0.extend_from_slice(b);
    }
    fn field(&mut self, field: &'static str, kind: u8) {
        self.bytes(field.as_bytes());
        self.0.push(kind);
    }
}

impl Sink for Key<'_> {
    fn text(&mut self, field: &'static str, v: &str) {
        self.field(field, b's');
        self.bytes(v.as_bytes());
    }
    fn hex(&mut self, field: &'static str, v: &[u8]) {
        self.field(field, b'x');
        self.bytes(v);
    }
    fn number(&mut self, field: &'static str, v: u32) {
        self.field(field, b'n');
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn ip(&mut self, field: &'static str, v: IpAddr) {
        self.field(field, b'i');
        match v {
            IpAddr::V4(a) => self.bytes(&a.octets()),
            IpAddr::V6(a) => self.bytes(&a.octets()),
        }
    }
    fn texts<'a>(&mut self, field: &'static str, v: impl Iterator<Item = &'a str>) {
        self.field(field, b'l');
        let mut n = 0u32;
        for t in v {
            self.bytes(t.as_bytes());
            n += 1;
        }
        self.0.extend_from_slice(&n.to_le_bytes());
    }
    fn claims<'a>(
        &mut self,
        field: &'static str,
        v: impl Iterator<Item = (&'a str, &'a serde_json::Value)>,
    ) {
        self.field(field, b'c');
        let mut n = 0u32;
        for (k, c) in v {
            self.bytes(k.as_bytes());
            // JSON text: equal text, equal value.
            let text = c.to_string();
            self.bytes(text.as_bytes());
            n += 1;
        }
        self.0.extend_from_slice(&n.to_le_bytes());
    }
    fn headers<'a>(&mut self, field: &'static str, v: impl Iterator<Item = (&'a str, String)>) {
        self.field(field, b'h');
        let mut n = 0u32;
        for (k, h) in v {
            self.bytes(k.as_bytes());
            self.bytes(h.as_bytes());
            n += 1;
        }
        self.0.extend_from_slice(&n.to_le_bytes());
    }
}

/// The decision cache's key for one request, written into `out` (cleared
/// first): equal keys, equal input documents.
pub fn key(spec: &InputSpec, req: &RequestView<'_>, facts: &Facts, out: &mut Vec<u8>) {
    out.clear();
    walk(spec, req, facts, &mut Key(out));
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
