//! The `device` [`Filter`]: gathers the inputs (GeoIP answers, the
//! fingerprint under each secret, the token claim, the first-seen store),
//! then lets [`policy::decide`] judge them.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::OnceLock;

use http::{HeaderName, HeaderValue};
use ztgate_filter::{Decision, DeviceFacts, Facts, Filter, Reason, RequestView};

use crate::fingerprint::{self, Fingerprinter, Signal, SignalSource};
use crate::first_seen::{self, Bindings};
use crate::geoip::{AnonymousFlags, GeoIp, GeoIpError};
use crate::metrics;
use crate::policy::{self, ClaimCheck, Inputs, Policies, Verdict};

/// Upstream header carrying the fingerprint (current secret).
pub const FINGERPRINT_HEADER: HeaderName = ztgate_filter::identity_headers::DEVICE_FINGERPRINT;
/// Upstream header carrying the ISO country code, when known.
pub const COUNTRY_HEADER: HeaderName = ztgate_filter::identity_headers::GEO_COUNTRY;

/// The built `device` filter of one config generation.
pub struct DeviceFilter {
    pub(crate) signals: Vec<Signal>,
    pub(crate) fingerprinter: Fingerprinter,
    pub(crate) geoip: Arc<GeoIp>,
    pub(crate) policies: Policies,
    pub(crate) first_seen: Option<Bindings>,
}

impl std::fmt::Debug for DeviceFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceFilter")
            .field("signals", &self.signals)
            .field("geoip", &self.geoip)
            .field("policies", &self.policies)
            .finish_non_exhaustive()
    }
}

impl DeviceFilter {
    /// The mmdb files in use, for the gateway's file watcher.
    pub fn watched_paths(&self) -> Vec<PathBuf> {
        self.geoip.watched_paths()
    }

    /// Reopen the mmdb files and swap each one that verifies; a failing
    /// file keeps the old db in service and is returned. Blocking: call it
    /// from `spawn_blocking` or a watcher thread.
    pub fn reload_geoip(&self) -> Result<(), Vec<GeoIpError>> {
        self.geoip.reload()
    }

    /// The GeoIP databases (shared with `ztgate explain`).
    pub fn geoip(&self) -> &Arc<GeoIp> {
        &self.geoip
    }

    /// The fingerprint of `canonical` under the current secret, and
    /// `canonical` back. The HMAC is most of this filter's cost (11,200 of
    /// 14,600 instructions a call, callgrind over the full chain) while its
    /// inputs rarely change on one connection (JA4 and the certificate
    /// never do; headers and GeoIP facts seldom): it is remembered in the
    /// connection's memo, keyed by the exact signal bytes and this
    /// fingerprinter (a reload that changes the secret derives anew).
    fn current_fingerprint(
        &self,
        req: &RequestView<'_>,
        mut canonical: Vec<u8>,
    ) -> (String, Vec<u8>) {
        let signals = canonical.len();
        canonical.extend_from_slice(&self.fingerprinter.id().to_le_bytes());
        let memo = &req.tls.memo.fingerprint;
        let current = match memo.get(canonical.as_slice()) {
            Some(f) => f.to_string(),
            None => {
                let f = self
                    .fingerprinter
                    .fingerprint(canonical.get(..signals).unwrap_or_default());
                memo.remember(canonical.as_slice().into(), Arc::from(f.as_str()));
                f
            }
        };
        canonical.truncate(signals);
        (current, canonical)
    }

