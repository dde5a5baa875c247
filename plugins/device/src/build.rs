//! `config::Device` → [`DeviceFilter`]: every problem is collected with its
//! key path, not only the first.

use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::sync::Arc;

use ztgate_filter::{BuildContext, ConfigProblem, FilterKind};

use crate::config;
use crate::fingerprint::{FingerprintError, Fingerprinter, Signal};
use crate::first_seen::Bindings;
use crate::geoip::{DbKind, GeoIp, GeoIpPaths};
use crate::policy::{AnonymousPolicy, ClaimBinding, CountryPolicy, DeviceList, Policies};
use crate::DeviceFilter;

/// Build the filter. Opens (and fully verifies) the GeoIP files, so it is
/// blocking; the gateway calls it while building a config generation.
pub fn build(
    raw: &config::Device,
    ctx: &BuildContext,
    path: &str,
) -> Result<DeviceFilter, Vec<ConfigProblem>> {
    let config::Device {
        mode: _, // applied by the gateway's Stage
        secret,
        previous_secrets,
        signals,
        geoip,
        claim_binding,
        devices,
        countries,
        anonymous_networks,
        first_seen,
    } = raw;
    let mut problems = Vec::new();
    let mut problem = |key: String, msg: String| problems.push(ConfigProblem::new(key, msg));

    let fingerprinter = match Fingerprinter::new(secret, previous_secrets) {
        Ok(f) => Some(f),
        Err(errs) => {
            for e in errs {
                let FingerprintError::SecretTooShort { which, .. } = &e;
                problem(format!("{path}.{which}"), e.to_string());
            }
            None
        }
    };

    // Signals: canonical order and no duplicates, whatever the config order.
    let mut sigs: Vec<Signal> = Vec::new();
    for (i, name) in signals.iter().enumerate() {
        match Signal::from_name(name) {
            Some(s) if !sigs.contains(&s) => sigs.push(s),
            Some(_) => {}
            None => problem(
                format!("{path}.signals[{i}]"),
                format!(
                    "unknown signal `{name}`; expected one of: {}",
                    Signal::ALL.map(Signal::as_str).join(", ")
                ),
            ),
        }
    }
    sigs.sort();
    if signals.is_empty() {
        problem(
            format!("{path}.signals"),
            "at least one signal is required".into(),
        );
    }

    // GeoIP files.
    let config::GeoIp {
        country_db,
        asn_db,
        anonymous_ip_db,
    } = geoip.clone().unwrap_or_default();
    let paths = GeoIpPaths {
        location: country_db.as_ref().map(|p| ctx.resolve(p)),
        asn: asn_db.as_ref().map(|p| ctx.resolve(p)),
        anonymous_ip: anonymous_ip_db.as_ref().map(|p| ctx.resolve(p)),
    };
    let geo = match GeoIp::open(&paths) {
        Ok(g) => Some(g),
        Err(errs) => {
            for (kind, e) in errs {
                let key = match kind {
                    DbKind::Location => "country_db",
                    DbKind::Asn => "asn_db",
                    DbKind::AnonymousIp => "anonymous_ip_db",
                };
                problem(format!("{path}.geoip.{key}"), e.to_string());
            }
            None
        }
    };
    let needs = |have: bool, what: &str, key: String, db: &str| {
        (!have).then(|| (key, format!("{what} needs `geoip.{db}`")))
    };
    let mut missing = Vec::new();
    missing.extend(needs(
        !sigs.contains(&Signal::Country) || paths.location.is_some(),
        "signal `country`",
        format!("{path}.signals"),
        "country_db",
    ));
    missing.extend(needs(
        !sigs.contains(&Signal::Asn) || paths.asn.is_some(),
        "signal `asn`",
        format!("{path}.signals"),
        "asn_db",
    ));
    missing.extend(needs(
        countries.is_none() || paths.location.is_some(),
        "`countries`",
        format!("{path}.countries"),
        "country_db",
    ));
    missing.extend(needs(
        anonymous_networks.is_none() || paths.anonymous_ip.is_some(),
        "`anonymous_networks`",
        format!("{path}.anonymous_networks"),
        "anonymous_ip_db",
    ));
    for (k, m) in missing {
        problem(k, m);
    }

    // Policies that read the token need `jwt` to run first.
    if (claim_binding.is_some() || first_seen.is_some())
        && !ctx.runs_before(FilterKind::Jwt, FilterKind::Device)
    {
        let key = if claim_binding.is_some() {
            "claim_binding"
        } else {
            "first_seen"
        };
        problem(
            format!("{path}.{key}"),
            "needs the `jwt` filter before `device` in `pipeline:`".into(),
        );
    }

    let mut policies = Policies::default();
    if let Some(config::ClaimBinding { bind_claim, mode }) = claim_binding {
        if bind_claim.trim().is_empty() {
            problem(
                format!("{path}.claim_binding.bind_claim"),
                "must name a claim".into(),
            );
        }
        policies.claim_binding = Some(ClaimBinding {
            claim: bind_claim.clone(),
            mode: *mode,
        });
    }
    if let Some(config::Devices { mode, allow, deny }) = devices {
        let mut list = |key: &str, v: &[String]| -> HashSet<String> {
            for (i, fp) in v.iter().enumerate() {
                if !is_fingerprint(fp) {
                    problem(
                        format!("{path}.devices.{key}[{i}]"),
                        "not a device fingerprint (43 base64url characters)".into(),
                    );
                }
            }
            v.iter().cloned().collect()
        };
        policies.devices = Some(DeviceList {
            allow: list("allow", allow),
            deny: list("deny", deny),
            mode: *mode,
        });
    }
    if let Some(config::Countries {
        mode,
        allow,
        deny,
        unknown_country,
    }) = countries
    {
        let mut list = |key: &str, v: &[String]| -> HashSet<String> {
            for (i, cc) in v.iter().enumerate() {
                if !(cc.len() == 2 && cc.bytes().all(|b| b.is_ascii_alphabetic())) {
                    problem(
                        format!("{path}.countries.{key}[{i}]"),
                        format!("`{cc}` is not an ISO 3166-1 alpha-2 country code"),
                    );
                }
            }
            v.iter().map(|c| c.to_ascii_uppercase()).collect()
        };
        policies.countries = Some(CountryPolicy {
            allow: list("allow", allow),
            deny: list("deny", deny),
            unknown: *unknown_country,
            mode: *mode,
        });
    }
    if let Some(config::AnonymousNetworks { mode, deny }) = anonymous_networks {
        if deny.is_empty() {
            problem(
                format!("{path}.anonymous_networks.deny"),
                "lists no category: remove the section or name one".into(),
            );
        }
        policies.anonymous = Some(AnonymousPolicy {
            deny: deny.clone(),
            mode: *mode,
        });
    }
    let mut store = None;
    if let Some(config::FirstSeen {
        mode,
        ttl,
        capacity,
    }) = first_seen
    {
        if ttl.is_zero() {
            problem(
                format!("{path}.first_seen.ttl"),
                "must be more than 0".into(),
            );
        }
        match NonZeroUsize::new(*capacity) {
            // The LRU reserves its table up front: an absurd capacity would
            // abort the process at build time (found by fuzzing the config).
            Some(_) if *capacity > crate::first_seen::MAX_CAPACITY => problem(
                format!("{path}.first_seen.capacity"),
                format!("must be at most {}", crate::first_seen::MAX_CAPACITY),
            ),
            Some(cap) => store = Some(Bindings::new(*ttl, cap, ctx)),
            None => problem(
                format!("{path}.first_seen.capacity"),
                "must be at least 1".into(),
            ),
        }
        policies.first_seen = Some(*mode);
    }

    match (fingerprinter, geo) {
        (Some(fingerprinter), Some(geo)) if problems.is_empty() => Ok(DeviceFilter {
            signals: sigs,
            fingerprinter,
            geoip: Arc::new(geo),
            policies,
            first_seen: store,
        }),
        _ => Err(problems),
    }
}

/// base64url (no padding) of 32 bytes: 43 characters of `[A-Za-z0-9_-]`.
fn is_fingerprint(s: &str) -> bool {
    s.len() == 43
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
