//! Device filter costs. Baseline in the same run: one SHA-256 of a 64-byte
//! input (what every JA4 does twice), so results can be read as ratios.
//!
//! Run: `cargo bench -p ztgate-device --bench device`

// Bench set-up reads fixed test data; a failure there should stop the run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue, Method};
use sha2::Digest;
use ztgate_device::fingerprint::{canonical, Fingerprinter, Secret, Signal, SignalSource};
use ztgate_device::ClientHello;
use ztgate_filter::{
    BuildContext, Facts, Filter, RequestView, TlsFacts, TokenClaims, VerifiedToken,
};

use ztgate_testkit::testdata;

/// The spec example ClientHello (Chrome-like, GREASE, 16 extensions).
fn spec_hello() -> Vec<u8> {
    let text = std::fs::read_to_string(testdata().join("ja4/vectors.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let hex = v
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "tls13-grease-h2-spec-example")
        .unwrap()["client_hello_hex"]
        .as_str()
        .unwrap()
        .to_owned();
    hex::decode(hex).unwrap()
}

fn headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("user-agent", HeaderValue::from_static("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0 Safari/537.36"));
    h.insert(
        "sec-ch-ua",
        HeaderValue::from_static("\"Chromium\";v=\"130\", \"Not?A_Brand\";v=\"99\""),
    );
    h.insert("sec-ch-ua-platform", HeaderValue::from_static("\"Linux\""));
    h.insert("sec-ch-ua-mobile", HeaderValue::from_static("?0"));
    h.insert("content-type", HeaderValue::from_static("application/grpc"));
    h
}

fn poll_ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("device filter never awaits"),
    }
}

fn benches(c: &mut Criterion) {
    let msg = spec_hello();
    let ch = ClientHello::parse(&msg).unwrap();
    let ja4 = ch.ja4();

    c.bench_function("baseline/sha256_64B", |b| {
        let data = [7u8; 64];
        b.iter(|| sha2::Sha256::digest(black_box(&data)))
    });
    c.bench_function("ja4/parse_and_hash_bytes", |b| {
        b.iter(|| ClientHello::parse(black_box(&msg)).unwrap().ja4())
    });

    let secret = Secret::new("an-example-device-secret-of-40-bytes!!!!");
    let f = Fingerprinter::new(&secret, &[]).unwrap();
    let h = headers();
    let thumb = [9u8; 32];
    c.bench_function("fingerprint/typical_request", |b| {
        b.iter(|| {
            let src = SignalSource {
                ja4: Some(&ja4),
                headers: black_box(&h),
                cert_thumbprint: Some(&thumb),
                country: Some("SE"),
                asn: Some(1221),
            };
            f.fingerprint(&canonical(&Signal::ALL, &src))
        })
    });

    let base = testdata().join("geoip");
    let yaml = "secret: an-example-device-secret-of-40-bytes!!!!\n\
                previous_secrets: [the-previous-device-secret-of-40-bytes!!]\n\
                signals: [ja4, user_agent, sec_ch_ua, sec_ch_ua_platform, sec_ch_ua_mobile, country, asn]\n\
                geoip:\n  country_db: GeoLite2-City-Test.mmdb\n  asn_db: GeoLite2-ASN-Test.mmdb\n  anonymous_ip_db: GeoIP2-Anonymous-IP-Test.mmdb\n\
                claim_binding:\n  bind_claim: dfp\n\
                countries:\n  deny: [KP]\n\
                anonymous_networks: {}\n\
                first_seen: {}\n";
    let raw: ztgate_device::config::Device = serde_yaml::from_str(yaml).unwrap();
    let ctx = BuildContext {
        base_dir: base,
        upstreams: vec![],
        pipeline: vec![],
        ..Default::default()
    };
    let filter = ztgate_device::build(&raw, &ctx, "device").unwrap();
    let ip = "89.160.20.112".parse().unwrap();
    c.bench_function("geoip/three_lookups", |b| {
        b.iter(|| filter.geoip().lookup(black_box(ip)))
    });

    let tls = TlsFacts {
        ja4: Some(Arc::from(ja4.as_str())),
        ..TlsFacts::default()
    };
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let view = RequestView {
        method: &Method::POST,
        path: "/shop.v1.Orders/Get",
        authority: None,
        headers: &h,
        tls: &tls,
        client_ip: Some(ip),
        socket_ip: Some(ip),
        now,
    };
    let mut probe = Facts::default();
    let _ = poll_ready(filter.evaluate(&view, &mut probe));
    let fp = probe.fingerprint().unwrap().to_owned();
    let token = VerifiedToken::attested_by_jwt(
        "https://idp.test".into(),
        Some("alice".into()),
        vec![],
        now + Duration::from_secs(300),
        Arc::new(TokenClaims::new(
            serde_json::json!({ "dfp": fp }).to_string(),
        )),
    );
    c.bench_function("filter/evaluate_all_policies_geoip", |b| {
        b.iter(|| {
            let mut facts = Facts::default();
            facts.set_token(token.clone());
            let d = poll_ready(filter.evaluate(black_box(&view), &mut facts));
            black_box((d, facts))
        })
    });
}

criterion_group! {
    name = device;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = benches
}
criterion_main!(device);