    /// Evaluate one request: the filter's whole logic with the verdict of
    /// every policy, for `ztgate explain` and tests. [`Filter::evaluate`]
    /// calls this and records metrics.
    ///
    /// `Err` when a first-seen check could not be made and must not be
    /// skipped (the shared store is down, `on_unavailable: deny`).
    pub async fn decide(
        &self,
        req: &RequestView<'_>,
        facts: &mut Facts,
    ) -> Result<Verdict, first_seen::Unanswered> {
        let ip: Option<IpAddr> = req.client_ip.or(req.socket_ip);
        let p = &self.policies;

        // --- GeoIP lookups (only what something reads) ---
        let country = ip.and_then(|ip| self.geoip.country(ip));
        let asn = ip.and_then(|ip| self.geoip.asn(ip));
        // Looked up whenever the database is configured: the flags are
        // also a fact later filters (`policy`) read.
        let anonymous = ip.map_or_else(AnonymousFlags::default, |ip| self.geoip.anonymous(ip));

        // --- fingerprint ---
        let ja4 = req.tls.ja4.as_deref();
        let canonical = fingerprint::canonical(
            &self.signals,
            &SignalSource {
                ja4,
                headers: req.headers,
                cert_thumbprint: req.peer().map(|c| &c.sha256),
                country: country.as_deref(),
                asn,
            },
        );
        let current = self.current_fingerprint(req, canonical);
        let canonical = current.1;
        let current = current.0;
        // Fingerprints under previous secrets cost one HMAC each: compute
        // them only when a comparison with the current one has failed or a
        // deny list must see them.
        let previous: OnceLock<Vec<String>> = OnceLock::new();
        let previous =
            || previous.get_or_init(|| self.fingerprinter.previous_fingerprints(&canonical));
        let same_device = |presented: &str| {
            fingerprint::ct_eq_str(&current, presented)
                || previous()
                    .iter()
                    .fold(false, |ok, f| ok | fingerprint::ct_eq_str(f, presented))
        };

        // --- token claim ---
        let claim = match (&p.claim_binding, facts.token()) {
            (None, _) | (Some(_), None) => ClaimCheck::NoToken,
            (Some(b), Some(t)) => match t.claims().get(&b.claim).and_then(|v| v.as_str()) {
                None => ClaimCheck::Missing,
                Some(v) if same_device(v) => ClaimCheck::Matches,
                Some(_) => ClaimCheck::Differs,
            },
        };

        // --- first-seen binding, per (issuer, subject) ---
        let first_seen = match (&self.first_seen, facts.token()) {
            (Some(store), Some(t)) => match t.subject() {
                Some(sub) => {
                    let key = format!("{}\u{0}{sub}", t.issuer());
                    Some(store.observe(&key, &current, same_device, req.now).await?)
                }
                None => None,
            },
            _ => None,
        };

        // Deny/allow lists see the device under every secret.
        let mut fingerprints = vec![current.clone()];
        if p.devices.is_some() {
            fingerprints.extend(previous().iter().cloned());
        }

        let verdict = policy::decide(
            p,
            &Inputs {
                fingerprints: &fingerprints,
                claim,
                country: country.as_deref(),
                anonymous,
                first_seen,
            },
        );

        // --- facts and upstream headers ---
        if let Ok(v) = HeaderValue::from_str(&current) {
            facts.set_upstream_header(FINGERPRINT_HEADER, v);
        }
        if let Some(v) = country
            .as_deref()
            .and_then(|c| HeaderValue::from_str(c).ok())
        {
            facts.set_upstream_header(COUNTRY_HEADER, v);
        }
        facts.set_device(
            DeviceFacts::attested_by_device(current, ja4.map(str::to_owned), country, asn)
                .with_anonymous(anonymous.categories()),
        );
        Ok(verdict)
    }
}

#[async_trait::async_trait]
impl Filter for DeviceFilter {
    fn name(&self) -> &'static str {
        ztgate_filter::FilterKind::Device.as_str()
    }

    async fn evaluate(&self, req: &RequestView<'_>, facts: &mut Facts) -> Decision {
        let verdict = match self.decide(req, facts).await {
            Ok(v) => v,
            Err(first_seen::Unanswered) => {
                return Decision::deny(
                    Reason::StateUnavailable,
                    "first-seen device binding cannot be checked (state store unavailable)",
                )
            }
        };
        for (kind, outcome) in &verdict.outcomes {
            metrics::record(*kind, outcome);
        }
        verdict.decision
    }

    fn watched_files(&self) -> Vec<PathBuf> {
        self.watched_paths()
    }

    /// A shared first-seen binding is made here, inline: checks deferred
    /// by earlier filters (a DPoP replay) are settled first, so a request
    /// they refuse never binds a device.
    fn settles_before(&self) -> bool {
        self.first_seen.as_ref().is_some_and(Bindings::is_shared)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, Method};
    use std::time::{Duration, SystemTime};
    use ztgate_filter::{
        BuildContext, ConfigProblem, Reason, TlsFacts, TokenClaims, VerifiedToken,
    };

    const SECRET: &str = "an-example-device-secret-of-40-bytes!!!!";
    const OLD_SECRET: &str = "the-previous-device-secret-of-40-bytes!!";
    const JA4: &str = "t13d1516h2_8daaf6152771_e5627efa2ab1";

    fn ctx() -> BuildContext {
        BuildContext {
            base_dir: crate::geoip::tests::geo_dir(),
            upstreams: vec![],
            pipeline: vec!["sanitize".into(), "jwt".into(), "device".into()],
            ..Default::default()
        }
    }

    fn build_yaml(yaml: &str) -> Result<DeviceFilter, Vec<ConfigProblem>> {
        let raw: crate::config::Device = serde_yaml::from_str(yaml).unwrap();
        crate::build(&raw, &ctx(), "device")
    }

    fn filter(policies: &str) -> DeviceFilter {
        let yaml = format!(
            "secret: {SECRET}\nprevious_secrets: [{OLD_SECRET}]\n\
             geoip:\n  country_db: GeoLite2-City-Test.mmdb\n  asn_db: GeoLite2-ASN-Test.mmdb\n  \
             anonymous_ip_db: GeoIP2-Anonymous-IP-Test.mmdb\n{policies}"
        );
        build_yaml(&yaml).unwrap_or_else(|p| panic!("{p:?}"))
    }

    struct Req {
        headers: HeaderMap,
        tls: TlsFacts,
        ip: Option<IpAddr>,
        now: SystemTime,
    }

    impl Req {
        fn new(ip: &str, ua: &str) -> Self {
            let mut headers = HeaderMap::new();
            headers.insert("user-agent", HeaderValue::from_str(ua).unwrap());
            Req {
                headers,
                tls: TlsFacts {
                    ja4: Some(JA4.into()),
                    ..TlsFacts::default()
                },
                ip: Some(ip.parse().unwrap()),
                now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            }
        }

        fn view(&self) -> RequestView<'_> {
            RequestView {
                method: &Method::POST,
                path: "/shop.v1.Orders/Get",
                authority: None,
                headers: &self.headers,
                tls: &self.tls,
                client_ip: self.ip,
                socket_ip: Some("127.0.0.1".parse().unwrap()),
                now: self.now,
            }
        }
    }

    fn token(sub: &str, claims: serde_json::Value) -> VerifiedToken {
        VerifiedToken::attested_by_jwt(
            "https://idp.test".into(),
            Some(sub.into()),
            vec![],
            SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000),
            Arc::new(TokenClaims::new(claims.to_string())),
        )
    }

    async fn run(f: &DeviceFilter, r: &Req, tok: Option<VerifiedToken>) -> (Decision, Facts) {
        let mut facts = Facts::default();
        if let Some(tok) = tok {
            facts.set_token(tok);
        }
        let d = f.evaluate(&r.view(), &mut facts).await;
        (d, facts)
    }

    fn denied(d: &Decision) -> Option<(Reason, bool)> {
        match d {
            Decision::Deny(x) => Some((x.reason, true)),
            Decision::ShadowDeny(x) => Some((x.reason, false)),
            Decision::Continue => None,
        }
    }

    fn header<'a>(f: &'a Facts, n: &HeaderName) -> Option<&'a str> {
        f.upstream_headers
            .iter()
            .find(|(k, _)| k == n)
            .and_then(|(_, v)| v.to_str().ok())
    }

    /// The fingerprint remembered on a connection is the one computed
    /// afresh; a changed signal on the same connection, or another secret
    /// (a reload) with the connection's memo, derives anew.
    #[tokio::test]
    async fn the_connection_remembers_its_fingerprint_per_signals_and_secret() {
        let f = filter("");
        let fp = |facts: &Facts| facts.device().unwrap().fingerprint().to_owned();
        let mut conn = Req::new("81.2.69.142", "grpc-go/1.60");
        let (_, first) = run(&f, &conn, None).await;
        // A fresh connection (empty memo) computes the same value.
        let (_, fresh) = run(&f, &Req::new("81.2.69.142", "grpc-go/1.60"), None).await;
        assert_eq!(fp(&first), fp(&fresh));
        // Served from the memo: the same.
        let (_, again) = run(&f, &conn, None).await;
        assert_eq!(fp(&again), fp(&first));
        // Another user agent on the same connection: its own fingerprint,
        // equal to a fresh connection's with that user agent.
        conn.headers
            .insert("user-agent", HeaderValue::from_static("grpc-java/1.6"));
        let (_, changed) = run(&f, &conn, None).await;
        let (_, fresh) = run(&f, &Req::new("81.2.69.142", "grpc-java/1.6"), None).await;
        assert_ne!(fp(&changed), fp(&first));
        assert_eq!(fp(&changed), fp(&fresh));
        // Another secret (the filter a reload builds), same connection memo.
        let other = build_yaml(&format!(
            "secret: {OLD_SECRET}\ngeoip:\n  country_db: GeoLite2-City-Test.mmdb\n  asn_db: GeoLite2-ASN-Test.mmdb\n"
        ))
        .unwrap();
        let (_, rekeyed) = run(&other, &conn, None).await;
        let (_, rekeyed_fresh) = run(&other, &Req::new("81.2.69.142", "grpc-java/1.6"), None).await;
        assert_ne!(fp(&rekeyed), fp(&changed));
        assert_eq!(fp(&rekeyed), fp(&rekeyed_fresh));
    }

    #[tokio::test]
    async fn sets_facts_and_upstream_headers() {
        let f = filter("");
        let (d, facts) = run(&f, &Req::new("81.2.69.142", "grpc-go/1.60"), None).await;
        assert_eq!(d, Decision::Continue);
        let dev = facts.device().cloned().unwrap();
        assert_eq!(dev.country(), Some("GB"));
        assert_eq!(dev.ja4(), Some(JA4));
        assert_eq!(dev.fingerprint().len(), 43);
        assert_eq!(header(&facts, &FINGERPRINT_HEADER), Some(dev.fingerprint()));
        assert_eq!(header(&facts, &COUNTRY_HEADER), Some("GB"));
        // Same signals → same fingerprint; another JA4 → another one.
        let (_, again) = run(&f, &Req::new("81.2.69.142", "grpc-go/1.60"), None).await;
        assert_eq!(again.fingerprint(), Some(dev.fingerprint()));
        let mut other = Req::new("81.2.69.142", "grpc-go/1.60");
        other.tls.ja4 = Some("t13d1517h2_8daaf6152771_e5627efa2ab1".into());
        let (_, o) = run(&f, &other, None).await;
        assert_ne!(o.fingerprint(), Some(dev.fingerprint()));
        // ASN known, country unknown: no country header.
        let (_, t) = run(&f, &Req::new("1.128.0.1", "x"), None).await;
        assert_eq!(t.device().unwrap().asn(), Some(1221));
        assert_eq!(header(&t, &COUNTRY_HEADER), None);
    }

    #[tokio::test]
    async fn country_policy_enforce_and_shadow() {
        let gb = Req::new("81.2.69.142", "ua");
        let se = Req::new("89.160.20.112", "ua");
        let f = filter("countries:\n  deny: [gb]\n");
        assert_eq!(
            denied(&run(&f, &gb, None).await.0),
            Some((Reason::GeoDenied, true))
        );
        assert_eq!(run(&f, &se, None).await.0, Decision::Continue);
        let f = filter("countries:\n  mode: shadow\n  allow: [SE]\n  unknown_country: deny\n");
        assert_eq!(
            denied(&run(&f, &gb, None).await.0),
            Some((Reason::GeoDenied, false))
        );
        let private = Req::new("10.0.0.1", "ua");
        assert_eq!(
            denied(&run(&f, &private, None).await.0),
            Some((Reason::GeoDenied, false))
        );
        assert_eq!(run(&f, &se, None).await.0, Decision::Continue);
    }

    #[tokio::test]
    async fn anonymous_networks_enforce_and_shadow() {
        let f = filter("anonymous_networks: {}\n");
        let anon = Req::new("81.2.69.142", "ua");
        assert_eq!(
            denied(&run(&f, &anon, None).await.0),
            Some((Reason::AnonymousNetwork, true))
        );
        assert_eq!(
            run(&f, &Req::new("89.160.20.112", "ua"), None).await.0,
            Decision::Continue
        );
        let f = filter("anonymous_networks:\n  mode: shadow\n  deny: [tor]\n");
        assert_eq!(
            denied(&run(&f, &anon, None).await.0),
            Some((Reason::AnonymousNetwork, false))
        );
        // 1.2.0.1 is a VPN but not Tor.
        assert_eq!(
            run(&f, &Req::new("1.2.0.1", "ua"), None).await.0,
            Decision::Continue
        );
    }

    /// The address's anonymous-network categories are a fact for later
    /// filters (`policy`), whether or not a device policy uses them.
    #[tokio::test]
    async fn anonymous_categories_are_a_fact() {
        let f = filter("");
        let (_, facts) = run(&f, &Req::new("81.2.69.142", "ua"), None).await;
        let got = facts.device().unwrap().anonymous().to_vec();
        assert!(
            got.contains(&"tor") && got.contains(&"anonymous"),
            "{got:?}"
        );
        let (_, facts) = run(&f, &Req::new("89.160.20.112", "ua"), None).await;
        assert!(facts.device().unwrap().anonymous().is_empty());
    }

    #[tokio::test]
    async fn claim_binding_with_rotation() {
        let f = filter("claim_binding:\n  bind_claim: dfp\n");
        let r = Req::new("89.160.20.112", "ua");
        let (_, facts) = run(&f, &r, None).await;
        let fp = facts.fingerprint().unwrap().to_owned();
        let ok = token("alice", serde_json::json!({ "dfp": fp }));
        assert_eq!(run(&f, &r, Some(ok)).await.0, Decision::Continue);
        let wrong = token("alice", serde_json::json!({ "dfp": "A".repeat(43) }));
        assert_eq!(
            denied(&run(&f, &r, Some(wrong.clone())).await.0),
            Some((Reason::DeviceMismatch, true))
        );
        let missing = token("alice", serde_json::json!({}));
        assert_eq!(
            denied(&run(&f, &r, Some(missing)).await.0),
            Some((Reason::DeviceMismatch, true))
        );
        // A claim issued under the previous secret is still accepted.
        let old = build_yaml(&format!("secret: {OLD_SECRET}\n")).unwrap();
        let (_, of) = run(&old, &r, None).await;
        let old_fp = of.fingerprint().unwrap().to_owned();
        assert_ne!(old_fp, fp);
        let t = token("alice", serde_json::json!({ "dfp": old_fp }));
        assert_eq!(run(&f, &r, Some(t)).await.0, Decision::Continue);
        // Shadow never denies but records.
        let f = filter("claim_binding:\n  bind_claim: dfp\n  mode: shadow\n");
        let before = crate::DECISIONS
            .with_label_values(&["claim_binding", "shadow_deny"])
            .get();
        assert_eq!(
            denied(&run(&f, &r, Some(wrong)).await.0),
            Some((Reason::DeviceMismatch, false))
        );
        let after = crate::DECISIONS
            .with_label_values(&["claim_binding", "shadow_deny"])
            .get();
        assert!(after > before);
    }

    #[tokio::test]
    async fn device_lists() {
        let r = Req::new("89.160.20.112", "ua");
        let (_, facts) = run(&filter(""), &r, None).await;
        let fp = facts.fingerprint().unwrap().to_owned();
        let f = filter(&format!("devices:\n  deny: [\"{fp}\"]\n"));
        assert_eq!(
            denied(&run(&f, &r, None).await.0),
            Some((Reason::DeviceDenied, true))
        );
        let f = filter(&format!(
            "devices:\n  mode: shadow\n  allow: [\"{}\"]\n",
            "A".repeat(43)
        ));
        assert_eq!(
            denied(&run(&f, &r, None).await.0),
            Some((Reason::DeviceDenied, false))
        );
    }

    #[tokio::test]
    async fn first_seen_changed_then_expires() {
        let f = filter("first_seen:\n  ttl: 10m\n");
        let laptop = Req::new("89.160.20.112", "laptop");
        let mut phone = Req::new("89.160.20.112", "phone");
        let alice = || Some(token("alice", serde_json::json!({})));
        assert_eq!(run(&f, &laptop, alice()).await.0, Decision::Continue);
        assert_eq!(
            denied(&run(&f, &phone, alice()).await.0),
            Some((Reason::DeviceChanged, true))
        );
        // Another subject is independent.
        assert_eq!(
            run(&f, &phone, Some(token("bob", serde_json::json!({}))))
                .await
                .0,
            Decision::Continue
        );
        phone.now += Duration::from_secs(600);
        assert_eq!(run(&f, &phone, alice()).await.0, Decision::Continue);
        // No token: nothing to bind.
        assert_eq!(run(&f, &laptop, None).await.0, Decision::Continue);
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let yaml =
            "secret: short\nprevious_secrets: [also-short]\nsignals: [ja4, colour, country]\n\
                    geoip:\n  asn_db: MaxMind-DB-test-broken-pointers-24.mmdb\n\
                    countries:\n  deny: [GBR]\nanonymous_networks:\n  deny: []\n\
                    devices:\n  allow: [nope]\nclaim_binding:\n  bind_claim: ''\n\
                    first_seen:\n  capacity: 0\n";
        let problems = build_yaml(yaml).unwrap_err();
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        for want in [
            "device.secret",
            "device.previous_secrets[0]",
            "device.signals[1]",
            "device.geoip.asn_db",
            "device.signals",
            "device.countries",
            "device.anonymous_networks",
            "device.claim_binding.bind_claim",
            "device.devices.allow[0]",
            "device.countries.deny[0]",
            "device.anonymous_networks.deny",
            "device.first_seen.capacity",
        ] {
            assert!(paths.contains(&want), "missing {want} in {problems:#?}");
        }
        let text = format!("{problems:?}");
        assert!(!text.contains("also-short"), "secret leaked: {text}");
        assert!(text.contains("MaxMind-DB-test-broken-pointers-24.mmdb"));
    }

    /// Regression (fuzz/regressions/config-first-seen-capacity.bin): an
    /// absurd capacity aborted the process when the LRU reserved its table.
    #[test]
    fn an_absurd_first_seen_capacity_is_a_problem_not_an_abort() {
        let yaml = format!("secret: {SECRET}\nfirst_seen:\n  capacity: 18446744073709551615\n");
        let problems = build_yaml(&yaml).unwrap_err();
        assert!(
            problems
                .iter()
                .any(|p| p.path == "device.first_seen.capacity" && p.message.contains("at most")),
            "{problems:#?}"
        );
    }

    #[test]
    fn token_policies_need_jwt_first() {
        let raw: crate::config::Device =
            serde_yaml::from_str(&format!("secret: {SECRET}\nfirst_seen: {{}}\n")).unwrap();
        let mut c = ctx();
        c.pipeline = vec!["device".into(), "jwt".into()];
        let p = crate::build(&raw, &c, "device").unwrap_err();
        assert_eq!(p[0].path, "device.first_seen");
    }

    #[test]
    fn unknown_keys_are_refused_and_defaults_apply() {
        assert!(serde_yaml::from_str::<crate::config::Device>(&format!(
            "secret: {SECRET}\ncolour: red\n"
        ))
        .is_err());
        let raw: crate::config::Device = serde_yaml::from_str(&format!(
            "secret: {SECRET}\nfirst_seen: {{}}\nanonymous_networks: {{}}\n"
        ))
        .unwrap();
        let fs = raw.first_seen.unwrap();
        assert_eq!(fs.ttl, Duration::from_secs(1800));
        assert_eq!(fs.capacity, 100_000);
        assert_eq!(raw.anonymous_networks.unwrap().deny.len(), 3);
        assert_eq!(raw.signals, crate::config::default_signals());
        assert_eq!(format!("{:?}", raw.secret), "<redacted>");
    }

    #[test]
    fn watched_paths_and_reload() {
        let f = filter("");
        assert_eq!(f.watched_paths().len(), 3);
        f.reload_geoip().unwrap();
    }
}
